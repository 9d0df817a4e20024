package replication

import (
	"context"
	"fmt"
	"sync"
)

// sessionGate orders a replica's replication sessions. Frames are checked
// against the epoch when they are read but applied later, by workers; a
// new session (a new epoch's primary, or the same primary reconnecting)
// must not see an older session's frame land after its own writes. So a
// new session first supersedes the older ones, whose frames not yet
// applied are refused, and waits until their frames already being applied
// are on the disk (I1, I2).
//
// Epochs only go forward through the gate: a session never supersedes one
// of a newer epoch (its hello's confirming read returned before the
// promotion, its begin came after), which would refuse the rightful
// primary's frames. And how a session was superseded decides what its
// primary hears: by a newer epoch, StatusStaleEpoch (it is deposed); by a
// connection of its own epoch, which only its own primary can open,
// StatusSuperseded (a lost link: the primary fences the peer and resyncs
// it). A connection the primary gave up on can reach the replica late, as
// when the replica's process was stopped during the primary's hello, and
// supersede the primary's live one (the fault-schedule runner's seed 2073).
type sessionGate struct {
	mu       sync.Mutex
	cond     *sync.Cond
	current  uint64         // the newest session; only its frames apply
	epoch    uint64         // the newest session's epoch
	next     uint64         // the last session number handed out
	applying map[uint64]int // frames being applied, by session
	waiting  int            // sessions waiting for older frames (tests)
}

// session is one replication connection's place in its replica's gate.
type session struct {
	id    uint64
	epoch uint64
}

func newSessionGate() *sessionGate {
	g := &sessionGate{applying: map[uint64]int{}}
	g.cond = sync.NewCond(&g.mu)
	return g
}

// begin starts a session of epoch that supersedes every older one, once
// their frames in flight are applied. It fails with ErrStaleEpoch when a
// session of a newer epoch began first, and when ctx ends first.
func (g *sessionGate) begin(ctx context.Context, epoch uint64) (session, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if epoch < g.epoch {
		return session{}, fmt.Errorf("%w: a replication session of epoch %d began on this replica", ErrStaleEpoch, g.epoch)
	}
	g.next++
	s := session{id: g.next, epoch: epoch}
	g.current, g.epoch = s.id, epoch
	stop := context.AfterFunc(ctx, func() {
		g.mu.Lock()
		g.cond.Broadcast()
		g.mu.Unlock()
	})
	defer stop()
	for g.olderApplying(s.id) {
		if err := ctx.Err(); err != nil {
			return session{}, fmt.Errorf("an older replication session's writes are still being applied: %w", err)
		}
		g.waiting++
		g.cond.Wait()
		g.waiting--
	}
	return s, nil
}

func (g *sessionGate) olderApplying(id uint64) bool {
	for s, n := range g.applying {
		if s < id && n > 0 {
			return true
		}
	}
	return false
}

// check reports StatusOK while s is the newest session, else why it is
// not (see sessionGate).
func (g *sessionGate) check(s session) (Status, string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.checkLocked(s)
}

func (g *sessionGate) checkLocked(s session) (Status, string) {
	switch {
	case g.current == s.id:
		return StatusOK, ""
	case g.epoch > s.epoch:
		return StatusStaleEpoch, fmt.Sprintf("superseded by a replication connection of epoch %d", g.epoch)
	}
	return StatusSuperseded, "superseded by a newer replication connection of the same epoch to this replica"
}

// apply runs fn for a frame of session s, unless a newer session exists.
func (g *sessionGate) apply(s session, fn func() (Status, string)) (Status, string) {
	g.mu.Lock()
	if st, msg := g.checkLocked(s); st != StatusOK {
		g.mu.Unlock()
		return st, msg
	}
	g.applying[s.id]++
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		if g.applying[s.id]--; g.applying[s.id] <= 0 {
			delete(g.applying, s.id)
		}
		g.cond.Broadcast()
		g.mu.Unlock()
	}()
	return fn()
}
