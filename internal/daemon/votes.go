package daemon

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// setExpectedVotes is the emergency override for a cluster that lost its
// majority for good.
func (d *Daemon) setExpectedVotes(ctx context.Context, req *tandemv1.SetExpectedVotesRequest) (*tandemv1.SetExpectedVotesResponse, error) {
	if !req.Confirm {
		return nil, status.Error(codes.InvalidArgument, "expected-votes needs confirm=true: it can cause split brain if the nodes left out come back")
	}
	if req.Votes == 0 {
		return nil, status.Error(codes.InvalidArgument, "votes must be at least 1")
	}
	if err := d.requireQuorum(ctx); err == nil {
		return nil, status.Error(codes.FailedPrecondition, "the cluster is quorate; remove dead nodes with 'tandem node remove' instead of overriding votes")
	}
	return nil, status.Error(codes.Unimplemented, "expected-votes override is not implemented yet")
}
