package main

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/tandemhci/tandem/bench/internal/benchkit"
	"github.com/tandemhci/tandem/bench/internal/vmbench"
)

// goalLimit is issue 15's goal: Tandem's NBD export of an RBD volume adds
// at most 15% to the rbd engine's QD1 write+flush p50.
const goalLimit = 1.15

// Report is rbd.json; Markdown renders it as rbd.md.
type Report struct {
	Date       string              `json:"date"`
	DurationS  float64             `json:"duration_s"`
	Host       benchkit.VMHostInfo `json:"host"`
	Tandemd    benchkit.BinaryInfo `json:"tandemd"`
	Tools      map[string]string   `json:"tools"`
	LoadBefore string              `json:"loadavg_before"`
	LoadAfter  string              `json:"loadavg_after"`
	Params     Params              `json:"params"`
	Ceph       CephInfo            `json:"ceph"`
	Images     []ImageInfo         `json:"rbd_images,omitempty"`
	Targets    []Target            `json:"targets"`
	Prefill    []Result            `json:"prefill"`
	Results    []Result            `json:"results"`
	// Figures are the three figures per target, with their ratios to the
	// rbd engine.
	Figures []Figure `json:"figures"`
	Goal    Goal     `json:"goal"`
	// Failover is the RBD VM's hard-host-loss series (nil: not run).
	Failover  *Failover             `json:"failover,omitempty"`
	VM        string                `json:"vm"`
	GuestIP   string                `json:"guest_ip,omitempty"`
	DaemonLog []benchkit.LogFinding `json:"daemon_log_findings"`
	Errors    []string              `json:"errors,omitempty"`
	// LogExcerpts holds setup-failure excerpts (runs keep their own).
	LogExcerpts map[string]string `json:"log_excerpts,omitempty"`
}

// Params are the knobs of the run.
type Params struct {
	Nodes     int                `json:"nodes"`
	SizeBytes int64              `json:"size_bytes"`
	Runtime   string             `json:"runtime_per_job"`
	Ramp      string             `json:"ramp_per_job"`
	Timeout   string             `json:"timeout"`
	Jobs      []benchkit.JobSpec `json:"jobs"`
	Prefill   benchkit.JobSpec   `json:"prefill"`
	// GoalRounds is how many times the QD1 job ran on the rbd engine and
	// on the NBD export of RBD, alternating which goes first.
	GoalRounds  int    `json:"goal_rounds"`
	Runs        int    `json:"failover_runs"`
	MemoryMiB   uint64 `json:"memory_mib"`
	Disk        string `json:"disk"`
	Rate        int    `json:"guest_rate_pps"`
	Settle      string `json:"settle"`
	Accelerator string `json:"accelerator"`
	Fencing     string `json:"fencing"`
}

// CephInfo describes the micro Ceph.
type CephInfo struct {
	Addr     string  `json:"addr"`
	OSDs     int     `json:"osds"`
	Pool     string  `json:"pool"`
	PoolSize int     `json:"pool_size"`
	StartS   float64 `json:"start_s"`
}

// ImageInfo is `rbd info` of a target's image.
type ImageInfo struct {
	Name        string   `json:"name"`
	SizeBytes   int64    `json:"size_bytes,omitempty"`
	ObjectBytes int64    `json:"object_bytes,omitempty"`
	Features    []string `json:"features,omitempty"`
	Error       string   `json:"error,omitempty"`
}

// Target is one thing fio writes to.
type Target struct {
	ID    string `json:"id"`
	Label string `json:"label"`
	// Engine holds fio's --ioengine and its target options.
	Engine []string `json:"fio_engine_args"`
	// Where fio runs: a node's namespace, or "host" (the root namespace).
	Where      string `json:"fio_runs_in"`
	Path       string `json:"path,omitempty"`
	URI        string `json:"uri,omitempty"`
	Ready      bool   `json:"ready"`
	SetupError string `json:"setup_error,omitempty"`

	volume string   // Tandem volume name
	ns     string   // network namespace fio runs in ("": the host's)
	wrap   []string // command fio runs under (benchkit.RunFioWrapped)
}

