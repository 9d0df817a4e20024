package replication

import (
	"context"
	"sync"
	"time"
)

// activityLog remembers, durably, which regions the primary may have
// written without every replica confirming: the write-ahead bitmap slot is
// set before a request reaches any disk and cleared only once the region has
// been idle for a while (hot regions stay set, so QD1 writes do not pay a
// bitmap write each). If this primary is deposed, the regions still set are
// exactly those where it may hold writes nobody acknowledged; it hands them
// to the new primary, which resyncs them too (DRBD's activity log, I4).
type activityLog struct {
	store Store
	slot  int
	gran  int64
	idle  time.Duration

	mu     sync.Mutex
	active map[int64]*activeRegion
	// busy is signalled when active stops being empty: the sweeper sleeps
	// while there is nothing to sweep.
	busy chan struct{}
}

type activeRegion struct {
	inflight int
	last     time.Time
}

func newActivityLog(store Store, slot int, gran int64, idle time.Duration) *activityLog {
	return &activityLog{store: store, slot: slot, gran: gran, idle: idle, active: map[int64]*activeRegion{}, busy: make(chan struct{}, 1)}
}

// wakeSweeper signals busy if active is empty, before the caller fills it.
// a.mu held.
func (a *activityLog) wakeSweeper() {
	if len(a.active) == 0 {
		select {
		case a.busy <- struct{}{}:
		default:
		}
	}
}

// empty reports whether no region is active; a stale busy signal is
// dropped then, so that the sweeper sleeps until the next region.
func (a *activityLog) empty() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.active) > 0 {
		return false
	}
	select {
	case <-a.busy:
	default:
	}
	return true
}

// begin marks a range active, persisting new bits before returning.
func (a *activityLog) begin(ctx context.Context, off, length int64) error {
	if length <= 0 {
		return nil
	}
	now := time.Now()
	a.mu.Lock()
	a.wakeSweeper()
	for r := off / a.gran; r*a.gran < off+length; r++ {
		ar := a.active[r]
		if ar == nil {
			ar = &activeRegion{}
			a.active[r] = ar
		}
		ar.inflight++
		ar.last = now
	}
	a.mu.Unlock()
	// Mark whole extents: already-set bits cost no I/O, so a write into an
	// extent that is already active pays nothing.
	start := off / a.gran * a.gran
	end := min((off+length+a.gran-1)/a.gran*a.gran, a.store.Size())
	return a.store.MarkDirty(ctx, a.slot, start, end-start)
}

// adopt takes regions set before a restart into the sweep, once the peers
// have them or their bitmaps do: they then leave the log like any region
// idle for a.idle.
func (a *activityLog) adopt(ranges [][2]int64) {
	now := time.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.wakeSweeper()
	for _, rg := range ranges {
		for r := rg[0] / a.gran; r*a.gran < rg[0]+rg[1]; r++ {
			if a.active[r] == nil {
				a.active[r] = &activeRegion{last: now}
			}
		}
	}
}

// end records that a request over the range finished.
func (a *activityLog) end(off, length int64) {
	if length <= 0 {
		return
	}
	now := time.Now()
	a.mu.Lock()
	for r := off / a.gran; r*a.gran < off+length; r++ {
		if ar := a.active[r]; ar != nil {
			ar.inflight--
			ar.last = now
		}
	}
	a.mu.Unlock()
}

// sweep clears regions idle for longer than a.idle (persisted lazily by the
// store, which is conservative: a region cleared in memory only stays set
// on disk until the next flush).
func (a *activityLog) sweep(ctx context.Context) {
	cut := time.Now().Add(-a.idle)
	a.mu.Lock()
	var idle []int64
	for r, ar := range a.active {
		if ar.inflight <= 0 && ar.last.Before(cut) {
			idle = append(idle, r)
			delete(a.active, r)
		}
	}
	a.mu.Unlock()
	for _, r := range idle {
		_ = a.store.ClearDirty(ctx, a.slot, r*a.gran, min(a.gran, a.store.Size()-r*a.gran))
	}
}

// maxActivityRanges bounds what a HelloAck carries; more means "all".
const maxActivityRanges = 1000

// ActivityRanges lists the regions set in a store's activity slot, or full
// when there are too many to send.
func ActivityRanges(s Store, slot int) (ranges [][2]int64, full bool) {
	s.DirtyRanges(slot, func(off, length int64) bool {
		if len(ranges) == maxActivityRanges {
			full = true
			return false
		}
		ranges = append(ranges, [2]int64{off, length})
		return true
	})
	return ranges, full
}
