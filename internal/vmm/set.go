package vmm

import (
	"context"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/apierr"
	"github.com/tandemhci/tandem/internal/settings"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// Set changes a VM's vCPUs, memory and CPU model ('tandem vm set'). The
// values are checked as a create's are (bounds, what the nodes offer, a
// CPU model every node's libvirt knows) before anything changes; the record changes at once, and QEMU gets the new
// values when the VM next starts: a stopped VM at its start, a running
// one when it restarts (stop and start, or an HA restart). A live
// migration keeps the running values, since the destination runs the
// source's definition.
func (m *Manager) Set(ctx context.Context, req *tandemv1.SetVMRequest) (*tandemv1.SetVMResponse, error) {
	if req.Vcpus == nil && req.MemoryMib == nil && req.CpuModel == nil {
		return nil, status.Error(codes.InvalidArgument, "nothing to change: give --vcpus, --memory and/or --cpu-model")
	}
	var model *string
	if req.CpuModel != nil {
		mdl, err := cpuModelArg(*req.CpuModel)
		if err != nil {
			return nil, err
		}
		model = &mdl
	}
	if req.Vcpus != nil && (*req.Vcpus < 1 || *req.Vcpus > consensus.MaxVMVCPUs) {
		return nil, status.Errorf(codes.InvalidArgument, "vcpus %d: use 1 to %d", *req.Vcpus, consensus.MaxVMVCPUs)
	}
	if req.MemoryMib != nil && *req.MemoryMib < consensus.MinVMMemoryMiB {
		return nil, status.Errorf(codes.InvalidArgument, "memory %d MiB: at least %d MiB", *req.MemoryMib, consensus.MinVMMemoryMiB)
	}
	ms, meta, v, err := m.freshVM(ctx, req.Name)
	if err != nil {
		return nil, err
	}
	want := consensus.VMSpecCmd{VM: v.Name, VCPUs: v.Spec.VCPUs, MemoryMiB: v.Spec.MemoryMiB}
	if req.Vcpus != nil {
		want.VCPUs = int(*req.Vcpus)
	}
	if req.MemoryMib != nil {
		want.MemoryMiB = int(*req.MemoryMib)
	}
	want.CPUModel = model
	ask := &tandemv1.ComputeInfoRequest{}
	if model != nil && *model != "" {
		ask.CpuModels = []string{*model}
	}
	if _, err := judgeSpec(&tandemv1.CreateVMRequest{Vcpus: uint32(want.VCPUs), MemoryMib: uint32(want.MemoryMiB)},
		m.askCompute(ctx, ms, dataMembers(ms, ""), ask)); err != nil {
		return nil, err
	}
	nv, err := meta.SetVMSpec(ctx, want)
	if err != nil {
		return nil, apierr.From(err)
	}
	var changes []string
	if nv.Spec.VCPUs != v.Spec.VCPUs {
		changes = append(changes, fmt.Sprintf("vcpus %d -> %d", v.Spec.VCPUs, nv.Spec.VCPUs))
	}
	if nv.Spec.MemoryMiB != v.Spec.MemoryMiB {
		changes = append(changes, fmt.Sprintf("memory %d -> %d MiB", v.Spec.MemoryMiB, nv.Spec.MemoryMiB))
	}
	if nv.Spec.CPUModel != v.Spec.CPUModel {
		def := clusterCPUModel(ms)
		name := func(s string) string {
			if s == "" {
				return "default (the cluster's, now " + def + ")"
			}
			return s
		}
		changes = append(changes, fmt.Sprintf("cpu model %s -> %s", name(v.Spec.CPUModel), name(nv.Spec.CPUModel)))
	}
	ms = ms.Clone()
	ms.VMs[nv.Name] = nv
	info := m.live(ctx, ms, nv, 3*time.Second)
	applies := "at the next start"
	if info.State == "running" || info.State == "paused" {
		applies = "when the VM restarts (vm stop and vm start, or an HA restart; a live migration keeps the running values)"
	}
	if len(changes) > 0 {
		m.log.Info("VM spec changed", "vm", nv.Name, "changes", strings.Join(changes, ", "), "applies", applies)
	}
	return &tandemv1.SetVMResponse{Vm: info, Changes: changes, Applies: applies}, nil
}

// CheckSetting checks a cluster setting's value against the nodes before
// it is recorded: vm.cpu_model must be a model every node's libvirt knows,
// as a VM's own must (a bad default would stop every VM without a model
// of its own at its next start). Other keys pass.
func (m *Manager) CheckSetting(ctx context.Context, key, value string) error {
	if key != settings.KeyVMCPUModel {
		return nil
	}
	ms, err := m.metaLocal()
	if err != nil {
		return err
	}
	return checkCPUModel(m.askCompute(ctx, ms, dataMembers(ms, ""), &tandemv1.ComputeInfoRequest{CpuModels: []string{value}}))
}