// Result is one fio run of one job on one target.
type Result struct {
	Target  string   `json:"target"`
	Job     string   `json:"job"`
	Command []string `json:"command"`
	Started string   `json:"started"`
	WallS   float64  `json:"wall_s"`
	Load    string   `json:"loadavg"`
	// Round numbers the repeated QD1 jobs of the goal's two targets.
	Round       int                   `json:"round,omitempty"`
	Measurement *benchkit.Measurement `json:"measurement,omitempty"`
	FioVersion  string                `json:"fio_version,omitempty"`
	// LibrbdCache is rbd_cache as fio's librbd reported it through its
	// admin socket during the job (rbd engine only).
	LibrbdCache string `json:"librbd_rbd_cache,omitempty"`
	Error       string `json:"error,omitempty"`
	FioOutput   string `json:"fio_output,omitempty"`
}

// Figure is a target's three figures: the QD1 write+flush pair (write p50
// + flush p50), QD32 4K random-write IOPS and 1M sequential MB/s, with
// their ratios to the rbd engine (target / rbd engine).
type Figure struct {
	Target     string   `json:"target"`
	WriteP50US float64  `json:"qd1_write_p50_us"`
	FlushP50US float64  `json:"qd1_flush_p50_us"`
	PairP50US  float64  `json:"qd1_write_flush_p50_us"`
	PairsPerS  float64  `json:"qd1_pairs_per_s"`
	QD32IOPS   float64  `json:"qd32_iops"`
	QD32P50US  float64  `json:"qd32_write_p50_us"`
	SeqMBps    float64  `json:"seq_1m_mb_per_s"`
	PairVsRBD  *float64 `json:"qd1_p50_vs_rbd_engine,omitempty"`
	QD32VsRBD  *float64 `json:"qd32_iops_vs_rbd_engine,omitempty"`
	SeqVsRBD   *float64 `json:"seq_vs_rbd_engine,omitempty"`
	Unmeasured []string `json:"not_measured,omitempty"`
}

// Goal is the verdict on issue 15's goal.
type Goal struct {
	Text  string  `json:"text"`
	Limit float64 `json:"limit"`
	// RBDUS and NBDUS are the QD1 write+flush p50 of the rbd engine and of
	// Tandem's NBD export of RBD (medians over the rounds); AddedUS is
	// their difference, split into the write's and the flush's.
	RBDUS        float64 `json:"rbd_engine_us"`
	NBDUS        float64 `json:"nbd_rbd_us"`
	AddedUS      float64 `json:"added_us"`
	AddedWriteUS float64 `json:"added_on_write_us"`
	AddedFlushUS float64 `json:"added_on_flush_us"`
	// Rounds pairs the two targets' runs of each round, run back to back.
	Rounds []RoundRatio `json:"rounds,omitempty"`
	// Ratio is NBD / rbd engine: the median of the rounds' ratios (each
	// compares two runs seconds apart, so a load that drifts over the
	// rounds weighs on both sides of each), or without rounds the ratio of
	// the two figures.
	Ratio *float64 `json:"ratio,omitempty"`
	// WriteRatio is the ratio of the medians of the write p50 alone.
	WriteRatio *float64 `json:"write_p50_ratio,omitempty"`
	Verdict    string   `json:"verdict"` // PASS, MISS, NOT MEASURED
}

// RoundRatio is one round of the goal's QD1 job on both targets.
type RoundRatio struct {
	Round int      `json:"round"`
	RBDUS float64  `json:"rbd_engine_us"`
	NBDUS float64  `json:"nbd_rbd_us"`
	Ratio *float64 `json:"ratio,omitempty"`
}

// Failover is the RBD VM's hard-host-loss series.
type Failover struct {
	// Timing is the HA timing in force (`tandem ha status` timing), ms.
	Timing map[string]uint32 `json:"ha_timing_ms"`
	// LibvirtWarmup is, per node, the first and a second `virsh
	// domcapabilities` (ms) before the runs.
	LibvirtWarmup map[string][2]float64  `json:"libvirt_warmup_ms,omitempty"`
	Runs          []vmbench.Run          `json:"runs"`
	Phases        []vmbench.PhaseSummary `json:"phases"`
	// GuestBoot is the first datagram minus the QEMU launch: the test
	// guest's cold boot under TCG.
	GuestBoot vmbench.PhaseSummary `json:"guest_boot"`
	Integrity vmbench.Integrity    `json:"integrity"`
	Capture   vmbench.CaptureStats `json:"capture"`
}

