package mta

import (
	"bytes"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestBufPool_SizeClasses(t *testing.T) {
	tests := []struct {
		size    int
		wantCap int // 0: unpooled, exactly the size asked for
	}{
		{0, 16 << 10},
		{5 << 10, 16 << 10},
		{16<<10 - headroom, 16 << 10},
		{16<<10 - headroom + 1, 24 << 10},
		{1<<20 - headroom, 1 << 20},
		{1<<20 + 600, 9 << 17}, // "1 MiB" and its header: 1.125 MiB, not 2
		{4<<20 - headroom, 4 << 20},
		{4<<20 - headroom + 1, 0},
	}
	var bp bufPool
	for _, tt := range tests {
		m := bp.get(tt.size)
		switch {
		case tt.wantCap == 0 && (m.pool != nil || cap(m.b) != headroom+tt.size):
			t.Errorf("get(%d): cap %d, pooled %v; want an unpooled buffer of exactly %d", tt.size, cap(m.b), m.pool != nil, headroom+tt.size)
		case tt.wantCap != 0 && (m.pool == nil || cap(m.b) != tt.wantCap):
			t.Errorf("get(%d): cap %d, pooled %v; want a pooled %d", tt.size, cap(m.b), m.pool != nil, tt.wantCap)
		}
		if len(m.bytes()) != 0 || m.off != headroom {
			t.Errorf("get(%d): %d octets of message, headroom %d", tt.size, len(m.bytes()), m.off)
		}
		bp.put(m)
	}
}

// Small messages after a burst of big ones do not pick up (and keep
// alive) the big buffers.
func TestBufPool_SmallMessagesDoNotTakeBigBuffers(t *testing.T) {
	var bp bufPool
	for range 20 {
		bp.put(bp.get(1 << 20))
		if m := bp.get(4 << 10); cap(m.b) > 16<<10 {
			t.Fatalf("a 4 KiB message got a buffer of %d", cap(m.b))
		}
	}
}

// A message read through grow keeps every octet as it moves up the
// classes, and ends in a pooled buffer of the class that holds it.
func TestMsgBuf_GrowKeepsTheMessage(t *testing.T) {
	var bp bufPool
	want := bytes.Repeat([]byte("0123456789"), 30_000) // 300 kB
	m := bp.get(0)
	for rest := want; len(rest) > 0; {
		p := m.grow(&bp, dataReadSize)
		if len(p) < dataReadSize {
			t.Fatalf("grow gave %d octets, want %d", len(p), dataReadSize)
		}
		n := copy(p[:dataReadSize], rest)
		m.b = m.b[:len(m.b)+n]
		rest = rest[n:]
	}
	if !bytes.Equal(m.bytes(), want) {
		t.Fatal("message changed while growing")
	}
	if m.pool == nil || cap(m.pool) != 384<<10 {
		t.Errorf("ended in a buffer of %d (pooled %v), want the pooled 384 KiB class", cap(m.b), m.pool != nil)
	}
	bp.put(m)
}

// Freed memory goes back to the system once the last big buffer in flight
// is given back, not while one is still in use, and once per burst.
func TestBufPool_GivesMemoryBackAfterABurstOfBigMail(t *testing.T) {
	var relieved atomic.Int64
	bp := bufPool{relieve: func() { relieved.Add(1) }, delay: time.Millisecond}
	small := bp.get(4 << 10)
	bp.put(small)
	a, b := bp.get(1<<20), bp.get(0)
	b.grow(&bp, 2<<20) // grows into a big one
	bp.put(a)
	time.Sleep(50 * time.Millisecond)
	if n := relieved.Load(); n != 0 {
		t.Fatalf("memory given back %d times with a big buffer still in flight", n)
	}
	bp.put(b)
	deadline := time.Now().Add(10 * time.Second)
	for relieved.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("memory not given back after the burst")
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	if n := relieved.Load(); n != 1 {
		t.Errorf("memory given back %d times for one burst", n)
	}
	if n := bp.bigInFlight.Load(); n != 0 {
		t.Errorf("%d big buffers still counted", n)
	}
}

// A big buffer that came and went while a relief was pending (the next
// message of a stream of big ones) puts the relief off.
func TestBufPool_ReliefWaitsForTheStreamToEnd(t *testing.T) {
	var relieved atomic.Int64
	bp := bufPool{relieve: func() { relieved.Add(1) }, delay: time.Hour}
	bp.reliefPending.Store(true)
	bp.lastBig.Store(time.Now().UnixNano())
	bp.reliefDue(time.Hour)
	if relieved.Load() != 0 {
		t.Fatal("memory given back right after a big message")
	}
	if !bp.reliefPending.Load() {
		t.Fatal("relief not scheduled again")
	}
	bp.reliefPending.Store(false)
	bp.lastBig.Store(time.Now().Add(-2 * time.Hour).UnixNano())
	bp.reliefDue(time.Hour)
	if relieved.Load() != 1 {
		t.Fatal("memory not given back after an hour without big mail")
	}
}

// While big buffers are in flight GOGC lets the heap grow by
// burstHeadroom (up to Go's default), in one pool or several (the MX and
// submission each have theirs), and is back as it was (the server's 50)
// once the last burst's relief is over.
func TestBufPool_PacesTheCollectorDuringABurst(t *testing.T) {
	const idle = 50
	var (
		mu      sync.Mutex
		percent = idle
		live    uint64
	)
	gc := &burstGC{
		set: func(p int) int {
			mu.Lock()
			defer mu.Unlock()
			prev := percent
			percent = p
			return prev
		},
		live: func() uint64 { mu.Lock(); defer mu.Unlock(); return live },
	}
	gogc := func() int { mu.Lock(); defer mu.Unlock(); return percent }
	setLive := func(n uint64) { mu.Lock(); defer mu.Unlock(); live = n }
	var relieved atomic.Int64
	mx := &bufPool{gc: gc, relieve: func() { relieved.Add(1) }, delay: time.Millisecond}
	sub := &bufPool{gc: gc, relieve: func() { relieved.Add(1) }, delay: time.Millisecond}

	setLive(64 << 20)
	mx.put(mx.get(4 << 10))
	if p := gogc(); p != idle {
		t.Fatalf("a small message set GOGC to %d", p)
	}
	a := mx.get(1 << 20)
	if p, want := gogc(), 100*burstHeadroom/(64<<20); p != want {
		t.Fatalf("GOGC %d with 64 MiB live in a burst, want %d", p, want)
	}
	setLive(1 << 30)
	time.Sleep(burstPaceEvery)
	b := sub.get(2 << 20)
	if p := gogc(); p != burstMinGOGC {
		t.Fatalf("GOGC %d with 1 GiB live, want the floor %d", p, burstMinGOGC)
	}
	setLive(8 << 20) // less live than the headroom: Go's default
	time.Sleep(burstPaceEvery)
	c := mx.get(1 << 20)
	if p := gogc(); p != burstMaxGOGC {
		t.Fatalf("GOGC %d with 8 MiB live, want %d", p, burstMaxGOGC)
	}
	setLive(64 << 20)
	time.Sleep(burstPaceEvery)
	mx.put(a)
	mx.put(mx.get(1 << 20))
	mx.put(c)
	waitFor(t, func() bool { return relieved.Load() == 1 }) // the MX's burst is over
	if p := gogc(); p == idle {
		t.Fatalf("GOGC back at %d while submission still receives big mail", idle)
	}
	sub.put(b)
	waitFor(t, func() bool { return relieved.Load() == 2 })
	if p := gogc(); p != idle {
		t.Fatalf("GOGC %d after the bursts, want %d again", p, idle)
	}

	// An operator's GOGC stays.
	keep := &burstGC{keep: true, set: gc.set, live: gc.live}
	op := &bufPool{gc: keep, relieve: func() {}, delay: time.Millisecond}
	op.put(op.get(1 << 20))
	if p := gogc(); p != idle {
		t.Fatalf("the operator's GOGC was changed to %d", p)
	}
}
