package consensus

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/lni/dragonboat/v4"
	"github.com/lni/dragonboat/v4/config"

	sm "github.com/lni/dragonboat/v4/statemachine"
	"github.com/tandemhci/tandem/consensus/raftnet"
)

// ErrShardRunning: the replica is already running on this host.
var ErrShardRunning = errors.New("shard already running")

// ErrNoQuorum means the shard cannot commit or serve a linearizable read:
// no leader with a strict majority of voters could be reached in time.
var ErrNoQuorum = errors.New("no quorum")

// Role is a replica's kind of membership in a shard.
type Role int

const (
	// Voter votes and holds the log and the state machine.
	Voter Role = iota
	// NonVoting replicates the log and state machine but does not vote.
	NonVoting
	// Witness votes and holds only log metadata: it breaks ties for an even
	// number of data replicas without holding their data.
	Witness
)

func (r Role) String() string {
	switch r {
	case Voter:
		return "voter"
	case NonVoting:
		return "non-voting"
	case Witness:
		return "witness"
	}
	return fmt.Sprintf("role(%d)", int(r))
}

// RaftTLS supplies the Raft transport's TLS configurations. They are asked
// for on every connection, so a renewed certificate or a rotated CA takes
// effect on the next handshake without restarting the host. Server must
// require a client certificate; both should check the peer against the
// revocation list (consensus/raftnet).
type RaftTLS struct {
	Server func() (*tls.Config, error)
	Client func() (*tls.Config, error)
}

// HostConfig configures one node's Raft host.
type HostConfig struct {
	// Dir holds the Raft log and snapshots.
	Dir string
	// RaftAddr is the host:port other nodes dial for Raft traffic.
	RaftAddr string
	// ListenAddr defaults to RaftAddr.
	ListenAddr string
	// RTTMillisecond is the expected round trip between nodes; ElectionRTT and
	// HeartbeatRTT are multiples of it.
	RTTMillisecond uint64
	ElectionRTT    uint64
	HeartbeatRTT   uint64
	// VolumeRTTMillisecond, when above RTTMillisecond, is the tick of a
	// second NodeHost that runs the sparse shards started from now on
	// (sparse.go): dragonboat ticks every shard of a host at its rate,
	// idle or not. It shares RaftAddr through the TLS transport, so it
	// needs TLS; without TLS, or at 0, every shard runs on one host.
	VolumeRTTMillisecond uint64
	// SnapshotEntries: take a snapshot every so many applied entries.
	SnapshotEntries uint64
	// TLS runs Raft over Tandem's own TLS transport (raftnet) when set;
	// without it dragonboat's plain TCP transport is used (tests only).
	TLS    *RaftTLS
	Logger *slog.Logger
	// OnPropose, when set, observes every Propose (for metrics).
	OnPropose func(shardID uint64, took time.Duration, err error)
	// CheckMetaReaders verifies that no caller mutated the shared metadata
	// state it read (snapshot.go); it costs a JSON encoding per applied
	// entry, so it is for tests.
	CheckMetaReaders bool
}

