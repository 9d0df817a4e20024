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

// PlanRecovery plans the restart of every VM recovery restarts after node
// dead died (placement.Recover: in recovery order, each restart counted
// before the next is placed), from one fresh view. Recovery promotes the
// planned volumes of all of them at once, before it starts the first VM:
// a VM's start takes about a second under TCG, a promotion a few
// milliseconds, and with the disks waiting for the VMs before them the
// tenth VM's disk got its primary 8 s after the first (bench/scale, issue
// 17). A VM no node can run is left out; its own PlanRestart says why.
func (m *Manager) PlanRecovery(ctx context.Context, dead string) ([]RestartPlan, error) {
	ms, err := m.vols.Catalog(ctx, true)
	if err != nil {
		return nil, err
	}
	return recoveryPlans(m.View(ctx, ms, dead), dead), nil
}

// recoveryPlans is PlanRecovery on the view cv.
func recoveryPlans(cv *ClusterView, dead string) []RestartPlan {
	ms := cv.Meta
	var out []RestartPlan
	for _, step := range placement.Recover(&cv.Placement, dead) {
		cur := ms.VMs[step.VM]
		if step.Node == "" || cur == nil {
			continue
		}
		p := RestartPlan{VM: cur, Node: step.Node, State: ms}
		for _, vol := range cur.Spec.Volumes {
			if info := cv.Volumes[vol]; info != nil && info.Primary == step.Node {
				continue
			}
			p.Promote = append(p.Promote, vol)
		}
		out = append(out, p)
	}
	return out
}
