package vmbench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/tandemhci/tandem/bench/internal/benchkit"
	"github.com/tandemhci/tandem/internal/adminclient"
	"github.com/tandemhci/tandem/internal/guest"
	"github.com/tandemhci/tandem/internal/testcluster"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// Options configures Open.
type Options struct {
	// Name prefixes the temporary directory ("tandem-bench-<name>-").
	Name string
	// Bin holds tandemd and tandem; empty builds them into the temporary
	// directory.
	Bin   string
	Nodes int // default 3
	// CapacityMiB is the memory each node offers VMs (0: the daemon's
	// default).
	CapacityMiB uint64
	// BMC gives every host an ipmi_sim BMC whose power-on restarts its
	// libvirtd and tandemd.
	BMC bool
	// LibvirtInsecureTCP runs libvirt as before TLS: qemu+tcp without
	// authentication and QEMU's stream in clear (for comparisons).
	LibvirtInsecureTCP bool
	// LibvirtStreamTLS makes QEMU's migration stream TLS too.
	LibvirtStreamTLS bool
	Log              *slog.Logger
}

// Env is a running benchmark cluster. Its methods are safe for concurrent
// use (a BMC boots hosts in the background).
type Env struct {
	Log  *slog.Logger
	Root string // module root
	Bin  string // absolute directory of tandemd and tandem
	Tmp  string // removed by Close
	C    *testcluster.Cluster
	TD   *testcluster.Tandem
	Img  guest.Image
	// BMC is each host's BMC by node name (Options.BMC).
	BMC map[string]*testcluster.BMC

	ip       string
	capacity uint64
	// lvOpts start every libvirtd (Options.LibvirtInsecureTCP).
	lvOpts testcluster.LibvirtdOptions

	mu    sync.Mutex
	lv    map[string]*testcluster.Libvirtd
	procs map[string]*testcluster.Proc // tandemd by node name
}

// CLITimeout bounds the short CLI calls of the helpers below.
const CLITimeout = 30 * time.Second

// Open checks the prerequisites, builds or finds the binaries, ensures the
// guest image and creates the cluster's namespaces. Start the hosts with
// Start. The caller must Close the Env.
func Open(ctx context.Context, o Options) (*Env, error) {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Nodes == 0 {
		o.Nodes = 3
	}
	if err := testcluster.Available(); err != nil {
		return nil, fmt.Errorf("network namespaces: %w", err)
	}
	if err := testcluster.LibvirtdAvailable(); err != nil {
		return nil, err
	}
	ip, err := testcluster.FindIP()
	if err != nil {
		return nil, err
	}
	root, err := ModuleRoot(ctx)
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "tandem-bench-"+o.Name+"-")
	if err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	e := &Env{Log: o.Log, Root: root, Tmp: tmp, ip: ip, capacity: o.CapacityMiB, lvOpts: testcluster.LibvirtdOptions{InsecureTCP: o.LibvirtInsecureTCP, StreamTLS: o.LibvirtStreamTLS}, BMC: map[string]*testcluster.BMC{},
		lv: map[string]*testcluster.Libvirtd{}, procs: map[string]*testcluster.Proc{}}
	ok := false
	defer func() {
		if !ok {
			e.Close()
		}
	}()
	if e.Bin, err = benchkit.Binaries(ctx, e.Log, o.Bin, tmp); err != nil {
		return nil, err
	}
	e.Log.Info("ensuring the guest image")
	if e.Img, err = guest.EnsureImage(ctx, root); err != nil {
		return nil, err
	}
	e.C, err = testcluster.Open(testcluster.Options{Nodes: o.Nodes, BaseDir: filepath.Join(tmp, "cluster")}, testcluster.LogReporter(e.Log))
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	e.TD = testcluster.NewTandem(e.C, e.Bin)
	ok = true
	return e, nil
}

