package recovery

import (
	"context"
	"fmt"
	"time"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/ha"
)

// settleAbandoned puts back to started the VMs that an earlier metadata
// leader left in HA state fence: it began their node's recovery and lost
// the leadership before any restart (recover stops at once then, and only
// a recovery cancelled because the node answers sets the state back). A
// VM's restart elsewhere begins only after its state went to recovery, so
// a VM still in fence runs nowhere else; once its node answers this
// leader, the node runs it still, or its crash restart starts it again,
// which it does only for a VM in state started. Without this such VMs
// stayed down for good (the fault-schedule runner's finding 3, seed 3004).
// A VM in state recovery is left alone: its restart elsewhere may have
// begun, and only a recovery of its own may finish it.
func (m *Manager) settleAbandoned(ctx context.Context, ms *consensus.MetaState) {
	meta := m.meta()
	if meta == nil {
		return
	}
	for _, v := range ms.VMs {
		if v.HAState != consensus.HAFence || v.Desired != consensus.VMStarted {
			continue
		}
		m.mu.Lock()
		busy := m.recovering[v.Node]
		_, answered := m.aliveAt[v.Node]
		state := ha.Dead
		if m.det != nil {
			state, _, _ = m.det.State(v.Node)
		}
		m.mu.Unlock()
		if busy || !answered || state != ha.Alive {
			continue
		}
		reason := fmt.Sprintf("the recovery of %s that an earlier metadata leader began stopped with its leadership before any restart; %s answers this leader", v.Node, v.Node)
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := meta.SetVMHA(sctx, consensus.VMHACmd{Name: v.Name, State: consensus.HAStarted, Reason: reason})
		cancel()
		if err != nil {
			m.log.Warn("cannot set an abandoned recovery's VM back to started", "vm", v.Name, "err", err)
			continue
		}
		m.log.Warn("VM left in HA state fence by an earlier leader set back to started", "vm", v.Name, "node", v.Node)
		m.event(ctx, consensus.Event{Kind: "recovery-abandoned", Node: v.Node, VM: v.Name, Detail: reason})
	}
}
