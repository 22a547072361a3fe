package mta

import (
	"context"
	"runtime"
	"time"
)

// A message is held in memory whole until it is stored, so the memory of a
// burst of big mail is the number of big messages received at once times
// their size. Receiving more of them at once than the cores can decode
// gains nothing: at 32 sessions of 1 MiB mail on 2 cores the server took
// in less than at 8 (55 against 64 MB/s) and its peak memory was 101 MB
// against 64. So a transfer that grows past bigTransfer octets (or
// announces as much with SIZE=) takes one of a few places first, and while
// none is free it waits, not reading: the client's data waits in the
// sockets' buffers. Small mail never waits.
//
// The wait is bounded (bigTransferWait): a few clients trickling big
// messages must not hold up everyone else's big mail, so after the wait a
// transfer goes on without a place, and memory is bounded by
// MaxBufferedBytes as without the gate. The time waited does not count
// against the client's MinDataRate.
const (
	bigTransfer     = 128 << 10
	bigTransferWait = 5 * time.Second
)

// TransferGate bounds how many big messages are received at once. One gate
// is meant to be shared by all the Servers of a process, since they share
// its memory.
type TransferGate struct {
	places chan struct{}
	wait   time.Duration // bigTransferWait; shorter in tests
}

// NewTransferGate returns a gate for n big transfers at once; n <= 0 gives
// four a core, enough to keep the cores busy decoding while some of the
// transfers wait for their clients.
func NewTransferGate(n int) *TransferGate {
	if n <= 0 {
		n = 4 * runtime.GOMAXPROCS(0)
	}
	return &TransferGate{places: make(chan struct{}, n), wait: bigTransferWait}
}

// enter takes a place, waiting for one at most the gate's wait. It returns
// how long it waited and the func that gives the place back, nil when it
// goes on without one (wait over, or ctx done). A transfer that has to wait
// steps aside first (stepAside, when not nil) and calls what that returned
// once the wait is over.
func (g *TransferGate) enter(ctx context.Context, stepAside func() (back func())) (time.Duration, func()) {
	leave := func() { <-g.places }
	select {
	case g.places <- struct{}{}:
		return 0, leave
	default:
	}
	if stepAside != nil {
		defer stepAside()()
	}
	start := time.Now()
	t := time.NewTimer(g.wait)
	defer t.Stop()
	select {
	case g.places <- struct{}{}:
		return time.Since(start), leave
	case <-t.C:
	case <-ctx.Done():
	}
	return time.Since(start), nil
}
