package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/fencing"
	"github.com/tandemhci/tandem/ha"
	"github.com/tandemhci/tandem/internal/placement"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// haManager runs on every node: the self-fence lease everywhere, and on
// the metadata leader the failure detector and the recovery manager
// (fence -> promote -> restart). See package ha for the timing.
type haManager struct {
	d   *Daemon
	log *slog.Logger

	mu         sync.Mutex
	timing     ha.Timing
	lease      *ha.Lease
	// selfFenced mirrors d.st.Fence under mu, so the lease checks and
	// selfFence decide on one consistent view.
	selfFenced bool
	// idleUntil spaces out the checks that find nothing to fence while
	// the lease stays expired (each asks libvirt).
	idleUntil time.Time

	// Leader side; det is nil while this node is not the leader.
	det        *ha.Detector
	leaderTerm uint64
	leaderCtx  context.Context
	leaderStop context.CancelFunc
	recovering map[string]bool
}

func newHAManager(d *Daemon) *haManager {
	t := ha.DefaultTiming()
	return &haManager{d: d, log: d.log.With("component", "ha"), timing: t, lease: ha.NewLease(t, time.Now()), recovering: map[string]bool{}}
}

// frozen reports whether this node fenced itself: no VM may run and no
// volume may be served as primary until it proves quorum again.
func (h *haManager) frozen() bool { return h != nil && h.d.st.Fence.Fenced() }

func (h *haManager) run(ctx context.Context) {
	go h.watchLease(ctx)
	go h.d.compute.run(ctx)
	if path := h.d.cfg.Watchdog; path != "off" {
		if path == "" {
			path = DefaultWatchdog
		}
		h.mu.Lock()
		lease := h.timing.SelfFenceLease
		h.mu.Unlock()
		w, err := openWatchdog(path, lease, h.log)
		if err != nil {
			h.log.Error("watchdog unusable; self-fencing relies on tandemd alone", "path", path, "err", err)
		}
		go h.runWatchdog(ctx, w)
	}
	for {
		h.mu.Lock()
		interval := h.timing.HeartbeatInterval
		h.mu.Unlock()
		select {
		case <-ctx.Done():
			h.stopLeading()
			return
		case <-time.After(interval):
		}
		h.tick(ctx)
	}
}

func (h *haManager) tick(ctx context.Context) {
	id, meta, _ := h.d.cluster()
	if meta == nil {
		// Not in a cluster: nobody can give up on this node, and its lease
		// starts when it joins.
		h.mu.Lock()
		h.lease = ha.NewLease(h.timing, time.Now())
		h.mu.Unlock()
		return
	}
	if ms, err := meta.LocalState(); err == nil {
		if t, err := ha.TimingFrom(h.d.settingsOf(ms.Config)); err == nil {
			h.mu.Lock()
			h.timing = t
			h.lease.SetTiming(t)
			h.mu.Unlock()
		}
	}
	h.mu.Lock()
	t := h.timing
	h.mu.Unlock()

	leaderID, term, known := meta.Host().Leader(consensus.MetaShardID)
	isLeader := known && leaderID == id.ReplicaID
	start := time.Now()
	qctx, cancel := context.WithTimeout(ctx, t.HeartbeatInterval)
	qerr := meta.Host().CheckQuorum(qctx, consensus.MetaShardID)
	cancel()
	h.mu.Lock()
	if qerr == nil {
		h.lease.QuorumOK(start, isLeader)
	}
	expired := h.lease.Expired(time.Now())
	wasFenced := h.selfFenced
	h.mu.Unlock()

	switch {
	case expired && !wasFenced:
		h.selfFence(ctx)
	case wasFenced && qerr == nil && !expired:
		h.mu.Lock()
		h.selfFenced = false
		at := h.d.st.Fence.Clear()
		h.mu.Unlock()
		h.log.Warn("quorum is back; this node serves again (its VMs stay where the cluster moved them)")
		h.event(ctx, consensus.Event{Kind: "self-fence-lifted", Node: h.d.cfg.NodeName, Detail: fmt.Sprintf("fenced itself at %s", at.UTC().Format(time.RFC3339Nano))})
	}
	if isLeader && qerr == nil {
		h.lead(ctx, t, term)
	} else if !isLeader {
		h.stopLeading()
	}
}

