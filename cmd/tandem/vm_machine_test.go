package main

import (
	"context"
	"testing"

	"google.golang.org/grpc"

	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// fakeVMSet records the create and set requests it gets.
type fakeVMSet struct {
	fakeVMs
	create *tandemv1.CreateVMRequest
	set    *tandemv1.SetVMRequest
}

func (f *fakeVMSet) Create(_ context.Context, req *tandemv1.CreateVMRequest) (*tandemv1.VMInfo, error) {
	f.create = req
	return &tandemv1.VMInfo{Name: req.Name, Machine: "q35", CpuModel: req.CpuModel}, nil
}

func (f *fakeVMSet) Set(_ context.Context, req *tandemv1.SetVMRequest) (*tandemv1.SetVMResponse, error) {
	f.set = req
	return &tandemv1.SetVMResponse{Vm: &tandemv1.VMInfo{Name: req.Name, CpuModel: req.GetCpuModel()},
		Changes: []string{"cpu model default (the cluster's, now qemu64) -> " + req.GetCpuModel()}, Applies: "at the next start"}, nil
}

// TestVMMachineAndCPUModelFlags: vm create passes --machine and
// --cpu-model, refusing an unknown machine before asking; vm set passes
// --cpu-model (default included) and refuses an empty one; vm show
// prints both.
func TestVMMachineAndCPUModelFlags(t *testing.T) {
	vms := &fakeVMSet{fakeVMs: fakeVMs{vm: &tandemv1.VMInfo{Name: "web", State: "running", Desired: "started", Machine: "q35", CpuModel: "qemu64", CpuModelDefault: true}}}
	dir, _ := startDaemonWith(t, func(s *grpc.Server) { tandemv1.RegisterVMServer(s, vms) })

	runCLI(t, "", "--data-dir", dir, "vm", "create", "web", "--disk", "1G", "--machine", "pc", "--cpu-model", "Nehalem").wantCode(t, 0)
	if vms.create.GetMachine() != "pc" || vms.create.GetCpuModel() != "Nehalem" {
		t.Errorf("create request %v", vms.create)
	}
	vms.create = nil
	runCLI(t, "", "--data-dir", dir, "vm", "create", "web", "--disk", "1G").wantCode(t, 0)
	if vms.create.GetMachine() != "" || vms.create.GetCpuModel() != "" {
		t.Errorf("create request without flags %v (the daemon picks q35 and the cluster's model)", vms.create)
	}
	vms.create = nil
	r := runCLI(t, "", "--data-dir", dir, "vm", "create", "web", "--disk", "1G", "--machine", "isapc")
	r.wantCode(t, 2)
	wantMatch(t, "stderr", r.stderr, `--machine "isapc": use q35 \(the default\) or pc`)
	if vms.create != nil {
		t.Errorf("a refused --machine reached the daemon: %v", vms.create)
	}

	r = runCLI(t, "", "--data-dir", dir, "vm", "set", "web", "--cpu-model", "Nehalem")
	r.wantCode(t, 0)
	if vms.set.CpuModel == nil || *vms.set.CpuModel != "Nehalem" || vms.set.Vcpus != nil || vms.set.MemoryMib != nil {
		t.Errorf("set request %v", vms.set)
	}
	wantMatch(t, "stdout", r.stdout, `VM web: cpu model default \(the cluster's, now qemu64\) -> Nehalem; applies at the next start`)
	runCLI(t, "", "--data-dir", dir, "vm", "set", "web", "--cpu-model", "default").wantCode(t, 0)
	if vms.set.GetCpuModel() != "default" {
		t.Errorf("set request %v", vms.set)
	}
	vms.set = nil
	r = runCLI(t, "", "--data-dir", dir, "vm", "set", "web", "--cpu-model", "")
	r.wantCode(t, 2)
	wantMatch(t, "stderr", r.stderr, `--cpu-model: give a model, or default`)
	r = runCLI(t, "", "--data-dir", dir, "vm", "set", "web")
	r.wantCode(t, 2)
	wantMatch(t, "stderr", r.stderr, `give --vcpus, --memory and/or --cpu-model`)
	if vms.set != nil {
		t.Errorf("a refused set reached the daemon: %v", vms.set)
	}

	r = runCLI(t, "", "--data-dir", dir, "vm", "show", "web")
	r.wantCode(t, 0)
	wantMatch(t, "stdout", r.stdout, `Machine:\s+q35 \(PCIe\)\n`, `CPU model:\s+qemu64 \(the cluster's vm.cpu_model\)\n`)
	vms.vm.Machine, vms.vm.CpuModel, vms.vm.CpuModelDefault = "pc", "Nehalem", false
	r = runCLI(t, "", "--data-dir", dir, "vm", "show", "web")
	wantMatch(t, "stdout", r.stdout, `Machine:\s+pc \(i440fx\)\n`, `CPU model:\s+Nehalem\n`)
}

func TestVMCreateMachineCompletion(t *testing.T) {
	dir, _ := startDaemonWith(t, func(s *grpc.Server) { tandemv1.RegisterVMServer(s, &fakeVMs{}) })
	if got := complete(t, dir, "vm", "create", "web", "--machine", ""); len(got) != 2 || got[0] != "q35" || got[1] != "pc" {
		t.Errorf("--machine completes to %q", got)
	}
}
