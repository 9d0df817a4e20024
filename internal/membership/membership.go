package membership

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/state"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// Volumes is what membership asks of the volume subsystem.
type Volumes interface {
	// Show is a volume as its replicas report it ('tandem volume show'),
	// each question to a replica bounded by timeout.
	Show(ctx context.Context, name string, timeout time.Duration) (*tandemv1.VolumeInfo, error)
}

// Cluster is what a member hands a node it admits, besides the certificate
// it signs for it.
type Cluster struct {
	Name, ID string
	// CACert and CAKey are the cluster CA's PEM material.
	CACert, CAKey []byte
	// Secret is the cluster secret (package sealed), nil when this node
	// has none (it predates cluster secrets).
	Secret []byte
}

// Config is what a Manager needs; every field is required.
type Config struct {
	State   *state.State
	Volumes Volumes
	// Cluster returns the cluster this node belongs to, false when it is
	// in none yet.
	Cluster func() (Cluster, bool)
	// Init persists and starts what create and join make.
	Init Init
	// JoinRefused counts one refused join attempt by reason (a metric);
	// nil counts nothing. See joinguard.go for the reasons.
	JoinRefused func(reason string)
	// TellRemoved sends req (Peer NodeRemoved) to the removed node n.
	// By then n's certificates are revoked, so the call must not apply the
	// revocation list to n's server certificate (the daemon's does not;
	// it still checks the CA and n's name). nil tells nobody.
	TellRemoved func(ctx context.Context, n consensus.NodeRecord, req *tandemv1.PeerNodeRemovedRequest) (*tandemv1.PeerNodeRemovedResponse, error)
	// Rejoin is the daemon's side of a rejoin (rejoin.go); nil refuses
	// rejoins on this node (they are still admitted for others).
	Rejoin RejoinHooks
}

// Manager runs membership changes. It is safe for concurrent use.
type Manager struct {
	st      *state.State
	vols    Volumes
	cluster func() (Cluster, bool)
	init    Init
	joins   *joinGuard
	tell    func(ctx context.Context, n consensus.NodeRecord, req *tandemv1.PeerNodeRemovedRequest) (*tandemv1.PeerNodeRemovedResponse, error)
	rejoin  RejoinHooks
}

// New returns a Manager.
func New(c Config) *Manager {
	return &Manager{st: c.State, vols: c.Volumes, cluster: c.Cluster, init: c.Init,
		joins: newJoinGuard(c.State.Log, c.JoinRefused), tell: c.TellRemoved, rejoin: c.Rejoin}
}

// meta is the running metadata client, or the status error every API call
// gives while the node is not in a cluster.
func (m *Manager) meta() (state.Meta, error) {
	if mc := m.st.Meta(); mc != nil {
		return mc, nil
	}
	return nil, status.Error(codes.FailedPrecondition, "this node is not in a cluster")
}
