package main

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/tandemhci/tandem/bench/internal/benchkit"
)

// Target IDs. localSync is the durable-write floor: the same job as
// local, but flushing with fdatasync, which is what both NBD servers do
// for an NBD flush.
const (
	targetLocal     = "local"
	targetLocalSync = "local-fdatasync"
	// targetTwoCopies is two fio jobs at once, each on its own local file:
	// the floor of this one disk for any system that keeps two copies on
	// it, with no network and no NBD in the way. Its latencies are per job;
	// its rates are both jobs together.
	targetTwoCopies = "local-2copies"
	targetQemu      = "qemu-nbd"
	targetR1        = "tandem-r1"
	targetR2        = "tandem-r2"
	targetR3        = "tandem-r3"
	// targetR2TLS is targetR2's volume through the primary's TCP NBD
	// export with TLS and an export certificate, fio in the switch
	// namespace (a host on the backend network): the cost of NBD over TLS
	// against the unix socket, in the same run.
	targetR2TLS = "tandem-r2-tls"
)

// Goal limits from issue 17, all for the 2-replica volume, each against a
// reference measured in the same run.
const (
	goalDurableVsReplicated = 1.25 // QD1 write+flush p50 ≤ 1.25× the replicated floor
	goalQD32VsQemu          = 0.70 // QD32 IOPS ≥ 0.70× qemu-nbd
	goalSeqVsTwoCopies      = 0.80 // 1M sequential ≥ 0.80× the two-copy floor per copy
	goalCPUVsQemu           = 1.5  // CPU per QD32 write, both replicas' nodes ≤ 1.5× qemu-nbd
)

// Report is everything replication.json holds.
type Report struct {
	Date      string              `json:"date"`
	DurationS float64             `json:"duration_s"`
	Host      benchkit.HostInfo   `json:"host"`
	Storage   StorageInfo         `json:"storage"`
	Tandemd   benchkit.BinaryInfo `json:"tandemd"`
	Tools     map[string]string   `json:"tools"`
	Params    Params              `json:"parameters"`
	Targets   []Target            `json:"targets"`
	Volumes   []VolumeState       `json:"volumes,omitempty"`
	// HostBefore and HostAfter sample what the host was doing just
	// before the first and after the last fio job.
	HostBefore *HostActivity `json:"host_activity_before,omitempty"`
	HostAfter  *HostActivity `json:"host_activity_after,omitempty"`
	Prefill    []Result      `json:"prefill"`
	Results    []Result      `json:"results"`
	// RoundTrips are the links' own ping-pong latencies (roundtrip.go).
	RoundTrips []RoundTrip `json:"round_trips,omitempty"`
	Goals      []Goal      `json:"goals"`
	// TLSCost sets targetR2TLS against targetR2, job by job.
	TLSCost   []TLSCost             `json:"nbd_tls_vs_unix,omitempty"`
	DaemonLog []benchkit.LogFinding `json:"daemon_log_findings"`
	// Baseline holds every run of a -baseline-bin invocation.
	Baseline *BaselineComparison `json:"baseline_comparison,omitempty"`
	Errors   []string            `json:"errors,omitempty"`
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
	// CommonFioArgs are passed to every job besides the job's own.
	CommonFioArgs []string `json:"common_fio_args"`
	// DataStream is the cluster's replication.data_stream when the run
	// set it (-data-stream); empty: the default, tls.
	DataStream string `json:"data_stream,omitempty"`
}

// Target is one thing fio writes to.
type Target struct {
	ID    string `json:"id"`
	Label string `json:"label"`
	// Engine holds fio's --ioengine and its target options.
	Engine []string `json:"fio_engine_args"`
	// SyncOpt is the fio option that requests the flushes of the durable
	// job: fsync (for the nbd engine, an NBD flush) or fdatasync.
	SyncOpt string `json:"sync_option"`
	// Jobs limits the target to these jobs (nil: all).
	Jobs     []string `json:"jobs,omitempty"`
	Replicas int      `json:"replicas,omitempty"`
	Nodes    []string `json:"nodes,omitempty"`
	Witness  string   `json:"witness,omitempty"`
	Path     string   `json:"path,omitempty"` // file, or the file behind the server
	URI      string   `json:"uri,omitempty"`
	// Ready is false when the target could not be set up; SetupError says why.
	Ready      bool   `json:"ready"`
	SetupError string `json:"setup_error,omitempty"`

	volume string   // Tandem volume name
	ns     string   // network namespace fio runs in ("": the host's)
	wrap   []string // command fio runs under (runFioWrapped)
}

func (t *Target) runs(job string) bool { return t.Jobs == nil || slices.Contains(t.Jobs, job) }

func (t *Target) tandem() bool { return t.volume != "" }

// VolumeState records a Tandem volume's replicas around the run.
type VolumeState struct {
	Name     string `json:"name"`
	Target   string `json:"target"`
	Primary  string `json:"primary"`
	Witness  string `json:"witness,omitempty"`
	Epoch    uint64 `json:"epoch"`
	URI      string `json:"nbd_unix"`
	AtStart  string `json:"replicas_ready"`
	AtEnd    string `json:"replicas_at_end,omitempty"`
	EndError string `json:"end_error,omitempty"`
}

