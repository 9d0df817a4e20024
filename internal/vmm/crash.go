package vmm

import (
	"sync"
	"time"
)

// Crash restart limits: a VM down for restartAfter consecutive checks (one
// a second) is started again, at most restartLimit times per restartWindow.
const (
	restartAfter  = 2
	restartLimit  = 3
	restartWindow = 10 * time.Minute
)

// crashTracker holds what the crash restarts decide on. busy counts local
// operations in flight per VM (start, stop, migrate, undefine): a VM in
// one is never restarted behind its back.
type crashTracker struct {
	mu       sync.Mutex
	busy     map[string]int
	down     map[string]int         // consecutive checks that found it down
	restarts map[string][]time.Time // recent restarts, for the limit
}

func newCrashTracker() crashTracker {
	return crashTracker{busy: map[string]int{}, down: map[string]int{}, restarts: map[string][]time.Time{}}
}

// crashVerdict is what one check decides for a VM.
type crashVerdict int

const (
	crashWait    crashVerdict = iota // up, busy, or not down for long enough
	crashGiveUp                      // down again past the limit: say so, once
	crashGivenUp                     // still past the limit, already said
	crashRestart                     // start it; call restarted when done
)

// markBusy records a local operation on a VM; call the result when done.
func (t *crashTracker) markBusy(name string) func() {
	t.mu.Lock()
	t.busy[name]++
	t.mu.Unlock()
	return func() {
		t.mu.Lock()
		if t.busy[name]--; t.busy[name] <= 0 {
			delete(t.busy, name)
		}
		delete(t.down, name)
		t.mu.Unlock()
	}
}

func (t *crashTracker) isBusy(name string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.busy[name] > 0
}

// check counts one look at the VM name, down or not, at now. On
// crashRestart the VM is marked busy until restarted is called. recent is
// the number of restarts within restartWindow before this one.
func (t *crashTracker) check(name string, down bool, now time.Time) (v crashVerdict, recent int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !down || t.busy[name] > 0 {
		delete(t.down, name)
		return crashWait, 0
	}
	t.down[name]++
	n := t.down[name]
	kept := t.restarts[name][:0:0]
	for _, at := range t.restarts[name] {
		if now.Sub(at) < restartWindow {
			kept = append(kept, at)
		}
	}
	t.restarts[name] = kept
	switch {
	case n < restartAfter:
		return crashWait, len(kept)
	case len(kept) >= restartLimit && n == restartAfter:
		return crashGiveUp, len(kept)
	case len(kept) >= restartLimit:
		return crashGivenUp, len(kept)
	}
	t.restarts[name] = append(kept, now)
	delete(t.down, name)
	t.busy[name]++
	return crashRestart, len(kept)
}

// skipped undoes a crashRestart verdict that did not lead to a start:
// the busy mark goes, and the restart does not count towards the limit.
func (t *crashTracker) skipped(name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.busy[name]--; t.busy[name] <= 0 {
		delete(t.busy, name)
	}
	if rs := t.restarts[name]; len(rs) > 0 {
		t.restarts[name] = rs[:len(rs)-1]
	}
}

// restarted ends the busy mark of a crashRestart verdict.
func (t *crashTracker) restarted(name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.busy[name]--; t.busy[name] <= 0 {
		delete(t.busy, name)
	}
}
