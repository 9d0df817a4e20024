package blockstore

import (
	"context"
	"sync"
)

// rangeLock serialises overlapping writes in the order their calls began,
// which is what Volume promises and what read-modify-write of shared 4 KiB
// blocks needs. Requests queue in arrival order; a request is granted once
// no earlier request (held or still waiting) overlaps it, so non-overlapping
// writes run in parallel and overlapping ones are FIFO. The queue holds only
// in-flight writes, so linear scans are cheap.
type rangeLock struct {
	mu         sync.Mutex
	head, tail *lockReq
	free       *lockReq // recycled requests: no allocation on the hot path
}

type lockReq struct {
	start, end int64 // [start, end)
	granted    bool
	wake       chan struct{} // closed when granted; nil if granted at once
	prev, next *lockReq
}

// lock waits until [start, end) is free of earlier overlapping requests.
func (l *rangeLock) lock(ctx context.Context, start, end int64) (*lockReq, error) {
	l.mu.Lock()
	r := l.free
	if r != nil {
		l.free = r.next
		*r = lockReq{}
	} else {
		r = &lockReq{}
	}
	r.start, r.end = start, end
	r.prev = l.tail
	if l.tail != nil {
		l.tail.next = r
	} else {
		l.head = r
	}
	l.tail = r
	if !l.blocked(r) {
		r.granted = true
		l.mu.Unlock()
		return r, nil
	}
	wake := make(chan struct{})
	r.wake = wake
	l.mu.Unlock()

	select {
	case <-wake:
		return r, nil
	case <-ctx.Done():
		l.mu.Lock()
		l.releaseLocked(r)
		l.mu.Unlock()
		return nil, ctx.Err()
	}
}

func (l *rangeLock) unlock(r *lockReq) {
	l.mu.Lock()
	l.releaseLocked(r)
	l.mu.Unlock()
}

// blocked reports whether an earlier request overlaps r.
func (l *rangeLock) blocked(r *lockReq) bool {
	for e := r.prev; e != nil; e = e.prev {
		if e.start < r.end && r.start < e.end {
			return true
		}
	}
	return false
}

func (l *rangeLock) releaseLocked(r *lockReq) {
	if r.prev != nil {
		r.prev.next = r.next
	} else {
		l.head = r.next
	}
	if r.next != nil {
		r.next.prev = r.prev
	} else {
		l.tail = r.prev
	}
	for e := l.head; e != nil; e = e.next {
		if !e.granted && !l.blocked(e) {
			e.granted = true
			close(e.wake)
		}
	}
	*r = lockReq{next: l.free}
	l.free = r
}
