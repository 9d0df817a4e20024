package daemon

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/ha"
	"github.com/tandemhci/tandem/internal/pki"
	"github.com/tandemhci/tandem/internal/settings"
	"github.com/tandemhci/tandem/internal/version"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

var configKeyRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

const (
	maxConfigValue  = 4096
	defaultTokenTTL = time.Hour
	maxTokenTTL     = 7 * 24 * time.Hour
	probeTimeout    = 250 * time.Millisecond
)

func grpcMessage(err error) string { return status.Convert(err).Message() }

type clusterService struct {
	tandemv1.UnimplementedClusterServer
	d *Daemon
}

func (s *clusterService) Create(ctx context.Context, req *tandemv1.CreateClusterRequest) (*tandemv1.CreateClusterResponse, error) {
	if err := s.d.create(ctx, req.Name); err != nil {
		return nil, err
	}
	st := s.d.status(ctx)
	return &tandemv1.CreateClusterResponse{Status: st, CredentialsDir: s.d.lay.adminDir()}, nil
}

func (s *clusterService) Join(ctx context.Context, req *tandemv1.JoinClusterRequest) (*tandemv1.JoinClusterResponse, error) {
	id, err := s.d.join(ctx, req.Address, req.Token)
	if err != nil {
		return nil, err
	}
	return &tandemv1.JoinClusterResponse{ClusterName: id.ClusterName, NodeName: id.NodeName, ReplicaId: id.ReplicaID, CredentialsDir: s.d.lay.adminDir()}, nil
}

func (s *clusterService) CreateToken(ctx context.Context, req *tandemv1.CreateTokenRequest) (*tandemv1.CreateTokenResponse, error) {
	ttl := time.Duration(req.TtlSeconds) * time.Second
	if ttl == 0 {
		ttl = defaultTokenTTL
	}
	if ttl > maxTokenTTL {
		return nil, status.Errorf(codes.InvalidArgument, "ttl %s is longer than the maximum of %s", ttl, maxTokenTTL)
	}
	_, meta, m := s.d.cluster()
	if err := s.d.requireQuorum(ctx); err != nil {
		return nil, err
	}
	fp, err := pki.CertFingerprint(m.caCert)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "CA: %v", err)
	}
	tok, err := pki.NewJoinToken(fp)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "token: %v", err)
	}
	v := tok.Verifier()
	exp := time.Now().Add(ttl).UTC()
	if err := meta.AddToken(ctx, consensus.TokenRecord{ID: tok.IDString(), Verifier: hex.EncodeToString(v[:]), ExpiresAt: exp}); err != nil {
		return nil, metaError(err)
	}
	return &tandemv1.CreateTokenResponse{Token: tok.String(), TokenId: tok.IDString(), ExpiresAt: timestamppb.New(exp)}, nil
}

func (s *clusterService) Status(ctx context.Context, _ *tandemv1.StatusRequest) (*tandemv1.ClusterStatus, error) {
	st := s.d.status(ctx)
	if st.Initialized {
		s.d.healthReport(ctx, st)
	}
	return st, nil
}

func (s *clusterService) SetExpectedVotes(ctx context.Context, req *tandemv1.SetExpectedVotesRequest) (*tandemv1.SetExpectedVotesResponse, error) {
	resp, err := s.d.setExpectedVotes(ctx, req)
	if err != nil {
		return nil, err
	}
	resp.Status = s.d.status(ctx)
	return resp, nil
}

func (s *clusterService) GetConfig(ctx context.Context, req *tandemv1.GetConfigRequest) (*tandemv1.ClusterConfig, error) {
	_, meta, _ := s.d.cluster()
	rctx, cancel := context.WithTimeout(ctx, s.d.quorumTimeout())
	defer cancel()
	ms, err := meta.State(rctx)
	if err != nil {
		return nil, metaError(err)
	}
	out := &tandemv1.ClusterConfig{Values: ms.Config}
	if req.GetDefaults() {
		out.Settings = settingsProto(ms.Config)
	}
	return out, nil
}

