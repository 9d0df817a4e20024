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
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tandemhci/tandem/bench/internal/benchkit"
	"github.com/tandemhci/tandem/internal/adminclient"
	"github.com/tandemhci/tandem/internal/apinames"
	"github.com/tandemhci/tandem/internal/ctxtime"
	"github.com/tandemhci/tandem/internal/settings"
	"github.com/tandemhci/tandem/internal/testcluster"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

const (
	clusterName = "bench"
	nodes       = 3
	// readyTimeout bounds the wait for a new volume's replicas and export.
	readyTimeout = 60 * time.Second
	// fioSlack is added to a timed job's ramp+runtime for its hard bound.
	fioSlack = 60 * time.Second
	// prefillMinRate sizes the prefill's hard bound (plus fioSlack).
	prefillMinRate  = 10e6 // bytes per second
	logExcerptLines = 30
)

func main() { os.Exit(benchkit.Main("replication", os.Args[1:], parseFlags, run)) }

// run is one invocation: a single run, or alternating runs against
// -baseline-bin.
func run(ctx context.Context, log *slog.Logger, cfg config) (*Report, error) {
	if cfg.baseline != "" {
		return executeBaseline(ctx, log, cfg)
	}
	return execute(ctx, log, cfg)
}

type config struct {
	benchkit.Common
	logs string
	// targets and jobs, when set, restrict the run (for investigation;
	// goals whose figures are missing are reported as not measured).
	targets, jobs []string
	// profile, when set, collects a CPU profile of the tandemd of every
	// node holding a target's replicas during each of its timed jobs into
	// this directory; profileJobs, when set, limits it to those
	// TARGET/JOB pairs.
	profile     string
	profileJobs []string
	// trace, when set, also collects a one-second Go execution trace of
	// every tandemd per Tandem job (go tool trace -pprof=sched shows wake-up
	// latency, which bounds queue-depth-1 latency).
	trace bool
	// baseline, when set, holds the binaries to compare with: whole runs
	// alternate between them and -bin, rounds times (baseline.go).
	baseline string
	rounds   int
	// dataStream, when set, is the cluster's replication.data_stream
	// (tls or plain), set before any volume exists.
	dataStream string
	fio        benchkit.FioParams
}

func (c config) selected(target string) bool {
	return c.targets == nil || slices.Contains(c.targets, target)
}

func parseFlags(args []string) (config, error) {
	var c config
	fs := flag.NewFlagSet("replication", flag.ContinueOnError)
	c.Flags(fs, "replication", 20*time.Minute, false)
	c.fio.Flags(fs, 1<<30, "size of every volume and file")
	fs.StringVar(&c.logs, "keep-logs", "", "if set, copy every node's tandemd log and the qemu-nbd log into this directory at the end")
	var targets, jobs string
	fs.StringVar(&targets, "targets", "", "comma-separated target IDs to run (default all)")
	fs.StringVar(&jobs, "jobs", "", "comma-separated job IDs to run (default all)")
	fs.StringVar(&c.profile, "profile", "", "if set, write a CPU profile of the tandemd of each node holding the volume's replicas per Tandem job into this directory")
	var profileJobs string
	fs.StringVar(&profileJobs, "profile-jobs", "", "with -profile, comma-separated TARGET/JOB pairs to profile, e.g. "+targetR2+"/"+benchkit.JobQD32+" (default every Tandem job)")
	fs.BoolVar(&c.trace, "trace", false, "with -profile, also write a one-second execution trace of each tandemd per Tandem job")
	fs.StringVar(&c.baseline, "baseline-bin", "", "if set, a directory of tandemd and tandem to compare -bin with: whole runs alternate between the two, the order flipped every round, -rounds times, and the report adds both sets of figures")
	fs.IntVar(&c.rounds, "rounds", 2, "with -baseline-bin, how many baseline+candidate pairs of runs")
	fs.StringVar(&c.dataStream, "data-stream", "", "if set (tls or plain), the cluster setting replication.data_stream of the run, set before the volumes are created (default: the cluster's default, tls)")
	if err := benchkit.ParseArgs(fs, args); err != nil {
		return c, err
	}
	if c.dataStream != "" && c.dataStream != settings.DataStreamTLS && c.dataStream != settings.DataStreamPlain {
		return c, fmt.Errorf("-data-stream %q: want %s or %s", c.dataStream, settings.DataStreamTLS, settings.DataStreamPlain)
	}
	if c.baseline != "" && c.rounds < 1 {
		return c, errors.New("-rounds must be at least 1")
	}
	if c.trace && c.profile == "" {
		return c, errors.New("-trace needs -profile: the traces go into its directory")
	}
	if profileJobs != "" {
		if c.profile == "" {
			return c, errors.New("-profile-jobs needs -profile: the profiles go into its directory")
		}
		c.profileJobs = strings.Split(profileJobs, ",")
		for _, tj := range c.profileJobs {
			if t, j, ok := strings.Cut(tj, "/"); !ok || t == "" || j == "" {
				return c, fmt.Errorf("-profile-jobs: %q is not TARGET/JOB", tj)
			}
		}
	}
	if targets != "" {
		c.targets = strings.Split(targets, ",")
	}
	if jobs != "" {
		c.jobs = strings.Split(jobs, ",")
	}
	if err := c.fio.Check(); err != nil {
		return c, err
	}
	if c.Timeout <= 0 {
		return c, errors.New("-timeout must be positive")
	}
	return c, nil
}

