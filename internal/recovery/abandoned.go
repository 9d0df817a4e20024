package recovery

import (
	"context"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc/status"

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
//
// A VM left in state recovery had its node fenced, and its restart
// elsewhere may have begun: it may run on the target already, unrecorded.
// Once its node answers (it is back, so this leader will never recover it)
// the leader finishes that recovery (resumeAbandoned), in the background.
func (m *Manager) settleAbandoned(ctx context.Context, ms *consensus.MetaState) {
	meta := m.meta()
	if meta == nil {
		return
	}
	for _, v := range ms.VMs {
		if (v.HAState != consensus.HAFence && v.HAState != consensus.HARecovery) || v.Desired != consensus.VMStarted {
			continue
		}
		m.mu.Lock()
		// A VM a running recovery handles is its own, wherever recorded.
		busy := m.recovering[v.Node] || m.resuming[v.Name] || m.handling[v.Name] != ""
		_, answered := m.aliveAt[v.Node]
		state := ha.Dead
		if m.det != nil {
			state, _, _ = m.det.State(v.Node)
		}
		leaderCtx, term := m.leaderCtx, m.leaderTerm
		if !busy && answered && state == ha.Alive && v.HAState == consensus.HARecovery {
			m.resuming[v.Name] = true
		}
		m.mu.Unlock()
		if busy || !answered || state != ha.Alive {
			continue
		}
		if v.HAState == consensus.HARecovery {
			if leaderCtx == nil {
				leaderCtx = ctx
			}
			go func() {
				m.resumeAbandoned(leaderCtx, meta, ms, v, term)
				m.mu.Lock()
				delete(m.resuming, v.Name)
				m.mu.Unlock()
			}()
			continue
		}
		reason := fmt.Sprintf("the recovery of %s that an earlier metadata leader began stopped with its leadership before any restart; %s answers this leader", v.Node, v.Node)
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := meta.SetVMHA(sctx, consensus.VMHACmd{Name: v.Name, State: consensus.HAStarted, Reason: reason, IfState: consensus.HAFence, IfNode: v.Node})
		cancel()
		if err != nil {
			m.log.Warn("cannot set an abandoned recovery's VM back to started", "vm", v.Name, "err", err)
			continue
		}
		m.log.Warn("VM left in HA state fence by an earlier leader set back to started", "vm", v.Name, "node", v.Node)
		m.event(ctx, consensus.Event{Kind: "recovery-abandoned", Node: v.Node, VM: v.Name, Detail: reason})
	}
}

// maxResumeTries bounds the attempts to finish an abandoned recovery
// before the VM goes to HA state error, as a recovery's own restarts do.
const maxResumeTries = 3

// resumeAbandoned finishes the recovery of v that an earlier leader began
// and abandoned after fencing v's node (v is in state recovery; the node
// answers again). Where the VM's domain runs decides: on one node, it is
// recorded there; nowhere, it is restarted as a recovery would (placement,
// promotion, start, record); on several, an operator must choose (state
// error). A member that does not answer leaves the decision to a later
// round.
func (m *Manager) resumeAbandoned(ctx context.Context, meta Meta, ms *consensus.MetaState, v *consensus.VMRecord, term uint64) {
	if !m.stillLeading(term) {
		return
	}
	running, unknown, err := m.vms.RunningOn(ctx, ms, v.Name)
	if err != nil || len(unknown) > 0 {
		m.log.Info("abandoned recovery: cannot tell yet where the VM runs", "vm", v.Name, "unknown", unknown, "err", err)
		return
	}
	why := fmt.Sprintf("the recovery that an earlier metadata leader began after fencing %s stopped with its leadership", v.Node)
	setHA := func(state, reason string) {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		// Conditional: only the recovery this finishes may be overwritten.
		if err := meta.SetVMHA(sctx, consensus.VMHACmd{Name: v.Name, State: state, Reason: reason, IfState: consensus.HARecovery}); err != nil {
			m.log.Warn("cannot record HA state", "vm", v.Name, "state", state, "err", err)
		}
	}
	var target string
	switch len(running) {
	case 0:
		target, _, err = m.restart(ctx, meta, v, v.Node)
	case 1:
		target = running[0]
		if target != v.Node {
			err = meta.UpdateVM(ctx, consensus.VMUpdate{Name: v.Name, Node: target, IfNode: v.Node, Reason: "HA recovery finished by a later leader"})
		}
	default:
		msg := fmt.Sprintf("%s, and the VM runs on %s: destroy it on all but one (virsh destroy), then run 'tandem vm start %s --node' with that one", why, strings.Join(running, " and "), v.Name)
		setHA(consensus.HAError, msg)
		m.event(ctx, consensus.Event{Kind: "vm-recovery-failed", Node: v.Node, VM: v.Name, Detail: msg})
		return
	}
	if err != nil {
		m.mu.Lock()
		m.resumeTries[v.Name]++
		tries := m.resumeTries[v.Name]
		m.mu.Unlock()
		m.log.Error("abandoned recovery not finished", "vm", v.Name, "attempt", tries, "err", err)
		if tries >= maxResumeTries {
			msg := fmt.Sprintf("%s; finishing it failed %d times: %s", why, tries, status.Convert(err).Message())
			setHA(consensus.HAError, msg)
			m.event(ctx, consensus.Event{Kind: "vm-recovery-failed", Node: v.Node, VM: v.Name, Detail: msg})
		}
		return
	}
	m.mu.Lock()
	delete(m.resumeTries, v.Name)
	m.mu.Unlock()
	setHA(consensus.HAStarted, fmt.Sprintf("%s; finished: runs on %s", why, target))
	m.event(ctx, consensus.Event{Kind: "vm-recovered", Node: target, VM: v.Name, Detail: fmt.Sprintf("%s; finished by this leader: runs on %s (was on %s)", why, target, v.Node)})
	m.log.Warn("abandoned recovery finished", "vm", v.Name, "on", target)
}
