package main

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"

	"github.com/tandemhci/tandem/bench/internal/benchkit"
)

// Goals of issue 5 / docs/design.md §1: hard node loss to the VM started on the
// secondary.
const (
	goalMs    = 10_000
	stretchMs = 5_000
)

// Report is failover.json; Markdown renders it as failover.md.
type Report struct {
	Date       string              `json:"date"`
	DurationS  float64             `json:"duration_s"`
	Host       benchkit.VMHostInfo `json:"host"`
	Tandemd    benchkit.BinaryInfo `json:"tandemd"`
	Tools      map[string]string   `json:"tools"`
	LoadBefore string              `json:"loadavg_before"`
	LoadAfter  string              `json:"loadavg_after"`
	Params     Params              `json:"params"`
	// Timing is the HA timing in force (`tandem ha status` timing), ms.
	Timing map[string]uint32 `json:"ha_timing_ms"`
	// LibvirtWarmup is, per node, the first and a second `virsh
	// domcapabilities` (ms) before the runs (-warm-libvirt).
	LibvirtWarmup map[string][2]float64 `json:"libvirt_warmup_ms,omitempty"`
	VM            string                `json:"vm"`
	GuestIP       string                `json:"guest_ip"`
	Runs          []Run                 `json:"runs"`
	// Phases summarises each phase over the runs that observed it.
	Phases []PhaseSummary `json:"phases"`
	// GuestBoot is (e) minus the QEMU launch: the test guest's cold boot
	// under TCG until its first datagram.
	GuestBoot PhaseSummary `json:"guest_boot"`
	// StartedLeader and StartedOther split (d) by whether the failure
	// detector started afresh on a new metadata leader after the crash
	// (Run.DetectorRestarted), as it does when the crashed host led the
	// metadata shard.
	StartedLeader PhaseSummary `json:"d_started_crashed_leader"`
	StartedOther  PhaseSummary `json:"d_started_crashed_follower"`
	Goal          Goal         `json:"goal"`
	Published     []Published  `json:"published"`
	Thesis        Thesis       `json:"thesis_method"`
	Integrity     Integrity    `json:"integrity"`
	// Capture counts what the packet capture saw over the whole run.
	Capture   CaptureStats          `json:"capture"`
	Verify    *VerifyResult         `json:"volume_verify,omitempty"`
	DaemonLog []benchkit.LogFinding `json:"daemon_log_findings"`
	Errors    []string              `json:"errors,omitempty"`
	// LogExcerpts holds setup-failure excerpts (runs keep their own).
	LogExcerpts map[string]string `json:"log_excerpts,omitempty"`
}

// Params are the knobs of the run.
type Params struct {
	Nodes       int    `json:"nodes"`
	Runs        int    `json:"runs"`
	Replicas    int    `json:"replicas"`
	MemoryMiB   uint64 `json:"memory_mib"`
	Disk        string `json:"disk"`
	Rate        int    `json:"guest_rate_pps"`
	Settle      string `json:"settle"`
	Recovery    string `json:"recovery_timeout"`
	Rejoin      string `json:"rejoin_timeout"`
	Timeout     string `json:"timeout"`
	Accelerator string `json:"accelerator"`
	Fencing     string `json:"fencing"`
}

// Phase keys, in the order of a recovery. The lettered ones are the issue's
// (a)-(e); the others are measured alongside to place them.
const (
	PhaseSuspected = "suspected"
	PhaseDead      = "a_dead"
	PhaseFenced    = "b_fenced"
	PhasePromoted  = "c_promoted"
	PhaseLaunched  = "qemu_launched"
	PhaseStarted   = "d_started"
	PhaseAnnounced = "announced"
	PhaseFirst     = "e_first_datagram"
)

// phases lists every phase with its description, in report order.
var phases = []struct{ key, label, source string }{
	{PhaseSuspected, "node suspected", "`node-suspected` event"},
	{PhaseDead, "(a) node declared dead", "`node-dead` event"},
	{PhaseFenced, "(b) fence confirmed", "`fence-result` event \"confirmed by …\""},
	{PhasePromoted, "(c) volume promoted", "`promotion` event"},
	{PhaseLaunched, "QEMU process launched", "libvirt's \"starting up\" line in the target's QEMU log"},
	{PhaseStarted, "(d) QEMU started on the secondary", "`vm-recovered` event (libvirt start returned, VM record moved)"},
	{PhaseAnnounced, "gratuitous ARP on the VM network", "first announcement of the guest's IP captured on br1"},
	{PhaseFirst, "(e) first UDP datagram after restart", "kernel timestamp of the new boot's first datagram captured on br1"},
}