// bench is one run: the cluster, the reference server and the report.
type bench struct {
	cfg   config
	log   *slog.Logger
	work  string // fio JSON files
	fp    benchkit.FioParams
	c     *testcluster.Cluster
	td    *testcluster.Tandem
	procs map[string]*testcluster.Proc // tandemd per node
	qemu  *benchkit.Server
	rep   *Report
}

// execute runs the whole benchmark. It returns a report whenever the cluster
// was created, with the error that stopped it early if any (a partial
// report); failures of single targets or jobs are in rep.Errors.
func execute(ctx context.Context, log *slog.Logger, cfg config) (*Report, error) {
	began := time.Now()
	if err := testcluster.Available(); err != nil {
		return nil, fmt.Errorf("network namespaces: %w", err)
	}
	for _, tool := range []string{"fio", "qemu-nbd", "nbdinfo", "timeout"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("%s is needed (make deps installs it): %w", tool, err)
		}
	}
	tmp, bin, err := benchkit.TempBinaries(ctx, log, "replication", cfg.Bin)
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp) // runs last: after every process is gone
	work, ref := filepath.Join(tmp, "fio"), filepath.Join(tmp, "ref")
	for _, d := range []string{work, ref} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("work dir: %w", err)
		}
	}

	c, err := testcluster.Open(testcluster.Options{Nodes: nodes, BaseDir: filepath.Join(tmp, "cluster")}, testcluster.LogReporter(log))
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	fp := cfg.fio
	b := &bench{
		cfg: cfg, log: log, work: work, fp: fp, c: c, td: testcluster.NewTandem(c, bin), procs: map[string]*testcluster.Proc{},
		rep: &Report{
			Date: began.UTC().Format(time.RFC3339), Host: benchkit.Host(), Tandemd: benchkit.Binary(filepath.Join(bin, "tandemd")).WithWorkTreeRevision(ctx),
			Tools: map[string]string{"fio": benchkit.ToolVersion(ctx, "fio", "--version"), "qemu-nbd": benchkit.ToolVersion(ctx, "qemu-nbd", "--version")},
			Params: Params{
				Nodes: nodes, SizeBytes: cfg.fio.Size, Runtime: cfg.fio.Runtime.String(), Ramp: cfg.fio.Ramp.String(), Timeout: cfg.Timeout.String(),
				Jobs: benchkit.FioJobs(), Prefill: benchkit.PrefillJob(), DataStream: cfg.dataStream,
				CommonFioArgs: commonArgs(benchkit.FioArgs(benchkit.JobSpec{ID: "x", RW: "x", BlockSize: "x", IODepth: 1, TimeBased: true}, fp, nil, "", "FILE")),
			},
		},
	}
	defer b.close() // also on errors and signals

	localFile, qemuFile := filepath.Join(ref, "local.img"), filepath.Join(ref, "qemu.img")
	qemuSock := filepath.Join(ref, "qemu-nbd.sock")
	b.rep.Targets = []Target{
		{ID: targetLocal, Label: "local file, fio libaio with O_DIRECT (the floor)", Engine: []string{"--ioengine=libaio", "--direct=1", "--filename=" + localFile}, SyncOpt: "fsync", Path: localFile},
		{ID: targetLocalSync, Label: "local file, durable job flushing with fdatasync instead of fsync (the floor for durable writes)", Engine: []string{"--ioengine=libaio", "--direct=1", "--filename=" + localFile}, SyncOpt: "fdatasync", Jobs: []string{benchkit.JobDurable}, Path: localFile},
		{ID: targetTwoCopies, Label: "two fio jobs at once, each on its own local file (libaio, O_DIRECT, fdatasync in the durable job): the disk's floor for any two-copy system here; latencies per job, rates for both jobs together",
			Engine: []string{"--ioengine=libaio", "--direct=1", "--numjobs=2", "--group_reporting", "--filename_format=" + filepath.Join(ref, "copy.$jobnum")}, SyncOpt: "fdatasync", Path: filepath.Join(ref, "copy.0")},
		{ID: targetQemu, Label: "qemu-nbd on a raw local file, --cache=none (single copy, the reference)", Engine: []string{"--ioengine=nbd", "--uri=" + benchkit.NBDUnixURI(benchkit.QemuNBDExport, qemuSock)}, SyncOpt: "fsync", Path: qemuFile, URI: benchkit.NBDUnixURI(benchkit.QemuNBDExport, qemuSock)},
		{ID: targetR1, Label: "Tandem volume, 1 replica (n1)", SyncOpt: "fsync", Replicas: 1, Nodes: []string{"n1"}, volume: "r1"},
		{ID: targetR2, Label: "Tandem volume, 2 replicas (n1 primary, n2) + witness", SyncOpt: "fsync", Replicas: 2, Nodes: []string{"n1", "n2"}, volume: "r2"},
		{ID: targetR2TLS, Label: "the same volume r2 through n1's TCP NBD export with TLS and an export certificate, fio in the switch namespace (needs target tandem-r2)", SyncOpt: "fsync", Replicas: 2, Nodes: []string{"n1", "n2"}, volume: "r2"},
		{ID: targetR3, Label: "Tandem volume, 3 replicas (n1 primary, n2, n3)", SyncOpt: "fsync", Replicas: 3, Nodes: []string{"n1", "n2", "n3"}, volume: "r3"},
	}

	// Local references: the same preallocation as Tandem's replicas.
	for _, f := range []string{localFile, qemuFile, filepath.Join(ref, "copy.0"), filepath.Join(ref, "copy.1")} {
		if err := benchkit.Preallocate(f, cfg.fio.Size); err != nil {
			return b.rep, err
		}
	}
	b.rep.target(targetLocal).Ready = true
	b.rep.target(targetLocalSync).Ready = true
	b.rep.target(targetTwoCopies).Ready = true
	log.Info("starting qemu-nbd", "file", qemuFile, "socket", qemuSock)
	if b.qemu, err = benchkit.StartQemuNBD(ctx, qemuFile, qemuSock, filepath.Join(ref, "qemu-nbd.log"), cfg.fio.Size); err != nil {
		if ctx.Err() != nil {
			return b.rep, err
		}
		b.setupFailed(targetQemu, err)
	} else {
		b.rep.target(targetQemu).Ready = true
	}

	if err := b.setupCluster(ctx); err != nil {
		if ctx.Err() != nil {
			return b.rep, err
		}
		for _, id := range []string{targetR1, targetR2, targetR2TLS, targetR3} {
			b.setupFailed(id, fmt.Errorf("cluster: %w", err))
		}
	} else {
		for i := range b.rep.Targets {
			t := &b.rep.Targets[i]
			if !t.tandem() || !cfg.selected(t.ID) {
				continue
			}
			if t.ID == targetR2TLS {
				if err := b.setupTLS(ctx, t, filepath.Join(tmp, "tls")); err != nil {
					if ctx.Err() != nil {
						return b.rep, err
					}
					b.setupFailed(t.ID, err)
					continue
				}
				t.Ready = true
				continue
			}
			log.Info("creating volume", "name", t.volume, "replicas", t.Replicas, "nodes", t.Nodes)
			if err := b.createVolume(ctx, t); err != nil {
				if ctx.Err() != nil {
					return b.rep, err
				}
				b.setupFailed(t.ID, err)
				continue
			}
			t.Ready = true
		}
	}
	files := []string{localFile, qemuFile, filepath.Join(ref, "copy.0"), filepath.Join(ref, "copy.1")}
	for _, n := range c.Nodes {
		if ents, err := filepath.Glob(filepath.Join(b.td.DataDir(n), "volumes", "*.vol")); err == nil {
			files = append(files, ents...)
		}
	}
	b.rep.Storage = storageInfo(tmp, files)

	if h, err := sampleHost(ctx, 3*time.Second, os.Getpid()); err == nil {
		b.rep.HostBefore = &h
		log.Info("host activity before the jobs", "busy_pct", fmt.Sprintf("%.0f", h.BusyPct), "loadavg", h.LoadAvg, "busy_processes", len(h.Top))
	} else if ctx.Err() != nil {
		return b.rep, err
	}

	if cfg.selected(targetRoundTrips) {
		b.rep.RoundTrips = b.measureRoundTrips(ctx)
		if ctx.Err() != nil {
			return b.rep, ctx.Err()
		}
	}

	// Prefill, then every job on every target, one at a time.
	for i := range b.rep.Targets {
		t := &b.rep.Targets[i]
		if !t.Ready || t.ID == targetLocalSync || t.ID == targetR2TLS || !cfg.selected(t.ID) { // same file or volume as another
			continue
		}
		log.Info("prefill", "target", t.ID, "size", cfg.fio.Size)
		r, err := b.runJob(ctx, t, benchkit.PrefillJob())
		if err != nil {
			return b.rep, err
		}
		b.rep.Prefill = append(b.rep.Prefill, r)
	}
	for _, j := range benchkit.FioJobs() {
		if cfg.jobs != nil && !slices.Contains(cfg.jobs, j.ID) {
			continue
		}
		for i := range b.rep.Targets {
			t := &b.rep.Targets[i]
			if !t.Ready || !t.runs(j.ID) || !cfg.selected(t.ID) {
				continue
			}
			log.Info("fio", "job", j.ID, "target", t.ID)
			r, err := b.runJob(ctx, t, j)
			if err != nil {
				return b.rep, err
			}
			if m := r.Measurement; m != nil {
				_, lat, metric, rate := benchkit.Headline(j.ID, m)
				log.Info("result", "job", j.ID, "target", t.ID, "p50_us", fmt.Sprintf("%.1f", lat), metric, fmt.Sprintf("%.0f", rate), "replicas_after", r.ReplicasAfter)
			}
			b.rep.Results = append(b.rep.Results, r)
		}
	}

	if h, err := sampleHost(ctx, 3*time.Second, os.Getpid()); err == nil {
		b.rep.HostAfter = &h
	} else if ctx.Err() != nil {
		return b.rep, err
	}
	b.finishVolumes(ctx)
	compare(b.rep.Results)
	b.rep.TLSCost = tlsCost(b.rep.Results)
	b.rep.Goals = evaluateGoals(b.rep.Results, b.rep.RoundTrips)
	b.rep.DaemonLog = benchkit.ScanDaemonLogs(c)
	if cfg.logs != "" {
		if err := benchkit.CopyLogs(c, map[string]string{"qemu-nbd.log": filepath.Join(ref, "qemu-nbd.log")}, cfg.logs); err != nil {
			b.rep.Errors = append(b.rep.Errors, err.Error())
		}
	}
	b.rep.DurationS = time.Since(began).Seconds()
	return b.rep, nil
}

