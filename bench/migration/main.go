package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/tandemhci/tandem/bench/internal/benchkit"
	"github.com/tandemhci/tandem/bench/internal/vmbench"
	"github.com/tandemhci/tandem/internal/testcluster"
)

const (
	clusterName = "bench"
	nodes       = 3
	// receiverPort is the first UDP port of the receivers, one per rate.
	receiverPort = 9100
	// guestHost is the last octet of the first guest's address on the VM
	// network; the guest of the i-th rate gets guestHost+i.
	guestHost       = 50
	logExcerptLines = 25
	// maxConsecutiveFailures ends a rate's series early, and so does a
	// guest that had to be restarted more than maxGuestFailures times.
	maxConsecutiveFailures = 3
	maxGuestFailures       = 5
)

func main() { os.Exit(benchkit.Main("migration", os.Args[1:], parseFlags, execute)) }

type config struct {
	benchkit.Common
	logs string
	// control adds a series without a guest disk at the highest rate: a
	// migration then moves only RAM and device state (no volume handover).
	control           bool
	controlMigrations int
	libvirtTCP        bool
	streamTLS         bool
	rates             []int
	migrations        int
	replicas          int
	memory, disk      string
	downtimeMs        uint
	settle, quiet     time.Duration
	bootTimeout       time.Duration
	migrateTimeout    time.Duration
}

func parseFlags(args []string) (config, error) {
	var c config
	var rates string
	fs := flag.NewFlagSet("migration", flag.ContinueOnError)
	c.Flags(fs, "migration", 14*time.Minute, true)
	fs.StringVar(&c.logs, "keep-logs", "", "if set, copy every node's tandemd and libvirtd logs and the QEMU logs into this directory at the end")
	fs.StringVar(&rates, "rates", "100,1000", "comma-separated guest send rates (datagrams per second); one VM per rate")
	fs.IntVar(&c.migrations, "migrations", 20, "live migrations per rate")
	fs.IntVar(&c.replicas, "replicas", 2, "replicas of the VM's disk (2: migrate between the two replica nodes; 3: rotate over all three)")
	fs.StringVar(&c.memory, "memory", "192M", "guest memory")
	fs.BoolVar(&c.control, "control", true, "add a control series at the highest rate with a guest without a disk (libvirt/QEMU migration alone, no Tandem volume)")
	fs.BoolVar(&c.streamTLS, "stream-tls", false, "QEMU's migration stream over TLS too (compute.migration_stream_tls)")
	fs.BoolVar(&c.libvirtTCP, "libvirt-tcp", false, "run libvirt over plain qemu+tcp and QEMU's stream in clear, as before TLS became the default (for comparison)")
	fs.IntVar(&c.controlMigrations, "control-migrations", 20, "live migrations of the control series")
	fs.StringVar(&c.disk, "disk", "64M", "guest disk size")
	// 20 ms: what an operator sets for a latency-sensitive guest; the test
	// guest's dirty rate under TCG lets QEMU converge to it (measured at
	// 1000/s: p50 outage 102-135 ms against 200 ms with 100).
	fs.UintVar(&c.downtimeMs, "downtime-ms", 20, "QEMU's maximum downtime passed to 'tandem vm migrate --downtime-ms' (0: QEMU's default, 300 ms)")
	fs.DurationVar(&c.settle, "settle", time.Second, "pause between a migration's end (guest progressing, replicas UpToDate) and the next one")
	fs.DurationVar(&c.quiet, "quiet", 10*time.Second, "stream recorded without migration before each series, the reference")
	fs.DurationVar(&c.bootTimeout, "boot-timeout", 3*time.Minute, "bound on a guest's boot until its stream and disk counter run")
	fs.DurationVar(&c.migrateTimeout, "migrate-timeout", 2*time.Minute, "bound on one 'tandem vm migrate'")
	if err := benchkit.ParseArgs(fs, args); err != nil {
		return c, err
	}
	for _, s := range strings.Split(rates, ",") {
		r, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || r < 1 || r > 10000 {
			return c, fmt.Errorf("-rates %q: want integers in 1..10000", rates)
		}
		c.rates = append(c.rates, r)
	}
	switch {
	case c.migrations < 1 || c.control && c.controlMigrations < 1:
		return c, errors.New("-migrations and -control-migrations must be at least 1")
	case c.replicas != 2 && c.replicas != 3:
		return c, errors.New("-replicas must be 2 or 3")
	case c.Timeout <= 0 || c.migrateTimeout <= 0 || c.bootTimeout <= 0:
		return c, errors.New("timeouts must be positive")
	}
	return c, nil
}

// series is one VM and its migrations.
type series struct {
	rate       int
	migrations int
	diskless   bool
}

// seriesOf lists the series of a run: every rate with a disk, then the
// control without a disk at the highest rate.
func seriesOf(cfg config) []series {
	var out []series
	top := 0
	for _, r := range cfg.rates {
		out = append(out, series{rate: r, migrations: cfg.migrations})
		top = max(top, r)
	}
	if cfg.control {
		out = append(out, series{rate: top, migrations: cfg.controlMigrations, diskless: true})
	}
	return out
}

// bench is one run: the cluster and the report being filled.
type bench struct {
	cfg  config
	log  *slog.Logger
	env  *vmbench.Env
	c    *testcluster.Cluster // env.C
	rep  *Report
	vmIP func(i int) string
}