// Start boots every host (libvirtd, then tandemd), gives each a BMC when
// withBMC, forms cluster name and waits until it is quorate with every
// node online.
func (e *Env) Start(ctx context.Context, name string, withBMC bool) error {
	for _, n := range e.C.Nodes {
		if err := e.Boot(ctx, n); err != nil {
			return err
		}
		if withBMC {
			b, err := e.C.StartBMC(ctx, n, testcluster.PowerHooks{On: e.Boot})
			if err != nil {
				return fmt.Errorf("BMC of %s: %w", n.Name, err)
			}
			e.mu.Lock()
			e.BMC[n.Name] = b
			e.mu.Unlock()
		}
	}
	e.Log.Info("forming cluster", "name", name)
	if err := e.TD.Form(ctx, name); err != nil {
		return fmt.Errorf("form cluster: %w", err)
	}
	if _, err := e.TD.WaitStatus(ctx, e.C.Nodes[0], 30*time.Second, e.Healthy); err != nil {
		return fmt.Errorf("cluster did not become healthy: %w", err)
	}
	return nil
}

// Healthy is a quorate status with every node of the cluster online.
func (e *Env) Healthy(st *tandemv1.ClusterStatus) bool {
	return st.GetQuorate() && int(st.GetVotesOnline()) == len(e.C.Nodes)
}

// Boot starts n's libvirtd and then its tandemd wired to it; it is also
// the BMCs' power-on hook.
func (e *Env) Boot(ctx context.Context, n *testcluster.Node) error {
	lv, err := e.C.StartLibvirtdWith(ctx, n, e.lvOpts)
	if err != nil {
		return fmt.Errorf("libvirtd on %s: %w", n.Name, err)
	}
	e.mu.Lock()
	e.lv[n.Name] = lv
	e.mu.Unlock()
	p, err := e.TD.StartComputeDaemon(ctx, n, lv, e.capacity)
	if err != nil {
		return fmt.Errorf("tandemd on %s: %w", n.Name, err)
	}
	e.mu.Lock()
	e.procs[n.Name] = p
	e.mu.Unlock()
	return nil
}

// WarmLibvirt asks every host's libvirtd for its QEMU domain capabilities
// (virsh domcapabilities), which makes it probe the QEMU binary once and
// cache the result under its state directory (kept across the host's
// reboots). A fresh libvirtd otherwise pays that probe, about two seconds
// under TCG, in the first domain definition: a real host has done it long
// ago. It returns the duration of the first and of a second call per node.
func (e *Env) WarmLibvirt(ctx context.Context) (map[string][2]time.Duration, error) {
	out := map[string][2]time.Duration{}
	for _, n := range e.C.Nodes {
		lv := e.Libvirtd(n.Name)
		if lv == nil {
			return out, fmt.Errorf("%s has no libvirtd", n.Name)
		}
		var d [2]time.Duration
		for i := range d {
			cctx, cancel := context.WithTimeout(ctx, time.Minute)
			t := time.Now()
			_, err := e.C.Exec(cctx, n, "virsh", "-c", "qemu:///system?socket="+lv.Socket, "domcapabilities", "--virttype", "qemu", "--arch", "x86_64")
			d[i] = time.Since(t)
			cancel()
			if err != nil {
				return out, fmt.Errorf("virsh domcapabilities on %s: %w", n.Name, err)
			}
		}
		out[n.Name] = d
	}
	return out, nil
}

// Libvirtd is n's current libvirtd (nil before its first boot).
func (e *Env) Libvirtd(node string) *testcluster.Libvirtd {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.lv[node]
}

// ConsoleLog is the guest's serial log on n, as tandemd places it (QEMU
// appends to it on every start on that node).
func (e *Env) ConsoleLog(n *testcluster.Node, vm string) string {
	return filepath.Join(e.TD.DataDir(n), "vms", vm+".console.log")
}

// Close stops the BMCs, kills every process of the cluster (libvirtd, QEMU,
// tandemd, ipmi_sim) by PID and namespace, deletes the namespaces and the
// temporary directory. It logs namespaces left behind.
func (e *Env) Close() {
	if e.C != nil {
		e.C.Close()
		prefix := fmt.Sprintf("tdmt%d-", os.Getpid())
		if ents, err := os.ReadDir("/run/netns"); err == nil {
			for _, d := range ents {
				if strings.HasPrefix(d.Name(), prefix) {
					e.Log.Error("namespace left behind after Close", "name", d.Name())
				}
			}
		}
	}
	if e.Tmp != "" {
		_ = os.RemoveAll(e.Tmp)
	}
}

