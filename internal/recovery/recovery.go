package recovery

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/ha"
	"github.com/tandemhci/tandem/internal/apierr"
	"github.com/tandemhci/tandem/internal/state"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// DefaultWatchdog is where the kernel's watchdog lives when there is one.
const DefaultWatchdog = "/dev/watchdog"

// ErrSelfFenced is the cause the volumes are frozen with when the node
// fences itself.
var ErrSelfFenced = errors.New("this node fenced itself (no quorum for longer than its lease)")

// ErrRemoved is the cause the volumes are frozen with when the node learns
// that it was removed from the cluster.
var ErrRemoved = errors.New("this node was removed from the cluster")

// Meta is the metadata client as recovery uses it: the few methods of
// *consensus.Meta it calls, with the metadata shard's leadership and quorum
// check and this node's replica ID flattened in.
type Meta interface {
	// LocalState is what this replica applied, without quorum.
	LocalState() (*consensus.MetaState, error)
	// Self is this node's replica ID in the metadata shard.
	Self() uint64
	// Leader is the metadata shard's leader as this replica knows it.
	Leader() (replicaID, term uint64, ok bool)
	// CheckQuorum returns nil when a majority of the shard answers.
	CheckQuorum(ctx context.Context) error
	SetVMHA(ctx context.Context, c consensus.VMHACmd) error
	// UpdateVM records a VM's move (IfNode guards against a race).
	UpdateVM(ctx context.Context, u consensus.VMUpdate) error
	SetConfig(ctx context.Context, kv map[string]string) error
	SetNodeFence(ctx context.Context, c consensus.NodeFenceCmd) (consensus.NodeRecord, error)
	// AppliedIndex is the last metadata index this replica applied.
	AppliedIndex() (uint64, error)
}

// Volumes is what recovery asks of this node's volume subsystem and of the
// cluster's volumes.
type Volumes interface {
	// FreezeAll stops every primary served here for good, with cause, and
	// returns how many it stopped.
	FreezeAll(cause error) int
	// Primaries counts the volumes served here as primary.
	Primaries() int
	// Promote makes node the primary of vol; ms locates node.
	Promote(ctx context.Context, ms *consensus.MetaState, vol, node string) error
	// Show is where vol's primary is and its replicas' states, as the
	// nodes holding it answer; skip, when set, is not asked (a dead node,
	// whose silence would only cost the call its timeout).
	Show(ctx context.Context, vol, skip string) (*tandemv1.VolumeInfo, error)
	// WakeShards makes the volume shards node is a member of active here,
	// so that those node led elect a new leader at once; it returns how
	// many it woke.
	WakeShards(node string) int
}

// Domains is the hypervisor of this node: the VMs running here.
type Domains interface {
	Running(ctx context.Context) ([]string, error)
	Destroy(ctx context.Context, name string) error
}

// Placement is where recovery restarts one VM.
type Placement struct {
	// VM is the VM's committed record.
	VM *consensus.VMRecord
	// Node runs the VM next.
	Node string
	// Promote lists the VM's volumes whose primary is not on Node yet.
	Promote []string
	// State is the linearizable metadata the placement was made from; it
	// locates Node.
	State *consensus.MetaState
}

// VMs is what recovery asks of the VM subsystem.
type VMs interface {
	// Domains connects to this node's hypervisor; it fails when it does
	// not answer.
	Domains(ctx context.Context) (Domains, error)
	// Place picks, on fresh state, the node to restart vm on after dead
	// died; it fails when the VM moved meanwhile or no node can run it.
	Place(ctx context.Context, vm, dead string) (Placement, error)
	// PlanAll places every VM recovery restarts after dead died, each
	// restart counted before the next is placed, in recovery order; a VM
	// no node can run is left out.
	PlanAll(ctx context.Context, dead string) ([]Placement, error)
	// Start starts p.VM on p.Node.
	Start(ctx context.Context, p Placement) error
	// RunningOn asks every member of ms where vm's domain runs (or is
	// paused); unknown are the members that did not answer.
	RunningOn(ctx context.Context, ms *consensus.MetaState, vm string) (running, unknown []string, err error)
}

// Config is what a Manager needs; every field is required.
type Config struct {
	State *state.State
	// Meta returns the metadata client, nil while the node is not in a
	// cluster.
	Meta    func() Meta
	Volumes Volumes
	VMs     VMs
	// Settings is the cluster configuration in force: the known settings
	// with valid values (see internal/settings).
	Settings func(cfg map[string]string) map[string]string
	// Secret reads the cluster secret that seals fence passwords; its
	// error says how to get one when the node has none.
	Secret func() ([]byte, error)
	// KillQEMU kills this host's QEMU processes without libvirtd (which may
	// be hung) and returns the domains it proved dead (compute.KillHostQEMU
	// for every domain). Nil: only libvirt destroys.
	KillQEMU func(ctx context.Context) ([]string, error)
}

