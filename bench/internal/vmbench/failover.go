package vmbench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/tandemhci/tandem/bench/internal/benchkit"
	"github.com/tandemhci/tandem/internal/ctxtime"
	"github.com/tandemhci/tandem/internal/guest"
	"github.com/tandemhci/tandem/internal/testcluster"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

const (
	// readyTimeout bounds the wait for a healthy cluster, volume and guest
	// before a crash.
	readyTimeout = 2 * time.Minute
	// eventsTimeout bounds the wait for the vm-recovered event once the
	// guest is back.
	eventsTimeout = 30 * time.Second
	// consoleTimeout bounds the wait for the restarted guest's "disk
	// counter" line.
	consoleTimeout = 15 * time.Second
	// detectorRestartSlackMs: a last answer from the crashed node later
	// than this after the crash means the failure detector started afresh
	// (a new metadata leader) after the crash.
	detectorRestartSlackMs = 100
	// ackAdvance is how many more disk writes the guest must acknowledge
	// to count as running.
	ackAdvance = 5
	// receiverPort is where the guest sends its datagrams, on the switch.
	receiverPort = 9999
)

// DiskState tells whether a VM's disk is ready for the next crash with the
// VM running on host ("": wherever its owner is): nil, or why not. The
// summary describes the disk's state either way, for the reports.
type DiskState func(v *tandemv1.VolumeInfo, host string) (summary string, err error)

// ReplicatedDisk is ready when its owner is host and all of its replicas
// are UpToDate.
func ReplicatedDisk(replicas int) DiskState {
	return func(v *tandemv1.VolumeInfo, host string) (string, error) {
		s := ReplicaSummary(v)
		if (host != "" && v.GetPrimary() != host) || !AllUpToDate(v, replicas) {
			return s, fmt.Errorf("primary %q, replicas %s", v.GetPrimary(), s)
		}
		return s, nil
	}
}

// RBDDisk is ready when its owner is host and Ceph shows exactly one
// watcher, holding the image's lock, on the owner: the VM's QEMU, and no
// client of an earlier owner left.
func RBDDisk() DiskState {
	return func(v *tandemv1.VolumeInfo, host string) (string, error) {
		s := RBDSummary(v)
		owner := v.GetPrimary()
		ws, lock := v.GetWatchers(), v.GetLockOwner()
		switch {
		case host != "" && owner != host:
			return s, fmt.Errorf("owner %q, not %s", owner, host)
		case len(ws) != 1 || ws[0].GetNode() != owner:
			return s, fmt.Errorf("owner %s, watchers %s", owner, s)
		case lock == nil || lock.GetNode() != owner || lock.GetAddr() != ws[0].GetAddr():
			return s, fmt.Errorf("owner %s, lock not held by its watcher: %s", owner, s)
		}
		return s, nil
	}
}

// RBDSummary is "owner n2 epoch 4, watchers n2@10.0.0.2:0/123, lock
// n2@10.0.0.2:0/123".
func RBDSummary(v *tandemv1.VolumeInfo) string {
	var ws []string
	for _, w := range v.GetWatchers() {
		ws = append(ws, w.GetNode()+"@"+w.GetAddr())
	}
	lock := "none"
	if l := v.GetLockOwner(); l != nil {
		lock = l.GetNode() + "@" + l.GetAddr()
	}
	return fmt.Sprintf("owner %s epoch %d, watchers %s, lock %s", benchkit.OrDash(v.GetPrimary()), v.GetEpoch(), benchkit.OrDash(strings.Join(ws, " ")), lock)
}

// FailoverOptions configures a Failover series.
type FailoverOptions struct {
	VM   string // the guest's name
	Disk string // its disk volume
	// GuestHost is the last octet of the guest's address on the VM
	// network.
	GuestHost int
	Rate      int     // guest datagrams per second
	Phases    []Phase // the report's phases (order problems name them)
	DiskState DiskState
	// Settle is the steady running before each crash; BootTimeout bounds
	// the guest's first boot, Recovery the wait for the restarted guest's
	// first datagram, Rejoin the power-on until the disk is ready again.
	Settle, BootTimeout, Recovery, Rejoin time.Duration
	// PcapPath, when set, keeps the captured frames there.
	PcapPath string
	LogLines int // of each log in the excerpts
}

// SeriesFlags are the command-line knobs of a Failover series.
type SeriesFlags struct {
	Runs                                  int
	Memory, Disk                          string
	Rate                                  int
	Settle, BootTimeout, Recovery, Rejoin time.Duration
}