// commonArgs keeps the options every job shares (not the job's own).
func commonArgs(args []string) []string {
	var out []string
	for _, a := range args {
		switch k, _, _ := strings.Cut(a, "="); k {
		case "--name", "--rw", "--bs", "--iodepth", "--output":
		default:
			out = append(out, a)
		}
	}
	return out
}

func (b *bench) setupFailed(id string, err error) {
	t := b.rep.target(id)
	t.SetupError = err.Error()
	b.rep.Errors = append(b.rep.Errors, fmt.Sprintf("setting up %s: %v", id, err))
	b.log.Error("target setup failed", "target", id, "err", err)
}

// close stops qemu-nbd and tears the cluster down.
func (b *bench) close() {
	if b.qemu != nil {
		b.qemu.Kill()
	}
	b.c.Close()
	benchkit.CheckNamespaces(b.log)
}

func (b *bench) setupCluster(ctx context.Context) error {
	var extra []string
	if b.cfg.profile != "" {
		extra = []string{"--pprof", "true"}
	}
	if b.cfg.selected(targetR2TLS) {
		// Every node in its own namespace: one address for all.
		extra = append(extra, "--nbd-addr", fmt.Sprintf(":%d", nbdTLSPort))
	}
	var err error
	if b.procs, _, err = benchkit.StartCluster(ctx, b.log, b.td, b.c, clusterName, extra...); err != nil {
		return err
	}
	if ds := b.cfg.dataStream; ds != "" {
		if _, _, err := b.td.CLI(ctx, b.c.Node("n1"), "cluster", "config", "set", settings.KeyDataStream+"="+ds); err != nil {
			return fmt.Errorf("set %s=%s: %w", settings.KeyDataStream, ds, err)
		}
	}
	b.log.Info("cluster ready", "data_stream", b.cfg.dataStream)
	return nil
}

