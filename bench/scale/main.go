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
	"sync"
	"time"

	"github.com/tandemhci/tandem/bench/internal/benchkit"
	"github.com/tandemhci/tandem/internal/adminclient"
	"github.com/tandemhci/tandem/internal/guest"
	"github.com/tandemhci/tandem/internal/testcluster"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

const (
	clusterName = "scale"
	nodes       = 3
	// configKey is a real setting (any other is refused), set to two
	// values in turn.
	configKey  = "resync.rate"
	volumeSize = 16 << 20
	// Goals of issue 17.
	goalRSSMB        = 1024
	goalIdleCPUPct   = 10
	goalCreateAllS   = 300 // for 1000 volumes
	goalListMS       = 1000
	goalProposeRatio = 2
	goalPromotionS   = 10
)

func main() {
	os.Exit(benchkit.Main("scale", os.Args[1:], parseFlags, execute))
}

type config struct {
	benchkit.Common
	volumes   int
	baseline  int
	parallel  int
	proposals int
	// interleaved is the proposals per cluster of the interleaved
	// comparison with a reference cluster (0: none).
	interleaved int
	idle        time.Duration
	failover    bool
	logs        string
	profile     string
	vms         int
}

func parseFlags(args []string) (config, error) {
	var c config
	fs := flag.NewFlagSet("scale", flag.ContinueOnError)
	c.Flags(fs, "scale", 60*time.Minute, false)
	def := 1000
	if s := os.Getenv("BENCH_VOLUMES"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return c, fmt.Errorf("BENCH_VOLUMES=%q: want a positive number of volumes", s)
		}
		def = n
	}
	fs.IntVar(&c.volumes, "volumes", def, "volumes with 2 replicas to create (default 1000, or BENCH_VOLUMES)")
	fs.IntVar(&c.baseline, "baseline", 10, "volumes of the reference cluster the propose latency is compared with")
	fs.IntVar(&c.parallel, "parallel", 4, "concurrent create calls")
	fs.IntVar(&c.proposals, "proposals", 300, "measured metadata proposals (SetConfig) per sample")
	fs.IntVar(&c.interleaved, "interleaved", 1000, "proposals per cluster of the propose goal's measurement: a second cluster with -baseline volumes is started beside the one with all of them, and proposals alternate between the two (0: compare with the same cluster's earlier sample instead)")
	fs.DurationVar(&c.idle, "idle", 30*time.Second, "idle window over which CPU is measured")
	fs.BoolVar(&c.failover, "failover", true, "kill the node that is primary of the most volumes and time the promotions")
	fs.StringVar(&c.logs, "logs", "", "if set, copy every node's tandemd log into this directory at the end")
	fs.IntVar(&c.vms, "vms", 10, "VMs started on the node the failover kills, each on its own 2-replica disk, timed until all are restarted elsewhere (0: none, and no libvirtd)")
	fs.StringVar(&c.profile, "profile", "", "if set, tandemd runs with --pprof, and a 10 s CPU profile and a heap profile of each node at rest with all volumes are written to this directory")
	if err := benchkit.ParseArgs(fs, args); err != nil {
		return c, err
	}
	if c.vms < 0 {
		return c, fmt.Errorf("-vms %d: want 0 or more", c.vms)
	}
	if c.interleaved < 0 {
		return c, fmt.Errorf("-interleaved %d: want 0 or more", c.interleaved)
	}
	if !c.failover {
		c.vms = 0 // they are only there to be restarted
	}
	if c.volumes < c.baseline {
		return c, fmt.Errorf("-volumes %d is below -baseline %d", c.volumes, c.baseline)
	}
	return c, nil
}

type bench struct {
	cfg     config
	log     *slog.Logger
	c       *testcluster.Cluster
	td      *testcluster.Tandem
	bin     string   // tandemd and tandem
	tmp     string   // the run's temporary directory
	args    []string // tandemd's extra arguments
	procs   map[string]*testcluster.Proc
	clients map[string]*adminclient.Client
	rep     *Report
	// img is the test guest (cfg.vms > 0); victim the node the failover
	// kills, chosen when the VMs are started on it.
	img    guest.Image
	victim *testcluster.Node
}

