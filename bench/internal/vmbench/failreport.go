package vmbench

import (
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strings"

	"github.com/tandemhci/tandem/bench/internal/benchkit"
)

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

// PhaseTakeover is the RBD takeover of the VM's disk by the target
// (volume-rbd-takeover: the old clients blocklisted, the lock broken and
// acquired), between the fence and the promotion; replicated disks have
// none.
const PhaseTakeover = "rbd_takeover"

// Phase is one milestone of a recovery as a report shows it.
type Phase struct {
	Key    string
	Label  string // in the phase table and in order problems
	Column string // head of its column in the runs table
	Source string // where its time comes from
}

// ReplicatedPhases are the phases of a VM on a replicated disk
// (bench/failover), in report order.
func ReplicatedPhases() []Phase {
	return []Phase{
		{PhaseSuspected, "node suspected", "suspected", "`node-suspected` event"},
		{PhaseDead, "(a) node declared dead", "(a) dead", "`node-dead` event"},
		{PhaseFenced, "(b) fence confirmed", "(b) fenced", "`fence-result` event \"confirmed by …\""},
		{PhasePromoted, "(c) volume promoted", "(c) promoted", "`promotion` event"},
		{PhaseLaunched, "QEMU process launched", "QEMU launched", "libvirt's \"starting up\" line in the target's QEMU log"},
		{PhaseStarted, "(d) QEMU started on the secondary", "(d) started", "`vm-recovered` event (libvirt start returned, VM record moved)"},
		{PhaseAnnounced, "gratuitous ARP on the VM network", "ARP", "first announcement of the guest's IP captured on br1"},
		{PhaseFirst, "(e) first UDP datagram after restart", "(e) first datagram", "kernel timestamp of the new boot's first datagram captured on br1"},
	}
}

// RBDPhases are the phases of a VM on an RBD disk (bench/rbd): the
// takeover of the image comes between the fence and the owner's commit.
func RBDPhases() []Phase {
	ps := ReplicatedPhases()
	out := slices.Clone(ps[:3])
	out = append(out, Phase{PhaseTakeover, "(c) RBD image taken over: old clients blocklisted, lock broken and acquired", "(c) takeover", "`volume-rbd-takeover` event"},
		Phase{PhasePromoted, "new owner recorded", "owner", "`promotion` event (after the owner's commit)"})
	for _, p := range ps[4:] {
		if p.Key == PhaseStarted {
			p.Label = "(d) QEMU started on another node"
		}
		out = append(out, p)
	}
	return out
}

