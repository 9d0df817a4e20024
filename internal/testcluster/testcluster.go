package testcluster

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tandemhci/tandem/internal/faultfs"
	"github.com/tandemhci/tandem/internal/pki"
)

const (
	nsPrefix      = "tdmt"
	defaultNodes  = 3
	defaultSubnet = "10.99.0"
	hostOffset    = 10 // node i gets <subnet>.(10+i)
	bridgeName    = "br0"
	hostIfName    = "eth0"

	// The VM network: a second L2 segment shared by all hosts, so a guest
	// keeps its address and its peers across live migration.
	defaultVMSubnet = "10.98.0"
	vmSwitchBridge  = "br1"        // in the switch ns; holds the receiver address
	vmHostBridge    = "vmbr0"      // in every host ns; guests' taps join it
	vmUplinkName    = "vmup"       // host side of the veth to br1
	switchName      = "sw"         // name of the switch pseudo-node
	netnsDir        = "/run/netns" // where iproute2 keeps named namespaces

	// ipTimeout bounds every iproute2 invocation; they normally take
	// milliseconds, so hitting it means the system is wedged.
	ipTimeout = 10 * time.Second
	// reapTimeout bounds how long teardown waits for SIGKILLed children.
	reapTimeout = 10 * time.Second
)

// ErrNotRoot is returned (wrapped) by Available when the test does not run
// as root; it is the only reason tests may skip instead of fail.
var ErrNotRoot = errors.New("testcluster needs root")

// Options configures New. The zero value is a 3-node cluster on 10.99.0.0/24.
type Options struct {
	Nodes   int    // number of hosts, default 3
	Subnet  string // first three octets of the /24, default "10.99.0"
	BaseDir string // where per-node dirs go; default t.TempDir()
	// VMSubnet is the first three octets of the VM network's /24, default
	// "10.98.0". Every cluster has its own switch, so concurrent clusters
	// can use the same one.
	VMSubnet string
}

// Cluster is a set of simulated hosts sharing one virtual switch. Its
// methods are safe for concurrent use. Methods without an error result
// report failures with t.Errorf.
type Cluster struct {
	Nodes []*Node

	// VMBridge is the bridge on every host that guests' NICs join
	// ("vmbr0"); it carries no host address.
	VMBridge string
	// VMSubnet is the VM network in CIDR form (e.g. "10.98.0.0/24").
	VMSubnet string
	// ReceiverIP is the switch's address on the VM network ("10.98.0.1"):
	// processes started with StartOnSwitch or sockets from
	// ListenUDPOnSwitch reach every guest, wherever it runs.
	ReceiverIP string

	t      Reporter
	ip     string // path of the ip binary
	prefix string // tdmt<pid>-<rand>, shared by all namespaces of the cluster
	swNS   string
	sw     *Node // pseudo-node for processes in the switch namespace

	mu      sync.Mutex
	created []string // namespaces to delete on Close, in creation order
	procs   []*Proc  // every process started, including exited ones
	closers []func() // run by Close before processes are killed (BMC callbacks)
	// logChecks are the node/process logs checkLogAtClose already watches.
	logChecks map[string]bool
	// unmounts run by Close last, once no process can use the mounts
	// (Tandem.FaultDisk).
	unmounts []func()
	disks    map[*Node][]*faultfs.FS // fault disks by node, for PowerCut
	closed   bool
	ca       *pki.CA // placeholder CA of libvirtd's TLS files, see ensureLibvirtPKI
}

// Node is one simulated host.
type Node struct {
	Index int    // 1-based
	Name  string // "n1", "n2", ...
	NS    string // network namespace name
	IP    string // e.g. "10.99.0.11"
	Dir   string // per-node private directory (BaseDir/n1), created

	port   string // switch-side veth name inside the switch namespace
	vmPort string // switch-side veth of the VM network uplink
}

// Available reports whether clusters can be created: nil if we are root and
// `ip netns` works. The error wraps ErrNotRoot when not root.
func Available() error {
	if euid := os.Geteuid(); euid != 0 {
		return fmt.Errorf("%w (euid %d)", ErrNotRoot, euid)
	}
	ip, err := FindIP()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), ipTimeout)
	defer cancel()
	if out, err := exec.CommandContext(ctx, ip, "netns", "list").CombinedOutput(); err != nil {
		return fmt.Errorf("testcluster: ip netns list: %w: %s", err, bytes.TrimSpace(out))
	}
	return nil
}

