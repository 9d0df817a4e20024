package benchkit

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tandemhci/tandem/internal/ctxtime"
)

// NBDUnixURI is the NBD URI of export on the unix socket socket.
func NBDUnixURI(export, socket string) string {
	return fmt.Sprintf("nbd+unix:///%s?socket=%s", export, socket)
}

// Preallocate creates path with size bytes allocated, as Tandem's block
// store does for its replicas.
func Preallocate(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	if err := unix.Fallocate(int(f.Fd()), 0, 0, size); err != nil {
		f.Close()
		return fmt.Errorf("preallocate %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", path, err)
	}
	return nil
}

// Server is a process the benchmark started outside the cluster.
type Server struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// PID is the server's process ID (the leader of its process group).
func (s *Server) PID() int { return s.cmd.Process.Pid }

// Alive reports whether the server has not exited yet.
func (s *Server) Alive() bool {
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

// Kill SIGKILLs the server's process group by its PID and waits for it.
func (s *Server) Kill() {
	if s.Alive() {
		_ = unix.Kill(-s.PID(), unix.SIGKILL)
	}
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
	}
}

// StartServer starts argv in its own process group with its output in
// logPath, killed with the group when ctx ends or we die (PDEATHSIG).
func StartServer(ctx context.Context, argv []string, logPath string) (*Server, error) {
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("%s log: %w", argv[0], err)
	}
	defer lf.Close()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return unix.Kill(-cmd.Process.Pid, unix.SIGKILL) }
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", argv[0], err)
	}
	s := &Server{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(s.done) }()
	return s, nil
}

// WaitExport polls the export with nbdinfo until it answers with the
// expected size.
func WaitExport(ctx context.Context, ns, uri string, size int64, timeout time.Duration, alive func() bool) error {
	deadline := time.Now().Add(timeout)
	var last error
	argv := []string{"nbdinfo", "--size", uri}
	if ns != "" {
		argv = append([]string{"ip", "netns", "exec", ns}, argv...)
	}
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		out, err := exec.CommandContext(cctx, argv[0], argv[1:]...).CombinedOutput()
		cancel()
		if err == nil {
			got, perr := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
			if perr == nil && got == size {
				return nil
			}
			last = fmt.Errorf("nbdinfo --size %s: %q, want %d", uri, strings.TrimSpace(string(out)), size)
		} else {
			last = fmt.Errorf("nbdinfo --size %s: %w: %s", uri, err, strings.TrimSpace(string(out)))
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if alive != nil && !alive() {
			return fmt.Errorf("Server exited; %w", last)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("export not ready within %s: %w", timeout, last)
		}
		if err := ctxtime.Sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}

// StartQemuNBD runs qemu-nbd, the single-copy reference server: the raw
// file as export "ref" on the unix socket sock with --cache=none, its
// output in logPath, and waits until the export answers with size bytes.
// Its lifetime is bounded by ctx and by ours (PDEATHSIG); the caller Kills
// it by PID.
func StartQemuNBD(ctx context.Context, file, sock, logPath string, size int64) (*Server, error) {
	s, err := StartServer(ctx, []string{"qemu-nbd", "-f", "raw", "--shared=8", "--persistent", "--cache=none", "--discard=unmap", "-k", sock, "-x", QemuNBDExport, file}, logPath)
	if err != nil {
		return nil, err
	}
	if err := WaitExport(ctx, "", NBDUnixURI(QemuNBDExport, sock), size, 10*time.Second, s.Alive); err != nil {
		s.Kill()
		log, _ := os.ReadFile(logPath)
		return nil, fmt.Errorf("qemu-nbd: %w; its log: %s", err, Truncate(strings.TrimSpace(string(log)), 1000))
	}
	return s, nil
}

// QemuNBDExport is the export name StartQemuNBD serves.
const QemuNBDExport = "ref"

// ParseSize reads a byte count with an optional 1024-based unit: 1G, 1GiB,
// 512M, 4096.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := strings.IndexFunc(t, func(r rune) bool { return r < '0' || r > '9' })
	if i < 0 {
		i = len(t)
	}
	num, unit := t[:i], strings.ToUpper(strings.TrimSpace(t[i:]))
	if num == "" {
		return 0, fmt.Errorf("size %q: no number", s)
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q: %w", s, err)
	}
	shift := map[string]uint{"": 0, "B": 0, "K": 10, "KB": 10, "KIB": 10, "M": 20, "MB": 20, "MIB": 20, "G": 30, "GB": 30, "GIB": 30, "T": 40, "TB": 40, "TIB": 40}
	sh, ok := shift[unit]
	if !ok {
		return 0, fmt.Errorf("size %q: unknown unit %q (use K, M, G or T, 1024-based)", s, unit)
	}
	if n > (1<<62)>>sh {
		return 0, fmt.Errorf("size %q: too large", s)
	}
	return n << sh, nil
}