// Manager runs on every node: the self-fence lease everywhere, and on the
// metadata leader the failure detector and the recovery of a dead node's
// VMs (fence -> promote -> restart). See package ha for the timing.
type Manager struct {
	st       *state.State
	log      *slog.Logger
	meta     func() Meta
	vols     Volumes
	vms      VMs
	settings func(map[string]string) map[string]string
	secret   func() ([]byte, error)
	killQEMU func(ctx context.Context) ([]string, error)
	// plainWarned holds "node/field" of plain-text passwords already
	// logged, so each is reported once.
	plainWarned sync.Map

	mu     sync.Mutex
	timing ha.Timing
	lease  *ha.Lease
	// selfFenced mirrors st.Fence under mu, so the lease checks and
	// selfFence decide on one consistent view (a removed node that ran
	// nothing has st.Fence alone: see Removed).
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
	// handling maps the VMs a running recovery handles to their dead
	// node: settleAbandoned leaves them alone, though one may be recorded
	// on a live node meanwhile (seed 7174).
	handling map[string]string
	// volsDone holds the dead nodes whose volumes without a VM were
	// handled (promoted or left to an operator) since they died; cleared
	// when the node answers again.
	volsDone map[string]bool
	// aliveAt is, per node, the metadata index this replica had applied
	// when the node last answered this leader: an operator's confirmation
	// that it is off counts only if committed after that (by index, never
	// by comparing two nodes' clocks).
	aliveAt map[string]uint64
	// woken holds the unreachable nodes whose volume shards this node
	// woke (wakeShardsOf), on the leader and on the others alike.
	woken map[string]bool
	// resuming holds the VMs whose abandoned recovery this leader is
	// finishing (abandoned.go), and resumeTries how often it failed.
	resuming    map[string]bool
	resumeTries map[string]int
	// kick starts an HA round at once: a leader ping found no quorum proof
	// recent enough to renew the lease, and a check right after it counts
	// (ha.Lease.LeaderPing).
	kick chan struct{}

	// lastTick is when the HA loop last finished a round (Unix nanoseconds):
	// the daemon's liveness, which the service manager's watchdog follows.
	lastTick atomic.Int64
}