// watchLease fences as soon as the lease runs out, independently of the
// (possibly blocked) quorum checks: the cluster's grace only has to cover
// destroying the VMs, not a late look at the clock.
func (h *haManager) watchLease(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
		h.mu.Lock()
		if _, meta, _ := h.d.cluster(); meta == nil {
			h.lease = ha.NewLease(h.timing, time.Now())
			h.mu.Unlock()
			continue
		}
		expired := h.lease.Expired(time.Now())
		if !expired {
			h.idleUntil = time.Time{}
		}
		fence := !h.selfFenced && expired
		h.mu.Unlock()
		if fence {
			h.selfFence(ctx)
		}
	}
}

// selfFence stops every VM here and freezes every volume, before the
// cluster may treat this node's lease as expired.
func (h *haManager) selfFence(ctx context.Context) {
	h.mu.Lock()
	if h.selfFenced || time.Now().Before(h.idleUntil) {
		h.mu.Unlock()
		return
	}
	h.mu.Unlock()
	// A node with nothing running (one still joining, say) has nothing to
	// stop, and nothing can start on it without quorum (a primary needs a
	// linearizable read of its record, a VM its primary). Fencing it would
	// only stop the watchdog petting and reset the machine: skip, and look
	// again shortly while the lease stays expired.
	if h.nothingToFence(ctx) {
		h.mu.Lock()
		if h.idleUntil.IsZero() {
			h.log.Info("lease expired with nothing running here; not fencing (nothing can start without quorum)")
		}
		h.idleUntil = time.Now().Add(idleRecheck)
		h.mu.Unlock()
		return
	}
	h.mu.Lock()
	if h.selfFenced {
		h.mu.Unlock()
		return
	}
	h.selfFenced = true
	h.d.st.Fence.Set(time.Now())
	h.mu.Unlock()
	// A node with nothing running (one still joining, say) has nothing to
	// protect: it only stops taking primaries until quorum returns, and
	// says so without an alarm.
	frozen, destroyed := 0, 0
	if vm := h.d.volumes(); vm != nil {
		frozen = vm.FreezeAll(errSelfFenced)
	}
	var computeErr error
	if h.d.cfg.ComputeEnabled() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if drv, err := h.d.compute.driver(dctx); err == nil {
			names, _ := drv.Running(dctx)
			for _, n := range names {
				if err := drv.Destroy(dctx, n); err != nil {
					h.log.Error("self-fence: cannot destroy VM", "vm", n, "err", err)
				} else {
					destroyed++
					h.log.Warn("self-fence: VM destroyed", "vm", n)
				}
			}
		} else {
			computeErr = err
		}
	}
	switch {
	case frozen > 0 || destroyed > 0:
		h.log.Error("self-fence: no quorum for longer than the lease; VMs destroyed and volumes frozen",
			"vms_destroyed", destroyed, "primaries_frozen", frozen)
	default:
		h.log.Warn("self-fence: no quorum for longer than the lease; nothing was running here, no new primaries until quorum returns")
	}
	if _, serr := os.Stat(h.d.cfg.Compute.LibvirtSocket); computeErr != nil && !errors.Is(serr, fs.ErrNotExist) {
		// (No socket at all: no libvirtd, so no VM can run here.)
		h.log.Error("self-fence: libvirtd unreachable; VMs may still run (their writes are refused by epoch)", "err", computeErr)
	}
}

// idleRecheck is how soon an expired lease with nothing to fence is looked
// at again: well inside the cluster's grace (ha.self_fence_grace).
const idleRecheck = 200 * time.Millisecond

