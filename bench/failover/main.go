package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/tandemhci/tandem/bench/internal/benchkit"
	"github.com/tandemhci/tandem/bench/internal/vmbench"
	"github.com/tandemhci/tandem/internal/guest"
	"github.com/tandemhci/tandem/internal/testcluster"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

const (
	clusterName = "failover"
	nodes       = 3
	replicas    = 3
	vmName      = "fo1"
	// guestHost is the last octet of the guest's address on the VM network.
	guestHost    = 70
	receiverPort = 9999
	logLines     = 40
)

func main() { os.Exit(benchkit.Main("failover", os.Args[1:], parseFlags, execute)) }

type config struct {
	benchkit.Common
	logs         string
	runs         int
	memory, disk string
	rate         int
	warm         bool
	settle       time.Duration
	bootTimeout  time.Duration
	recovery     time.Duration
	rejoin       time.Duration
}

func parseFlags(args []string) (config, error) {
	var c config
	fs := flag.NewFlagSet("failover", flag.ContinueOnError)
	c.Flags(fs, "failover", 25*time.Minute, true)
	fs.StringVar(&c.logs, "keep-logs", "", "if set, copy every node's logs, the guest's QEMU logs and consoles, and the capture (failover.pcap) into this directory")
	fs.IntVar(&c.runs, "runs", 10, "hard host losses")
	fs.StringVar(&c.memory, "memory", "192M", "guest memory")
	fs.StringVar(&c.disk, "disk", "64M", "guest disk size (3 replicas)")
	fs.IntVar(&c.rate, "rate", 100, "guest datagrams per second")
	fs.BoolVar(&c.warm, "warm-libvirt", true, "have every libvirtd probe QEMU's capabilities before the runs (as on a host that has run VMs before), so the first restart on a host does not pay for it")
	fs.DurationVar(&c.settle, "settle", 2*time.Second, "steady running before each crash, once the cluster and the volume are healthy")
	fs.DurationVar(&c.bootTimeout, "boot-timeout", 3*time.Minute, "bound on the guest's first boot")
	fs.DurationVar(&c.recovery, "recovery-timeout", 90*time.Second, "bound on the wait for the restarted guest's first datagram after a crash")
	fs.DurationVar(&c.rejoin, "rejoin-timeout", 3*time.Minute, "bound on power-on until the crashed host's replica is UpToDate again")
	if err := benchkit.ParseArgs(fs, args); err != nil {
		return c, err
	}
	switch {
	case c.runs < 1:
		return c, errors.New("-runs must be at least 1")
	case c.rate < 1 || c.rate > 1000:
		return c, errors.New("-rate must be in 1..1000")
	case c.Timeout <= 0 || c.recovery <= 0 || c.rejoin <= 0 || c.bootTimeout <= 0:
		return c, errors.New("timeouts must be positive")
	}
	return c, nil
}

// bench is one benchmark run.
type bench struct {
	cfg  config
	log  *slog.Logger
	env  *vmbench.Env
	rep  *Report
	wire *wire
	rx   *guest.Receiver
	// stopRx stops the receiver and closes its socket.
	stopRx func()
	ip     string
}

