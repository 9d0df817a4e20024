package benchkit

import (
	"context"
	"debug/buildinfo"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// HostInfo describes the machine that ran a benchmark.
type HostInfo struct {
	NProc      int    `json:"nproc"`
	CPU        string `json:"cpu"`
	MemTotalMB int64  `json:"mem_total_mb"`
	Kernel     string `json:"kernel"`
	OS         string `json:"os"`
	GoVersion  string `json:"go_version"`
}

// Host reads the machine's description from /proc and /etc.
func Host() HostInfo {
	h := HostInfo{NProc: runtime.NumCPU(), GoVersion: runtime.Version()}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		h.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/etc/os-release"); err == nil {
		h.OS = parseOSRelease(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		h.CPU = parseCPUModel(string(b))
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		h.MemTotalMB = parseMemTotalMB(string(b))
	}
	return h
}

// parseOSRelease is PRETTY_NAME of an os-release file (the last one).
func parseOSRelease(s string) string {
	var name string
	for _, l := range strings.Split(s, "\n") {
		if v, ok := strings.CutPrefix(l, "PRETTY_NAME="); ok {
			name = strings.Trim(v, `"`)
		}
	}
	return name
}

// parseCPUModel is the first "model name" of /proc/cpuinfo.
func parseCPUModel(s string) string {
	for _, l := range strings.Split(s, "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// parseMemTotalMB is MemTotal of /proc/meminfo in MiB (0 if absent).
func parseMemTotalMB(s string) int64 {
	var mb int64
	for _, l := range strings.Split(s, "\n") {
		if v, ok := strings.CutPrefix(l, "MemTotal:"); ok {
			if f := strings.Fields(v); len(f) > 0 {
				if kb, err := strconv.ParseInt(f[0], 10, 64); err == nil {
					mb = kb / 1024
				}
			}
		}
	}
	return mb
}

// Summary is the one-line Markdown form, "2 CPUs (model), 1024 MiB RAM,
// OS, kernel K, go1.x"; an unknown CPU, OS or kernel reads as unknown.
func (h HostInfo) Summary(unknown string) string {
	or := func(s string) string {
		if s == "" {
			return unknown
		}
		return s
	}
	return fmt.Sprintf("%d CPUs (%s), %d MiB RAM, %s, kernel %s, %s", h.NProc, or(h.CPU), h.MemTotalMB, or(h.OS), or(h.Kernel), h.GoVersion)
}

// VMHostInfo is HostInfo for the benchmarks that run guests: it also says
// whether /dev/kvm exists.
type VMHostInfo struct {
	HostInfo
	// KVM says whether /dev/kvm exists; the harness hides it from libvirtd
	// either way, so guests always run under TCG.
	KVM bool `json:"dev_kvm_present"`
}

// VMHost is Host plus the presence of /dev/kvm.
func VMHost() VMHostInfo {
	h := VMHostInfo{HostInfo: Host()}
	if _, err := os.Stat("/dev/kvm"); err == nil {
		h.KVM = true
	}
	return h
}

// BinaryInfo identifies the tandemd under test. Describe and RevisionFrom
// are set only by the benchmarks that ask for them (WithDescribe,
// WithWorkTreeRevision).
type BinaryInfo struct {
	Path string `json:"path"`
	// Describe is `git describe --tags --always --dirty` of the module's
	// work tree at run time (make builds the binary from it).
	Describe  string `json:"git_describe,omitempty"`
	GoVersion string `json:"go_version,omitempty"`
	Revision  string `json:"vcs_revision,omitempty"`
	Modified  bool   `json:"vcs_modified,omitempty"`
	VCSTime   string `json:"vcs_time,omitempty"`
	// RevisionFrom says where Revision came from: the binary's build
	// information, or (when the binary has none) the module's work tree
	// at the time of the run.
	RevisionFrom string `json:"revision_from,omitempty"`
}

// Binary reads path's Go build information.
func Binary(path string) BinaryInfo {
	bi := BinaryInfo{Path: path}
	info, err := buildinfo.ReadFile(path)
	if err != nil {
		return bi
	}
	bi.GoVersion = info.GoVersion
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			bi.Revision = s.Value
		case "vcs.modified":
			bi.Modified = s.Value == "true"
		case "vcs.time":
			bi.VCSTime = s.Value
		}
	}
	return bi
}

// WithDescribe adds `git describe --tags --always --dirty` of the work tree
// at root.
func (bi BinaryInfo) WithDescribe(ctx context.Context, root string) BinaryInfo {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "git", "describe", "--tags", "--always", "--dirty")
	cmd.Dir = root
	if out, err := cmd.Output(); err == nil {
		bi.Describe = strings.TrimSpace(string(out))
	}
	return bi
}

// WithWorkTreeRevision sets RevisionFrom: "binary" when the binary carries
// a VCS stamp, otherwise the revision and modified state of the work tree
// of the current directory.
func (bi BinaryInfo) WithWorkTreeRevision(ctx context.Context) BinaryInfo {
	if bi.Revision != "" {
		bi.RevisionFrom = "binary"
		return bi
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "git", "rev-parse", "HEAD").Output(); err == nil {
		bi.Revision, bi.RevisionFrom = strings.TrimSpace(string(out)), "work tree at run time"
		if st, err := exec.CommandContext(ctx, "git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil {
			bi.Modified = len(strings.TrimSpace(string(st))) > 0
		}
	}
	return bi
}

// RevisionSummary is the revision for the Markdown: "unknown revision" when
// there is none, " with uncommitted changes" when modified, and where it
// came from when that is not the binary.
func (bi BinaryInfo) RevisionSummary() string {
	rev := bi.Revision
	if rev == "" {
		rev = "unknown revision"
	}
	if bi.Modified {
		rev += " with uncommitted changes"
	}
	if bi.RevisionFrom != "" && bi.RevisionFrom != "binary" {
		rev += " (" + bi.RevisionFrom + "; the binary carries no VCS stamp)"
	}
	return rev
}

// Summary is the one-line Markdown form with `git describe`.
func (bi BinaryInfo) Summary() string {
	s := "`git describe`: " + orDash(bi.Describe)
	if bi.Revision == "" {
		return s + "; binary without VCS stamp, " + orDash(bi.GoVersion)
	}
	s += "; binary built from " + bi.Revision
	if bi.Modified {
		s += " with uncommitted changes"
	}
	return s + ", " + bi.GoVersion
}

// ToolVersion is the first line of `name arg` (also tried from /usr/sbin,
// which root's PATH does not always hold), or "name (version unknown)".
func ToolVersion(ctx context.Context, name, arg string) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, arg).CombinedOutput()
	if err != nil {
		if !strings.Contains(name, "/") {
			if p, perr := exec.LookPath("/usr/sbin/" + name); perr == nil {
				return ToolVersion(ctx, p, arg)
			}
		}
		return name + " (version unknown)"
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}

// LoadAvgLine is /proc/loadavg, trimmed: the three load averages, the
// running/total scheduling entities and the last PID ("" if unreadable).
func LoadAvgLine() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// LoadAvg is the three load averages of /proc/loadavg: the machine may be
// shared, and guests under TCG are sensitive to competing load.
func LoadAvg() string {
	return loadAvgFields(LoadAvgLine())
}

func loadAvgFields(line string) string {
	f := strings.Fields(line)
	if len(f) < 3 {
		return ""
	}
	return fmt.Sprintf("%s %s %s", f[0], f[1], f[2])
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
