package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/tandemhci/tandem/bench/internal/benchkit"
	"github.com/tandemhci/tandem/bench/internal/vmbench"
	"github.com/tandemhci/tandem/internal/cephtest"
)

const (
	clusterName = "rbd"
	nodes       = 3
	storageName = "ceph1"
	// vmName's disk is the RBD volume vmDisk.
	vmName = "rbdvm"
	vmDisk = "rbdvm-disk"
	// guestHost is the last octet of the guest's address on the VM network.
	guestHost = 71
	logLines  = 40
)

func main() { os.Exit(benchkit.Main("rbd", os.Args[1:], parseFlags, execute)) }

type config struct {
	benchkit.Common
	fio    benchkit.FioParams
	series vmbench.SeriesFlags
	logs   string
	// rounds is how many times the QD1 job runs on the goal's two targets.
	rounds int
}

func parseFlags(args []string) (config, error) {
	var c config
	fs := flag.NewFlagSet("rbd", flag.ContinueOnError)
	c.Flags(fs, "rbd", 25*time.Minute, true)
	c.fio.Flags(fs, 512<<20, "size of every fio target: the RBD images, the replicated volume and qemu-nbd's file")
	c.series.Flags(fs, 3, "guest disk size (an RBD volume)", "the crashed host is back and the disk has one watcher again (0 runs: no failover series)")
	fs.IntVar(&c.rounds, "goal-rounds", 3, "rounds of the QD1 write+flush job on the rbd engine and the NBD export of RBD, alternating which goes first; the goal compares their medians")
	fs.StringVar(&c.logs, "keep-logs", "", "if set, copy every node's logs, the guest's QEMU logs and consoles, and the capture (rbd-failover.pcap) into this directory")
	if err := benchkit.ParseArgs(fs, args); err != nil {
		return c, err
	}
	if err := c.fio.Check(); err != nil {
		return c, err
	}
	if c.Timeout <= 0 || c.rounds < 1 {
		return c, errors.New("-timeout and -goal-rounds must be positive")
	}
	return c, c.series.Check(0)
}

// bench is one run: the VM cluster with BMCs, the micro Ceph it reaches,
// the reference server and the report.
type bench struct {
	cfg  config
	log  *slog.Logger
	env  *vmbench.Env
	ceph *cephtest.Cluster
	// conf is fio's ceph.conf: the cluster's, with the librbd cache off
	// and an admin socket per client process under asok.
	conf, asok string
	work       string // fio JSON files and the reference file
	qemu       *benchkit.Server
	rep        *Report
}

// execute runs the whole benchmark: the data path first (no guest
// running), then the failover series. It returns a report whenever the
// cluster was created, with the error that stopped it early if any.
func execute(ctx context.Context, log *slog.Logger, cfg config) (*Report, error) {
	began := time.Now()
	if err := cephtest.Available(); err != nil {
		return nil, err
	}
	for _, tool := range []string{"fio", "qemu-nbd", "nbdinfo", "timeout", "rbd"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("%s is needed (make deps installs it): %w", tool, err)
		}
	}
	if _, err := os.Stat("/usr/lib/x86_64-linux-gnu/qemu/block-rbd.so"); err != nil {
		return nil, fmt.Errorf("QEMU has no rbd block driver (Debian's qemu-block-extra; make apt-deps installs it): %w", err)
	}
	mem, _ := vmbench.ParseMiB(cfg.series.Memory) // checked with the flags
	env, err := vmbench.Open(ctx, vmbench.Options{Name: "rbd", Bin: cfg.Bin, Nodes: nodes, BMC: true, Log: log})
	if err != nil {
		return nil, err
	}
	defer env.Close()
	b := &bench{cfg: cfg, log: log, env: env, work: filepath.Join(env.Tmp, "fio")}
	defer b.close() // the Ceph daemons and qemu-nbd, before env.Close
	b.rep = &Report{
		Date: began.UTC().Format(time.RFC3339), Host: benchkit.VMHost(), Tandemd: benchkit.Binary(filepath.Join(env.Bin, "tandemd")).WithDescribe(ctx, env.Root),
		Tools: map[string]string{
			"fio":      benchkit.ToolVersion(ctx, "fio", "--version"),
			"qemu-nbd": benchkit.ToolVersion(ctx, "qemu-nbd", "--version"),
			"ceph":     benchkit.ToolVersion(ctx, "ceph", "--version"),
			"qemu":     benchkit.ToolVersion(ctx, "qemu-system-x86_64", "--version"),
			"libvirtd": benchkit.ToolVersion(ctx, "libvirtd", "--version"),
		},
		Params: Params{Nodes: nodes, SizeBytes: cfg.fio.Size, Runtime: cfg.fio.Runtime.String(), Ramp: cfg.fio.Ramp.String(), Timeout: cfg.Timeout.String(),
			Jobs: jobs(), Prefill: benchkit.PrefillJob(), GoalRounds: cfg.rounds, Runs: cfg.series.Runs, MemoryMiB: mem, Disk: cfg.series.Disk, Rate: cfg.series.Rate, Settle: cfg.series.Settle.String(),
			Accelerator: "TCG (no KVM)", Fencing: "IPMI (ipmi_sim BMC per host, `tandem node fence-config --ipmi`) with the self-fence lease as fallback; " +
				"ha.rbd_blocklist_is_fence off (default): the takeover blocklists the old clients after the fence"},
		LoadBefore: benchkit.LoadAvg(), VM: vmName,
	}
	if err := b.setup(ctx); err != nil {
		b.rep.LogExcerpts = env.Excerpts("", logLines)
		b.finish(began)
		return b.rep, fmt.Errorf("setup: %w", err)
	}
	err = b.dataPath(ctx)
	if err == nil && cfg.series.Runs > 0 {
		err = b.failover(ctx)
	}
	b.finish(began)
	return b.rep, err
}

