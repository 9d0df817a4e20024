package volume

import (
	"errors"
	"strings"
	"syscall"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/internal/apierr"
)

// metaError maps consensus errors to API status codes.
func metaError(err error) error { return apierr.FromMeta(err) }

// grpcMessage is an error's message without the status code's wording.
func grpcMessage(err error) string { return status.Convert(err).Message() }

// openStatus maps a failure to open or create a replica: lack of space is
// the operator's to resolve (ResourceExhausted), not an internal error.
func openStatus(err error) error {
	if errors.Is(err, syscall.ENOSPC) {
		return status.Error(codes.ResourceExhausted, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// joinStatus joins per-node failures into one status with the first one's code.
func joinStatus(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	msgs := make([]string, len(errs))
	for i, err := range errs {
		msgs[i] = grpcMessage(err)
	}
	return status.Error(status.Code(errs[0]), strings.Join(msgs, "; "))
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
