package nbd

import (
	"context"
	"math/bits"
	"sync"
)

const (
	minClassShift = 12 // 4 KiB
	maxClassShift = 27 // 128 MiB = maxBlockCap
)

// bufPool recycles payload buffers in power-of-two size classes, so a busy
// connection does not allocate a fresh buffer per request.
type bufPool struct {
	classes [maxClassShift - minClassShift + 1]sync.Pool
}

func sizeClass(n int) int {
	if n <= 1<<minClassShift {
		return 0
	}
	return bits.Len(uint(n-1)) - minClassShift
}

// get returns a buffer of length n (contents undefined).
func (p *bufPool) get(n int) []byte {
	c := sizeClass(n)
	if c >= len(p.classes) {
		return make([]byte, n)
	}
	if v, ok := p.classes[c].Get().(*[]byte); ok {
		return (*v)[:n]
	}
	return make([]byte, n, 1<<(c+minClassShift))
}

// put recycles a buffer obtained from get.
func (p *bufPool) put(b []byte) {
	c := sizeClass(cap(b))
	if cap(b) == 0 || c >= len(p.classes) || cap(b) != 1<<(c+minClassShift) {
		return
	}
	b = b[:0]
	p.classes[c].Put(&b)
}

// limiter bounds one connection's in-flight requests and payload bytes. It
// has a single acquirer (the connection's reader), so one wake-up token is
// enough.
type limiter struct {
	mu         sync.Mutex
	slots      int
	bytes, max int64
	wake       chan struct{}
}

func newLimiter(slots int, bytes int64) *limiter {
	return &limiter{slots: slots, bytes: bytes, max: bytes, wake: make(chan struct{}, 1)}
}

// acquire takes a slot and w bytes (at most the whole budget, so one huge
// request can still run alone). It returns the bytes taken, or false if ctx
// ended first.
func (l *limiter) acquire(ctx context.Context, w int64) (int64, bool) {
	w = min(w, l.max)
	for {
		l.mu.Lock()
		if l.slots > 0 && l.bytes >= w {
			l.slots--
			l.bytes -= w
			l.mu.Unlock()
			return w, true
		}
		l.mu.Unlock()
		select {
		case <-l.wake:
		case <-ctx.Done():
			return 0, false
		}
	}
}

func (l *limiter) release(w int64) {
	l.mu.Lock()
	l.slots++
	l.bytes += w
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
}