// Result is one fio run of one job on one target.
type Result struct {
	Target  string   `json:"target"`
	Job     string   `json:"job"`
	Command []string `json:"command"`
	Started string   `json:"started"`
	WallS   float64  `json:"wall_s"`
	// Measurement is nil when fio failed.
	Measurement *benchkit.Measurement `json:"measurement,omitempty"`
	Compare     *Comparison           `json:"comparison,omitempty"`
	// ServerCPUS is the CPU time (user+system, seconds) each server
	// process used while fio ran: tandemd per node, or qemu-nbd.
	ServerCPUS map[string]float64 `json:"server_cpu_s,omitempty"`
	// WindowCPUS is each server process's CPU time (user+system, seconds)
	// over the measured window of a timed job, WindowS long: from the end
	// of the ramp for the runtime, or until fio ended if sooner.
	WindowCPUS map[string]float64 `json:"window_cpu_s,omitempty"`
	WindowS    float64            `json:"window_s,omitempty"`
	// CPUPerWrite is the CPU that the processes holding the target's
	// copies used per write fio completed, over the window.
	CPUPerWrite *CPUPerWrite `json:"cpu_per_write,omitempty"`
	// Profiles are the CPU profiles taken during the job (-profile), by
	// process.
	Profiles map[string]string `json:"profiles,omitempty"`
	// HostCPUPct is the share of all the host's CPUs that was busy
	// during the fio run (anything: servers, fio, kernel, others).
	HostCPUPct float64 `json:"host_cpu_busy_pct"`
	// OthersCPUPct is the CPU used meanwhile by processes that are not
	// the benchmark's (percent of one core, a lower bound), OthersTop the
	// busiest of them.
	OthersCPUPct float64 `json:"others_cpu_pct"`
	// Disk is the traffic on the device holding every target's data.
	Disk      *DiskUse  `json:"disk,omitempty"`
	OthersTop []ProcCPU `json:"others_top,omitempty"`
	// ReplicasAfter is the volume's replica states right after the job.
	ReplicasAfter string `json:"replicas_after,omitempty"`
	Error         string `json:"error,omitempty"`
	// FioOutput is what fio printed besides the JSON.
	FioOutput string `json:"fio_output,omitempty"`
	// LogExcerpts holds the end of each involved tandemd log on failure.
	LogExcerpts map[string]string `json:"log_excerpts,omitempty"`
	FioVersion  string            `json:"fio_version,omitempty"`
	// FioJob is fio's raw JSON summary of the job.
	FioJob json.RawMessage `json:"fio_job,omitempty"`
}

// Comparison is a result's headline latency and rate, set against the same
// job on qemu-nbd and on the local floor (ratios are target / reference).
type Comparison struct {
	LatencyMetric string   `json:"latency_metric"`
	LatencyUS     float64  `json:"latency_us"`
	RateMetric    string   `json:"rate_metric"`
	Rate          float64  `json:"rate"`
	Floor         string   `json:"floor_target"`
	LatVsQemu     *float64 `json:"latency_vs_qemu_nbd,omitempty"`
	RateVsQemu    *float64 `json:"rate_vs_qemu_nbd,omitempty"`
	LatVsFloor    *float64 `json:"latency_vs_floor,omitempty"`
	RateVsFloor   *float64 `json:"rate_vs_floor,omitempty"`
}

// Goal is one of the targets and whether this run met it.
type Goal struct {
	ID        string   `json:"id"`
	Text      string   `json:"goal"`
	Measured  string   `json:"measured"`
	Reference string   `json:"reference"`
	Ratio     *float64 `json:"ratio,omitempty"`
	Limit     float64  `json:"limit"`
	AtMost    bool     `json:"ratio_at_most"` // else at least
	Met       *bool    `json:"met,omitempty"` // nil: not measured
	// Context are the run's other references on the same scale (qemu-nbd,
	// the floors, the single replica), so the verdict can be read
	// against them.
	Context []GoalRef `json:"context,omitempty"`
	// TwoCopies is what the two-copy floor (targetTwoCopies) reaches per
	// copy for a goal whose reference is not itself a floor; FloorRatio is
	// it against the same reference. A floor that misses the limit means
	// no two-copy system could meet the goal on this machine.
	TwoCopies  string   `json:"two_copy_floor,omitempty"`
	FloorRatio *float64 `json:"two_copy_floor_ratio,omitempty"`
	FloorMet   *bool    `json:"two_copy_floor_met,omitempty"`
}

// GoalRef is one more reference for a goal's figure.
type GoalRef struct {
	Name  string `json:"name"`
	Value string `json:"value"`
	// Ratio is the goal's measured figure against this one.
	Ratio *float64 `json:"measured_vs_this,omitempty"`
}

// CPUPerWrite is the CPU time that the processes holding a target's copies
// used per write fio completed, over the measured window: the tandemd of
// every node with one of the volume's replicas, or qemu-nbd.
type CPUPerWrite struct {
	US        float64            `json:"us"`
	ByProcess map[string]float64 `json:"by_process_us"`
	// AllServersUS counts every server process sampled instead: for a
	// Tandem target, every node's tandemd, those without a replica too.
	AllServersUS float64 `json:"all_servers_us"`
}

// String is "98.1 µs (tandemd-n1 70.3 + tandemd-n2 27.8)".
func (c *CPUPerWrite) String() string {
	if c == nil {
		return "–"
	}
	s := benchkit.FmtUS(c.US) + " µs"
	if len(c.ByProcess) > 1 {
		var parts []string
		for _, name := range benchkit.SortedKeys(c.ByProcess) {
			parts = append(parts, fmt.Sprintf("%s %s", name, benchkit.FmtUS(c.ByProcess[name])))
		}
		s += " (" + strings.Join(parts, " + ") + ")"
	}
	return s
}

// cpuPerWrite divides procs' CPU over a window of windowS seconds by the
// writes completed in it (iops × windowS). It is nil unless every one of
// procs was sampled: a missing process would understate the cost.
func cpuPerWrite(window map[string]float64, windowS, iops float64, procs []string) *CPUPerWrite {
	writes := iops * windowS
	if len(procs) == 0 || writes <= 0 {
		return nil
	}
	c := &CPUPerWrite{ByProcess: map[string]float64{}}
	for _, p := range procs {
		v, ok := window[p]
		if !ok {
			return nil
		}
		c.ByProcess[p] = v * 1e6 / writes
		c.US += c.ByProcess[p]
	}
	for _, v := range window {
		c.AllServersUS += v * 1e6 / writes
	}
	return c
}