// CLI runs the tandem CLI inside n's namespace against n's data dir, bounded
// by ctx (testcluster's CLI caps every call at 30 s, too short for some).
func (e *Env) CLI(ctx context.Context, n *testcluster.Node, args ...string) (stdout, stderr string, err error) {
	argv := append([]string{"netns", "exec", n.NS, filepath.Join(e.Bin, "tandem"), "--data-dir", e.TD.DataDir(n)}, args...)
	cmd := exec.CommandContext(ctx, e.ip, argv...)
	cmd.Env = append(os.Environ(), "TANDEM_TOKEN=", "TANDEM_CREDENTIALS=", "TANDEM_DATA_DIR=")
	var o, se strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &se
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		return o.String(), se.String(), fmt.Errorf("tandem %s (on %s): %w: %s", strings.Join(args, " "), n.Name, err, strings.TrimSpace(se.String()))
	}
	return o.String(), se.String(), nil
}

// CLIJSON runs the CLI with --output json (bounded by CLITimeout) and
// decodes its answer into m.
func (e *Env) CLIJSON(ctx context.Context, n *testcluster.Node, m proto.Message, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, CLITimeout)
	defer cancel()
	out, _, err := e.CLI(ctx, n, append(args, "--output", "json")...)
	if err != nil {
		return err
	}
	if err := adminclient.UnmarshalJSON([]byte(out), m); err != nil {
		return fmt.Errorf("tandem %s: decoding JSON: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// Volume is `tandem volume show name` through n.
func (e *Env) Volume(ctx context.Context, n *testcluster.Node, name string) (*tandemv1.VolumeInfo, error) {
	var v tandemv1.VolumeInfo
	return &v, e.CLIJSON(ctx, n, &v, "volume", "show", name)
}

// VM is `tandem vm show name` through n.
func (e *Env) VM(ctx context.Context, n *testcluster.Node, name string) (*tandemv1.VMInfo, error) {
	var v tandemv1.VMInfo
	return &v, e.CLIJSON(ctx, n, &v, "vm", "show", name)
}

// HAStatus is `tandem ha status` through n.
func (e *Env) HAStatus(ctx context.Context, n *testcluster.Node) (*tandemv1.HAStatusResponse, error) {
	var st tandemv1.HAStatusResponse
	return &st, e.CLIJSON(ctx, n, &st, "ha", "status")
}

// Status is `tandem cluster status` through n.
func (e *Env) Status(ctx context.Context, n *testcluster.Node) (*tandemv1.ClusterStatus, error) {
	var st tandemv1.ClusterStatus
	return &st, e.CLIJSON(ctx, n, &st, "cluster", "status")
}

// Events returns the cluster's events after sequence number since (0: the
// last 1000), as n's copy of the metadata has them.
func (e *Env) Events(ctx context.Context, n *testcluster.Node, since uint64) ([]*tandemv1.Event, error) {
	ctx, cancel := context.WithTimeout(ctx, CLITimeout)
	defer cancel()
	args := []string{"events", "--output", "json", "--tail", "1000"}
	if since > 0 {
		args = append(args, "--since", fmt.Sprint(since))
	}
	out, _, err := e.CLI(ctx, n, args...)
	if err != nil {
		return nil, err
	}
	return DecodeEvents([]byte(out))
}

// DecodeEvents decodes the concatenated JSON objects `tandem events
// --output json` prints.
func DecodeEvents(out []byte) ([]*tandemv1.Event, error) {
	dec := json.NewDecoder(bytes.NewReader(out))
	var evs []*tandemv1.Event
	for {
		var raw json.RawMessage
		err := dec.Decode(&raw)
		if errors.Is(err, io.EOF) {
			return evs, nil
		}
		if err != nil {
			return evs, fmt.Errorf("events JSON: %w", err)
		}
		var ev tandemv1.Event
		if err := adminclient.UnmarshalJSON(raw, &ev); err != nil {
			return evs, fmt.Errorf("event %s: %w", raw, err)
		}
		evs = append(evs, &ev)
	}
}

// FenceConfigIPMI points n's fencing at its BMC (`tandem node fence-config
// NODE --ipmi host:port,user,pass-file`), through via.
func (e *Env) FenceConfigIPMI(ctx context.Context, via, n *testcluster.Node) error {
	e.mu.Lock()
	b := e.BMC[n.Name]
	e.mu.Unlock()
	if b == nil {
		return fmt.Errorf("%s has no BMC", n.Name)
	}
	ctx, cancel := context.WithTimeout(ctx, CLITimeout)
	defer cancel()
	out, stderr, err := e.CLI(ctx, via, "node", "fence-config", n.Name, "--ipmi", fmt.Sprintf("%s:%d,%s,%s", b.Host, b.Port, b.User, b.PasswordFile))
	if err != nil {
		return err
	}
	if strings.Contains(out+stderr, b.Password) {
		return fmt.Errorf("fence-config printed the BMC password of %s", n.Name)
	}
	return nil
}

// IPMIPower runs `ipmitool chassis power <op>` (on, off, status) against
// b from the namespace of another host, as an operator's workstation
// would, and returns its output.
func (e *Env) IPMIPower(ctx context.Context, b *testcluster.BMC, op string) (string, error) {
	var from *testcluster.Node
	for _, n := range e.C.Nodes {
		if n != b.Node {
			from = n
			break
		}
	}
	ctx, cancel := context.WithTimeout(ctx, CLITimeout)
	defer cancel()
	out, err := e.C.Exec(ctx, from, "ipmitool", "-I", "lanplus", "-C", "3", "-H", b.Host, "-p", fmt.Sprint(b.Port), "-U", b.User, "-f", b.PasswordFile, "chassis", "power", op)
	if err != nil {
		return string(out), fmt.Errorf("ipmitool power %s for %s: %w", op, b.Node.Name, err)
	}
	return strings.TrimSpace(string(out)), nil
}

// Excerpts returns the last lines of every node's tandemd and libvirtd logs
// and, for vm, its QEMU log and serial console on every node that has them.
func (e *Env) Excerpts(vm string, lines int) map[string]string {
	out := map[string]string{}
	for _, n := range e.C.Nodes {
		out[n.Name+"/tandemd.log"] = e.C.LogTail(n, "tandemd", lines)
		out[n.Name+"/libvirtd.log"] = e.C.LogTail(n, testcluster.LibvirtdName, lines)
		if vm == "" {
			continue
		}
		if lv := e.Libvirtd(n.Name); lv != nil {
			if data, err := os.ReadFile(lv.QEMULog(vm)); err == nil {
				out[n.Name+"/qemu-"+vm+".log"] = TailLines(string(data), lines)
			}
		}
		if data, err := os.ReadFile(e.ConsoleLog(n, vm)); err == nil {
			out[n.Name+"/console-"+vm+".log"] = TailLines(string(data), lines)
		}
	}
	return out
}

// CopyLogs copies every node's tandemd and libvirtd logs and, for each of
// vms, its QEMU log and console into dir (they go away with Tmp).
func (e *Env) CopyLogs(dir string, vms ...string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("logs dir: %w", err)
	}
	var errs []error
	cp := func(src, name string) {
		data, err := os.ReadFile(src)
		if err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("log %s: %w", src, err))
			}
			return
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			errs = append(errs, fmt.Errorf("copy log %s: %w", name, err))
		}
	}
	for _, n := range e.C.Nodes {
		cp(filepath.Join(n.Dir, "tandemd.log"), n.Name+"-tandemd.log")
		cp(filepath.Join(n.Dir, testcluster.LibvirtdName+".log"), n.Name+"-libvirtd.log")
		for _, vm := range vms {
			if lv := e.Libvirtd(n.Name); lv != nil {
				cp(lv.QEMULog(vm), n.Name+"-qemu-"+vm+".log")
			}
			cp(e.ConsoleLog(n, vm), n.Name+"-console-"+vm+".log")
		}
	}
	return errors.Join(errs...)
}