// measured is every successful result of job on target (one per round).
func measured(rs []Result, target, job string) []*benchkit.Measurement {
	var out []*benchkit.Measurement
	for i := range rs {
		if rs[i].Target == target && rs[i].Job == job && rs[i].Measurement != nil {
			out = append(out, rs[i].Measurement)
		}
	}
	return out
}

// median of xs (interpolated between the middle two for an even count).
func median(xs []float64) float64 {
	return benchkit.Interpolated(benchkit.SortSample(xs).Sorted, 0.5)
}

// targetOrder is the report's order of targets.
func targetOrder() []string { return []string{targetRBD, targetNBD, targetR2, targetQemu} }

// figures draws every target's three figures from the results: the median
// over the rounds of a job that ran more than once (the QD1 job on the
// rbd engine and the NBD export of RBD).
func figures(rs []Result) []Figure {
	var out []Figure
	for _, id := range targetOrder() {
		f, seen := Figure{Target: id}, false
		for _, j := range jobs() {
			ms := measured(rs, id, j.ID)
			if len(ms) == 0 {
				f.Unmeasured = append(f.Unmeasured, j.ID)
				continue
			}
			seen = true
			var lats, rates, writes, flushes []float64
			for _, m := range ms {
				_, lat, _, rate := benchkit.Headline(j.ID, m)
				lats, rates = append(lats, lat), append(rates, rate)
				if m.Write != nil && m.Sync != nil {
					writes, flushes = append(writes, m.Write.P50US), append(flushes, m.Sync.P50US)
				}
			}
			switch j.ID {
			case benchkit.JobDurable:
				f.PairP50US, f.PairsPerS = median(lats), median(rates)
				f.WriteP50US, f.FlushP50US = median(writes), median(flushes)
			case benchkit.JobQD32:
				f.QD32IOPS, f.QD32P50US = median(rates), median(lats)
			case benchkit.JobSeq:
				f.SeqMBps = median(rates)
			}
		}
		if seen {
			out = append(out, f)
		}
	}
	if len(out) > 0 && out[0].Target == targetRBD {
		ref := out[0]
		for i := range out {
			out[i].PairVsRBD = benchkit.Ratio(out[i].PairP50US, ref.PairP50US)
			out[i].QD32VsRBD = benchkit.Ratio(out[i].QD32IOPS, ref.QD32IOPS)
			out[i].SeqVsRBD = benchkit.Ratio(out[i].SeqMBps, ref.SeqMBps)
		}
	}
	return out
}

func figureOf(fs []Figure, target string) (Figure, bool) {
	for _, f := range fs {
		if f.Target == target {
			return f, true
		}
	}
	return Figure{}, false
}

// evaluateGoal sets the NBD export of RBD against the rbd engine: the
// figures (medians) and, from the results, every round's pair.
func evaluateGoal(fs []Figure, rs []Result) Goal {
	g := Goal{Text: "Tandem's NBD export of an RBD volume adds at most 15% to fio's rbd engine's QD1 write+flush p50", Limit: goalLimit, Verdict: "NOT MEASURED"}
	rbd, ok1 := figureOf(fs, targetRBD)
	nbd, ok2 := figureOf(fs, targetNBD)
	if !ok1 || !ok2 {
		return g
	}
	g.RBDUS, g.NBDUS = rbd.PairP50US, nbd.PairP50US
	g.WriteRatio = benchkit.Ratio(nbd.WriteP50US, rbd.WriteP50US)
	g.Rounds = rounds(rs)
	var ratios []float64
	for _, r := range g.Rounds {
		if r.Ratio != nil {
			ratios = append(ratios, *r.Ratio)
		}
	}
	g.Ratio = benchkit.Ratio(g.NBDUS, g.RBDUS)
	if len(ratios) > 0 {
		v := median(ratios)
		g.Ratio = &v
	}
	if g.Ratio == nil {
		return g
	}
	g.AddedUS = g.NBDUS - g.RBDUS
	g.AddedWriteUS, g.AddedFlushUS = nbd.WriteP50US-rbd.WriteP50US, nbd.FlushP50US-rbd.FlushP50US
	g.Verdict = "MISS"
	if *g.Ratio <= g.Limit {
		g.Verdict = "PASS"
	}
	return g
}

