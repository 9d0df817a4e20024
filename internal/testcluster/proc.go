package testcluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Proc is a long-running process started in a node's namespace by
// Cluster.Start. It is the leader of its own process group.
type Proc struct {
	Name string
	Node *Node
	Cmd  *exec.Cmd
	Log  string // path of the log file receiving stdout and stderr

	done chan struct{} // closed once the process has been reaped
	err  error         // result of Cmd.Wait, valid after done is closed

	mu       sync.Mutex
	exited   bool // exited (possibly still a zombie); guards group signals
	termSent bool // harness sent SIGTERM (Stop)
	killSent bool // harness sent SIGKILL (Kill, Close, Stop timeout)
}

// Start runs argv inside n's network namespace via `ip netns exec`, which
// execs argv so PID is the real process. argv[0] is resolved against the
// test's PATH and working directory. env is appended to the test's
// environment (later entries win). The working directory is n.Dir and
// stdout and stderr are appended to n.Dir/<name>.log. Start returns once
// the process has been started; a name may be reused once its previous
// process has exited (e.g. a daemon restarted after Kill).
func (c *Cluster) Start(n *Node, name string, argv []string, env []string) (*Proc, error) {
	if !c.owns(n) {
		return nil, fmt.Errorf("testcluster: start %q: node %v is not part of this cluster", name, n)
	}
	if name == "" || strings.ContainsRune(name, '/') {
		return nil, fmt.Errorf("testcluster: start: invalid process name %q", name)
	}
	if len(argv) == 0 {
		return nil, fmt.Errorf("testcluster: start %s on %s: empty argv", name, n.Name)
	}
	// Resolve here: if ip fails to exec argv it exits 255 after Start has
	// already "succeeded", which makes for a confusing test failure.
	// Made absolute because the child runs in n.Dir.
	bin, err := exec.LookPath(argv[0])
	if err == nil {
		bin, err = filepath.Abs(bin)
	}
	if err != nil {
		return nil, fmt.Errorf("testcluster: start %s on %s: %w", name, n.Name, err)
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, fmt.Errorf("testcluster: start %s on %s: cluster closed", name, n.Name)
	}
	for _, p := range c.procs {
		if p.Node == n && p.Name == name && p.Alive() {
			return nil, fmt.Errorf("testcluster: start %s on %s: already running as pid %d", name, n.Name, p.PID())
		}
	}

	log := logPath(n, name)
	f, err := os.OpenFile(log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("testcluster: start %s on %s: %w", name, n.Name, err)
	}
	defer f.Close() // the child has its own copy once started
	// A header per start keeps restarts apart in the shared log.
	fmt.Fprintf(f, "=== testcluster: %s start %q in %s\n", time.Now().Format(time.RFC3339Nano), argv, n.NS)

	args := append([]string{"netns", "exec", n.NS, bin}, argv[1:]...)
	cmd := exec.Command(c.ip, args...)
	cmd.Dir = n.Dir
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout = f // an *os.File is inherited directly: no copy goroutines
	cmd.Stderr = f
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:   true,            // own group: signals reach its children too
		Pdeathsig: syscall.SIGKILL, // no orphans if the test binary dies
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("testcluster: start %s on %s: %w", name, n.Name, err)
	}
	p := &Proc{Name: name, Node: n, Cmd: cmd, Log: log, done: make(chan struct{})}
	c.procs = append(c.procs, p)
	go p.reaper()
	return p, nil
}

// reaper waits for the exit without reaping first (WNOWAIT) and marks the
// process exited before Cmd.Wait releases the PID. Group signals are sent
// only while exited is false, so they can never hit a recycled PID.
func (p *Proc) reaper() {
	pid := p.Cmd.Process.Pid
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	p.mu.Lock()
	p.exited = true
	p.mu.Unlock()
	p.err = p.Cmd.Wait()
	close(p.done)
}

// PID returns the process ID.
func (p *Proc) PID() int { return p.Cmd.Process.Pid }

// Alive reports whether the process is still running (a stopped process is
// alive).
func (p *Proc) Alive() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.exited
}

// Wait waits for the process to exit and returns its Cmd.Wait error, or
// ctx's error if ctx ends first.
func (p *Proc) Wait(ctx context.Context) error {
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return fmt.Errorf("testcluster: wait for %s on %s: %w", p.Name, p.Node.Name, ctx.Err())
	}
}

