package compute

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// HostQEMU is one QEMU process libvirt started on this host, found
// without asking libvirtd (which may be hung: that is when a self-fence
// needs this).
type HostQEMU struct {
	PID    int
	Domain string
}

// FindHostQEMU lists the QEMU processes of this host's VMs from /proc: a
// process whose command line runs qemu-system-* with libvirt's "-name
// guest=NAME" and whose network namespace is this process's. The namespace
// is what "this host" means when several simulated hosts share a kernel
// (the test harness); on a real host every QEMU shares tandemd's.
func FindHostQEMU() ([]HostQEMU, error) {
	self, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		return nil, fmt.Errorf("compute: own network namespace: %w", err)
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("compute: list processes: %w", err)
	}
	var out []HostQEMU
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		dom, ok := qemuDomain(pid)
		if !ok {
			continue
		}
		if ns, err := os.Readlink(filepath.Join("/proc", e.Name(), "ns", "net")); err != nil || ns != self {
			continue
		}
		out = append(out, HostQEMU{PID: pid, Domain: dom})
	}
	return out, nil
}

// qemuDomain reads a process's command line and returns the domain name if
// it is a libvirt-started QEMU.
func qemuDomain(pid int) (string, bool) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	if err != nil || len(b) == 0 {
		return "", false
	}
	return QEMUDomain(b)
}

// QEMUDomain reads a QEMU command line (NUL-separated, as in
// /proc/PID/cmdline) and returns the domain of libvirt's "-name
// guest=NAME"; false for any other process.
func QEMUDomain(cmdline []byte) (string, bool) {
	args := bytes.Split(bytes.TrimRight(cmdline, "\x00"), []byte{0})
	if len(args) == 0 || !strings.HasPrefix(filepath.Base(string(args[0])), "qemu-system-") {
		return "", false
	}
	for i := 1; i+1 < len(args); i++ {
		if string(args[i]) != "-name" {
			continue
		}
		for _, kv := range strings.Split(string(args[i+1]), ",") {
			if name, ok := strings.CutPrefix(kv, "guest="); ok && name != "" {
				return name, true
			}
		}
	}
	return "", false
}

// KillHostQEMU sends SIGKILL to this host's QEMU processes whose domain
// match accepts, and waits until each is gone or a zombie (dead: it runs
// nothing and holds no memory or open file; a paused libvirtd may not
// reap it). It returns the domains it saw die; an error names those it
// could not prove dead by the time ctx ended.
func KillHostQEMU(ctx context.Context, match func(domain string) bool) ([]string, error) {
	procs, err := FindHostQEMU()
	if err != nil {
		return nil, err
	}
	var killed []string
	var errs []error
	for _, p := range procs {
		if !match(p.Domain) {
			continue
		}
		if err := syscall.Kill(p.PID, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("kill QEMU %d of %s: %w", p.PID, p.Domain, err))
			continue
		}
		if err := waitDead(ctx, p.PID); err != nil {
			errs = append(errs, fmt.Errorf("QEMU %d of %s: %w", p.PID, p.Domain, err))
			continue
		}
		killed = append(killed, p.Domain)
	}
	return killed, errors.Join(errs...)
}

// waitDead waits until pid is gone or a zombie.
func waitDead(ctx context.Context, pid int) error {
	for {
		st, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		// The state follows the command name in parentheses.
		if i := bytes.LastIndexByte(st, ')'); err == nil && i >= 0 && i+2 < len(st) && (st[i+2] == 'Z' || st[i+2] == 'X') {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("still alive after SIGKILL: %w", ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}