// Wrapup is the end of a run: the WARN and ERROR lines of every tandemd
// log, grouped (benchkit.ScanDaemonLogs), and with dir set, every log and
// vms' QEMU logs and consoles copied there (CopyLogs).
func (e *Env) Wrapup(dir string, vms ...string) ([]benchkit.LogFinding, error) {
	findings := benchkit.ScanDaemonLogs(e.C)
	if dir == "" {
		return findings, nil
	}
	return findings, e.CopyLogs(dir, vms...)
}

// ModuleRoot is the directory of the tandem module's go.mod.
func ModuleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD (run from inside the module with go on PATH): %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the tandem module (go env GOMOD is empty)")
	}
	return filepath.Dir(mod), nil
}

// LogWindow returns the lines of a slog text log (tandemd's) stamped
// within [from, to], at most maxLines of them (the last ones when there are
// more). Lines without a time= field stay with the line before.
func LogWindow(path string, from, to time.Time, maxLines int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return logWindow(string(data), from, to, maxLines)
}

func logWindow(data string, from, to time.Time, maxLines int) string {
	var out []string
	in := false
	for _, l := range strings.Split(strings.TrimRight(data, "\n"), "\n") {
		if v, ok := strings.CutPrefix(l, "time="); ok {
			ts, _, _ := strings.Cut(v, " ")
			if t, err := time.Parse(time.RFC3339Nano, ts); err == nil {
				in = !t.Before(from) && !t.After(to)
			}
		}
		if in {
			out = append(out, l)
		}
	}
	if len(out) > maxLines {
		out = append([]string{fmt.Sprintf("(%d earlier lines of the window left out)", len(out)-maxLines)}, out[len(out)-maxLines:]...)
	}
	if len(out) == 0 {
		return "(no lines in the window)"
	}
	return strings.Join(out, "\n")
}

