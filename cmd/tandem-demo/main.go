package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"golang.org/x/term"

	"github.com/tandemhci/tandem/internal/adminclient"
	"github.com/tandemhci/tandem/internal/guest"
	"github.com/tandemhci/tandem/internal/testcluster"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

const (
	vmName = "demo-vm"
	// udpPort is where the guest agent sends its heartbeats, on the
	// switch's VM-network address.
	udpPort = 9999
	// heartbeatRate is the guest's datagrams per second: the resolution of
	// the outage measurement is 1/rate.
	heartbeatRate = 100
	// bootTimeout bounds the guest's boot under TCG, up to its first
	// acknowledged disk writes.
	bootTimeout = 3 * time.Minute
	// longCLITimeout bounds `vm create --start` and `vm migrate`.
	longCLITimeout = 5 * time.Minute
)

func main() {
	bin := flag.String("bin", "", "directory with tandemd and tandem (built when empty)")
	repo := flag.String("repo", "", "repository root, for the guest image in .cache/guest (default: found from the working directory)")
	nodes := flag.Int("nodes", 3, "number of simulated hosts")
	keep := flag.Bool("keep", false, "keep the cluster running until Enter or Ctrl-C even without a terminal")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(*bin, *repo, *nodes, *keep, log, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		os.Exit(1)
	}
}

// repoRoot finds the repository from the working directory upwards.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "scripts", "build-guest-image.sh")); err == nil {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				return dir, nil
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("cannot find the repository root (with scripts/build-guest-image.sh) above the working directory; pass -repo")
		}
		dir = parent
	}
}

// demo is the running cluster and what failure messages need of it.
type demo struct {
	c   *testcluster.Cluster
	td  *testcluster.Tandem
	lv  map[string]*testcluster.Libvirtd
	bin string
	out io.Writer
}

