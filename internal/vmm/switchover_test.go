package vmm

import (
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/tandemhci/tandem/consensus"
)

// errOutdated is the shard's refusal of a handover to a target that
// turned Outdated during the migration.
var errOutdated = errors.New("replica is not UpToDate: migration target n3 is Outdated")

// switchoverWorld is n1, the source of web's migration to n3, whose
// handover of web-disk0 the shard refuses.
func switchoverWorld() (*world, *fakeLocal) {
	w := newWorld()
	w.startedVM("web", "n1", []string{"n1", "n3"}, testVolume{"web-disk0", "n1"})
	l := &fakeLocal{serving: true, rec: &consensus.VolumeRecord{Name: "web-disk0", Primary: "n1", Epoch: 1, MigrationTarget: "n3"}}
	w.vols.local["web-disk0"] = l
	w.vols.handover = func(int) error { return errOutdated }
	return w, l
}

// TestSwitchoverRecordsTheTarget: the fault schedule of seed 2073 killed
// the migration target's tandemd while libvirt moved the domain. The
// handover was refused (the target's replica was Outdated), the VM stayed
// recorded on the source where no domain was left, and nothing ever ran it
// again. The record now follows the domain at once; the source does not
// hand over again (the target takes over), and follows until it has.
func TestSwitchoverRecordsTheTarget(t *testing.T) {
	w, l := switchoverWorld()
	m := w.manager()
	m.retryFirst, m.retryMax = time.Millisecond, 5*time.Millisecond
	_, err := m.switchover(t.Context(), VMInfoOf(w.ms.VMs["web"]), "n3")
	if !isStatus(err, codes.Unavailable, "VM web runs on n3 but the handover of its volumes failed: volume web-disk0: "+errOutdated.Error()+"; n3 takes them over") {
		t.Fatalf("switchover: %v", err)
	}
	if n := w.ms.VMs["web"].Node; n != "n3" {
		t.Fatalf("the VM is recorded on %s, want n3", n)
	}
	time.Sleep(20 * time.Millisecond)
	l.mu.Lock()
	l.rec = &consensus.VolumeRecord{Name: "web-disk0", Primary: "n3", Epoch: 2} // n3 took over
	l.mu.Unlock()
	waitLine(t, w, "event vm-handover-done web")
	waitLine(t, w, "event vm-handover-pending web")
	want := []string{"volume handover web-disk0 n3", "meta update-vm web desired= node=n3"}
	if got := actions(w); !slices.Equal(got, want) {
		t.Fatalf("journal:\n got %q\nwant %q", got, want)
	}
}

// TestSwitchoverStopsWhenRecordedElsewhere: HA recovers the VM on another
// node (the target was lost): the source closes the windows still open
// for the lost target, so that nothing takes the volume over from the VM
// HA started. A source that retried the handover itself once took the
// disk from the VM HA had just restarted on it.
func TestSwitchoverStopsWhenRecordedElsewhere(t *testing.T) {
	w, _ := switchoverWorld()
	m := w.manager()
	m.retryFirst, m.retryMax = 10*time.Millisecond, 10*time.Millisecond
	var moved atomic.Bool
	w.meta.onLocal = func() {
		if moved.Load() {
			w.ms.VMs["web"].Node = "n1" // HA restarted it on n1, the volume's primary
		}
	}
	if _, err := m.switchover(t.Context(), VMInfoOf(w.ms.VMs["web"]), "n3"); err == nil {
		t.Fatal("switchover with the handover refused succeeded")
	}
	moved.Store(true) // the follower's next look sees it
	waitLine(t, w, "volume end-dual web-disk0")
	time.Sleep(30 * time.Millisecond) // a follower that did not stop would act again
	want := []string{"volume handover web-disk0 n3", "meta update-vm web desired= node=n3", "volume end-dual web-disk0"}
	if got := actions(w); !slices.Equal(got, want) {
		t.Fatalf("journal:\n got %q\nwant %q", got, want)
	}
}