func phaseLabel(phases []Phase, key string) string {
	for _, p := range phases {
		if p.Key == key {
			return p.Label
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
	// the disk ready again (its replica UpToDate).
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
	BootMs          float64 `json:"boot_ms"`   // power on -> libvirtd and tandemd answer
	OnlineMs        float64 `json:"online_ms"` // -> cluster status 3/3 online
	// UpToDateMs: -> the disk ready again (Failover's DiskState: every
	// replica UpToDate; for RBD one watcher, the lock owner's); Replicas
	// is the disk's state then.
	UpToDateMs float64 `json:"up_to_date_ms"`
	Replicas   string  `json:"replicas"`
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

// SummarizePhases computes each phase's distribution over runs.
func SummarizePhases(runs []Run, phases []Phase) []PhaseSummary {
	var out []PhaseSummary
	for _, p := range phases {
		var xs []float64
		for _, r := range runs {
			if v, ok := r.PhasesMs[p.Key]; ok {
				xs = append(xs, v)
			}
		}
		s := Dist(xs)
		s.Key, s.Label = p.Key, p.Label
		out = append(out, s)
	}
	return out
}

// Dist summarises samples; percentiles by the nearest-rank method (with 10
// samples p95 is the largest).
func Dist(xs []float64) PhaseSummary {
	if len(xs) == 0 {
		return PhaseSummary{}
	}
	s := benchkit.SortSample(xs)
	return PhaseSummary{N: len(xs), Min: s.Min, Max: s.Max, Mean: s.Mean, P50: benchkit.NearestRank(s.Sorted, 0.5), P95: benchkit.NearestRank(s.Sorted, 0.95)}
}

// Derived computes the guest boot and the split of (d) by leadership.
func Derived(runs []Run) (boot, leader, other PhaseSummary) {
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
	return Dist(bs), Dist(ls), Dist(os)
}

// PhaseOf is key's summary in ps (empty when absent).
func PhaseOf(ps []PhaseSummary, key string) PhaseSummary {
	for _, p := range ps {
		if p.Key == key {
			return p
		}
	}
	return PhaseSummary{Key: key}
}

// IntegrityOf collects the safety findings of the runs.
func IntegrityOf(runs []Run) Integrity {
	var in Integrity
	for _, r := range runs {
		switch r.I2 {
		case "ok":
			in.I2Checked++
		case "VIOLATED":
			in.I2Checked++
			in.I2Violated++
			in.Problems = append(in.Problems, fmt.Sprintf("run %d: acknowledged write lost: last acknowledged before the crash %d, the disk held %s after the restart",
				r.N, r.LastAckedBefore, U64(r.DiskAtBoot)))
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

// NaNIfEmpty is v, or NaN when s has no sample (FmtMs shows a dash).
func NaNIfEmpty(s PhaseSummary, v float64) float64 {
	if s.N == 0 {
		return math.NaN()
	}
	return v
}

// U64 renders *p, or "unknown".
func U64(p *uint64) string {
	if p == nil {
		return "unknown"
	}
	return fmt.Sprint(*p)
}

// FmtMs renders a duration in ms as seconds with 2 decimals, or ms below 1 s.
func FmtMs(v float64) string {
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

// WritePhaseTable writes each phase's distribution over the runs (sums,
// from SummarizePhases) as a table, and a blank line.
func WritePhaseTable(w io.Writer, phases []Phase, sums []PhaseSummary) {
	benchkit.NewTable(w, "Phase", "Source", "n", "min", "p50", "p95", "max", "mean")
	for _, ph := range phases {
		s := PhaseOf(sums, ph.Key)
		if s.N == 0 {
			fmt.Fprintf(w, "| %s | %s | 0 | – | – | – | – | – |\n", ph.Label, ph.Source)
			continue
		}
		fmt.Fprintf(w, "| %s | %s | %d | %s | %s | %s | %s | %s |\n", ph.Label, ph.Source, s.N, FmtMs(s.Min), FmtMs(s.P50), FmtMs(s.P95), FmtMs(s.Max), FmtMs(s.Mean))
	}
	fmt.Fprintln(w)
}

// WriteRunsTable writes one row per run: the crashed host, the target,
// every phase in seconds from the crash, I2, the rejoin (rejoinHead heads
// its column) and the load; then which fence agents confirmed.
func WriteRunsTable(w io.Writer, runs []Run, phases []Phase, rejoinHead string) {
	head := []string{"#", "crashed", "→ target", "kill"}
	for _, ph := range phases {
		head = append(head, ph.Column)
	}
	benchkit.NewTable(w, append(head, "last acked → disk at boot", "I2", rejoinHead, "load")...)
	for _, r := range runs {
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
		cells := []string{fmt.Sprint(r.N), crashed, benchkit.OrDash(r.Target), fmt.Sprintf("%.0f ms", r.KillMs)}
		for _, ph := range phases {
			cells = append(cells, fmtPhase(r, ph.Key))
		}
		fmt.Fprintf(w, "| %s | %d → %s | %s | %s | %s |\n", strings.Join(cells, " | "), r.LastAckedBefore, U64(r.DiskAtBoot), i2, rejoin, benchkit.OrDash(r.Load))
	}
	fmt.Fprintln(w)
	agents := map[string]int{}
	for _, r := range runs {
		if r.FenceAgent != "" {
			agents[r.FenceAgent]++
		}
	}
	if len(agents) > 0 {
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(agents)) {
			parts = append(parts, fmt.Sprintf("%s in %d runs", k, agents[k]))
		}
		fmt.Fprintf(w, "Fence confirmed by: %s.\n\n", strings.Join(parts, ", "))
	}
}

// WriteRunDetails writes, for every run with errors, order problems or a
// lost write, its errors, its events and its log excerpts.
func WriteRunDetails(w io.Writer, runs []Run) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	for _, r := range runs {
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
}