func execute(ctx context.Context, log *slog.Logger, cfg config) (*Report, error) {
	began := time.Now()
	if err := testcluster.Available(); err != nil {
		return nil, fmt.Errorf("network namespaces: %w", err)
	}
	tmp, bin, err := benchkit.TempBinaries(ctx, log, "scale", cfg.Bin)
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	c, err := testcluster.Open(testcluster.Options{Nodes: nodes, BaseDir: filepath.Join(tmp, "cluster")}, testcluster.LogReporter(log))
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	td := testcluster.NewTandem(c, bin)
	td.NoMetaReaderCheck = true // it costs a JSON encoding per entry
	b := &bench{cfg: cfg, log: log, c: c, td: td, bin: bin, tmp: tmp, clients: map[string]*adminclient.Client{},
		rep: &Report{Date: began.UTC().Format(time.RFC3339), Host: benchkit.Host(), Tandemd: benchkit.Binary(filepath.Join(bin, "tandemd")),
			LoadBefore: benchkit.LoadAvg(),
			Params:     Params{Nodes: nodes, Volumes: cfg.volumes, Baseline: cfg.baseline, Parallel: cfg.parallel, Proposals: cfg.proposals, Interleaved: cfg.interleaved, Idle: cfg.idle.String(), SizeBytes: volumeSize}}}
	defer func() {
		for _, cl := range b.clients {
			_ = cl.Close()
		}
		c.Close()
		benchkit.CheckNamespaces(log)
	}()
	var args []string
	if cfg.profile != "" {
		args = append(args, "--pprof", "true")
	}
	b.args = args
	if cfg.vms > 0 {
		if err := testcluster.LibvirtdAvailable(); err != nil {
			return b.rep, fmt.Errorf("-vms %d: %w", cfg.vms, err)
		}
		if b.img, err = ensureGuest(ctx); err != nil {
			return b.rep, fmt.Errorf("-vms %d: test guest: %w", cfg.vms, err)
		}
		b.procs, _, err = benchkit.StartClusterWith(ctx, log, td, c, clusterName, func(ctx context.Context, n *testcluster.Node) (*testcluster.Proc, error) {
			return b.startCompute(ctx, n, args)
		})
	} else {
		b.procs, _, err = benchkit.StartCluster(ctx, log, td, c, clusterName, args...)
	}
	if err != nil {
		return b.rep, err
	}
	phases := []struct {
		name string
		fn   func(context.Context) error
	}{
		{"idle with no volume", func(ctx context.Context) error { return b.idle(ctx, 0) }},
		{"create the baseline volumes", func(ctx context.Context) error { return b.create(ctx, 0, cfg.baseline, &b.rep.CreateBaselineS) }},
		{"propose with the baseline", func(ctx context.Context) error { return b.propose(ctx, &b.rep.ProposeBaseline) }},
		{"idle with the baseline", func(ctx context.Context) error { return b.idle(ctx, cfg.baseline) }},
		{"create the rest", func(ctx context.Context) error { return b.create(ctx, cfg.baseline, cfg.volumes, &b.rep.CreateRestS) }},
		{"idle with all volumes", func(ctx context.Context) error { return b.idle(ctx, cfg.volumes) }},
		{"list and status", b.listStatus},
		{"propose with all volumes", func(ctx context.Context) error { return b.propose(ctx, &b.rep.ProposeAll) }},
	}
	if cfg.interleaved > 0 {
		phases = append(phases, struct {
			name string
			fn   func(context.Context) error
		}{"propose interleaved with a reference cluster", b.proposeInterleaved})
	}
	if cfg.failover {
		if cfg.vms > 0 {
			phases = append(phases, struct {
				name string
				fn   func(context.Context) error
			}{"start VMs", b.startVMs})
		}
		phases = append(phases, struct {
			name string
			fn   func(context.Context) error
		}{"failover", b.failover})
	}
	for _, ph := range phases {
		log.Info("phase", "name", ph.name)
		if err := ph.fn(ctx); err != nil {
			if ctx.Err() != nil {
				b.rep.DurationS = time.Since(began).Seconds()
				return b.rep, fmt.Errorf("%s: %w", ph.name, err)
			}
			b.rep.Errors = append(b.rep.Errors, fmt.Sprintf("%s: %v", ph.name, err))
			log.Error("phase failed", "name", ph.name, "err", err)
		}
	}
	b.rep.DaemonLog = benchkit.ScanDaemonLogs(c)
	if cfg.logs != "" {
		if err := benchkit.CopyLogs(c, nil, cfg.logs); err != nil {
			b.rep.Errors = append(b.rep.Errors, err.Error())
		}
	}
	b.rep.LoadAfter = benchkit.LoadAvg()
	b.rep.evaluate()
	b.rep.DurationS = time.Since(began).Seconds()
	return b.rep, nil
}