// replicatedFloor bounds from below the QD1 write+flush pair of any
// 2-replica system on this machine, in µs: u + n + P2, the unix round trip
// (fio to the server and back), the backend round trip (primary to
// secondary and back) and the two-copy pair (both copies written and
// flushed at once). Every other step can overlap: the primary writes while
// the secondary does, and both can flush ahead of fio's flush. Sums of
// medians, so an estimate of the pair's median, not a strict bound.
func replicatedFloor(rs []Result, rts []RoundTrip) (float64, string) {
	r := findResult(rs, targetTwoCopies, benchkit.JobDurable)
	u, n := findRoundTrip(rts, rttUnix).p50(), findRoundTrip(rts, rttTCP).p50()
	if r == nil || r.Measurement == nil || u <= 0 || n <= 0 {
		return 0, ""
	}
	_, p2, _, _ := benchkit.Headline(benchkit.JobDurable, r.Measurement)
	if p2 <= 0 {
		return 0, ""
	}
	f := u + n + p2
	return f, fmt.Sprintf("%s µs = unix round trip %s + backend round trip %s + two-copy pair %s", benchkit.FmtUS(f), benchkit.FmtUS(u), benchkit.FmtUS(n), benchkit.FmtUS(p2))
}

// floorOf is the target that is the local floor for job.
func floorOf(job string) string {
	if job == benchkit.JobDurable {
		return targetLocalSync
	}
	return targetLocal
}

func findResult(rs []Result, target, job string) *Result {
	for i := range rs {
		if rs[i].Target == target && rs[i].Job == job {
			return &rs[i]
		}
	}
	return nil
}

// compare fills every successful result's Comparison.
func compare(rs []Result) {
	for i := range rs {
		r := &rs[i]
		if r.Measurement == nil {
			r.Compare = nil
			continue
		}
		c := &Comparison{Floor: floorOf(r.Job)}
		c.LatencyMetric, c.LatencyUS, c.RateMetric, c.Rate = benchkit.Headline(r.Job, r.Measurement)
		if q := findResult(rs, targetQemu, r.Job); q != nil && q.Measurement != nil {
			_, ql, _, qr := benchkit.Headline(r.Job, q.Measurement)
			c.LatVsQemu, c.RateVsQemu = benchkit.Ratio(c.LatencyUS, ql), benchkit.Ratio(c.Rate, qr)
		}
		if f := findResult(rs, c.Floor, r.Job); f != nil && f.Measurement != nil {
			_, fl, _, fr := benchkit.Headline(r.Job, f.Measurement)
			c.LatVsFloor, c.RateVsFloor = benchkit.Ratio(c.LatencyUS, fl), benchkit.Ratio(c.Rate, fr)
		}
		r.Compare = c
	}
}

// TLSCost is one job on the volume over TCP NBD with TLS (targetR2TLS)
// against the same volume through the unix socket (targetR2): ratios are
// TLS / unix, so a rate ratio below 1 and latency ratios above 1 are the
// cost of the network export.
type TLSCost struct {
	Job           string   `json:"job"`
	RateMetric    string   `json:"rate_metric"`
	UnixRate      float64  `json:"unix_rate"`
	TLSRate       float64  `json:"tls_rate"`
	RateRatio     *float64 `json:"rate_ratio,omitempty"`
	LatMetric     string   `json:"latency_metric"`
	UnixLatUS     float64  `json:"unix_latency_us"`
	TLSLatUS      float64  `json:"tls_latency_us"`
	LatRatio      *float64 `json:"latency_ratio,omitempty"`
	UnixP99US     float64  `json:"unix_write_p99_us"`
	TLSP99US      float64  `json:"tls_write_p99_us"`
	P99Ratio      *float64 `json:"write_p99_ratio,omitempty"`
	UnixServerCPU float64  `json:"unix_server_cpu_s"`
	TLSServerCPU  float64  `json:"tls_server_cpu_s"`
}

// tlsCost compares targetR2TLS with targetR2 for every job both ran.
func tlsCost(rs []Result) []TLSCost {
	var out []TLSCost
	for _, j := range benchkit.FioJobs() {
		u, t := findResult(rs, targetR2, j.ID), findResult(rs, targetR2TLS, j.ID)
		if u == nil || t == nil || u.Measurement == nil || t.Measurement == nil {
			continue
		}
		c := TLSCost{Job: j.ID}
		c.LatMetric, c.UnixLatUS, c.RateMetric, c.UnixRate = benchkit.Headline(j.ID, u.Measurement)
		_, c.TLSLatUS, _, c.TLSRate = benchkit.Headline(j.ID, t.Measurement)
		c.RateRatio, c.LatRatio = benchkit.Ratio(c.TLSRate, c.UnixRate), benchkit.Ratio(c.TLSLatUS, c.UnixLatUS)
		if u.Measurement.Write != nil && t.Measurement.Write != nil {
			c.UnixP99US, c.TLSP99US = u.Measurement.Write.P99US, t.Measurement.Write.P99US
			c.P99Ratio = benchkit.Ratio(c.TLSP99US, c.UnixP99US)
		}
		for _, v := range u.ServerCPUS {
			c.UnixServerCPU += v
		}
		for _, v := range t.ServerCPUS {
			c.TLSServerCPU += v
		}
		out = append(out, c)
	}
	return out
}

