package mta

import (
	"cmp"
	"runtime"
	"runtime/debug"
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
// megabyte buffers up and keep them alive (and resident) for good. The
// classes are 1.5x apart (powers of two and the halfway points), which
// bounds what a buffer wastes; a "1 MiB" message, a little over 1 MiB
// with its header and headroom, takes 1.5 MiB. Beyond the largest class a
// buffer is not pooled: a rare huge message should not pin its memory.
var bufClasses = [...]int{
	16 << 10, 24 << 10, 32 << 10, 48 << 10, 64 << 10, 96 << 10, 128 << 10, 192 << 10,
	256 << 10, 384 << 10, 512 << 10, 768 << 10, 1 << 20, 3 << 19, 2 << 20, 3 << 20, 4 << 20,
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
	}
}

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
	if bp.relieve != nil {
		bp.relieve()
		return
	}
	giveBackMemory()
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
// The buffer grows by half at least; an outgrown pooled buffer goes back
// to bp.
func (m *msgBuf) grow(bp *bufPool, n int) []byte {
	if cap(m.b)-len(m.b) < n {
		nb := bp.alloc(max(cap(m.b)*3/2, len(m.b)+n))[:len(m.b)]
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