func run(bin, repo string, nodes int, keep bool, log *slog.Logger, out io.Writer) (err error) {
	if err := testcluster.Available(); err != nil {
		return fmt.Errorf("the demo simulates hosts with network namespaces and needs root: %w", err)
	}
	if err := testcluster.LibvirtdAvailable(); err != nil {
		return err
	}
	if nodes < 3 {
		return fmt.Errorf("-nodes %d: the demo needs at least 3 (2 replicas and a witness)", nodes)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if repo == "" {
		if repo, err = repoRoot(); err != nil {
			return err
		}
	}
	base, err := os.MkdirTemp("", "tandem-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(base)
	if bin == "" {
		bin = filepath.Join(base, "bin")
		log.Info("building tandemd and tandem")
		if err := testcluster.BuildBinaries(ctx, bin); err != nil {
			return err
		}
	}

	fmt.Fprintf(out, "== preparing the test guest (Debian kernel + initramfs running the guest agent) in %s\n", filepath.Join(repo, ".cache", "guest"))
	start := time.Now()
	img, err := guest.EnsureImage(ctx, repo)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "   ready in %s\n\n", time.Since(start).Round(time.Millisecond))

	c, err := testcluster.Open(testcluster.Options{Nodes: nodes, BaseDir: base}, testcluster.LogReporter(log))
	if err != nil {
		return err
	}
	defer c.Close()
	d := &demo{c: c, td: testcluster.NewTandem(c, bin), lv: map[string]*testcluster.Libvirtd{}, bin: bin, out: out}
	// Runs before Close (deferred earlier), while the logs still exist.
	defer func() {
		if err != nil && ctx.Err() == nil {
			d.dumpLogs(os.Stderr)
		}
	}()
	return d.run(ctx, img, keep)
}

func (d *demo) run(ctx context.Context, img guest.Image, keep bool) error {
	c, td, out := d.c, d.td, d.out
	fmt.Fprintf(out, "== starting libvirtd and tandemd on %d simulated hosts (network namespaces)\n", len(c.Nodes))
	for _, n := range c.Nodes {
		lv, err := c.StartLibvirtd(ctx, n)
		if err != nil {
			return err
		}
		d.lv[n.Name] = lv
		if _, err := td.StartComputeDaemon(ctx, n, lv, 0); err != nil {
			return err
		}
		fmt.Fprintf(out, "   %s  ns=%s  backend=%s  admin=%s  libvirt=%s\n", n.Name, n.NS, td.BackendAddr(n), td.AdminAddr(n), lv.URI)
	}
	fmt.Fprintln(out, "== tandem cluster create demo; tandem cluster token; tandem cluster join ... (per node)")
	start := time.Now()
	if err := td.Form(ctx, "demo"); err != nil {
		return err
	}
	first, last := c.Nodes[0], c.Nodes[len(c.Nodes)-1]
	if _, err := td.WaitStatus(ctx, last, 15*time.Second, func(s *tandemv1.ClusterStatus) bool {
		return s.GetQuorate() && int(s.GetVotesOnline()) == len(c.Nodes)
	}); err != nil {
		return err
	}
	fmt.Fprintf(out, "   cluster formed in %s\n\n", time.Since(start).Round(time.Millisecond))
	if err := d.show(ctx, last, "tandem cluster status (asked on "+last.Name+")", "cluster", "status"); err != nil {
		return err
	}

	// A replicated volume driven through NBD by a plain client.
	if err := d.show(ctx, first, "tandem volume create demo-vol --size 256M --replicas 2", "volume", "create", "demo-vol", "--size", "256M", "--replicas", "2"); err != nil {
		return err
	}
	info, err := d.volume(ctx, first, "demo-vol")
	if err != nil {
		return err
	}
	primary := c.Node(info.Primary)
	if primary == nil {
		return fmt.Errorf("volume primary %q unknown", info.Primary)
	}
	uri := fmt.Sprintf("nbd+unix:///demo-vol?socket=%s", filepath.Join(td.DataDir(primary), "nbd.sock"))
	fmt.Fprintf(out, "== writing 16 MiB through the primary's NBD export (qemu-io %s)\n", uri)
	qio := exec.CommandContext(ctx, "qemu-io", "-f", "raw", "-c", "write -P 0x5a 0 16M", "-c", "flush", "-c", "read -P 0x5a 0 16M", uri)
	b, err := qio.CombinedOutput()
	if err != nil {
		return fmt.Errorf("qemu-io: %w\n%s", err, b)
	}
	fmt.Fprintf(out, "%s\n", b)
	if err := d.show(ctx, first, "tandem volume verify demo-vol (compares every block of every replica)", "volume", "verify", "demo-vol"); err != nil {
		return err
	}

	// The guest's heartbeats reach the switch wherever the VM runs.
	conn, err := c.ListenUDPOnSwitch(fmt.Sprintf("%s:%d", c.ReceiverIP, udpPort))
	if err != nil {
		return err
	}
	defer conn.Close()
	rx := guest.NewReceiver(conn, nil)
	stopRx := rx.Start(ctx)
	defer func() { _ = stopRx() }()
	guestIP, err := guestAddr(c)
	if err != nil {
		return err
	}
	cmdline := img.Cmdline(guest.Config{IP: guestIP, UDP: fmt.Sprintf("%s:%d", c.ReceiverIP, udpPort), Rate: heartbeatRate, Disk: "/dev/vda"})

	// The VM on a new 2-replica disk, started on n1, which becomes the
	// disk's primary: a VM only runs where its volumes are primary.
	fmt.Fprintf(out, "== tandem vm create %s --memory 192M --disk 64M,replicas=2 --node %s --kernel vmlinuz --initrd initrd.img --nic %s --start\n", vmName, first.Name, c.VMBridge)
	fmt.Fprintf(out, "   guest agent: eth0 %s, %d UDP heartbeats/s to %s:%d, a counter written to /dev/vda with O_SYNC before each is reported\n", guestIP, heartbeatRate, c.ReceiverIP, udpPort)
	start = time.Now()
	created, _, err := d.longCLI(ctx, first, nil, "vm", "create", vmName, "--memory", "192M", "--disk", "64M,replicas=2", "--node", first.Name,
		"--kernel", img.Kernel, "--initrd", img.Initrd, "--cmdline", cmdline, "--nic", c.VMBridge, "--start")
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "%s   created and started in %s\n", indent(created), time.Since(start).Round(time.Millisecond))
	fmt.Fprintf(out, "== waiting for the guest to boot (QEMU TCG, no KVM: this takes a while) and write its disk\n")
	bctx, cancel := context.WithTimeout(ctx, bootTimeout)
	up, err := rx.WaitFor(bctx, func(g guest.Datagram) bool { return g.Seq > 20 && g.Acked > 5 })
	cancel()
	if err != nil {
		return fmt.Errorf("guest did not come up within %s: %w", bootTimeout, err)
	}
	fmt.Fprintf(out, "   guest up %s after start: heartbeat seq %d, boot %d, %d disk writes acknowledged\n\n",
		time.Since(start).Round(time.Second), up.Seq, up.Boot, up.Acked)
	if err := d.show(ctx, last, "tandem vm list (asked on "+last.Name+")", "vm", "list"); err != nil {
		return err
	}
	disk := vmName + "-disk0"
	if err := d.show(ctx, first, "tandem volume show "+disk, "volume", "show", disk); err != nil {
		return err
	}
	before, err := d.volume(ctx, first, disk)
	if err != nil {
		return err
	}
	if before.Primary != first.Name {
		return fmt.Errorf("the VM runs on %s but %s's primary is %s", first.Name, disk, before.Primary)
	}
	var target *testcluster.Node
	for _, r := range before.Replicas {
		if r.Node != before.Primary {
			target = c.Node(r.Node)
		}
	}
	if target == nil {
		return fmt.Errorf("%s has no secondary replica: %v", disk, before.Replicas)
	}
	if err := d.show(ctx, first, "tandem volume verify "+disk+" (the guest's writes are on both replicas)", "volume", "verify", disk); err != nil {
		return err
	}

	// Live migration to the secondary (docs/design.md I5 order: dual-primary
	// for this volume and these two nodes only, libvirt peer-to-peer
	// migration, handover with an epoch bump).
	fmt.Fprintf(out, "== tandem vm migrate %s --to %s --downtime-ms 100 (asked on %s)\n", vmName, target.Name, last.Name)
	mark, _, _ := rx.Last()
	migStart := time.Now()
	res, _, err := d.longCLI(ctx, last, &progressFilter{w: out}, "vm", "migrate", vmName, "--to", target.Name, "--downtime-ms", "100", "--output", "json")
	migEnd := time.Now()
	if err != nil {
		return err
	}
	var done tandemv1.MigrateProgress
	if err := adminclient.UnmarshalJSON([]byte(res), &done); err != nil || done.Phase != "done" {
		return fmt.Errorf("vm migrate: unexpected result (%v): %s", err, res)
	}
	// Progress beyond what had arrived when the command returned: the
	// datagrams of the pre-copy phase came from the source.
	atEnd, _, _ := rx.Last()
	actx, cancel := context.WithTimeout(ctx, time.Minute)
	after, err := rx.WaitFor(actx, func(g guest.Datagram) bool {
		return g.Boot != mark.Boot || g.Seq > atEnd.Seq+20 && g.Acked > atEnd.Acked+5
	})
	cancel()
	if err != nil {
		return fmt.Errorf("guest made no progress after the migration (last when it returned: seq %d, acked %d): %w", atEnd.Seq, atEnd.Acked, err)
	}
	if after.Boot != mark.Boot || after.Seq < mark.Seq {
		return fmt.Errorf("guest rebooted during the migration: boot %d seq %d -> boot %d seq %d", mark.Boot, mark.Seq, after.Boot, after.Seq)
	}
	fmt.Fprintf(out, "   libvirt: migrated %s -> %s in %d ms (job time, includes starting the target QEMU); QEMU's switch-over downtime %d ms\n",
		done.From, done.To, done.TotalMs, done.DowntimeMs)
	m := measure(rx.Arrivals(), mark, after, migStart, migEnd)
	fmt.Fprintf(out, "   guest-visible outage (longest gap in its %d/s UDP stream around the migration): %d ms\n", heartbeatRate, m.outage.Gap.Milliseconds())
	fmt.Fprintf(out, "     last datagram before: seq %d at +%d ms; first after: at +%d ms (clock: migrate command start); in the 10 s before, the longest gap was %d ms\n",
		m.gapFromSeq, m.outage.Start.Sub(migStart).Milliseconds(), m.outage.End.Sub(migStart).Milliseconds(), m.baseline.Milliseconds())
	if m.lost == 0 {
		fmt.Fprintf(out, "     no datagram lost: seq %d..%d all received, same boot (%d), no restart; disk writes acknowledged %d -> %d\n\n",
			mark.Seq+1, after.Seq, after.Boot, mark.Acked, after.Acked)
	} else {
		fmt.Fprintf(out, "     %d of %d datagrams lost (seq %d..%d, %d in the longest gap), same boot (%d), no restart; disk writes acknowledged %d -> %d\n\n",
			m.lost, after.Seq-mark.Seq, mark.Seq+1, after.Seq, m.outage.LostSeqs, after.Boot, mark.Acked, after.Acked)
	}

	if err := d.show(ctx, first, "tandem vm list", "vm", "list"); err != nil {
		return err
	}
	vol, err := d.waitVolume(ctx, first, disk, 15*time.Second, func(v *tandemv1.VolumeInfo) bool {
		return v.Primary == target.Name && v.Epoch > before.Epoch && replicaState(v, first.Name) == tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE
	})
	if err := d.show(ctx, first, "tandem volume show "+disk, "volume", "show", disk); err != nil {
		return err
	}
	if err != nil {
		return fmt.Errorf("after the migration: want primary %s, epoch above %d and %s UpToDate; got primary %s, epoch %d, %s %v: %w",
			target.Name, before.Epoch, first.Name, vol.GetPrimary(), vol.GetEpoch(), first.Name, replicaState(vol, first.Name), err)
	}
	fmt.Fprintf(out, "   handover: primary %s -> %s, epoch %d -> %d, %s is an UpToDate secondary\n\n", before.Primary, vol.Primary, before.Epoch, vol.Epoch, first.Name)
	if err := d.show(ctx, first, "tandem volume verify "+disk+" (writes since the migration went from "+target.Name+" to "+first.Name+")", "volume", "verify", disk); err != nil {
		return err
	}

	if !keep && !term.IsTerminal(int(os.Stdin.Fd())) {
		fmt.Fprintln(out, "== done; tearing the demo cluster down (run 'make demo' on a terminal to explore it)")
		return nil
	}
	fmt.Fprintf(out, "== the cluster keeps running; try, from another shell:\n")
	fmt.Fprintf(out, "   %s/tandem --data-dir %s cluster status\n", d.bin, td.DataDir(first))
	fmt.Fprintf(out, "   %s/tandem --data-dir %s node list --output json\n", d.bin, td.DataDir(last))
	fmt.Fprintf(out, "   ip netns exec %s %s/tandem --server %s --credentials %s cluster status\n", first.NS, d.bin, td.AdminAddr(first), td.Credentials(first))
	fmt.Fprintf(out, "   kill -9 a node's tandemd (ip netns pids %s) and watch the leader move\n", first.NS)
	fmt.Fprintf(out, "   %s/tandem --data-dir %s volume show demo-vol\n", d.bin, td.DataDir(first))
	fmt.Fprintf(out, "   qemu-io -f raw -c 'read -v 0 512' '%s'\n", uri)
	fmt.Fprintf(out, "   %s/tandem --data-dir %s vm console %s --follow\n", d.bin, td.DataDir(first), vmName)
	fmt.Fprintf(out, "   %s/tandem --data-dir %s vm migrate %s --to %s\n", d.bin, td.DataDir(first), vmName, first.Name)
	fmt.Fprintf(out, "   %s/tandem --data-dir %s node maintenance enable %s\n", d.bin, td.DataDir(first), target.Name)
	fmt.Fprintln(out, "press Enter or Ctrl-C to stop and clean up")
	lines := make(chan struct{})
	go func() {
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
		close(lines)
	}()
	select {
	case <-ctx.Done():
	case <-lines:
	}
	fmt.Fprintln(out, "== stopping")
	if o := rx.Outages(500 * time.Millisecond); len(o) > 0 {
		fmt.Fprintf(out, "   the guest's UDP stream had %d gaps of 500 ms or more while the demo ran:\n", len(o))
		for _, g := range o {
			fmt.Fprintf(out, "     %s  %d ms, %d datagrams lost, rebooted %v\n", g.Start.Format("15:04:05.000"), g.Gap.Milliseconds(), g.LostSeqs, g.Rebooted)
		}
	}
	return nil
}