// settingsOf is the cluster configuration the daemon acts on: the known
// settings with valid values. Anything else (an unknown key or a bad value
// stored by an older version) reads as its default and is logged, once
// per distinct problem.
func (d *Daemon) settingsOf(cfg map[string]string) map[string]string {
	valid, err := settings.Valid(cfg)
	if err != nil {
		d.warnMu.Lock()
		warn := d.warnedSettings != err.Error()
		d.warnedSettings = err.Error()
		d.warnMu.Unlock()
		if warn {
			d.log.Warn("ignoring bad cluster settings, their defaults are in force; fix them with 'tandem cluster config set'", "err", err)
		}
	}
	return valid
}

// settingsProto lists every known setting with the value in force. A
// stored value that does not parse shows as the default, not set.
func settingsProto(cfg map[string]string) []*tandemv1.ConfigSetting {
	var out []*tandemv1.ConfigSetting
	for _, e := range settings.Resolve(cfg) {
		out = append(out, &tandemv1.ConfigSetting{Key: e.Key, Value: e.Value, DefaultValue: e.Default, Set: e.Set, Unit: string(e.Kind), Description: e.Description})
	}
	return out
}

// SetConfig checks every key and value against the settings registry and
// stores values in canonical form ("100M" becomes "100MiB/s"). An empty
// value deletes a key, known or not, so a bad value stored by an older
// version can always be removed.
func (s *clusterService) SetConfig(ctx context.Context, req *tandemv1.SetConfigRequest) (*tandemv1.ClusterConfig, error) {
	if len(req.Values) == 0 {
		return nil, status.Error(codes.InvalidArgument, "no settings given")
	}
	canon := make(map[string]string, len(req.Values))
	var errs []error
	for _, k := range slices.Sorted(maps.Keys(req.Values)) {
		v := req.Values[k]
		if !configKeyRE.MatchString(k) {
			return nil, status.Errorf(codes.InvalidArgument, "setting name %q: use 1-64 lowercase letters, digits, '.', '_' or '-'", k)
		}
		if len(v) > maxConfigValue {
			return nil, status.Errorf(codes.InvalidArgument, "setting %s: value is %d bytes, the limit is %d", k, len(v), maxConfigValue)
		}
		if v == "" {
			canon[k] = ""
			continue
		}
		c, err := settings.Canonical(k, v)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		canon[k] = c
	}
	if err := errors.Join(errs...); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := s.d.requireQuorum(ctx); err != nil {
		return nil, err
	}
	_, meta, _ := s.d.cluster()
	// HA timing must stay coherent as a whole (see package ha). Stored
	// values that no longer parse read as their defaults, so they count as
	// absent here rather than blocking every change.
	if cur, err := meta.LocalState(); err == nil {
		merged := map[string]string{}
		for k, v := range cur.Config {
			if _, err := settings.Canonical(k, v); err == nil {
				merged[k] = v
			}
		}
		for k, v := range canon {
			if v == "" {
				delete(merged, k)
			} else {
				merged[k] = v
			}
		}
		if err := settings.Validate(merged); err != nil {
			return nil, status.Errorf(codes.Internal, "merged settings: %v", err) // cannot happen: both halves were checked
		}
		if _, err := ha.TimingFrom(merged); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "HA timing: %v", err)
		}
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cfg, err := meta.SetConfigResult(pctx, canon)
	if err != nil {
		return nil, metaError(err)
	}
	return &tandemv1.ClusterConfig{Values: cfg}, nil
}