// Flags registers -runs (default runs), -memory, -disk (diskHelp says
// what it is), -rate, -settle, -boot-timeout, -recovery-timeout and
// -rejoin-timeout (rejoinHelp says until what) on fs.
func (s *SeriesFlags) Flags(fs *flag.FlagSet, runs int, diskHelp, rejoinHelp string) {
	fs.IntVar(&s.Runs, "runs", runs, "hard host losses")
	fs.StringVar(&s.Memory, "memory", "192M", "guest memory")
	fs.StringVar(&s.Disk, "disk", "64M", diskHelp)
	fs.IntVar(&s.Rate, "rate", 100, "guest datagrams per second")
	fs.DurationVar(&s.Settle, "settle", 2*time.Second, "steady running before each crash, once the cluster and the volume are healthy")
	fs.DurationVar(&s.BootTimeout, "boot-timeout", 3*time.Minute, "bound on the guest's first boot")
	fs.DurationVar(&s.Recovery, "recovery-timeout", 90*time.Second, "bound on the wait for the restarted guest's first datagram after a crash")
	fs.DurationVar(&s.Rejoin, "rejoin-timeout", 3*time.Minute, "bound on power-on until "+rejoinHelp)
}

// Check refuses fewer than minRuns runs, a rate outside 1..1000, timeouts
// that are not positive and a memory size ParseMiB cannot read.
func (s SeriesFlags) Check(minRuns int) error {
	switch {
	case s.Runs < minRuns:
		return fmt.Errorf("-runs must be at least %d", minRuns)
	case s.Rate < 1 || s.Rate > 1000:
		return errors.New("-rate must be in 1..1000")
	case s.Recovery <= 0 || s.Rejoin <= 0 || s.BootTimeout <= 0:
		return errors.New("timeouts must be positive")
	}
	if _, err := ParseMiB(s.Memory); err != nil {
		return fmt.Errorf("-memory: %w", err)
	}
	return nil
}

// Options is o with the flags' rate and timings.
func (s SeriesFlags) Options(o FailoverOptions) FailoverOptions {
	o.Rate, o.Settle, o.BootTimeout, o.Recovery, o.Rejoin = s.Rate, s.Settle, s.BootTimeout, s.Recovery, s.Rejoin
	return o
}

// Failover is a series of hard losses of the host running one test guest
// on a cluster of Env with BMCs: each run crashes that host and times the
// cluster's recovery from its event log, a capture of the guest's stream
// and QEMU's log, checks what the restarted guest read from its disk
// (I2), then powers the host back on through its BMC.
type Failover struct {
	o   FailoverOptions
	env *Env
	// IP is the guest's address on the VM network.
	IP     string
	wire   *Wire
	rx     *guest.Receiver
	stopRx func() // stops the receiver and closes its socket
}

// NewFailover prepares a series on env; Start creates the guest.
func NewFailover(env *Env, o FailoverOptions) *Failover {
	if o.LogLines == 0 {
		o.LogLines = 40
	}
	return &Failover{o: o, env: env, IP: fmt.Sprintf("%s.%d", strings.TrimSuffix(env.C.ReceiverIP, ".1"), o.GuestHost)}
}

// IPMIFencing points every node's fencing at its BMC and returns the HA
// timing in force (`tandem ha status`), in ms; HA must be armed.
func (e *Env) IPMIFencing(ctx context.Context) (map[string]uint32, error) {
	for _, n := range e.C.Nodes {
		if err := e.FenceConfigIPMI(ctx, e.C.Nodes[0], n); err != nil {
			return nil, fmt.Errorf("fence-config %s: %w", n.Name, err)
		}
	}
	st, err := e.HAStatus(ctx, e.C.Nodes[0])
	if err != nil {
		return nil, fmt.Errorf("ha status: %w", err)
	}
	t := st.GetTiming()
	timing := map[string]uint32{
		"heartbeat_interval_ms": t.GetHeartbeatIntervalMs(), "suspect_timeout_ms": t.GetSuspectTimeoutMs(),
		"dead_timeout_ms": t.GetDeadTimeoutMs(), "fence_timeout_ms": t.GetFenceTimeoutMs(), "self_fence_lease_ms": t.GetSelfFenceLeaseMs(),
	}
	if !st.GetArmed() {
		return timing, errors.New("HA is disarmed")
	}
	return timing, nil
}

