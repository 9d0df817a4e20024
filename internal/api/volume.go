package api

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/internal/volume"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// volumeService is the admin API's volume calls, served by internal/volume.
type volumeService struct {
	tandemv1.UnimplementedVolumeServer
	a *Services
}

func (s *volumeService) Create(ctx context.Context, req *tandemv1.CreateVolumeRequest) (*tandemv1.VolumeInfo, error) {
	return answer(s.a.cfg.Volumes.Create(ctx, req))
}

func (s *volumeService) List(ctx context.Context, req *tandemv1.ListVolumesRequest) (*tandemv1.ListVolumesResponse, error) {
	return answer(s.a.cfg.Volumes.List(ctx, req))
}

func (s *volumeService) Show(ctx context.Context, req *tandemv1.ShowVolumeRequest) (*tandemv1.VolumeInfo, error) {
	return answer(s.a.cfg.Volumes.Show(ctx, req.Name, 3*time.Second))
}

func (s *volumeService) Delete(ctx context.Context, req *tandemv1.DeleteVolumeRequest) (*tandemv1.DeleteVolumeResponse, error) {
	return answer(s.a.cfg.Volumes.Delete(ctx, req))
}

func (s *volumeService) Promote(ctx context.Context, req *tandemv1.PromoteVolumeRequest) (*tandemv1.VolumeInfo, error) {
	return answer(s.a.cfg.Volumes.Promote(ctx, req))
}

func (s *volumeService) Resync(ctx context.Context, req *tandemv1.ResyncVolumeRequest) (*tandemv1.VolumeInfo, error) {
	return answer(s.a.cfg.Volumes.Resync(ctx, req))
}

func (s *volumeService) Verify(ctx context.Context, req *tandemv1.VerifyVolumeRequest) (*tandemv1.VerifyVolumeResponse, error) {
	return answer(s.a.cfg.Volumes.Verify(ctx, req))
}

// Peer side of volume management.

// volumes is the volume manager, or the error a peer call gets while the
// node is in no cluster.
func (s *peerService) volumes() (*volume.Manager, error) {
	if s.a.cfg.Volumes != nil && s.a.cfg.Node.ReplicaID() != 0 {
		return s.a.cfg.Volumes, nil
	}
	return nil, status.Error(codes.FailedPrecondition, "volumes are not running on this node")
}

func (s *peerService) VolumeDiscard(ctx context.Context, req *tandemv1.PeerVolumeStatusRequest) (*tandemv1.PeerVolumeCloseResponse, error) {
	vm, err := s.volumes()
	if err != nil {
		return nil, err
	}
	if err := vm.DiscardReplica(ctx, req.Name); err != nil {
		return nil, toStatus(err)
	}
	return &tandemv1.PeerVolumeCloseResponse{}, nil
}

func (s *peerService) VolumeDiscardPeer(ctx context.Context, req *tandemv1.PromoteVolumeRequest) (*tandemv1.VolumeInfo, error) {
	vm, err := s.volumes()
	if err != nil {
		return nil, err
	}
	return answer(vm.DiscardPeer(ctx, req.Name, req.Node))
}

func (s *peerService) DiskInfo(_ context.Context, _ *tandemv1.DiskInfoRequest) (*tandemv1.DiskInfoResponse, error) {
	vm, err := s.volumes()
	if err != nil {
		return nil, err
	}
	return answer(vm.DiskInfo())
}

func (s *peerService) VolumeOpen(ctx context.Context, req *tandemv1.PeerVolumeOpenRequest) (*tandemv1.PeerVolumeOpenResponse, error) {
	vm, err := s.volumes()
	if err != nil {
		return nil, err
	}
	if err := vm.Open(ctx, req.Volume, req.Create); err != nil {
		return nil, toStatus(err)
	}
	return &tandemv1.PeerVolumeOpenResponse{}, nil
}

func (s *peerService) VolumeInit(ctx context.Context, req *tandemv1.PeerVolumeInitRequest) (*tandemv1.PeerVolumeInitResponse, error) {
	vm, err := s.volumes()
	if err != nil {
		return nil, err
	}
	if err := vm.Init(ctx, req.Volume); err != nil {
		return nil, toStatus(err)
	}
	return &tandemv1.PeerVolumeInitResponse{}, nil
}

func (s *peerService) VolumeClose(_ context.Context, req *tandemv1.PeerVolumeCloseRequest) (*tandemv1.PeerVolumeCloseResponse, error) {
	vm, err := s.volumes()
	if err != nil {
		return nil, err
	}
	if err := vm.Close(req.Name, req.Destroy); err != nil {
		return nil, toStatus(err)
	}
	return &tandemv1.PeerVolumeCloseResponse{}, nil
}

func (s *peerService) VolumeStatus(_ context.Context, req *tandemv1.PeerVolumeStatusRequest) (*tandemv1.VolumeInfo, error) {
	vm, err := s.volumes()
	if err != nil {
		return nil, err
	}
	return answer(vm.Status(req.Name))
}

func (s *peerService) VolumePromote(ctx context.Context, req *tandemv1.PromoteVolumeRequest) (*tandemv1.VolumeInfo, error) {
	vm, err := s.volumes()
	if err != nil {
		return nil, err
	}
	return answer(vm.PromoteHere(ctx, req.Name))
}

// VolumeHandover runs on the primary (volume.Manager.Handover).
func (s *peerService) VolumeHandover(ctx context.Context, req *tandemv1.PromoteVolumeRequest) (*tandemv1.VolumeInfo, error) {
	vm, err := s.volumes()
	if err != nil {
		return nil, err
	}
	if err := vm.Handover(ctx, req.Name, req.Node); err != nil {
		return nil, toStatus(err)
	}
	return answer(vm.Info(req.Name))
}

// VolumeChecksum returns per-block checksums of this node's replica.
func (s *peerService) VolumeChecksum(ctx context.Context, req *tandemv1.VolumeChecksumRequest) (*tandemv1.VolumeChecksumResponse, error) {
	vm, err := s.volumes()
	if err != nil {
		return nil, err
	}
	return answer(vm.Checksum(ctx, req))
}

// VolumeVerify runs the online verify on the primary.
func (s *peerService) VolumeVerify(ctx context.Context, req *tandemv1.VerifyVolumeRequest) (*tandemv1.VerifyVolumeResponse, error) {
	vm, err := s.volumes()
	if err != nil {
		return nil, err
	}
	return answer(vm.VerifyHere(ctx, req))
}