func phaseLabel(key string) string {
	for _, p := range phases {
		if p.key == key {
			return p.label
		}
	}
	return key
}

// Run is one hard host loss and its recovery.
type Run struct {
	N int `json:"n"`
	// Crashed is the host that ran the VM and was killed; MetaLeader says
	// it also led the metadata shard (the failure detector and recovery
	// manager then restart on a new leader).
	Crashed    string `json:"crashed"`
	MetaLeader bool   `json:"crashed_was_metadata_leader"`
	// LastAnswerMs is when the failure detector last heard from the
	// crashed host, relative to the crash (from the node-suspected
	// event). Later than the crash means the detector started afresh on a
	// new metadata leader after it: DetectorRestarted. That happens when
	// the crashed host led the metadata shard, and also when leadership
	// moved just before the crash.
	LastAnswerMs      *float64 `json:"detector_last_answer_ms,omitempty"`
	DetectorRestarted bool     `json:"detector_restarted"`
	Target            string   `json:"target,omitempty"`
	CrashAt           string   `json:"crash_at"`
	// Load is /proc/loadavg just before the crash (the machine is shared).
	Load string `json:"loadavg"`
	// KillMs is how long the crash itself took: Cluster.Kill (SIGKILL of
	// every process in the host's namespace, reaped) plus both ports down.
	KillMs float64 `json:"kill_ms"`
	// PhasesMs is each phase's time from the crash instant (the moment
	// before the first SIGKILL); a missing key was not observed.
	PhasesMs map[string]float64 `json:"phases_ms"`
	// ReceiverFirstMs is when the user-space UDP receiver read the same
	// first datagram (a cross-check of the capture).
	ReceiverFirstMs *float64 `json:"receiver_first_datagram_ms,omitempty"`
	FenceAgent      string   `json:"fence_agent,omitempty"`
	FenceDetail     string   `json:"fence_detail,omitempty"`
	// FenceNotConfirmed counts fence-result events that did not confirm.
	FenceNotConfirmed int `json:"fence_not_confirmed,omitempty"`
	// Guest stream around the crash.
	OldBoot uint64 `json:"old_boot"`
	NewBoot uint64 `json:"new_boot,omitempty"`
	// LastBefore is the newest datagram of the old boot (its Acked is the
	// last disk write the guest saw acknowledged); LastBeforeMs its capture
	// time relative to the crash (negative: before).
	LastAckedBefore uint64  `json:"last_acked_before"`
	LastSeqBefore   uint64  `json:"last_seq_before"`
	LastBeforeMs    float64 `json:"last_datagram_before_ms"`
	// DiskAtBoot is the counter the restarted guest read from its disk
	// (its console's "disk counter" line): I2 holds when it is at least
	// LastAckedBefore. FirstAcked is the first new datagram's counter, a
	// weaker check (the guest keeps writing before its network is up).
	DiskAtBoot   *uint64    `json:"disk_counter_at_boot,omitempty"`
	FirstAcked   uint64     `json:"first_datagram_acked,omitempty"`
	FirstSeq     uint64     `json:"first_datagram_seq,omitempty"`
	I2           string     `json:"i2"` // ok, VIOLATED, unknown
	StaleAfter   int        `json:"old_boot_datagrams_after_kill"`
	OrderProblem []string   `json:"order_problems,omitempty"`
	Events       []RunEvent `json:"events"`
	// Rejoin: power on through the BMC until the crashed host is back and
	// its replica UpToDate again.
	Rejoin *Rejoin  `json:"rejoin,omitempty"`
	Errors []string `json:"errors,omitempty"`
	// LogExcerpts are kept for runs with errors.
	LogExcerpts map[string]string `json:"log_excerpts,omitempty"`
}