func (c *HostConfig) withDefaults() {
	if c.RTTMillisecond == 0 {
		c.RTTMillisecond = 10
	}
	if c.ElectionRTT == 0 {
		c.ElectionRTT = 10
	}
	if c.HeartbeatRTT == 0 {
		c.HeartbeatRTT = 1
	}
	if c.SnapshotEntries == 0 {
		c.SnapshotEntries = 1000
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Host is a node's dragonboat NodeHost plus the settings every shard on it shares.
type Host struct {
	nh  *dragonboat.NodeHost
	cfg HostConfig
	log *slog.Logger
	// raft is the TLS transport's factory, nil without HostConfig.TLS.
	raft *raftnet.Factory
	// sparse holds the IDs of the running sparse shards (sparse.go).
	sparse sync.Map
	// vnh is the volume shards' NodeHost (HostConfig.VolumeRTTMillisecond),
	// nil when every shard runs on nh; onV holds the IDs of the shards
	// started on it. A shard stays on the host that first ran it.
	vnh *dragonboat.NodeHost
	onV sync.Map
}

// NewHost starts the Raft host. It pre-allocates little: the defaults of
// dragonboat reserve about 1.3 GB of WAL and an 8 GB memory budget, which an
// appliance running VMs cannot spare.
func NewHost(cfg HostConfig) (*Host, error) {
	cfg.withDefaults()
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("raft dir: %w", err)
	}
	h := &Host{cfg: cfg, log: cfg.Logger}
	nhc := nodeHostConfig(cfg, cfg.Dir, cfg.RTTMillisecond)
	f, _ := nhc.Expert.TransportFactory.(*raftnet.Factory)
	// Shards that ran on the volume host keep running there, even when
	// the setting no longer asks for a slower tick: their data is there.
	vdir := filepath.Join(cfg.Dir, "volumes")
	_, statErr := os.Stat(vdir)
	held := statErr == nil
	useV := cfg.VolumeRTTMillisecond > cfg.RTTMillisecond || held
	if useV && f == nil {
		if held {
			return nil, fmt.Errorf("%s holds volume shards, which run on a second raft host that needs the TLS transport", vdir)
		}
		useV = false // tests without TLS: every shard on one host
	}
	if useV {
		f.OnSecond = h.onVolumeHost
		h.cfg.VolumeRTTMillisecond = max(cfg.VolumeRTTMillisecond, cfg.RTTMillisecond)
	}
	nh, err := dragonboat.NewNodeHost(nhc)
	if err != nil {
		return nil, fmt.Errorf("start raft host on %s: %w", cfg.RaftAddr, err)
	}
	h.nh, h.raft = nh, f
	if useV {
		vc := nodeHostConfig(cfg, vdir, h.cfg.VolumeRTTMillisecond)
		vc.Expert.TransportFactory = f // the same listener: see raftnet.Factory
		if h.vnh, err = dragonboat.NewNodeHost(vc); err != nil {
			nh.Close()
			return nil, fmt.Errorf("start the volume shards' raft host: %w", err)
		}
	}
	return h, nil
}

// onVolumeHost reports whether shardID runs on the volume shards' host.
func (h *Host) onVolumeHost(shardID uint64) bool {
	_, ok := h.onV.Load(shardID)
	return ok
}

// nhOf is the NodeHost that runs shardID.
func (h *Host) nhOf(shardID uint64) *dragonboat.NodeHost {
	if h.vnh != nil && h.onVolumeHost(shardID) {
		return h.vnh
	}
	return h.nh
}

// holding is the NodeHost with data of the replica, started or not.
func (h *Host) holding(shardID, replicaID uint64) *dragonboat.NodeHost {
	if h.vnh != nil && (h.onVolumeHost(shardID) || h.vnh.HasNodeInfo(shardID, replicaID)) {
		return h.vnh
	}
	return h.nh
}

// rttOf is the tick of the host running shardID, in milliseconds.
func (h *Host) rttOf(shardID uint64) uint64 {
	if h.nhOf(shardID) == h.vnh {
		return h.cfg.VolumeRTTMillisecond
	}
	return h.cfg.RTTMillisecond
}

// RecheckRaftConns closes the Raft connections, accepted or dialed, whose
// peer certificate check refuses now (raftnet.Transport.Recheck), and
// returns how many. Without the TLS transport there is nothing to check.
func (h *Host) RecheckRaftConns(check func(leaf *x509.Certificate) error) int {
	if h.raft == nil {
		return 0
	}
	return h.raft.Recheck(check)
}

// nodeHostConfig is a NodeHost's configuration, with its data in dir and
// its tick every rtt milliseconds.
func nodeHostConfig(cfg HostConfig, dir string, rtt uint64) config.NodeHostConfig {
	logdb := config.GetTinyMemLogDBConfig()
	logdb.Shards = 1
	logdb.KVWriteBufferSize = 1 << 20
	logdb.KVMaxWriteBufferNumber = 2
	logdb.KVLRUCacheSize = 1 << 20
	logdb.SaveBufferSize = 1 << 20
	logdb.MaxSaveBufferSize = 1 << 20
	logdb.KVTargetFileSizeBase = 4 << 20
	expert := config.GetDefaultExpertConfig()
	expert.LogDB = logdb
	expert.Engine = config.EngineConfig{ExecShards: 2, CommitShards: 2, ApplyShards: 2, SnapshotShards: 2, CloseShards: 2}
	nhc := config.NodeHostConfig{
		WALDir:         filepath.Join(dir, "wal"),
		NodeHostDir:    filepath.Join(dir, "nodehost"),
		RTTMillisecond: rtt,
		RaftAddress:    cfg.RaftAddr,
		ListenAddress:  cfg.ListenAddr,
		Expert:         expert,
	}
	if cfg.TLS != nil {
		listen := cfg.ListenAddr
		if listen == "" {
			listen = cfg.RaftAddr
		}
		nhc.Expert.TransportFactory = &raftnet.Factory{Config: raftnet.Config{
			ListenAddr: listen, ServerTLS: cfg.TLS.Server, ClientTLS: cfg.TLS.Client, Log: cfg.Logger.With("component", "raftnet"),
		}}
	}
	return nhc
}

// Close stops every shard and the transport.
func (h *Host) Close() {
	if h.vnh != nil {
		h.vnh.Close() // first: it sends through the transport nh listens with
	}
	h.nh.Close()
}

// RaftAddr is the address peers use to reach this host.
func (h *Host) RaftAddr() string { return h.cfg.RaftAddr }

// ShardSpec says how to start one replica of a shard on this host.
type ShardSpec struct {
	ShardID   uint64
	ReplicaID uint64
	// Members are the initial members (replica ID → Raft address) when the
	// shard is bootstrapped here. Leave empty when joining or restarting.
	Members map[uint64]string
	// Join is true when this replica was added to a running shard.
	Join bool
	Role Role
	// SnapshotEntries overrides the host default when non-zero.
	SnapshotEntries uint64
	// Sparse is for shards that change rarely and come in numbers (one per
	// volume): they heartbeat every 50 ms and elect after 0.5 s or the
	// host's settings if slower, and quiesce when idle (sparse.go).
	Sparse bool
}

// StartShard starts a replica of a shard with the given in-memory state machine.
// On restart (the host has data for the shard) Members and Join are ignored
// and the state is rebuilt from the last snapshot plus the log.
func (h *Host) StartShard(spec ShardSpec, create sm.CreateStateMachineFunc) error {
	snap := spec.SnapshotEntries
	if snap == 0 {
		snap = h.cfg.SnapshotEntries
	}
	rc := config.Config{
		ShardID:            spec.ShardID,
		ReplicaID:          spec.ReplicaID,
		ElectionRTT:        h.cfg.ElectionRTT,
		HeartbeatRTT:       h.cfg.HeartbeatRTT,
		CheckQuorum:        true,
		PreVote:            true,
		SnapshotEntries:    snap,
		CompactionOverhead: snap / 2,
		IsNonVoting:        spec.Role == NonVoting,
		IsWitness:          spec.Role == Witness,
	}
	nh := h.nh
	if spec.Sparse && h.vnh != nil && !h.nh.HasNodeInfo(spec.ShardID, spec.ReplicaID) {
		// New, or started there before: the volume shards' host.
		nh = h.vnh
		h.onV.Store(spec.ShardID, struct{}{})
	}
	if spec.Sparse {
		sparseConfig(&rc, h.cfg, h.rttOf(spec.ShardID))
	}
	if spec.Role == Witness {
		// Witnesses hold no state machine, so they never snapshot.
		rc.SnapshotEntries, rc.CompactionOverhead = 0, 0
	}
	// dragonboat panics on an invalid config deep in its engine; refuse it here.
	if err := rc.Validate(); err != nil {
		return fmt.Errorf("shard %d replica %d: invalid raft config: %w", spec.ShardID, spec.ReplicaID, err)
	}
	members := map[uint64]dragonboat.Target{}
	join := spec.Join
	if nh.HasNodeInfo(spec.ShardID, spec.ReplicaID) {
		// Restart: dragonboat rebuilds membership from its own records.
		join = false
	} else {
		for id, addr := range spec.Members {
			members[id] = addr
		}
	}
	if err := nh.StartReplica(members, join, create, rc); err != nil {
		if errors.Is(err, dragonboat.ErrShardAlreadyExist) {
			return fmt.Errorf("shard %d: %w", spec.ShardID, ErrShardRunning)
		}
		if nh == h.vnh && !nh.HasNodeInfo(spec.ShardID, spec.ReplicaID) {
			h.onV.Delete(spec.ShardID)
		}
		return fmt.Errorf("start shard %d replica %d: %w", spec.ShardID, spec.ReplicaID, err)
	}
	if spec.Sparse {
		h.sparse.Store(spec.ShardID, true)
	}
	return nil
}

// HasShardData reports whether this host has bootstrapped the replica before.
func (h *Host) HasShardData(shardID, replicaID uint64) bool {
	return h.holding(shardID, replicaID).HasNodeInfo(shardID, replicaID)
}

// StopShard stops this host's replica of the shard; its data stays on disk.
func (h *Host) StopShard(shardID uint64) error {
	h.sparse.Delete(shardID)
	if err := h.nhOf(shardID).StopShard(shardID); err != nil {
		return fmt.Errorf("stop shard %d: %w", shardID, err)
	}
	return nil
}

// RemoveShardData deletes this host's Raft data of a stopped shard (a
// deleted volume); the replica must never be started again.
func (h *Host) RemoveShardData(ctx context.Context, shardID, replicaID uint64) error {
	nh := h.holding(shardID, replicaID)
	if err := nh.SyncRemoveData(ctx, shardID, replicaID); err != nil {
		return fmt.Errorf("remove raft data of shard %d: %w", shardID, err)
	}
	if nh == h.vnh {
		h.onV.Delete(shardID)
	}
	return nil
}

// retryable errors are transient while a leader is being elected or the
// replica is catching up; the caller's deadline bounds the retries. An
// attempt started with too little of the caller's time left (dragonboat
// refuses it outright) is the end of that time, not a different failure:
// the loop then reports ErrNoQuorum like any attempt that ran out.
func retryable(err error) bool {
	return errors.Is(err, dragonboat.ErrTimeoutTooSmall) ||
		errors.Is(err, dragonboat.ErrShardNotReady) ||
		errors.Is(err, dragonboat.ErrSystemBusy) ||
		errors.Is(err, dragonboat.ErrTimeout) ||
		errors.Is(err, dragonboat.ErrShardNotInitialized) ||
		errors.Is(err, errMembershipBusy)
}

// errMembershipBusy is a membership change the leader refused for now:
// another is still pending, or the leader was just elected and has not
// applied its first entry yet (dragonboat's ErrRejected). Many volumes
// created at once hit it on their new shards; it passes.
var errMembershipBusy = errors.New("membership change refused for now (another is pending or the leader is new)")

// membershipBusy turns a config change's ErrRejected into
// errMembershipBusy, which the retry loop retries.
func membershipBusy(err error) error {
	if errors.Is(err, dragonboat.ErrRejected) {
		return fmt.Errorf("%w: %v", errMembershipBusy, err)
	}
	return err
}

// withRetry runs op with short per-attempt deadlines until it succeeds, fails
// for good, or ctx ends. Running out of time while the shard keeps saying
// "not ready" or timing out means no quorum.
func (h *Host) withRetry(ctx context.Context, what string, op func(ctx context.Context) error) error {
	return h.retryEvery(ctx, what, h.attemptTimeout(), op)
}

func (h *Host) retryEvery(ctx context.Context, what string, attemptTimeout time.Duration, op func(ctx context.Context) error) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	backoff := 10 * time.Millisecond
	var last error
	for {
		attempt, cancel := context.WithTimeout(ctx, attemptTimeout)
		err := op(attempt)
		cancel()
		if err == nil {
			return nil
		}
		if !retryable(err) && !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("%s: %w", what, err)
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (last error: %v)", what, ErrNoQuorum, last)
		case <-time.After(backoff):
		}
		if backoff < 200*time.Millisecond {
			backoff *= 2
		}
	}
}

