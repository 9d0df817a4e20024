package daemon

import (
	"context"

	"github.com/tandemhci/tandem/internal/placement"
	"github.com/tandemhci/tandem/internal/vmm"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// vmService is the admin VM API, served by the VM manager (internal/vmm).
type vmService struct {
	tandemv1.UnimplementedVMServer
	d *Daemon
}

func (s *vmService) List(ctx context.Context, _ *tandemv1.ListVMsRequest) (*tandemv1.ListVMsResponse, error) {
	return s.d.vms.List(ctx)
}

func (s *vmService) Show(ctx context.Context, req *tandemv1.VMRequest) (*tandemv1.VMInfo, error) {
	return s.d.vms.Show(ctx, req.Name)
}

func (s *vmService) Create(ctx context.Context, req *tandemv1.CreateVMRequest) (*tandemv1.VMInfo, error) {
	return s.d.vms.Create(ctx, req)
}

func (s *vmService) Start(ctx context.Context, req *tandemv1.VMRequest) (*tandemv1.VMInfo, error) {
	return s.d.vms.Start(ctx, req)
}

func (s *vmService) Stop(ctx context.Context, req *tandemv1.VMRequest) (*tandemv1.VMInfo, error) {
	return s.d.vms.Stop(ctx, req)
}

func (s *vmService) Delete(ctx context.Context, req *tandemv1.VMRequest) (*tandemv1.DeleteVMResponse, error) {
	if err := s.d.vms.Delete(ctx, req); err != nil {
		return nil, err
	}
	return &tandemv1.DeleteVMResponse{}, nil
}

func (s *vmService) Console(req *tandemv1.ConsoleRequest, stream tandemv1.VM_ConsoleServer) error {
	return s.d.vms.Console(stream.Context(), req, stream.Send)
}

func (s *vmService) Migrate(req *tandemv1.MigrateVMRequest, stream tandemv1.VM_MigrateServer) error {
	return s.d.vms.Migrate(stream.Context(), req, stream.Send)
}

// The peer side: the VM calls a node answers for the VMs it runs.

func (s *peerService) ComputeInfo(ctx context.Context, req *tandemv1.ComputeInfoRequest) (*tandemv1.ComputeStatus, error) {
	return s.d.vms.ComputeInfo(ctx, req), nil
}

func (s *peerService) VMStart(ctx context.Context, req *tandemv1.PeerVMRequest) (*tandemv1.VMInfo, error) {
	return s.d.vms.VMStart(ctx, req.Vm)
}

func (s *peerService) VMStop(ctx context.Context, req *tandemv1.PeerVMRequest) (*tandemv1.VMInfo, error) {
	return s.d.vms.VMStop(ctx, req)
}

func (s *peerService) VMState(ctx context.Context, req *tandemv1.PeerVMRequest) (*tandemv1.VMInfo, error) {
	return s.d.vms.VMState(ctx, req.Vm)
}

func (s *peerService) VMUndefine(ctx context.Context, req *tandemv1.PeerVMRequest) (*tandemv1.VMInfo, error) {
	return s.d.vms.VMUndefine(ctx, req)
}

func (s *peerService) VMConsole(req *tandemv1.ConsoleRequest, stream tandemv1.Peer_VMConsoleServer) error {
	return s.d.vms.VMConsole(stream.Context(), req, stream.Send)
}

func (s *peerService) VMMigrate(req *tandemv1.PeerMigrateRequest, stream tandemv1.Peer_VMMigrateServer) error {
	return s.d.vms.VMMigrate(stream.Context(), req, stream.Send)
}

func (s *peerService) VMMigrationStats(ctx context.Context, req *tandemv1.PeerVMRequest) (*tandemv1.MigrateProgress, error) {
	return s.d.vms.VMMigrationStats(ctx, req.Vm)
}

// stateName is a replica state as health reports name it.
func stateName(st tandemv1.ReplicaState) string {
	if r := vmm.ReplicaOf(st); r != placement.None {
		return string(r)
	}
	return "no replica"
}
