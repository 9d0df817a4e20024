package benchkit

import (
	"context"
	"encoding/json"
	"path/filepath"
	"runtime"
	"testing"
)

func TestParseProcFiles(t *testing.T) {
	osr := "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n"
	if got := parseOSRelease(osr); got != "Debian GNU/Linux 12 (bookworm)" {
		t.Errorf("os-release: %q", got)
	}
	cpu := "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\n\nprocessor\t: 1\nmodel name\t: other\n"
	if got := parseCPUModel(cpu); got != "Intel(R) Xeon(R) Processor" {
		t.Errorf("cpuinfo: %q", got)
	}
	if got := parseCPUModel("processor\t: 0\nBogoMIPS\t: 50\n"); got != "" {
		t.Errorf("cpuinfo without a model: %q", got)
	}
	if got := parseMemTotalMB("MemTotal:       24683520 kB\nMemFree:  1 kB\n"); got != 24105 {
		t.Errorf("meminfo: %d", got)
	}
	if got := parseMemTotalMB("MemFree: 1 kB\n"); got != 0 {
		t.Errorf("meminfo without MemTotal: %d", got)
	}
}

func TestHost(t *testing.T) {
	h := VMHost()
	if h.NProc != runtime.NumCPU() || h.GoVersion != runtime.Version() {
		t.Fatalf("host %+v", h)
	}
}

func TestHostSummaryAndJSON(t *testing.T) {
	h := HostInfo{NProc: 2, CPU: "Xeon", MemTotalMB: 24105, Kernel: "6.1", OS: "Debian 12", GoVersion: "go1.26"}
	want := "2 CPUs (Xeon), 24105 MiB RAM, Debian 12, kernel 6.1, go1.26"
	if got := h.Summary("-"); got != want {
		t.Errorf("summary %q, want %q", got, want)
	}
	h.CPU, h.OS = "", ""
	if got := h.Summary("-"); got != "2 CPUs (-), 24105 MiB RAM, -, kernel 6.1, go1.26" {
		t.Errorf("summary with unknowns %q", got)
	}
	if got := h.Summary(""); got != "2 CPUs (), 24105 MiB RAM, , kernel 6.1, go1.26" {
		t.Errorf("plain summary with unknowns %q", got)
	}
	// The reports' JSON field names: VMHostInfo is HostInfo's fields, flat,
	// then dev_kvm_present.
	js, _ := json.Marshal(VMHostInfo{HostInfo: HostInfo{NProc: 2, CPU: "c", MemTotalMB: 3, Kernel: "k", OS: "o", GoVersion: "g"}})
	if want := `{"nproc":2,"cpu":"c","mem_total_mb":3,"kernel":"k","os":"o","go_version":"g","dev_kvm_present":false}`; string(js) != want {
		t.Errorf("json %s, want %s", js, want)
	}
	var back VMHostInfo
	if err := json.Unmarshal(js, &back); err != nil || back.CPU != "c" || back.NProc != 2 {
		t.Errorf("decode %+v %v", back, err)
	}
}

func TestBinaryInfo(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "tandemd")
	if bi := Binary(missing); bi != (BinaryInfo{Path: missing}) {
		t.Errorf("missing binary: %+v", bi)
	}
	bi := BinaryInfo{Path: "/b/tandemd", GoVersion: "go1.26", Revision: "abc", Modified: true, VCSTime: "t"}
	js, _ := json.Marshal(bi)
	if want := `{"path":"/b/tandemd","go_version":"go1.26","vcs_revision":"abc","vcs_modified":true,"vcs_time":"t"}`; string(js) != want {
		t.Errorf("json %s, want %s", js, want)
	}
	if got := bi.RevisionSummary(); got != "abc with uncommitted changes" {
		t.Errorf("revision %q", got)
	}
	if got := bi.WithWorkTreeRevision(context.Background()).RevisionFrom; got != "binary" {
		t.Errorf("revision from %q", got)
	}
	if got := (BinaryInfo{Revision: "abc", RevisionFrom: "work tree at run time"}).RevisionSummary(); got != "abc (work tree at run time; the binary carries no VCS stamp)" {
		t.Errorf("work-tree revision %q", got)
	}
	if got := (BinaryInfo{}).RevisionSummary(); got != "unknown revision" {
		t.Errorf("no revision %q", got)
	}
	bi.Describe = "v1-dirty"
	if got := bi.Summary(); got != "`git describe`: v1-dirty; binary built from abc with uncommitted changes, go1.26" {
		t.Errorf("summary %q", got)
	}
	if got := (BinaryInfo{GoVersion: "go1.26"}).Summary(); got != "`git describe`: -; binary without VCS stamp, go1.26" {
		t.Errorf("summary without stamp %q", got)
	}
	js, _ = json.Marshal(bi)
	if want := `{"path":"/b/tandemd","git_describe":"v1-dirty","go_version":"go1.26","vcs_revision":"abc","vcs_modified":true,"vcs_time":"t"}`; string(js) != want {
		t.Errorf("json %s, want %s", js, want)
	}
}

func TestToolVersionAndLoad(t *testing.T) {
	if got := ToolVersion(context.Background(), "no-such-tool-for-benchkit", "--version"); got != "no-such-tool-for-benchkit (version unknown)" {
		t.Errorf("unknown tool: %q", got)
	}
	if got := loadAvgFields("0.46 0.72 0.91 2/132 12832\n"); got != "0.46 0.72 0.91" {
		t.Errorf("load %q", got)
	}
	if got := loadAvgFields("0.46"); got != "" {
		t.Errorf("short load %q", got)
	}
}