// RunEvent is one cluster event of the run, timed from the crash.
type RunEvent struct {
	Seq    uint64  `json:"seq"`
	AtMs   float64 `json:"at_ms"`
	By     string  `json:"by"`
	Kind   string  `json:"kind"`
	Node   string  `json:"node,omitempty"`
	VM     string  `json:"vm,omitempty"`
	Detail string  `json:"detail,omitempty"`
}

// Rejoin times the crashed host's return, from the ipmitool power-on.
type Rejoin struct {
	// PoweredOffByBMC is false when the BMC still reported the host on
	// after the recovery (the fence was confirmed some other way); the
	// benchmark then powered it off through the BMC first.
	PoweredOffByBMC bool    `json:"powered_off_by_bmc"`
	BootMs          float64 `json:"boot_ms"`       // power on -> libvirtd and tandemd answer
	OnlineMs        float64 `json:"online_ms"`     // -> cluster status 3/3 online
	UpToDateMs      float64 `json:"up_to_date_ms"` // -> every replica UpToDate
	Replicas        string  `json:"replicas"`
}

// PhaseSummary is one phase's distribution over the runs, in ms.
type PhaseSummary struct {
	Key   string  `json:"key"`
	Label string  `json:"label"`
	N     int     `json:"n"`
	Min   float64 `json:"min_ms"`
	P50   float64 `json:"p50_ms"`
	P95   float64 `json:"p95_ms"`
	Max   float64 `json:"max_ms"`
	Mean  float64 `json:"mean_ms"`
}

// Goal is the verdict on (d).
type Goal struct {
	Text           string  `json:"text"`
	N              int     `json:"n"`
	Runs           int     `json:"runs"`
	P50Ms          float64 `json:"p50_ms"`
	Verdict        string  `json:"verdict"`         // PASS, FAIL, NOT MEASURED
	StretchVerdict string  `json:"stretch_verdict"` // < 5 s
}

// Published is a figure from the literature the report compares with.
type Published struct {
	System string  `json:"system"`
	Figure string  `json:"figure"`
	LowS   float64 `json:"low_s"`
	HighS  float64 `json:"high_s"`
	Source string  `json:"source"`
}

// Thesis is the method this benchmark reproduces.
type Thesis struct {
	Source string `json:"source"`
	Method string `json:"method"`
}

// Integrity collects the safety checks over all runs.
type Integrity struct {
	I2Checked   int      `json:"i2_checked"`
	I2Violated  int      `json:"i2_violated"`
	OrderErrors int      `json:"order_errors"`
	Stale       int      `json:"old_boot_datagrams_after_kill"`
	Unrecovered int      `json:"runs_not_recovered"`
	Problems    []string `json:"problems,omitempty"`
}

// CaptureStats counts frames of the capture on br1.
type CaptureStats struct {
	Datagrams     int    `json:"datagrams"`
	Announcements int    `json:"announcements"`
	Malformed     int    `json:"malformed"`
	KernelDropped uint64 `json:"kernel_dropped"`
	NoKernelTS    int    `json:"without_kernel_timestamp"`
	ReceiverGot   int    `json:"receiver_datagrams"`
}

// VerifyResult is `tandem volume verify` at the end.
type VerifyResult struct {
	CheckedBytes int64 `json:"checked_bytes"`
	Mismatches   int   `json:"mismatches"`
}

func published() []Published {
	return []Published{
		{"Proxmox VE HA", "≈ 120 s", 120, 120, "issue 5; docs/design.md §1: watchdog self-fence 60 s, HA lock 120 s"},
		{"vSphere HA", "15–35 s", 15, 35, "issue 5; docs/design.md §1: host declared dead at 15–18 s, restarts after"},
		{"VMmanager Cloud", "45–90 s", 45, 90, "'How to deploy a fault tolerant cluster with continuous or high availability' (HowtoForge article on VMmanager Cloud): \"45-90 seconds to distribute and restore operation of all VMs from the failed node\""},
	}
}

