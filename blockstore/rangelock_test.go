package blockstore

import (
	"context"
	"testing"
	"time"
)

func granted(t *testing.T, ch <-chan *lockReq) *lockReq {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("lock not granted")
		return nil
	}
}

func notGranted(t *testing.T, ch <-chan *lockReq) {
	t.Helper()
	select {
	case <-ch:
		t.Fatal("lock granted too early")
	case <-time.After(50 * time.Millisecond):
	}
}

// waitQueued waits until the lock's queue holds n requests, so that tests
// fix arrival order without relying on sleeps.
func waitQueued(t *testing.T, l *rangeLock, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		l.mu.Lock()
		k := 0
		for e := l.head; e != nil; e = e.next {
			k++
		}
		l.mu.Unlock()
		if k == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue holds %d requests, want %d", k, n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestRangeLockFIFO(t *testing.T) {
	ctx := t.Context()
	var l rangeLock
	queued := 0
	acquire := func(start, end int64) <-chan *lockReq {
		ch := make(chan *lockReq, 1)
		go func() {
			r, err := l.lock(ctx, start, end)
			if err != nil {
				t.Error(err)
			}
			ch <- r
		}()
		queued++
		waitQueued(t, &l, queued)
		return ch
	}
	a := granted(t, acquire(0, 10))
	d := granted(t, acquire(10, 12)) // adjacent, not overlapping
	l.unlock(d)
	queued--
	b := acquire(5, 15)              // waits for a
	c := acquire(12, 30)             // overlaps no holder, only b (waiting): queues behind b
	e := granted(t, acquire(40, 50)) // disjoint from everything
	notGranted(t, b)
	notGranted(t, c)
	l.unlock(a)
	rb := granted(t, b)
	notGranted(t, c)
	l.unlock(rb)
	l.unlock(granted(t, c))
	l.unlock(e)
	if l.head != nil || l.tail != nil {
		t.Fatal("queue not empty")
	}
}

func TestRangeLockCancel(t *testing.T) {
	var l rangeLock
	a, _ := l.lock(t.Context(), 0, 10)
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() {
		_, err := l.lock(ctx, 0, 10)
		errc <- err
	}()
	waitQueued(t, &l, 2)
	later := make(chan *lockReq, 1)
	go func() {
		r, _ := l.lock(t.Context(), 5, 20) // behind the cancelled one
		later <- r
	}()
	waitQueued(t, &l, 3)
	cancel()
	if err := <-errc; err != context.Canceled {
		t.Fatalf("cancelled lock: %v", err)
	}
	notGranted(t, later)
	l.unlock(a)
	l.unlock(granted(t, later))
	if l.head != nil {
		t.Fatal("queue not empty")
	}
}