// TestSwitchoverRetriesTheRecord: without quorum the record cannot move
// either; it is retried until it does.
func TestSwitchoverRetriesTheRecord(t *testing.T) {
	w, l := switchoverWorld()
	w.vols.handover = nil // the handover itself went through
	l.rec = &consensus.VolumeRecord{Name: "web-disk0", Primary: "n3", Epoch: 2}
	w.meta.updateErrs = []error{errors.New("no quorum"), errors.New("no quorum")}
	m := w.manager()
	m.retryFirst, m.retryMax = time.Millisecond, 5*time.Millisecond
	_, err := m.switchover(t.Context(), VMInfoOf(w.ms.VMs["web"]), "n3")
	if !isStatus(err, codes.Unavailable, "VM web runs on n3 but recording it there failed: no quorum") {
		t.Fatalf("switchover: %v", err)
	}
	waitLine(t, w, "event vm-handover-done web")
	if n := w.ms.VMs["web"].Node; n != "n3" {
		t.Fatalf("the VM is recorded on %s, want n3", n)
	}
}

// actions is the world's journal without the events, which are sent
// asynchronously.
func actions(w *world) []string {
	return slices.DeleteFunc(w.j.list(), func(l string) bool { return strings.HasPrefix(l, "event ") })
}

// waitLine waits until the world's journal has line.
func waitLine(t *testing.T, w *world, line string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !slices.Contains(w.j.list(), line) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the journal within 10s:\n%s", line, strings.Join(w.j.list(), "\n"))
		}
		time.Sleep(time.Millisecond)
	}
}

// TestTakeOverPaused: on the migration's target, a VM that QEMU paused
// when its first write's takeover was refused (the replica was Outdated)
// is taken over by the run loop once it can be, and only for a VM recorded
// here, with HA state started, on fresh metadata, whose volumes' window is
// open for this node.
func TestTakeOverPaused(t *testing.T) {
	setup := func() *world {
		w := newWorld()
		w.startedVM("web", "n1", []string{"n1", "n2"}, testVolume{"web-disk0", "n2"})
		w.vols.local["web-disk0"] = &fakeLocal{becomeAfter: -1, rec: &consensus.VolumeRecord{Name: "web-disk0", Primary: "n2", Epoch: 1, MigrationTarget: "n1"}}
		w.vols.takeover = map[string]error{}
		return w
	}
	yes := func(string) bool { return true }
	for _, tc := range []struct {
		name     string
		change   func(w *world)
		recorded func(string) bool
		want     bool
		took     bool
	}{
		{"window open for this node", func(*world) {}, yes, true, true},
		{"HA fencing this node", func(w *world) { w.ms.VMs["web"].HAState = consensus.HAFence }, yes, false, false},
		{"recorded elsewhere", func(w *world) { w.ms.VMs["web"].Node = "n2" }, yes, false, false},
		{"window for another node", func(w *world) { w.vols.local["web-disk0"].rec.MigrationTarget = "n3" }, yes, false, false},
		{"no window", func(w *world) { w.vols.local["web-disk0"].rec.MigrationTarget = "" }, yes, false, false},
		{"fresh metadata disagrees", func(*world) {}, func(string) bool { return false }, false, false},
		{"refused", func(w *world) { w.vols.takeover["web-disk0"] = errOutdated }, yes, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := setup()
			tc.change(w)
			m := w.manager()
			if got := m.takeOverPaused(t.Context(), w.ms, "web", tc.recorded); got != tc.want {
				t.Errorf("takeOverPaused = %v, want %v", got, tc.want)
			}
			if took := slices.Contains(w.j.list(), "volume takeover web-disk0"); took != tc.took {
				t.Errorf("takeover asked: %v, want %v (%q)", took, tc.took, w.j.list())
			}
		})
	}
}