// Stop sends SIGTERM (and SIGCONT, in case it is paused) to the process
// group and waits for the exit; if ctx ends first the group is SIGKILLed and
// an error wrapping ctx.Err() is returned. Exiting because of the harness's
// own signal counts as success; any other failure exit is returned.
func (p *Proc) Stop(ctx context.Context) error {
	p.mu.Lock()
	if !p.exited {
		p.termSent = true
		p.signalLocked(unix.SIGTERM)
		p.signalLocked(unix.SIGCONT)
	}
	p.mu.Unlock()

	select {
	case <-p.done:
		return p.result()
	case <-ctx.Done():
	}
	p.kill()
	t := time.NewTimer(reapTimeout)
	defer t.Stop()
	select {
	case <-p.done:
		return fmt.Errorf("testcluster: stop %s on %s: no exit after SIGTERM, killed: %w", p.Name, p.Node.Name, ctx.Err())
	case <-t.C:
		return fmt.Errorf("testcluster: stop %s on %s: not reaped after SIGKILL: %w", p.Name, p.Node.Name, ctx.Err())
	}
}

// result interprets the exit status for Stop.
func (p *Proc) result() error {
	if p.err == nil {
		return nil
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			p.mu.Lock()
			ours := (ws.Signal() == unix.SIGTERM && p.termSent) || (ws.Signal() == unix.SIGKILL && p.killSent)
			p.mu.Unlock()
			if ours {
				return nil
			}
		}
	}
	return fmt.Errorf("testcluster: %s on %s: %w", p.Name, p.Node.Name, p.err)
}

// kill SIGKILLs the process group unless the process already exited.
func (p *Proc) kill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.exited {
		p.killSent = true
		p.signalLocked(unix.SIGKILL)
	}
}

// signal sends sig to the process group unless the process already exited.
func (p *Proc) signal(sig syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.exited {
		p.signalLocked(sig)
	}
}

// signalLocked signals the group and the leader itself, in case it moved to
// another group. p.mu must be held and p.exited false, which guarantees the
// PID (and so the group ID) has not been recycled.
func (p *Proc) signalLocked(sig syscall.Signal) {
	pid := p.PID()
	_ = unix.Kill(-pid, sig) // ESRCH if the leader left its group
	_ = unix.Kill(pid, sig)
}

// nodeProcs returns the live processes the harness started on n.
func (c *Cluster) nodeProcs(n *Node) []*Proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	var live []*Proc
	for _, p := range c.procs {
		if p.Node == n && p.Alive() {
			live = append(live, p)
		}
	}
	return live
}

// Kill simulates a host crash: it SIGKILLs every process the harness started
// on n (by PID and process group) and anything else running in n's
// namespace, then reaps the harness's processes. They can be started again
// with Start.
func (c *Cluster) Kill(n *Node) {
	c.t.Helper()
	if !c.owns(n) {
		c.t.Errorf("testcluster: Kill: node %v is not part of this cluster", n)
		return
	}
	procs := c.nodeProcs(n)
	for _, p := range procs {
		p.kill()
	}
	c.killNSPids(n.NS, syscall.SIGKILL)
	c.reap(procs)
	// A process forking while it was killed (libvirtd spawning QEMU) can
	// leave a child behind; a crashed host has none, so kill until empty.
	deadline := time.Now().Add(reapTimeout)
	for time.Now().Before(deadline) {
		if len(c.killNSPids(n.NS, syscall.SIGKILL)) == 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Errorf("testcluster: Kill: processes still in %s after %v", n.NS, reapTimeout)
}

// Pause freezes the node: SIGSTOP to the process groups of all its live
// processes and to anything else in its namespace. The kernel still
// completes TCP handshakes for its listening sockets, but nothing answers.
func (c *Cluster) Pause(n *Node) { c.signalNode(n, unix.SIGSTOP) }

// Resume undoes Pause with SIGCONT.
func (c *Cluster) Resume(n *Node) { c.signalNode(n, unix.SIGCONT) }

func (c *Cluster) signalNode(n *Node, sig syscall.Signal) {
	c.t.Helper()
	if !c.owns(n) {
		c.t.Errorf("testcluster: signal %v: node %v is not part of this cluster", sig, n)
		return
	}
	for _, p := range c.nodeProcs(n) {
		p.signal(sig)
	}
	c.killNSPids(n.NS, sig)
}
