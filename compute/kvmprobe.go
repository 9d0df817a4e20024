package compute

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// KVM detection (issue 18). /dev/kvm existing proves little: on some hosts
// (nested virtualisation, this project's test machines) it opens, and
// even runs a few instructions of firmware, while a guest kernel then
// hangs or QEMU aborts. So KVM counts as usable only when a probe guest
// boots a real Linux kernel under it to its end: the kernel, given no
// root file system, panics ("VFS: Unable to mount root fs"), and with
// panic=-1 and -no-reboot QEMU then exits by itself.

// KVMProbe says how to probe.
type KVMProbe struct {
	// QEMU is the emulator binary (default qemu-system-x86_64).
	QEMU string
	// Kernel is the kernel the probe guest boots (default: the newest
	// /boot/vmlinuz-*).
	Kernel string
	// Accel is what is probed: "kvm" (the default); "tcg" shows that the
	// probe itself works where KVM does not.
	Accel string
	// Timeout bounds the probe (default 30 s; a kernel boots to its panic
	// in about a second under KVM, a few under TCG).
	Timeout time.Duration
}

// KVMResult is a probe's verdict.
type KVMResult struct {
	Usable bool
	// Detail says why, for the log and the node's status.
	Detail string
	Took   time.Duration
}

// probeEnd is what the probe kernel prints once it ran to its end.
var probeEnd = []string{"VFS: Unable to mount root fs", "Kernel panic - not syncing"}

// ProbeKVM boots p.Kernel under p.Accel and reports whether it ran to
// its end within the timeout. It never fails: a probe that cannot run
// (no kernel, no /dev/kvm, no QEMU) is a verdict of not usable, with the
// reason.
func ProbeKVM(ctx context.Context, p KVMProbe) KVMResult {
	if p.QEMU == "" {
		p.QEMU = "qemu-system-x86_64"
	}
	if p.Accel == "" {
		p.Accel = "kvm"
	}
	if p.Timeout <= 0 {
		p.Timeout = 30 * time.Second
	}
	if p.Accel == "kvm" {
		f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
		if err != nil {
			return KVMResult{Detail: fmt.Sprintf("no usable /dev/kvm: %v", err)}
		}
		f.Close()
	}
	if p.Kernel == "" {
		k, err := newestKernel("/boot")
		if err != nil {
			return KVMResult{Detail: fmt.Sprintf("no kernel to boot a probe guest with: %v", err)}
		}
		p.Kernel = k
	}
	dir, err := os.MkdirTemp("", "tandem-kvm-probe-")
	if err != nil {
		return KVMResult{Detail: fmt.Sprintf("probe: %v", err)}
	}
	defer os.RemoveAll(dir)
	serial := filepath.Join(dir, "serial.log")
	cctx, cancel := context.WithTimeout(ctx, p.Timeout)
	defer cancel()
	cmd := exec.CommandContext(cctx, p.QEMU, "-accel", p.Accel, "-machine", "pc", "-cpu", DefaultCPUModel, "-m", "128",
		"-nodefaults", "-display", "none", "-monitor", "none", "-no-reboot", "-serial", "file:"+serial,
		"-kernel", p.Kernel, "-append", "console=ttyS0 panic=-1 quiet loglevel=3")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	err = cmd.Run()
	took := time.Since(start)
	out, _ := os.ReadFile(serial)
	ended := slices.ContainsFunc(probeEnd, func(s string) bool { return bytes.Contains(out, []byte(s)) })
	what := fmt.Sprintf("a %s probe guest booting %s", strings.ToUpper(p.Accel), p.Kernel)
	switch {
	case ended && err == nil:
		return KVMResult{Usable: true, Took: took, Detail: fmt.Sprintf("%s ran to its end in %v", what, took.Round(time.Millisecond))}
	case cctx.Err() != nil && ctx.Err() == nil:
		return KVMResult{Took: took, Detail: fmt.Sprintf("%s hung: not done within %v (%d bytes of console)", what, p.Timeout, len(out))}
	case ctx.Err() != nil:
		return KVMResult{Took: took, Detail: fmt.Sprintf("%s: %v", what, ctx.Err())}
	case err != nil:
		return KVMResult{Took: took, Detail: fmt.Sprintf("%s failed: %v: %s", what, err, lastLine(stderr.String()))}
	default:
		return KVMResult{Took: took, Detail: fmt.Sprintf("%s stopped before its kernel ran to its end (%d bytes of console)", what, len(out))}
	}
}

// newestKernel is the newest vmlinuz-* in dir, by modification time.
func newestKernel(dir string) (string, error) {
	ms, err := filepath.Glob(filepath.Join(dir, "vmlinuz-*"))
	if err != nil {
		return "", err
	}
	best, bestT := "", time.Time{}
	for _, m := range ms {
		if st, err := os.Stat(m); err == nil && st.Mode().IsRegular() && st.ModTime().After(bestT) {
			best, bestT = m, st.ModTime()
		}
	}
	if best == "" {
		return "", errors.New("no " + filepath.Join(dir, "vmlinuz-*"))
	}
	return best, nil
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return s
}