// evaluateGoals checks issue 17's goals against the 2-replica volume, each
// against a reference measured in the same run. compare must have run.
func evaluateGoals(rs []Result, rts []RoundTrip) []Goal {
	within := func(r *float64, g Goal) *bool {
		if r == nil {
			return nil
		}
		ok := *r >= g.Limit
		if g.AtMost {
			ok = *r <= g.Limit
		}
		return &ok
	}
	// fig is a target's headline for a job; text says "not measured" or
	// why it failed when there is none.
	type fig struct {
		text      string
		lat, rate float64
		r         *Result
	}
	get := func(target, job string) fig {
		r := findResult(rs, target, job)
		if r == nil || r.Measurement == nil {
			if r != nil && r.Error != "" {
				return fig{text: "failed: " + benchkit.Truncate(r.Error, 120)}
			}
			return fig{text: "not measured"}
		}
		_, lat, metric, rate := benchkit.Headline(job, r.Measurement)
		if job == benchkit.JobDurable {
			return fig{fmt.Sprintf("%s µs (%s, %.0f %s)", benchkit.FmtUS(lat), target, rate, metric), lat, rate, r}
		}
		return fig{fmt.Sprintf("%s %s (%s)", benchkit.FmtRate(rate), metric, target), lat, rate, r}
	}
	// refs are other targets' figures for job against measured.
	refs := func(job string, measured float64, latency bool, targets ...string) []GoalRef {
		var out []GoalRef
		for _, id := range targets {
			f := get(id, job)
			if f.r == nil {
				continue
			}
			if latency {
				out = append(out, GoalRef{Name: id, Value: benchkit.FmtUS(f.lat) + " µs", Ratio: benchkit.Ratio(measured, f.lat)})
				continue
			}
			_, _, metric, _ := benchkit.Headline(job, f.r.Measurement)
			out = append(out, GoalRef{Name: id, Value: benchkit.FmtRate(f.rate) + " " + metric, Ratio: benchkit.Ratio(measured, f.rate)})
		}
		return out
	}
	var goals []Goal

	// 1: QD1 write+flush against the replicated floor.
	m := get(targetR2, benchkit.JobDurable)
	rf, rfd := replicatedFloor(rs, rts)
	g := Goal{ID: "1", Text: fmt.Sprintf("2-replica QD1 write+flush p50 ≤ %.2f× the replicated floor (unix round trip + backend round trip + two-copy pair)", goalDurableVsReplicated),
		Measured: m.text, Reference: "not measured (needs both round trips and " + targetTwoCopies + ")", Ratio: benchkit.Ratio(m.lat, rf), Limit: goalDurableVsReplicated, AtMost: true,
		Context: refs(benchkit.JobDurable, m.lat, true, targetQemu, targetLocalSync, targetTwoCopies)}
	if rfd != "" {
		g.Reference = "replicated floor " + rfd
	}
	goals = append(goals, g)

	// 2: QD32 IOPS against qemu-nbd; the two-copy floor says whether the
	// disk allows it.
	m = get(targetR2, benchkit.JobQD32)
	q := get(targetQemu, benchkit.JobQD32)
	g = Goal{ID: "2", Text: fmt.Sprintf("2-replica 4K random write QD32 IOPS ≥ %.2f× qemu-nbd", goalQD32VsQemu), Measured: m.text, Reference: q.text,
		Ratio: benchkit.Ratio(m.rate, q.rate), Limit: goalQD32VsQemu, Context: refs(benchkit.JobQD32, m.rate, false, targetR1)}
	if f := get(targetTwoCopies, benchkit.JobQD32); f.r != nil {
		g.TwoCopies = fmt.Sprintf("%s IOPS per copy (%s for both)", benchkit.FmtRate(f.rate/2), benchkit.FmtRate(f.rate))
		g.FloorRatio = benchkit.Ratio(f.rate/2, q.rate)
		g.FloorMet = within(g.FloorRatio, g)
		g.Context = append(g.Context, GoalRef{Name: targetTwoCopies + " per copy", Value: benchkit.FmtRate(f.rate/2) + " IOPS", Ratio: benchkit.Ratio(m.rate, f.rate/2)})
	}
	goals = append(goals, g)

	// 3: 1M sequential against the two-copy floor's rate per copy.
	m = get(targetR2, benchkit.JobSeq)
	g = Goal{ID: "3", Text: fmt.Sprintf("2-replica 1M sequential write ≥ %.2f× the two-copy floor's rate per copy (%s, rate per job)", goalSeqVsTwoCopies, targetTwoCopies),
		Measured: m.text, Limit: goalSeqVsTwoCopies, Context: refs(benchkit.JobSeq, m.rate, false, targetQemu, targetLocal, targetR1)}
	if f := get(targetTwoCopies, benchkit.JobSeq); f.r != nil {
		g.Reference = fmt.Sprintf("%s MB/s per copy (%s, %s for both jobs)", benchkit.FmtRate(f.rate/2), targetTwoCopies, benchkit.FmtRate(f.rate))
		g.Ratio = benchkit.Ratio(m.rate, f.rate/2)
	} else {
		g.Reference = f.text + " (" + targetTwoCopies + ")"
	}
	if link := findRoundTrip(rts, streamTCP).mbps(); link > 0 {
		// Every replicated byte crosses this link once, as well as the
		// disk twice: the goal is out of this machine's reach when the
		// link alone carries less than it asks.
		g.Context = append(g.Context, GoalRef{Name: "the backend link alone (" + streamTCP + ", no TLS)", Value: benchkit.FmtRate(link) + " MB/s", Ratio: benchkit.Ratio(m.rate, link)})
	}
	goals = append(goals, g)

	// 4: CPU per QD32 write on both replicas' nodes against qemu-nbd's.
	cpuText := func(f fig) (string, float64) {
		switch {
		case f.r == nil:
			return f.text, 0
		case f.r.CPUPerWrite == nil:
			return fmt.Sprintf("not measured (%s: no CPU sample of its processes over the window)", f.r.Target), 0
		}
		return fmt.Sprintf("%s per write (%s, %s IOPS)", f.r.CPUPerWrite, f.r.Target, benchkit.FmtRate(f.rate)), f.r.CPUPerWrite.US
	}
	mt, mc := cpuText(get(targetR2, benchkit.JobQD32))
	qt, qc := cpuText(q)
	g = Goal{ID: "4", Text: fmt.Sprintf("CPU per 2-replica 4K write at QD32, both nodes (primary's and secondary's tandemd) ≤ %.1f× qemu-nbd's CPU per write", goalCPUVsQemu),
		Measured: mt, Reference: qt, Ratio: benchkit.Ratio(mc, qc), Limit: goalCPUVsQemu, AtMost: true}
	if r1 := findResult(rs, targetR1, benchkit.JobQD32); r1 != nil && r1.CPUPerWrite != nil {
		g.Context = append(g.Context, GoalRef{Name: targetR1 + " (one copy through Tandem)", Value: r1.CPUPerWrite.String(), Ratio: benchkit.Ratio(mc, r1.CPUPerWrite.US)})
	}
	if r2 := findResult(rs, targetR2, benchkit.JobQD32); r2 != nil && r2.CPUPerWrite != nil && r2.CPUPerWrite.AllServersUS > r2.CPUPerWrite.US {
		g.Context = append(g.Context, GoalRef{Name: "every node's tandemd, the witness's included", Value: benchkit.FmtUS(r2.CPUPerWrite.AllServersUS) + " µs"})
	}
	goals = append(goals, g)

	for i := range goals {
		goals[i].Met = within(goals[i].Ratio, goals[i])
	}
	return goals
}

