package daemon

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/version"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
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
	return s.d.clus.CreateToken(ctx, time.Duration(req.TtlSeconds)*time.Second)
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
	return s.d.clus.GetConfig(ctx, req.GetDefaults())
}

// settingsOf is the cluster configuration the daemon acts on (see
// settings.InForce).
func (d *Daemon) settingsOf(cfg map[string]string) map[string]string { return d.st.Settings.Of(cfg) }

func (s *clusterService) SetConfig(ctx context.Context, req *tandemv1.SetConfigRequest) (*tandemv1.ClusterConfig, error) {
	return s.d.clus.SetConfig(ctx, req.Values)
}

// status is the cluster's status as this node sees it.
func (d *Daemon) status(ctx context.Context) *tandemv1.ClusterStatus { return d.clus.Status(ctx) }

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