func execute(ctx context.Context, log *slog.Logger, cfg config) (*Report, error) {
	began := time.Now()
	mem, err := vmbench.ParseMiB(cfg.memory)
	if err != nil {
		return nil, fmt.Errorf("-memory: %w", err)
	}
	env, err := vmbench.Open(ctx, vmbench.Options{Name: "failover", Bin: cfg.Bin, Nodes: nodes, BMC: true, Log: log})
	if err != nil {
		return nil, err
	}
	defer env.Close()
	b := &bench{cfg: cfg, log: log, env: env, ip: fmt.Sprintf("%s.%d", strings.TrimSuffix(env.C.ReceiverIP, ".1"), guestHost)}
	b.rep = &Report{
		Date: began.UTC().Format(time.RFC3339), Host: benchkit.VMHost(), Tandemd: benchkit.Binary(filepath.Join(env.Bin, "tandemd")).WithDescribe(ctx, env.Root),
		Tools: map[string]string{
			"qemu":     benchkit.ToolVersion(ctx, "qemu-system-x86_64", "--version"),
			"libvirtd": benchkit.ToolVersion(ctx, "libvirtd", "--version"),
			"ipmitool": benchkit.ToolVersion(ctx, "ipmitool", "-V"),
		},
		Params: Params{Nodes: nodes, Runs: cfg.runs, Replicas: replicas, MemoryMiB: mem, Disk: cfg.disk, Rate: cfg.rate, Settle: cfg.settle.String(),
			Recovery: cfg.recovery.String(), Rejoin: cfg.rejoin.String(), Timeout: cfg.Timeout.String(), Accelerator: "TCG (no KVM)",
			Fencing: "IPMI (ipmi_sim BMC per host, `tandem node fence-config --ipmi`) with the self-fence lease as fallback"},
		LoadBefore: benchkit.LoadAvg(), VM: vmName, GuestIP: b.ip, Published: published(), Thesis: thesisMethod(),
	}
	// A failed setup or a series cut short is returned with the report:
	// benchkit.Finish publishes it as partial, beside the committed results.
	if err = b.setup(ctx); err != nil {
		err = fmt.Errorf("setup: %w", err)
		b.rep.LogExcerpts = env.Excerpts(vmName, logLines)
	} else {
		err = b.runs(ctx)
		b.teardownGuest(ctx)
	}
	b.finish(began)
	return b.rep, err
}

// setup starts the cluster with BMCs, configures IPMI fencing, the
// receiver and the capture, and boots the guest.
func (b *bench) setup(ctx context.Context) error {
	env := b.env
	if err := env.Start(ctx, clusterName, true); err != nil {
		return err
	}
	if b.cfg.warm {
		w, err := env.WarmLibvirt(ctx)
		if err != nil {
			return err
		}
		b.rep.LibvirtWarmup = map[string][2]float64{}
		for n, d := range w {
			b.rep.LibvirtWarmup[n] = [2]float64{benchkit.MS(d[0]), benchkit.MS(d[1])}
		}
	}
	for _, n := range env.C.Nodes {
		if err := env.FenceConfigIPMI(ctx, env.C.Nodes[0], n); err != nil {
			return fmt.Errorf("fence-config %s: %w", n.Name, err)
		}
	}
	if st, err := env.HAStatus(ctx, env.C.Nodes[0]); err != nil {
		return fmt.Errorf("ha status: %w", err)
	} else {
		t := st.GetTiming()
		b.rep.Timing = map[string]uint32{
			"heartbeat_interval_ms": t.GetHeartbeatIntervalMs(), "suspect_timeout_ms": t.GetSuspectTimeoutMs(),
			"dead_timeout_ms": t.GetDeadTimeoutMs(), "fence_timeout_ms": t.GetFenceTimeoutMs(), "self_fence_lease_ms": t.GetSelfFenceLeaseMs(),
		}
		if !st.GetArmed() {
			return errors.New("HA is disarmed")
		}
	}
	// A socket at the receiver address, so the guest's datagrams are
	// consumed (no ICMP port unreachable) and a user-space clock can be
	// compared with the capture's.
	conn, err := env.C.ListenUDPOnSwitch(env.C.ReceiverIP + ":" + strconv.Itoa(receiverPort))
	if err != nil {
		return fmt.Errorf("receiver socket: %w", err)
	}
	b.rx = guest.NewReceiver(conn, nil)
	stopRx := b.rx.Start(ctx)
	b.stopRx = func() { _ = stopRx(); conn.Close() }
	pcapPath := ""
	if b.cfg.logs != "" {
		if err := os.MkdirAll(b.cfg.logs, 0o755); err != nil {
			return err
		}
		pcapPath = filepath.Join(b.cfg.logs, "failover.pcap")
	}
	b.wire, err = startWire(ctx, env.C, receiverPort, netip.MustParseAddr(b.ip), pcapPath, b.log)
	if err != nil {
		return fmt.Errorf("capture: %w", err)
	}

	n1 := env.C.Nodes[0]
	cmdline := env.Img.Cmdline(guest.Config{IP: b.ip + "/24", UDP: env.C.ReceiverIP + ":" + strconv.Itoa(receiverPort), Rate: b.cfg.rate, Disk: "/dev/vda"})
	b.log.Info("creating the guest", "vm", vmName, "node", n1.Name, "ip", b.ip)
	cctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	_, _, err = env.CLI(cctx, n1, "vm", "create", vmName, "--memory", b.cfg.memory, "--disk", fmt.Sprintf("%s,replicas=%d", b.cfg.disk, replicas),
		"--node", n1.Name, "--kernel", env.Img.Kernel, "--initrd", env.Img.Initrd, "--cmdline", cmdline, "--nic", env.C.VMBridge+",ip="+b.ip, "--start")
	cancel()
	if err != nil {
		return fmt.Errorf("vm create: %w", err)
	}
	wctx, cancel := context.WithTimeout(ctx, b.cfg.bootTimeout)
	defer cancel()
	d, err := b.wire.WaitFor(wctx, func(d Stamped) bool { return d.Acked > 5 && d.Seq > uint64(b.cfg.rate) })
	if err != nil {
		return fmt.Errorf("the guest did not come up: %w", err)
	}
	b.log.Info("guest up", "boot", d.Boot, "seq", d.Seq, "acked", d.Acked)
	return nil
}