// Require skips the test when not running as root and fails it when running
// as root but network namespaces are unusable: as root a broken environment
// must not silently turn integration tests into skips.
func Require(t testing.TB) {
	t.Helper()
	requireNetns(t)
}

// requireNetns is Require for any test-like t.
func requireNetns(t interface {
	Helper()
	Skipf(string, ...any)
	Fatalf(string, ...any)
}) {
	t.Helper()
	err := Available()
	switch {
	case errors.Is(err, ErrNotRoot):
		t.Skipf("skipping: %v", err)
	case err != nil:
		t.Fatalf("network namespaces unavailable: %v", err)
	}
}

// FindIP locates iproute2's ip; root's PATH does not always contain sbin.
func FindIP() (string, error) {
	if p, err := exec.LookPath("ip"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("testcluster: ip (iproute2) not found")
}

// Reporter receives the harness's problems and notes. testing.TB is one;
// programs outside tests (the demo, benchmarks) pass their own.
type Reporter interface {
	Helper()
	Errorf(format string, args ...any)
	Logf(format string, args ...any)
}

// New creates the namespaces, switch and links of an Options.Nodes-node
// cluster and registers Close with t.Cleanup. It calls t.Fatal on any setup
// error, so it must be called from the test goroutine.
func New(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.BaseDir == "" {
		// Requested before registering Close so that (cleanups being LIFO)
		// processes are dead before their directories are removed.
		opts.BaseDir = t.TempDir()
	}
	var c *Cluster
	t.Cleanup(func() {
		if c == nil {
			return
		}
		if t.Failed() {
			c.logTails(20)
		}
		c.Close()
	})
	c, err := Open(opts, t)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Open is New for programs that are not tests: the caller must call Close.
// opts.BaseDir is required.
func Open(opts Options, r Reporter) (*Cluster, error) {
	if opts.Nodes == 0 {
		opts.Nodes = defaultNodes
	}
	if opts.Subnet == "" {
		opts.Subnet = defaultSubnet
	}
	if opts.VMSubnet == "" {
		opts.VMSubnet = defaultVMSubnet
	}
	if opts.Nodes < 0 || opts.Nodes > 254-hostOffset {
		return nil, fmt.Errorf("testcluster: Nodes = %d, want 1..%d", opts.Nodes, 254-hostOffset)
	}
	if net.ParseIP(opts.Subnet+".0").To4() == nil || strings.Count(opts.Subnet, ".") != 2 {
		return nil, fmt.Errorf("testcluster: Subnet %q is not the first three octets of an IPv4 /24", opts.Subnet)
	}
	if net.ParseIP(opts.VMSubnet+".0").To4() == nil || strings.Count(opts.VMSubnet, ".") != 2 || opts.VMSubnet == opts.Subnet {
		return nil, fmt.Errorf("testcluster: VMSubnet %q is not the first three octets of an IPv4 /24 distinct from Subnet", opts.VMSubnet)
	}
	if opts.BaseDir == "" {
		return nil, errors.New("testcluster: Options.BaseDir is required")
	}
	ip, err := FindIP()
	if err != nil {
		return nil, err
	}
	c := &Cluster{
		t:          r,
		ip:         ip,
		VMBridge:   vmHostBridge,
		VMSubnet:   opts.VMSubnet + ".0/24",
		ReceiverIP: opts.VMSubnet + ".1",
	}
	c.sweepStale()
	if err := c.setup(opts); err != nil {
		c.Close()
		return nil, fmt.Errorf("testcluster: setup: %w", err)
	}
	return c, nil
}

// setup builds the topology. Every interface is created inside its final
// namespace (veth peers via "peer ... netns"), so nothing ever touches the
// root namespace.
func (c *Cluster) setup(opts Options) error {
	if err := c.addSwitchNS(); err != nil {
		return err
	}
	c.sw = &Node{Name: switchName, NS: c.swNS, IP: c.ReceiverIP, Dir: filepath.Join(opts.BaseDir, switchName)}
	if err := os.MkdirAll(c.sw.Dir, 0o755); err != nil {
		return fmt.Errorf("switch dir: %w", err)
	}
	sw := []string{
		fmt.Sprintf("link add %s type bridge forward_delay 0", bridgeName),
		fmt.Sprintf("link add %s type bridge forward_delay 0", vmSwitchBridge),
	}
	for i := 1; i <= opts.Nodes; i++ {
		n := &Node{
			Index:  i,
			Name:   "n" + strconv.Itoa(i),
			IP:     fmt.Sprintf("%s.%d", opts.Subnet, hostOffset+i),
			port:   "vn" + strconv.Itoa(i),
			vmPort: "vm" + strconv.Itoa(i),
		}
		n.NS = c.prefix + "-" + n.Name
		n.Dir = filepath.Join(opts.BaseDir, n.Name)
		if err := os.MkdirAll(n.Dir, 0o755); err != nil {
			return fmt.Errorf("node dir: %w", err)
		}
		if err := c.addNS(n.NS); err != nil {
			return err
		}
		c.Nodes = append(c.Nodes, n)
		sw = append(sw,
			fmt.Sprintf("link add %s type veth peer name %s netns %s", n.port, hostIfName, n.NS),
			fmt.Sprintf("link set %s master %s", n.port, bridgeName),
			fmt.Sprintf("link set %s up", n.port),
			fmt.Sprintf("link add %s type veth peer name %s netns %s", n.vmPort, vmUplinkName, n.NS),
			fmt.Sprintf("link set %s master %s", n.vmPort, vmSwitchBridge),
			fmt.Sprintf("link set %s up", n.vmPort),
		)
	}
	sw = append(sw,
		fmt.Sprintf("link set %s up", bridgeName),
		fmt.Sprintf("addr add %s/24 dev %s", c.ReceiverIP, vmSwitchBridge),
		fmt.Sprintf("link set %s up", vmSwitchBridge),
		"link set lo up",
	)
	if err := c.ipBatch(c.swNS, sw); err != nil {
		return err
	}
	for _, n := range c.Nodes {
		if err := c.ipBatch(n.NS, []string{
			fmt.Sprintf("addr add %s/24 dev %s", n.IP, hostIfName),
			"link set lo up",
			fmt.Sprintf("link set %s up", hostIfName),
			// The VM bridge has no host address: guests, not the host,
			// live on the VM network.
			fmt.Sprintf("link add %s type bridge forward_delay 0", vmHostBridge),
			fmt.Sprintf("link set %s master %s", vmUplinkName, vmHostBridge),
			fmt.Sprintf("link set %s up", vmUplinkName),
			fmt.Sprintf("link set %s up", vmHostBridge),
		}); err != nil {
			return err
		}
	}
	return nil
}

// addSwitchNS picks the cluster prefix. The creator's PID is encoded so the
// stale sweep can tell live clusters from leftovers; the random part keeps
// concurrent clusters of one process apart, and a clash is retried because
// `ip netns add` refuses existing names.
func (c *Cluster) addSwitchNS() error {
	var err error
	for range 8 {
		c.prefix = fmt.Sprintf("%s%d-%04x", nsPrefix, os.Getpid(), rand.Uint32()&0xffff)
		c.swNS = c.prefix + "-sw"
		if _, statErr := os.Stat(filepath.Join(netnsDir, c.swNS)); statErr == nil {
			continue
		}
		if err = c.addNS(c.swNS); err == nil {
			return nil
		}
	}
	return err
}

func (c *Cluster) addNS(name string) error {
	if _, err := c.run("netns", "add", name); err != nil {
		return err
	}
	c.mu.Lock()
	c.created = append(c.created, name)
	c.mu.Unlock()
	return nil
}

// run executes ip with args and returns its combined output.
func (c *Cluster) run(args ...string) ([]byte, error) {
	return c.runStdin(nil, args...)
}

func (c *Cluster) runStdin(stdin io.Reader, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), ipTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.ip, args...)
	cmd.Stdin = stdin
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return out, nil
}

