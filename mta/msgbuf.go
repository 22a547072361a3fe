package mta

import (
	"cmp"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"time"
)

// A message is held once on its way from the socket to the store: read into
// a buffer with room in front (headroom), checked in place, and the fields
// the server adds (Received, Authentication-Results, DKIM-Signature, Date,
// Message-ID) are written into that room instead of copying the whole
// message behind each of them. Buffers are reused; the store and the queue
// keep nothing of a message once their commit returns, so a buffer goes
// back to the pool when its transaction is over.

// headroom is more than the fields a message gets in front: a Received
// field is ~300 octets, a DKIM-Signature with an RSA-2048 key ~600, an
// Authentication-Results ~300. Beyond it the fields still fit, at the cost
// of one copy.
const headroom = 4 << 10

// Buffers come in size classes with a pool each. A message takes a buffer
// of the smallest class that holds it, so the buffers of a burst of big
// mail stay in the big classes, which the garbage collector empties once
// the burst is over. With one pool, small messages would pick those
// megabyte buffers up and keep them alive (and resident) for good. Up to
// 1 MiB the classes are 1.5x apart (powers of two and the halfway points);
// above it they are an eighth of a power of two apart up to 2 MiB, a
// quarter beyond. Big buffers are what the memory of a burst of big mail is
// made of (at 32 sessions of 1 MiB mail, nine tenths of the heap), so
// there a buffer wastes at most an eighth: a "1 MiB" message, a little
// over 1 MiB with its header and headroom, takes 1.125 MiB. Beyond the
// largest class a buffer is not pooled: a rare huge message should not pin
// its memory.
var bufClasses = [...]int{
	16 << 10, 24 << 10, 32 << 10, 48 << 10, 64 << 10, 96 << 10, 128 << 10, 192 << 10,
	256 << 10, 384 << 10, 512 << 10, 768 << 10,
	8 << 17, 9 << 17, 10 << 17, 11 << 17, 12 << 17, 13 << 17, 14 << 17, 15 << 17,
	16 << 17, 20 << 17, 24 << 17, 28 << 17, 32 << 17,
}

// classOf returns the index of the smallest class of at least n octets,
// or -1 when n is beyond them all.
func classOf(n int) int {
	for i, c := range bufClasses {
		if n <= c {
			return i
		}
	}
	return -1
}

// pooled reports whether b is a whole buffer of a class, which its pool
// takes back.
func pooled(b []byte) bool {
	i := classOf(cap(b))
	return i >= 0 && bufClasses[i] == cap(b)
}

// bigBuffer is the size from which a buffer counts as big mail: when the
// last big buffer in flight is given back and none follows for
// reliefDelay (longer than a client takes between two messages, shorter
// than a burst's aftermath should last), the pool hands the freed memory
// back to the system.
// Go's collector would run only as new allocations call for it, and its
// scavenger returns memory gradually, so a burst of big messages would
// keep the process tens of megabytes larger for minutes of small mail.
const (
	bigBuffer   = 1 << 20
	reliefDelay = 250 * time.Millisecond
)

type msgBuf struct {
	b    []byte // b[off:] is the message
	off  int
	pool []byte // the pooled allocation, to give back; nil when unpooled
	big  bool   // counted in the pool's bigInFlight
}

type bufPool struct {
	classes [len(bufClasses)]sync.Pool
	// gc paces the collector while big buffers are in flight; nil is
	// the process's own (processGC).
	gc    *burstGC
	tight atomic.Bool // this pool holds gc tight

	bigInFlight   atomic.Int64
	lastBig       atomic.Int64 // when the last big buffer came back, Unix nanoseconds
	reliefPending atomic.Bool
	// relieve and delay replace giveBackMemory and reliefDelay, for
	// tests.
	relieve func()
	delay   time.Duration
}

// get returns an empty buffer that can take size octets of message
// without growing.
func (bp *bufPool) get(size int) *msgBuf {
	m := &msgBuf{}
	bp.use(m, bp.alloc(headroom + size)[:headroom])
	m.off = headroom
	return m
}