// show reads a volume's state from node n1, its primary.
func (b *bench) show(ctx context.Context, name string) (*tandemv1.VolumeInfo, error) {
	out, _, err := b.td.CLI(ctx, b.c.Node("n1"), "volume", "show", name, "--output", "json")
	if err != nil {
		return nil, err
	}
	var info tandemv1.VolumeInfo
	if err := adminclient.UnmarshalJSON([]byte(out), &info); err != nil {
		return nil, fmt.Errorf("volume show json: %w\n%s", err, out)
	}
	return &info, nil
}

// volumeReady is nil when the volume is ready with all its replicas
// UpToDate, its primary being the first node, and an NBD export.
func volumeReady(info *tandemv1.VolumeInfo, t *Target) error {
	switch {
	case info.GetState() != "ready":
		return fmt.Errorf("state %q", info.GetState())
	case info.GetPrimary() != t.Nodes[0]:
		return fmt.Errorf("primary %q, want %s", info.GetPrimary(), t.Nodes[0])
	case len(info.GetReplicas()) != t.Replicas:
		return fmt.Errorf("%d replicas, want %d", len(info.GetReplicas()), t.Replicas)
	case info.GetNbdUnix() == "":
		return fmt.Errorf("no NBD export yet (%s)", benchkit.OrDash(info.GetWarning()))
	}
	for _, r := range info.GetReplicas() {
		if r.GetState() != tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE {
			return fmt.Errorf("replicas %s", replicaSummary(info))
		}
	}
	return nil
}