func (b *bench) client(ctx context.Context, n *testcluster.Node) (*adminclient.Client, error) {
	if cl, ok := b.clients[n.Name]; ok {
		return cl, nil
	}
	cl, err := adminclient.Dial(ctx, adminclient.Options{DataDir: b.td.DataDir(n)})
	if err != nil {
		return nil, fmt.Errorf("admin client for %s: %w", n.Name, err)
	}
	b.clients[n.Name] = cl
	return cl, nil
}

func volName(i int) string { return fmt.Sprintf("s%04d", i) }

// create makes volumes [from, to) with cfg.parallel calls at once, spread
// over the nodes' admin sockets, and waits until each is ready.
func (b *bench) create(ctx context.Context, from, to int, took *float64) error {
	var cls []*adminclient.Client
	for _, n := range b.c.Nodes {
		cl, err := b.client(ctx, n)
		if err != nil {
			return err
		}
		cls = append(cls, cl)
	}
	start := time.Now()
	work := make(chan int)
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	for w := range b.cfg.parallel {
		cl := cls[w%len(cls)]
		wg.Go(func() {
			for i := range work {
				cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
				_, err := cl.Volume.Create(cctx, &tandemv1.CreateVolumeRequest{Name: volName(i), SizeBytes: volumeSize, Replicas: 2})
				cancel()
				if err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("create %s: %w", volName(i), err))
					mu.Unlock()
				}
			}
		})
	}
	for i := from; i < to; i++ {
		if ctx.Err() != nil {
			break
		}
		work <- i
	}
	close(work)
	wg.Wait()
	*took = time.Since(start).Seconds()
	b.log.Info("created", "volumes", to-from, "seconds", *took, "errors", len(errs))
	if len(errs) > 0 {
		return fmt.Errorf("%d of %d creates failed, first: %w", len(errs), to-from, errs[0])
	}
	return nil
}

// procStat is a process's CPU time (utime+stime, in clock ticks) and RSS.
func procStat(pid int) (ticks uint64, rssKB int64, threads int, err error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, 0, err
	}
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	// Fields after the command: state is [0]; utime [11], stime [12].
	if len(f) < 13 {
		return 0, 0, 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	u, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, 0, err
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		fs := strings.Fields(line)
		if len(fs) < 2 {
			continue
		}
		switch fs[0] {
		case "VmRSS:":
			rssKB, _ = strconv.ParseInt(fs[1], 10, 64)
		case "Threads:":
			threads, _ = strconv.Atoi(fs[1])
		}
	}
	return u + st, rssKB, threads, nil
}

// clockTicks is USER_HZ, 100 on Linux.
const clockTicks = 100

// goroutines reads go_goroutines from n's metrics endpoint, inside n's
// namespace; -1 when it cannot.
func (b *bench) goroutines(ctx context.Context, n *testcluster.Node) int {
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	out, err := b.c.Exec(cctx, n, "curl", "-s", fmt.Sprintf("http://%s:%d/metrics", n.IP, testcluster.MetricsPort))
	if err != nil {
		return -1
	}
	for line := range strings.SplitSeq(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, "go_goroutines "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil {
				return int(f)
			}
		}
	}
	return -1
}

