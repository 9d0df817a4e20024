package vmm

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/tandemhci/tandem/consensus"
)

// errOutdated is the shard's refusal of a handover to a target that
// turned Outdated during the migration.
var errOutdated = errors.New("replica is not UpToDate: migration target n3 is Outdated")

// TestSwitchoverRecordsTheTarget: the fault schedule of seed 2073 killed
// the migration target's tandemd while libvirt moved the domain. The
// handover was refused (the target's replica was Outdated), the VM stayed
// recorded on the source where no domain was left, and nothing ever ran it
// again. The record now follows the domain at once, and the source retries
// the handover until it goes through.
func TestSwitchoverRecordsTheTarget(t *testing.T) {
	w := newWorld()
	w.startedVM("web", "n1", []string{"n1", "n3"}, testVolume{"web-disk0", "n1"})
	w.vols.handover = func(n int) error {
		if n <= 3 {
			return errOutdated
		}
		return nil
	}
	m := w.manager()
	m.retryFirst, m.retryMax = time.Millisecond, 5*time.Millisecond
	_, err := m.switchover(t.Context(), VMInfoOf(w.ms.VMs["web"]), "n3")
	if !isStatus(err, codes.Unavailable, "VM web runs on n3 but the handover of its volumes failed: volume web-disk0: "+errOutdated.Error()+"; n1 retries it") {
		t.Fatalf("switchover: %v", err)
	}
	waitLine(t, w, "event vm-handover-done web")
	waitLine(t, w, "event vm-handover-pending web")
	want := []string{
		"volume handover web-disk0 n3", "meta update-vm web desired= node=n3",
		"volume handover web-disk0 n3", "volume handover web-disk0 n3", "volume handover web-disk0 n3",
	}
	if got := actions(w); !slices.Equal(got, want) {
		t.Fatalf("journal:\n got %q\nwant %q", got, want)
	}
	if n := w.ms.VMs["web"].Node; n != "n3" {
		t.Fatalf("the VM is recorded on %s, want n3", n)
	}
}

// TestSwitchoverStopsWhenRecordedElsewhere: while the handover is
// retried, HA recovers the VM on another node (the target was lost): the
// retries stop, and the windows still open for the lost target close.
func TestSwitchoverStopsWhenRecordedElsewhere(t *testing.T) {
	w := newWorld()
	w.startedVM("web", "n1", []string{"n1", "n3"}, testVolume{"web-disk0", "n1"})
	w.vols.local["web-disk0"] = &fakeLocal{serving: true, rec: &consensus.VolumeRecord{Name: "web-disk0", Primary: "n1", MigrationTarget: "n3"}}
	w.vols.handover = func(n int) error {
		if n == 2 {
			w.ms.VMs["web"].Node = "n2" // HA restarted it there (runs in the retrier)
		}
		return errOutdated
	}
	m := w.manager()
	m.retryFirst, m.retryMax = time.Millisecond, 5*time.Millisecond
	if _, err := m.switchover(t.Context(), VMInfoOf(w.ms.VMs["web"]), "n3"); err == nil {
		t.Fatal("switchover with the handover refused succeeded")
	}
	waitLine(t, w, "volume end-dual web-disk0")
	time.Sleep(20 * time.Millisecond) // a retrier that did not stop would hand over again
	want := []string{
		"volume handover web-disk0 n3", "meta update-vm web desired= node=n3",
		"volume handover web-disk0 n3", "volume end-dual web-disk0",
	}
	if got := actions(w); !slices.Equal(got, want) {
		t.Fatalf("journal:\n got %q\nwant %q", got, want)
	}
}

// TestSwitchoverRetriesTheRecord: without quorum the record cannot move
// either; it is retried with the handover, and a VM recorded on the
// target by then is not moved twice.
func TestSwitchoverRetriesTheRecord(t *testing.T) {
	w := newWorld()
	w.startedVM("web", "n1", []string{"n1", "n3"}, testVolume{"web-disk0", "n1"})
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