// replicaSummary is "n1:UpToDate* n2:UpToDate/in-sync": * marks the
// primary, the link as the primary sees it follows the slash.
func replicaSummary(info *tandemv1.VolumeInfo) string {
	var parts []string
	for _, r := range info.GetReplicas() {
		s := r.GetNode() + ":" + stateName(r.GetState())
		if r.GetPrimary() {
			s += "*"
		}
		if l := r.GetLink(); l != "" {
			s += "/" + l
			if ds := r.GetDataStream(); ds != "" && ds != settings.DataStreamTLS {
				s += "(" + ds + ")"
			}
		}
		if d := r.GetDirtyBytes(); d > 0 {
			s += fmt.Sprintf("(%d dirty)", d)
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, " ")
}

func stateName(s tandemv1.ReplicaState) string {
	if name, ok := apinames.ReplicaState(s); ok {
		return name
	}
	return s.String()
}

// createVolume creates t's volume and waits until it is ready and its
// export answers.
// nbdTLSPort is the nodes' TCP NBD export when targetR2TLS runs.
const nbdTLSPort = 10809

// setupTLS makes targetR2TLS: an export certificate for targetR2's volume
// written to dir, the switch namespace on the backend network, and the
// nbds:// URI of the primary's TCP export.
func (b *bench) setupTLS(ctx context.Context, t *Target, dir string) error {
	r2 := b.rep.target(targetR2)
	if !r2.Ready {
		return fmt.Errorf("needs target %s (its volume %s), which is not set up", targetR2, t.volume)
	}
	primary := b.c.Node(t.Nodes[0])
	// fio's libnbd refuses tls-certificates= in a URI (local file access),
	// so fio finds the files where libnbd looks for root's by default,
	// /etc/pki/libnbd, in a private mount namespace: dir/libnbd bound over
	// /etc/pki for fio alone.
	certs := filepath.Join(dir, "libnbd")
	if _, stderr, err := b.td.CLI(ctx, primary, "volume", "export-cert", "bench-tls", "--volume", t.volume, "--out", certs); err != nil {
		return fmt.Errorf("export-cert: %w: %s", err, strings.TrimSpace(stderr))
	}
	if _, err := b.c.SwitchOnBackend(); err != nil {
		return err
	}
	t.ns = b.c.Switch().NS
	t.Path = r2.Path
	t.URI = fmt.Sprintf("nbds://%s:%d/%s", primary.IP, nbdTLSPort, t.volume)
	t.Engine = []string{"--ioengine=nbd", "--uri=" + t.URI}
	t.wrap = []string{"unshare", "-m", "--propagation", "private", "sh", "-c", `mount --bind "$1" /etc/pki && shift && exec "$@"`, "sh", dir}
	if err := benchkit.WaitExport(ctx, t.ns, t.URI+"?tls-certificates="+certs, b.cfg.fio.Size, 30*time.Second, nil); err != nil {
		return fmt.Errorf("volume %s over TLS: %w", t.volume, err)
	}
	b.log.Info("TLS export ready", "uri", t.URI, "namespace", t.ns)
	return nil
}

func (b *bench) createVolume(ctx context.Context, t *Target) error {
	args := []string{"volume", "create", t.volume, "--size", strconv.FormatInt(b.cfg.fio.Size, 10),
		"--replicas", strconv.Itoa(t.Replicas), "--nodes", strings.Join(t.Nodes, ","), "--output", "json"}
	if _, _, err := b.td.CLI(ctx, b.c.Node("n1"), args...); err != nil {
		return fmt.Errorf("create volume %s: %w", t.volume, err)
	}
	deadline := time.Now().Add(readyTimeout)
	var info *tandemv1.VolumeInfo
	for {
		var err error
		info, err = b.show(ctx, t.volume)
		if err == nil {
			err = volumeReady(info, t)
		}
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("volume %s not ready within %s: %w", t.volume, readyTimeout, err)
		}
		if err := ctxtime.Sleep(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
	t.Witness = info.GetWitness()
	t.Path = filepath.Join(b.td.DataDir(b.c.Node(t.Nodes[0])), "volumes", t.volume+".vol")
	// The socket is a file: fio reaches it from the root namespace.
	sock := filepath.Join(b.td.DataDir(b.c.Node(t.Nodes[0])), "nbd.sock")
	t.URI = benchkit.NBDUnixURI(t.volume, sock)
	if info.GetNbdUnix() != t.URI {
		b.log.Warn("volume show reports another NBD URI; using it", "volume", t.volume, "show", info.GetNbdUnix(), "expected", t.URI)
		t.URI = info.GetNbdUnix()
	}
	t.Engine = []string{"--ioengine=nbd", "--uri=" + t.URI}
	b.rep.Volumes = append(b.rep.Volumes, VolumeState{Name: t.volume, Target: t.ID, Primary: info.GetPrimary(), Witness: t.Witness,
		Epoch: info.GetEpoch(), URI: t.URI, AtStart: replicaSummary(info)})
	if err := benchkit.WaitExport(ctx, "", t.URI, b.cfg.fio.Size, 30*time.Second, nil); err != nil {
		return fmt.Errorf("volume %s: %w", t.volume, err)
	}
	b.log.Info("volume ready", "name", t.volume, "replicas", replicaSummary(info), "witness", t.Witness, "uri", t.URI)
	return nil
}

// finishVolumes records every volume's replica states at the end.
func (b *bench) finishVolumes(ctx context.Context) {
	for i := range b.rep.Volumes {
		v := &b.rep.Volumes[i]
		info, err := b.show(ctx, v.Name)
		if err != nil {
			v.EndError = err.Error()
			continue
		}
		v.AtEnd = replicaSummary(info)
	}
}

// serverPIDs are the processes serving t: every tandemd (secondaries and
// witnesses work too) or qemu-nbd.
func (b *bench) serverPIDs(t *Target) map[string]int {
	out := map[string]int{}
	switch {
	case t.tandem():
		for name, p := range b.procs {
			if p.Alive() {
				out[tandemdProc(name)] = p.PID()
			}
		}
	case t.ID == targetQemu && b.qemu != nil && b.qemu.Alive():
		out[qemuProc] = b.qemu.PID()
	}
	return out
}

// qemuProc names qemu-nbd among the server processes.
const qemuProc = "qemu-nbd"

// tandemdProc names a node's tandemd among the server processes.
func tandemdProc(node string) string { return "tandemd-" + node }

// copyProcs are the server processes holding t's copies, whose CPU per
// write the report gives: the tandemd of every node with one of the
// volume's replicas (not a witness), or qemu-nbd.
func (t *Target) copyProcs() []string {
	switch {
	case t.tandem():
		var out []string
		for _, n := range t.Nodes {
			out = append(out, tandemdProc(n))
		}
		return out
	case t.ID == targetQemu:
		return []string{qemuProc}
	}
	return nil
}

// cpuWindow samples the CPU time of pids over the measured part of a timed
// job, from the end of the ramp for the runtime (fio's own start-up, a few
// ms, shifts its window slightly later, still at full load), so that the
// CPU can be set against the writes fio counted. The returned func, called
// once fio has ended, gives each process's CPU in seconds and the
// window's length; it ends the window early if fio ended first, and
// returns nil if fio ended within the ramp.
func cpuWindow(ctx context.Context, pids map[string]int, ramp, runtime time.Duration) func() (map[string]float64, time.Duration) {
	type sample struct {
		at  time.Time
		cpu map[string]time.Duration
	}
	ended := make(chan struct{})
	got := make(chan [2]*sample, 1)
	go func() {
		var s [2]*sample
		defer func() { got <- s }()
		t := time.NewTimer(ramp)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ended:
			return
		case <-ctx.Done():
			return
		}
		s[0] = &sample{time.Now(), cpuTimes(pids)}
		t.Reset(runtime)
		select {
		case <-t.C:
		case <-ended: // fio ended early: the window ends with it
		case <-ctx.Done():
			return
		}
		s[1] = &sample{time.Now(), cpuTimes(pids)}
	}()
	return func() (map[string]float64, time.Duration) {
		close(ended)
		s := <-got
		if s[0] == nil || s[1] == nil {
			return nil, 0
		}
		out := map[string]float64{}
		for name, a := range s[1].cpu {
			if b, ok := s[0].cpu[name]; ok {
				out[name] = (a - b).Seconds()
			}
		}
		return out, s[1].at.Sub(s[0].at)
	}
}

func cpuTimes(pids map[string]int) map[string]time.Duration {
	out := map[string]time.Duration{}
	for name, pid := range pids {
		if d, err := procCPU(pid); err == nil {
			out[name] = d
		}
	}
	return out
}

// runJob runs one fio job on one target. Only a cancelled ctx is an error:
// a failed job is recorded in the result and in the report's errors.
func (b *bench) runJob(ctx context.Context, t *Target, j benchkit.JobSpec) (Result, error) {
	jsonPath := filepath.Join(b.work, t.ID+"-"+j.ID+".json")
	bound := b.cfg.fio.Ramp + b.cfg.fio.Runtime + fioSlack
	if !j.TimeBased {
		bound = fioSlack + time.Duration(float64(b.cfg.fio.Size)/prefillMinRate*float64(time.Second))
	}
	pids := b.serverPIDs(t)
	before := cpuTimes(pids)
	host0, herr0 := hostCPU()
	procs0 := snapshotProcs()
	disk0, derr0 := readDisk(b.rep.Storage.Device)
	started := time.Now()
	window := func() (map[string]float64, time.Duration) { return nil, 0 }
	if j.TimeBased && len(pids) > 0 {
		window = cpuWindow(ctx, pids, b.cfg.fio.Ramp, b.cfg.fio.Runtime)
	}
	profiled := b.startProfiles(ctx, t, j)
	fr, err := benchkit.RunFioWrapped(ctx, t.ns, t.wrap, benchkit.FioArgs(j, b.fp, t.Engine, t.SyncOpt, jsonPath), jsonPath, bound)
	wall := time.Since(started)
	windowCPU, windowLen := window()
	profiles := profiled()
	disk1, derr1 := readDisk(b.rep.Storage.Device)
	procs1 := snapshotProcs()
	host1, herr1 := hostCPU()
	after := cpuTimes(pids)
	r := Result{Target: t.ID, Job: j.ID, Command: fr.Argv, Started: started.UTC().Format(time.RFC3339), WallS: fr.Wall.Seconds(),
		FioVersion: fr.Version, FioJob: fr.Raw, Profiles: profiles}
	if ctx.Err() != nil {
		return r, fmt.Errorf("%s on %s: %w", j.ID, t.ID, ctx.Err())
	}
	if herr0 == nil && herr1 == nil {
		r.HostCPUPct, _ = busyPct(host0, host1)
	}
	var top []ProcCPU
	r.OthersCPUPct, top = othersCPU(procs0, procs1, os.Getpid(), wall)
	r.OthersTop = nameProcs(top, 3)
	if fr.Output != "" {
		r.FioOutput = benchkit.Truncate(fr.Output, 4000)
	}
	for name, a := range after {
		if bf, ok := before[name]; ok {
			if r.ServerCPUS == nil {
				r.ServerCPUS = map[string]float64{}
			}
			r.ServerCPUS[name] = (a - bf).Seconds()
		}
	}
	if windowCPU != nil {
		r.WindowCPUS, r.WindowS = windowCPU, windowLen.Seconds()
	}
	if err == nil {
		m := fr.M
		r.Measurement = &m
		r.CPUPerWrite = cpuPerWrite(r.WindowCPUS, r.WindowS, m.IOPS, t.copyProcs())
		if derr0 == nil && derr1 == nil {
			r.Disk = diskUse(b.rep.Storage.Device, disk0, disk1, m.IOPS, wall)
		}
	} else {
		r.Error = err.Error()
		b.rep.Errors = append(b.rep.Errors, fmt.Sprintf("%s on %s: %v", j.ID, t.ID, err))
		b.log.Error("fio failed", "job", j.ID, "target", t.ID, "err", err)
	}
	if t.tandem() {
		if info, serr := b.show(ctx, t.volume); serr == nil {
			r.ReplicasAfter = replicaSummary(info)
		} else {
			r.ReplicasAfter = "show failed: " + serr.Error()
		}
		if err != nil {
			r.LogExcerpts = map[string]string{}
			for _, n := range b.c.Nodes {
				alive := "running"
				if p := b.procs[n.Name]; p == nil || !p.Alive() {
					alive = "NOT running"
				}
				r.LogExcerpts[n.Name] = fmt.Sprintf("(tandemd %s)\n%s", alive, b.c.LogTail(n, "tandemd", logExcerptLines))
			}
		}
	}
	if t.ID == targetQemu && b.qemu != nil && !b.qemu.Alive() && err != nil {
		r.Error += " (qemu-nbd has exited)"
	}
	return r, nil
}

// startProfiles fetches a CPU profile of the tandemd of every node holding
// t's replicas over the measured part of a timed job (with -profile, and
// -profile-jobs if set); the returned func waits for them and gives the
// files written, by process.
func (b *bench) startProfiles(ctx context.Context, t *Target, j benchkit.JobSpec) func() map[string]string {
	none := func() map[string]string { return nil }
	if b.cfg.profile == "" || !t.tandem() || !j.TimeBased ||
		(b.cfg.profileJobs != nil && !slices.Contains(b.cfg.profileJobs, t.ID+"/"+j.ID)) {
		return none
	}
	if err := os.MkdirAll(b.cfg.profile, 0o755); err != nil {
		b.log.Error("profile dir", "err", err)
		return none
	}
	secs := int(b.cfg.fio.Runtime.Seconds())
	type fetch struct{ node, proc, out, url string }
	var fetches []fetch
	for i, name := range t.Nodes {
		base := fmt.Sprintf("http://%s:%d/debug/pprof/", b.c.Node(name).IP, testcluster.MetricsPort)
		stem := filepath.Join(b.cfg.profile, fmt.Sprintf("%s-%s-%s", t.ID, j.ID, name))
		proc := tandemdProc(name) + " (secondary)"
		if i == 0 {
			proc = tandemdProc(name) + " (primary)"
		}
		fetches = append(fetches, fetch{name, proc, stem + ".pprof", fmt.Sprintf("%sprofile?seconds=%d", base, secs)})
		if b.cfg.trace {
			fetches = append(fetches, fetch{name, proc + " trace", stem + ".trace", base + "trace?seconds=1"})
		}
	}
	type written struct{ proc, out string }
	done := make(chan written, len(fetches))
	for _, f := range fetches {
		n := b.c.Node(f.node)
		go func() {
			var w written
			defer func() { done <- w }()
			if err := ctxtime.Sleep(ctx, b.cfg.fio.Ramp); err != nil {
				return
			}
			// -f: an HTTP error is a failure, not a file holding the page.
			if o, err := b.c.Exec(ctx, n, "curl", "-sSf", "-o", f.out, f.url); err != nil {
				b.log.Error("profile", "node", f.node, "err", err, "out", string(o))
				return
			}
			w = written{f.proc, f.out}
		}()
	}
	return func() map[string]string {
		out := map[string]string{}
		for range fetches {
			if w := <-done; w.out != "" {
				out[w.proc] = w.out
			}
		}
		return out
	}
}
