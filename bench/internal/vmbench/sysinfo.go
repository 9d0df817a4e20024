package vmbench

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
	// KVM says whether /dev/kvm exists; the harness hides it from libvirtd
	// either way, so guests always run under TCG.
	KVM bool `json:"dev_kvm_present"`
}

// Summary is the one-line Markdown form.
func (h HostInfo) Summary() string {
	return fmt.Sprintf("%d CPUs (%s), %d MiB RAM, %s, kernel %s, %s", h.NProc, orDash(h.CPU), h.MemTotalMB, orDash(h.OS), orDash(h.Kernel), h.GoVersion)
}

// BinaryInfo identifies the tandemd under test.
type BinaryInfo struct {
	Path string `json:"path"`
	// Describe is `git describe --tags --always --dirty` of the module's
	// work tree at run time (make builds the binary from it).
	Describe  string `json:"git_describe,omitempty"`
	GoVersion string `json:"go_version,omitempty"`
	Revision  string `json:"vcs_revision,omitempty"`
	Modified  bool   `json:"vcs_modified,omitempty"`
	VCSTime   string `json:"vcs_time,omitempty"`
}

// Summary is the one-line Markdown form.
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

// Host reads the machine's description from /proc and /etc.
func Host() HostInfo {
	h := HostInfo{NProc: runtime.NumCPU(), GoVersion: runtime.Version()}
	if _, err := os.Stat("/dev/kvm"); err == nil {
		h.KVM = true
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		h.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/etc/os-release"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "PRETTY_NAME="); ok {
				h.OS = strings.Trim(v, `"`)
			}
		}
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				h.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "MemTotal:"); ok {
				if f := strings.Fields(v); len(f) > 0 {
					if kb, err := strconv.ParseInt(f[0], 10, 64); err == nil {
						h.MemTotalMB = kb / 1024
					}
				}
			}
		}
	}
	return h
}

// Binary reads path's Go build information and `git describe` of root.
func Binary(ctx context.Context, path, root string) BinaryInfo {
	bi := BinaryInfo{Path: path}
	if info, err := buildinfo.ReadFile(path); err == nil {
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
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "git", "describe", "--tags", "--always", "--dirty")
	cmd.Dir = root
	if out, err := cmd.Output(); err == nil {
		bi.Describe = strings.TrimSpace(string(out))
	}
	return bi
}

// ToolVersion is the first line of `name arg` (also tried from /usr/sbin).
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

// LoadAvg is the first three fields of /proc/loadavg: the machine may be
// shared, and guests under TCG are sensitive to competing load.
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
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
