package api

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/internal/apierr"
	"github.com/tandemhci/tandem/internal/cluster"
	"github.com/tandemhci/tandem/internal/images"
	"github.com/tandemhci/tandem/internal/membership"
	"github.com/tandemhci/tandem/internal/recovery"
	"github.com/tandemhci/tandem/internal/state"
	"github.com/tandemhci/tandem/internal/vmm"
	"github.com/tandemhci/tandem/internal/volume"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// Config is what the services call. The managers are the subsystems'; Node
// is what only the daemon can do. Every field is required.
type Config struct {
	State   *state.State
	Cluster *cluster.Manager
	Members *membership.Manager
	// Volumes serves the volume API; the peer side answers
	// FailedPrecondition while the node is in no cluster (ReplicaID 0).
	Volumes *volume.Manager
	VMs     *vmm.Manager
	HA      *recovery.Manager
	// Images keeps the ISO images (issue 18).
	Images *images.Manager
	// Certs renews this node's certificates and takes part in CA
	// rotations.
	Certs *membership.Renewer
	Node  Node
}

// Node is the daemon's part of the API: what rewrites the node's Raft
// host or reads its files.
type Node struct {
	// SetExpectedVotes is the expected-votes override (it restarts the
	// node's Raft host); the service adds the status to its answer.
	SetExpectedVotes func(context.Context, *tandemv1.SetExpectedVotesRequest) (*tandemv1.SetExpectedVotesResponse, error)
	// CredentialsDir is where create and join leave the admin credentials.
	CredentialsDir string
	// ReplicaID is this node's metadata replica ID, 0 while it is in no
	// cluster.
	ReplicaID func() uint64
}

// Services are the admin and peer gRPC services over one Config.
type Services struct {
	cfg Config
	log *slog.Logger
}

// New returns the services of cfg.
func New(cfg Config) *Services { return &Services{cfg: cfg, log: cfg.State.Log} }

// RegisterAdmin registers the admin services (Cluster, Node, Volume, VM,
// HA, Credential, Image) on s, every request checked by internal/validate
// (validate.go).
func (a *Services) RegisterAdmin(s *grpc.Server) {
	registerChecked(s, &tandemv1.Cluster_ServiceDesc, &clusterService{a: a})
	registerChecked(s, &tandemv1.Node_ServiceDesc, &nodeService{a: a})
	registerChecked(s, &tandemv1.Volume_ServiceDesc, &volumeService{a: a})
	registerChecked(s, &tandemv1.VM_ServiceDesc, &vmService{a: a})
	registerChecked(s, &tandemv1.HA_ServiceDesc, &haService{a: a})
	registerChecked(s, &tandemv1.Credential_ServiceDesc, &credentialService{a: a})
	registerChecked(s, &tandemv1.Storage_ServiceDesc, &storageService{a: a})
	registerChecked(s, &tandemv1.Image_ServiceDesc, &imageService{a: a})
	registerChecked(s, &tandemv1.Console_ServiceDesc, &consoleService{a: a})
	registerChecked(s, &tandemv1.GuestAgent_ServiceDesc, &guestAgentService{a: a})
}

// RegisterPeer registers the peer service on s, every request checked by
// internal/validate (validate.go).
func (a *Services) RegisterPeer(s *grpc.Server) {
	registerChecked(s, &tandemv1.Peer_ServiceDesc, &peerService{a: a})
}

// toStatus is the one error mapping of every service answer: a status
// error passes unchanged, a context error keeps the code gRPC gives it, and
// any other error goes through apierr.From (a domain error gets its one
// code and wording, anything else is Internal).
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return status.FromContextError(err).Err()
	}
	return apierr.From(err)
}

// answer returns v, or only the mapped error.
func answer[T any](v T, err error) (T, error) {
	if err != nil {
		var zero T
		return zero, toStatus(err)
	}
	return v, nil
}

func grpcMessage(err error) string { return status.Convert(err).Message() }
