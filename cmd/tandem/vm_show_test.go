package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

type fakeVMs struct {
	tandemv1.UnimplementedVMServer
	vm *tandemv1.VMInfo
}

func (f *fakeVMs) Show(context.Context, *tandemv1.VMRequest) (*tandemv1.VMInfo, error) {
	return f.vm, nil
}

func (f *fakeVMs) List(context.Context, *tandemv1.ListVMsRequest) (*tandemv1.ListVMsResponse, error) {
	return &tandemv1.ListVMsResponse{Vms: []*tandemv1.VMInfo{f.vm, {Name: "db", Node: "node-b", State: "shut off", Desired: "stopped", MemoryMib: 512}}}, nil
}

func TestVMShowHAAndUptime(t *testing.T) {
	vms := &fakeVMs{vm: &tandemv1.VMInfo{Name: "web", Node: "node-a", State: "running", Desired: "started", HaState: "started", Priority: 5,
		MemoryMib: 2048, Vcpus: 2, StartedAt: timestamppb.New(time.Now().Add(-90 * time.Minute))}}
	dir, _ := startDaemonWith(t, func(s *grpc.Server) { tandemv1.RegisterVMServer(s, vms) })
	r := runCLI(t, "", "--data-dir", dir, "vm", "show", "web")
	r.wantCode(t, 0)
	wantMatch(t, "stdout", r.stdout, `HA state:\s+started\n`, `Priority:\s+5\n`, `Up:\s+1h30m\d+s \(on node-a since `, `Memory:\s+2 GiB\n`)

	vms.vm.StartedAt, vms.vm.State = nil, "shut off"
	r = runCLI(t, "", "--data-dir", dir, "vm", "show", "web")
	if strings.Contains(r.stdout, "Up:") {
		t.Errorf("uptime shown for a VM that is not running:\n%s", r.stdout)
	}

	if got := strings.Join(complete(t, dir, "vm", "migrate", ""), " "); got != "db web" {
		t.Errorf("VM name completion: %q", got)
	}
	r = runCLI(t, "", "--data-dir", dir, "vm", "list", "--filter", "desired=stopped", "--columns", "name,memory", "--no-headers")
	r.wantCode(t, 0)
	if r.stdout != "db  512 MiB\n" {
		t.Errorf("vm list filtered: %q", r.stdout)
	}
}