// ReplicaSummary is "n1:UP_TO_DATE* n2:OUTDATED/link": * marks the
// primary, the link as the primary sees it follows the slash.
func ReplicaSummary(v *tandemv1.VolumeInfo) string {
	var parts []string
	for _, r := range v.GetReplicas() {
		s := r.GetNode() + ":" + strings.TrimPrefix(r.GetState().String(), "REPLICA_STATE_")
		if r.GetPrimary() {
			s += "*"
		}
		if l := r.GetLink(); l != "" {
			s += "/" + l
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, " ")
}

// AllUpToDate is true when v has want replicas, all UpToDate.
func AllUpToDate(v *tandemv1.VolumeInfo, want int) bool {
	if len(v.GetReplicas()) != want {
		return false
	}
	for _, r := range v.GetReplicas() {
		if r.GetState() != tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE {
			return false
		}
	}
	return true
}

// TailLines is the last n lines of s.
func TailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// ParseMiB reads a guest memory size such as 192M or 1G into MiB.
func ParseMiB(s string) (uint64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	mult := uint64(1)
	switch {
	case strings.HasSuffix(t, "G"):
		mult, t = 1024, strings.TrimSuffix(t, "G")
	case strings.HasSuffix(t, "M"):
		t = strings.TrimSuffix(t, "M")
	}
	n, err := strconv.ParseUint(t, 10, 64)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("size %q: want a positive number of MiB with an optional M or G suffix", s)
	}
	return n * mult, nil
}

// diskCounterRE is the guest agent's console line with the counter it read
// from its disk at boot.
var diskCounterRE = regexp.MustCompile(`msg="disk counter".*\bcounter=(\d+) boot=(\d+)`)

// DiskCounter finds, in a guest console log, the counter the agent read
// from its disk at the start of boot number boot.
func DiskCounter(console string, boot uint64) (uint64, bool) {
	for _, m := range diskCounterRE.FindAllStringSubmatch(console, -1) {
		c, err1 := strconv.ParseUint(m[1], 10, 64)
		bt, err2 := strconv.ParseUint(m[2], 10, 64)
		if err1 == nil && err2 == nil && bt == boot {
			return c, true
		}
	}
	return 0, false
}