// idle waits 5 s, then measures each node's CPU over cfg.idle, its RSS
// and goroutines at the end.
func (b *bench) idle(ctx context.Context, volumes int) error {
	if err := sleep(ctx, 5*time.Second); err != nil {
		return err
	}
	before := map[string]uint64{}
	for _, n := range b.c.Nodes {
		t, _, _, err := procStat(b.procs[n.Name].PID())
		if err != nil {
			return err
		}
		before[n.Name] = t
	}
	start := time.Now()
	if err := sleep(ctx, b.cfg.idle); err != nil {
		return err
	}
	wall := time.Since(start).Seconds()
	s := IdleSample{Volumes: volumes, Load: benchkit.LoadAvg()}
	for _, n := range b.c.Nodes {
		t, rss, th, err := procStat(b.procs[n.Name].PID())
		if err != nil {
			return err
		}
		s.Nodes = append(s.Nodes, NodeIdle{Node: n.Name, RSSMB: float64(rss) / 1024, CPUPct: float64(t-before[n.Name]) / clockTicks / wall * 100, Threads: th, Goroutines: b.goroutines(ctx, n)})
	}
	b.rep.Idle = append(b.rep.Idle, s)
	if b.cfg.profile != "" && volumes == b.cfg.volumes {
		b.cpuProfiles(ctx)
	}
	b.log.Info("idle", "volumes", volumes, "nodes", s.Nodes)
	return nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// listStatus times 'volume list' and 'cluster status' (the RPCs the CLI
// makes) on every node, five times each.
func (b *bench) listStatus(ctx context.Context) error {
	var list, status []float64
	for range 5 {
		for _, n := range b.c.Nodes {
			cl, err := b.client(ctx, n)
			if err != nil {
				return err
			}
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			t0 := time.Now()
			lr, err := cl.Volume.List(cctx, &tandemv1.ListVolumesRequest{})
			list = append(list, benchkit.MS(time.Since(t0)))
			if err == nil && len(lr.GetVolumes()) != b.cfg.volumes {
				err = fmt.Errorf("volume list on %s: %d volumes, want %d", n.Name, len(lr.GetVolumes()), b.cfg.volumes)
			}
			if err != nil {
				cancel()
				return err
			}
			t0 = time.Now()
			_, err = cl.Cluster.Status(cctx, &tandemv1.StatusRequest{})
			status = append(status, benchkit.MS(time.Since(t0)))
			cancel()
			if err != nil {
				return fmt.Errorf("status on %s: %w", n.Name, err)
			}
		}
	}
	b.rep.ListMS = summarize(list)
	b.rep.StatusMS = summarize(status)
	return nil
}

// propose times cfg.proposals SetConfig calls through the first node; the
// setting is put back to its default at the end.
func (b *bench) propose(ctx context.Context, into *Latency) error {
	cl, err := b.client(ctx, b.c.Nodes[0])
	if err != nil {
		return err
	}
	var xs []float64
	for i := range b.cfg.proposals + 10 {
		took, err := proposeOnce(ctx, cl, i)
		if err != nil {
			return err
		}
		if i >= 10 { // the first ten warm up
			xs = append(xs, took)
		}
	}
	*into = summarize(xs)
	return resetConfig(ctx, cl)
}

// proposeOnce times the i-th SetConfig call (one metadata proposal), in ms.
func proposeOnce(ctx context.Context, cl *adminclient.Client, i int) (float64, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	t0 := time.Now()
	if _, err := cl.Cluster.SetConfig(cctx, &tandemv1.SetConfigRequest{Values: map[string]string{configKey: strconv.Itoa((100 + i%2) << 20)}}); err != nil {
		return 0, fmt.Errorf("SetConfig #%d: %w", i, err)
	}
	return benchkit.MS(time.Since(t0)), nil
}

func resetConfig(ctx context.Context, cl *adminclient.Client) error {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := cl.Cluster.SetConfig(cctx, &tandemv1.SetConfigRequest{Values: map[string]string{configKey: ""}}); err != nil {
		return fmt.Errorf("reset %s: %w", configKey, err)
	}
	return nil
}

// proposeInterleaved is the propose goal's measurement. Samples taken
// minutes apart on a shared host compare that host's load in two windows
// more than the clusters (one run's p99 ratio was 4.5x, the next 0.3x), so
// a reference cluster of the same shape with -baseline volumes is started
// beside this one, and cfg.interleaved proposals go to each in turn: both
// samples see the same load. The reference cluster is removed afterwards.
func (b *bench) proposeInterleaved(ctx context.Context) error {
	c, err := testcluster.Open(testcluster.Options{Nodes: nodes, BaseDir: filepath.Join(b.tmp, "reference")}, testcluster.LogReporter(b.log))
	if err != nil {
		return fmt.Errorf("reference cluster: %w", err)
	}
	ref := &bench{cfg: b.cfg, log: b.log.With("cluster", "reference"), c: c, td: testcluster.NewTandem(c, b.bin), clients: map[string]*adminclient.Client{}}
	ref.td.NoMetaReaderCheck = true
	defer func() {
		for _, cl := range ref.clients {
			_ = cl.Close()
		}
		c.Close()
	}()
	if _, _, err := benchkit.StartCluster(ctx, ref.log, ref.td, c, clusterName+"-reference", b.args...); err != nil {
		return fmt.Errorf("reference cluster: %w", err)
	}
	var took float64
	if err := ref.create(ctx, 0, b.cfg.baseline, &took); err != nil {
		return fmt.Errorf("reference cluster: %w", err)
	}
	all, err := b.client(ctx, b.c.Nodes[0])
	if err != nil {
		return err
	}
	base, err := ref.client(ctx, c.Nodes[0])
	if err != nil {
		return err
	}
	var xs, ys []float64
	for i := range b.cfg.interleaved + 10 {
		// Who goes first alternates too, so neither always follows the
		// other's proposal.
		first, second, fx, sx := base, all, &xs, &ys
		if i%2 == 1 {
			first, second, fx, sx = all, base, &ys, &xs
		}
		t1, err := proposeOnce(ctx, first, i)
		if err != nil {
			return err
		}
		t2, err := proposeOnce(ctx, second, i)
		if err != nil {
			return err
		}
		if i >= 10 { // the first ten warm up
			*fx, *sx = append(*fx, t1), append(*sx, t2)
		}
	}
	b.rep.ProposeInterleaved = &Interleaved{Reference: summarize(xs), All: summarize(ys), ReferenceVolumes: b.cfg.baseline}
	return errors.Join(resetConfig(ctx, all), resetConfig(ctx, base))
}

func summarize(xs []float64) Latency {
	if len(xs) == 0 {
		return Latency{}
	}
	s := benchkit.SortSample(xs)
	return Latency{N: len(xs), P50: benchkit.NearestRank(s.Sorted, 0.50), P99: benchkit.NearestRank(s.Sorted, 0.99), Max: s.Max, Mean: s.Mean}
}

// failover kills the node that is primary of the most volumes (about a
// third), waits until every one of them has a new primary, and reads the
// times from the cluster's events.
func (b *bench) failover(ctx context.Context) error {
	n1, err := b.client(ctx, b.c.Nodes[0])
	if err != nil {
		return err
	}
	lr, err := n1.Volume.List(ctx, &tandemv1.ListVolumesRequest{})
	if err != nil {
		return err
	}
	byPrimary := map[string][]string{}
	for _, v := range lr.GetVolumes() {
		byPrimary[v.GetPrimary()] = append(byPrimary[v.GetPrimary()], v.GetName())
	}
	victim := b.victim // where the VMs run, if any
	if victim == nil {
		victim = b.c.Nodes[0]
		for _, n := range b.c.Nodes {
			if len(byPrimary[n.Name]) > len(byPrimary[victim.Name]) {
				victim = n
			}
		}
		b.victim = victim
	}
	lost := byPrimary[victim.Name]
	var survivor *testcluster.Node
	for _, n := range b.c.Nodes {
		if n != victim {
			survivor = n
			break
		}
	}
	f := &Failover{Node: victim.Name, Volumes: len(lost)}
	b.rep.Failover = f
	b.log.Info("killing", "node", victim.Name, "primary of", len(lost))
	if cl, ok := b.clients[victim.Name]; ok {
		_ = cl.Close()
		delete(b.clients, victim.Name)
	}
	killed := time.Now()
	b.c.Kill(victim)
	b.c.Isolate(victim)
	cl, err := b.client(ctx, survivor)
	if err != nil {
		return err
	}
	want := map[string]bool{}
	for _, v := range lost {
		want[v] = true
	}
	deadline := time.Now().Add(5 * time.Minute)
	for {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		lr, err := cl.Volume.List(cctx, &tandemv1.ListVolumesRequest{})
		cancel()
		moved := 0
		if err == nil {
			for _, v := range lr.GetVolumes() {
				if want[v.GetName()] && v.GetPrimary() != "" && v.GetPrimary() != victim.Name {
					moved++
				}
			}
		}
		f.Moved = moved
		if moved == len(lost) {
			f.AllMovedS = time.Since(killed).Seconds()
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d volumes of %s promoted after %s", moved, len(lost), victim.Name, time.Since(killed).Round(time.Second))
		}
		if err := sleep(ctx, time.Second); err != nil {
			return err
		}
	}
	if b.cfg.vms > 0 {
		b.waitRestarted(ctx, f)
	}
	return b.failoverEvents(ctx, cl, victim.Name, killed, want, f)
}

// failoverEvents reads when the node was declared dead (recovery began:
// its first fence-attempt event), fenced (fence-result) and each volume
// promoted (promotion events), from the cluster's event log.
func (b *bench) failoverEvents(ctx context.Context, cl *adminclient.Client, dead string, killed time.Time, want map[string]bool, f *Failover) error {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	st, err := cl.HA.Events(cctx, &tandemv1.EventsRequest{Tail: 1000})
	if err != nil {
		return fmt.Errorf("events: %w", err)
	}
	var declared, fenced time.Time
	promoted := map[string]time.Time{}
	vmDisk := map[string]bool{}
	var events []*tandemv1.Event
	for {
		e, err := st.Recv()
		if err != nil {
			break
		}
		events = append(events, e)
		at := e.GetAt().AsTime()
		if at.Before(killed.Add(-time.Second)) {
			continue
		}
		switch {
		case e.GetKind() == "fence-attempt" && e.GetNode() == dead && declared.IsZero():
			declared = at
		case e.GetKind() == "fence-result" && e.GetNode() == dead && fenced.IsZero():
			fenced = at
		case e.GetKind() == "promotion":
			var vol string
			if _, err := fmt.Sscanf(e.GetDetail(), "volume %s promoted", &vol); err == nil && want[vol] {
				promoted[vol] = at
				vmDisk[vol] = e.GetVm() != ""
			}
		}
	}
	if declared.IsZero() {
		return errors.New("no fence-attempt event for the lost node: cannot tell when it was declared dead")
	}
	f.DeclaredDeadS = declared.Sub(killed).Seconds()
	if !fenced.IsZero() {
		f.FencedS = fenced.Sub(killed).Seconds()
	}
	var xs, fromFence, bare, disks []float64
	for vol, at := range promoted {
		xs = append(xs, at.Sub(declared).Seconds())
		if vmDisk[vol] {
			disks = append(disks, at.Sub(declared).Seconds())
		} else {
			bare = append(bare, at.Sub(declared).Seconds())
		}
		if !fenced.IsZero() {
			fromFence = append(fromFence, at.Sub(fenced).Seconds())
		}
	}
	f.Promoted = len(promoted)
	f.AfterDeclaredS = summarize(xs)
	f.AfterFencedS = summarize(fromFence)
	f.BareAfterDeclaredS, f.VMDiskAfterDeclaredS = summarize(bare), summarize(disks)
	if len(promoted) < len(want) {
		f.Note = fmt.Sprintf("%d of %d promotions found in the event log (the rest may be out of its last 1000 events, or promoted by the volume's own reconcile)", len(promoted), len(want))
	}
	if b.cfg.vms > 0 {
		b.vmTimes(killed, fenced, events, f)
	}
	return nil
}

// cpuProfiles writes a 10 s CPU profile and a heap profile of each node
// into cfg.profile.
func (b *bench) cpuProfiles(ctx context.Context) {
	if err := os.MkdirAll(b.cfg.profile, 0o755); err != nil {
		b.log.Error("profile dir", "err", err)
		return
	}
	var wg sync.WaitGroup
	for _, n := range b.c.Nodes {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			out, err := b.c.Exec(cctx, n, "curl", "-s", fmt.Sprintf("http://%s:%d/debug/pprof/profile?seconds=10", n.IP, testcluster.MetricsPort))
			if err != nil {
				b.log.Error("cpu profile", "node", n.Name, "err", err)
				return
			}
			if err := os.WriteFile(filepath.Join(b.cfg.profile, n.Name+".cpu.pprof"), out, 0o644); err != nil {
				b.log.Error("cpu profile", "node", n.Name, "err", err)
			}
			heap, err := b.c.Exec(cctx, n, "curl", "-s", fmt.Sprintf("http://%s:%d/debug/pprof/heap", n.IP, testcluster.MetricsPort))
			if err == nil {
				err = os.WriteFile(filepath.Join(b.cfg.profile, n.Name+".heap.pprof"), heap, 0o644)
			}
			if err != nil {
				b.log.Error("heap profile", "node", n.Name, "err", err)
			}
		})
	}
	wg.Wait()
}
