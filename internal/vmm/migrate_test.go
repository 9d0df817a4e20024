package vmm

import (
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/tandemhci/tandem/consensus"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// TestMigrateRefusals: a migration is refused, before any node is asked
// to migrate, for a VM that is not running or a target that cannot host it.
func TestMigrateRefusals(t *testing.T) {
	setup := func() *world {
		w := newWorld()
		w.startedVM("web", "n1", []string{"n1", "n2"}, testVolume{"web-disk0", "n1"})
		w.running["web"] = "running"
		return w
	}
	for _, tc := range []struct {
		name  string
		to    string
		setup func(w *world)
		code  codes.Code
		msg   string
	}{
		{"no such VM", "n2", func(w *world) { delete(w.ms.VMs, "web") }, codes.NotFound, `no VM named "web"`},
		{"stopped", "n2", func(w *world) { w.ms.VMs["web"].Desired = consensus.VMStopped }, codes.FailedPrecondition, "only a running VM migrates"},
		{"not running", "n2", func(w *world) { w.running["web"] = "paused" }, codes.FailedPrecondition, "VM web is paused on n1, not running"},
		{"same node", "n1", func(*world) {}, codes.InvalidArgument, "already runs on n1"},
		{"target without a replica", "n3", func(*world) {}, codes.FailedPrecondition, "cannot migrate VM web to n3"},
		{"no quorum", "n2", func(w *world) { w.quorate = false }, codes.FailedPrecondition, "no quorum"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := setup()
			tc.setup(w)
			err := w.manager().Migrate(t.Context(), &tandemv1.MigrateVMRequest{Name: "web", To: tc.to}, func(*tandemv1.MigrateProgress) error { return nil })
			if !isStatus(err, tc.code, tc.msg) {
				t.Errorf("got %v, want %v containing %q", err, tc.code, tc.msg)
			}
			if got := w.j.list(); len(got) != 0 {
				t.Errorf("a refused migration changed something: %q", got)
			}
		})
	}
	// A good target gets as far as asking the VM's node, which the test
	// world cannot reach: the refusals above were the checks'.
	w := setup()
	err := w.manager().Migrate(t.Context(), &tandemv1.MigrateVMRequest{Name: "web", To: "n2"}, func(*tandemv1.MigrateProgress) error { return nil })
	if !isStatus(err, codes.Unavailable, "no peers in tests") {
		t.Errorf("migration to n2: %v", err)
	}
}

func TestPreparingMessage(t *testing.T) {
	for _, tc := range []struct {
		repl, rbd int
		want      string
	}{
		{1, 0, "allowing n2 to open the volumes"},
		{0, 1, "disks on RBD: n2's QEMU takes the images' locks at its first write"},
		{2, 1, "allowing n2 to open the replicated volumes; its QEMU takes the RBD images' locks at its first write"},
		{0, 0, "no disks to hand over"},
	} {
		if got := preparingMessage("n2", tc.repl, tc.rbd); got != tc.want {
			t.Errorf("%d replicated, %d RBD: got %q, want %q", tc.repl, tc.rbd, got, tc.want)
		}
	}
}

// A second migration of a VM while one runs from this node is refused at
// once: it must not open, nor on failure close, the target's window that
// the first one uses.
func TestSecondMigrationRefused(t *testing.T) {
	w := newWorld()
	w.startedVM("web", "n1", []string{"n1", "n2"}, testVolume{"web-disk0", "n1"})
	w.running["web"] = "running"
	m := w.manager()
	m.migrating["web"] = "n2"
	err := m.VMMigrate(t.Context(), &tandemv1.PeerMigrateRequest{Vm: &tandemv1.VMInfo{Name: "web", Volumes: []string{"web-disk0"}}, To: "n3"}, func(*tandemv1.MigrateProgress) error { return nil })
	if !isStatus(err, codes.FailedPrecondition, "VM web is being migrated from n1 to n2 already") {
		t.Fatalf("second migration: %v", err)
	}
	if got := w.j.list(); len(got) != 0 {
		t.Fatalf("the refused migration changed something: %q", got)
	}
	if to := m.migrating["web"]; to != "n2" {
		t.Fatalf("the first migration's mark was cleared: %q", to)
	}
}
