package api

import (
	"context"

	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// imageService is the admin Image API (issue 18), served by the image
// manager (internal/images); ChangeMedia is the VM manager's.
type imageService struct {
	tandemv1.UnimplementedImageServer
	a *Services
}

func (s *imageService) Upload(stream tandemv1.Image_UploadServer) error {
	info, err := s.a.cfg.Images.Upload(stream.Context(), stream.Recv)
	if err != nil {
		return toStatus(err)
	}
	return stream.SendAndClose(info)
}

func (s *imageService) List(ctx context.Context, _ *tandemv1.ListImagesRequest) (*tandemv1.ListImagesResponse, error) {
	return answer(s.a.cfg.Images.List(ctx))
}

func (s *imageService) Delete(ctx context.Context, req *tandemv1.DeleteImageRequest) (*tandemv1.DeleteImageResponse, error) {
	if err := s.a.cfg.Images.Delete(ctx, req.Name); err != nil {
		return nil, toStatus(err)
	}
	return &tandemv1.DeleteImageResponse{}, nil
}

func (s *imageService) ChangeMedia(ctx context.Context, req *tandemv1.ChangeMediaRequest) (*tandemv1.VMInfo, error) {
	return answer(s.a.cfg.VMs.ChangeMedia(ctx, req))
}

// The peer side: copies of images between nodes, and a VM's CD-ROM.

func (s *peerService) ImageRead(req *tandemv1.PeerImageRequest, stream tandemv1.Peer_ImageReadServer) error {
	return toStatus(s.a.cfg.Images.Read(stream.Context(), req.Image, stream.Send))
}

func (s *peerService) ImageFetch(ctx context.Context, req *tandemv1.PeerImageRequest) (*tandemv1.PeerImageResponse, error) {
	p, err := s.a.cfg.Images.Local(ctx, req.Image)
	if err != nil {
		return nil, toStatus(err)
	}
	return &tandemv1.PeerImageResponse{Path: p}, nil
}

func (s *peerService) VMChangeMedia(ctx context.Context, req *tandemv1.PeerChangeMediaRequest) (*tandemv1.VMInfo, error) {
	return answer(s.a.cfg.VMs.VMChangeMedia(ctx, req.Vm, req.Image))
}

func (s *peerService) VMPrepareSeed(ctx context.Context, req *tandemv1.PeerVMRequest) (*tandemv1.PeerNVRAMResponse, error) {
	return answer(s.a.cfg.VMs.VMPrepareSeed(ctx, req.Vm))
}

func (s *peerService) VMPutNVRAM(ctx context.Context, req *tandemv1.PeerNVRAMRequest) (*tandemv1.PeerNVRAMResponse, error) {
	return answer(s.a.cfg.VMs.VMPutNVRAM(ctx, req))
}

func (s *peerService) VMResizeDisk(ctx context.Context, req *tandemv1.PeerResizeDiskRequest) (*tandemv1.VMInfo, error) {
	return answer(s.a.cfg.VMs.VMResizeDisk(ctx, req))
}

func (s *peerService) VMNic(ctx context.Context, req *tandemv1.PeerNicRequest) (*tandemv1.VMInfo, error) {
	return answer(s.a.cfg.VMs.VMNic(ctx, req))
}

func (s *peerService) VMDisk(ctx context.Context, req *tandemv1.PeerDiskRequest) (*tandemv1.VMInfo, error) {
	return answer(s.a.cfg.VMs.VMDisk(ctx, req))
}
