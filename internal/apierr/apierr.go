package apierr

import (
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/blockstore/rbd"
	"github.com/tandemhci/tandem/consensus"
)

// NoQuorumMessage is the one text of a missing quorum, in every API answer.
const NoQuorumMessage = "no quorum: a majority of voters is not reachable; nothing was changed"

// From maps a domain error (of consensus, the volume shards or
// replication) to its API status: one code and one wording per error,
// whichever subsystem returns it. A status error passes through unchanged;
// anything unknown is Internal.
func From(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, consensus.ErrNoQuorum):
		return status.Error(codes.FailedPrecondition, NoQuorumMessage)
	case errors.Is(err, consensus.ErrTokenInvalid), errors.Is(err, consensus.ErrTokenUsed), errors.Is(err, consensus.ErrTokenExpired):
		return status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, consensus.ErrNodeExists), errors.Is(err, consensus.ErrVMNameTaken), errors.Is(err, consensus.ErrVolumeNameTaken),
		errors.Is(err, consensus.ErrVolumeExists), errors.Is(err, consensus.ErrCredentialExists):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, consensus.ErrNodeNotFound), errors.Is(err, consensus.ErrNoSuchVM), errors.Is(err, consensus.ErrNoSuchVolume),
		errors.Is(err, consensus.ErrNoSuchCredential):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, consensus.ErrBadCommand), errors.Is(err, consensus.ErrNotBootstrapped),
		errors.Is(err, consensus.ErrNotPrimary), errors.Is(err, consensus.ErrStaleEpoch),
		errors.Is(err, consensus.ErrNotReplica), errors.Is(err, consensus.ErrNotUpToDate),
		errors.Is(err, consensus.ErrBadTransition), errors.Is(err, consensus.ErrNoVolumeRecord),
		errors.Is(err, consensus.ErrLastAdmin), errors.Is(err, consensus.ErrFeatureGated):
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	if st, ok := fromRBD(err); ok {
		return st
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(codes.Internal, err.Error())
}

// FromMeta is From; the name predates the volume errors.
func FromMeta(err error) error { return From(err) }

// NotPrimary is the one refusal of an operation that needs this node to be
// the volume's primary. primary is who is, "" when unknown.
func NotPrimary(node, volume, primary string, epoch uint64) error {
	if primary == "" {
		return status.Errorf(codes.FailedPrecondition, "node %s is not the primary of volume %s", node, volume)
	}
	return status.Errorf(codes.FailedPrecondition, "node %s is not the primary of volume %s: %s is (epoch %d)", node, volume, primary, epoch)
}

// LocalStater is a metadata client's applied state, without quorum.
type LocalStater interface {
	LocalState() (*consensus.MetaState, error)
}

// LocalState is what meta applied, or the status error an API call gives
// while the node is in no cluster (meta nil) or its replica cannot answer.
func LocalState(meta LocalStater) (*consensus.MetaState, error) {
	if meta == nil {
		return nil, status.Error(codes.FailedPrecondition, "this node is not in a cluster yet")
	}
	ms, err := meta.LocalState()
	if err != nil {
		return nil, From(err)
	}
	return ms, nil
}

// fromRBD maps the Ceph backend's errors (blockstore/rbd): each names a
// cause the operator can act on, and its text says which.
func fromRBD(err error) (error, bool) {
	var code codes.Code
	switch {
	case errors.Is(err, rbd.ErrInvalid):
		code = codes.InvalidArgument
	case errors.Is(err, rbd.ErrUnavailable):
		code = codes.Unavailable
	case errors.Is(err, rbd.ErrAuth):
		code = codes.PermissionDenied
	case errors.Is(err, rbd.ErrNoPool), errors.Is(err, rbd.ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, rbd.ErrExists):
		code = codes.AlreadyExists
	case errors.Is(err, rbd.ErrNoSpace):
		code = codes.ResourceExhausted
	case errors.Is(err, rbd.ErrBlocklisted), errors.Is(err, rbd.ErrLockHeld), errors.Is(err, rbd.ErrBusy):
		code = codes.FailedPrecondition
	case errors.Is(err, rbd.ErrNotBuilt):
		code = codes.Unimplemented
	default:
		return nil, false
	}
	return status.Error(code, err.Error()), true
}
