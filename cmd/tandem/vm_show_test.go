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

type fakeHA struct {
	tandemv1.UnimplementedHAServer
	resp *tandemv1.HAStatusResponse
}

func (f *fakeHA) Status(context.Context, *tandemv1.HAStatusRequest) (*tandemv1.HAStatusResponse, error) {
	return f.resp, nil
}

// TestHAStatusTable: the VM table has a DESIRED column, a stopped VM shows
// as stopped, and times never recorded print as "-".
func TestHAStatusTable(t *testing.T) {
	changed := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	ha := &fakeHA{resp: &tandemv1.HAStatusResponse{
		Armed: true, Leader: "node-a",
		Nodes: []*tandemv1.HANode{
			{Name: "node-a", Liveness: "alive", LastSeen: timestamppb.New(time.Now())},
			{Name: "node-b", Liveness: "unknown"},
		},
		Vms: []*tandemv1.HAVM{
			{Name: "db", Node: "node-a", Desired: "started", HaState: "recovery", Reason: "node-b dead", Changed: timestamppb.New(changed)},
			{Name: "idle", Desired: "stopped", HaState: "stopped"},
		},
	}}
	dir, _ := startDaemonWith(t, func(s *grpc.Server) { tandemv1.RegisterHAServer(s, ha) })
	r := runCLI(t, "", "--data-dir", dir, "ha", "status")
	r.wantCode(t, 0)
	wantMatch(t, "stdout", r.stdout,
		`(?m)^VM\s+NODE\s+DESIRED\s+HA STATE\s+SINCE\s+REASON\s*$`,
		`(?m)^db\s+node-a\s+started\s+recovery\s+`+changed.Local().Format(time.TimeOnly)+`\s+node-b dead\s*$`,
		`(?m)^idle\s+-\s+stopped\s+stopped\s+-\s+-\s*$`,
		`(?m)^node-b\s+unknown\s+-\s+lease only\s*$`,
	)

	r = runCLI(t, "", "--data-dir", dir, "ha", "status", "-o", "json")
	r.wantCode(t, 0)
	if strings.Contains(r.stdout, "0001-01-01") || strings.Contains(r.stdout, "1970-01-01") {
		t.Errorf("zero timestamp in JSON:\n%s", r.stdout)
	}
}