// cpuPct is the servers' CPU over the fio run, in percent of one core.
func (r *Result) cpuPct() (float64, bool) {
	if len(r.ServerCPUS) == 0 || r.WallS <= 0 {
		return 0, false
	}
	var s float64
	for _, v := range r.ServerCPUS {
		s += v
	}
	return 100 * s / r.WallS, true
}

func (rep *Report) target(id string) *Target {
	for i := range rep.Targets {
		if rep.Targets[i].ID == id {
			return &rep.Targets[i]
		}
	}
	return nil
}

// Markdown renders the human report.
func (rep *Report) Markdown() string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }

	p("# Tandem replication benchmark\n\n")
	p("Run %s (%.0f s). Host: %s.  \n", rep.Date, rep.DurationS, rep.Host.Summary(""))
	p("tandemd: %s (%s). Tools: %s.  \n", rep.Tandemd.RevisionSummary(), rep.Tandemd.GoVersion, strings.Join(benchkit.ToolList(rep.Tools), ", "))
	p("Storage: every file (local file, the qemu-nbd image, every node's volume replicas) is on %s (%s, mounted on %s)%s.  \n",
		rep.Storage.Device, rep.Storage.FSType, rep.Storage.MountPoint, map[bool]string{true: "", false: " — **not all on the same filesystem, see the JSON**"}[rep.Storage.SameFS])
	stream := "TLS (the default)"
	if ds := rep.Params.DataStream; ds != "" {
		stream = "replication.data_stream=" + ds
	}
	p("Parameters: %s per target and volume, fio `--time_based --runtime=%s --ramp_time=%s`, one job at a time, %d-node Tandem cluster in network namespaces; replication data stream: %s.\n\n",
		benchkit.FmtBytes(rep.Params.SizeBytes), rep.Params.Runtime, rep.Params.Ramp, rep.Params.Nodes, stream)

	if rep.Baseline != nil {
		rep.Baseline.markdown(&b)
	}
	p("## Goals (2-replica volume, issue 17)\n\n")
	benchkit.NewTable(&b, "#", "Goal", "Measured", "Reference", "Ratio", "Limit", "Verdict", "Other references of this run (measured against each)")
	for _, g := range rep.Goals {
		op := "≥"
		if g.AtMost {
			op = "≤"
		}
		var other []string
		for _, c := range g.Context {
			s := fmt.Sprintf("%s: %s", c.Name, c.Value)
			if c.Ratio != nil {
				s += " (" + benchkit.FmtRatio(c.Ratio) + ")"
			}
			other = append(other, s)
		}
		if g.TwoCopies != "" {
			v := "within the disk's reach"
			if g.FloorMet != nil && !*g.FloorMet {
				v = "**the floor itself misses the goal**"
			}
			other = append(other, fmt.Sprintf("the two-copy floor reaches %s of the reference (%s)", benchkit.FmtRatio(g.FloorRatio), v))
		}
		p("| %s | %s | %s | %s | %s | %s %.2f× | %s | %s |\n", g.ID, g.Text, benchkit.Escape(g.Measured), benchkit.Escape(g.Reference), benchkit.FmtRatio(g.Ratio), op, g.Limit, benchkit.PassFail(g.Met),
			benchkit.Escape(benchkit.OrDash(strings.Join(other, "; "))))
	}
	p("\nThe two-copy floor is target %s: two fio jobs at once, each writing its own local file with O_DIRECT, "+
		"the best that any system keeping two copies on this machine's one disk could do, with no network, no NBD and no replication protocol; its rates are for both jobs, so the rate per copy is half.\n\n", targetTwoCopies)
	p("The replicated floor (goal 1's reference) bounds from below a QD1 write+flush pair of any 2-replica system here: " +
		"the pair cannot end before fio's request has reached the server and its reply has come back (one unix round trip), " +
		"the data has reached the secondary and its confirmation has come back (one backend round trip), and both copies are written and flushed, which at best happens at once (the two-copy pair). " +
		"Everything else can overlap: the primary writes while the secondary does, and both can flush ahead of fio's flush. " +
		"The round trips are fio's own net engine in ping-pong mode with 4 KiB messages (see Links below); all terms are medians, so the floor estimates the median pair.\n\n")
	p("CPU per write (goal 4, and the QD32 table) is the user+system CPU time of the processes holding the target's copies — for a Tandem volume the tandemd of every node with one of its replicas "+
		"(for %s: tandemd-n1, the primary, and tandemd-n2, the secondary; not the witness), for %s its qemu-nbd process — "+
		"read from /proc over the measured window (from the end of the ramp for the runtime), divided by the writes completed in it (the job's write rate times the window).\n", targetR2, targetQemu)
	p("\nThe durable-write latency of a target is the sum of its write p50 and its flush p50 from the QD1 write+flush job (fio does not time the pair itself); " +
		"pairs/s is the measured rate of complete write+flush pairs.\n\n")

	if len(rep.RoundTrips) > 0 {
		p("## Links\n\nRound trips of a 4 KiB message and its 4 KiB echo, fio `--ioengine=net --pingpong=1` for %s, one at a time before the jobs; latencies in µs. The last row is a stream, not a round trip.\n\n", rttRuntime)
		benchkit.NewTable(&b, "Link", "What", "p50", "p99", "p99.9", "round trips/s", "MB/s", "error")
		for _, rt := range rep.RoundTrips {
			p50, p99, p999, rate, mbps := "–", "–", "–", "–", "–"
			if m := rt.Measurement; m != nil && m.Write != nil && rt.ID != streamTCP {
				p50, p99, p999, rate = benchkit.FmtUS(m.Write.P50US), benchkit.FmtUS(m.Write.P99US), benchkit.FmtUS(m.Write.P999US), benchkit.FmtRate(m.IOPS)
			}
			if m := rt.Measurement; m != nil && rt.ID == streamTCP {
				mbps = benchkit.FmtRate(m.MBps)
			}
			p("| %s | %s | %s | %s | %s | %s | %s | %s |\n", rt.ID, benchkit.Escape(rt.Label), p50, p99, p999, rate, mbps, benchkit.Escape(benchkit.Truncate(rt.Error, 200)))
		}
		p("\nThe stream (%s) is fio's net engine writing 1 MiB blocks one way for %s, a reader in n2; a replicated 1 MiB write crosses that hop once, so its rate bounds goal 3 on this machine whatever the disk allows.\n\n", streamTCP, rttRuntime)
	}

	p("## Targets\n\n")
	benchkit.NewTable(&b, "Target", "What", "fio engine")
	for _, t := range rep.Targets {
		what := t.Label
		if t.SetupError != "" {
			what += " — **setup failed**: " + t.SetupError
		}
		p("| %s | %s | `%s` |\n", t.ID, benchkit.Escape(what), strings.Join(t.Engine, " "))
	}
	p("\n")

	if len(rep.TLSCost) > 0 {
		p("## NBD over TLS (TCP) against the unix socket\n\n"+
			"The same 2-replica volume, the same jobs in the same run: target %s through the primary's NBD unix socket (fio on the host), "+
			"target %s through the primary's TCP export with TLS 1.3 and an export certificate (fio's nbd engine with an `nbds://` URI, from the switch namespace, a host on the backend network). "+
			"Ratios are TLS / unix: a rate ratio below 1 and latency ratios above 1 are the cost of the network export. Server CPU is all three tandemd together, in seconds over the job.\n\n", targetR2, targetR2TLS)
		benchkit.NewTable(&b, "Job", "Rate (unix → TLS)", "Rate ratio", "Latency (unix → TLS, µs)", "Latency ratio", "Write p99 (unix → TLS, µs)", "p99 ratio", "Server CPU s (unix → TLS)")
		for _, c := range rep.TLSCost {
			p("| %s | %s → %s %s | %s | %s → %s (%s) | %s | %s → %s | %s | %.2f → %.2f |\n", c.Job, benchkit.FmtRate(c.UnixRate), benchkit.FmtRate(c.TLSRate), c.RateMetric, benchkit.FmtRatio(c.RateRatio),
				benchkit.FmtUS(c.UnixLatUS), benchkit.FmtUS(c.TLSLatUS), c.LatMetric, benchkit.FmtRatio(c.LatRatio), benchkit.FmtUS(c.UnixP99US), benchkit.FmtUS(c.TLSP99US), benchkit.FmtRatio(c.P99Ratio), c.UnixServerCPU, c.TLSServerCPU)
		}
		p("\n")
	}

	if rep.HostBefore != nil || rep.HostAfter != nil {
		p("## Host activity\n\nThe host is shared: anything else running competes with the targets for the 2 CPUs and the disk. Sampled over 3 s each time, with the benchmark's own servers idle:\n\n")
		benchkit.NewTable(&b, "When", "CPU busy (all CPUs)", "other processes' CPU (of one core)", "load average", "other processes above 5% of a core")
		for _, h := range []struct {
			when string
			a    *HostActivity
		}{{"before the first job", rep.HostBefore}, {"after the last job", rep.HostAfter}} {
			if h.a == nil {
				continue
			}
			var top []string
			for _, pc := range h.a.Top {
				top = append(top, fmt.Sprintf("`%s` (pid %d) %.0f%%", benchkit.Escape(benchkit.Truncate(pc.Command, 80)), pc.PID, pc.Pct))
			}
			p("| %s | %.0f%% | %.0f%% | %s | %s |\n", h.when, h.a.BusyPct, h.a.OthersPct, h.a.LoadAvg, benchkit.OrDash(strings.Join(top, "; ")))
		}
		p("\nEach job's table also shows how busy the whole host was while it ran (all CPUs) and the CPU that processes other than the benchmark's own used meanwhile " +
			"(percent of one core; a lower bound, as processes that start and end within a job are missed). Other processes' disk traffic is not measured, but competes for the same disk.\n\n")
	}

	for _, j := range rep.Params.Jobs {
		rep.jobTable(&b, j)
	}

	rep.diskTable(&b)

	if len(rep.Prefill) > 0 {
		p("## Prefill\n\nBefore the measured jobs every target was written once from end to end with sequential 1M writes at QD4 (`%s`, no time limit). "+
			"The files and Tandem's replicas are preallocated with fallocate, and the first write to an unwritten ext4 extent costs about twice a later one; "+
			"the prefill makes every measured write an overwrite on every target. Its own speed, for information (Tandem's includes replicating to every replica):\n\n", benchkit.PrefillJob().Title)
		benchkit.NewTable(&b, "Target", "MB/s", "time", "error")
		for _, r := range rep.Prefill {
			var mbps float64
			if r.Measurement != nil {
				mbps = r.Measurement.MBps
			}
			p("| %s | %s | %.1f s | %s |\n", r.Target, benchkit.FmtRate(mbps), r.WallS, benchkit.Escape(benchkit.Truncate(r.Error, 200)))
		}
		p("\n")
	}

	rep.profileTable(&b)

	if len(rep.Volumes) > 0 {
		p("## Tandem volumes\n\n")
		benchkit.NewTable(&b, "Volume", "Target", "Primary", "Witness", "Epoch", "Replicas when ready", "Replicas at the end")
		for _, v := range rep.Volumes {
			end := v.AtEnd
			if v.EndError != "" {
				end = "error: " + v.EndError
			}
			p("| %s | %s | %s | %s | %d | %s | %s |\n", v.Name, v.Target, v.Primary, benchkit.OrDash(v.Witness), v.Epoch, v.AtStart, benchkit.Escape(end))
		}
		p("\n(`*` marks the primary; the link state as the primary sees it follows the slash.)\n\n")
	}

	if len(rep.DaemonLog) > 0 {
		p("## Warnings and errors in the tandemd logs\n\nGrouped with digits masked; counts over the whole run.\n\n")
		benchkit.FindingsTable{Column: "Example", Example: true, Width: 240, NodeSep: ":", Join: " "}.WriteFindings(&b, rep.DaemonLog)
		p("\n")
	}

	p("## Notes\n\n")
	for _, n := range []string{
		"What is measured: fio 3.33 in the root namespace, one job at a time. The local file uses `--ioengine=libaio --direct=1`; the NBD targets use fio's nbd engine (libnbd) over a unix socket, one connection, " +
			"so the Tandem figures include the NBD protocol on the primary, the primary's O_DIRECT write to its own replica and, with 2 or 3 replicas, the TLS replication stream to each secondary over the veth network and its acknowledgement (protocol C). " +
			"Latencies are fio's completion latency (`clat`: submission to completion) of the writes, and the latency of the flushes from fio's `sync` section; percentiles come from fio's histogram.",
		"The durable-write job uses `--fsync=1`: the nbd engine turns it into an NBD FLUSH after every write (it ignores `--fdatasync`). On the local file `--fsync=1` is a real fsync(2), which also commits the file's metadata; " +
			"since both NBD servers implement FLUSH with fdatasync(2), the local floor for that job is the same job with `--fdatasync=1` (target local-fdatasync). Both local variants are shown.",
		"Every ratio is target / reference for the same job: for latency lower is better, for IOPS, pairs/s and MB/s higher is better. The floor is the local file (fdatasync variant for the durable job).",
		"Prefill: every target was written end to end once before the measured jobs (see Prefill), so no target pays for first writes into unwritten extents.",
		"All Tandem nodes, their replicas, qemu-nbd, the local file and fio share one virtual disk and 2 CPUs. A 3-replica write is three O_DIRECT writes to the same disk, and three tandemd processes, fio and the kernel compete for two cores; " +
			"replicas here slow each other down in a way they would not on separate hosts with separate disks. The network between nodes is veth pairs and a bridge, much faster than a real network round trip (RECIPES: 20–40 µs added by loopback or veth).",
		"qemu-nbd is the single-copy reference: a raw file with `--cache=none` (O_DIRECT), no replication. Tandem r1 is the same single copy through Tandem's own NBD server and block store.",
		"Server CPU is the user+system CPU time of the server processes (all three tandemd, or qemu-nbd) during the fio run, in percent of one core averaged over the run including the ramp. " +
			"CPU per write counts only the processes holding the target's copies, over the measured window (see Goals).",
		"Each figure comes from a single run of each job; on a shared virtual machine the disk and the hypervisor add noise, so compare repeated runs before reading much into differences of a few tens of percent.",
		"A replica state after a job other than UpToDate/in-sync would mean the job ran with fewer copies than intended; the tables show the states read after each job.",
	} {
		p("- %s\n", n)
	}
	if len(rep.Errors) > 0 {
		p("\n## Errors during the run\n\n")
		for _, e := range rep.Errors {
			p("- %s\n", benchkit.Escape(e))
		}
		var withLogs []Result
		for _, r := range append(slices.Clone(rep.Prefill), rep.Results...) {
			if r.Error != "" {
				withLogs = append(withLogs, r)
			}
		}
		for _, r := range withLogs {
			p("\n### %s on %s\n\nCommand: `%s`\n\nError: `%s`\n", r.Job, r.Target, strings.Join(r.Command, " "), benchkit.Escape(benchkit.Truncate(r.Error, 1000)))
			for _, n := range benchkit.SortedKeys(r.LogExcerpts) {
				p("\ntandemd log of %s (last lines):\n\n```\n%s\n```\n", n, r.LogExcerpts[n])
			}
		}
	}
	return b.String()
}