// setup starts the hosts with their BMCs, the micro Ceph in the switch
// namespace on the backend network, and adds it as storage ceph1 with
// client.tandem's key.
func (b *bench) setup(ctx context.Context) error {
	env := b.env
	if err := os.MkdirAll(b.work, 0o755); err != nil {
		return fmt.Errorf("work dir: %w", err)
	}
	if err := env.Start(ctx, clusterName, true); err != nil {
		return err
	}
	addr, err := env.C.SwitchOnBackend()
	if err != nil {
		return err
	}
	dir, err := cephtest.TempDir()
	if err != nil {
		return err
	}
	b.log.Info("starting the micro Ceph", "addr", addr, "dir", dir)
	b.ceph, err = cephtest.Start(ctx, cephtest.Options{Dir: dir, Addr: addr, Wrap: []string{"ip", "netns", "exec", env.C.Switch().NS},
		Logf: func(format string, args ...any) { b.log.Info(fmt.Sprintf(format, args...)) }})
	if err != nil {
		return fmt.Errorf("micro Ceph: %w", err)
	}
	b.rep.Ceph = CephInfo{Addr: addr, OSDs: cephtest.DefaultOSDs, Pool: b.ceph.Pool, PoolSize: b.ceph.PoolSize, StartS: b.ceph.Started.Seconds()}
	key, err := b.ceph.AddClient(ctx, "tandem")
	if err != nil {
		return err
	}
	// Blocklist entries and their removal, as the docs ask of Tandem's
	// client.
	if out, err := b.ceph.Ceph(ctx, "auth", "caps", "client.tandem", "mon", `profile rbd, allow command "osd blocklist"`,
		"osd", "profile rbd pool="+b.ceph.Pool, "mgr", "profile rbd pool="+b.ceph.Pool); err != nil {
		return fmt.Errorf("ceph auth caps: %w: %s", err, out)
	}
	kf := filepath.Join(env.Tmp, "tandem.keyring")
	if err := os.WriteFile(kf, []byte("[client.tandem]\n\tkey = "+key+"\n"), 0o600); err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if _, _, err := env.CLI(cctx, env.C.Nodes[0], "storage", "add", "rbd", storageName, "--pool", b.ceph.Pool, "--mon", b.ceph.MonHost,
		"--client", "tandem", "--key-file", kf); err != nil {
		return fmt.Errorf("storage add: %w", err)
	}
	return b.writeFioConf()
}

// writeFioConf writes fio's ceph.conf: the cluster's (monitors, client.admin's
// keyring) plus a [client] section turning librbd's cache off, so a write
// is acknowledged once the OSDs have it, and giving every client process
// an admin socket of its own, through which the run reads the setting
// back from fio's librbd.
func (b *bench) writeFioConf() error {
	base, err := os.ReadFile(b.ceph.Conf)
	if err != nil {
		return fmt.Errorf("ceph.conf: %w", err)
	}
	b.asok = filepath.Join(b.work, "asok")
	if err := os.MkdirAll(b.asok, 0o700); err != nil {
		return err
	}
	b.conf = filepath.Join(b.work, "ceph-fio.conf")
	extra := fmt.Sprintf("\n[client]\nrbd cache = false\nadmin socket = %s/$name.$pid.asok\n", b.asok)
	return os.WriteFile(b.conf, append(base, extra...), 0o600)
}

// close stops qemu-nbd and the Ceph daemons (by PID).
func (b *bench) close() {
	if b.qemu != nil {
		b.qemu.Kill()
	}
	if b.ceph != nil {
		if err := b.ceph.Close(); err != nil {
			b.log.Error("closing the micro Ceph", "err", err)
		}
	}
}

// finish fills the summaries and what the logs say.
func (b *bench) finish(began time.Time) {
	rep := b.rep
	rep.Figures = figures(rep.Results)
	rep.Goal = evaluateGoal(rep.Figures, rep.Results)
	if rep.Failover != nil {
		fo := rep.Failover
		fo.Phases = vmbench.SummarizePhases(fo.Runs, vmbench.RBDPhases())
		fo.GuestBoot, _, _ = vmbench.Derived(fo.Runs)
		fo.Integrity = vmbench.IntegrityOf(fo.Runs)
	}
	var err error
	if rep.DaemonLog, err = b.env.Wrapup(b.cfg.logs, vmName); err != nil {
		rep.Errors = append(rep.Errors, err.Error())
	}
	rep.LoadAfter = benchkit.LoadAvg()
	rep.DurationS = time.Since(began).Seconds()
}

// rbdCLI runs Ceph's rbd CLI as client.admin in the switch namespace.
func (b *bench) rbdCLI(ctx context.Context, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	return b.env.C.ExecSwitch(ctx, append([]string{"rbd", "-c", b.ceph.Conf, "--id", "admin"}, args...)...)
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
