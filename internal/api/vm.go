package api

import (
	"context"

	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// vmService is the admin VM API, served by the VM manager (internal/vmm).
type vmService struct {
	tandemv1.UnimplementedVMServer
	a *Services
}

func (s *vmService) List(ctx context.Context, _ *tandemv1.ListVMsRequest) (*tandemv1.ListVMsResponse, error) {
	return answer(s.a.cfg.VMs.List(ctx))
}

func (s *vmService) Show(ctx context.Context, req *tandemv1.VMRequest) (*tandemv1.VMInfo, error) {
	return answer(s.a.cfg.VMs.Show(ctx, req.Name))
}

func (s *vmService) Create(ctx context.Context, req *tandemv1.CreateVMRequest) (*tandemv1.VMInfo, error) {
	return answer(s.a.cfg.VMs.Create(ctx, req))
}

func (s *vmService) Start(ctx context.Context, req *tandemv1.VMRequest) (*tandemv1.VMInfo, error) {
	return answer(s.a.cfg.VMs.Start(ctx, req))
}

func (s *vmService) Stop(ctx context.Context, req *tandemv1.VMRequest) (*tandemv1.VMInfo, error) {
	return answer(s.a.cfg.VMs.Stop(ctx, req))
}

func (s *vmService) AddNIC(ctx context.Context, req *tandemv1.AddVMNicRequest) (*tandemv1.VMInfo, error) {
	return answer(s.a.cfg.VMs.AddNIC(ctx, req))
}

func (s *vmService) RemoveNIC(ctx context.Context, req *tandemv1.RemoveVMNicRequest) (*tandemv1.VMInfo, error) {
	return answer(s.a.cfg.VMs.RemoveNIC(ctx, req))
}

func (s *vmService) AddDisk(ctx context.Context, req *tandemv1.AddVMDiskRequest) (*tandemv1.VMInfo, error) {
	return answer(s.a.cfg.VMs.AddDisk(ctx, req))
}

func (s *vmService) DetachDisk(ctx context.Context, req *tandemv1.DetachVMDiskRequest) (*tandemv1.VMInfo, error) {
	return answer(s.a.cfg.VMs.DetachDisk(ctx, req))
}

func (s *vmService) Set(ctx context.Context, req *tandemv1.SetVMRequest) (*tandemv1.SetVMResponse, error) {
	return answer(s.a.cfg.VMs.Set(ctx, req))
}

func (s *vmService) ResizeDisk(ctx context.Context, req *tandemv1.ResizeVMDiskRequest) (*tandemv1.VMInfo, error) {
	return answer(s.a.cfg.VMs.ResizeDisk(ctx, req))
}

func (s *vmService) Delete(ctx context.Context, req *tandemv1.VMRequest) (*tandemv1.DeleteVMResponse, error) {
	if err := s.a.cfg.VMs.Delete(ctx, req); err != nil {
		return nil, toStatus(err)
	}
	return &tandemv1.DeleteVMResponse{}, nil
}

func (s *vmService) Console(req *tandemv1.ConsoleRequest, stream tandemv1.VM_ConsoleServer) error {
	return toStatus(s.a.cfg.VMs.Console(stream.Context(), req, stream.Send))
}

func (s *vmService) Migrate(req *tandemv1.MigrateVMRequest, stream tandemv1.VM_MigrateServer) error {
	return toStatus(s.a.cfg.VMs.Migrate(stream.Context(), req, stream.Send))
}

// The peer side: the VM calls a node answers for the VMs it runs.

func (s *peerService) ComputeInfo(ctx context.Context, req *tandemv1.ComputeInfoRequest) (*tandemv1.ComputeStatus, error) {
	return s.a.cfg.VMs.ComputeInfo(ctx, req), nil
}

func (s *peerService) VMStart(ctx context.Context, req *tandemv1.PeerVMRequest) (*tandemv1.VMInfo, error) {
	return answer(s.a.cfg.VMs.VMStart(ctx, req.Vm))
}

func (s *peerService) VMStop(ctx context.Context, req *tandemv1.PeerVMRequest) (*tandemv1.VMInfo, error) {
	return answer(s.a.cfg.VMs.VMStop(ctx, req))
}

func (s *peerService) VMState(ctx context.Context, req *tandemv1.PeerVMRequest) (*tandemv1.VMInfo, error) {
	return answer(s.a.cfg.VMs.VMState(ctx, req.Vm))
}

func (s *peerService) VMUndefine(ctx context.Context, req *tandemv1.PeerVMRequest) (*tandemv1.VMInfo, error) {
	return answer(s.a.cfg.VMs.VMUndefine(ctx, req))
}

func (s *peerService) VMConsole(req *tandemv1.ConsoleRequest, stream tandemv1.Peer_VMConsoleServer) error {
	return toStatus(s.a.cfg.VMs.VMConsole(stream.Context(), req, stream.Send))
}

func (s *peerService) VMMigrate(req *tandemv1.PeerMigrateRequest, stream tandemv1.Peer_VMMigrateServer) error {
	return toStatus(s.a.cfg.VMs.VMMigrate(stream.Context(), req, stream.Send))
}

func (s *peerService) VMMigrationStats(ctx context.Context, req *tandemv1.PeerVMRequest) (*tandemv1.MigrateProgress, error) {
	return answer(s.a.cfg.VMs.VMMigrationStats(ctx, req.Vm))
}
