package statetest

import (
	"context"
	"log/slog"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/state"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// NewState is node's State for a test: logs discarded, the quorum check
// passing, no peer answering, the wall clock, events dropped and a fresh
// self-fence. A test sets the fields its fakes answer instead.
func NewState(node state.Node) *state.State {
	return &state.State{
		Node:   node,
		Log:    slog.New(slog.DiscardHandler),
		Quorum: func(context.Context) error { return nil },
		Peer: func(addr string) (tandemv1.PeerClient, error) {
			return nil, status.Errorf(codes.Unavailable, "no peer %s in this test", addr)
		},
		Now:    time.Now,
		Events: func(context.Context, consensus.Event) {},
		Fence:  &state.SelfFence{},
	}
}

// Quorum is a quorum check that passes while *quorate and otherwise fails
// as the real one does, with FailedPrecondition.
func Quorum(quorate *bool) func(context.Context) error {
	return func(context.Context) error {
		if !*quorate {
			return status.Error(codes.FailedPrecondition, "no quorum: a majority of voters is not reachable; nothing was changed")
		}
		return nil
	}
}
