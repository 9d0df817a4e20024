package membership

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/state"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// SplitBrainWarning is logged and returned after an expected-votes override.
const SplitBrainWarning = "EMERGENCY OVERRIDE: this node now forms the cluster alone. The nodes left out must NOT be started with their old data: wipe their data directory and rejoin them with 'tandem cluster join', or two clusters will manage the same VMs and disks."

// overrideRecordTimeout bounds recording the override in the rewritten shard.
const overrideRecordTimeout = 20 * time.Second

// CheckExpectedVotes guards the emergency override for a cluster that lost
// its majority for good (as 'pvecm expected 1'): the caller must confirm,
// only 1 vote is supported, and it is refused while a majority is
// reachable, since writes newer than this node's snapshot are lost. The
// caller (the daemon, which owns the Raft host) then rewrites the metadata
// shard to this node alone and calls RecordOverride.
func (m *Manager) CheckExpectedVotes(ctx context.Context, req *tandemv1.SetExpectedVotesRequest) error {
	if !req.Confirm {
		return status.Error(codes.InvalidArgument, "expected-votes needs confirm=true: it can cause split brain if the nodes left out come back")
	}
	if req.Votes != 1 {
		return status.Errorf(codes.InvalidArgument, "expected votes %d: only 1 is supported (run it on the surviving node with the newest data; rejoin the other survivors afterwards with fresh data directories)", req.Votes)
	}
	if err := m.st.Quorum(ctx); err == nil {
		return status.Error(codes.FailedPrecondition, "the cluster is quorate; remove dead nodes with 'tandem node remove' instead of overriding votes")
	}
	return nil
}

// RecordOverride runs after the metadata shard was rewritten to this node
// alone: through meta, the restarted client, it records every other node of
// before (the state exported for the rewrite) as removed, in name order,
// and audits the override. It returns the nodes left out.
func (m *Manager) RecordOverride(ctx context.Context, meta state.Meta, before *consensus.MetaState) ([]string, error) {
	self := m.st.Node.Name
	var removed []string
	for name, n := range before.Nodes {
		if name != self && n.State != consensus.NodeRemoved {
			removed = append(removed, name)
		}
	}
	slices.Sort(removed)
	pctx, cancel := context.WithTimeout(ctx, overrideRecordTimeout)
	defer cancel()
	for _, name := range removed {
		if _, err := meta.SetNodeState(pctx, name, consensus.NodeRemoved); err != nil {
			return nil, status.Errorf(codes.Internal, "override applied, but recording %s as removed failed: %v", name, err)
		}
	}
	detail := fmt.Sprintf("expected votes forced to 1 on %s from metadata index %d; left out: %s", self, before.Applied, strings.Join(removed, ", "))
	if err := meta.Audit(pctx, "expected-votes-override", detail); err != nil {
		return nil, status.Errorf(codes.Internal, "override applied, but the audit entry failed: %v", err)
	}
	return removed, nil
}