// use makes b the buffer of m.
func (bp *bufPool) use(m *msgBuf, b []byte) {
	m.b, m.pool = b, nil
	if pooled(b) {
		m.pool = b
	}
	if cap(b) >= bigBuffer && !m.big {
		m.big = true
		bp.bigInFlight.Add(1)
		if bp.tight.CompareAndSwap(false, true) {
			bp.pacer().begin()
		} else {
			bp.pacer().pace()
		}
	}
}

func (bp *bufPool) pacer() *burstGC { return cmp.Or(bp.gc, &processGC) }

// alloc returns an empty buffer of at least n octets: a pooled one of n's
// class, or one of n exactly beyond the classes.
func (bp *bufPool) alloc(n int) []byte {
	i := classOf(n)
	if i < 0 {
		return make([]byte, 0, n)
	}
	if v, ok := bp.classes[i].Get().(*[]byte); ok {
		return (*v)[:0]
	}
	return make([]byte, 0, bufClasses[i])
}

// free gives b back to its class's pool; other sizes are left to the
// garbage collector.
func (bp *bufPool) free(b []byte) {
	if pooled(b) {
		b = b[:0]
		bp.classes[classOf(cap(b))].Put(&b)
	}
}

func (bp *bufPool) put(m *msgBuf) {
	if m == nil {
		return
	}
	if m.pool != nil {
		bp.free(m.pool)
	}
	m.pool, m.b = nil, nil
	if m.big {
		m.big = false
		bp.lastBig.Store(time.Now().UnixNano())
		if bp.bigInFlight.Add(-1) == 0 {
			bp.afterBurst()
		}
	}
}

// afterBurst gives freed memory back to the system once no big message
// has been in flight for reliefDelay: a stream of big messages on one
// connection, each buffer given back between two of them, is one burst.
func (bp *bufPool) afterBurst() {
	if !bp.reliefPending.CompareAndSwap(false, true) {
		return
	}
	delay := cmp.Or(bp.delay, reliefDelay)
	time.AfterFunc(delay, func() { bp.reliefDue(delay) })
}

// reliefDue runs when a relief scheduled delay ago is due.
func (bp *bufPool) reliefDue(delay time.Duration) {
	bp.reliefPending.Store(false)
	if bp.bigInFlight.Load() > 0 {
		return // the burst goes on; its last buffer schedules again
	}
	if time.Since(time.Unix(0, bp.lastBig.Load())) < delay {
		bp.afterBurst() // one came and went meanwhile: wait again
		return
	}
	if bp.tight.CompareAndSwap(true, false) {
		bp.pacer().end()
		// A big buffer that came between the check above and now is a
		// new burst.
		if bp.bigInFlight.Load() > 0 && bp.tight.CompareAndSwap(false, true) {
			bp.pacer().begin()
		}
	}
	if bp.relieve != nil {
		bp.relieve()
		return
	}
	giveBackMemory()
}

// While big mail is in flight the collector is paced by what it may let
// the heap grow: at Go's default (GOGC=100) the heap grows to twice what
// is live before a collection, and with 32 sessions receiving 1 MiB
// messages, 60 MB live made the process 180 MB. During a burst GOGC is set
// so that the heap grows by burstHeadroom at most (but never by less than
// a quarter of it, nor with GOGC above Go's default, burstMaxGOGC). A
// fixed low GOGC would cost too much: at 8 sessions of 1 MiB mail, with 15
// MB live, GOGC=25 collected four times as often and cut throughput by a
// fifth; with the headroom it is left at 100 there. Outside bursts the
// process runs at the GOGC it had before the first (the server's is lower
// than Go's default: small mail keeps little live).
const (
	burstHeadroom  = 16 << 20
	burstMinGOGC   = 25
	burstMaxGOGC   = 100
	burstPaceEvery = 50 * time.Millisecond
)

