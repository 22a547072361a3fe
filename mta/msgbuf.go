package mta

import "sync"

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

// maxPooled keeps buffers of messages larger than this out of the pool: a
// rare big message should not pin its memory for ever.
const maxPooled = 4 << 20

type msgBuf struct {
	b    []byte // b[off:] is the message
	off  int
	pool []byte // the pooled allocation, to give back
}

type bufPool struct{ p sync.Pool }

// get returns an empty buffer that can take size octets of message
// without growing.
func (bp *bufPool) get(size int) *msgBuf {
	if v, ok := bp.p.Get().(*[]byte); ok && cap(*v) >= headroom+size {
		b := (*v)[:headroom]
		return &msgBuf{b: b, off: headroom, pool: b}
	}
	b := make([]byte, headroom, headroom+size)
	return &msgBuf{b: b, off: headroom, pool: b}
}

func (bp *bufPool) put(m *msgBuf) {
	if m == nil || m.pool == nil || cap(m.pool) > headroom+maxPooled {
		return
	}
	b := m.pool[:0]
	m.pool, m.b = nil, nil
	bp.p.Put(&b)
}

// bytes is the message.
func (m *msgBuf) bytes() []byte { return m.b[m.off:] }

// grow makes room for n more octets of message and returns it, for a read.
func (m *msgBuf) grow(n int) []byte {
	if cap(m.b)-len(m.b) < n {
		nb := make([]byte, len(m.b), 2*cap(m.b)+n)
		copy(nb, m.b)
		m.b = nb
		if cap(nb) <= headroom+maxPooled {
			m.pool = nb
		}
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
