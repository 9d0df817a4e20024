package daemon

import (
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/placement"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// Maintenance commits the mode first (it blocks placements at once and
// survives restarts, being in the metadata shard), then evacuates by live
// migration; disable applies the failback policy.
func (s *nodeService) Maintenance(req *tandemv1.NodeMaintenanceRequest, stream tandemv1.Node_MaintenanceServer) error {
	ctx := stream.Context()
	vs := &vmService{d: s.d}
	switch req.Failback {
	case "", "stay", "balanced":
	default:
		return status.Errorf(codes.InvalidArgument, "failback %q: use stay or balanced", req.Failback)
	}
	ms, meta, err := vs.fresh(ctx)
	if err != nil {
		return err
	}
	n, ok := ms.Nodes[req.Name]
	if !ok || n.State == consensus.NodeRemoved {
		return status.Errorf(codes.NotFound, "no node named %q", req.Name)
	}
	rec, err := meta.SetMaintenance(ctx, req.Name, req.Enable)
	if err != nil {
		return metaError(err)
	}
	say := func(vm, format string, args ...any) error {
		return stream.Send(&tandemv1.NodeMaintenanceProgress{Vm: vm, Message: fmt.Sprintf(format, args...)})
	}
	if err := say("", "node %s maintenance %v (committed)", req.Name, req.Enable); err != nil {
		return err
	}
	var failed []string
	move := func(v *consensus.VMRecord, to string) bool {
		ms, err := vs.volumes().Catalog(ctx, true)
		if err != nil {
			failed = append(failed, v.Name)
			_ = say(v.Name, "VM %s: %s", v.Name, grpcMessage(err))
			return false
		}
		err = vs.relayMigration(ctx, ms, v, to, 0, 0, func(p *tandemv1.MigrateProgress) error {
			if p.Phase == "migrating" {
				return nil
			}
			return stream.Send(&tandemv1.NodeMaintenanceProgress{Vm: v.Name, Message: fmt.Sprintf("VM %s %s -> %s: %s %s", v.Name, p.From, p.To, p.Phase, p.Message), Migration: p})
		})
		if err != nil {
			failed = append(failed, v.Name)
			_ = say(v.Name, "VM %s stays on %s: %s", v.Name, v.Node, grpcMessage(err))
			return false
		}
		return true
	}
	mark := func(v *consensus.VMRecord, u consensus.VMUpdate) {
		u.Name = v.Name
		if _, err := meta.UpdateVM(ctx, u); err != nil {
			s.d.log.Warn("cannot record the evacuation mark", "vm", v.Name, "err", err)
		}
	}
	if req.Enable {
		ms, err = vs.volumes().Catalog(ctx, true)
		if err != nil {
			return err
		}
		cv := vs.view(ctx, ms)
		for _, m := range placement.Evacuate(&cv.pc, req.Name, req.Force) {
			v := ms.VMs[m.VM]
			if m.To == "" {
				failed = append(failed, v.Name)
				_ = say(v.Name, "VM %s cannot leave %s: %s", v.Name, req.Name, m.Why)
				continue
			}
			if move(v, m.To) {
				mark(v, consensus.VMUpdate{EvacuatedFrom: req.Name})
			}
		}
	} else {
		ms, err = vs.volumes().Catalog(ctx, true)
		if err != nil {
			return err
		}
		cv := vs.view(ctx, ms)
		// "balanced" brings back what the evacuation moved; "stay" only
		// forgets where the VMs came from.
		for _, r := range placement.Failback(&cv.pc, req.Name, req.Failback == "balanced") {
			v := ms.VMs[r.VM]
			if r.Stays != "" {
				_ = say(v.Name, "VM %s stays on %s: %s cannot take it back (%s)", v.Name, v.Node, req.Name, r.Stays)
			} else if r.Back && !move(v, req.Name) {
				continue
			}
			mark(v, consensus.VMUpdate{ClearEvacuated: true})
		}
	}
	info := &tandemv1.NodeInfo{Name: rec.Name, State: rec.State, Maintenance: rec.Maintenance, BackendAddr: rec.BackendAddr}
	msg := "done"
	if len(failed) > 0 {
		msg = fmt.Sprintf("done; VMs not moved: %v", failed)
	}
	return stream.Send(&tandemv1.NodeMaintenanceProgress{Message: msg, Node: info})
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}
