package cluster

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/state"
	"github.com/tandemhci/tandem/internal/version"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// Status is answered locally: when there is no quorum it says so and shows
// the last state this node applied.
func (m *Manager) Status(ctx context.Context) *tandemv1.ClusterStatus {
	self := m.st.Node.Name
	st := &tandemv1.ClusterStatus{AnsweredBy: self, Version: version.String(), Protocol: version.ProtocolLevel()}
	c, inCluster := m.st.Cluster()
	meta := m.st.Meta()
	if !inCluster || meta == nil {
		if s, ok := m.st.StoppedInfo(); ok {
			// Not initialized (nothing of the cluster runs), but named.
			st.ClusterName, st.ClusterId = s.ClusterName, s.ClusterID
			st.Warnings = append(st.Warnings, s.Reason)
			return st
		}
		st.Warnings = append(st.Warnings, "this node is not in a cluster yet")
		return st
	}
	st.Initialized = true
	st.ClusterName, st.ClusterId = c.Name, c.ID
	removal, removed := m.st.Removal.Get()
	if removed {
		st.Warnings = append(st.Warnings, removalWarning(self, m.st.Node.DataDir, removal))
	}

	qctx, cancel := context.WithTimeout(ctx, m.timeout)
	quorumErr := meta.CheckQuorum(qctx)
	cancel()
	st.Quorate = quorumErr == nil

	var ms *consensus.MetaState
	var err error
	if st.Quorate {
		rctx, cancel := context.WithTimeout(ctx, m.timeout)
		ms, err = meta.State(rctx)
		cancel()
	}
	if ms == nil {
		ms, err = meta.LocalState()
	}
	if err != nil {
		// Dragonboat stops a replica once it applies its own removal.
		st.Warnings = append(st.Warnings, fmt.Sprintf("this node's metadata replica is not running (%v): if it was removed from the cluster, stop tandemd, wipe %s and join again", err, m.st.Node.DataDir))
		return st
	}
	st.AppliedIndex = ms.Applied
	st.ClusterVersion = ms.Version()
	voters := map[uint64]bool{}
	if st.Quorate {
		mctx, cancel := context.WithTimeout(ctx, m.timeout)
		if mem, err := meta.Membership(mctx); err == nil {
			for r := range mem.Voters {
				voters[r] = true
			}
			for r := range mem.Witnesses {
				voters[r] = true
			}
		}
		cancel()
	}
	if len(voters) == 0 {
		if mem, err := meta.LocalMembership(); err == nil {
			for r := range mem.Voters {
				voters[r] = true
			}
		}
	}
	leaderID, term, hasLeader := meta.Leader()
	st.Term = term
	st.Nodes = m.NodeInfos(ctx, ms, voters, leaderID, hasLeader && st.Quorate)
	for _, n := range st.Nodes {
		if n.Leader {
			st.Leader = n.Name
		}
		if n.Vote == tandemv1.Vote_VOTE_VOTER && n.State != consensus.NodeRemoved {
			st.Voters++
			if n.Health == tandemv1.Health_HEALTH_ONLINE {
				st.VotesOnline++
			}
		}
	}
	st.Quorum = st.Voters/2 + 1
	if !st.Quorate {
		st.Warnings = append(st.Warnings, fmt.Sprintf("NOT QUORATE: %d of %d votes online, %d needed; changes are refused and this is %s's last known state", st.VotesOnline, st.Voters, st.Quorum, self))
	}
	st.Warnings = append(st.Warnings, membershipWarnings(self, m.st.Node.DataDir, ms, st.Nodes, removed)...)
	st.Advisories = append(st.Advisories, upgradeAdvisories(ms)...)
	from := max(0, len(ms.Audit)-10)
	for _, a := range ms.Audit[from:] {
		st.Audit = append(st.Audit, &tandemv1.AuditEntry{At: timestamppb.New(a.At), Node: a.Node, Action: a.Action, Detail: a.Detail})
	}
	return st
}

// removalWarning is status's line for a node that knows it was removed.
func removalWarning(self, dataDir string, r state.RemovalRecord) string {
	by := "a member"
	if r.By != "" {
		by = r.By
	}
	if r.As != "" {
		by += " (credential " + r.As + ")"
	}
	at := ""
	if !r.At.IsZero() {
		at = " at " + r.At.UTC().Format(time.RFC3339)
	}
	return fmt.Sprintf("this node (%s) was removed from cluster %s by %s%s (told by %s); its volumes are frozen and its VMs stopped for good, its data stays on disk: stop tandemd, wipe %s and join again",
		self, r.ClusterName, by, at, r.ToldBy, dataDir)
}

