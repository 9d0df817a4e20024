package volume

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/apierr"
	"github.com/tandemhci/tandem/internal/cephholders"
	"github.com/tandemhci/tandem/internal/pki"
	"github.com/tandemhci/tandem/internal/state"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// Meta is the metadata client as volumes use it (*consensus.Meta).
type Meta interface {
	// State is the linearizable metadata state (needs quorum).
	State(ctx context.Context) (*consensus.MetaState, error)
	// LocalState is what this replica applied, without quorum.
	LocalState() (*consensus.MetaState, error)
	Audit(ctx context.Context, action, detail string) error
	CreateVolume(ctx context.Context, v consensus.VolumeEntry) (*consensus.VolumeEntry, error)
	SetVolumeState(ctx context.Context, name, state string) error
	SetVolumeHA(ctx context.Context, name, mode string) (*consensus.VolumeEntry, error)
	DeleteVolume(ctx context.Context, name string) error
	AddExportCert(ctx context.Context, r consensus.ExportCertRecord) (*consensus.ExportCertRecord, error)
	RevokeCert(ctx context.Context, r consensus.RevokedCert) error
}

// Host is the Raft host as volumes use it (*consensus.Host): the volume
// shards' membership and data.
type Host interface {
	StopShard(shardID uint64) error
	RemoveShardData(ctx context.Context, shardID, replicaID uint64) error
	Membership(ctx context.Context, shardID uint64) (consensus.Membership, error)
	AddReplica(ctx context.Context, shardID, replicaID uint64, addr string, role consensus.Role) error
}

// Shard is the client of the volume shards (*consensus.Volumes), as one
// volume uses it.
type Shard interface {
	StartObserved(spec consensus.ShardSpec, observe func(*consensus.VolumeRecord)) error
	Init(ctx context.Context, rec consensus.VolumeRecord) (*consensus.VolumeRecord, error)
	Record(ctx context.Context, shardID uint64) (*consensus.VolumeRecord, error)
	Outdate(ctx context.Context, shardID, epoch uint64, peer, reason string) (*consensus.VolumeRecord, error)
	SetReplicaState(ctx context.Context, shardID, epoch uint64, peer string, s consensus.ReplicaState, reason string) (*consensus.VolumeRecord, error)
	Promote(ctx context.Context, shardID uint64, node string, expectEpoch uint64, reason string) (*consensus.VolumeRecord, error)
	AllowDual(ctx context.Context, shardID, epoch uint64, peer, reason string) (*consensus.VolumeRecord, error)
	EndDual(ctx context.Context, shardID, epoch uint64, reason string) (*consensus.VolumeRecord, error)
	Handover(ctx context.Context, shardID, epoch uint64, peer, reason string) (*consensus.VolumeRecord, error)
	Detach(ctx context.Context, shardID, epoch uint64, reason string) (*consensus.VolumeRecord, error)
	Wake(shardID uint64)
	WakeIfLedBy(shardID, replicaID uint64) bool
}

// CallNode runs f against node's peer client, bounded by timeout; the
// daemon's retries a call that could not connect once, after cutting the
// connection's reconnect backoff short. Errors name the node.
type CallNode func(ctx context.Context, ms *consensus.MetaState, node string, timeout time.Duration, f func(context.Context, tandemv1.PeerClient) error) error

// Config is what a Manager needs besides the shared state; every field is
// required. The functions return nil (an untyped nil) while the node is
// not in a cluster.
type Config struct {
	State *state.State
	Meta  func() Meta
	Host  func() Host
	// ReplicaID is this node's replica ID in every shard (its metadata
	// replica ID), 0 while it is in no cluster.
	ReplicaID func() uint64
	// ListFile is where the node records the volumes it holds, to reopen
	// them after a restart without quorum.
	ListFile string
	// NBDSocket is the path of the local NBD socket, for the export URIs.
	NBDSocket string
	// QuorumTimeout bounds a linearizable metadata read.
	QuorumTimeout time.Duration
	CallNode      CallNode
	// CA is the cluster CA, to sign export certificates; nil on a node
	// that cannot sign.
	CA func() (*pki.CA, error)
	// CertCheck, when set, refuses revoked client certificates on the TCP
	// NBD export (AuthorizeNBD).
	CertCheck CertCheck
	// Secret is the cluster secret, to seal and open storage keys (RBD);
	// nil on a node without one.
	Secret func() ([]byte, error)
}

// Manager runs this node's part of every volume it holds and the volume
// API's logic. It is safe for concurrent use.
type Manager struct {
	st            *state.State
	log           *slog.Logger
	ctx           context.Context
	meta          func() Meta
	host          func() Host
	replicaID     func() uint64
	listFile      string
	nbdSocket     string
	quorumTimeout time.Duration
	callNode      CallNode
	ca            func() (*pki.CA, error)
	certCheck     CertCheck

	mu   sync.Mutex
	vols map[string]*nodeVolume
	// unopened are the volumes this node holds that failed to reopen
	// after a restart (an I/O error reading the replica, say): retried in
	// the background (reopenLater) and kept in the local list, so that a
	// list saved meanwhile, or the next restart, does not forget them.
	unopened map[string]consensus.VolumeEntry

	warnMu     sync.Mutex
	warnedRate string // the bad resync.rate last warned about
	// rate is resyncRate's last answer and the stored value it parsed:
	// every reconcile of every volume asks, and parsing it each time was
	// 3.5% of a node's CPU at rest with 1000 volumes (bench/scale).
	rate struct {
		valid bool
		raw   string
		bps   int64
	}
	// warnedStream and stream are the same for plainStream.
	warnedStream string
	stream       struct {
		valid bool
		raw   string
		plain bool
	}

	secret  func() ([]byte, error)
	rbdMu   sync.Mutex
	rbdVols map[string]*rbdVolume // RBD volumes this node owns (rbd.go)
	// rbdScan is the scan that removing this node's blocklist entries
	// waits on (rbdunblock.go); holders reads /proc.
	rbdScan *unblockScan
	holders cephholders.Scanner
}

// New returns a Manager. ctx bounds its background work (the volumes'
// reconcile loops, the resync after a promotion); the daemon passes its run
// context, so that work stops with the daemon.
func New(ctx context.Context, c Config) *Manager {
	return &Manager{st: c.State, log: c.State.Log.With("component", "volumes"), ctx: ctx,
		meta: c.Meta, host: c.Host, replicaID: c.ReplicaID, listFile: c.ListFile, nbdSocket: c.NBDSocket,
		quorumTimeout: c.QuorumTimeout, callNode: c.CallNode, ca: c.CA, certCheck: c.CertCheck, vols: map[string]*nodeVolume{}, unopened: map[string]consensus.VolumeEntry{},
		secret: c.Secret, rbdVols: map[string]*rbdVolume{}}
}

func (m *Manager) self() string { return m.st.Node.Name }

// NBDSocket is the path of this node's NBD socket, where local clients
// (the VMs it runs) open the volumes.
func (m *Manager) NBDSocket() string { return m.nbdSocket }

// metaLocal is this replica's metadata, or the status error an API call
// gives while the node is not in a cluster.
func (m *Manager) metaLocal() (*consensus.MetaState, error) { return apierr.LocalState(m.meta()) }

func (m *Manager) get(name string) *nodeVolume {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.vols[name]
}