func (rep *Report) jobTable(b *strings.Builder, j benchkit.JobSpec) {
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	p("## %s\n\n", j.Title)
	p("fio `--rw=%s --bs=%s --iodepth=%d", j.RW, j.BlockSize, j.IODepth)
	if j.SyncEvery > 0 {
		p(" --fsync=%d", j.SyncEvery)
	}
	p("`; latencies in µs")
	if j.Throughput {
		p(", MB/s = 10^6 bytes per second")
	}
	p(".\n\n")
	durable := j.ID == benchkit.JobDurable
	head := []string{"Target", "write p50", "p99", "p99.9"}
	rateName, latName := "IOPS", "p50"
	switch {
	case durable:
		head = []string{"Target", "write p50", "write p99", "write p99.9", "flush p50", "flush p99", "write+flush p50"}
		rateName, latName = "pairs/s", "w+f p50"
	case j.Throughput:
		rateName = "MB/s"
	}
	head = append(head, rateName, latName+" vs qemu-nbd", rateName+" vs qemu-nbd", latName+" vs floor", rateName+" vs floor", "server CPU")
	// CPU per write is goal 4's figure, shown where the goal reads it.
	perWrite := j.ID == benchkit.JobQD32
	if perWrite {
		head = append(head, "CPU per write")
	}
	head = append(head, "host CPU busy", "others' CPU", "replicas after")
	benchkit.NewTable(b, head...)
	note := func(id, text string) {
		cells := make([]string, len(head)-2)
		p("| %s | %s | %s |\n", id, text, strings.Join(cells, " | "))
	}
	for _, t := range rep.Targets {
		if !t.runs(j.ID) {
			continue
		}
		r := findResult(rep.Results, t.ID, j.ID)
		switch {
		case r == nil && t.SetupError != "":
			note(t.ID, "not run: setup failed")
			continue
		case r == nil:
			note(t.ID, "not run")
			continue
		case r.Measurement == nil:
			note(t.ID, "**failed**: "+benchkit.Escape(benchkit.Truncate(r.Error, 160)))
			continue
		}
		m, c := r.Measurement, r.Compare
		if c == nil {
			c = &Comparison{}
		}
		w := m.Write
		if w == nil {
			w = &benchkit.LatStats{}
		}
		cells := []string{t.ID, benchkit.FmtUS(w.P50US), benchkit.FmtUS(w.P99US), benchkit.FmtUS(w.P999US)}
		if durable {
			s := m.Sync
			if s == nil {
				s = &benchkit.LatStats{}
			}
			cells = append(cells, benchkit.FmtUS(s.P50US), benchkit.FmtUS(s.P99US), benchkit.FmtUS(c.LatencyUS))
		}
		rate := m.IOPS
		if j.Throughput {
			rate = m.MBps
		}
		cpu := "–"
		if v, ok := r.cpuPct(); ok {
			cpu = fmt.Sprintf("%.0f%%", v)
		}
		cells = append(cells, benchkit.FmtRate(rate), benchkit.FmtRatio(c.LatVsQemu), benchkit.FmtRatio(c.RateVsQemu), benchkit.FmtRatio(c.LatVsFloor), benchkit.FmtRatio(c.RateVsFloor), cpu)
		if perWrite {
			cells = append(cells, r.CPUPerWrite.String())
		}
		cells = append(cells, fmt.Sprintf("%.0f%%", r.HostCPUPct), othersCell(r), benchkit.OrDash(r.ReplicasAfter))
		p("| %s |\n", strings.Join(cells, " | "))
	}
	if perWrite {
		p("\nCPU per write: µs of user+system CPU per write completed, over the measured window, of the processes holding the target's copies (the tandemd of the nodes with the volume's replicas, or qemu-nbd; see Goals). Server CPU is every tandemd, or qemu-nbd, over the whole fio run.\n")
	}
	var busy []string
	for _, t := range rep.Targets {
		if r := findResult(rep.Results, t.ID, j.ID); r != nil && r.OthersCPUPct >= othersWarnPct {
			var who []string
			for _, o := range r.OthersTop {
				who = append(who, fmt.Sprintf("`%s` %.0f%%", benchkit.Escape(benchkit.Truncate(o.Command, 60)), o.Pct))
			}
			busy = append(busy, fmt.Sprintf("%s (%s)", t.ID, benchkit.OrDash(strings.Join(who, ", "))))
		}
	}
	if len(busy) > 0 {
		p("\n⚠ Other processes used at least %d%% of a core during: %s. Those rows may be slower than on a quiet host.\n", othersWarnPct, strings.Join(busy, "; "))
	}
	p("\n")
}

