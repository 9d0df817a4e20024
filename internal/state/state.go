package state

import (
	"context"
	"crypto/tls"
	"log/slog"
	"sync"
	"time"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/config"
	"github.com/tandemhci/tandem/internal/settings"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// State is what the subsystems of one node share. The daemon fills every
// field before handing it out; subsystems must not modify it.
type State struct {
	// Node is this node's configured identity: subsystems name themselves
	// in records and audit entries, and refuse to act on themselves.
	Node Node
	// Log is the daemon's logger; subsystems add their own attributes.
	Log *slog.Logger
	// Meta returns the metadata client, or nil while the node is not in a
	// cluster. It is a function because create, join and the expected-votes
	// override replace the client; callers read it once per operation.
	Meta func() Meta
	// Quorum returns nil when a majority of the metadata shard's voters is
	// reachable, otherwise a status error (FailedPrecondition) fit to return
	// to the API caller. Mutations check it first so they fail fast and
	// change nothing.
	Quorum func(ctx context.Context) error
	// Peer returns a client of the member serving the backend address addr,
	// over the cluster's mutual TLS; connections are shared and owned by
	// the daemon. It fails while the node is not in a cluster.
	Peer func(addr string) (tandemv1.PeerClient, error)
	// Now is the clock, so tests can fix time (certificate validity,
	// recovery directory names).
	Now func() time.Time

	// Config is the node's configuration file as loaded (disks, compute,
	// watchdog, Raft timing). Read only.
	Config config.Config
	// Cluster returns the cluster this node belongs to, ok false while it
	// belongs to none.
	Cluster func() (c Cluster, ok bool)
	// Shards returns the client of the volume shards this node hosts, or
	// nil while the node is not in a cluster.
	Shards func() *consensus.Volumes
	// Events records a cluster event in the metadata shard. It is best
	// effort: a failure is logged, never returned, since an event must not
	// fail the operation it reports.
	Events func(ctx context.Context, e consensus.Event)
	// Settings turns the stored cluster configuration into the settings in
	// force (unknown keys and bad values read as defaults, logged once).
	Settings *settings.InForce
	// Fence is this node's self-fence flag. HA recovery sets it when the
	// node lost quorum for longer than its lease; the volume and VM
	// subsystems read it and refuse to serve or start anything meanwhile.
	Fence *SelfFence
	// Removal is set once this node has proof that it was removed from
	// the cluster (HA recovery sets it; see recovery.Manager.Removed);
	// status reports it. It is never cleared.
	Removal *Removal
	// Stopped says why this node, although it belongs to a cluster, does
	// not run in it (its certificate expired while it was off); ok false
	// when it runs or is in no cluster. Nil reads as not stopped; use
	// StoppedInfo.
	Stopped func() (s Stopped, ok bool)
}

// Removal is a node's knowledge that it was removed from the cluster. The
// zero value knows nothing.
type Removal struct {
	mu   sync.Mutex
	rec  *RemovalRecord
	done chan struct{} // closed by the first Set
}

// RemovalRecord says who removed this node and how it learned it.
type RemovalRecord struct {
	ClusterName string
	// By is the member that recorded the removal, As the API credential
	// it acted for (either may be empty for old records), At when.
	By, As string
	At     time.Time
	// ToldBy is the member that told this node.
	ToldBy string
}

// Set records r unless a removal is known already; it reports whether r
// is the first.
func (r *Removal) Set(rec RemovalRecord) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.rec != nil {
		return false
	}
	r.rec = &rec
	close(r.doneLocked())
	return true
}

// Done is closed once a removal is known.
func (r *Removal) Done() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.doneLocked()
}

func (r *Removal) doneLocked() chan struct{} {
	if r.done == nil {
		r.done = make(chan struct{})
	}
	return r.done
}