// attemptTimeout is long enough for an election plus a commit round.
func (h *Host) attemptTimeout() time.Duration {
	d := time.Duration(h.cfg.RTTMillisecond*h.cfg.ElectionRTT*3) * time.Millisecond
	if d < 500*time.Millisecond {
		d = 500 * time.Millisecond
	}
	return d
}

// Propose commits cmd to the shard and returns the state machine's result.
func (h *Host) Propose(ctx context.Context, shardID uint64, cmd []byte) (sm.Result, error) {
	start := time.Now()
	var res sm.Result
	err := h.retryEvery(ctx, "propose", h.attemptTimeoutOf(shardID), func(ctx context.Context) error {
		h.wake(shardID)
		nh := h.nhOf(shardID)
		r, err := nh.SyncPropose(ctx, nh.GetNoOPSession(shardID), cmd)
		res = r
		return err
	})
	if h.cfg.OnPropose != nil {
		h.cfg.OnPropose(shardID, time.Since(start), err)
	}
	return res, err
}

// Read is a linearizable read: it sees every committed update.
func (h *Host) Read(ctx context.Context, shardID uint64, query any) (any, error) {
	var out any
	err := h.retryEvery(ctx, "read", h.attemptTimeoutOf(shardID), func(ctx context.Context) error {
		v, err := h.nhOf(shardID).SyncRead(ctx, shardID, query)
		out = v
		return err
	})
	return out, err
}