// teardownGuest verifies the replicas and stops the guest.
func (b *bench) teardownGuest(ctx context.Context) {
	if ctx.Err() != nil {
		return
	}
	via := b.live()
	vctx, cancel := context.WithTimeout(ctx, time.Minute)
	var ver tandemv1.VerifyVolumeResponse
	err := b.env.CLIJSON(vctx, via, &ver, "volume", "verify", vmName+"-disk0")
	cancel()
	if err != nil {
		b.rep.Errors = append(b.rep.Errors, fmt.Sprintf("volume verify: %v", err))
	} else {
		b.rep.Verify = &VerifyResult{CheckedBytes: ver.GetCheckedBytes(), Mismatches: len(ver.GetMismatches())}
		if len(ver.GetMismatches()) > 0 {
			b.rep.Errors = append(b.rep.Errors, fmt.Sprintf("volume verify: %d mismatching ranges between replicas", len(ver.GetMismatches())))
		}
	}
	sctx, cancel := context.WithTimeout(ctx, vmbench.CLITimeout)
	defer cancel()
	if _, _, err := b.env.CLI(sctx, via, "vm", "stop", vmName, "--force"); err != nil {
		b.rep.Errors = append(b.rep.Errors, fmt.Sprintf("vm stop: %v", err))
	}
}

// live is a node whose BMC reports it on (the first one).
func (b *bench) live() *testcluster.Node {
	for _, n := range b.env.C.Nodes {
		if bmc := b.env.BMC[n.Name]; bmc == nil || bmc.PoweredOn() {
			return n
		}
	}
	return b.env.C.Nodes[0]
}

func (b *bench) finish(began time.Time) {
	rep := b.rep
	rep.Phases = summarizePhases(rep.Runs)
	rep.GuestBoot, rep.StartedLeader, rep.StartedOther = derived(rep.Runs)
	rep.Goal = evaluateGoal(rep.Phases, len(rep.Runs))
	rep.Integrity = integrity(rep.Runs)
	if b.wire != nil {
		dropped, err := b.wire.Close()
		if err != nil {
			rep.Errors = append(rep.Errors, fmt.Sprintf("capture: %v", err))
		}
		malformed, noKernel := b.wire.counts()
		rep.Capture = CaptureStats{Datagrams: len(b.wire.Datagrams()), Announcements: len(b.wire.Announcements()), Malformed: malformed,
			KernelDropped: dropped, NoKernelTS: noKernel}
	}
	if b.rx != nil {
		b.stopRx()
		rep.Capture.ReceiverGot = len(b.rx.Arrivals())
	}
	rep.DaemonLog = benchkit.ScanDaemonLogs(b.env.C)
	if b.cfg.logs != "" {
		if err := b.env.CopyLogs(b.cfg.logs, vmName); err != nil {
			rep.Errors = append(rep.Errors, err.Error())
		}
	}
	rep.LoadAfter = benchkit.LoadAvg()
	rep.DurationS = time.Since(began).Seconds()
}
