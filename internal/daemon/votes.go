package daemon

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/consensus"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

const splitBrainWarning = "EMERGENCY OVERRIDE: this node now forms the cluster alone. The nodes left out must NOT be started with their old data: wipe their data directory and rejoin them with 'tandem cluster join', or two clusters will manage the same VMs and disks."

// setExpectedVotes is the emergency override for a cluster that lost its
// majority for good (as 'pvecm expected 1'). Raft cannot simply lower a
// quorum, so the node rewrites its metadata history: it exports a snapshot
// of what it has applied, makes itself the only member, and restarts its
// replica. Writes newer than its snapshot are lost, which is why the caller
// must confirm and why it is refused while a majority is reachable.
func (d *Daemon) setExpectedVotes(ctx context.Context, req *tandemv1.SetExpectedVotesRequest) (*tandemv1.SetExpectedVotesResponse, error) {
	if !req.Confirm {
		return nil, status.Error(codes.InvalidArgument, "expected-votes needs confirm=true: it can cause split brain if the nodes left out come back")
	}
	if req.Votes != 1 {
		return nil, status.Errorf(codes.InvalidArgument, "expected votes %d: only 1 is supported (run it on the surviving node with the newest data; rejoin the other survivors afterwards with fresh data directories)", req.Votes)
	}
	if err := d.requireQuorum(ctx); err == nil {
		return nil, status.Error(codes.FailedPrecondition, "the cluster is quorate; remove dead nodes with 'tandem node remove' instead of overriding votes")
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
	dir := filepath.Join(d.cfg.DataDir, "recovery", time.Now().UTC().Format("20060102T150405Z"))
	snap, err := d.host.ExportSnapshot(ctx, consensus.MetaShardID, dir)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "%v; nothing was changed", err)
	}
	d.peers.close()
	d.host.Close()
	d.host, d.meta = nil, nil
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
	var removed []string
	for name, n := range ms.Nodes {
		if name != d.cfg.NodeName && n.State != consensus.NodeRemoved {
			removed = append(removed, name)
		}
	}
	slices.Sort(removed)
	pctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for _, name := range removed {
		if _, err := d.meta.SetNodeState(pctx, name, consensus.NodeRemoved); err != nil {
			return nil, status.Errorf(codes.Internal, "override applied, but recording %s as removed failed: %v", name, err)
		}
	}
	detail := fmt.Sprintf("expected votes forced to 1 on %s from metadata index %d; left out: %s", d.cfg.NodeName, ms.Applied, strings.Join(removed, ", "))
	if err := d.meta.Audit(pctx, "expected-votes-override", detail); err != nil {
		return nil, status.Errorf(codes.Internal, "override applied, but the audit entry failed: %v", err)
	}
	d.log.Error(splitBrainWarning, "removed", removed, "snapshot", snap)
	return &tandemv1.SetExpectedVotesResponse{Removed: removed, Warning: splitBrainWarning}, nil
}
