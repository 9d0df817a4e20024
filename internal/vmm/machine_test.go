package vmm

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/settings"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// knownModels are the CPU models the fake nodes' libvirt knows.
func knownModels() []string { return []string{"qemu64", "kvm64", "Nehalem", "Haswell"} }

// TestCreateMachineAndCPUModel: a new VM is q35 unless it asks for pc; a
// CPU model is recorded only if every node's libvirt knows it; bad values
// are refused before any volume is created.
func TestCreateMachineAndCPUModel(t *testing.T) {
	req := func() *tandemv1.CreateVMRequest {
		return &tandemv1.CreateVMRequest{Name: "web", Vcpus: 1, MemoryMib: 512, Disks: []*tandemv1.VMDisk{disk(1 << 30)}}
	}
	newW := func() *world {
		w := newWorld()
		for _, n := range []string{"n1", "n2", "n3"} {
			w.cpuModels[n] = knownModels()
		}
		return w
	}
	for _, tc := range []struct {
		name                   string
		machine, model         string
		wantMachine, wantModel string
	}{
		{"defaults", "", "", "q35", ""},
		{"pc", "pc", "", "pc", ""},
		{"q35 Nehalem", "q35", "Nehalem", "q35", "Nehalem"},
		{"default model", "", "default", "q35", ""},
	} {
		w := newW()
		r := req()
		r.Machine, r.CpuModel = tc.machine, tc.model
		info, err := w.manager().Create(t.Context(), r)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		got := w.ms.VMs["web"].Spec
		if got.Machine != tc.wantMachine || got.CPUModel != tc.wantModel || info.Machine != tc.wantMachine || info.CpuModel != tc.wantModel {
			t.Errorf("%s: record %q %q, answer %q %q; want %q %q", tc.name, got.Machine, got.CPUModel, info.Machine, info.CpuModel, tc.wantMachine, tc.wantModel)
		}
	}
	for _, tc := range []struct {
		name  string
		setup func(w *world, r *tandemv1.CreateVMRequest)
		msg   string
	}{
		{"bad machine", func(_ *world, r *tandemv1.CreateVMRequest) { r.Machine = "isapc" }, `--machine "isapc": use q35 (the default) or pc`},
		{"bad model name", func(_ *world, r *tandemv1.CreateVMRequest) { r.CpuModel = "qemu64,+vmx" }, `--cpu-model "qemu64,+vmx"`},
		{"unknown model", func(_ *world, r *tandemv1.CreateVMRequest) { r.CpuModel = "nosuch" },
			"on n1, n2, n3: cpu model nosuch: libvirt does not know it (it knows 4, e.g. qemu64, kvm64, Nehalem, Haswell;"},
		{"unknown on one node", func(w *world, r *tandemv1.CreateVMRequest) {
			r.CpuModel = "Haswell"
			w.cpuModels["n3"] = []string{"qemu64"}
		}, "on n3: cpu model Haswell: libvirt does not know it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newW()
			r := req()
			tc.setup(w, r)
			_, err := w.manager().Create(t.Context(), r)
			if !isStatus(err, codes.InvalidArgument, tc.msg) {
				t.Fatalf("got %v, want InvalidArgument containing %q", err, tc.msg)
			}
			if got := w.j.list(); len(got) != 0 || len(w.ms.VMs) != 0 {
				t.Errorf("a refused create changed something: %q", got)
			}
		})
	}
}