// LastTick is when the HA loop last finished a round, zero before the
// first. A tick is bounded by the heartbeat interval even without quorum,
// so a stale one means the loop is stuck.
func (m *Manager) LastTick() time.Time {
	if n := m.lastTick.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// New returns a Manager; Run starts it.
func New(c Config) *Manager {
	t := ha.DefaultTiming()
	return &Manager{st: c.State, log: c.State.Log.With("component", "ha"), meta: c.Meta, vols: c.Volumes, vms: c.VMs,
		settings: c.Settings, secret: c.Secret, killQEMU: c.KillQEMU, timing: t, lease: ha.NewLease(t, time.Now()), recovering: map[string]bool{}, handling: map[string]string{}, volsDone: map[string]bool{}, woken: map[string]bool{}, kick: make(chan struct{}, 1), resuming: map[string]bool{}, resumeTries: map[string]int{}}
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// metaLocal is this node's copy of the metadata (no quorum needed).
func (m *Manager) metaLocal() (*consensus.MetaState, error) { return apierr.LocalState(m.meta()) }

// Run keeps the lease, pets the watchdog and, on the metadata leader,
// detects failures and recovers, until ctx ends.
func (m *Manager) Run(ctx context.Context) {
	go m.watchLease(ctx)
	if path := m.st.Config.Watchdog; path != "off" {
		if path == "" {
			path = DefaultWatchdog
		}
		m.mu.Lock()
		lease := m.timing.SelfFenceLease
		m.mu.Unlock()
		w, err := openWatchdog(path, lease, m.log)
		if err != nil {
			m.log.Error("watchdog unusable; self-fencing relies on tandemd alone", "path", path, "err", err)
		}
		go m.runWatchdog(ctx, w)
	}
	for {
		m.mu.Lock()
		interval := m.timing.HeartbeatInterval
		m.mu.Unlock()
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			m.stopLeading()
			return
		case <-t.C:
		case <-m.kick:
			t.Stop()
		}
		m.tick(ctx)
		m.lastTick.Store(time.Now().UnixNano())
	}
}

func (m *Manager) tick(ctx context.Context) {
	meta := m.meta()
	if meta == nil {
		// Not in a cluster: nobody can give up on this node, and its lease
		// starts when it joins.
		m.mu.Lock()
		m.lease = ha.NewLease(m.timing, time.Now())
		m.mu.Unlock()
		return
	}
	if ms, err := meta.LocalState(); err == nil {
		if t, err := ha.TimingFrom(m.settings(ms.Config)); err == nil {
			m.mu.Lock()
			m.timing = t
			m.lease.SetTiming(t)
			m.mu.Unlock()
		}
	}
	m.mu.Lock()
	t := m.timing
	m.mu.Unlock()

	leaderID, term, known := meta.Leader()
	isLeader := known && leaderID == meta.Self()
	start := time.Now()
	qctx, cancel := context.WithTimeout(ctx, t.HeartbeatInterval)
	qerr := meta.CheckQuorum(qctx)
	cancel()
	m.mu.Lock()
	if qerr == nil {
		m.lease.QuorumOK(start, isLeader)
	}
	expired := m.lease.Expired(time.Now())
	wasFenced := m.selfFenced
	m.mu.Unlock()

	switch {
	case expired && !wasFenced:
		m.selfFence(ctx)
	case wasFenced && qerr == nil && !expired && !m.removed():
		m.mu.Lock()
		m.selfFenced = false
		at := m.st.Fence.Clear()
		m.mu.Unlock()
		m.log.Warn("quorum is back; this node serves again (its VMs stay where the cluster moved them)")
		m.event(ctx, consensus.Event{Kind: "self-fence-lifted", Node: m.st.Node.Name, Detail: fmt.Sprintf("fenced itself at %s", at.UTC().Format(time.RFC3339Nano))})
	}
	if isLeader && qerr == nil {
		m.lead(ctx, t, term)
	} else if !isLeader {
		m.stopLeading()
	}
}

// watchLease fences as soon as the lease runs out, independently of the
// (possibly blocked) quorum checks: the cluster's grace only has to cover
// destroying the VMs, not a late look at the clock.
func (m *Manager) watchLease(ctx context.Context) {
	for sleep(ctx, 20*time.Millisecond) {
		m.mu.Lock()
		if m.meta() == nil {
			m.lease = ha.NewLease(m.timing, time.Now())
			m.mu.Unlock()
			continue
		}
		expired := m.lease.Expired(time.Now())
		if !expired {
			m.idleUntil = time.Time{}
		}
		fence := !m.selfFenced && expired
		m.mu.Unlock()
		if fence {
			m.selfFence(ctx)
		}
	}
}

// selfFence stops every VM here and freezes every volume, before the
// cluster may treat this node's lease as expired.
func (m *Manager) selfFence(ctx context.Context) {
	m.mu.Lock()
	if m.selfFenced || time.Now().Before(m.idleUntil) {
		m.mu.Unlock()
		return
	}
	m.mu.Unlock()
	// A node with nothing running (one still joining, say) has nothing to
	// stop, and nothing can start on it without quorum (a primary needs a
	// linearizable read of its record, a VM its primary). Fencing it would
	// only stop the watchdog petting and reset the machine: skip, and look
	// again shortly while the lease stays expired.
	if m.nothingToFence(ctx) {
		m.mu.Lock()
		if m.idleUntil.IsZero() {
			m.log.Info("lease expired with nothing running here; not fencing (nothing can start without quorum)")
		}
		m.idleUntil = time.Now().Add(idleRecheck)
		m.mu.Unlock()
		return
	}
	m.mu.Lock()
	if m.selfFenced {
		m.mu.Unlock()
		return
	}
	m.selfFenced = true
	m.st.Fence.Set(time.Now())
	m.mu.Unlock()
	frozen, destroyed := m.stopEverything(ctx, ErrSelfFenced, "self-fence")
	switch {
	case frozen > 0 || destroyed > 0:
		m.log.Error("self-fence: no quorum for longer than the lease; VMs destroyed and volumes frozen",
			"vms_destroyed", destroyed, "primaries_frozen", frozen)
	default:
		m.log.Warn("self-fence: no quorum for longer than the lease; nothing was running here, no new primaries until quorum returns")
	}
}

// removed reports whether this node knows it was removed.
func (m *Manager) removed() bool {
	_, ok := m.st.Removal.Get()
	return ok
}

// Removed acts on proof that this node was removed from the cluster (see
// the invariants in doc.go for what counts as proof): it records the
// removal for status and stops this node for good, in the self-fence's
// order (fence flag, volumes frozen, VMs destroyed), since a removed node
// never gets quorum back and its lease would run out anyway. Data stays on
// disk. A node that provably runs nothing is only flagged (as selfFence,
// which leaves it alone).
// first is false when the removal was known already; nothing more is done
// then.
func (m *Manager) Removed(ctx context.Context, r state.RemovalRecord) (first bool, frozen, destroyed int) {
	if !m.st.Removal.Set(r) {
		return false, 0, 0
	}
	m.log.Error("this node was removed from the cluster; stopping its volumes and VMs for good",
		"cluster", r.ClusterName, "by", r.By, "credential", r.As, "at", r.At, "told_by", r.ToldBy)
	// The flag the volume and VM subsystems read: nothing starts or serves
	// here any more. Only HA's own flag (selfFenced) stops the watchdog,
	// and only when there is something to stop, as in selfFence.
	m.mu.Lock()
	m.st.Fence.Set(time.Now())
	m.mu.Unlock()
	if m.nothingToFence(ctx) {
		m.log.Warn("removed: nothing was running here")
		return true, 0, 0
	}
	m.mu.Lock()
	m.selfFenced = true
	m.mu.Unlock()
	frozen, destroyed = m.stopEverything(ctx, ErrRemoved, "removed")
	m.log.Error("removed: VMs destroyed and volumes frozen", "vms_destroyed", destroyed, "primaries_frozen", frozen)
	return true, frozen, destroyed
}

// stopEverything freezes every volume served here with cause, then
// destroys every running VM (what names the step in the log).
func (m *Manager) stopEverything(ctx context.Context, cause error, what string) (frozen, destroyed int) {
	frozen = m.vols.FreezeAll(cause)
	gone := map[string]bool{}
	var computeErr error
	if m.st.Config.ComputeEnabled() {
		// Destroying must finish even when the daemon is shutting down.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if m.killQEMU != nil {
			// SIGKILL first, without libvirtd: the cluster restarts these
			// VMs once the lease and its grace ran out, whether or not
			// libvirtd answers (a paused or hung one would hold the
			// destroy past that point). libvirt's destroy below then only
			// tidies its own state.
			m.mu.Lock()
			grace := m.timing.SelfFenceGrace
			m.mu.Unlock()
			kctx, kcancel := context.WithTimeout(dctx, grace/2+time.Second)
			killed, err := m.killQEMU(kctx)
			kcancel()
			for _, n := range killed {
				gone[n] = true
				m.log.Warn(what+": VM killed", "vm", n)
			}
			if err != nil {
				m.log.Error(what+": a QEMU could not be proved dead; the watchdog must reset this node", "err", err)
			}
		}
		if drv, err := m.vms.Domains(dctx); err == nil {
			names, _ := drv.Running(dctx)
			for _, n := range names {
				if err := drv.Destroy(dctx, n); err != nil && !gone[n] {
					m.log.Error(what+": cannot destroy VM", "vm", n, "err", err)
				} else if err == nil && !gone[n] {
					gone[n] = true
					m.log.Warn(what+": VM destroyed", "vm", n)
				}
			}
		} else {
			computeErr = err
		}
	}
	destroyed = len(gone)
	if _, serr := os.Stat(m.st.Config.Compute.LibvirtSocket); computeErr != nil && !errors.Is(serr, fs.ErrNotExist) {
		// (No socket at all: no libvirtd, so no VM can run here.)
		m.log.Error(what+": libvirtd unreachable; VMs may still run (their writes are refused by epoch)", "err", computeErr)
	}
	return frozen, destroyed
}

