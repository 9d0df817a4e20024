package apierr

import (
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/consensus"
)

// FromMeta maps consensus errors to API status codes. A status error passes
// through unchanged; anything unknown is Internal.
func FromMeta(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, consensus.ErrNoQuorum):
		return status.Error(codes.FailedPrecondition, "no quorum: a majority of voters is not reachable; nothing was changed")
	case errors.Is(err, consensus.ErrTokenInvalid), errors.Is(err, consensus.ErrTokenUsed), errors.Is(err, consensus.ErrTokenExpired):
		return status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, consensus.ErrNodeExists):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, consensus.ErrNodeNotFound), errors.Is(err, consensus.ErrNoSuchVM), errors.Is(err, consensus.ErrNoSuchVolume):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, consensus.ErrVMNameTaken), errors.Is(err, consensus.ErrVolumeNameTaken):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, consensus.ErrBadCommand):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, consensus.ErrNotBootstrapped):
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(codes.Internal, err.Error())
}
