package recovery

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/fencing"
	"github.com/tandemhci/tandem/ha"
	"github.com/tandemhci/tandem/internal/placement"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

func (m *Manager) stopLeading() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.leaderStop != nil {
		m.leaderStop()
		m.leaderStop = nil
	}
	m.det, m.leaderCtx = nil, nil
	m.recovering = map[string]bool{}
	m.handling = map[string]string{}
}

// seen records that node answered this leader now, with the metadata index
// applied at that moment (read after the answer: a confirmation committed
// before the answer must not count).
func (m *Manager) seen(node string) {
	idx, err := m.meta().AppliedIndex()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.det == nil {
		return
	}
	m.det.Seen(node, time.Now())
	if err != nil {
		idx = math.MaxUint64 // unknown: no earlier confirmation may count
	}
	if m.aliveAt == nil {
		m.aliveAt = map[string]uint64{}
	}
	m.aliveAt[node] = max(m.aliveAt[node], idx)
}

// forgetConfirmations clears the operator's confirmation that a node is
// off once the node answered after it: it is back, and the confirmation
// must never stand in for fencing the next time it is lost.
func (m *Manager) forgetConfirmations(ctx context.Context, ms *consensus.MetaState, nodes []string) {
	for _, name := range nodes {
		n := ms.Nodes[name]
		if n == nil || n.ConfirmedOffIndex == 0 || m.confirmedOff(n) {
			continue
		}
		if _, err := m.meta().SetNodeFence(ctx, consensus.NodeFenceCmd{Node: name, Clear: true}); err != nil {
			m.log.Warn("cannot clear the confirmation that a node is off; it answers again", "node", name, "err", err)
			continue
		}
		m.log.Info("node answers again: its confirmation that it was off is cleared", "node", name)
	}
}