// TestSetCPUModel: vm set --cpu-model records a model the nodes know,
// "default" returns to the cluster's, and an unknown one is refused with
// nothing recorded; vm show names the cluster's model for a VM without
// its own, and a VM recorded before the machine field is pc.
func TestSetCPUModel(t *testing.T) {
	w := newWorld()
	for _, n := range []string{"n1", "n2", "n3"} {
		w.compute[n].Cpus = 4
		w.cpuModels[n] = knownModels()
	}
	w.ms.VMs["web"] = &consensus.VMRecord{Name: "web", Node: "n2", Desired: consensus.VMStopped, Spec: consensus.VMSpecRecord{VCPUs: 1, MemoryMiB: 192}}
	m := w.manager()
	resp, err := m.Set(t.Context(), &tandemv1.SetVMRequest{Name: "web", CpuModel: proto.String("Nehalem")})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Changes) != 1 || resp.Changes[0] != "cpu model default (the cluster's, now qemu64) -> Nehalem" || resp.Applies != "at the next start" {
		t.Errorf("changes %q applies %q", resp.Changes, resp.Applies)
	}
	if got := w.ms.VMs["web"].Spec; got.CPUModel != "Nehalem" || got.VCPUs != 1 || got.MemoryMiB != 192 {
		t.Errorf("record %+v", got)
	}
	for _, bad := range []struct{ model, msg string }{
		{"nosuch", "cpu model nosuch: libvirt does not know it"},
		{"a b", `--cpu-model "a b"`},
	} {
		before := len(w.j.list())
		_, err := m.Set(t.Context(), &tandemv1.SetVMRequest{Name: "web", CpuModel: proto.String(bad.model), Vcpus: proto.Uint32(2)})
		if !isStatus(err, codes.InvalidArgument, bad.msg) {
			t.Errorf("%q: got %v, want InvalidArgument containing %q", bad.model, err, bad.msg)
		}
		if got := w.ms.VMs["web"].Spec; got.CPUModel != "Nehalem" || got.VCPUs != 1 || len(w.j.list()) != before {
			t.Errorf("%q: a refused set changed something: %+v", bad.model, got)
		}
	}
	w.ms.Config = map[string]string{settings.KeyVMCPUModel: "Haswell"}
	resp, err = m.Set(t.Context(), &tandemv1.SetVMRequest{Name: "web", CpuModel: proto.String("default")})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Changes) != 1 || resp.Changes[0] != "cpu model Nehalem -> default (the cluster's, now Haswell)" || w.ms.VMs["web"].Spec.CPUModel != "" {
		t.Errorf("back to default: changes %q, record %+v", resp.Changes, w.ms.VMs["web"].Spec)
	}
	info, err := m.Show(t.Context(), "web")
	if err != nil {
		t.Fatal(err)
	}
	if info.Machine != "pc" || info.CpuModel != "Haswell" || !info.CpuModelDefault {
		t.Errorf("show: machine %q cpu %q default %v", info.Machine, info.CpuModel, info.CpuModelDefault)
	}
}

// TestCheckClusterCPUModel: vm.cpu_model must be known to every node's
// libvirt before 'cluster config set' records it; other keys pass.
func TestCheckClusterCPUModel(t *testing.T) {
	w := newWorld()
	for _, n := range []string{"n1", "n2", "n3"} {
		w.cpuModels[n] = knownModels()
	}
	m := w.manager()
	if err := m.CheckSetting(t.Context(), settings.KeyVMCPUModel, "Nehalem"); err != nil {
		t.Errorf("Nehalem: %v", err)
	}
	if err := m.CheckSetting(t.Context(), settings.KeyVMCPUModel, "nosuch"); !isStatus(err, codes.InvalidArgument, "cpu model nosuch: libvirt does not know it") {
		t.Errorf("nosuch: %v", err)
	}
	if err := m.CheckSetting(t.Context(), settings.KeyResyncRate, "whatever"); err != nil {
		t.Errorf("another key: %v", err)
	}
}

// TestDomainSpecMachineAndCPUModel: a VM recorded before the machine
// field keeps i440fx; a VM without a CPU model of its own gets the
// cluster's as this node's metadata has it at the start.
func TestDomainSpecMachineAndCPUModel(t *testing.T) {
	w := newWorld()
	m := w.manager()
	old := &consensus.VMRecord{Name: "old", Spec: consensus.VMSpecRecord{VCPUs: 1, MemoryMiB: 64}}
	spec := m.domainSpec(VMInfoOf(old), "/run/nbd.sock", "", "", "")
	if spec.Machine != "pc" || spec.CPUModel != "qemu64" {
		t.Errorf("old record: machine %q, cpu %q; want pc, qemu64", spec.Machine, spec.CPUModel)
	}
	w.ms.Config = map[string]string{settings.KeyVMCPUModel: "Haswell"}
	nw := &consensus.VMRecord{Name: "new", Spec: consensus.VMSpecRecord{VCPUs: 1, MemoryMiB: 64, Machine: "q35"}}
	spec = m.domainSpec(VMInfoOf(nw), "/run/nbd.sock", "", "", "")
	if spec.Machine != "q35" || spec.CPUModel != "Haswell" {
		t.Errorf("q35 on the cluster's model: machine %q, cpu %q; want q35, Haswell", spec.Machine, spec.CPUModel)
	}
	nw.Spec.CPUModel = "Nehalem"
	if spec = m.domainSpec(VMInfoOf(nw), "/run/nbd.sock", "", "", ""); spec.CPUModel != "Nehalem" {
		t.Errorf("own model: cpu %q, want Nehalem", spec.CPUModel)
	}
}