// nothingToFence reports whether this node provably runs nothing: no
// volume served as primary and no running domain in libvirt. Any doubt
// (libvirtd not answering) means there may be something.
func (h *haManager) nothingToFence(ctx context.Context) bool {
	if vm := h.d.volumes(); vm != nil && vm.Primaries() > 0 {
		return false
	}
	if !h.d.cfg.ComputeEnabled() {
		return true
	}
	if _, err := os.Stat(h.d.cfg.Compute.LibvirtSocket); errors.Is(err, fs.ErrNotExist) {
		return true // no libvirtd here, so no VM
	}
	dctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	drv, err := h.d.compute.driver(dctx)
	if err != nil {
		return false
	}
	names, err := drv.Running(dctx)
	return err == nil && len(names) == 0
}

var errSelfFenced = errors.New("this node fenced itself (no quorum for longer than its lease)")

// leaderPing renews the lease when the metadata leader pings (see ha.Lease).
func (h *haManager) leaderPing(from string, term uint64) {
	id, meta, _ := h.d.cluster()
	if meta == nil || id == nil {
		return
	}
	leaderID, lterm, ok := meta.Host().Leader(consensus.MetaShardID)
	ms, err := meta.LocalState()
	if !ok || err != nil || lterm != term {
		return
	}
	if n, ok := ms.Nodes[from]; !ok || n.ReplicaID != leaderID {
		return
	}
	h.mu.Lock()
	h.lease.LeaderPing(time.Now())
	h.mu.Unlock()
}

func (h *haManager) event(ctx context.Context, e consensus.Event) { h.d.st.Events(ctx, e) }

func (h *haManager) stopLeading() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.leaderStop != nil {
		h.leaderStop()
		h.leaderStop = nil
	}
	h.det, h.leaderCtx = nil, nil
	h.recovering = map[string]bool{}
}

