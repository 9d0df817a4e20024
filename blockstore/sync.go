package blockstore

import (
	"sync"
	"sync/atomic"
	"time"
)

// syncState lets a flush skip or join an fdatasync that already covers it,
// and starts one early when the client's pattern says a flush is coming.
//
// Coverage: mods counts modifications of the file (data and metadata
// writes, fallocate) after each one returns. A sync that read mods = c before
// calling fdatasync covers every modification counted in c, because those
// returned before it started. A flush needs the modifications that completed
// before it arrived, which are the first `target` counted; any sync that
// started with c >= target covers them.
//
// Sync ahead: a database-style client writes, then flushes, then waits, so
// at queue depth 1 a replica's disk sits idle between its ack of the write
// and the flush's arrival, several network hops later. When recent flushes
// came after at most eagerMaxRun writes, SyncAhead runs the fdatasync in
// that gap; the flush then finds it done. A client that does not flush
// never pays for it; a flushing client pays at most one extra sync per run
// that it did not follow with a flush. (Starting it from the write path on
// another goroutine was measured too: the hand-offs cost more than the
// head start on the primary, whose own flush arrives quickly.)
type syncState struct {
	mods atomic.Uint64

	mu      sync.Mutex
	durable uint64   // coverage of the last successful sync
	cur     *syncRun // the newest sync in flight, if any

	// Flush pattern, for eager syncs.
	sinceFlush atomic.Int64 // writes since the last flush
	lastRun    atomic.Int64 // writes between the last two flushes
	lastFlush  atomic.Int64 // unix nanoseconds of the last flush
}

type syncRun struct {
	covers uint64
	done   chan struct{}
	err    error
}

const (
	// eagerMaxRun is the longest run of writes per flush that still
	// counts as a flush-after-write pattern.
	eagerMaxRun = 4
	// eagerWindow is how recent the last flush must be.
	eagerWindow = 50 * time.Millisecond
)

// modified records that a modification of the file returned.
func (s *syncState) modified() { s.mods.Add(1) }

// sync makes every modification that returned before the call durable,
// calling do (fdatasync) unless a finished or running sync already covers
// them.
func (s *syncState) sync(do func() error) error {
	target := s.mods.Load()
	s.mu.Lock()
	if s.durable >= target {
		s.mu.Unlock()
		return nil
	}
	if c := s.cur; c != nil && c.covers >= target {
		s.mu.Unlock()
		<-c.done
		return c.err
	}
	return s.runLocked(do)
}

// runLocked runs a sync; s.mu is held on entry and released.
func (s *syncState) runLocked(do func() error) error {
	run := s.startLocked()
	s.mu.Unlock()
	return s.finish(run, do)
}

func (s *syncState) startLocked() *syncRun {
	run := &syncRun{covers: s.mods.Load(), done: make(chan struct{})}
	s.cur = run
	return run
}

func (s *syncState) finish(run *syncRun, do func() error) error {
	run.err = do()
	s.mu.Lock()
	if run.err == nil && run.covers > s.durable {
		s.durable = run.covers
	}
	if s.cur == run {
		s.cur = nil
	}
	s.mu.Unlock()
	close(run.done)
	return run.err
}

// flushed records a client flush, for the pattern.
func (s *syncState) flushed() {
	s.lastRun.Store(s.sinceFlush.Swap(0))
	s.lastFlush.Store(time.Now().UnixNano())
}

// wrote records a completed client write.
func (s *syncState) wrote() { s.sinceFlush.Add(1) }

// flushExpected reports whether a flush is likely to follow now: the writes
// since the last flush reached the usual run, flushes are recent, and no
// finished sync already covers them.
func (s *syncState) flushExpected() bool {
	n := s.sinceFlush.Load()
	run := s.lastRun.Load()
	if run < 1 || run > eagerMaxRun || n < run {
		return false
	}
	if time.Since(time.Unix(0, s.lastFlush.Load())) > eagerWindow {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.durable < s.mods.Load()
}
