package nbd

import (
	"context"
	"sync"
)

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
