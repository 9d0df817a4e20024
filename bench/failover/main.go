package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/tandemhci/tandem/bench/internal/benchkit"
	"github.com/tandemhci/tandem/bench/internal/vmbench"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

const (
	clusterName = "failover"
	nodes       = 3
	replicas    = 3
	vmName      = "fo1"
	// guestHost is the last octet of the guest's address on the VM network.
	guestHost = 70
	logLines  = 40
)

func main() { os.Exit(benchkit.Main("failover", os.Args[1:], parseFlags, execute)) }

type config struct {
	benchkit.Common
	series vmbench.SeriesFlags
	logs   string
	warm   bool
}

func parseFlags(args []string) (config, error) {
	var c config
	fs := flag.NewFlagSet("failover", flag.ContinueOnError)
	c.Flags(fs, "failover", 25*time.Minute, true)
	fs.StringVar(&c.logs, "keep-logs", "", "if set, copy every node's logs, the guest's QEMU logs and consoles, and the capture (failover.pcap) into this directory")
	c.series.Flags(fs, 10, "guest disk size (3 replicas)", "the crashed host's replica is UpToDate again")
	fs.BoolVar(&c.warm, "warm-libvirt", true, "have every libvirtd probe QEMU's capabilities before the runs (as on a host that has run VMs before), so the first restart on a host does not pay for it")
	if err := benchkit.ParseArgs(fs, args); err != nil {
		return c, err
	}
	if c.Timeout <= 0 {
		return c, errors.New("-timeout must be positive")
	}
	return c, c.series.Check(1)
}

// bench is one benchmark run.
type bench struct {
	cfg config
	log *slog.Logger
	env *vmbench.Env
	fo  *vmbench.Failover
	rep *Report
}

func execute(ctx context.Context, log *slog.Logger, cfg config) (*Report, error) {
	began := time.Now()
	mem, _ := vmbench.ParseMiB(cfg.series.Memory) // checked with the flags
	env, err := vmbench.Open(ctx, vmbench.Options{Name: "failover", Bin: cfg.Bin, Nodes: nodes, BMC: true, Log: log})
	if err != nil {
		return nil, err
	}
	defer env.Close()
	pcap := ""
	if cfg.logs != "" {
		if err := os.MkdirAll(cfg.logs, 0o755); err != nil {
			return nil, err
		}
		pcap = filepath.Join(cfg.logs, "failover.pcap")
	}
	fo := vmbench.NewFailover(env, cfg.series.Options(vmbench.FailoverOptions{VM: vmName, Disk: vmName + "-disk0", GuestHost: guestHost,
		Phases: vmbench.ReplicatedPhases(), DiskState: vmbench.ReplicatedDisk(replicas), PcapPath: pcap, LogLines: logLines}))
	b := &bench{cfg: cfg, log: log, env: env, fo: fo}
	b.rep = &Report{
		Date: began.UTC().Format(time.RFC3339), Host: benchkit.VMHost(), Tandemd: benchkit.Binary(filepath.Join(env.Bin, "tandemd")).WithDescribe(ctx, env.Root),
		Tools: map[string]string{
			"qemu":     benchkit.ToolVersion(ctx, "qemu-system-x86_64", "--version"),
			"libvirtd": benchkit.ToolVersion(ctx, "libvirtd", "--version"),
			"ipmitool": benchkit.ToolVersion(ctx, "ipmitool", "-V"),
		},
		Params: Params{Nodes: nodes, Runs: cfg.series.Runs, Replicas: replicas, MemoryMiB: mem, Disk: cfg.series.Disk, Rate: cfg.series.Rate, Settle: cfg.series.Settle.String(),
			Recovery: cfg.series.Recovery.String(), Rejoin: cfg.series.Rejoin.String(), Timeout: cfg.Timeout.String(), Accelerator: "TCG (no KVM)",
			Fencing: "IPMI (ipmi_sim BMC per host, `tandem node fence-config --ipmi`) with the self-fence lease as fallback"},
		LoadBefore: benchkit.LoadAvg(), VM: vmName, GuestIP: fo.IP, Published: published(), Thesis: thesisMethod(),
	}
	// A failed setup or a series cut short is returned with the report:
	// benchkit.Finish publishes it as partial, beside the committed results.
	if err = b.setup(ctx); err != nil {
		err = fmt.Errorf("setup: %w", err)
		b.rep.LogExcerpts = env.Excerpts(vmName, logLines)
	} else {
		err = fo.Runs(ctx, cfg.series.Runs, func(r vmbench.Run) { b.rep.Runs = append(b.rep.Runs, r) })
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
		w, err := env.WarmLibvirtMs(ctx)
		if err != nil {
			return err
		}
		b.rep.LibvirtWarmup = w
	}
	timing, err := env.IPMIFencing(ctx)
	b.rep.Timing = timing
	if err != nil {
		return err
	}
	return b.fo.Start(ctx, env.C.Nodes[0], b.cfg.series.Memory, "--disk", fmt.Sprintf("%s,replicas=%d", b.cfg.series.Disk, replicas))
}

// teardownGuest verifies the replicas and stops the guest.
func (b *bench) teardownGuest(ctx context.Context) {
	if ctx.Err() != nil {
		return
	}
	vctx, cancel := context.WithTimeout(ctx, time.Minute)
	var ver tandemv1.VerifyVolumeResponse
	err := b.env.CLIJSON(vctx, b.fo.Live(), &ver, "volume", "verify", vmName+"-disk0")
	cancel()
	if err != nil {
		b.rep.Errors = append(b.rep.Errors, fmt.Sprintf("volume verify: %v", err))
	} else {
		b.rep.Verify = &VerifyResult{CheckedBytes: ver.GetCheckedBytes(), Mismatches: len(ver.GetMismatches())}
		if len(ver.GetMismatches()) > 0 {
			b.rep.Errors = append(b.rep.Errors, fmt.Sprintf("volume verify: %d mismatching ranges between replicas", len(ver.GetMismatches())))
		}
	}
	if err := b.fo.StopVM(ctx); err != nil {
		b.rep.Errors = append(b.rep.Errors, fmt.Sprintf("vm stop: %v", err))
	}
}

func (b *bench) finish(began time.Time) {
	rep := b.rep
	rep.Phases = vmbench.SummarizePhases(rep.Runs, vmbench.ReplicatedPhases())
	rep.GuestBoot, rep.StartedLeader, rep.StartedOther = vmbench.Derived(rep.Runs)
	rep.Goal = evaluateGoal(rep.Phases, len(rep.Runs))
	rep.Integrity = vmbench.IntegrityOf(rep.Runs)
	capt, err := b.fo.Close()
	rep.Capture = capt
	if err != nil {
		rep.Errors = append(rep.Errors, err.Error())
	}
	if rep.DaemonLog, err = b.env.Wrapup(b.cfg.logs, vmName); err != nil {
		rep.Errors = append(rep.Errors, err.Error())
	}
	rep.LoadAfter = benchkit.LoadAvg()
	rep.DurationS = time.Since(began).Seconds()
}