// rounds pairs the numbered QD1 runs of the rbd engine and of the NBD
// export of RBD by round.
func rounds(rs []Result) []RoundRatio {
	byRound := map[int]*RoundRatio{}
	for _, r := range rs {
		if r.Round == 0 || r.Measurement == nil || r.Job != benchkit.JobDurable || (r.Target != targetRBD && r.Target != targetNBD) {
			continue
		}
		rr := byRound[r.Round]
		if rr == nil {
			rr = &RoundRatio{Round: r.Round}
			byRound[r.Round] = rr
		}
		_, lat, _, _ := benchkit.Headline(benchkit.JobDurable, r.Measurement)
		if r.Target == targetRBD {
			rr.RBDUS = lat
		} else {
			rr.NBDUS = lat
		}
	}
	out := make([]RoundRatio, 0, len(byRound))
	for _, k := range slices.Sorted(maps.Keys(byRound)) {
		rr := byRound[k]
		rr.Ratio = benchkit.Ratio(rr.NBDUS, rr.RBDUS)
		out = append(out, *rr)
	}
	return out
}

// spread is the lowest and highest of the rounds' ratios, and whether
// they lie on both sides of limit.
func spread(rs []RoundRatio, limit float64) (lo, hi float64, split bool) {
	first := true
	for _, r := range rs {
		if r.Ratio == nil {
			continue
		}
		if first {
			lo, hi, first = *r.Ratio, *r.Ratio, false
		}
		lo, hi = min(lo, *r.Ratio), max(hi, *r.Ratio)
	}
	return lo, hi, !first && lo <= limit && hi > limit
}

func verdict(v string) string {
	if v == "PASS" || v == "MISS" {
		return "**" + v + "**"
	}
	return v
}

