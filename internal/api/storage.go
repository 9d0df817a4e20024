package api

import (
	"context"
	"time"

	"github.com/tandemhci/tandem/internal/volume"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// storageService is the admin API's external storage calls (issue 15),
// served by internal/volume.
type storageService struct {
	tandemv1.UnimplementedStorageServer
	a *Services
}

func (s *storageService) Add(ctx context.Context, req *tandemv1.AddStorageRequest) (*tandemv1.StorageInfo, error) {
	return answer(s.a.cfg.Volumes.AddStorage(ctx, req))
}

func (s *storageService) List(ctx context.Context, _ *tandemv1.ListStorageRequest) (*tandemv1.ListStorageResponse, error) {
	return answer(s.a.cfg.Volumes.ListStorage(ctx))
}

func (s *storageService) Show(ctx context.Context, req *tandemv1.StorageRequest) (*tandemv1.StorageInfo, error) {
	return answer(s.a.cfg.Volumes.ShowStorage(ctx, req.Name))
}

func (s *storageService) Remove(ctx context.Context, req *tandemv1.StorageRequest) (*tandemv1.RemoveStorageResponse, error) {
	return answer(&tandemv1.RemoveStorageResponse{}, s.a.cfg.Volumes.RemoveStorage(ctx, req.Name))
}

func (s *volumeService) Resize(ctx context.Context, req *tandemv1.ResizeVolumeRequest) (*tandemv1.VolumeInfo, error) {
	return answer(s.a.cfg.Volumes.Resize(ctx, req))
}

// VolumeResize runs on an RBD volume's owner (volume.Manager.ResizeHere).
func (s *peerService) VolumeResize(ctx context.Context, req *tandemv1.ResizeVolumeRequest) (*tandemv1.VolumeInfo, error) {
	return onVolumes(s, func(vm *volume.Manager) (*tandemv1.VolumeInfo, error) {
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		return vm.ResizeHere(cctx, req.Name, req.SizeBytes)
	})
}
