package apierr

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/consensus"
)

func TestMetaErrorCodes(t *testing.T) {
	cases := []struct {
		err  error
		code codes.Code
	}{
		{fmt.Errorf("x: %w", consensus.ErrNoQuorum), codes.FailedPrecondition},
		{&consensus.ResultError{Base: consensus.ErrTokenUsed, Msg: "used"}, codes.PermissionDenied},
		{&consensus.ResultError{Base: consensus.ErrTokenInvalid, Msg: "bad"}, codes.PermissionDenied},
		{&consensus.ResultError{Base: consensus.ErrNodeExists, Msg: "dup"}, codes.AlreadyExists},
		{status.Error(codes.Unavailable, "x"), codes.Unavailable},
		{errors.New("boom"), codes.Internal},
	}
	for _, c := range cases {
		if got := status.Code(FromMeta(c.err)); got != c.code {
			t.Errorf("%v: got %v, want %v", c.err, got, c.code)
		}
	}
	if !strings.Contains(status.Convert(FromMeta(consensus.ErrNoQuorum)).Message(), "no quorum") {
		t.Error("no-quorum message must say so")
	}
}