// WarmLibvirtMs is WarmLibvirt with the durations in ms.
func (e *Env) WarmLibvirtMs(ctx context.Context) (map[string][2]float64, error) {
	w, err := e.WarmLibvirt(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string][2]float64{}
	for n, d := range w {
		out[n] = [2]float64{benchkit.MS(d[0]), benchkit.MS(d[1])}
	}
	return out, nil
}

// Start starts the receiver on the switch and the capture of the guest's
// stream, creates the guest on node n (`tandem vm create VM --memory
// memory <disk...> --node n ... --start`, disk naming its disk) and waits
// until it writes and sends.
func (f *Failover) Start(ctx context.Context, n *testcluster.Node, memory string, disk ...string) error {
	env := f.env
	// A socket at the receiver address, so the guest's datagrams are
	// consumed (no ICMP port unreachable) and a user-space clock can be
	// compared with the capture's.
	conn, err := env.C.ListenUDPOnSwitch(env.C.ReceiverIP + ":" + strconv.Itoa(receiverPort))
	if err != nil {
		return fmt.Errorf("receiver socket: %w", err)
	}
	f.rx = guest.NewReceiver(conn, nil)
	stopRx := f.rx.Start(ctx)
	f.stopRx = func() { _ = stopRx(); conn.Close() }
	f.wire, err = StartWire(ctx, env.C, receiverPort, netip.MustParseAddr(f.IP), f.o.PcapPath, env.Log)
	if err != nil {
		return fmt.Errorf("capture: %w", err)
	}
	cmdline := env.Img.Cmdline(guest.Config{IP: f.IP + "/24", UDP: env.C.ReceiverIP + ":" + strconv.Itoa(receiverPort), Rate: f.o.Rate, Disk: "/dev/vda"})
	env.Log.Info("creating the guest", "vm", f.o.VM, "node", n.Name, "ip", f.IP)
	args := append([]string{"vm", "create", f.o.VM, "--memory", memory}, disk...)
	args = append(args, "--node", n.Name, "--kernel", env.Img.Kernel, "--initrd", env.Img.Initrd, "--cmdline", cmdline, "--nic", env.C.VMBridge+",ip="+f.IP, "--start")
	cctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	_, _, err = env.CLI(cctx, n, args...)
	cancel()
	if err != nil {
		return fmt.Errorf("vm create: %w", err)
	}
	wctx, cancel := context.WithTimeout(ctx, f.o.BootTimeout)
	defer cancel()
	d, err := f.wire.WaitFor(wctx, func(d Stamped) bool { return d.Acked > 5 && d.Seq > uint64(f.o.Rate) })
	if err != nil {
		return fmt.Errorf("the guest did not come up: %w", err)
	}
	env.Log.Info("guest up", "boot", d.Boot, "seq", d.Seq, "acked", d.Acked)
	return nil
}

// StopVM stops the guest through a live node. It tries again for up to
// CLITimeout: right after a rejoin the metadata shard may be electing a
// leader (no quorum for a moment).
func (f *Failover) StopVM(ctx context.Context) error {
	deadline := time.Now().Add(CLITimeout)
	for {
		sctx, cancel := context.WithTimeout(ctx, CLITimeout)
		_, _, err := f.env.CLI(sctx, f.Live(), "vm", "stop", f.o.VM, "--force")
		cancel()
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		f.env.Log.Warn("vm stop failed; trying again", "vm", f.o.VM, "err", err)
		if err := ctxtime.Sleep(ctx, time.Second); err != nil {
			return err
		}
	}
}

// Close stops the capture and the receiver and returns what they saw.
func (f *Failover) Close() (CaptureStats, error) {
	var c CaptureStats
	var err error
	if f.wire != nil {
		c.KernelDropped, err = f.wire.Close()
		c.Datagrams, c.Announcements = len(f.wire.Datagrams()), len(f.wire.Announcements())
		c.Malformed, c.NoKernelTS = f.wire.Counts()
	}
	if f.rx != nil {
		f.stopRx()
		c.ReceiverGot = len(f.rx.Arrivals())
	}
	if err != nil {
		err = fmt.Errorf("capture: %w", err)
	}
	return c, err
}

// Live is a node whose BMC reports it on (the first one).
func (f *Failover) Live() *testcluster.Node {
	for _, n := range f.env.C.Nodes {
		if bmc := f.env.BMC[n.Name]; bmc == nil || bmc.PoweredOn() {
			return n
		}
	}
	return f.env.C.Nodes[0]
}