// status is answered locally: when there is no quorum it says so and shows
// the last state this node applied.
func (d *Daemon) status(ctx context.Context) *tandemv1.ClusterStatus {
	id, meta, _ := d.cluster()
	st := &tandemv1.ClusterStatus{AnsweredBy: d.cfg.NodeName, Version: version.String()}
	if id == nil {
		st.Warnings = append(st.Warnings, "this node is not in a cluster yet")
		return st
	}
	st.Initialized = true
	st.ClusterName, st.ClusterId = id.ClusterName, id.ClusterID
	host := meta.Host()

	qctx, cancel := context.WithTimeout(ctx, d.quorumTimeout())
	quorumErr := host.CheckQuorum(qctx, consensus.MetaShardID)
	cancel()
	st.Quorate = quorumErr == nil

	var ms *consensus.MetaState
	var err error
	if st.Quorate {
		rctx, cancel := context.WithTimeout(ctx, d.quorumTimeout())
		ms, err = meta.State(rctx)
		cancel()
	}
	if ms == nil {
		ms, err = meta.LocalState()
	}
	if err != nil {
		// Dragonboat stops a replica once it applies its own removal.
		st.Warnings = append(st.Warnings, fmt.Sprintf("this node's metadata replica is not running (%v): if it was removed from the cluster, stop tandemd, wipe %s and join again", err, d.cfg.DataDir))
		return st
	}
	st.AppliedIndex = ms.Applied
	voters := map[uint64]bool{}
	if st.Quorate {
		mctx, cancel := context.WithTimeout(ctx, d.quorumTimeout())
		if mem, err := host.Membership(mctx, consensus.MetaShardID); err == nil {
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
		if mem, err := host.LocalMembership(consensus.MetaShardID); err == nil {
			for r := range mem.Voters {
				voters[r] = true
			}
		}
	}
	leaderID, term, hasLeader := host.Leader(consensus.MetaShardID)
	st.Term = term
	st.Nodes = d.nodeInfos(ctx, ms, voters, leaderID, hasLeader && st.Quorate)
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
		st.Warnings = append(st.Warnings, fmt.Sprintf("NOT QUORATE: %d of %d votes online, %d needed; changes are refused and this is %s's last known state", st.VotesOnline, st.Voters, st.Quorum, d.cfg.NodeName))
	}
	// A removed node may never apply its own removal (it leaves the Raft
	// group with it); its peers' refusals tell it too.
	removed := false
	if self, ok := ms.Nodes[d.cfg.NodeName]; ok && self.State == consensus.NodeRemoved {
		removed = true
	}
	for _, n := range st.Nodes {
		removed = removed || strings.Contains(n.HealthDetail, fmt.Sprintf("node %s was removed from the cluster", d.cfg.NodeName))
	}
	if removed {
		st.Warnings = append(st.Warnings, fmt.Sprintf("this node (%s) was removed from the cluster; stop tandemd, wipe %s and join again", d.cfg.NodeName, d.cfg.DataDir))
	}
	for _, n := range st.Nodes {
		if n.State == consensus.NodeJoining {
			st.Warnings = append(st.Warnings, fmt.Sprintf("node %s is still joining; if the join failed, remove it with 'tandem node remove %s' (with --force while it still answers)", n.Name, n.Name))
		}
	}
	from := max(0, len(ms.Audit)-10)
	for _, a := range ms.Audit[from:] {
		st.Audit = append(st.Audit, &tandemv1.AuditEntry{At: timestamppb.New(a.At), Node: a.Node, Action: a.Action, Detail: a.Detail})
	}
	return st
}

