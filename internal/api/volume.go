package api

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/consensus"
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

func (s *volumeService) Set(ctx context.Context, req *tandemv1.SetVolumeRequest) (*tandemv1.VolumeInfo, error) {
	return answer(s.a.cfg.Volumes.Set(ctx, req))
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

// onVolumes answers a peer call with do on the volume manager, or with the
// error a peer call gets while the node is in no cluster.
func onVolumes[T any](s *peerService, do func(*volume.Manager) (T, error)) (T, error) {
	vm, err := s.volumes()
	if err != nil {
		var zero T
		return zero, err
	}
	return answer(do(vm))
}

func (s *peerService) VolumeDiscard(ctx context.Context, req *tandemv1.PeerVolumeStatusRequest) (*tandemv1.PeerVolumeCloseResponse, error) {
	return onVolumes(s, func(vm *volume.Manager) (*tandemv1.PeerVolumeCloseResponse, error) {
		return &tandemv1.PeerVolumeCloseResponse{}, vm.DiscardReplica(ctx, req.Name)
	})
}

func (s *peerService) VolumeDiscardPeer(ctx context.Context, req *tandemv1.PromoteVolumeRequest) (*tandemv1.VolumeInfo, error) {
	return onVolumes(s, func(vm *volume.Manager) (*tandemv1.VolumeInfo, error) {
		return vm.DiscardPeer(ctx, req.Name, req.Node)
	})
}

func (s *peerService) DiskInfo(_ context.Context, _ *tandemv1.DiskInfoRequest) (*tandemv1.DiskInfoResponse, error) {
	return onVolumes(s, func(vm *volume.Manager) (*tandemv1.DiskInfoResponse, error) {
		return vm.DiskInfo()
	})
}

func (s *peerService) VolumeOpen(ctx context.Context, req *tandemv1.PeerVolumeOpenRequest) (*tandemv1.PeerVolumeOpenResponse, error) {
	return onVolumes(s, func(vm *volume.Manager) (*tandemv1.PeerVolumeOpenResponse, error) {
		return &tandemv1.PeerVolumeOpenResponse{}, vm.Open(ctx, req.Volume, req.Create)
	})
}

func (s *peerService) VolumeInit(ctx context.Context, req *tandemv1.PeerVolumeInitRequest) (*tandemv1.PeerVolumeInitResponse, error) {
	return onVolumes(s, func(vm *volume.Manager) (*tandemv1.PeerVolumeInitResponse, error) {
		return &tandemv1.PeerVolumeInitResponse{}, vm.Init(ctx, req.Volume)
	})
}

func (s *peerService) VolumeClose(_ context.Context, req *tandemv1.PeerVolumeCloseRequest) (*tandemv1.PeerVolumeCloseResponse, error) {
	return onVolumes(s, func(vm *volume.Manager) (*tandemv1.PeerVolumeCloseResponse, error) {
		return &tandemv1.PeerVolumeCloseResponse{}, vm.Close(req.Name, req.Destroy)
	})
}

func (s *peerService) VolumeStatus(_ context.Context, req *tandemv1.PeerVolumeStatusRequest) (*tandemv1.VolumeInfo, error) {
	return onVolumes(s, func(vm *volume.Manager) (*tandemv1.VolumeInfo, error) {
		return vm.Status(req.Name)
	})
}

func (s *peerService) VolumePromote(ctx context.Context, req *tandemv1.PromoteVolumeRequest) (*tandemv1.VolumeInfo, error) {
	return onVolumes(s, func(vm *volume.Manager) (*tandemv1.VolumeInfo, error) {
		return vm.PromoteHere(ctx, req.Name, req.Reason)
	})
}

// VolumeHandover runs on the primary (volume.Manager.Handover).
func (s *peerService) VolumeHandover(ctx context.Context, req *tandemv1.PromoteVolumeRequest) (*tandemv1.VolumeInfo, error) {
	return onVolumes(s, func(vm *volume.Manager) (*tandemv1.VolumeInfo, error) {
		if err := vm.Handover(ctx, req.Name, req.Node); err != nil {
			return nil, err
		}
		return vm.Info(req.Name)
	})
}

// VolumeChecksum returns per-block checksums of this node's replica.
func (s *peerService) VolumeChecksum(ctx context.Context, req *tandemv1.VolumeChecksumRequest) (*tandemv1.VolumeChecksumResponse, error) {
	return onVolumes(s, func(vm *volume.Manager) (*tandemv1.VolumeChecksumResponse, error) {
		return vm.Checksum(ctx, req)
	})
}

// VolumeVerify runs the online verify on the primary.
func (s *peerService) VolumeVerify(ctx context.Context, req *tandemv1.VerifyVolumeRequest) (*tandemv1.VerifyVolumeResponse, error) {
	return onVolumes(s, func(vm *volume.Manager) (*tandemv1.VerifyVolumeResponse, error) {
		return vm.VerifyHere(ctx, req)
	})
}

func (s *volumeService) IssueExportCert(ctx context.Context, req *tandemv1.IssueExportCertRequest) (*tandemv1.IssueExportCertResponse, error) {
	return answer(s.a.cfg.Volumes.IssueExportCert(ctx, req, caller(ctx)))
}

func (s *volumeService) ListExportCerts(ctx context.Context, _ *tandemv1.ListExportCertsRequest) (*tandemv1.ListExportCertsResponse, error) {
	return answer(s.a.cfg.Volumes.ListExportCerts(ctx))
}

func (s *volumeService) RevokeExportCert(ctx context.Context, req *tandemv1.RevokeExportCertRequest) (*tandemv1.ExportCert, error) {
	return answer(s.a.cfg.Volumes.RevokeExportCert(ctx, req.Name, caller(ctx)))
}

// caller names an admin call's client for the records it leaves: the API
// credential the call was authorized as, else its client certificate on
// the TCP admin API, else the root-only socket.
func caller(ctx context.Context) string {
	if name := consensus.ActorFrom(ctx); name != "" {
		return "credential " + name
	}
	if name, ou, ok := peerCert(ctx); ok {
		return ou + " certificate " + name
	}
	return "admin socket"
}
