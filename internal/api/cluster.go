package api

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// clusterService is the admin cluster API: create and join are
// internal/membership's, status, configuration, tokens and audit
// internal/cluster's.
type clusterService struct {
	tandemv1.UnimplementedClusterServer
	a *Services
}

func (s *clusterService) Create(ctx context.Context, req *tandemv1.CreateClusterRequest) (*tandemv1.CreateClusterResponse, error) {
	id, err := s.a.cfg.Members.Create(ctx, req.Name)
	if err != nil {
		return nil, toStatus(err)
	}
	s.a.log.Info("cluster created", "cluster", req.Name, "id", id.ClusterID, "credentials", s.a.cfg.Node.CredentialsDir)
	st := s.a.cfg.Cluster.Status(ctx)
	return &tandemv1.CreateClusterResponse{Status: st, CredentialsDir: s.a.cfg.Node.CredentialsDir}, nil
}

func (s *clusterService) Join(ctx context.Context, req *tandemv1.JoinClusterRequest) (*tandemv1.JoinClusterResponse, error) {
	join := s.a.cfg.Members.Join
	if req.Rejoin {
		join = s.a.cfg.Members.Rejoin
	}
	id, err := join(ctx, req.Address, req.Token)
	if err != nil {
		return nil, toStatus(err)
	}
	return &tandemv1.JoinClusterResponse{ClusterName: id.ClusterName, NodeName: id.NodeName, ReplicaId: id.ReplicaID, CredentialsDir: s.a.cfg.Node.CredentialsDir}, nil
}

func (s *clusterService) CreateToken(ctx context.Context, req *tandemv1.CreateTokenRequest) (*tandemv1.CreateTokenResponse, error) {
	return answer(s.a.cfg.Cluster.CreateToken(ctx, time.Duration(req.TtlSeconds)*time.Second))
}

func (s *clusterService) Status(ctx context.Context, _ *tandemv1.StatusRequest) (*tandemv1.ClusterStatus, error) {
	st := s.a.cfg.Cluster.Status(ctx)
	if st.Initialized {
		s.a.cfg.Cluster.HealthReport(ctx, st)
	}
	return st, nil
}

func (s *clusterService) SetExpectedVotes(ctx context.Context, req *tandemv1.SetExpectedVotesRequest) (*tandemv1.SetExpectedVotesResponse, error) {
	resp, err := s.a.cfg.Node.SetExpectedVotes(ctx, req)
	if err != nil {
		return nil, toStatus(err)
	}
	resp.Status = s.a.cfg.Cluster.Status(ctx)
	return resp, nil
}

func (s *clusterService) GetConfig(ctx context.Context, req *tandemv1.GetConfigRequest) (*tandemv1.ClusterConfig, error) {
	return answer(s.a.cfg.Cluster.GetConfig(ctx, req.GetDefaults()))
}

func (s *clusterService) SetConfig(ctx context.Context, req *tandemv1.SetConfigRequest) (*tandemv1.ClusterConfig, error) {
	return answer(s.a.cfg.Cluster.SetConfig(ctx, req.Values))
}

func (s *clusterService) Audit(_ context.Context, req *tandemv1.AuditRequest) (*tandemv1.AuditResponse, error) {
	return answer(s.a.cfg.Cluster.Audit(req))
}

func (s *clusterService) UpgradeStatus(ctx context.Context, _ *tandemv1.UpgradeStatusRequest) (*tandemv1.UpgradeStatusResponse, error) {
	return answer(s.a.cfg.Cluster.UpgradeStatus(ctx))
}

// nodeService is the admin node API: removal is internal/membership's,
// fencing internal/recovery's, maintenance internal/vmm's.
type nodeService struct {
	tandemv1.UnimplementedNodeServer
	a *Services
}

func (s *nodeService) List(ctx context.Context, _ *tandemv1.ListNodesRequest) (*tandemv1.ListNodesResponse, error) {
	st := s.a.cfg.Cluster.Status(ctx)
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
			c, err := s.a.cfg.State.Peer(n.BackendAddr)
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

// SetNote is the gated feature node-notes (internal/cluster).
func (s *nodeService) SetNote(ctx context.Context, req *tandemv1.SetNodeNoteRequest) (*tandemv1.NodeInfo, error) {
	return answer(s.a.cfg.Cluster.SetNote(ctx, req.Name, req.Note))
}

func (s *nodeService) Remove(ctx context.Context, req *tandemv1.RemoveNodeRequest) (*tandemv1.RemoveNodeResponse, error) {
	return answer(s.a.cfg.Members.Remove(ctx, req))
}

// FenceConfig records a node's fencing agents; internal/recovery checks them.
func (s *nodeService) FenceConfig(ctx context.Context, req *tandemv1.FenceConfigRequest) (*tandemv1.FenceConfigResponse, error) {
	return answer(s.a.cfg.HA.FenceConfig(ctx, req))
}

// Fence runs the node's agents now, or records an operator's word that
// the node is off (which lets a waiting recovery proceed).
func (s *nodeService) Fence(ctx context.Context, req *tandemv1.FenceNodeRequest) (*tandemv1.FenceNodeResponse, error) {
	return answer(s.a.cfg.HA.Fence(ctx, req))
}

// Maintenance is served by the VM manager (internal/vmm): the mode is
// committed first, then the node is evacuated or failed back.
func (s *nodeService) Maintenance(req *tandemv1.NodeMaintenanceRequest, stream tandemv1.Node_MaintenanceServer) error {
	return toStatus(s.a.cfg.VMs.Maintenance(stream.Context(), req, stream.Send))
}

// haService is the admin HA API; internal/recovery holds its logic.
type haService struct {
	tandemv1.UnimplementedHAServer
	a *Services
}

func (s *haService) Status(ctx context.Context, _ *tandemv1.HAStatusRequest) (*tandemv1.HAStatusResponse, error) {
	return answer(s.a.cfg.HA.Status(ctx))
}

func (s *haService) Arm(ctx context.Context, req *tandemv1.HAArmRequest) (*tandemv1.HAStatusResponse, error) {
	return answer(s.a.cfg.HA.Arm(ctx, req.Armed))
}

func (s *haService) Events(req *tandemv1.EventsRequest, stream tandemv1.HA_EventsServer) error {
	return toStatus(s.a.cfg.HA.Events(stream.Context(), req, stream.Send))
}

func (s *clusterService) RotateCA(req *tandemv1.RotateCARequest, stream tandemv1.Cluster_RotateCAServer) error {
	fp, err := s.a.cfg.Members.RotateCA(stream.Context(), req.Force, func(step string) {
		_ = stream.Send(&tandemv1.RotateCAProgress{Step: step})
	})
	if err != nil {
		return toStatus(err)
	}
	return stream.Send(&tandemv1.RotateCAProgress{Step: "done: the old CA is trusted nowhere", NewCaFingerprint: fp})
}