// confirmedOff reports whether an operator's confirmation that node is off
// was committed after the node last answered this leader.
func (m *Manager) confirmedOff(n *consensus.NodeRecord) bool {
	if n.ConfirmedOffIndex == 0 {
		return false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return n.ConfirmedOffIndex > m.aliveAt[n.Name]
}

// lead is one detector round on the metadata leader.
func (m *Manager) lead(ctx context.Context, t ha.Timing, term uint64) {
	ms, err := m.metaLocal()
	if err != nil {
		return
	}
	var nodes []string
	for name, n := range ms.Nodes {
		if n.State == consensus.NodeMember {
			nodes = append(nodes, name)
		}
	}
	now := time.Now()
	m.mu.Lock()
	if m.det == nil || m.leaderTerm != term {
		if m.leaderStop != nil {
			m.leaderStop()
		}
		m.det = ha.NewDetector(t, now, nodes)
		m.leaderTerm = term
		m.recovering = map[string]bool{}
		m.handling = map[string]string{}
		m.volsDone = map[string]bool{}
		m.aliveAt = map[string]uint64{}
		m.leaderCtx, m.leaderStop = context.WithCancel(ctx)
		m.log.Info("metadata leader: failure detector started", "term", term, "nodes", nodes)
	}
	m.det.SetNodes(now, nodes)
	var unreachable []string
	for _, name := range nodes {
		if s, _, _ := m.det.State(name); s == ha.Suspect || s == ha.Dead {
			unreachable = append(unreachable, name)
		}
	}
	m.mu.Unlock()
	m.wakeShardsOf(unreachable)

	var wg sync.WaitGroup
	for _, name := range nodes {
		if name == m.st.Node.Name {
			// This node answers itself: what waits for a node to answer
			// this leader (an abandoned fence on its own VMs, chaos seed
			// 2003) must not wait for a ping it never sends.
			m.seen(name)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := m.st.Peer(ms.Nodes[name].BackendAddr)
			if err != nil {
				return
			}
			pctx, cancel := context.WithTimeout(ctx, t.HeartbeatInterval)
			defer cancel()
			if _, err := c.Ping(pctx, &tandemv1.PingRequest{From: m.st.Node.Name, LeaderTerm: term, Unreachable: unreachable}); err == nil {
				m.seen(name)
			}
		}()
	}
	wg.Wait()
	m.mu.Lock()
	if m.det == nil {
		m.mu.Unlock()
		return
	}
	trs := m.det.Tick(time.Now())
	leaderCtx := m.leaderCtx
	m.mu.Unlock()
	for _, tr := range trs {
		kind := "node-" + string(tr.To)
		if tr.To == ha.Alive {
			kind = "node-alive"
			m.mu.Lock()
			delete(m.volsDone, tr.Node)
			m.mu.Unlock()
		} else if tr.To == ha.Suspect {
			kind = "node-suspected"
		}
		m.log.Warn("node liveness changed", "node", tr.Node, "from", tr.From, "to", tr.To, "last_seen", tr.LastSeen)
		m.event(ctx, consensus.Event{Kind: kind, Node: tr.Node, Detail: fmt.Sprintf("%s -> %s; last answer %s ago", tr.From, tr.To, time.Since(tr.LastSeen).Round(time.Millisecond))})
	}
	m.forgetConfirmations(ctx, ms, nodes)
	m.settleAbandoned(ctx, ms)

	if !ha.Armed(m.settings(ms.Config)) {
		return
	}
	for _, name := range nodes {
		m.mu.Lock()
		state, _, _ := m.det.State(name)
		busy := m.recovering[name]
		volsDone := m.volsDone[name]
		m.mu.Unlock()
		if state != ha.Dead || busy || !hasStartedVMs(ms, name) && (volsDone || !holdsVolumes(ms, name)) {
			continue
		}
		m.mu.Lock()
		m.recovering[name] = true
		m.mu.Unlock()
		go func() {
			m.recover(leaderCtx, name, term)
			m.mu.Lock()
			delete(m.recovering, name)
			m.mu.Unlock()
		}()
	}
}

func hasStartedVMs(ms *consensus.MetaState, node string) bool {
	for _, v := range ms.VMs {
		if v.Node == node && v.Desired == consensus.VMStarted && v.HAState != consensus.HAError {
			return true
		}
	}
	return false
}

// stillLeading reports whether this node still leads at term.
func (m *Manager) stillLeading(term uint64) bool {
	meta := m.meta()
	if meta == nil {
		return false
	}
	lid, lterm, ok := meta.Leader()
	return ok && lid == meta.Self() && lterm == term
}

func (m *Manager) liveness(node string) (ha.Liveness, time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.det == nil {
		return "", time.Time{}
	}
	s, last, _ := m.det.State(node)
	return s, last
}

// agents builds the fencing agents for node from its committed config.
func (m *Manager) agents(n *consensus.NodeRecord, lastSeen time.Time, t ha.Timing) []fencing.Fencer {
	var out []fencing.Fencer
	if f := n.Fence; f != nil {
		// Passwords are opened here, in memory, for this round only.
		if i := f.IPMI; i != nil {
			if pw, err := m.openPassword(n.Name, fieldIPMIPassword, i.PasswordSealed, i.Password); err != nil {
				out = append(out, unusableAgent{name: "ipmi", err: err})
			} else {
				out = append(out, fencing.NewIPMI(fencing.IPMIConfig{Host: i.Host, Port: i.Port, User: i.User, Password: pw, Timeout: t.FenceTimeout}))
			}
		}
		if r := f.Redfish; r != nil {
			if pw, err := m.openPassword(n.Name, fieldRedfishPassword, r.PasswordSealed, r.Password); err != nil {
				out = append(out, unusableAgent{name: "redfish", err: err})
			} else {
				out = append(out, fencing.NewRedfish(fencing.RedfishConfig{Endpoint: r.Endpoint, User: r.User, Password: pw, SystemID: r.SystemID, InsecureSkipVerify: r.Insecure, Timeout: t.FenceTimeout}))
			}
		}
	}
	if (n.Fence == nil || !n.Fence.NoLease) && !lastSeen.IsZero() {
		// The node renewed at most one heartbeat interval after its last
		// answer (see package ha).
		out = append(out, fencing.NewLease(n.Name, lastSeen.Add(t.HeartbeatInterval), t.SelfFenceLease, nil, fencing.WithSelfFenceGrace(t.SelfFenceGrace)))
	}
	return out
}

// placementVM is what placement.RecoveryOrder needs of a VM record.
func placementVM(v *consensus.VMRecord) placement.VM {
	return placement.VM{Name: v.Name, MemoryMiB: v.Spec.MemoryMiB, Priority: v.Priority, AntiAffinity: v.AntiAffinity,
		Volumes: slices.Clone(v.Spec.Volumes), Node: v.Node, Started: v.Desired == consensus.VMStarted,
		HAError: v.HAState == consensus.HAError, EvacuatedFrom: v.EvacuatedFrom}
}

// recoveryOrder is the VMs recovery restarts when node died, in order.
func recoveryOrder(ms *consensus.MetaState, node string) []*consensus.VMRecord {
	var pc placement.Cluster
	for _, name := range slices.Sorted(maps.Keys(ms.VMs)) {
		pc.VMs = append(pc.VMs, placementVM(ms.VMs[name]))
	}
	var out []*consensus.VMRecord
	for _, v := range placement.RecoveryOrder(&pc, node) {
		out = append(out, ms.VMs[v.Name])
	}
	return out
}

// recoveryRetry is the pause between two attempts to restart one VM.
const recoveryRetry = time.Second

// recover moves every started VM of a dead node: fence it, then promote
// and restart each VM elsewhere. It gives up when leadership moves (the
// next leader starts over from the committed HA states).
func (m *Manager) recover(ctx context.Context, node string, term uint64) {
	log := m.log.With("dead_node", node)
	meta := m.meta()
	if meta == nil {
		return
	}
	// release gives a VM back to settleAbandoned.
	release := func(name string) {
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.handling[name] == node {
			delete(m.handling, name)
		}
	}
	var handled []string
	defer func() {
		for _, name := range handled {
			release(name)
		}
	}()
	vmsOf := func() []*consensus.VMRecord {
		ms, err := m.metaLocal()
		if err != nil {
			return nil
		}
		vms := recoveryOrder(ms, node)
		m.mu.Lock()
		for _, v := range vms {
			if _, ok := m.handling[v.Name]; !ok {
				m.handling[v.Name] = node
				handled = append(handled, v.Name)
			}
		}
		m.mu.Unlock()
		return vms
	}
	// Every HA write is conditional on the VM still being recorded on the
	// dead node: another path may have moved it meanwhile (a migration's
	// handover, an abandoned recovery finished), and its decision stands.
	setHAOn := func(v *consensus.VMRecord, on, state, reason string) {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := meta.SetVMHA(sctx, consensus.VMHACmd{Name: v.Name, State: state, Reason: reason, IfNode: on}); err != nil {
			log.Warn("cannot record HA state", "vm", v.Name, "state", state, "err", err)
		}
	}
	setHA := func(v *consensus.VMRecord, state, reason string) { setHAOn(v, node, state, reason) }
	// movedFrom reports where v is recorded now when that is no longer the
	// dead node (empty while it is, or when the state cannot be read).
	movedFrom := func(v *consensus.VMRecord) string {
		ms, err := m.metaLocal()
		if err != nil {
			return ""
		}
		cur := ms.VMs[v.Name]
		switch {
		case cur == nil:
			return "(deleted)"
		case cur.Node != node:
			return cur.Node
		}
		return ""
	}
	// Volumes without a VM whose primary was the dead node: HA promotes
	// those set to auto once the node is fenced, like a VM's volumes.
	var bare []bareVolume
	m.mu.Lock()
	volsDone := m.volsDone[node]
	m.mu.Unlock()
	if !volsDone {
		if ms, err := m.metaLocal(); err == nil {
			bare = m.splitBare(ctx, node, m.bareVolumes(ctx, ms, node))
		}
	}
	// Marked once handled for this death (not when the recovery is
	// cancelled because the node answered again): a node alive again
	// clears the mark, so its next death is handled too.
	markVolsDone := func() {
		if !volsDone && ctx.Err() == nil && m.stillLeading(term) {
			m.mu.Lock()
			m.volsDone[node] = true
			m.mu.Unlock()
		}
	}
	if len(bare) == 0 && len(vmsOf()) == 0 {
		markVolsDone()
		return
	}
	_, lastSeen := m.liveness(node)
	for _, v := range vmsOf() {
		if v.HAState == "" || v.HAState == consensus.HAStarted {
			setHA(v, consensus.HAFence, fmt.Sprintf("node %s is dead (last answer %s); fencing it", node, lastSeen.UTC().Format(time.RFC3339Nano)))
		}
	}
	// 1. Fence: positive evidence only (fencing package contract).
	m.event(ctx, consensus.Event{Kind: "fence-attempt", Node: node, Detail: fmt.Sprintf("recovery of its VMs (%d) and volumes without a VM (%d) needs it fenced", len(vmsOf()), len(bare))})
	lastReason := ""
	var confirmed fencing.Result
	for {
		if ctx.Err() != nil || !m.stillLeading(term) {
			log.Warn("recovery stopped: no longer the metadata leader")
			return
		}
		if s, _ := m.liveness(node); s == ha.Alive {
			log.Warn("node answers again before it was fenced; recovery cancelled")
			for _, v := range vmsOf() {
				setHA(v, consensus.HAStarted, "node answered again before it was fenced")
			}
			m.event(ctx, consensus.Event{Kind: "recovery-cancelled", Node: node, Detail: "node answered again before it was fenced"})
			return
		}
		m.mu.Lock()
		t := m.timing
		m.mu.Unlock()
		ms, err := m.metaLocal()
		if err != nil {
			sleep(ctx, t.HeartbeatInterval)
			continue
		}
		n := ms.Nodes[node]
		if n == nil {
			return
		}
		if m.confirmedOff(n) {
			confirmed = fencing.Result{Agent: "operator", Confirmed: true, Detail: "an operator confirmed the node is off", At: n.ConfirmedOffAt}
			break
		}
		agents := m.agents(n, lastSeen, t)
		fctx, cancel := context.WithTimeout(ctx, t.FenceTimeout)
		res, ferr := fencing.FenceAny(fctx, agents...)
		cancel()
		if ferr == nil && res.Confirmed {
			confirmed = res
			break
		}
		// VMs all on RBD: a confirmed blocklist may count (rbd.go).
		rres, why := m.rbdFence(ctx, ms, node, vmsOf(), len(bare))
		if rres.Confirmed {
			confirmed = rres
			break
		}
		reason := fmt.Sprintf("fencing %s not confirmed: %v", node, ferr)
		if why != "" {
			reason += "; " + why
		}
		var active *fencing.LeaseActiveError
		leaseWait := errors.As(ferr, &active) && len(agents) == 1
		if reason != lastReason && !leaseWait {
			lastReason = reason
			log.Warn("fencing not confirmed; the VMs wait", "err", ferr)
			m.event(ctx, consensus.Event{Kind: "fence-result", Node: node, Detail: reason})
			for _, v := range vmsOf() {
				setHA(v, consensus.HAFence, reason+"; run 'tandem node fence "+node+" --confirm-off' once it is off")
			}
		}
		sleep(ctx, t.HeartbeatInterval)
	}
	log.Warn("node fenced", "agent", confirmed.Agent, "detail", confirmed.Detail)
	m.event(ctx, consensus.Event{Kind: "fence-result", Node: node, Detail: fmt.Sprintf("confirmed by %s: %s", confirmed.Agent, confirmed.Detail)})

	// 2. The volumes without a VM, in parallel (bounded), beside the VMs.
	var bareDone sync.WaitGroup
	bareDone.Go(func() {
		m.promoteBare(ctx, node, term, bare)
		markVolsDone()
	})
	defer bareDone.Wait()

	// 2. The VMs' disks, all at once, on the nodes the VMs restart on.
	placed := m.promoteVMDisks(ctx, node, term)

	// handBack gives a VM back to its node when the node answers again and
	// nothing of the VM moved: no plan placed it elsewhere, so no disk was
	// promoted and no start was asked. Its node's crash restart starts it
	// again (HA state started); written off as error instead, it stayed
	// down for good, though the node held its only UpToDate disk (seed
	// 7223: the other replicas were Outdated, so no node could run it
	// while the node was away).
	handBack := func(v *consensus.VMRecord, why error) bool {
		if placed[v.Name] {
			return false
		}
		if s, _ := m.liveness(node); s != ha.Alive {
			return false
		}
		reason := fmt.Sprintf("node %s answers again and the VM was restarted nowhere else", node)
		if why != nil {
			reason += fmt.Sprintf(" (%s)", status.Convert(why).Message())
		}
		reason += "; its node starts it again"
		setHA(v, consensus.HAStarted, reason)
		log.Warn("VM handed back to its node, which answers again", "vm", v.Name, "err", why)
		m.event(ctx, consensus.Event{Kind: "recovery-cancelled", Node: node, VM: v.Name, Detail: reason})
		release(v.Name)
		return true
	}

	// 3. Restart, one VM at a time in priority order.
	vms, restarted, start := vmsOf(), 0, time.Now()
	defer func() {
		if len(vms) > 0 && ctx.Err() == nil {
			m.event(ctx, consensus.Event{Kind: "vms-recovered", Node: node, Detail: fmt.Sprintf(
				"%d of %d VMs restarted elsewhere in %s after %s was fenced by %s", restarted, len(vms), time.Since(start).Round(time.Millisecond), node, confirmed.Agent)})
		}
	}()
	for _, v := range vms {
		var lastErr error
		for attempt := 1; attempt <= 3; attempt++ {
			if ctx.Err() != nil || !m.stillLeading(term) {
				return
			}
			if now := movedFrom(v); now != "" {
				// Not a failure: whatever moved it owns it now. Left in
				// state recovery on a live node, settleAbandoned finishes
				// it from where its domain runs (seed 7174).
				log.Warn("VM moved meanwhile; this recovery leaves it", "vm", v.Name, "now_on", now)
				release(v.Name)
				lastErr = nil
				break
			}
			if handBack(v, lastErr) {
				lastErr = nil
				break
			}
			setHA(v, consensus.HARecovery, fmt.Sprintf("node %s fenced by %s; restarting (attempt %d)", node, confirmed.Agent, attempt))
			var target string
			var wasPlaced bool
			target, wasPlaced, lastErr = m.restart(ctx, meta, v, node)
			if wasPlaced {
				placed[v.Name] = true
			}
			if lastErr == nil {
				setHAOn(v, target, consensus.HAStarted, fmt.Sprintf("recovered on %s after %s died", target, node))
				m.event(ctx, consensus.Event{Kind: "vm-recovered", Node: target, VM: v.Name, Detail: fmt.Sprintf("restarted on %s (was on %s)", target, node)})
				log.Warn("VM recovered", "vm", v.Name, "on", target)
				restarted++
				break
			}
			log.Error("VM recovery failed", "vm", v.Name, "attempt", attempt, "err", lastErr)
			sleep(ctx, recoveryRetry)
		}
		if lastErr != nil && movedFrom(v) == "" && !handBack(v, lastErr) {
			msg := status.Convert(lastErr).Message()
			setHA(v, consensus.HAError, msg)
			m.event(ctx, consensus.Event{Kind: "vm-recovery-failed", VM: v.Name, Node: node, Detail: msg})
		}
	}
}

// restart promotes v's volumes on the best node and starts v there.
// placed reports that a node was picked, so that a promotion or a start
// may have begun.
func (m *Manager) restart(ctx context.Context, meta Meta, v *consensus.VMRecord, dead string) (target string, placed bool, err error) {
	// One VM at a time on fresh state: the earlier restarts are in it, as
	// placement.Recover plans them.
	p, err := m.vms.Place(ctx, v.Name, dead)
	if err != nil {
		return "", false, err
	}
	for _, vol := range p.Promote {
		if err := m.vols.Promote(ctx, p.State, vol, p.Node); err != nil {
			return "", true, fmt.Errorf("promote %s on %s: %w", vol, p.Node, err)
		}
		m.event(ctx, consensus.Event{Kind: "promotion", Node: p.Node, VM: v.Name, Detail: fmt.Sprintf("volume %s promoted on %s", vol, p.Node)})
	}
	if err := m.vms.Start(ctx, p); err != nil {
		return "", true, err
	}
	if err := meta.UpdateVM(ctx, consensus.VMUpdate{Name: v.Name, Node: p.Node, IfNode: dead, Reason: "HA recovery"}); err != nil {
		return "", true, err
	}
	return p.Node, true, nil
}
