package vmm

import (
	"slices"
	"testing"

	"google.golang.org/grpc/codes"
)

// TestPlanRestart: a dead node's VM restarts on a node that can run it,
// on fresh state; only the volumes whose primary is not there yet are
// promoted; a VM that moved meanwhile, or that no node can run, is refused.
func TestPlanRestart(t *testing.T) {
	setup := func() *world {
		w := newWorld()
		delete(w.compute, "n2") // dead
		w.startedVM("db", "n2", []string{"n2", "n3"}, testVolume{"db-a", "n3"}, testVolume{"db-b", "n2"})
		return w
	}

	w := setup()
	p, err := w.manager().PlanRestart(t.Context(), "db", "n2")
	if err != nil {
		t.Fatal(err)
	}
	if p.Node != "n3" || p.VM != w.ms.VMs["db"] || p.State != w.ms {
		t.Errorf("plan: node %s, VM %v, state %p; want n3, the record, the catalog", p.Node, p.VM, p.State)
	}
	// db-a's primary is on n3 already (promoted before the last try).
	if want := []string{"db-b"}; !slices.Equal(p.Promote, want) {
		t.Errorf("promote %v, want %v", p.Promote, want)
	}
	if got := w.j.list(); len(got) != 0 {
		t.Errorf("planning changed something: %q", got)
	}
	// The dead node is not asked anything: a node powered off makes every
	// call to it wait out the peer pool's reconnect (2 s of failover).
	w.mu.Lock()
	if asked := w.asked["compute asked"]; slices.Contains(asked, "n2") || len(asked) == 0 {
		t.Errorf("compute asked of %v; want the live nodes only", asked)
	}
	for _, vol := range []string{"db-a", "db-b"} {
		if skip := w.asked["show "+vol+" skipping"]; !slices.Equal(skip, []string{"n2"}) {
			t.Errorf("volume %s shown skipping %v, want [n2]", vol, skip)
		}
	}
	w.mu.Unlock()

	for _, tc := range []struct {
		name  string
		setup func(w *world)
		code  codes.Code
		msg   string
	}{
		{"moved meanwhile", func(w *world) { w.ms.VMs["db"].Node = "n1" }, codes.Unknown, "VM db moved meanwhile"},
		{"deleted meanwhile", func(w *world) { delete(w.ms.VMs, "db") }, codes.Unknown, "VM db moved meanwhile"},
		{"no node", func(w *world) { w.ms.Nodes["n3"].Maintenance = true }, codes.FailedPrecondition, "no node can run db safely"},
		{"no quorum", func(w *world) { w.quorate = false }, codes.FailedPrecondition, "no quorum"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := setup()
			tc.setup(w)
			_, err := w.manager().PlanRestart(t.Context(), "db", "n2")
			if !isStatus(err, tc.code, tc.msg) {
				t.Errorf("got %v, want %v containing %q", err, tc.code, tc.msg)
			}
		})
	}
}