// StaleRead queries the local replica without contacting the leader. It
// answers without quorum, possibly with old state.
func (h *Host) StaleRead(shardID uint64, query any) (any, error) {
	v, err := h.nhOf(shardID).StaleRead(shardID, query)
	if err != nil {
		return nil, fmt.Errorf("local read of shard %d: %w", shardID, err)
	}
	return v, nil
}

// CheckQuorum confirms, through a ReadIndex round, that a leader holding a
// strict majority is reachable. It returns ErrNoQuorum when not.
//
// Attempts are short (two election timeouts): a read index sent to a leader
// that just died is never answered, and status should notice the new leader
// soon after it is elected. Retrying a read is always safe.
func (h *Host) CheckQuorum(ctx context.Context, shardID uint64) error {
	attempt := 2 * h.electionOf(shardID)
	attempt = max(attempt, 100*time.Millisecond)
	return h.retryEvery(ctx, "quorum check", attempt, func(ctx context.Context) error {
		rs, err := h.nhOf(shardID).ReadIndex(shardID, attempt)
		if err != nil {
			return err
		}
		defer rs.Release()
		select {
		case r := <-rs.ResultC():
			switch {
			case r.Completed():
				return nil
			case r.Timeout():
				return dragonboat.ErrTimeout
			case r.Dropped():
				return dragonboat.ErrShardNotReady
			default:
				return fmt.Errorf("read index: %v", r)
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	})
}

// Leader returns the leader's replica ID and term as known locally.
func (h *Host) Leader(shardID uint64) (id, term uint64, ok bool) {
	id, term, valid, err := h.nhOf(shardID).GetLeaderID(shardID)
	if err != nil || !valid {
		return 0, term, false
	}
	return id, term, true
}

// Membership is a shard's membership as this replica last applied it.
type Membership struct {
	Voters    map[uint64]string
	NonVoting map[uint64]string
	Witnesses map[uint64]string
	Removed   map[uint64]struct{}
	// ConfigChangeID must be passed to a following membership change so that
	// concurrent changes are detected.
	ConfigChangeID uint64
}

// LocalMembership answers without quorum from the local replica's records.
// Dragonboat reports only the replica map locally, so every member is listed
// under Voters; use Membership for the committed, role-accurate view.
func (h *Host) LocalMembership(shardID uint64) (Membership, error) {
	info := h.nhOf(shardID).GetNodeHostInfo(dragonboat.NodeHostInfoOption{SkipLogInfo: true})
	for _, si := range info.ShardInfoList {
		if si.ShardID != shardID {
			continue
		}
		m := Membership{Voters: map[uint64]string{}, NonVoting: map[uint64]string{}, Witnesses: map[uint64]string{}, ConfigChangeID: si.ConfigChangeIndex}
		for id, a := range si.Replicas {
			m.Voters[id] = a
		}
		return m, nil
	}
	return Membership{}, fmt.Errorf("shard %d is not running on this host: %w", shardID, dragonboat.ErrShardNotFound)
}

// Membership is the committed membership (linearizable; needs quorum).
func (h *Host) Membership(ctx context.Context, shardID uint64) (Membership, error) {
	var m Membership
	err := h.withRetry(ctx, "membership", func(ctx context.Context) error {
		dm, err := h.nhOf(shardID).SyncGetShardMembership(ctx, shardID)
		if err != nil {
			return err
		}
		m = Membership{Voters: dm.Nodes, NonVoting: dm.NonVotings, Witnesses: dm.Witnesses, Removed: dm.Removed, ConfigChangeID: dm.ConfigChangeID}
		return nil
	})
	return m, err
}

// AddReplica adds a replica to a running shard. The new replica must then be
// started on its host with Join set.
func (h *Host) AddReplica(ctx context.Context, shardID, replicaID uint64, addr string, role Role) error {
	return h.retryEvery(ctx, "add replica", h.attemptTimeoutOf(shardID), func(ctx context.Context) error {
		h.wake(shardID)
		switch role {
		case NonVoting:
			return membershipBusy(h.nhOf(shardID).SyncRequestAddNonVoting(ctx, shardID, replicaID, addr, 0))
		case Witness:
			return membershipBusy(h.nhOf(shardID).SyncRequestAddWitness(ctx, shardID, replicaID, addr, 0))
		default:
			return membershipBusy(h.nhOf(shardID).SyncRequestAddReplica(ctx, shardID, replicaID, addr, 0))
		}
	})
}

// RemoveReplica removes a replica from the shard's membership for good;
// its replica ID cannot be reused.
func (h *Host) RemoveReplica(ctx context.Context, shardID, replicaID uint64) error {
	return h.retryEvery(ctx, "remove replica", h.attemptTimeoutOf(shardID), func(ctx context.Context) error {
		h.wake(shardID)
		return membershipBusy(h.nhOf(shardID).SyncRequestDeleteReplica(ctx, shardID, replicaID, 0))
	})
}

// TransferLeadership asks the current leader to hand over to replicaID.
func (h *Host) TransferLeadership(shardID, replicaID uint64) error {
	return h.nhOf(shardID).RequestLeaderTransfer(shardID, replicaID)
}