// lead is one detector round on the metadata leader.
func (h *haManager) lead(ctx context.Context, t ha.Timing, term uint64) {
	ms, err := h.d.metaLocal()
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
	h.mu.Lock()
	if h.det == nil || h.leaderTerm != term {
		if h.leaderStop != nil {
			h.leaderStop()
		}
		h.det = ha.NewDetector(t, now, nodes)
		h.leaderTerm = term
		h.recovering = map[string]bool{}
		h.leaderCtx, h.leaderStop = context.WithCancel(ctx)
		h.log.Info("metadata leader: failure detector started", "term", term, "nodes", nodes)
	}
	h.det.SetNodes(now, nodes)
	h.mu.Unlock()

	var wg sync.WaitGroup
	for _, name := range nodes {
		if name == h.d.cfg.NodeName {
			h.mu.Lock()
			h.det.Seen(name, time.Now())
			h.mu.Unlock()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := h.d.peerClient(ms.Nodes[name].BackendAddr)
			if err != nil {
				return
			}
			pctx, cancel := context.WithTimeout(ctx, t.HeartbeatInterval)
			defer cancel()
			if _, err := c.Ping(pctx, &tandemv1.PingRequest{From: h.d.cfg.NodeName, LeaderTerm: term}); err == nil {
				h.mu.Lock()
				if h.det != nil {
					h.det.Seen(name, time.Now())
				}
				h.mu.Unlock()
			}
		}()
	}
	wg.Wait()
	h.mu.Lock()
	if h.det == nil {
		h.mu.Unlock()
		return
	}
	trs := h.det.Tick(time.Now())
	leaderCtx := h.leaderCtx
	h.mu.Unlock()
	for _, tr := range trs {
		kind := "node-" + string(tr.To)
		if tr.To == ha.Alive {
			kind = "node-alive"
		} else if tr.To == ha.Suspect {
			kind = "node-suspected"
		}
		h.log.Warn("node liveness changed", "node", tr.Node, "from", tr.From, "to", tr.To, "last_seen", tr.LastSeen)
		h.event(ctx, consensus.Event{Kind: kind, Node: tr.Node, Detail: fmt.Sprintf("%s -> %s; last answer %s ago", tr.From, tr.To, time.Since(tr.LastSeen).Round(time.Millisecond))})
	}
	if !ha.Armed(h.d.settingsOf(ms.Config)) {
		return
	}
	for _, name := range nodes {
		h.mu.Lock()
		state, _, _ := h.det.State(name)
		busy := h.recovering[name]
		h.mu.Unlock()
		if state != ha.Dead || busy || !hasStartedVMs(ms, name) {
			continue
		}
		h.mu.Lock()
		h.recovering[name] = true
		h.mu.Unlock()
		go func() {
			h.recover(leaderCtx, name, term)
			h.mu.Lock()
			delete(h.recovering, name)
			h.mu.Unlock()
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
func (h *haManager) stillLeading(term uint64) bool {
	id, meta, _ := h.d.cluster()
	if meta == nil {
		return false
	}
	lid, lterm, ok := meta.Host().Leader(consensus.MetaShardID)
	return ok && lid == id.ReplicaID && lterm == term
}

func (h *haManager) liveness(node string) (ha.Liveness, time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.det == nil {
		return "", time.Time{}
	}
	s, last, _ := h.det.State(node)
	return s, last
}

// agents builds the fencing agents for node from its committed config.
func (h *haManager) agents(n *consensus.NodeRecord, lastSeen time.Time, t ha.Timing) []fencing.Fencer {
	var out []fencing.Fencer
	if f := n.Fence; f != nil {
		if f.IPMI != nil {
			out = append(out, fencing.NewIPMI(fencing.IPMIConfig{Host: f.IPMI.Host, Port: f.IPMI.Port, User: f.IPMI.User, Password: f.IPMI.Password, Timeout: t.FenceTimeout}))
		}
		if r := f.Redfish; r != nil {
			out = append(out, fencing.NewRedfish(fencing.RedfishConfig{Endpoint: r.Endpoint, User: r.User, Password: r.Password, SystemID: r.SystemID, InsecureSkipVerify: r.Insecure, Timeout: t.FenceTimeout}))
		}
	}
	if (n.Fence == nil || !n.Fence.NoLease) && !lastSeen.IsZero() {
		// The node renewed at most one heartbeat interval after its last
		// answer (see package ha).
		out = append(out, fencing.NewLease(n.Name, lastSeen.Add(t.HeartbeatInterval), t.SelfFenceLease, nil, fencing.WithSelfFenceGrace(t.SelfFenceGrace)))
	}
	return out
}

// recover moves every started VM of a dead node: fence it, then promote
// and restart each VM elsewhere. It gives up when leadership moves (the
// next leader starts over from the committed HA states).
func (h *haManager) recover(ctx context.Context, node string, term uint64) {
	log := h.log.With("dead_node", node)
	_, meta, _ := h.d.cluster()
	vmsOf := func() []*consensus.VMRecord {
		ms, err := h.d.metaLocal()
		if err != nil {
			return nil
		}
		var out []*consensus.VMRecord
		pc := placementCluster(ms, nil, nil)
		for _, v := range placement.RecoveryOrder(&pc, node) {
			out = append(out, ms.VMs[v.Name])
		}
		return out
	}
	setHA := func(v *consensus.VMRecord, state, reason string) {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, err := meta.SetVMHA(sctx, consensus.VMHACmd{Name: v.Name, State: state, Reason: reason}); err != nil {
			log.Warn("cannot record HA state", "vm", v.Name, "state", state, "err", err)
		}
	}
	_, lastSeen := h.liveness(node)
	for _, v := range vmsOf() {
		if v.HAState == "" || v.HAState == consensus.HAStarted {
			setHA(v, consensus.HAFence, fmt.Sprintf("node %s is dead (last answer %s); fencing it", node, lastSeen.UTC().Format(time.RFC3339Nano)))
		}
	}
	// 1. Fence: positive evidence only (fencing package contract).
	h.event(ctx, consensus.Event{Kind: "fence-attempt", Node: node, Detail: "recovery of its VMs needs it fenced"})
	lastReason := ""
	var confirmed fencing.Result
	for {
		if ctx.Err() != nil || !h.stillLeading(term) {
			log.Warn("recovery stopped: no longer the metadata leader")
			return
		}
		if s, _ := h.liveness(node); s == ha.Alive {
			log.Warn("node answers again before it was fenced; recovery cancelled")
			for _, v := range vmsOf() {
				setHA(v, consensus.HAStarted, "node answered again before it was fenced")
			}
			h.event(ctx, consensus.Event{Kind: "recovery-cancelled", Node: node, Detail: "node answered again before it was fenced"})
			return
		}
		h.mu.Lock()
		t := h.timing
		h.mu.Unlock()
		ms, err := h.d.metaLocal()
		if err != nil {
			time.Sleep(t.HeartbeatInterval)
			continue
		}
		n := ms.Nodes[node]
		if n == nil {
			return
		}
		if !n.ConfirmedOffAt.IsZero() && n.ConfirmedOffAt.After(lastSeen) {
			confirmed = fencing.Result{Agent: "operator", Confirmed: true, Detail: "an operator confirmed the node is off", At: n.ConfirmedOffAt}
			break
		}
		agents := h.agents(n, lastSeen, t)
		fctx, cancel := context.WithTimeout(ctx, t.FenceTimeout)
		res, ferr := fencing.FenceAny(fctx, agents...)
		cancel()
		if ferr == nil && res.Confirmed {
			confirmed = res
			break
		}
		reason := fmt.Sprintf("fencing %s not confirmed: %v", node, ferr)
		var active *fencing.LeaseActiveError
		leaseWait := errors.As(ferr, &active) && len(agents) == 1
		if reason != lastReason && !leaseWait {
			lastReason = reason
			log.Warn("fencing not confirmed; the VMs wait", "err", ferr)
			h.event(ctx, consensus.Event{Kind: "fence-result", Node: node, Detail: reason})
			for _, v := range vmsOf() {
				setHA(v, consensus.HAFence, reason+"; run 'tandem node fence "+node+" --confirm-off' once it is off")
			}
		}
		time.Sleep(t.HeartbeatInterval)
	}
	log.Warn("node fenced", "agent", confirmed.Agent, "detail", confirmed.Detail)
	h.event(ctx, consensus.Event{Kind: "fence-result", Node: node, Detail: fmt.Sprintf("confirmed by %s: %s", confirmed.Agent, confirmed.Detail)})

	// 2-3. Promote and restart, one VM at a time in priority order.
	vs := &vmService{d: h.d}
	for _, v := range vmsOf() {
		var lastErr error
		for attempt := 1; attempt <= 3; attempt++ {
			if ctx.Err() != nil || !h.stillLeading(term) {
				return
			}
			setHA(v, consensus.HARecovery, fmt.Sprintf("node %s fenced by %s; restarting (attempt %d)", node, confirmed.Agent, attempt))
			var target string
			target, lastErr = h.restart(ctx, vs, v, node)
			if lastErr == nil {
				setHA(v, consensus.HAStarted, fmt.Sprintf("recovered on %s after %s died", target, node))
				h.event(ctx, consensus.Event{Kind: "vm-recovered", Node: target, VM: v.Name, Detail: fmt.Sprintf("restarted on %s (was on %s)", target, node)})
				log.Warn("VM recovered", "vm", v.Name, "on", target)
				break
			}
			log.Error("VM recovery failed", "vm", v.Name, "attempt", attempt, "err", lastErr)
			time.Sleep(time.Second)
		}
		if lastErr != nil {
			setHA(v, consensus.HAError, grpcMessage(lastErr))
			h.event(ctx, consensus.Event{Kind: "vm-recovery-failed", VM: v.Name, Node: node, Detail: grpcMessage(lastErr)})
		}
	}
}

// restart promotes v's volumes on the best node and starts v there.
func (h *haManager) restart(ctx context.Context, vs *vmService, v *consensus.VMRecord, dead string) (string, error) {
	ms, err := vs.volumes().Catalog(ctx, true)
	if err != nil {
		return "", err
	}
	cur := ms.VMs[v.Name]
	if cur == nil || cur.Node != dead {
		return "", fmt.Errorf("VM %s moved meanwhile", v.Name)
	}
	cv := vs.view(ctx, ms)
	// One VM at a time on fresh state: the earlier restarts are in ms, as
	// placement.Recover plans them.
	p := placement.Place(&cv.pc, placementVM(cur), dead)
	if p.Node == "" {
		return "", status.Errorf(codes.FailedPrecondition, "no node can run %s safely: %s", v.Name, p.Why())
	}
	target := p.Node
	for _, vol := range cur.Spec.Volumes {
		info := cv.vols[vol]
		if info != nil && info.Primary == target {
			continue
		}
		if err := vs.onNode(ctx, ms, target, 30*time.Second, func(ctx context.Context, c tandemv1.PeerClient) error {
			_, err := c.VolumePromote(ctx, &tandemv1.PromoteVolumeRequest{Name: vol, Node: target})
			return err
		}); err != nil {
			return "", fmt.Errorf("promote %s on %s: %w", vol, target, err)
		}
		h.event(ctx, consensus.Event{Kind: "promotion", Node: target, VM: v.Name, Detail: fmt.Sprintf("volume %s promoted on %s", vol, target)})
	}
	if err := vs.onNode(ctx, ms, target, 60*time.Second, func(ctx context.Context, c tandemv1.PeerClient) error {
		_, err := c.VMStart(ctx, &tandemv1.PeerVMRequest{Vm: vmInfoOf(cur)})
		return err
	}); err != nil {
		return "", err
	}
	_, meta, _ := h.d.cluster()
	if _, err := meta.UpdateVM(ctx, consensus.VMUpdate{Name: v.Name, Node: target, IfNode: dead, Reason: "HA recovery"}); err != nil {
		return "", err
	}
	return target, nil
}

// haService is the admin HA API.
type haService struct {
	tandemv1.UnimplementedHAServer
	d *Daemon
}

// haVMs is the HA view of every VM, sorted by name; see haVM.
func haVMs(vms map[string]*consensus.VMRecord) []*tandemv1.HAVM {
	var out []*tandemv1.HAVM
	for _, name := range slices.Sorted(mapKeys(vms)) {
		out = append(out, haVM(vms[name]))
	}
	return out
}

// haVM is the HA view of one VM. A VM that is meant to be stopped or
// disabled is not "started" just because recovery never touched it (an
// empty HA state): its HA state is its desired state. Fence, recovery and
// error stay visible whatever the desired state, since they tell what HA
// did or needs. A time never set is left out (nil), never the zero time.
func haVM(v *consensus.VMRecord) *tandemv1.HAVM {
	st := v.HAState
	if st == "" || st == consensus.HAStarted {
		st = consensus.HAStarted
		if v.Desired == consensus.VMStopped || v.Desired == consensus.VMDisabled {
			st = v.Desired
		}
	}
	return &tandemv1.HAVM{Name: v.Name, Node: v.Node, Desired: v.Desired, HaState: st, Reason: v.HAReason,
		Changed: optTimestamp(v.HAChanged), Priority: int32(v.Priority)}
}

// optTimestamp is nil for the zero time, so JSON shows no 0001-01-01.
func optTimestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func timingProto(t ha.Timing) *tandemv1.HATiming {
	ms := func(d time.Duration) uint32 { return uint32(d / time.Millisecond) }
	return &tandemv1.HATiming{HeartbeatIntervalMs: ms(t.HeartbeatInterval), SuspectTimeoutMs: ms(t.SuspectTimeout), DeadTimeoutMs: ms(t.DeadTimeout),
		FenceTimeoutMs: ms(t.FenceTimeout), SelfFenceLeaseMs: ms(t.SelfFenceLease)}
}

func (s *haService) Status(ctx context.Context, _ *tandemv1.HAStatusRequest) (*tandemv1.HAStatusResponse, error) {
	ms, err := s.d.metaLocal()
	if err != nil {
		return nil, err
	}
	cfg := s.d.settingsOf(ms.Config)
	t, _ := ha.TimingFrom(cfg)
	out := &tandemv1.HAStatusResponse{Armed: ha.Armed(cfg), Timing: timingProto(t)}
	out.Vms = haVMs(ms.VMs)
	// Liveness is known on the leader only.
	_, meta, _ := s.d.cluster()
	if lid, _, ok := meta.Host().Leader(consensus.MetaShardID); ok {
		if ln := ms.NodeByReplica(lid); ln != nil {
			out.Leader = ln.Name
			if c, err := s.d.peerClient(ln.BackendAddr); err == nil {
				lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				if lr, err := c.HALiveness(lctx, &tandemv1.HAStatusRequest{}); err == nil {
					out.Nodes = lr.Nodes
				}
				cancel()
			}
		}
	}
	return out, nil
}

func (s *haService) Arm(ctx context.Context, req *tandemv1.HAArmRequest) (*tandemv1.HAStatusResponse, error) {
	if err := s.d.requireQuorum(ctx); err != nil {
		return nil, err
	}
	_, meta, _ := s.d.cluster()
	v := "true"
	if !req.Armed {
		v = "false"
	}
	if err := meta.SetConfig(ctx, map[string]string{ha.KeyArmed: v}); err != nil {
		return nil, metaError(err)
	}
	kind := "ha-armed"
	if !req.Armed {
		kind = "ha-disarmed"
	}
	s.d.ha.event(ctx, consensus.Event{Kind: kind, Detail: "by an operator"})
	return s.Status(ctx, &tandemv1.HAStatusRequest{})
}

func eventProto(e consensus.Event) *tandemv1.Event {
	return &tandemv1.Event{Seq: e.Seq, At: timestamppb.New(e.At), By: e.By, Kind: e.Kind, Node: e.Node, Vm: e.VM, Detail: e.Detail}
}

func (s *haService) Events(req *tandemv1.EventsRequest, stream tandemv1.HA_EventsServer) error {
	ctx := stream.Context()
	ms, err := s.d.metaLocal()
	if err != nil {
		return err
	}
	since := req.Since
	if since == 0 {
		tail := int(req.Tail)
		if tail == 0 {
			tail = 20
		}
		if n := len(ms.Events); n > tail {
			since = ms.Events[n-tail-1].Seq
		}
	}
	for {
		for _, e := range ms.Events {
			if e.Seq > since {
				if err := stream.Send(eventProto(e)); err != nil {
					return err
				}
				since = e.Seq
			}
		}
		if !req.Follow {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(200 * time.Millisecond):
		}
		if ms, err = s.d.metaLocal(); err != nil {
			return err
		}
	}
}

// HALiveness answers from this node's detector (the leader's).
func (s *peerService) HALiveness(_ context.Context, _ *tandemv1.HAStatusRequest) (*tandemv1.HAStatusResponse, error) {
	h := s.d.ha
	ms, err := s.d.metaLocal()
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	t := h.timing
	h.mu.Unlock()
	out := &tandemv1.HAStatusResponse{Leader: s.d.cfg.NodeName}
	for _, name := range slices.Sorted(mapKeys(ms.Nodes)) {
		n := ms.Nodes[name]
		if n.State != consensus.NodeMember {
			continue
		}
		hn := &tandemv1.HANode{Name: name, Liveness: "unknown", FencingConfigured: n.Fence != nil && (n.Fence.IPMI != nil || n.Fence.Redfish != nil)}
		if st, last := h.liveness(name); st != "" {
			hn.Liveness, hn.LastSeen = string(st), optTimestamp(last)
			if !last.IsZero() {
				hn.LeaseExpires = timestamppb.New(t.LeaseExpiry(last, fencing.LeaseMargin(t.SelfFenceLease, 0)))
			}
		}
		out.Nodes = append(out.Nodes, hn)
	}
	return out, nil
}
