package statetest

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/state"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// NewState is node's State for a test: logs discarded, the quorum check
// passing, no peer answering, the wall clock, events dropped and a fresh
// self-fence and no removal known. A test sets the fields its fakes answer instead.
func NewState(node state.Node) *state.State {
	return &state.State{
		Node:   node,
		Log:    slog.New(slog.DiscardHandler),
		Quorum: func(context.Context) error { return nil },
		Peer: func(addr string) (tandemv1.PeerClient, error) {
			return nil, fmt.Errorf("no peer %s in this test", addr)
		},
		Now:     time.Now,
		Events:  func(context.Context, consensus.Event) {},
		Fence:   &state.SelfFence{},
		Removal: &state.Removal{},
	}
}
