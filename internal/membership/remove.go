package membership

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/apierr"
	"github.com/tandemhci/tandem/internal/units"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// removeTimeout bounds reading the state and membership, and then the
// changes, of one removal.
const removeTimeout = 10 * time.Second

// removeProbeTimeout bounds the ping that decides whether a node about to
// be removed is still online, and each question about its volumes. It is
// far longer than status's probe: a slow answer taken for "offline" would
// let the removal through. A node that is down refuses the connection at
// once; only a node cut off silently costs the whole wait.
const removeProbeTimeout = 5 * time.Second

// Remove takes a node out of the cluster: it is recorded as removed, then
// dropped from the metadata shard. It is refused for this node itself, for
// the last voter, and while Risks lists anything, unless req.Force. Run
// again on a node recorded as removed but still in the Raft group, it
// finishes the removal without the checks.
func (m *Manager) Remove(ctx context.Context, req *tandemv1.RemoveNodeRequest) (*tandemv1.RemoveNodeResponse, error) {
	if err := m.st.Quorum(ctx); err != nil {
		return nil, err
	}
	meta, err := m.meta()
	if err != nil {
		return nil, err
	}
	if req.Name == m.st.Node.Name {
		return nil, status.Errorf(codes.FailedPrecondition, "node %s cannot remove itself; run the command on another member", req.Name)
	}
	rctx, cancel := context.WithTimeout(ctx, removeTimeout)
	defer cancel()
	ms, err := meta.State(rctx)
	if err != nil {
		return nil, apierr.FromMeta(err)
	}
	n, ok := ms.Nodes[req.Name]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "no node named %q in cluster %q", req.Name, ms.Cluster.Name)
	}
	mem, err := meta.Membership(rctx)
	if err != nil {
		return nil, apierr.FromMeta(err)
	}
	_, voter := mem.Voters[n.ReplicaID]
	_, nonVoting := mem.NonVoting[n.ReplicaID]
	inRaft := voter || nonVoting
	if n.State == consensus.NodeRemoved && !inRaft {
		return nil, status.Errorf(codes.FailedPrecondition, "node %s was already removed", req.Name)
	}
	if voter && len(mem.Voters) == 1 {
		return nil, status.Errorf(codes.FailedPrecondition, "node %s is the last voter", req.Name)
	}
	// The safety checks; a node already recorded as removed passed them
	// (or had them overridden) the first time.
	var overridden []string
	if n.State != consensus.NodeRemoved {
		risks := m.Risks(rctx, ms, n)
		switch {
		case len(risks) > 0 && !req.Force:
			return nil, status.Errorf(codes.FailedPrecondition, "refusing to remove node %s:\n  - %s\n(--force overrides these checks)",
				req.Name, strings.Join(risks, "\n  - "))
		case len(risks) > 0:
			overridden = risks
			m.st.Log.Warn("removing a node with --force, overriding safety checks", "node", req.Name, "overridden", risks)
		}
	}
	// The checks may have taken a while: a fresh deadline for the changes.
	rctx, cancel = context.WithTimeout(ctx, removeTimeout)
	defer cancel()
	// Record the removal first (its certificates are revoked in the same
	// entry), tell the node, then drop it from the Raft group.
	rec := *n
	if n.State != consensus.NodeRemoved {
		if rec, err = meta.SetNodeState(rctx, req.Name, consensus.NodeRemoved); err != nil {
			return nil, apierr.FromMeta(err)
		}
	}
	// Told only now that the removal committed: the notice is proof to the
	// node, which stops for good on it. Its revoked certificate would leave
	// it to guess from refused handshakes.
	notice := m.tellRemoved(ctx, rec)
	if inRaft {
		if err := meta.RemoveReplica(rctx, n.ReplicaID); err != nil {
			return nil, apierr.FromMeta(fmt.Errorf("%s is recorded as removed but is still in the Raft group (run the command again): %w", req.Name, err))
		}
	}
	m.st.Log.Warn("node removed", "node", req.Name, "replica", rec.ReplicaID)
	return &tandemv1.RemoveNodeResponse{Node: &tandemv1.NodeInfo{Name: rec.Name, ReplicaId: rec.ReplicaID, State: rec.State, BackendAddr: rec.BackendAddr},
		Overridden: overridden, Notice: notice}, nil
}

// RemovalNotice is the Peer NodeRemoved request telling node n, recorded
// as removed, that it was removed from cluster (id, name).
func RemovalNotice(clusterID, clusterName string, n consensus.NodeRecord) *tandemv1.PeerNodeRemovedRequest {
	req := &tandemv1.PeerNodeRemovedRequest{Node: n.Name, ClusterId: clusterID, ClusterName: clusterName, RemovedBy: n.RemovedBy, RemovedAs: n.RemovedAs}
	if !n.RemovedAt.IsZero() {
		req.RemovedAt = timestamppb.New(n.RemovedAt)
	}
	return req
}