// ipBatch runs several ip commands inside ns with a single exec.
func (c *Cluster) ipBatch(ns string, cmds []string) error {
	_, err := c.runStdin(strings.NewReader(strings.Join(cmds, "\n")+"\n"), "-n", ns, "-batch", "-")
	return err
}

// sweepStale removes tdmt* namespaces left behind by test processes that no
// longer exist, killing whatever still runs inside them. Errors are only
// logged: another process may be sweeping the same leftovers concurrently.
func (c *Cluster) sweepStale() {
	out, err := c.run("netns", "list")
	if err != nil {
		c.t.Logf("testcluster: stale sweep: %v", err)
		return
	}
	for _, name := range parseNetnsList(out) {
		pid, ok := creatorPID(name)
		if !ok || pid == os.Getpid() || pidAlive(pid) {
			continue
		}
		c.killNSPids(name, syscall.SIGKILL)
		if _, err := c.run("netns", "delete", name); err != nil {
			if _, statErr := os.Stat(filepath.Join(netnsDir, name)); statErr == nil {
				c.t.Logf("testcluster: stale sweep: %v", err)
			} // else a concurrent sweeper won the race
			continue
		}
		c.t.Logf("testcluster: removed stale namespace %s (creator pid %d gone)", name, pid)
	}
}