// Runs crashes the guest's host n times, one after the other, and hands
// every run to done. It ends early, with an error, when the cluster is not
// in a state to go on.
func (f *Failover) Runs(ctx context.Context, n int, done func(Run)) error {
	for k := 1; k <= n && ctx.Err() == nil; k++ {
		r, fatal := f.runOnce(ctx, k)
		done(r)
		f.env.Log.Info("run done", "n", k, "crashed", r.Crashed, "target", r.Target, "dead_ms", r.PhasesMs[PhaseDead], "fenced_ms", r.PhasesMs[PhaseFenced],
			"takeover_ms", r.PhasesMs[PhaseTakeover], "promoted_ms", r.PhasesMs[PhasePromoted], "started_ms", r.PhasesMs[PhaseStarted],
			"first_datagram_ms", r.PhasesMs[PhaseFirst], "i2", r.I2, "errors", len(r.Errors))
		if fatal != nil {
			return fmt.Errorf("series ended after run %d: %w", k, fatal)
		}
	}
	return nil
}

// before is the state just before a crash.
type before struct {
	host       *testcluster.Node
	boot       uint64
	metaLeader bool
	watermark  uint64
}

// ready waits until the guest runs on a host with its disk ready there,
// the cluster is healthy and HA has the VM started, and the guest writes;
// it returns that state.
func (f *Failover) ready(ctx context.Context) (before, error) {
	env, vmName := f.env, f.o.VM
	deadline := time.Now().Add(readyTimeout)
	var why error
	for {
		if ctx.Err() != nil {
			return before{}, ctx.Err()
		}
		if time.Now().After(deadline) {
			return before{}, fmt.Errorf("not ready within %s: %w", readyTimeout, why)
		}
		if why != nil {
			_ = ctxtime.Sleep(ctx, 300*time.Millisecond)
		}
		via := f.Live()
		vm, err := env.VM(ctx, via, vmName)
		if err != nil {
			why = err
			continue
		}
		host := env.C.Node(vm.GetNode())
		if host == nil || vm.GetState() != "running" {
			why = fmt.Errorf("vm %s on %q is %s", vmName, vm.GetNode(), vm.GetState())
			continue
		}
		vol, err := env.Volume(ctx, host, f.o.Disk)
		if err != nil {
			why = err
			continue
		}
		if _, err := f.o.DiskState(vol, host.Name); err != nil {
			why = fmt.Errorf("volume %s: %w", f.o.Disk, err)
			continue
		}
		st, err := env.Status(ctx, host)
		if err != nil {
			why = err
			continue
		}
		if !env.Healthy(st) {
			why = fmt.Errorf("cluster: quorate %v, %d/%d online", st.GetQuorate(), st.GetVotesOnline(), st.GetVoters())
			continue
		}
		hs, err := env.HAStatus(ctx, host)
		if err != nil {
			why = err
			continue
		}
		if v := haVM(hs, vmName); !hs.GetArmed() || v.GetHaState() != "started" || v.GetNode() != host.Name {
			why = fmt.Errorf("ha: armed %v, %s %s on %s (%s)", hs.GetArmed(), vmName, v.GetHaState(), v.GetNode(), v.GetReason())
			continue
		}
		// The guest writes: fresh datagrams with a growing disk counter.
		last, _ := f.lastDatagram()
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		d, err := f.wire.WaitFor(wctx, func(d Stamped) bool {
			return d.Boot == last.Boot && d.Seq > last.Seq+uint64(f.o.Rate/10) && d.Acked >= last.Acked+ackAdvance
		})
		cancel()
		if err != nil {
			why = fmt.Errorf("guest (boot %d, seq %d, acked %d) makes no progress: %w", last.Boot, last.Seq, last.Acked, err)
			continue
		}
		evs, err := env.Events(ctx, host, 0)
		if err != nil {
			why = err
			continue
		}
		var mark uint64
		for _, e := range evs {
			mark = max(mark, e.GetSeq())
		}
		leader := false
		for _, n := range st.GetNodes() {
			if n.GetLeader() && n.GetName() == host.Name {
				leader = true
			}
		}
		return before{host: host, boot: d.Boot, metaLeader: leader, watermark: mark}, nil
	}
}

func haVM(st *tandemv1.HAStatusResponse, vm string) *tandemv1.HAVM {
	for _, v := range st.GetVms() {
		if v.GetName() == vm {
			return v
		}
	}
	return &tandemv1.HAVM{}
}

// lastDatagram is the newest captured datagram.
func (f *Failover) lastDatagram() (Stamped, bool) {
	ds := f.wire.Datagrams()
	if len(ds) == 0 {
		return Stamped{}, false
	}
	return ds[len(ds)-1], true
}