// Markdown renders the report.
func (rep *Report) Markdown() string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	us, rate, ratio := benchkit.FmtUS, benchkit.FmtRate, benchkit.FmtRatio
	p("# Tandem on Ceph RBD: data path and VM failover\n\n")
	p("Run %s (%.0f s). Host: %s; load average %s before, %s after.  \n", rep.Date, rep.DurationS, rep.Host.Summary("-"), benchkit.OrDash(rep.LoadBefore), benchkit.OrDash(rep.LoadAfter))
	p("tandemd: %s.  \n", rep.Tandemd.Summary())
	var tools []string
	for _, k := range benchkit.SortedKeys(rep.Tools) {
		tools = append(tools, fmt.Sprintf("%s: %s", k, rep.Tools[k]))
	}
	p("Tools: %s.  \n", strings.Join(tools, "; "))
	c := rep.Ceph
	p("Setup: %d-node Tandem cluster in network namespaces (one tandemd, libvirtd and ipmi_sim BMC per host) and a micro Ceph (internal/cephtest: "+
		"1 monitor, 1 manager, %d bluestore OSDs on sparse files, pool `%s` of size %d) in the switch namespace on the backend network (%s, started in %.0f s); "+
		"Tandem reaches it as storage `%s` with client.tandem's key. Everything shares the machine's CPUs and one disk.\n\n",
		rep.Params.Nodes, c.OSDs, c.Pool, c.PoolSize, benchkit.OrDash(c.Addr), c.StartS, storageName)

	p("## Goal\n\n")
	g := rep.Goal
	benchkit.NewTable(&b, "Goal", "rbd engine", "Tandem NBD of RBD", "Ratio", "Limit", "Verdict")
	p("| %s | %s µs | %s µs | %s | ≤ %.2f× | %s |\n\n", g.Text, us(g.RBDUS), us(g.NBDUS), ratio(g.Ratio), g.Limit, verdict(g.Verdict))
	if g.Ratio != nil {
		if len(g.Rounds) > 0 {
			var rr []string
			for _, r := range g.Rounds {
				rr = append(rr, fmt.Sprintf("%d: %s → %s µs (%s)", r.Round, us(r.RBDUS), us(r.NBDUS), ratio(r.Ratio)))
			}
			p("The QD1 job ran %d times on each of the two, back to back, alternating which went first; the ratio is the median of the rounds' ratios "+
				"(round: rbd engine → NBD of RBD write+flush p50: %s) and the latencies are the medians over the rounds. ", len(g.Rounds), strings.Join(rr, "; "))
			if lo, hi, split := spread(g.Rounds, g.Limit); split {
				p("**The rounds fell on both sides of the limit (%.2f× to %.2f×)**: the verdict rests on the median and would not survive much more noise; see the load table below. ", lo, hi)
			}
		}
		p("The medians differ by %s µs: %s µs on the write p50 (write ratio %s) and %s µs on the flush p50. ",
			fmt.Sprintf("%+.0f", g.AddedUS), fmt.Sprintf("%+.1f", g.AddedWriteUS), ratio(g.WriteRatio), fmt.Sprintf("%+.1f", g.AddedFlushUS))
		p("Both paths run the same librbd (cache off) against the same OSDs from the same node namespace (n1). What the export adds per request is fio's " +
			"NBD request over the unix socket to tandemd and its reply, tandemd's NBD server and the volume's range lock, and a synchronous librbd call (rbd_write, rbd_flush) through " +
			"go-ceph (cgo), where the rbd engine submits asynchronously from fio's own thread; the flush pays that round trip once more, while librbd alone " +
			"answers it at once.\n\n")
	}

	p("## Figures\n\n")
	p("Latencies in µs (fio's completion latency p50); write+flush is write p50 + flush p50 of the QD1 job; ratios are target / rbd engine (latency: lower is better; rates: higher is better). " +
		"The QD1 figures of the rbd engine and of the NBD export of RBD are medians over the goal's rounds, and their ratio here is the ratio of those medians; the goal's ratio pairs each round's two runs instead.\n\n")
	benchkit.NewTable(&b, "Target", "QD1 write p50", "flush p50", "write+flush p50", "pairs/s", "vs rbd engine", "QD32 IOPS", "QD32 p50", "vs rbd engine", "1M seq MB/s", "vs rbd engine")
	for _, f := range rep.Figures {
		p("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", f.Target, us(f.WriteP50US), us(f.FlushP50US), us(f.PairP50US), rate(f.PairsPerS), ratio(f.PairVsRBD),
			rate(f.QD32IOPS), us(f.QD32P50US), ratio(f.QD32VsRBD), rate(f.SeqMBps), ratio(f.SeqVsRBD))
	}
	p("\n")
	for _, f := range rep.Figures {
		if len(f.Unmeasured) > 0 {
			p("%s: not measured: %s (see Errors).  \n", f.Target, strings.Join(f.Unmeasured, ", "))
		}
	}
	p("\nJobs (fio `--time_based --runtime=%s --ramp_time=%s`, %s per target, one job at a time after one sequential prefill pass of every target):\n\n", rep.Params.Runtime, rep.Params.Ramp, benchkit.FmtBytes(rep.Params.SizeBytes))
	for _, j := range rep.Params.Jobs {
		p("- %s: `--rw=%s --bs=%s --iodepth=%d", j.Title, j.RW, j.BlockSize, j.IODepth)
		if j.SyncEvery > 0 {
			p(" --fsync=%d", j.SyncEvery)
		}
		p("`\n")
	}
	p("\n")

	p("Load average (1 min) when each job started:\n\n")
	lt := benchkit.NewTable(&b, "Target", "QD1 write+flush", "QD32", "1M seq")
	for _, id := range targetOrder() {
		cells := []string{id}
		for _, j := range jobs() {
			var ls []string
			for _, r := range rep.Results {
				if r.Target == id && r.Job == j.ID {
					l, _, _ := strings.Cut(r.Load, " ")
					ls = append(ls, l)
				}
			}
			cells = append(cells, benchkit.OrDash(strings.Join(ls, ", ")))
		}
		lt.Row(cells...)
	}
	p("\n")

	p("## Targets\n\n")
	benchkit.NewTable(&b, "Target", "What", "fio engine", "fio runs in")
	for _, t := range rep.Targets {
		what := t.Label
		if t.SetupError != "" {
			what += " — **setup failed**: " + t.SetupError
		}
		p("| %s | %s | `%s` | %s |\n", t.ID, benchkit.Escape(what), strings.Join(t.Engine, " "), t.Where)
	}
	p("\n")
	for _, i := range rep.Images {
		if i.Error != "" {
			p("- `rbd info %s`: %s\n", i.Name, benchkit.Escape(i.Error))
			continue
		}
		p("- `rbd info %s`: %s, %s objects, features %s\n", i.Name, benchkit.FmtBytes(i.SizeBytes), benchkit.FmtBytes(i.ObjectBytes), strings.Join(i.Features, ", "))
	}
	// rbd_cache as fio's librbd reported it, per answer: the jobs.
	cache := map[string][]string{}
	for _, r := range rep.Results {
		if r.LibrbdCache != "" {
			cache[r.LibrbdCache] = append(cache[r.LibrbdCache], r.Job)
		}
	}
	if len(cache) > 0 {
		var parts []string
		for _, v := range benchkit.SortedKeys(cache) {
			parts = append(parts, fmt.Sprintf("`%s` in %d (%s)", benchkit.Escape(v), len(cache[v]), strings.Join(cache[v], ", ")))
		}
		p("- rbd_cache as fio's librbd reported it through its admin socket during the rbd-engine jobs: %s\n", strings.Join(parts, "; "))
	}
	p("\n")

	rep.failoverMarkdown(&b)

	p("## Notes\n\n")
	for _, n := range []string{
		"The rbd engine writes its own image (made with `rbd create`, Ceph's default features like Tandem's volumes): Tandem's owner holds the exclusive lock of its volume's image for as long as it serves it, so fio's librbd cannot open that one beside it. Both images are in the same pool, on the same OSDs.",
		"fio's rbd engine runs in n1's network namespace, where the RBD volume's owner tandemd runs: both reach the monitor and the OSDs over the same veth and bridge. The NBD targets are reached through the owner's unix socket from the root namespace, as bench/replication does.",
		"librbd's cache is off for the rbd engine (`rbd cache = false` in the [client] section of its ceph.conf, read through CEPH_CONF; the admin-socket reading above confirms it), so a write completes once the OSDs have it, as Tandem's does; `--fsync=1` makes the rbd engine call rbd_aio_flush after every write, the nbd engine send an NBD FLUSH.",
		"Each figure but the goal's QD1 medians comes from a single run of each job on a shared 2-CPU virtual machine: the OSDs, the monitor, three tandemd, libvirtd and fio compete for the CPUs and one virtual disk, and other work on the machine comes and goes, so differences of a few tens of percent between repeated runs are noise (the load average before each job is in rbd.json and below).",
		"The fio volumes and image are deleted before the failover series, which runs on a cluster holding only its VM and its disk.",
	} {
		p("- %s\n", n)
	}
	p("\n")

	if len(rep.Errors) > 0 {
		p("## Errors\n\n")
		for _, e := range rep.Errors {
			p("- %s\n", benchkit.Escape(e))
		}
		for _, r := range append(slices.Clone(rep.Prefill), rep.Results...) {
			if r.Error != "" {
				p("\n%s on %s: `%s`\n\n```\n%s\n```\n", r.Job, r.Target, strings.Join(r.Command, " "), r.FioOutput)
			}
		}
		p("\n")
	}
	if rep.Failover != nil {
		vmbench.WriteRunDetails(&b, rep.Failover.Runs)
	}
	for _, k := range slices.Sorted(maps.Keys(rep.LogExcerpts)) {
		p("<details><summary>%s</summary>\n\n```\n%s\n```\n</details>\n\n", k, rep.LogExcerpts[k])
	}
	if len(rep.DaemonLog) > 0 {
		p("## tandemd warnings and errors over the run\n\n")
		benchkit.FindingsTable{Column: "Pattern", Width: 150, NodeSep: " ", Join: ", ", Limit: 15,
			More: func(rest int) string { return fmt.Sprintf("… | %d more patterns in rbd.json | |", rest) }}.WriteFindings(&b, rep.DaemonLog)
		p("\n")
	}
	return b.String()
}

