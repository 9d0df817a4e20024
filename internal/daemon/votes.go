package daemon

import (
	"context"
	"path/filepath"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/membership"
	"github.com/tandemhci/tandem/internal/state"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// setExpectedVotes is the emergency override for a cluster that lost its
// majority for good; membership guards and records it. Raft cannot simply
// lower a quorum, so here the node rewrites its metadata history: it
// exports a snapshot of what it has applied, makes itself the only member,
// and restarts its replica. d.mu is held throughout, so no one uses the
// Raft host while it is replaced.
func (d *Daemon) setExpectedVotes(ctx context.Context, req *tandemv1.SetExpectedVotesRequest) (*tandemv1.SetExpectedVotesResponse, error) {
	if err := d.members.CheckExpectedVotes(ctx, req); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.id == nil {
		return nil, status.Error(codes.FailedPrecondition, "this node is not in a cluster")
	}
	ms, err := d.meta.LocalState()
	if err != nil {
		return nil, status.Errorf(codes.Internal, "local metadata: %v", err)
	}
	d.log.Error("EXPECTED-VOTES OVERRIDE requested: rewriting metadata membership to this node alone", "node", d.cfg.NodeName, "applied", ms.Applied)
	dir := filepath.Join(d.cfg.DataDir, "recovery", d.st.Now().UTC().Format("20060102T150405Z"))
	snap, err := d.host.ExportSnapshot(ctx, consensus.MetaShardID, dir)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "%v; nothing was changed", err)
	}
	d.peers.Close()
	d.host.Close()
	d.host, d.meta = nil, nil
	d.hs.meta.Store(nil)
	self := map[uint64]string{d.id.ReplicaID: d.cfg.RaftAddr}
	if err := consensus.ForceMembership(d.hostConfig(), snap, self, d.id.ReplicaID); err != nil {
		// The old data is intact when the import fails before writing.
		if rerr := d.startClusterLocked(ctx, nil, false); rerr != nil {
			d.log.Error("restarting raft after a failed override", "err", rerr)
		}
		return nil, status.Errorf(codes.Internal, "override failed: %v", err)
	}
	if err := d.startClusterLocked(ctx, nil, false); err != nil {
		return nil, status.Errorf(codes.Internal, "restart raft after override: %v", err)
	}
	removed, err := d.members.RecordOverride(ctx, state.MetaOf(d.meta), ms)
	if err != nil {
		return nil, err
	}
	d.log.Error(membership.SplitBrainWarning, "removed", removed, "snapshot", snap)
	return &tandemv1.SetExpectedVotesResponse{Removed: removed, Warning: membership.SplitBrainWarning}, nil
}