// burstGC paces the collector while some pool has big buffers in flight
// (begin, pace, end), and puts GOGC back when the last burst is over. An
// operator's GOGC is left as it is.
type burstGC struct {
	mu       sync.Mutex
	bursts   int
	prev     int // GOGC before the first burst, put back after the last
	cur      int
	lastPace time.Time
	// keep: GOGC is set in the environment, the operator's choice.
	keep bool
	// set and live replace debug.SetGCPercent and heapLive, for tests.
	set  func(int) int
	live func() uint64
}

var processGC = burstGC{keep: os.Getenv("GOGC") != ""}

func (g *burstGC) begin() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.bursts++; g.bursts == 1 && !g.keep {
		// GOGC is read by setting it; the pace sets it at once.
		g.prev, g.cur = g.setPercent(burstMaxGOGC), burstMaxGOGC
		g.paceLocked()
	}
}

// pace sets GOGC for the heap that is live now, at most every
// burstPaceEvery.
func (g *burstGC) pace() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.bursts > 0 && !g.keep && time.Since(g.lastPace) >= burstPaceEvery {
		g.paceLocked()
	}
}

func (g *burstGC) paceLocked() {
	g.lastPace = time.Now()
	p := burstMaxGOGC
	if live := g.heapLive(); live > 0 {
		p = int(min(burstMaxGOGC, max(burstMinGOGC, 100*burstHeadroom/live)))
	}
	if p != g.cur {
		g.setPercent(p)
		g.cur = p
	}
}

func (g *burstGC) end() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.bursts--; g.bursts == 0 && !g.keep {
		g.setPercent(g.prev)
		g.cur = g.prev
	}
}

func (g *burstGC) setPercent(p int) int {
	if g.set != nil {
		return g.set(p)
	}
	return debug.SetGCPercent(p)
}

func (g *burstGC) heapLive() uint64 {
	if g.live != nil {
		return g.live()
	}
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(sample)
	if sample[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return sample[0].Value.Uint64()
}

// giveBackMemory collects twice, since a sync.Pool keeps what it held
// through one collection (its victim cache), and returns what is free to
// the system.
func giveBackMemory() {
	runtime.GC()
	debug.FreeOSMemory()
}

// bytes is the message.
func (m *msgBuf) bytes() []byte { return m.b[m.off:] }

// grow makes room for n more octets of message and returns it, for a read.
// The buffer grows to the next class at least, and by half beyond them; an
// outgrown pooled buffer goes back to bp.
func (m *msgBuf) grow(bp *bufPool, n int) []byte {
	if cap(m.b)-len(m.b) < n {
		next := cap(m.b) * 3 / 2
		if i := classOf(cap(m.b) + 1); i >= 0 {
			next = bufClasses[i]
		}
		nb := bp.alloc(max(next, len(m.b)+n))[:len(m.b)]
		copy(nb, m.b)
		if m.pool != nil {
			bp.free(m.pool)
		}
		bp.use(m, nb)
	}
	return m.b[len(m.b):cap(m.b)]
}

// set replaces the message by msg, which a check rewrote; unless msg is
// the buffer's own tail, the headroom is gone.
func (m *msgBuf) set(msg []byte) {
	cur := m.bytes()
	if len(msg) > 0 && len(cur) >= len(msg) && &cur[len(cur)-len(msg)] == &msg[0] {
		m.off += len(cur) - len(msg)
		return
	}
	m.b, m.off = msg, 0
}

// prepend writes fields in front of the message, in order.
func (m *msgBuf) prepend(fields ...[]byte) {
	n := 0
	for _, f := range fields {
		n += len(f)
	}
	if n > m.off {
		nb := make([]byte, headroom+n+len(m.b)-m.off)
		copy(nb[headroom+n:], m.bytes())
		m.b, m.off = nb, headroom+n
	}
	for i := len(fields) - 1; i >= 0; i-- {
		m.off -= len(fields[i])
		copy(m.b[m.off:], fields[i])
	}
}