// runOnce is one crash, its measurement and the host's return. A non-nil
// fatal error ends the series (the cluster is not in a state to go on).
func (f *Failover) runOnce(ctx context.Context, k int) (r Run, fatal error) {
	env, vmName := f.env, f.o.VM
	r = Run{N: k, PhasesMs: map[string]float64{}, I2: "unknown"}
	fail := func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		r.Errors = append(r.Errors, msg)
		env.Log.Error("run " + strconv.Itoa(k) + ": " + msg)
	}
	pre, err := f.ready(ctx)
	if err != nil {
		fail("before the crash: %v", err)
		r.LogExcerpts = env.Excerpts(vmName, f.o.LogLines)
		return r, err
	}
	host := pre.host
	r.Crashed, r.MetaLeader, r.OldBoot = host.Name, pre.metaLeader, pre.boot
	var survivor *testcluster.Node
	for _, n := range env.C.Nodes {
		if n != host {
			survivor = n
			break
		}
	}
	env.Log.Info("run "+strconv.Itoa(k)+": crashing the VM's host", "host", host.Name, "metadata_leader", pre.metaLeader, "boot", pre.boot)
	if err := ctxtime.Sleep(ctx, f.o.Settle); err != nil {
		return r, err
	}
	// Leadership may have moved during the settle (a rejoined node can
	// trigger an election): look again right before the crash.
	if st, err := env.Status(ctx, host); err == nil {
		r.MetaLeader = st.GetLeader() == host.Name
		for _, n := range st.GetNodes() {
			if n.GetLeader() {
				r.MetaLeader = n.GetName() == host.Name
			}
		}
	}

	r.Load = benchkit.LoadAvg()
	// The crash: every process SIGKILLed and reaped, then both links down.
	t0 := time.Now()
	env.C.Kill(host)
	env.C.Isolate(host)
	env.C.IsolateVM(host)
	killed := time.Now()
	r.CrashAt = t0.UTC().Format(time.RFC3339Nano)
	r.KillMs = benchkit.MS(killed.Sub(t0))

	wctx, cancel := context.WithTimeout(ctx, f.o.Recovery)
	_, werr := f.wire.WaitFor(wctx, func(d Stamped) bool { return d.Boot > pre.boot })
	cancel()
	recovered := werr == nil
	if !recovered {
		fail("the guest sent nothing from a new boot within %s of the crash: %v", f.o.Recovery, werr)
	}
	// Let datagrams in flight land, then read the cluster's account.
	_ = ctxtime.Sleep(ctx, 500*time.Millisecond)
	evs := f.waitRecoveryEvents(ctx, survivor, pre.watermark, recovered)
	ev := fromEvents(evs, host.Name, vmName, f.o.Disk, t0)
	r.Events, r.Target, r.FenceAgent, r.FenceDetail, r.FenceNotConfirmed = ev.events, ev.target, ev.fenceAgent, ev.fenceDetail, ev.notConfirmed
	if ev.haveLastAnswer {
		v := ev.lastAnswerMs
		r.LastAnswerMs = &v
		r.DetectorRestarted = v > detectorRestartSlackMs
	}
	for key, v := range ev.phases {
		r.PhasesMs[key] = v
	}
	for _, e := range ev.errors {
		fail("%s", e)
	}

	// The guest stream around the crash (capture).
	s := AroundCrash(f.wire.Datagrams(), pre.boot, killed)
	if s.HaveOld {
		r.LastAckedBefore, r.LastSeqBefore, r.LastBeforeMs = s.MaxAcked, s.LastOld.Seq, benchkit.MS(s.LastOld.At.Sub(t0))
	}
	r.StaleAfter = s.StaleAfter
	if s.HaveFirst {
		r.NewBoot, r.FirstAcked, r.FirstSeq = s.First.Boot, s.First.Acked, s.First.Seq
		r.PhasesMs[PhaseFirst] = benchkit.MS(s.First.At.Sub(t0))
		if s.First.Boot != pre.boot+1 {
			fail("the guest's boot went from %d to %d: it started more than once", pre.boot, s.First.Boot)
		}
	}
	// The user-space receiver's view of the same first datagram.
	for _, a := range f.rx.Arrivals() {
		if a.Boot > pre.boot {
			v := benchkit.MS(a.At.Sub(t0))
			r.ReceiverFirstMs = &v
			break
		}
	}
	// Announcements of the guest's address after the crash.
	for _, a := range f.wire.Announcements() {
		if a.At.After(t0) {
			r.PhasesMs[PhaseAnnounced] = benchkit.MS(a.At.Sub(t0))
			break
		}
	}
	target := env.C.Node(r.Target)
	if target == nil && recovered {
		// No vm-recovered event: ask where the VM runs.
		if vm, err := env.VM(ctx, survivor, vmName); err == nil {
			target = env.C.Node(vm.GetNode())
			r.Target = vm.GetNode()
		}
	}
	if target != nil {
		if lv := env.Libvirtd(target.Name); lv != nil {
			if at, ok := qemuLaunch(readFile(lv.QEMULog(vmName)), t0); ok {
				r.PhasesMs[PhaseLaunched] = benchkit.MS(at.Sub(t0))
			}
		}
	}
	// I2: the counter the restarted guest read from its disk.
	if s.HaveFirst && target != nil {
		if c, ok := f.waitDiskCounter(ctx, target, s.First.Boot); ok {
			r.DiskAtBoot = &c
			if s.HaveOld {
				r.I2 = "ok"
				if c < s.MaxAcked {
					r.I2 = "VIOLATED"
					fail("I2 VIOLATED: the guest had seen disk write %d acknowledged before the crash; after the restart on %s its disk held %d", s.MaxAcked, target.Name, c)
				}
			}
		} else {
			fail("no \"disk counter\" line for boot %d in the console of %s", s.First.Boot, target.Name)
		}
	}
	if s.HaveFirst && s.HaveOld && s.First.Acked < s.MaxAcked {
		fail("the restarted guest's first datagram reports disk counter %d, below the %d acknowledged before the crash", s.First.Acked, s.MaxAcked)
	}
	if r.StaleAfter > 0 {
		fail("%d datagrams of the old boot %d were captured after the kill had completed: the old guest was still running", r.StaleAfter, pre.boot)
	}
	r.OrderProblem = orderProblems(r.PhasesMs, f.o.Phases)
	for _, p := range r.OrderProblem {
		env.Log.Error("run " + strconv.Itoa(k) + ": event order: " + p)
	}
	if len(r.Errors) > 0 || len(r.OrderProblem) > 0 {
		r.LogExcerpts = f.windowExcerpts(t0.Add(-2*time.Second), time.Now())
	}

	// Power the host back on through its BMC and wait for the disk.
	rj, err := f.rejoin(ctx, host, survivor)
	r.Rejoin = rj
	if err != nil {
		fail("rejoin of %s: %v", host.Name, err)
		if r.LogExcerpts == nil {
			r.LogExcerpts = f.windowExcerpts(t0.Add(-2*time.Second), time.Now())
		}
		return r, err
	}
	if !recovered {
		// Maybe the VM comes back once its old host is back.
		wctx, cancel := context.WithTimeout(ctx, f.o.Recovery)
		d, err := f.wire.WaitFor(wctx, func(d Stamped) bool { return d.Boot > pre.boot })
		cancel()
		if err != nil {
			return r, fmt.Errorf("the guest did not come back even after %s was powered on again", host.Name)
		}
		fail("the guest came back only after %s was powered on again (%.1f s after the crash)", host.Name, benchkit.MS(d.At.Sub(t0))/1000)
	}
	return r, nil
}

