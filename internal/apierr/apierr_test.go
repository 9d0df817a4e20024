package apierr

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/blockstore/rbd"
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

// One error, one code, whichever layer wraps it.
func TestVolumeErrorCodes(t *testing.T) {
	cases := []struct {
		err  error
		code codes.Code
	}{
		{fmt.Errorf("promote: %w", consensus.ErrNotPrimary), codes.FailedPrecondition},
		{fmt.Errorf("handover: %w", consensus.ErrStaleEpoch), codes.FailedPrecondition},
		{&consensus.ResultError{Base: consensus.ErrNotUpToDate, Msg: "n2 is Outdated"}, codes.FailedPrecondition},
		{&consensus.ResultError{Base: consensus.ErrBadTransition, Msg: "x"}, codes.FailedPrecondition},
		{&consensus.ResultError{Base: consensus.ErrVolumeExists, Msg: "x"}, codes.AlreadyExists},
		{fmt.Errorf("volume shard: %w", consensus.ErrNoQuorum), codes.FailedPrecondition},
	}
	for _, c := range cases {
		if got := status.Code(From(c.err)); got != c.code {
			t.Errorf("%v: got %v, want %v", c.err, got, c.code)
		}
	}
}

func TestNotPrimaryWording(t *testing.T) {
	err := NotPrimary("n2", "v1", "n1", 3)
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("code %v", status.Code(err))
	}
	want := "node n2 is not the primary of volume v1: n1 is (epoch 3)"
	if got := status.Convert(err).Message(); got != want {
		t.Fatalf("message %q, want %q", got, want)
	}
	if got := status.Convert(NotPrimary("n2", "v1", "", 0)).Message(); !strings.HasSuffix(got, "node n2 is not the primary of volume v1") {
		t.Fatalf("message without a known primary: %q", got)
	}
}

type stater struct{ err error }

func (s stater) LocalState() (*consensus.MetaState, error) { return &consensus.MetaState{}, s.err }

func TestLocalState(t *testing.T) {
	var none LocalStater
	if _, err := LocalState(none); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "not in a cluster") {
		t.Fatalf("no client: %v", err)
	}
	if ms, err := LocalState(stater{}); err != nil || ms == nil {
		t.Fatalf("client: %v %v", ms, err)
	}
	if _, err := LocalState(stater{consensus.ErrNoQuorum}); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "no quorum") {
		t.Fatalf("failing client: %v", err)
	}
}

func TestRBDErrorCodes(t *testing.T) {
	cases := []struct {
		err  error
		code codes.Code
	}{
		{fmt.Errorf("connect: %w", rbd.ErrAuth), codes.PermissionDenied},
		{fmt.Errorf("connect: %w", rbd.ErrUnavailable), codes.Unavailable},
		{fmt.Errorf("pool: %w", rbd.ErrNoPool), codes.NotFound},
		{fmt.Errorf("create: %w", rbd.ErrNoSpace), codes.ResourceExhausted},
		{fmt.Errorf("create: %w", rbd.ErrExists), codes.AlreadyExists},
		{fmt.Errorf("write: %w", rbd.ErrBlocklisted), codes.FailedPrecondition},
		{fmt.Errorf("remove: %w", rbd.ErrBusy), codes.FailedPrecondition},
		{fmt.Errorf("name: %w", rbd.ErrInvalid), codes.InvalidArgument},
		{rbd.ErrNotBuilt, codes.Unimplemented},
	}
	for _, c := range cases {
		st := status.Convert(From(c.err))
		if st.Code() != c.code || st.Message() != c.err.Error() {
			t.Errorf("%v: got %v %q, want %v with the same text", c.err, st.Code(), st.Message(), c.code)
		}
	}
}