// parseNetnsList extracts names from `ip netns list` ("name (id: 3)").
func parseNetnsList(out []byte) []string {
	var names []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	return names
}

// creatorPID parses the PID out of a harness namespace name
// ("tdmt<pid>-<rand>-<role>").
func creatorPID(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, nsPrefix)
	if !ok {
		return 0, false
	}
	digits, _, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, false
	}
	pid, err := strconv.Atoi(digits)
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, true
}

// pidAlive reports whether pid runs. Zombies count as dead: a crashed test
// binary may linger unreaped when PID 1 (e.g. in a container) never waits.
func pidAlive(pid int) bool {
	if err := unix.Kill(pid, 0); err != nil && !errors.Is(err, unix.EPERM) {
		return false
	}
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return !errors.Is(err, os.ErrNotExist)
	}
	// The state follows the parenthesised command, which may contain ") ".
	if i := bytes.LastIndex(data, []byte(") ")); i >= 0 && i+2 < len(data) {
		switch data[i+2] {
		case 'Z', 'X':
			return false
		}
	}
	return true
}

// nsPids lists the PIDs of all processes inside namespace ns.
func (c *Cluster) nsPids(ns string) ([]int, error) {
	out, err := c.run("netns", "pids", ns)
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 0 && pid != os.Getpid() {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// killNSPids signals every process inside ns, catching strays that left
// their process group (daemons that setsid, VMs, Exec commands).
func (c *Cluster) killNSPids(ns string, sig syscall.Signal) []int {
	pids, err := c.nsPids(ns)
	if err != nil {
		return nil
	}
	for _, pid := range pids {
		_ = unix.Kill(pid, sig) // may have exited meanwhile
	}
	return pids
}

// Node returns the node with the given name ("n1", ...) or nil.
func (c *Cluster) Node(name string) *Node {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// owns reports whether n is one of c's hosts or its switch pseudo-node
// (which StartOnSwitch and ExecSwitch run things on).
func (c *Cluster) owns(n *Node) bool {
	if n != nil && n == c.sw {
		return true
	}
	for _, m := range c.Nodes {
		if m == n {
			return true
		}
	}
	return false
}

// Isolate takes the node's switch port down: the node can no longer reach
// or be reached by any other node (both directions), while its processes
// and its loopback keep working. Only the backend network is cut; guests
// on the node stay on the VM network (see IsolateVM).
func (c *Cluster) Isolate(n *Node) { c.setPort(n, false, "down") }

// Heal brings the node's switch port back up after Isolate.
func (c *Cluster) Heal(n *Node) { c.setPort(n, false, "up") }

// IsolateVM takes the node's VM network uplink down: guests running on n
// can no longer reach guests elsewhere or the switch's ReceiverIP, while
// the backend network is untouched.
func (c *Cluster) IsolateVM(n *Node) { c.setPort(n, true, "down") }

// HealVM brings the node's VM network uplink back up after IsolateVM.
func (c *Cluster) HealVM(n *Node) { c.setPort(n, true, "up") }

func (c *Cluster) setPort(n *Node, vm bool, state string) {
	c.t.Helper()
	if !c.owns(n) || n == c.sw {
		c.t.Errorf("testcluster: node %v is not a host of this cluster", n)
		return
	}
	port := n.port
	if vm {
		port = n.vmPort
	}
	if _, err := c.run("-n", c.swNS, "link", "set", port, state); err != nil {
		c.t.Errorf("testcluster: set %s link %s %s: %v", n.Name, port, state, err)
	}
}

// Exec runs a short command inside n's network namespace and returns its
// combined output; on failure the error includes that output. The command
// and anything it forked are killed when ctx ends.
func (c *Cluster) Exec(ctx context.Context, n *Node, argv ...string) ([]byte, error) {
	if !c.owns(n) {
		return nil, fmt.Errorf("testcluster: node %v is not part of this cluster", n)
	}
	if len(argv) == 0 {
		return nil, errors.New("testcluster: Exec: empty argv")
	}
	cmd := exec.CommandContext(ctx, c.ip, append([]string{"netns", "exec", n.NS}, argv...)...)
	cmd.Dir = n.Dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return unix.Kill(-cmd.Process.Pid, unix.SIGKILL) }
	cmd.WaitDelay = time.Second // don't hang on grandchildren holding the output pipe
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("exec %q on %s: %w: %s", argv, n.Name, err, bytes.TrimSpace(out))
	}
	return out, nil
}

// LogTail returns the last lines of the log of process name on n, for
// failure messages.
func (c *Cluster) LogTail(n *Node, name string, lines int) string {
	return logTail(logPath(n, name), lines)
}

func logPath(n *Node, name string) string { return filepath.Join(n.Dir, name+".log") }

func logTail(path string, lines int) string {
	const maxRead = 1 << 20
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > maxRead {
		_, _ = f.Seek(-maxRead, io.SeekEnd)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return fmt.Sprintf("(reading log: %v)", err)
	}
	all := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if lines > 0 && len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// logTails dumps the end of every process log, so a failed test shows what
// its daemons said before the temp dirs disappear.
func (c *Cluster) logTails(lines int) {
	c.mu.Lock()
	procs := append([]*Proc(nil), c.procs...)
	c.mu.Unlock()
	seen := map[string]bool{}
	for _, p := range procs {
		if seen[p.Log] {
			continue
		}
		seen[p.Log] = true
		c.t.Logf("testcluster: last %d lines of %s on %s (%s):\n%s", lines, p.Name, p.Node.Name, p.Log, logTail(p.Log, lines))
	}
}

// Close kills every process of the cluster, reaps the harness's children,
// deletes all namespaces (with them the bridge and veths) and then
// unmounts the fault disks. It is idempotent and runs automatically via
// t.Cleanup; problems are reported with t.Errorf.
func (c *Cluster) Close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	procs := append([]*Proc(nil), c.procs...)
	created := append([]string(nil), c.created...)
	closers := c.closers
	unmounts := c.unmounts
	c.mu.Unlock()

	// Helpers that may still start processes (a BMC powering a host on)
	// stop first, so nothing new appears while we kill.
	for i := len(closers) - 1; i >= 0; i-- {
		closers[i]()
	}

	for _, p := range procs {
		p.kill()
	}
	// Strays outside the harness's process groups; repeat because a dying
	// parent may still have forked. Namespace deletion only drops the name,
	// so anything left running would keep the namespace alive invisibly.
	for _, ns := range created {
		for range 5 {
			if len(c.killNSPids(ns, syscall.SIGKILL)) == 0 {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	c.reap(procs)
	for i := len(created) - 1; i >= 0; i-- {
		if _, err := c.run("netns", "delete", created[i]); err != nil {
			c.t.Errorf("testcluster: cleanup: %v", err)
		}
	}
	for i := len(unmounts) - 1; i >= 0; i-- {
		unmounts[i]()
	}
}

// reap waits (bounded) for the given processes to be reaped.
func (c *Cluster) reap(procs []*Proc) {
	deadline := time.NewTimer(reapTimeout)
	defer deadline.Stop()
	for _, p := range procs {
		select {
		case <-p.done:
		case <-deadline.C:
			c.t.Errorf("testcluster: %s on %s (pid %d) not reaped after SIGKILL", p.Name, p.Node.Name, p.PID())
			return
		}
	}
}

// LogReporter reports the harness's notes and problems to a slog logger,
// for programs that are not tests (the demo, benchmarks).
func LogReporter(log *slog.Logger) Reporter { return logReporter{log} }

type logReporter struct{ log *slog.Logger }

func (r logReporter) Helper()                           {}
func (r logReporter) Logf(format string, args ...any)   { r.log.Info(fmt.Sprintf(format, args...)) }
func (r logReporter) Errorf(format string, args ...any) { r.log.Error(fmt.Sprintf(format, args...)) }

// checkLogAtClose makes Close report an error if the log of process name on
// n holds bad: a message a process logs for a broken invariant that must
// fail the test even though the process went on (a reader that mutated
// the shared metadata, invariant.ReaderMutation). One check per log and
// message, however often the process restarts.
func (c *Cluster) checkLogAtClose(n *Node, name, bad string) {
	path := logPath(n, name)
	key := path + "\x00" + bad
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.logChecks[key] {
		return
	}
	if c.logChecks == nil {
		c.logChecks = map[string]bool{}
	}
	c.logChecks[key] = true
	c.closers = append(c.closers, func() {
		b, err := os.ReadFile(path)
		if err != nil {
			return
		}
		if i := bytes.Index(b, []byte(bad)); i >= 0 {
			line := b[bytes.LastIndexByte(b[:i], '\n')+1:]
			if j := bytes.IndexByte(line, '\n'); j >= 0 {
				line = line[:j]
			}
			c.t.Errorf("testcluster: %s on %s logged %q: %s", name, n.Name, bad, line)
		}
	})
}