// Get returns the removal known, ok false when none is (or r is nil).
func (r *Removal) Get() (RemovalRecord, bool) {
	if r == nil {
		return RemovalRecord{}, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.rec == nil {
		return RemovalRecord{}, false
	}
	return *r.rec, true
}

// Stopped is a node that belongs to a cluster but does not run in it.
type Stopped struct {
	ClusterName, ClusterID string
	// Reason says what happened and the exact commands that fix it.
	Reason string
}

// StoppedInfo is s.Stopped, false when it is nil.
func (s *State) StoppedInfo() (Stopped, bool) {
	if s == nil || s.Stopped == nil {
		return Stopped{}, false
	}
	return s.Stopped()
}

// Cluster is the cluster a node belongs to, as subsystems need it.
type Cluster struct {
	Name, ID string
	// CACert is the cluster CA's certificate (PEM).
	CACert []byte
	// NodeCert is this node's certificate (PEM), for its expiry warning.
	NodeCert []byte
	// ClientTLS is the node's mutual-TLS client identity for dialing
	// peers outside gRPC (the replication port).
	ClientTLS func() (*tls.Config, error)
}

// SelfFence is the node's self-fence flag. The zero value is not fenced.
// Only HA recovery sets or clears it.
type SelfFence struct {
	mu     sync.Mutex
	fenced bool
	at     time.Time
}

// Set records that the node fenced itself at t.
func (f *SelfFence) Set(t time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fenced, f.at = true, t
}

// Clear lifts the self-fence and returns when it was set (zero when it
// was not).
func (f *SelfFence) Clear() (at time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	at = f.at
	f.fenced, f.at = false, time.Time{}
	return at
}

// Fenced reports whether the node is self-fenced: no VM may run and no
// volume may be served as primary. A nil flag is never fenced.
func (f *SelfFence) Fenced() bool {
	if f == nil {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fenced
}

// Node is the part of the node's configuration subsystems need.
type Node struct {
	Name    string
	DataDir string
	// Role is "data" or "witness".
	Role string
	// The addresses this node serves and announces to its peers.
	BackendAddr, RaftAddr, AdminAddr, ReplicationAddr, NBDAddr string
}

// Meta is the metadata client as subsystems use it: the few methods of
// *consensus.Meta they call, with the metadata shard's Raft membership
// flattened in, so a test can fake it without a Raft host. MetaOf adapts
// the real one.
type Meta interface {
	// State is the linearizable metadata state (needs quorum).
	State(ctx context.Context) (*consensus.MetaState, error)
	// LocalState is what this replica applied, without quorum.
	LocalState() (*consensus.MetaState, error)
	// Bootstrap records a new cluster and its first node.
	Bootstrap(ctx context.Context, c consensus.ClusterRecord, n consensus.NodeRecord) error
	SetNodeState(ctx context.Context, name, state string) (consensus.NodeRecord, error)
	// Join consumes a join token and records the node as joining; it
	// returns the node's replica ID.
	Join(ctx context.Context, tokenID, verifier string, n consensus.NodeRecord) (uint64, error)
	// CheckJoin runs Join's checks through a linearizable read, proposing
	// nothing: nil when Join would be accepted now.
	CheckJoin(ctx context.Context, tokenID, verifier string, n consensus.NodeRecord) error
	// CheckRejoin runs Rejoin's checks through a linearizable read,
	// proposing nothing: the node's record when Rejoin would be accepted.
	CheckRejoin(ctx context.Context, r consensus.RejoinCmd) (consensus.NodeRecord, error)
	// Rejoin consumes a join token to re-admit an existing member and
	// records its new certificate; it returns the node's record.
	Rejoin(ctx context.Context, r consensus.RejoinCmd) (consensus.NodeRecord, error)
	Audit(ctx context.Context, action, detail string) error
	// Membership is the metadata shard's committed Raft membership.
	Membership(ctx context.Context) (consensus.Membership, error)
	// LocalMembership is the shard's membership as this replica knows it.
	LocalMembership() (consensus.Membership, error)
	// AddVoter adds a replica to the metadata shard as a voter.
	AddVoter(ctx context.Context, replicaID uint64, raftAddr string) error
	// RemoveReplica removes a replica from the metadata shard for good.
	RemoveReplica(ctx context.Context, replicaID uint64) error
	// CheckQuorum returns nil when a majority of the shard's voters
	// answers within ctx, else consensus.ErrNoQuorum.
	CheckQuorum(ctx context.Context) error
	// Leader is the shard's leader as this replica knows it.
	Leader() (replicaID, term uint64, ok bool)
	// AddToken records a join token.
	AddToken(ctx context.Context, t consensus.TokenRecord) error
	// SetConfigResult stores cluster settings (an empty value deletes a
	// key) and returns the whole configuration after the change.
	SetConfigResult(ctx context.Context, kv map[string]string) (map[string]string, error)
	// CreateCredential and RevokeCredential change the named API
	// credentials.
	CreateCredential(ctx context.Context, r consensus.CredentialRecord) error
	RevokeCredential(ctx context.Context, name string, force bool) error
}

// MetaOf adapts the consensus metadata client; nil stays nil.
func MetaOf(m *consensus.Meta) Meta {
	if m == nil {
		return nil
	}
	return meta{m}
}

type meta struct{ *consensus.Meta }

func (m meta) Membership(ctx context.Context) (consensus.Membership, error) {
	return m.Host().Membership(ctx, consensus.MetaShardID)
}

func (m meta) LocalMembership() (consensus.Membership, error) {
	return m.Host().LocalMembership(consensus.MetaShardID)
}

func (m meta) AddVoter(ctx context.Context, replicaID uint64, raftAddr string) error {
	return m.Host().AddReplica(ctx, consensus.MetaShardID, replicaID, raftAddr, consensus.Voter)
}

func (m meta) RemoveReplica(ctx context.Context, replicaID uint64) error {
	return m.Host().RemoveReplica(ctx, consensus.MetaShardID, replicaID)
}

func (m meta) CheckQuorum(ctx context.Context) error {
	return m.Host().CheckQuorum(ctx, consensus.MetaShardID)
}

func (m meta) Leader() (uint64, uint64, bool) { return m.Host().Leader(consensus.MetaShardID) }