// tellRemoved tells node n, whose removal committed, that it was removed,
// and says in one line what came of it. A node that does not answer (it is
// down, say) learns when it next contacts a member: every member tells a
// removed node whose certificate it refuses (internal/daemon).
func (m *Manager) tellRemoved(ctx context.Context, n consensus.NodeRecord) string {
	c, ok := m.cluster()
	if m.tell == nil || !ok {
		return ""
	}
	tctx, cancel := context.WithTimeout(ctx, removeProbeTimeout)
	defer cancel()
	resp, err := m.tell(tctx, n, RemovalNotice(c.ID, c.Name, n))
	switch {
	case err != nil:
		m.st.Log.Warn("removed node not told of its removal", "node", n.Name, "addr", n.BackendAddr, "err", err)
		return fmt.Sprintf("node %s could not be told of its removal (%s); it learns of it when it next contacts a member", n.Name, status.Convert(err).Message())
	case !resp.GetFirst():
		return fmt.Sprintf("node %s knew of its removal already", n.Name)
	default:
		return fmt.Sprintf("node %s was told of its removal and stopped for good: %d VMs destroyed, %d primaries frozen (its data stays on disk)",
			n.Name, resp.GetVmsDestroyed(), resp.GetPrimariesFrozen())
	}
}

// Risks lists what removing node n would lose or strand, one line each:
// the node still answering, the VMs placed on it, the volumes it is
// primary of and those where it holds the only UpToDate replica. Volume
// states come from the replicas' own records (as 'volume show' reads
// them); a volume none of whose replicas answers is listed too, since
// nothing then proves the node does not hold its only good copy.
func (m *Manager) Risks(ctx context.Context, ms *consensus.MetaState, n *consensus.NodeRecord) []string {
	var held []string
	for _, name := range slices.Sorted(maps.Keys(ms.Volumes)) {
		if slices.Contains(ms.Volumes[name].Replicas, n.Name) {
			held = append(held, name)
		}
	}
	// Ping the node and ask about every volume at once: with the node
	// down, each question may wait for its timeout.
	var online bool
	infos := make([]*tandemv1.VolumeInfo, len(held))
	var wg sync.WaitGroup
	wg.Go(func() { online = m.online(ctx, n.BackendAddr) })
	for i, name := range held {
		wg.Go(func() {
			if info, err := m.vols.Show(ctx, name, removeProbeTimeout); err == nil {
				infos[i] = info
			}
		})
	}
	wg.Wait()

	var risks []string
	if online {
		what := ""
		if len(held) > 0 {
			what = fmt.Sprintf(" and holds replicas of volume %s", strings.Join(held, ", "))
		}
		risks = append(risks, fmt.Sprintf("node %s is online (it answers at %s)%s; stop tandemd on it first", n.Name, n.BackendAddr, what))
	}
	for _, name := range slices.Sorted(maps.Keys(ms.VMs)) {
		if v := ms.VMs[name]; v.Node == n.Name {
			risks = append(risks, fmt.Sprintf("VM %s is placed on node %s (desired %s); migrate it or delete it first", name, n.Name, v.Desired))
		}
	}
	for i, name := range held {
		e, info := ms.Volumes[name], infos[i]
		if info.GetEpoch() == 0 {
			risks = append(risks, fmt.Sprintf("volume %s has a replica on node %s and no replica answered, so nothing shows another one is UpToDate", name, n.Name))
			continue
		}
		if info.GetPrimary() == n.Name {
			risks = append(risks, fmt.Sprintf("node %s is the primary of volume %s; promote another replica first", n.Name, name))
		}
		var good []string
		for _, r := range info.GetReplicas() {
			if st := r.GetState(); st == tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE || st == tandemv1.ReplicaState_REPLICA_STATE_SYNC_SOURCE {
				good = append(good, r.GetNode())
			}
		}
		if len(good) == 1 && good[0] == n.Name {
			risks = append(risks, fmt.Sprintf("node %s holds the only UpToDate replica of volume %s (%s); its data would be lost", n.Name, name, units.FormatBytes(e.Size)))
		}
	}
	return risks
}

// online pings the node at addr. Not WaitForReady: a peer whose connection
// is already failing counts as offline at once.
func (m *Manager) online(ctx context.Context, addr string) bool {
	c, err := m.st.Peer(addr)
	if err != nil {
		return false
	}
	pctx, cancel := context.WithTimeout(ctx, removeProbeTimeout)
	defer cancel()
	_, err = c.Ping(pctx, &tandemv1.PingRequest{From: m.st.Node.Name})
	return err == nil
}