func thesisMethod() Thesis {
	return Thesis{
		Source: "Espen Braastad, 'Management of high availability services using virtualization', master's thesis on Heartbeat + Xen, Oslo University College, 2006; " +
			"§5.4.1 'Measuring the outage caused by graceful failures'",
		Method: "A constant-rate UDP stream (pktgen, 10/100/1000 pps, sequence number and send time in the payload) is recorded with tcpdump " +
			"on the receiving side; the node running the VM is failed 15 s into a 45 s stream, the capture is stopped and the lost packets and " +
			"inter-arrival gaps are read from it, and the cluster is repaired before the next of 50 iterations. The thesis measured graceful " +
			"failures only and lists \"the outage caused by uncontrolled failures ... an instant power failure\" as future work (§3.7.2); its " +
			"Heartbeat configuration (appendix A.3.1) declares a node dead after deadtime 30 s (keepalive 1 s), without STONITH.",
	}
}

// summarizePhases computes each phase's distribution over runs.
func summarizePhases(runs []Run) []PhaseSummary {
	var out []PhaseSummary
	for _, p := range phases {
		var xs []float64
		for _, r := range runs {
			if v, ok := r.PhasesMs[p.key]; ok {
				xs = append(xs, v)
			}
		}
		s := dist(xs)
		s.Key, s.Label = p.key, p.label
		out = append(out, s)
	}
	return out
}

// dist summarises samples; percentiles by the nearest-rank method (with 10
// samples p95 is the largest).
func dist(xs []float64) PhaseSummary {
	if len(xs) == 0 {
		return PhaseSummary{}
	}
	s := benchkit.SortSample(xs)
	return PhaseSummary{N: len(xs), Min: s.Min, Max: s.Max, Mean: s.Mean, P50: benchkit.NearestRank(s.Sorted, 0.5), P95: benchkit.NearestRank(s.Sorted, 0.95)}
}

// derived computes the guest boot and the split of (d) by leadership.
func derived(runs []Run) (boot, leader, other PhaseSummary) {
	var bs, ls, os []float64
	for _, r := range runs {
		if e, ok := r.PhasesMs[PhaseFirst]; ok {
			if l, ok := r.PhasesMs[PhaseLaunched]; ok {
				bs = append(bs, e-l)
			}
		}
		if d, ok := r.PhasesMs[PhaseStarted]; ok {
			if r.DetectorRestarted {
				ls = append(ls, d)
			} else {
				os = append(os, d)
			}
		}
	}
	return dist(bs), dist(ls), dist(os)
}

func phaseOf(ps []PhaseSummary, key string) PhaseSummary {
	for _, p := range ps {
		if p.Key == key {
			return p
		}
	}
	return PhaseSummary{Key: key}
}

// evaluateGoal judges (d): every run must have recovered, and the p50 over
// them must be under 10 s (stretch 5 s).
func evaluateGoal(ps []PhaseSummary, runs int) Goal {
	d := phaseOf(ps, PhaseStarted)
	g := Goal{Text: "hard host loss → QEMU started on the secondary, p50 < 10 s (stretch < 5 s)", N: d.N, Runs: runs, P50Ms: d.P50,
		Verdict: "NOT MEASURED", StretchVerdict: "NOT MEASURED"}
	if d.N == 0 {
		return g
	}
	g.Verdict, g.StretchVerdict = "FAIL", "FAIL"
	// A run that never recovered counts as a failure of the goal whatever
	// the p50 of the others.
	all := d.N == runs
	if all && d.P50 < goalMs {
		g.Verdict = "PASS"
	}
	if all && d.P50 < stretchMs {
		g.StretchVerdict = "PASS"
	}
	return g
}

// integrity collects the safety findings of the runs.
func integrity(runs []Run) Integrity {
	var in Integrity
	for _, r := range runs {
		switch r.I2 {
		case "ok":
			in.I2Checked++
		case "VIOLATED":
			in.I2Checked++
			in.I2Violated++
			in.Problems = append(in.Problems, fmt.Sprintf("run %d: acknowledged write lost: last acknowledged before the crash %d, the disk held %s after the restart",
				r.N, r.LastAckedBefore, u64(r.DiskAtBoot)))
		}
		if len(r.OrderProblem) > 0 {
			in.OrderErrors += len(r.OrderProblem)
			for _, p := range r.OrderProblem {
				in.Problems = append(in.Problems, fmt.Sprintf("run %d: %s", r.N, p))
			}
		}
		if r.StaleAfter > 0 {
			in.Stale += r.StaleAfter
			in.Problems = append(in.Problems, fmt.Sprintf("run %d: %d datagrams of the old boot captured after the kill completed", r.N, r.StaleAfter))
		}
		if _, ok := r.PhasesMs[PhaseFirst]; !ok {
			in.Unrecovered++
			in.Problems = append(in.Problems, fmt.Sprintf("run %d: the guest did not send again after the loss of %s", r.N, r.Crashed))
		}
	}
	return in
}

