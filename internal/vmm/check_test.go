package vmm

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/tandemhci/tandem/consensus"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

func TestJudgeSpec(t *testing.T) {
	node := func(capMiB uint64, missing ...string) *tandemv1.ComputeStatus {
		return &tandemv1.ComputeStatus{Available: true, CapacityMib: capMiB, Missing: missing}
	}
	for _, tc := range []struct {
		name  string
		mem   uint32
		nodes map[string]*tandemv1.ComputeStatus
		err   string // substring; "" = accepted
		warn  string
	}{
		{"fits", 512, map[string]*tandemv1.ComputeStatus{"n1": node(1024), "n2": node(2048)}, "", ""},
		{"too big for all", 4096, map[string]*tandemv1.ComputeStatus{"n1": node(1024), "n2": node(2048)}, "memory 4 GiB is more than any node offers VMs (the largest, n2, offers 2 GiB)", ""},
		{"kernel nowhere", 64, map[string]*tandemv1.ComputeStatus{"n1": node(1024, "/k: no such file or directory"), "n2": node(1024, "/k: no such file or directory")}, "no node can run this VM: n1 (/k: no such file or directory), n2", ""},
		{"bridge on one node only", 64, map[string]*tandemv1.ComputeStatus{"n1": node(1024), "n2": node(1024, "bridge br9: no such network interface")}, "", "can run only on n1; it cannot run on n2 (bridge br9"},
		{"nobody answered", 1 << 20, nil, "", ""},
		{"offline compute ignored", 512, map[string]*tandemv1.ComputeStatus{"n1": node(1024), "n2": {Reason: "libvirt down"}}, "", ""},
	} {
		warn, err := judgeSpec(&tandemv1.CreateVMRequest{MemoryMib: tc.mem}, tc.nodes)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%s: refused: %v", tc.name, err)
		case tc.err != "" && !isStatus(err, codes.InvalidArgument, tc.err):
			t.Errorf("%s: error %v, want InvalidArgument containing %q", tc.name, err, tc.err)
		case !strings.Contains(warn, tc.warn) || (tc.warn == "" && warn != ""):
			t.Errorf("%s: warning %q, want %q", tc.name, warn, tc.warn)
		}
	}
}

func TestJudgeSpecWithoutCompute(t *testing.T) {
	warn, err := judgeSpec(&tandemv1.CreateVMRequest{MemoryMib: 1 << 20}, map[string]*tandemv1.ComputeStatus{"n1": {Reason: "no libvirt socket"}})
	if err != nil || !strings.Contains(warn, "could not be checked: compute is unavailable on n1 (no libvirt socket)") {
		t.Errorf("no compute anywhere: %q, %v", warn, err)
	}
}

func TestCheckMACs(t *testing.T) {
	ms := &consensus.MetaState{VMs: map[string]*consensus.VMRecord{
		"web": {Name: "web", Spec: consensus.VMSpecRecord{NICs: []consensus.VMNIC{{MAC: "52:54:00:aa:bb:cc"}}}},
	}}
	for mac, want := range map[string]string{
		"":                  "",
		"52:54:00:12:34:56": "",
		"zz:54:00:12:34:56": "want six hex pairs",
		"52:54:00:12:34":    "want six hex pairs",
		"01:00:5e:00:00:01": "multicast",
		"52:54:00:AA:BB:CC": "already used by VM web",
	} {
		err := checkMACs(ms, []*tandemv1.VMNic{{Mac: mac}})
		if (want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), want)) {
			t.Errorf("MAC %q: %v, want %q", mac, err, want)
		}
	}
}

func TestLacking(t *testing.T) {
	dir := t.TempDir()
	kernel := filepath.Join(dir, "vmlinuz")
	if err := os.WriteFile(kernel, []byte("k"), 0o644); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	kernelLink := filepath.Join(dir, "kernel-link")
	if err := os.Symlink(kernel, kernelLink); err != nil {
		t.Fatal(err)
	}
	got := lacking([]string{kernel, kernelLink, filepath.Join(dir, "nope"), dir, fifo, link, "/dev/null"}, []string{"lo", "tdm-nosuch0"})
	want := []string{"nope: no such file or directory", dir + " is a directory, not a regular file", fifo + " is a FIFO, not a regular file",
		link + " (-> " + dir + ") is a directory", "/dev/null is a device, not a regular file", "bridge tdm-nosuch0: no such network interface"}
	if len(got) != len(want) {
		t.Fatalf("got %q, want %d entries like %q", got, len(want), want)
	}
	for i := range want {
		if !strings.Contains(got[i], want[i]) {
			t.Errorf("entry %d: %q, want it to contain %q", i, got[i], want[i])
		}
	}
}

// TestJudgeSpecCPUs: a VM may have at most as many vCPUs as the node
// with the most CPUs; a node that does not report its CPUs lifts the
// limit.
func TestJudgeSpecCPUs(t *testing.T) {
	node := func(cpus uint32) *tandemv1.ComputeStatus {
		return &tandemv1.ComputeStatus{Available: true, CapacityMib: 4096, Cpus: cpus}
	}
	for _, tc := range []struct {
		vcpus uint32
		nodes map[string]*tandemv1.ComputeStatus
		err   string
	}{
		{4, map[string]*tandemv1.ComputeStatus{"n1": node(2), "n2": node(4)}, ""},
		{5, map[string]*tandemv1.ComputeStatus{"n1": node(2), "n2": node(4)}, "vcpus 5 is more than any node has CPUs (the most, n2, has 4)"},
		{5, map[string]*tandemv1.ComputeStatus{"n1": node(2), "n2": node(0)}, ""},
	} {
		_, err := judgeSpec(&tandemv1.CreateVMRequest{MemoryMib: 64, Vcpus: tc.vcpus}, tc.nodes)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%d vCPUs on %v: refused: %v", tc.vcpus, tc.nodes, err)
		case tc.err != "" && !isStatus(err, codes.InvalidArgument, tc.err):
			t.Errorf("%d vCPUs: error %v, want %q", tc.vcpus, err, tc.err)
		}
	}
}