// failoverMarkdown renders the failover series.
func (rep *Report) failoverMarkdown(b *strings.Builder) {
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	p("## RBD VM failover (hard host loss)\n\n")
	fo := rep.Failover
	if fo == nil {
		p("Not run (-runs 0, or the run ended before it).\n\n")
		return
	}
	pr := rep.Params
	p("bench/failover's method on a VM whose disk is an RBD volume: the test guest `%s` (%d MiB, QEMU %s, its %s disk `%s` an RBD volume opened by QEMU's own librbd) "+
		"sends %d datagrams/s to the switch and rewrites a counter on its disk; %d times the host running it is crashed (every process SIGKILLed, both switch ports down). "+
		"Fencing: %s. Times are from the crash instant; the takeover is the `volume-rbd-takeover` event of the new owner (the old clients blocklisted in Ceph, "+
		"the lock broken and acquired), which comes before the owner's commit (`promotion`). After each run the host is powered on through its BMC; the run ends when "+
		"the cluster is 3/3 online and Ceph shows exactly one watcher on the image, holding its lock.\n\n",
		rep.VM, pr.MemoryMiB, pr.Accelerator, pr.Disk, vmDisk, pr.Rate, pr.Runs, pr.Fencing)
	if len(fo.Timing) > 0 {
		var ts []string
		for _, k := range []string{"heartbeat_interval_ms", "suspect_timeout_ms", "dead_timeout_ms", "fence_timeout_ms", "self_fence_lease_ms"} {
			if v, ok := fo.Timing[k]; ok {
				ts = append(ts, fmt.Sprintf("%s %d ms", strings.TrimSuffix(k, "_ms"), v))
			}
		}
		p("HA timing in force: %s.\n\n", strings.Join(ts, ", "))
	}
	in := fo.Integrity
	if len(in.Problems) == 0 && len(fo.Runs) > 0 {
		p("Integrity: no problem found. In every run the restarted guest's disk held every write it had seen acknowledged (I2, %d of %d runs checked), the events came in the order "+
			"node-dead → fence confirmed → RBD takeover → promotion → vm-recovered with QEMU launched only after the fence, and no datagram of the old boot arrived after the kill.\n\n", in.I2Checked, len(fo.Runs))
	} else if len(in.Problems) > 0 {
		p("**Integrity: PROBLEMS FOUND (%d):**\n\n", len(in.Problems))
		for _, pr := range in.Problems {
			p("- **%s**\n", pr)
		}
		p("\n")
	}
	vmbench.WritePhaseTable(b, vmbench.RBDPhases(), fo.Phases)
	if gb := fo.GuestBoot; gb.N > 0 {
		p("Of (e), the guest's cold boot under TCG (QEMU launched → first datagram): p50 %s, max %s over %d runs.\n\n", vmbench.FmtMs(gb.P50), vmbench.FmtMs(gb.Max), gb.N)
	}
	p("Runs (seconds from the crash instant; *leader*: the crashed host led the metadata shard):\n\n")
	vmbench.WriteRunsTable(b, fo.Runs, vmbench.RBDPhases(), "rejoin: boot / 3/3 online / one watcher")
	ca := fo.Capture
	p("Capture: %d guest datagrams and %d announcements captured, %d malformed, %d dropped by the kernel; the user-space receiver read %d.\n\n",
		ca.Datagrams, ca.Announcements, ca.Malformed, ca.KernelDropped, ca.ReceiverGot)
}

// AddError records a problem of the whole run (benchkit.Report).
func (rep *Report) AddError(msg string) { rep.Errors = append(rep.Errors, msg) }

// Problems counts the run's errors and integrity problems (benchkit.Report);
// a missed goal is a result, not a problem.
func (rep *Report) Problems() int {
	n := len(rep.Errors)
	if rep.Failover != nil {
		n += len(rep.Failover.Integrity.Problems)
	}
	return n
}
