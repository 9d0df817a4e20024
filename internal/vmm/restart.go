package vmm

import (
	"context"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/placement"
)

// RestartPlan is where a VM of a dead node restarts.
type RestartPlan struct {
	// VM is the VM's committed record.
	VM *consensus.VMRecord
	// Node runs the VM next.
	Node string
	// Promote lists the VM's volumes whose primary is not on Node yet.
	Promote []string
	// State is the linearizable metadata the plan was made from; it
	// locates Node.
	State *consensus.MetaState
}

// PlanRestart picks, on fresh state, the node to restart VM name on after
// node dead died, and the volumes to promote there. It fails when the VM
// moved meanwhile, or (FailedPrecondition) when no node can run it.
func (m *Manager) PlanRestart(ctx context.Context, name, dead string) (RestartPlan, error) {
	ms, err := m.vols.Catalog(ctx, true)
	if err != nil {
		return RestartPlan{}, err
	}
	cur := ms.VMs[name]
	if cur == nil || cur.Node != dead {
		return RestartPlan{}, fmt.Errorf("VM %s moved meanwhile", name)
	}
	cv := m.View(ctx, ms, dead)
	// One VM at a time on fresh state: the earlier restarts are in ms, as
	// placement.Recover plans them.
	p := placement.Place(&cv.Placement, PlacementVM(cur), dead)
	if p.Node == "" {
		return RestartPlan{}, status.Errorf(codes.FailedPrecondition, "no node can run %s safely: %s", name, p.Why())
	}
	out := RestartPlan{VM: cur, Node: p.Node, State: ms}
	for _, vol := range cur.Spec.Volumes {
		if info := cv.Volumes[vol]; info != nil && info.Primary == p.Node {
			continue
		}
		out.Promote = append(out.Promote, vol)
	}
	return out, nil
}
