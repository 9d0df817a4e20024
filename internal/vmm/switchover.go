package vmm

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/consensus"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// A failed switchover's record is retried at an interval that doubles
// from the first to the last; the source follows it for switchoverWatch.
const (
	handoverRetryFirst = time.Second
	handoverRetryMax   = 10 * time.Second
	switchoverWatch    = 10 * time.Minute
)

// switchover completes, on the source, a migration whose domain left this
// node: it hands the VM's volumes over to the target and records the VM
// there.
//
// The record follows the domain even when the handover fails. It once
// stayed on this node, where no domain was left, when the target's replica
// turned Outdated during the migration (its tandemd was killed): a stopped
// VM is restarted only where its domain is still defined (restartCrashed),
// and HA recovers only the VMs of a dead node, so nothing ever ran the VM
// again (fault schedule seed 2073). Recorded on the target, the VM is
// recovered by HA if the target is lost; while the target lives, the
// target takes the volumes over itself once its replica is UpToDate again:
// its QEMU's first write asks for it, and its run loop asks for a VM that
// QEMU paused on the refusal (takeOverPaused). The source does not retry
// the handover: it cannot know that the VM still runs on the target, and
// one retried after HA had restarted the VM here took its disk from it.
func (m *Manager) switchover(ctx context.Context, vm *tandemv1.VMInfo, to string) (*consensus.VMRecord, error) {
	ctx = context.WithoutCancel(ctx) // the domain has moved: finish, whoever asked
	m.dropSeed(vm.Name)              // the target has its own
	herr := m.handOver(ctx, vm, to)
	rec, rerr := m.recordOn(ctx, vm.Name, to, herr)
	if herr == nil && rerr == nil {
		return rec, nil
	}
	self := m.self()
	m.log.Error("migration moved the VM but did not complete", "vm", vm.Name, "to", to, "handover", herr, "record", rerr)
	m.event(ctx, consensus.Event{Kind: "vm-handover-pending", Node: self, VM: vm.Name,
		Detail: fmt.Sprintf("runs on %s; it takes its volumes over once its replicas are UpToDate", to)})
	go m.followSwitchover(vm, to, rerr != nil)
	if herr != nil {
		return nil, status.Errorf(codes.Unavailable, "VM %s runs on %s but the handover of its volumes failed: %v; %s takes them over once its replicas are UpToDate again, or HA recovers the VM if %s is lost (tandem vm show %s)",
			vm.Name, to, herr, to, to, vm.Name)
	}
	return nil, status.Errorf(codes.Unavailable, "VM %s runs on %s but recording it there failed: %v; %s retries it in the background (tandem vm show %s)",
		vm.Name, to, rerr, self, vm.Name)
}

// handOver makes to the primary (replicated volumes) or the owner (RBD
// volumes) of each of the VM's volumes. Both are idempotent.
func (m *Manager) handOver(ctx context.Context, vm *tandemv1.VMInfo, to string) error {
	ms, err := m.metaLocal()
	if err != nil {
		return err
	}
	for _, name := range vm.Volumes {
		if isRBD(ms, name) {
			r, err := m.rbd()
			if err == nil {
				err = r.MoveRBDOwner(ctx, name, to, "live migration of VM "+vm.Name)
			}
			if err != nil {
				return fmt.Errorf("volume %s: %w", name, err)
			}
			continue
		}
		if err := m.vols.Handover(ctx, name, to); err != nil {
			return fmt.Errorf("volume %s: %w", name, err)
		}
	}
	return nil
}

// recordOn records the VM on to, if it is on this node still. herr, the
// handover's error, goes into the reason.
func (m *Manager) recordOn(ctx context.Context, name, to string, herr error) (*consensus.VMRecord, error) {
	meta, err := m.meta()
	if err != nil {
		return nil, err
	}
	reason := "live migration"
	if herr != nil {
		reason = "live migration; the handover of its volumes is pending"
	}
	return meta.UpdateVM(ctx, consensus.VMUpdate{Name: name, Node: to, IfNode: m.self(), Reason: reason})
}

// followSwitchover finishes a switchover that failed, from the source: it
// records the VM on to (if record), retrying with a growing interval, then
// waits until to is the primary of the VM's replicated volumes (the target
// took them over), or the VM is deleted or recorded on a third node (HA
// restarted it after losing to), or switchoverWatch passes. In the third
// case the migration windows still open for to are closed, as this node's
// volumes' primary: to's QEMU is gone, and nothing may take them over.
func (m *Manager) followSwitchover(vm *tandemv1.VMInfo, to string, record bool) {
	ctx := m.bg
	self := m.self()
	wait := m.retryFirst
	deadline := time.Now().Add(switchoverWatch)
	for attempt := 1; time.Now().Before(deadline); attempt++ {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, m.retryMax)
		ms, err := m.metaLocal()
		if err != nil {
			continue
		}
		v := ms.VMs[vm.Name]
		switch {
		case v == nil:
			m.log.Info("VM deleted; no longer following its migration", "vm", vm.Name)
			return
		case !record && v.Node != to, record && v.Node != self && v.Node != to:
			m.log.Warn("VM recorded on another node since its migration; closing the migration windows", "vm", vm.Name, "on", v.Node, "to", to)
			m.closeWindowsFor(ctx, vm, to)
			return
		}
		if record {
			if _, err := m.recordOn(ctx, vm.Name, to, errors.New("pending")); err != nil {
				m.log.Info("recording the migrated VM on its target failed; retrying", "vm", vm.Name, "to", to, "attempt", attempt, "err", err)
				continue
			}
			record = false
		}
		if m.handedOver(ms, vm, to) {
			m.log.Info("migration completed", "vm", vm.Name, "to", to)
			m.event(ctx, consensus.Event{Kind: "vm-handover-done", Node: self, VM: vm.Name,
				Detail: fmt.Sprintf("%s is the primary of its volumes", to)})
			return
		}
	}
	m.log.Warn("the migration target has not taken the volumes over; no longer following", "vm", vm.Name, "to", to, "after", switchoverWatch)
}

// handedOver reports whether to is the primary (replicated) or the owner
// (RBD) of every volume of the VM, as this node last saw them.
func (m *Manager) handedOver(ms *consensus.MetaState, vm *tandemv1.VMInfo, to string) bool {
	for _, name := range vm.Volumes {
		if isRBD(ms, name) {
			if ms.Volumes[name].Owner != to {
				return false
			}
			continue
		}
		if r := m.vols.Record(name); r == nil || r.Primary != to {
			return false
		}
	}
	return true
}

// closeWindowsFor closes the migration windows of the VM's replicated
// volumes that are still open for to, where this node is their primary.
func (m *Manager) closeWindowsFor(ctx context.Context, vm *tandemv1.VMInfo, to string) {
	for _, name := range vm.Volumes {
		if r := m.vols.Record(name); r == nil || r.MigrationTarget != to {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := m.vols.EndDual(cctx, name, "the VM migrated to "+to+" runs elsewhere")
		cancel()
		if err != nil {
			m.log.Error("cannot close the migration window", "volume", name, "to", to, "err", err)
		}
	}
}
