package vmm

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/compute"
	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/volume"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
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

// fakeRBDVolumes adds the RBD part to the volume fake: owner moves are
// journaled (and refused with moveErr).
type fakeRBDVolumes struct {
	*fakeVolumes
	w       *world
	moveErr error
}

func (f *fakeRBDVolumes) AttachRBD(context.Context, string) (volume.RBDAccess, error) {
	return volume.RBDAccess{}, errors.New("not in this test")
}

func (f *fakeRBDVolumes) StorageAccess(*consensus.MetaState, string) (volume.RBDAccess, error) {
	return volume.RBDAccess{}, errors.New("not in this test")
}

func (f *fakeRBDVolumes) MoveRBDOwner(_ context.Context, name, to, _ string) error {
	f.w.j.Add("rbd owner %s %s", name, to)
	return f.moveErr
}

// TestClaimMigratedRBD: the target of a migration whose RBD owner move
// failed on the source records itself as the owner of the disks of a VM
// that runs here, recorded here on fresh metadata with HA started; in no
// other case.
func TestClaimMigratedRBD(t *testing.T) {
	setup := func() (*world, *compute.State) {
		w := newWorld()
		w.startedVM("web", "n1", []string{"n1", "n2"}, testVolume{"web-disk0", "n2"})
		w.ms.Volumes["web-disk0"] = &consensus.VolumeEntry{Name: "web-disk0", Backend: consensus.BackendRBD, Owner: "n2", State: consensus.VolumeReady}
		st := compute.StateRunning
		return w, &st
	}
	yes := func(string) bool { return true }
	for _, tc := range []struct {
		name     string
		change   func(w *world, st *compute.State)
		recorded func(string) bool
		moveErr  error
		want     []string
	}{
		{"runs here, owned by the source", func(*world, *compute.State) {}, yes, nil, []string{"rbd owner web-disk0 n1", "event vm-takeover web"}},
		{"paused here", func(_ *world, st *compute.State) { *st = compute.StatePaused }, yes, nil, []string{"rbd owner web-disk0 n1", "event vm-takeover web"}},
		{"not running here", func(_ *world, st *compute.State) { *st = compute.StateShutOff }, yes, nil, nil},
		{"recorded elsewhere", func(w *world, _ *compute.State) { w.ms.VMs["web"].Node = "n2" }, yes, nil, nil},
		{"HA fencing this node", func(w *world, _ *compute.State) { w.ms.VMs["web"].HAState = consensus.HAFence }, yes, nil, nil},
		{"fresh metadata disagrees", func(*world, *compute.State) {}, func(string) bool { return false }, nil, nil},
		{"already the owner", func(w *world, _ *compute.State) { w.ms.Volumes["web-disk0"].Owner = "n1" }, yes, nil, nil},
		{"move refused", func(*world, *compute.State) {}, yes, errors.New("the owner n2 does not answer"), []string{"rbd owner web-disk0 n1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, st := setup()
			tc.change(w, st)
			m := w.manager()
			m.vols = &fakeRBDVolumes{fakeVolumes: w.vols, w: w, moveErr: tc.moveErr}
			drv := &fakeCrashDriver{state: map[string]compute.State{"web": *st}}
			m.claimMigratedRBD(t.Context(), drv, w.ms, tc.recorded)
			// Events are sent in the background.
			deadline := time.Now().Add(5 * time.Second)
			for !slices.Equal(w.j.list(), tc.want) && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			time.Sleep(20 * time.Millisecond)
			if got := w.j.list(); !slices.Equal(got, tc.want) {
				t.Errorf("journal %q, want %q", got, tc.want)
			}
		})
	}
}

// stateDriver is a libvirt whose State answers err, or the state given.
type stateDriver struct {
	st  compute.State
	err error
}

func (d stateDriver) State(context.Context, string) (compute.State, error) { return d.st, d.err }

// unreachablePeer is a target whose tandemd does not answer.
type unreachablePeer struct{ fakePeer }

func (unreachablePeer) VMState(context.Context, *tandemv1.PeerVMRequest, ...grpc.CallOption) (*tandemv1.VMInfo, error) {
	return nil, status.Error(codes.Unavailable, "connection refused")
}

// TestFailedMigrationStaysWhereTheDomainIs is the regression test of the
// fault-schedule runner's seed 7110: this node's self-fence killed the VM
// in the middle of a migration that never reached the target; the failed
// migration took the stopped domain for a moved one and recorded the VM on
// the target, where no domain existed, and nothing ran it again. A domain
// still defined here but stopped, which the target does not run, stays
// this node's, to be restarted here; one that is gone from here (moved,
// undefined by the migration), or that the target runs, has moved.
func TestFailedMigrationStaysWhereTheDomainIs(t *testing.T) {
	notFound := fmt.Errorf("compute: state domain %q: %w", "web", compute.ErrNotFound)
	for _, tc := range []struct {
		name      string
		here      stateDriver
		there     string // the target's libvirt state; "" not defined
		reachable bool
		stays     bool
	}{
		{"running here", stateDriver{st: compute.StateRunning}, "", true, true},
		{"paused here", stateDriver{st: compute.StatePaused}, "", true, true},
		{"killed here, not on the target (seed 7110)", stateDriver{st: compute.StateShutOff}, "", true, true},
		{"crashed here, not on the target", stateDriver{st: compute.StateCrashed}, "", true, true},
		{"stopped here, running on the target", stateDriver{st: compute.StateShutOff}, "running", true, false},
		{"stopped here, paused on the target", stateDriver{st: compute.StateShutOff}, "paused", true, false},
		{"stopped here, target unreachable", stateDriver{st: compute.StateShutOff}, "", false, false},
		{"gone from here (moved)", stateDriver{err: notFound}, "", true, false},
		{"libvirtd here killed, not on the target (seed 7118)", stateDriver{err: errors.New("connection reset")}, "", true, true},
		{"libvirtd here killed, running on the target", stateDriver{err: errors.New("connection reset")}, "running", true, false},
		{"libvirtd here killed, target unreachable", stateDriver{err: errors.New("connection reset")}, "", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld()
			w.startedVM("web", "n1", []string{"n1", "n2"}, testVolume{"web-disk0", "n1"})
			if tc.there != "" {
				w.running["web"] = tc.there
			}
			m := w.manager()
			var peer tandemv1.PeerClient = fakePeer{w: w, node: "n2"}
			if !tc.reachable {
				peer = unreachablePeer{fakePeer{w: w, node: "n2"}}
			}
			why, stays := m.stayedHere(t.Context(), tc.here, peer, &tandemv1.VMInfo{Name: "web"}, "n2")
			if stays != tc.stays {
				t.Errorf("stays %v (%q), want %v", stays, why, tc.stays)
			}
			if runsHere := tc.here.err == nil && (tc.here.st == compute.StateRunning || tc.here.st == compute.StatePaused); (why == "") != runsHere {
				t.Errorf("reason %q: only a guest that runs here needs none", why)
			}
		})
	}
}