// membershipWarnings names what an operator must do about membership: this
// node was removed (known tells whether status said so already), or
// probably was, or a node is stuck joining.
func membershipWarnings(self, dataDir string, ms *consensus.MetaState, nodes []*tandemv1.NodeInfo, known bool) []string {
	var out []string
	// A removed node may never apply its own removal (it leaves the Raft
	// group with it); its peers' refusals tell it too.
	removed := false
	if n, ok := ms.Nodes[self]; ok && n.State == consensus.NodeRemoved {
		removed = true
	}
	refusing, others := 0, 0
	for _, n := range nodes {
		removed = removed || strings.Contains(n.HealthDetail, fmt.Sprintf("node %s was removed from the cluster", self))
		if n.Name == self || n.State == consensus.NodeRemoved {
			continue
		}
		others++
		if certRefused(n.HealthDetail) {
			refusing++
		}
	}
	switch {
	case known:
	case removed:
		out = append(out, fmt.Sprintf("this node (%s) was removed from the cluster; stop tandemd, wipe %s and join again", self, dataDir))
	case others > 0 && refusing == others:
		// A guess, so nothing is stopped on it: a member that refuses a
		// removed node's certificate tells it, and that is the proof.
		out = append(out, fmt.Sprintf("every other member refuses this node's certificate: this node (%s) was probably removed from the cluster, or its certificate revoked; nothing is stopped on that guess (the self-fence lease still applies without quorum). Check with 'tandem node list' on a member", self))
	}
	for _, n := range nodes {
		if n.State == consensus.NodeJoining {
			out = append(out, fmt.Sprintf("node %s is still joining; if the join failed, remove it with 'tandem node remove %s' (with --force while it still answers)", n.Name, n.Name))
		}
	}
	return out
}

// certRefused says whether a probe's failure is the peer refusing this
// node's certificate in the TLS handshake.
func certRefused(detail string) bool {
	return strings.Contains(detail, "bad certificate") || strings.Contains(detail, "revoked")
}

// NodeInfos builds the node table, probing every other member.
func (m *Manager) NodeInfos(ctx context.Context, ms *consensus.MetaState, voters map[uint64]bool, leaderID uint64, leaderKnown bool) []*tandemv1.NodeInfo {
	self := m.st.Node.Name
	var addrs []string
	for _, n := range ms.Nodes {
		if n.Name != self && n.State != consensus.NodeRemoved {
			addrs = append(addrs, n.BackendAddr)
		}
	}
	probes := m.probe(ctx, addrs, probeTimeout)
	var out []*tandemv1.NodeInfo
	for _, n := range ms.Nodes {
		ni := &tandemv1.NodeInfo{
			Name: n.Name, ReplicaId: n.ReplicaID, BackendAddr: n.BackendAddr, RaftAddr: n.RaftAddr, AdminAddr: n.AdminAddr,
			State: n.State, JoinedAt: timestamppb.New(n.JoinedAt), Maintenance: n.Maintenance,
			// What the node recorded when it last started, known while it
			// is down; a live answer replaces the version below.
			Version: n.Version, Protocol: n.Protocol, Note: n.Note,
			Leader: leaderKnown && n.ReplicaID == leaderID && n.State != consensus.NodeRemoved,
		}
		ni.Role = tandemv1.NodeRole_NODE_ROLE_DATA
		if n.Role == "witness" {
			ni.Role = tandemv1.NodeRole_NODE_ROLE_WITNESS
		}
		ni.Vote = tandemv1.Vote_VOTE_NON_VOTING
		if voters[n.ReplicaID] || (len(voters) == 0 && n.Vote == "voter") {
			ni.Vote = tandemv1.Vote_VOTE_VOTER
		}
		switch {
		case n.State == consensus.NodeRemoved:
			ni.Vote = tandemv1.Vote_VOTE_UNSPECIFIED
			ni.Health = tandemv1.Health_HEALTH_UNKNOWN
		case n.Name == self:
			ni.Health = tandemv1.Health_HEALTH_ONLINE
			ni.HealthDetail = "this node"
			ni.Version = version.String()
			ni.Protocol = version.ProtocolLevel()
		default:
			p, ok := probes[n.BackendAddr]
			switch {
			case !ok:
				ni.Health = tandemv1.Health_HEALTH_UNKNOWN
			case p.Online:
				ni.Health = tandemv1.Health_HEALTH_ONLINE
				ni.RttUs = p.RTT.Microseconds()
				if p.Version != "" {
					ni.Version = p.Version
				}
			default:
				ni.Health = tandemv1.Health_HEALTH_OFFLINE
				ni.HealthDetail = p.Detail
			}
		}
		out = append(out, ni)
	}
	slices.SortFunc(out, func(a, b *tandemv1.NodeInfo) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// upgradeAdvisories says when the nodes run releases of different protocol
// levels: a rolling upgrade under way (or forgotten), with features gated
// until it ends.
func upgradeAdvisories(ms *consensus.MetaState) []string {
	top := ms.Version()
	for _, n := range ms.Nodes {
		if n.State != consensus.NodeRemoved {
			top = max(top, n.Protocol)
		}
	}
	if top == ms.Version() {
		return nil
	}
	var behind []string
	for _, n := range ms.Behind(top) {
		behind = append(behind, n.Name)
	}
	return []string{fmt.Sprintf("rolling upgrade under way: cluster version %d, some nodes support %d; still on an older release: %s (tandem cluster upgrade-status)",
		ms.Version(), top, strings.Join(behind, ", "))}
}