// profileTable lists the CPU profiles taken with -profile.
func (rep *Report) profileTable(b *strings.Builder) {
	var t *benchkit.Table
	for _, r := range rep.Results {
		for _, proc := range benchkit.SortedKeys(r.Profiles) {
			if t == nil {
				fmt.Fprintf(b, "## CPU profiles\n\nTaken with -profile over the measured part of the job (`go tool pprof -top bin/tandemd FILE`); the profiled jobs' figures include the profiler's overhead.\n\n")
				tt := benchkit.NewTable(b, "Target", "Job", "Process", "File")
				t = &tt
			}
			t.Row(r.Target, r.Job, proc, "`"+r.Profiles[proc]+"`")
		}
	}
	if t != nil {
		fmt.Fprintf(b, "\n")
	}
}

// othersWarnPct flags results during which other processes were busy.
const othersWarnPct = 10

func othersCell(r *Result) string {
	s := fmt.Sprintf("%.0f%%", r.OthersCPUPct)
	if r.OthersCPUPct >= othersWarnPct {
		s += " ⚠"
	}
	return s
}

// diskTable shows the device traffic per completed operation.
func (rep *Report) diskTable(b *strings.Builder) {
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	found := false
	for _, r := range rep.Results {
		found = found || r.Disk != nil
	}
	if !found {
		return
	}
	p("## Device traffic per operation\n\n")
	p("Writes, flushes and KiB that reached the block device holding every target's data (%s, /proc/diskstats), per operation fio completed "+
		"(per write+flush pair in the durable job). Approximate: the device counters cover the whole fio run (ramp and start-up included) and are divided by the measured rate times that time; "+
		"traffic from other processes is included. An overwrite of one 4K block on one copy is ideally 1 write of 4 KiB (plus 1 flush when flushed); with N copies, N of each.\n\n", rep.Storage.Device)
	head := []string{"Target"}
	for _, j := range rep.Params.Jobs {
		head = append(head, j.ID)
	}
	benchkit.NewTable(b, head...)
	for _, t := range rep.Targets {
		cells := []string{t.ID}
		for _, j := range rep.Params.Jobs {
			r := findResult(rep.Results, t.ID, j.ID)
			if r == nil || r.Disk == nil {
				cells = append(cells, "–")
				continue
			}
			d := r.Disk
			cell := fmt.Sprintf("%.2f writes, %.1f KiB", d.WritesPerOp, d.KiBPerOp)
			if j.SyncEvery > 0 {
				cell = fmt.Sprintf("%.2f writes, %.2f flushes, %.1f KiB", d.WritesPerOp, d.FlushesPerOp, d.KiBPerOp)
			}
			cells = append(cells, cell)
		}
		p("| %s |\n", strings.Join(cells, " | "))
	}
	p("\n")
}

// AddError records a problem of the whole run (benchkit.Report).
func (rep *Report) AddError(msg string) { rep.Errors = append(rep.Errors, msg) }

// Problems counts the run's errors (benchkit.Report).
func (rep *Report) Problems() int { return len(rep.Errors) }