// execute runs the whole benchmark. It returns a report whenever the cluster
// came up, even if a later phase failed (the failure is in rep.Errors).
func execute(ctx context.Context, log *slog.Logger, cfg config) (*Report, error) {
	began := time.Now()
	mem, err := vmbench.ParseMiB(cfg.memory)
	if err != nil {
		return nil, fmt.Errorf("-memory: %w", err)
	}
	env, err := vmbench.Open(ctx, vmbench.Options{Name: "migration", Bin: cfg.Bin, Nodes: nodes, Log: log, LibvirtInsecureTCP: cfg.libvirtTCP, LibvirtStreamTLS: cfg.streamTLS})
	if err != nil {
		return nil, err
	}
	vmNet := strings.TrimSuffix(env.C.ReceiverIP, ".1")
	b := &bench{
		cfg: cfg, log: log, env: env, c: env.C,
		vmIP: func(i int) string { return fmt.Sprintf("%s.%d", vmNet, guestHost+i) },
		rep: &Report{
			Date: began.UTC().Format(time.RFC3339), Host: benchkit.VMHost(), Tandemd: benchkit.Binary(filepath.Join(env.Bin, "tandemd")).WithDescribe(ctx, env.Root),
			Tools: map[string]string{
				"qemu":     benchkit.ToolVersion(ctx, "qemu-system-x86_64", "--version"),
				"libvirtd": benchkit.ToolVersion(ctx, "libvirtd", "--version"),
			},
			Params: Params{
				Nodes: nodes, Replicas: cfg.replicas, MemoryMiB: mem, Disk: cfg.disk, Migrations: cfg.migrations, Rates: cfg.rates,
				DowntimeMs: cfg.downtimeMs, Settle: cfg.settle.String(), Quiet: cfg.quiet.String(), Timeout: cfg.Timeout.String(),
				Accelerator: "TCG (no KVM)", Control: cfg.control, ControlMigrations: cfg.controlMigrations,
			},
			LoadBefore: benchkit.LoadAvg(),
		},
	}
	defer b.close(ctx)

	if err := env.Start(ctx, clusterName, false); err != nil {
		// Published as partial by benchkit.Finish, beside the committed results.
		b.rep.LogExcerpts = b.excerpts("", "")
		b.finish(began)
		return b.rep, fmt.Errorf("cluster setup: %w", err)
	}
	if lv := env.Libvirtd(env.C.Nodes[0].Name); lv != nil {
		b.rep.Params.Transport = "libvirt over qemu+tls with the node certificates, QEMU's stream plain TCP (the default)"
		switch {
		case lv.StreamTLS:
			b.rep.Params.Transport = "libvirt over qemu+tls with the node certificates, QEMU's stream over TLS too (VIR_MIGRATE_TLS, migrate_tls_force)"
		case lv.InsecureTCP:
			b.rep.Params.Transport = "libvirt over qemu+tcp without authentication, QEMU's stream in clear"
		}
	}
	// A real host's libvirtd probed QEMU long ago; a fresh one would pay
	// that probe in its first incoming migration.
	if warm, err := env.WarmLibvirt(ctx); err != nil {
		b.rep.Errors = append(b.rep.Errors, fmt.Sprintf("warming libvirtd: %v", err))
	} else {
		b.rep.LibvirtWarmup = map[string]float64{}
		for n, d := range warm {
			b.rep.LibvirtWarmup[n] = d[0].Seconds()
		}
	}
	log.Info("cluster ready")
	for i, s := range seriesOf(cfg) {
		if ctx.Err() != nil {
			break
		}
		b.rep.Runs = append(b.rep.Runs, b.runRate(ctx, i, s))
	}
	b.finish(began)
	return b.rep, nil
}

// finish fills in what the report needs after the measurements.
func (b *bench) finish(began time.Time) {
	b.rep.LoadAfter = benchkit.LoadAvg()
	b.rep.Goal = evaluateGoal(b.rep.Runs)
	b.rep.Thesis = thesisReference()
	b.rep.DaemonLog = benchkit.ScanDaemonLogs(b.c)
	if b.cfg.logs != "" {
		var vms []string
		for _, r := range b.rep.Runs {
			vms = append(vms, r.VM)
		}
		if err := b.env.CopyLogs(b.cfg.logs, vms...); err != nil {
			b.rep.Errors = append(b.rep.Errors, err.Error())
		}
	}
	b.rep.DurationS = time.Since(began).Seconds()
}

// close stops the guests politely, then tears everything down: the Env
// kills every process of the cluster (libvirtd, QEMU, tandemd) by PID and
// namespace and removes its temporary directory.
func (b *bench) close(ctx context.Context) {
	for _, r := range b.rep.Runs {
		if r.Created && !r.Stopped {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), vmbench.CLITimeout)
			_, _, _ = b.cli(sctx, b.c.Nodes[0], "vm", "stop", r.VM, "--force")
			cancel()
		}
	}
	b.env.Close()
}

// excerpts returns the last lines of every node's tandemd and libvirtd
// logs and, for vm, its QEMU log and serial console; why says what failed.
func (b *bench) excerpts(vm, why string) map[string]string {
	out := b.env.Excerpts(vm, logExcerptLines)
	if why != "" {
		out["why"] = why
	}
	return out
}

// cli runs the tandem CLI inside n's namespace, bounded by ctx only.
func (b *bench) cli(ctx context.Context, n *testcluster.Node, args ...string) (stdout, stderr string, err error) {
	return b.env.CLI(ctx, n, args...)
}