// guestAddr is the guest's address on the VM network: .50 of its /24.
func guestAddr(c *testcluster.Cluster) (string, error) {
	pfx, err := netip.ParsePrefix(c.VMSubnet)
	if err != nil {
		return "", fmt.Errorf("VM subnet: %w", err)
	}
	a := pfx.Masked().Addr().As4()
	a[3] = 50
	return fmt.Sprintf("%s/%d", netip.AddrFrom4(a), pfx.Bits()), nil
}

// show runs a CLI command on n and prints its output under a heading.
func (d *demo) show(ctx context.Context, n *testcluster.Node, title string, args ...string) error {
	stdout, _, err := d.td.CLI(ctx, n, args...)
	fmt.Fprintf(d.out, "== %s\n%s\n", title, strings.TrimRight(stdout, "\n"))
	if err != nil {
		return err
	}
	fmt.Fprintln(d.out)
	return nil
}

// longCLI runs the CLI on n like Tandem.CLI, whose 30 s limit is too short
// for a VM's start or a migration under TCG. stderr also goes to progress
// when given, as it comes.
func (d *demo) longCLI(ctx context.Context, n *testcluster.Node, progress io.Writer, args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(ctx, longCLITimeout)
	defer cancel()
	argv := append([]string{"netns", "exec", n.NS, filepath.Join(d.bin, "tandem"), "--data-dir", d.td.DataDir(n)}, args...)
	cmd := exec.CommandContext(ctx, "ip", argv...)
	cmd.Env = append(os.Environ(), "TANDEM_TOKEN=", "TANDEM_CREDENTIALS=", "TANDEM_DATA_DIR=")
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	if progress != nil {
		cmd.Stderr = io.MultiWriter(&e, progress)
	}
	if err := cmd.Run(); err != nil {
		return o.String(), e.String(), &testcluster.CLIError{Args: args, Stderr: e.String(), Err: err}
	}
	return o.String(), e.String(), nil
}