// waitRecoveryEvents polls the event log (through via) until the VM's
// recovery ended (vm-recovered or vm-recovery-failed) or eventsTimeout.
func (f *Failover) waitRecoveryEvents(ctx context.Context, via *testcluster.Node, since uint64, recovered bool) []*tandemv1.Event {
	deadline := time.Now().Add(eventsTimeout)
	if !recovered {
		deadline = time.Now() // one read: the timeout has passed already
	}
	var evs []*tandemv1.Event
	for {
		got, err := f.env.Events(ctx, via, since)
		if err == nil {
			evs = got
			for _, e := range evs {
				if e.GetVm() == f.o.VM && (e.GetKind() == "vm-recovered" || e.GetKind() == "vm-recovery-failed") {
					return evs
				}
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return evs
		}
		_ = ctxtime.Sleep(ctx, 300*time.Millisecond)
	}
}

// eventsResult is what the event log says about one recovery.
type eventsResult struct {
	phases       map[string]float64
	events       []RunEvent
	target       string
	fenceAgent   string
	fenceDetail  string
	notConfirmed int
	errors       []string
	// lastAnswerMs is the detector's last answer from the crashed node
	// (from the node-suspected detail), relative to the crash.
	lastAnswerMs   float64
	haveLastAnswer bool
}

// fromEvents extracts the phases of the recovery of vm from crashed's loss
// at t0: the first node-suspected, node-dead and confirmed fence-result of
// crashed, the first RBD takeover of disk (RBD disks only), the first
// promotion and vm-recovered of vm. It reports vm-recovery-failed and
// recovery-cancelled events as errors.
func fromEvents(evs []*tandemv1.Event, crashed, vm, disk string, t0 time.Time) eventsResult {
	res := eventsResult{phases: map[string]float64{}}
	set := func(key string, e *tandemv1.Event) {
		if _, ok := res.phases[key]; !ok {
			res.phases[key] = benchkit.MS(e.GetAt().AsTime().Sub(t0))
		}
	}
	for _, e := range evs {
		res.events = append(res.events, RunEvent{Seq: e.GetSeq(), AtMs: benchkit.MS(e.GetAt().AsTime().Sub(t0)), By: e.GetBy(), Kind: e.GetKind(),
			Node: e.GetNode(), VM: e.GetVm(), Detail: e.GetDetail()})
		switch {
		case e.GetKind() == "node-suspected" && e.GetNode() == crashed:
			if _, seen := res.phases[PhaseSuspected]; !seen {
				if ago, ok := lastAnswer(e.GetDetail()); ok {
					res.lastAnswerMs, res.haveLastAnswer = benchkit.MS(e.GetAt().AsTime().Sub(t0)-ago), true
				}
			}
			set(PhaseSuspected, e)
		case e.GetKind() == "node-dead" && e.GetNode() == crashed:
			set(PhaseDead, e)
		case e.GetKind() == "fence-result" && e.GetNode() == crashed:
			agent, ok := confirmedBy(e.GetDetail())
			if !ok {
				res.notConfirmed++
				continue
			}
			if _, seen := res.phases[PhaseFenced]; !seen {
				res.fenceAgent, res.fenceDetail = agent, e.GetDetail()
			}
			set(PhaseFenced, e)
		case e.GetKind() == "volume-rbd-takeover" && strings.HasPrefix(e.GetDetail(), "volume "+disk+":"):
			set(PhaseTakeover, e)
		case e.GetKind() == "promotion" && e.GetVm() == vm:
			set(PhasePromoted, e)
		case e.GetKind() == "vm-recovered" && e.GetVm() == vm:
			if res.target == "" {
				res.target = e.GetNode()
			}
			set(PhaseStarted, e)
		case e.GetKind() == "vm-recovery-failed" && e.GetVm() == vm:
			res.errors = append(res.errors, "vm-recovery-failed: "+e.GetDetail())
		case e.GetKind() == "recovery-cancelled" && e.GetNode() == crashed:
			res.errors = append(res.errors, "recovery-cancelled: "+e.GetDetail())
		}
	}
	if _, ok := res.phases[PhaseStarted]; !ok {
		res.errors = append(res.errors, "no vm-recovered event for "+vm)
	}
	return res
}

var lastAnswerRE = regexp.MustCompile(`last answer (\S+) ago`)

// lastAnswer reads the detector's "last answer 1.505s ago" from a liveness
// event's detail.
func lastAnswer(detail string) (time.Duration, bool) {
	m := lastAnswerRE.FindStringSubmatch(detail)
	if m == nil {
		return 0, false
	}
	d, err := time.ParseDuration(m[1])
	return d, err == nil
}

// confirmedBy reads a fence-result detail: "confirmed by <agent>: ...".
func confirmedBy(detail string) (string, bool) {
	rest, ok := strings.CutPrefix(detail, "confirmed by ")
	if !ok {
		return "", false
	}
	agent, _, _ := strings.Cut(rest, ":")
	return agent, true
}

// orderProblems checks that the phases happened in the only safe order:
// suspected ≤ dead ≤ fenced ≤ RBD takeover ≤ promoted ≤ started, and that
// neither QEMU nor the guest ran on the target before the fence was
// confirmed. phases name them.
func orderProblems(ph map[string]float64, phases []Phase) []string {
	var out []string
	label := func(key string) string { return phaseLabel(phases, key) }
	chain := []string{PhaseSuspected, PhaseDead, PhaseFenced, PhaseTakeover, PhasePromoted, PhaseStarted}
	prev := ""
	for _, k := range chain {
		v, ok := ph[k]
		if !ok {
			continue
		}
		if prev != "" && v < ph[prev] {
			out = append(out, fmt.Sprintf("%s at %.0f ms came before %s at %.0f ms", label(k), v, label(prev), ph[prev]))
		}
		prev = k
	}
	fenced, ok := ph[PhaseFenced]
	for _, k := range []string{PhaseTakeover, PhasePromoted, PhaseLaunched, PhaseStarted, PhaseFirst} {
		v, has := ph[k]
		switch {
		case !has:
		case !ok:
			out = append(out, fmt.Sprintf("%s at %.0f ms without any confirmed fence", label(k), v))
		case v < fenced:
			out = append(out, fmt.Sprintf("%s at %.0f ms before the fence was confirmed at %.0f ms", label(k), v, fenced))
		}
	}
	return out
}

var qemuStartRE = regexp.MustCompile(`(?m)^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3})\+0000: starting up`)

// qemuLaunch is the first "starting up" line of a libvirt QEMU log at or
// after t0 (libvirt writes it in UTC when it spawns QEMU).
func qemuLaunch(log string, t0 time.Time) (time.Time, bool) {
	for _, m := range qemuStartRE.FindAllStringSubmatch(log, -1) {
		t, err := time.ParseInLocation("2006-01-02 15:04:05.000", m[1], time.UTC)
		if err == nil && !t.Before(t0.Truncate(time.Millisecond)) {
			return t, true
		}
	}
	return time.Time{}, false
}

func (f *Failover) waitDiskCounter(ctx context.Context, n *testcluster.Node, boot uint64) (uint64, bool) {
	deadline := time.Now().Add(consoleTimeout)
	for {
		if c, ok := DiskCounter(readFile(f.env.ConsoleLog(n, f.o.VM)), boot); ok {
			return c, true
		}
		if time.Now().After(deadline) || ctxtime.Sleep(ctx, 200*time.Millisecond) != nil {
			return 0, false
		}
	}
}

func readFile(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return string(data)
}

// windowExcerpts keeps every node's tandemd log lines within [from, to]
// and the guest's QEMU logs and consoles.
func (f *Failover) windowExcerpts(from, to time.Time) map[string]string {
	out := f.env.Excerpts(f.o.VM, f.o.LogLines)
	for _, n := range f.env.C.Nodes {
		out[n.Name+"/tandemd.log"] = LogWindow(filepath.Join(n.Dir, "tandemd.log"), from, to, 120)
	}
	return out
}

// rejoin powers host on through its BMC (from another host, with
// ipmitool) and waits until it answers, the cluster has every node online
// again and the disk is ready (DiskState, wherever its owner is).
func (f *Failover) rejoin(ctx context.Context, host, via *testcluster.Node) (*Rejoin, error) {
	env := f.env
	bmc := env.BMC[host.Name]
	rj := &Rejoin{PoweredOffByBMC: !bmc.PoweredOn()}
	if bmc.PoweredOn() {
		// The fence was not IPMI's: power it off properly first, so that
		// power on boots it (and brings its ports up).
		if _, err := env.IPMIPower(ctx, bmc, "off"); err != nil {
			return rj, err
		}
	}
	t := time.Now()
	if _, err := env.IPMIPower(ctx, bmc, "on"); err != nil {
		return rj, err
	}
	rctx, cancel := context.WithTimeout(ctx, f.o.Rejoin)
	defer cancel()
	if err := bmc.WaitBoot(rctx); err != nil {
		return rj, fmt.Errorf("boot: %w", err)
	}
	rj.BootMs = benchkit.MS(time.Since(t))
	for {
		st, err := env.Status(rctx, via)
		if err == nil && env.Healthy(st) {
			break
		}
		if rctx.Err() != nil {
			return rj, fmt.Errorf("cluster not back to %d/%d online: %v", len(env.C.Nodes), len(env.C.Nodes), err)
		}
		_ = ctxtime.Sleep(rctx, 200*time.Millisecond)
	}
	rj.OnlineMs = benchkit.MS(time.Since(t))
	for {
		vol, err := env.Volume(rctx, via, f.o.Disk)
		var why error
		if err == nil {
			rj.Replicas, why = f.o.DiskState(vol, "")
			if why == nil {
				break
			}
		}
		if rctx.Err() != nil {
			return rj, fmt.Errorf("disk %s not ready within %s: %s", f.o.Disk, f.o.Rejoin, rj.Replicas)
		}
		_ = ctxtime.Sleep(rctx, 250*time.Millisecond)
	}
	rj.UpToDateMs = benchkit.MS(time.Since(t))
	return rj, nil
}