// idleRecheck is how soon an expired lease with nothing to fence is looked
// at again: well inside the cluster's grace (ha.self_fence_grace).
const idleRecheck = 200 * time.Millisecond

// nothingToFence reports whether this node provably runs nothing: no
// volume served as primary and no running domain in libvirt. Any doubt
// (libvirtd not answering) means there may be something.
func (m *Manager) nothingToFence(ctx context.Context) bool {
	if m.vols.Primaries() > 0 {
		return false
	}
	if !m.st.Config.ComputeEnabled() {
		return true
	}
	if _, err := os.Stat(m.st.Config.Compute.LibvirtSocket); errors.Is(err, fs.ErrNotExist) {
		return true // no libvirtd here, so no VM
	}
	dctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	drv, err := m.vms.Domains(dctx)
	if err != nil {
		return false
	}
	names, err := drv.Running(dctx)
	return err == nil && len(names) == 0
}

// LeaderPing renews the lease when the metadata leader pings (see
// ha.Lease): from must be the node the metadata names as the leader at
// term. unreachable are the nodes the leader suspects or declared dead:
// their volume shards are woken here (wakeShardsOf).
func (m *Manager) LeaderPing(from string, term uint64, unreachable []string) {
	meta := m.meta()
	if meta == nil {
		return
	}
	leaderID, lterm, ok := meta.Leader()
	ms, err := meta.LocalState()
	if !ok || err != nil || lterm != term {
		return
	}
	if n, ok := ms.Nodes[from]; !ok || n.ReplicaID != leaderID {
		return
	}
	m.mu.Lock()
	renewed := m.lease.LeaderPing(time.Now())
	m.mu.Unlock()
	if !renewed {
		select {
		case m.kick <- struct{}{}:
		default: // a round is due already
		}
	}
	m.wakeShardsOf(unreachable)
}

func (m *Manager) event(ctx context.Context, e consensus.Event) { m.st.Events(ctx, e) }