func nanIfEmpty(s PhaseSummary, v float64) float64 {
	if s.N == 0 {
		return math.NaN()
	}
	return v
}

func u64(p *uint64) string {
	if p == nil {
		return "unknown"
	}
	return fmt.Sprint(*p)
}

// fmtMs renders a duration in ms as seconds with 2 decimals, or ms below 1 s.
func fmtMs(v float64) string {
	if math.IsNaN(v) {
		return "–"
	}
	if math.Abs(v) < 1000 {
		return fmt.Sprintf("%.0f ms", v)
	}
	return fmt.Sprintf("%.2f s", v/1000)
}

func fmtPhase(r Run, key string) string {
	v, ok := r.PhasesMs[key]
	if !ok {
		return "–"
	}
	return fmt.Sprintf("%.2f", v/1000)
}

// passFail bolds a verdict that is PASS or FAIL (not NOT MEASURED).
func passFail(v string) string {
	switch v {
	case "PASS", "FAIL":
		return benchkit.Verdict(v == "PASS")
	}
	return v
}

// Markdown renders the report.
func (rep *Report) Markdown() string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("# Tandem HA failover benchmark (hard host loss)\n\n")
	p("Run %s (%.0f s). Host: %s; load average %s before, %s after.  \n", rep.Date, rep.DurationS, rep.Host.Summary("-"), benchkit.OrDash(rep.LoadBefore), benchkit.OrDash(rep.LoadAfter))
	p("tandemd: %s.  \n", rep.Tandemd.Summary())
	var tools []string
	for _, k := range slices.Sorted(maps.Keys(rep.Tools)) {
		tools = append(tools, fmt.Sprintf("%s: %s", k, rep.Tools[k]))
	}
	p("Tools: %s.  \n", strings.Join(tools, "; "))
	pr := rep.Params
	p("Setup: %d-node cluster in network namespaces (internal/testcluster), one libvirtd and one tandemd per host, one ipmi_sim BMC per host "+
		"(power-on restarts libvirtd and tandemd); fencing: %s. One guest `%s` (%d MiB, 1 vCPU, QEMU %s, kernel + busybox initramfs with the "+
		"guest agent), a %s disk with %d replicas, sending %d datagrams/s to the switch and rewriting a counter on its disk with O_DIRECT|O_SYNC. "+
		"%d runs; %s settle before each crash.\n\n", pr.Nodes, pr.Fencing, rep.VM, pr.MemoryMiB, pr.Accelerator, pr.Disk, pr.Replicas, pr.Rate, pr.Runs, pr.Settle)
	if len(rep.Timing) > 0 {
		var ts []string
		for _, k := range []string{"heartbeat_interval_ms", "suspect_timeout_ms", "dead_timeout_ms", "fence_timeout_ms", "self_fence_lease_ms"} {
			if v, ok := rep.Timing[k]; ok {
				ts = append(ts, fmt.Sprintf("%s %d ms", strings.TrimSuffix(k, "_ms"), v))
			}
		}
		p("HA timing in force (`tandem ha status`): %s.\n\n", strings.Join(ts, ", "))
	}
	if len(rep.LibvirtWarmup) > 0 {
		var ws []string
		for _, n := range slices.Sorted(maps.Keys(rep.LibvirtWarmup)) {
			w := rep.LibvirtWarmup[n]
			ws = append(ws, fmt.Sprintf("%s %s then %s", n, fmtMs(w[0]), fmtMs(w[1])))
		}
		p("Before the runs every libvirtd probed QEMU's capabilities once (`virsh domcapabilities`: %s), as a host that has run VMs before has them cached; "+
			"otherwise the first restart on each host pays for the probe inside (d).\n\n", strings.Join(ws, ", "))
	} else {
		p("libvirt was not warmed up (-warm-libvirt=false): the first restart on each host includes libvirt's probe of QEMU's capabilities.\n\n")
	}

	p("## Result against the goal\n\n")
	g := rep.Goal
	d := phaseOf(rep.Phases, PhaseStarted)
	e := phaseOf(rep.Phases, PhaseFirst)
	benchkit.NewTable(&b, "Measure", "Result", "Goal", "Verdict")
	p("| (d) hard host loss → QEMU started on the secondary (%d of %d runs) | p50 %s, p95 %s, max %s | p50 < 10 s | %s |\n",
		g.N, g.Runs, fmtMs(d.P50), fmtMs(d.P95), fmtMs(d.Max), passFail(g.Verdict))
	p("| same | | p50 < 5 s (stretch) | %s |\n", passFail(g.StretchVerdict))
	p("| (e) hard host loss → first UDP datagram of the restarted guest | p50 %s, p95 %s, max %s | (information: includes the guest's cold boot under TCG) | |\n",
		fmtMs(e.P50), fmtMs(e.P95), fmtMs(e.Max))
	if gb := rep.GuestBoot; gb.N > 0 {
		p("| of which the guest's cold boot (QEMU launched → first datagram, %d runs) | p50 %s, max %s | | |\n", gb.N, fmtMs(gb.P50), fmtMs(gb.Max))
	}
	if l, o := rep.StartedLeader, rep.StartedOther; l.N > 0 || o.N > 0 {
		p("| (d) split: failure detector restarted on a new metadata leader after the crash (%d runs) / already running (%d runs) | p50 %s / %s, max %s / %s | | |\n",
			l.N, o.N, fmtMs(nanIfEmpty(l, l.P50)), fmtMs(nanIfEmpty(o, o.P50)), fmtMs(nanIfEmpty(l, l.Max)), fmtMs(nanIfEmpty(o, o.Max)))
	}
	p("\n")
	if g.N < g.Runs {
		p("**%d of %d runs did not reach (d); the goal counts them as failures.**\n\n", g.Runs-g.N, g.Runs)
	}

	p("## Integrity\n\n")
	in := rep.Integrity
	if len(in.Problems) == 0 {
		p("No problem found: in every run the restarted guest's disk held every write it had seen acknowledged before the crash (I2, %d of %d runs checked "+
			"against the counter the guest read from its disk at boot), the events came in the order node-dead → fence confirmed → promotion → "+
			"vm-recovered with QEMU launched only after the fence was confirmed, and no datagram of the old boot arrived after the kill.\n\n", in.I2Checked, len(rep.Runs))
	} else {
		p("**PROBLEMS FOUND (%d):**\n\n", len(in.Problems))
		for _, pr := range in.Problems {
			p("- **%s**\n", pr)
		}
		p("\nI2 checked in %d runs, violated in %d; %d event-order problems; %d old-boot datagrams after the kill; %d runs not recovered. "+
			"Log excerpts are with the runs in failover.json and below.\n\n", in.I2Checked, in.I2Violated, in.OrderErrors, in.Stale, in.Unrecovered)
	}

	p("## Phases\n\n")
	p("Time from the crash instant (just before the first SIGKILL) to each milestone, over the runs that reached it. Percentiles are nearest-rank: with 10 runs p95 is the largest value.\n\n")
	benchkit.NewTable(&b, "Phase", "Source", "n", "min", "p50", "p95", "max", "mean")
	for _, ph := range phases {
		s := phaseOf(rep.Phases, ph.key)
		if s.N == 0 {
			p("| %s | %s | 0 | – | – | – | – | – |\n", ph.label, ph.source)
			continue
		}
		p("| %s | %s | %d | %s | %s | %s | %s | %s |\n", ph.label, ph.source, s.N, fmtMs(s.Min), fmtMs(s.P50), fmtMs(s.P95), fmtMs(s.Max), fmtMs(s.Mean))
	}
	p("\n")

	p("## Compared with published figures\n\n")
	benchkit.NewTable(&b, "System", "Node loss → VM restarted", "Source")
	if d.N > 0 {
		p("| **Tandem** (this run, (d) QEMU started) | p50 %s, max %s | this report |\n", fmtMs(d.P50), fmtMs(d.Max))
	}
	if e.N > 0 {
		p("| **Tandem** (this run, (e) guest answering again) | p50 %s, max %s | this report |\n", fmtMs(e.P50), fmtMs(e.Max))
	}
	for _, pb := range rep.Published {
		ratio := ""
		if d.N > 0 && d.P50 > 0 {
			ratio = fmt.Sprintf(" (%.0f×–%.0f× Tandem's (d) p50)", pb.LowS*1000/d.P50, pb.HighS*1000/d.P50)
			if pb.LowS == pb.HighS {
				ratio = fmt.Sprintf(" (%.0f× Tandem's (d) p50)", pb.LowS*1000/d.P50)
			}
		}
		p("| %s | %s%s | %s |\n", pb.System, pb.Figure, ratio, pb.Source)
	}
	p("\nThe published figures are vendors' and users' numbers on real hardware, restarting ordinary guests; they are not measured here. " +
		"Tandem's (d) is the platform's part and comparable to them; (e) adds the test guest's cold boot under TCG emulation (no KVM on this machine), " +
		"which a real guest's OS boot would replace.\n\n")

	p("## Runs\n\n")
	p("Seconds from the crash instant. *leader*: the crashed host led the metadata shard just before the crash, so the failure detector and the recovery manager restarted on a new leader; *new leader*: it did not, but the detector still started afresh after the crash (leadership moved at that moment). Detection then counts from the new leader's start instead of the last answer. " +
		"I2: counter the restarted guest read from its disk ≥ last counter acknowledged before the crash. load: load averages (1, 5, 15 min) just before the crash.\n\n")
	benchkit.NewTable(&b, "#", "crashed", "→ target", "kill", "suspected", "(a) dead", "(b) fenced", "(c) promoted", "QEMU launched", "(d) started", "ARP", "(e) first datagram", "last acked → disk at boot", "I2", "rejoin: boot / 3/3 online / UpToDate", "load")
	for _, r := range rep.Runs {
		crashed := r.Crashed
		switch {
		case r.MetaLeader:
			crashed += " (leader)"
		case r.DetectorRestarted:
			crashed += " (new leader)"
		}
		rejoin := "–"
		if r.Rejoin != nil {
			rejoin = fmt.Sprintf("%.1f / %.1f / %.1f s", r.Rejoin.BootMs/1000, r.Rejoin.OnlineMs/1000, r.Rejoin.UpToDateMs/1000)
		}
		i2 := r.I2
		if i2 == "VIOLATED" {
			i2 = "**VIOLATED**"
		}
		p("| %d | %s | %s | %.0f ms | %s | %s | %s | %s | %s | %s | %s | %s | %d → %s | %s | %s | %s |\n", r.N, crashed, benchkit.OrDash(r.Target), r.KillMs,
			fmtPhase(r, PhaseSuspected), fmtPhase(r, PhaseDead), fmtPhase(r, PhaseFenced), fmtPhase(r, PhasePromoted), fmtPhase(r, PhaseLaunched),
			fmtPhase(r, PhaseStarted), fmtPhase(r, PhaseAnnounced), fmtPhase(r, PhaseFirst), r.LastAckedBefore, u64(r.DiskAtBoot), i2, rejoin, benchkit.OrDash(r.Load))
	}
	p("\n")
	agents := map[string]int{}
	for _, r := range rep.Runs {
		if r.FenceAgent != "" {
			agents[r.FenceAgent]++
		}
	}
	if len(agents) > 0 {
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(agents)) {
			parts = append(parts, fmt.Sprintf("%s in %d runs", k, agents[k]))
		}
		p("Fence confirmed by: %s.\n\n", strings.Join(parts, ", "))
	}

	p("## Method\n\n")
	p("Each run finds the host running the guest (`tandem vm show`), checks that the cluster is healthy (3/3 online), that the disk's three replicas are "+
		"UpToDate with the primary on that host and that the guest is writing, notes the newest event, and after %s records the crash instant and crashes "+
		"the host: `Cluster.Kill` SIGKILLs every process in its namespace (tandemd, libvirtd, QEMU) and reaps them, then its backend and VM-network "+
		"switch ports go down (`Isolate`, `IsolateVM`). Nothing else is done until the guest is back: the recovery is the cluster's own "+
		"(failure detector on the metadata leader → fencing through the host's BMC with IPMI lanplus → promotion of an UpToDate replica → start of the VM).\n\n", pr.Settle)
	p("Timestamps: (a)–(d) come from the cluster's event log (`tandem events --output json`), stamped by the proposing tandemd (when it proposed the "+
		"entry, before the commit) with the wall clock of this same machine; \"QEMU launched\" is libvirt's \"starting up\" line in the target host's "+
		"QEMU log (ms resolution). (e) follows the method of the thesis. %s Here the guest agent sends the stream (%d datagrams/s, each with its boot number, a sequence number and the last disk "+
		"counter it saw acknowledged) to the switch's address on the VM network, and an AF_PACKET capture on the switch's bridge br1 "+
		"(netannounce.Capture, frames decoded with gopacket) timestamps every datagram with the kernel's receive time (SO_TIMESTAMPNS), as tcpdump "+
		"does. (e) is the first datagram whose boot number is higher than before the crash. The same capture times the gratuitous ARP the target "+
		"sends for the guest's address.\n\n", rep.Thesis.Method, pr.Rate)
	p("After the guest is back, the crashed host is powered on through its BMC (`ipmitool -I lanplus chassis power on`, from another host's namespace); " +
		"the run ends when it answers, the cluster shows 3/3 online and the volume's three replicas are UpToDate again. The next run crashes the " +
		"VM's new host, so the crashes alternate between hosts.\n\n")
	p("Source of the method: %s.\n\n", rep.Thesis.Source)

	if rep.Verify != nil {
		p("`tandem volume verify` at the end: %d bytes compared on every replica, %d mismatching ranges.\n\n", rep.Verify.CheckedBytes, rep.Verify.Mismatches)
	}
	c := rep.Capture
	p("Capture: %d guest datagrams and %d announcements captured, %d malformed, %d dropped by the kernel, %d without a kernel timestamp; "+
		"the user-space receiver read %d datagrams.\n\n", c.Datagrams, c.Announcements, c.Malformed, c.KernelDropped, c.NoKernelTS, c.ReceiverGot)

	if len(rep.Errors) > 0 {
		p("## Errors\n\n")
		for _, e := range rep.Errors {
			p("- %s\n", e)
		}
		p("\n")
	}
	for _, r := range rep.Runs {
		if len(r.Errors) == 0 && len(r.OrderProblem) == 0 && r.I2 != "VIOLATED" {
			continue
		}
		p("### Run %d: %s crashed\n\n", r.N, r.Crashed)
		for _, e := range r.Errors {
			p("- %s\n", e)
		}
		p("\nEvents (ms from the crash):\n\n```\n")
		for _, ev := range r.Events {
			p("%8.0f %4d %-20s %-4s %-6s %s (by %s)\n", ev.AtMs, ev.Seq, ev.Kind, ev.Node, ev.VM, ev.Detail, ev.By)
		}
		p("```\n\n")
		for _, k := range slices.Sorted(maps.Keys(r.LogExcerpts)) {
			if !strings.Contains(k, "tandemd") && !strings.Contains(k, "console") && !strings.Contains(k, "qemu") {
				continue
			}
			p("<details><summary>%s</summary>\n\n```\n%s\n```\n</details>\n\n", k, r.LogExcerpts[k])
		}
	}
	for _, k := range slices.Sorted(maps.Keys(rep.LogExcerpts)) {
		p("<details><summary>%s</summary>\n\n```\n%s\n```\n</details>\n\n", k, rep.LogExcerpts[k])
	}

	if len(rep.DaemonLog) > 0 {
		p("## tandemd warnings and errors over the run\n\n")
		benchkit.FindingsTable{Column: "Pattern", Width: 150, NodeSep: " ", Join: ", ", Limit: 15,
			More: func(rest int) string { return fmt.Sprintf("… | %d more patterns in failover.json | |", rest) }}.WriteFindings(&b, rep.DaemonLog)
		p("\n")
	}
	return b.String()
}

// AddError records a problem of the whole run (benchkit.Report).
func (rep *Report) AddError(msg string) { rep.Errors = append(rep.Errors, msg) }

// Problems counts the run's errors and integrity problems (benchkit.Report).
func (rep *Report) Problems() int { return len(rep.Errors) + len(rep.Integrity.Problems) }