func (d *demo) volume(ctx context.Context, n *testcluster.Node, name string) (*tandemv1.VolumeInfo, error) {
	out, _, err := d.td.CLI(ctx, n, "volume", "show", name, "--output", "json")
	if err != nil {
		return nil, err
	}
	var info tandemv1.VolumeInfo
	if err := adminclient.UnmarshalJSON([]byte(out), &info); err != nil {
		return nil, fmt.Errorf("volume show %s: %w", name, err)
	}
	return &info, nil
}

// waitVolume polls until ok holds, returning the last answer in any case.
func (d *demo) waitVolume(ctx context.Context, n *testcluster.Node, name string, timeout time.Duration, ok func(*tandemv1.VolumeInfo) bool) (*tandemv1.VolumeInfo, error) {
	deadline := time.Now().Add(timeout)
	for {
		v, err := d.volume(ctx, n, name)
		if err == nil && ok(v) {
			return v, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			if err == nil {
				err = fmt.Errorf("not within %s", timeout)
			}
			return v, err
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func replicaState(v *tandemv1.VolumeInfo, node string) tandemv1.ReplicaState {
	for _, r := range v.GetReplicas() {
		if r.Node == node {
			return r.State
		}
	}
	return tandemv1.ReplicaState_REPLICA_STATE_UNSPECIFIED
}

// migration is the outage measured from the heartbeat stream.
type migration struct {
	outage     guest.Outage  // the longest gap that overlaps the migration
	gapFromSeq uint64        // seq of the datagram before that gap
	baseline   time.Duration // the longest gap in baselineWindow before the migration
	lost       uint64        // seqs in (mark, after] never received
}

// baselineWindow is how far before the migration measure looks for the
// stream's usual jitter (TCG, a busy host).
const baselineWindow = 10 * time.Second

// measure reads the outage as the Heartbeat/Xen measurements do: the time
// between the last datagram before the guest stopped and the first after it
// resumed, with the sequence numbers telling whether any was lost.
func measure(arr []guest.Arrival, mark, after guest.Datagram, from, to time.Time) migration {
	var m migration
	seen := map[uint64]bool{}
	for i := 1; i < len(arr); i++ {
		prev, cur := arr[i-1], arr[i]
		gap := cur.At.Sub(prev.At)
		if cur.At.Before(from) {
			if prev.Boot == cur.Boot && prev.At.After(from.Add(-baselineWindow)) {
				m.baseline = max(m.baseline, gap)
			}
			continue
		}
		if prev.At.After(to) {
			break
		}
		if gap > m.outage.Gap {
			m.outage = guest.Outage{Start: prev.At, End: cur.At, Gap: gap}
			if cur.Seq > prev.Seq && cur.Boot == prev.Boot {
				m.outage.LostSeqs = cur.Seq - prev.Seq - 1
			}
			m.gapFromSeq = prev.Seq
		}
	}
	for _, a := range arr {
		if a.Boot == mark.Boot && a.Seq > mark.Seq && a.Seq <= after.Seq {
			seen[a.Seq] = true
		}
	}
	m.lost = after.Seq - mark.Seq - uint64(len(seen))
	return m
}

// progressFilter turns the CLI's migration progress on a non-terminal
// stderr ("\r"-redrawn bar lines with notes appended) into a few lines.
type progressFilter struct {
	w        io.Writer
	buf      []byte
	lastBar  time.Time
	finalBar string
}

var barRE = regexp.MustCompile(`^(\S+ -> \S+: memory \d+/\d+ MiB sent, \d+ MiB remaining)\s*(.*)$`)

func (p *progressFilter) Write(b []byte) (int, error) {
	p.buf = append(p.buf, b...)
	for {
		i := bytes.IndexAny(p.buf, "\r\n")
		if i < 0 {
			return len(b), nil
		}
		p.segment(string(p.buf[:i]))
		p.buf = p.buf[i+1:]
	}
}

func (p *progressFilter) segment(s string) {
	s = strings.TrimSpace(s)
	if s == "" {
		return
	}
	note := s
	if m := barRE.FindStringSubmatch(s); m != nil {
		note = m[2]
		if time.Since(p.lastBar) >= 2*time.Second {
			fmt.Fprintf(p.w, "   %s\n", m[1])
			p.lastBar, p.finalBar = time.Now(), ""
		} else {
			p.finalBar = m[1]
		}
	}
	if note != "" {
		if p.finalBar != "" {
			fmt.Fprintf(p.w, "   %s\n", p.finalBar)
			p.finalBar = ""
		}
		fmt.Fprintf(p.w, "   %s\n", note)
	}
}

func indent(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString("   " + l + "\n")
	}
	return b.String()
}

// dumpLogs prints the end of every daemon's log and of the VM's QEMU logs.
func (d *demo) dumpLogs(w io.Writer) {
	for _, n := range d.c.Nodes {
		fmt.Fprintf(w, "---- %s: tandemd.log (last 40 lines)\n%s\n", n.Name, d.c.LogTail(n, "tandemd", 40))
		lv := d.lv[n.Name]
		if lv == nil {
			continue
		}
		fmt.Fprintf(w, "---- %s: libvirtd.log (last 20 lines)\n%s\n", n.Name, d.c.LogTail(n, testcluster.LibvirtdName, 20))
		if q := lv.QEMULog(vmName); fileExists(q) {
			fmt.Fprintf(w, "---- %s: %s (last 20 lines)\n%s\n", n.Name, q, tail(q, 20))
		}
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func tail(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}
