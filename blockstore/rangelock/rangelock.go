package rangelock

import (
	"context"
	"sync"
)

// Mode widens what a request orders against beyond its own range.
type Mode uint8

const (
	// AfterAll makes the request wait for every earlier one, whatever its
	// range: a flush covering every write before it.
	AfterAll Mode = 1 << iota
	// BeforeAll makes every later request wait for this one.
	BeforeAll
	// Barrier orders a request against every other, both ways.
	Barrier = AfterAll | BeforeAll
)

// Lock queues range requests in enqueue order; see the package doc for when
// one is granted. The queue holds only in-flight requests (tens), so linear
// scans are cheap. The zero Lock is empty and ready to use. T is what the
// caller keeps with each request, for Conflicting.
type Lock[T any] struct {
	mu         sync.Mutex
	head, tail *Req[T]
	free       *Req[T] // recycled requests: no allocation on the hot path
	waiting    int     // requests not yet granted
}

// Req is one request's place in a Lock.
type Req[T any] struct {
	start, end int64 // [start, end)
	mode       Mode
	granted    bool
	// wake is closed when the request is granted; nil if it was granted
	// at Enqueue. Only Enqueue writes it, before anyone can wait.
	wake       chan struct{}
	prev, next *Req[T]
	value      T
}

// conflicts reports whether later must wait for earlier.
func conflicts[T any](earlier, later *Req[T]) bool {
	return later.mode&AfterAll != 0 || earlier.mode&BeforeAll != 0 ||
		(earlier.start < later.end && later.start < earlier.end)
}

// Enqueue takes the next place in the queue for [start, end) and returns
// at once; Wait blocks until the request is granted.
func (l *Lock[T]) Enqueue(start, end int64, mode Mode, v T) *Req[T] {
	l.mu.Lock()
	r := l.free
	if r != nil {
		l.free = r.next
	} else {
		r = &Req[T]{}
	}
	*r = Req[T]{start: start, end: end, mode: mode, prev: l.tail, value: v}
	if l.tail != nil {
		l.tail.next = r
	} else {
		l.head = r
	}
	l.tail = r
	if l.blocked(r) {
		r.wake = make(chan struct{})
		l.waiting++
	} else {
		r.granted = true
	}
	l.mu.Unlock()
	return r
}

// Wait blocks until r is granted. If ctx ends first, r leaves the lock (the
// caller must not Release it) and Wait returns ctx's error.
func (l *Lock[T]) Wait(ctx context.Context, r *Req[T]) error {
	if r.wake == nil {
		return nil
	}
	select {
	case <-r.wake:
		return nil
	case <-ctx.Done():
		l.Release(r)
		return ctx.Err()
	}
}

// Acquire is Enqueue then Wait.
func (l *Lock[T]) Acquire(ctx context.Context, start, end int64, mode Mode, v T) (*Req[T], error) {
	r := l.Enqueue(start, end, mode, v)
	if err := l.Wait(ctx, r); err != nil {
		return nil, err
	}
	return r, nil
}

// Release removes r from the queue, granting the later requests it held
// back.
func (l *Lock[T]) Release(r *Req[T]) {
	l.mu.Lock()
	if !r.granted {
		l.waiting--
	}
	next := r.next
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
	// Only later requests can have waited for r.
	for e := next; e != nil && l.waiting > 0; e = e.next {
		if !e.granted && !l.blocked(e) {
			e.granted = true
			l.waiting--
			close(e.wake)
		}
	}
	*r = Req[T]{next: l.free}
	l.free = r
	l.mu.Unlock()
}

// Idle reports whether no request is in the lock.
func (l *Lock[T]) Idle() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.head == nil
}

// Conflicting returns the values of the requests in the lock that a request
// for [start, end) with mode, enqueued now, would wait for.
func (l *Lock[T]) Conflicting(start, end int64, mode Mode) []T {
	probe := Req[T]{start: start, end: end, mode: mode}
	var out []T
	l.mu.Lock()
	for e := l.head; e != nil; e = e.next {
		if conflicts(e, &probe) {
			out = append(out, e.value)
		}
	}
	l.mu.Unlock()
	return out
}

// blocked reports whether an earlier request in the queue conflicts with r.
func (l *Lock[T]) blocked(r *Req[T]) bool {
	if r.mode&AfterAll != 0 {
		return r.prev != nil
	}
	for e := r.prev; e != nil; e = e.prev {
		if conflicts(e, r) {
			return true
		}
	}
	return false
}
