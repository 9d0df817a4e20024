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
type sessionGate struct {
	mu       sync.Mutex
	cond     *sync.Cond
	current  uint64         // the newest session; only its frames apply
	next     uint64         // the last session number handed out
	applying map[uint64]int // frames being applied, by session
	waiting  int            // sessions waiting for older frames (tests)
}

func newSessionGate() *sessionGate {
	g := &sessionGate{applying: map[uint64]int{}}
	g.cond = sync.NewCond(&g.mu)
	return g
}

// begin starts a session that supersedes every older one, once their
// frames in flight are applied. It fails only when ctx ends first.
func (g *sessionGate) begin(ctx context.Context) (uint64, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.next++
	id := g.next
	g.current = id
	stop := context.AfterFunc(ctx, func() {
		g.mu.Lock()
		g.cond.Broadcast()
		g.mu.Unlock()
	})
	defer stop()
	for g.olderApplying(id) {
		if err := ctx.Err(); err != nil {
			return 0, fmt.Errorf("an older replication session's writes are still being applied: %w", err)
		}
		g.waiting++
		g.cond.Wait()
		g.waiting--
	}
	return id, nil
}

func (g *sessionGate) olderApplying(id uint64) bool {
	for s, n := range g.applying {
		if s < id && n > 0 {
			return true
		}
	}
	return false
}

// superseded reports whether a newer session exists.
func (g *sessionGate) superseded(id uint64) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.current != id
}

// apply runs fn for a frame of session id, unless a newer session exists.
func (g *sessionGate) apply(id uint64, fn func() (Status, string)) (Status, string) {
	g.mu.Lock()
	if g.current != id {
		g.mu.Unlock()
		return StatusStaleEpoch, "superseded by a newer replication connection to this replica"
	}
	g.applying[id]++
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		if g.applying[id]--; g.applying[id] <= 0 {
			delete(g.applying, id)
		}
		g.cond.Broadcast()
		g.mu.Unlock()
	}()
	return fn()
}
