package vmm

import (
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/tandemhci/tandem/consensus"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// TestSetVM: vm set records the new values and says when they apply (a
// stopped VM at its start, a running one when it restarts); bad values
// are refused before anything is recorded.
func TestSetVM(t *testing.T) {
	world := func(running bool) *world {
		w := newWorld()
		for _, n := range []string{"n1", "n2", "n3"} {
			w.compute[n].Cpus = 4
		}
		v := &consensus.VMRecord{Name: "web", Node: "n2", Desired: consensus.VMStopped, Spec: consensus.VMSpecRecord{VCPUs: 1, MemoryMiB: 192}}
		if running {
			v.Desired = consensus.VMStarted
			w.running["web"] = "running"
		}
		w.ms.VMs["web"] = v
		return w
	}
	for _, tc := range []struct {
		running bool
		applies string
	}{{false, "at the next start"}, {true, "when the VM restarts"}} {
		w := world(tc.running)
		resp, err := w.manager().Set(t.Context(), &tandemv1.SetVMRequest{Name: "web", Vcpus: proto.Uint32(2), MemoryMib: proto.Uint32(256)})
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{"vcpus 1 -> 2", "memory 192 -> 256 MiB"}; !slices.Equal(resp.Changes, want) || !strings.HasPrefix(resp.Applies, tc.applies) {
			t.Errorf("running=%v: changes %q applies %q", tc.running, resp.Changes, resp.Applies)
		}
		if got := w.ms.VMs["web"].Spec; got.VCPUs != 2 || got.MemoryMiB != 256 || resp.Vm.Vcpus != 2 || resp.Vm.MemoryMib != 256 {
			t.Errorf("running=%v: record %+v, answer %d vCPUs %d MiB", tc.running, got, resp.Vm.Vcpus, resp.Vm.MemoryMib)
		}
	}
	for _, tc := range []struct {
		name string
		req  *tandemv1.SetVMRequest
		code codes.Code
		msg  string
	}{
		{"memory 0", &tandemv1.SetVMRequest{Name: "web", MemoryMib: proto.Uint32(0)}, codes.InvalidArgument, "memory 0 MiB: at least 64 MiB"},
		{"vcpus 0", &tandemv1.SetVMRequest{Name: "web", Vcpus: proto.Uint32(0)}, codes.InvalidArgument, "vcpus 0: use 1 to 64"},
		{"vcpus over the nodes' CPUs", &tandemv1.SetVMRequest{Name: "web", Vcpus: proto.Uint32(8)}, codes.InvalidArgument, "vcpus 8 is more than any node has CPUs (the most, n1, has 4)"},
		{"memory over every node", &tandemv1.SetVMRequest{Name: "web", MemoryMib: proto.Uint32(8192)}, codes.InvalidArgument, "more than any node offers VMs"},
		{"nothing", &tandemv1.SetVMRequest{Name: "web"}, codes.InvalidArgument, "nothing to change"},
		{"no VM", &tandemv1.SetVMRequest{Name: "db", Vcpus: proto.Uint32(2)}, codes.NotFound, `no VM named "db"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := world(true)
			_, err := w.manager().Set(t.Context(), tc.req)
			if !isStatus(err, tc.code, tc.msg) {
				t.Fatalf("got %v, want %v containing %q", err, tc.code, tc.msg)
			}
			if got := w.j.list(); len(got) != 0 || w.ms.VMs["web"].Spec.VCPUs != 1 || w.ms.VMs["web"].Spec.MemoryMiB != 192 {
				t.Errorf("a refused set changed something: %q, %+v", got, w.ms.VMs["web"].Spec)
			}
		})
	}
}