// nodeInfos builds the node table, probing every other member.
func (d *Daemon) nodeInfos(ctx context.Context, ms *consensus.MetaState, voters map[uint64]bool, leaderID uint64, leaderKnown bool) []*tandemv1.NodeInfo {
	var addrs []string
	for _, n := range ms.Nodes {
		if n.Name != d.cfg.NodeName && n.State != consensus.NodeRemoved {
			addrs = append(addrs, n.BackendAddr)
		}
	}
	d.mu.Lock()
	peers := d.peers
	d.mu.Unlock()
	var probes map[string]probeResult
	if peers != nil {
		probes = peers.probe(ctx, d.cfg.NodeName, addrs, probeTimeout)
	}
	var out []*tandemv1.NodeInfo
	for _, n := range ms.Nodes {
		ni := &tandemv1.NodeInfo{
			Name: n.Name, ReplicaId: n.ReplicaID, BackendAddr: n.BackendAddr, RaftAddr: n.RaftAddr, AdminAddr: n.AdminAddr,
			State: n.State, JoinedAt: timestamppb.New(n.JoinedAt), Maintenance: n.Maintenance,
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
		case n.Name == d.cfg.NodeName:
			ni.Health = tandemv1.Health_HEALTH_ONLINE
			ni.HealthDetail = "this node"
			ni.Version = version.String()
		default:
			p, ok := probes[n.BackendAddr]
			switch {
			case !ok:
				ni.Health = tandemv1.Health_HEALTH_UNKNOWN
			case p.online:
				ni.Health = tandemv1.Health_HEALTH_ONLINE
				ni.RttUs = p.rtt.Microseconds()
				ni.Version = p.version
			default:
				ni.Health = tandemv1.Health_HEALTH_OFFLINE
				ni.HealthDetail = p.detail
			}
		}
		out = append(out, ni)
	}
	slices.SortFunc(out, func(a, b *tandemv1.NodeInfo) int { return strings.Compare(a.Name, b.Name) })
	return out
}

type nodeService struct {
	tandemv1.UnimplementedNodeServer
	d *Daemon
}

func (s *nodeService) List(ctx context.Context, _ *tandemv1.ListNodesRequest) (*tandemv1.ListNodesResponse, error) {
	st := s.d.status(ctx)
	if !st.Initialized {
		return nil, status.Error(codes.FailedPrecondition, "this node is not in a cluster yet")
	}
	// Disks are asked for here only: status must stay cheap.
	var wg sync.WaitGroup
	for _, n := range st.Nodes {
		if n.Health != tandemv1.Health_HEALTH_ONLINE {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := s.d.peerClient(n.BackendAddr)
			if err != nil {
				return
			}
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			if resp, err := c.DiskInfo(cctx, &tandemv1.DiskInfoRequest{}); err == nil {
				n.Disks = resp.Disks
			}
			if cs, err := c.ComputeInfo(cctx, &tandemv1.ComputeInfoRequest{}); err == nil {
				n.Compute = cs
			}
		}()
	}
	wg.Wait()
	return &tandemv1.ListNodesResponse{Nodes: st.Nodes, Quorate: st.Quorate}, nil
}

func (s *nodeService) Remove(ctx context.Context, req *tandemv1.RemoveNodeRequest) (*tandemv1.RemoveNodeResponse, error) {
	return s.d.members.Remove(ctx, req)
}

type peerService struct {
	tandemv1.UnimplementedPeerServer
	d *Daemon
}

func (s *peerService) Join(ctx context.Context, req *tandemv1.PeerJoinRequest) (*tandemv1.PeerJoinResponse, error) {
	resp, err := s.d.members.Admit(ctx, req)
	if err != nil {
		s.d.log.Warn("join refused", "node", req.NodeName, "err", grpcMessage(err))
	}
	return resp, err
}

func (s *peerService) Ping(_ context.Context, req *tandemv1.PingRequest) (*tandemv1.PingResponse, error) {
	if req.LeaderTerm != 0 {
		s.d.ha.LeaderPing(req.From, req.LeaderTerm)
	}
	id, meta, _ := s.d.cluster()
	resp := &tandemv1.PingResponse{Name: s.d.cfg.NodeName, Now: timestamppb.Now(), Version: version.String()}
	if id != nil {
		resp.ReplicaId = id.ReplicaID
		resp.LeaderId, resp.Term, _ = meta.Host().Leader(consensus.MetaShardID)
	}
	return resp, nil
}
