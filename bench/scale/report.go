package main

import (
	"fmt"
	"strings"

	"github.com/tandemhci/tandem/bench/internal/benchkit"
)

// Params are the run's settings.
type Params struct {
	Nodes     int `json:"nodes"`
	Volumes   int `json:"volumes"`
	Baseline  int `json:"baseline"`
	Parallel  int `json:"parallel"`
	Proposals int `json:"proposals"`
	// Interleaved is the proposals per cluster of the interleaved
	// comparison (0: none).
	Interleaved int    `json:"interleaved_proposals,omitempty"`
	Idle        string `json:"idle"`
	SizeBytes   int64  `json:"size_bytes"`
}

// Latency is a sample's summary, in the unit its field names.
type Latency struct {
	N    int     `json:"n"`
	P50  float64 `json:"p50"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

// Interleaved is the metadata propose latency of this cluster (All) and of
// a reference cluster with ReferenceVolumes volumes running beside it, the
// proposals alternating between the two (bench.proposeInterleaved).
type Interleaved struct {
	ReferenceVolumes int     `json:"reference_volumes"`
	Reference        Latency `json:"reference_ms"`
	All              Latency `json:"all_ms"`
}

// NodeIdle is one node's cost at rest.
type NodeIdle struct {
	Node       string  `json:"node"`
	RSSMB      float64 `json:"rss_mb"`
	CPUPct     float64 `json:"cpu_pct_of_core"`
	Threads    int     `json:"threads"`
	Goroutines int     `json:"goroutines"`
}

// IdleSample is every node at rest with Volumes volumes.
type IdleSample struct {
	Volumes int        `json:"volumes"`
	Load    string     `json:"load"`
	Nodes   []NodeIdle `json:"nodes"`
}

// Failover is the loss of the node that was primary of Volumes volumes;
// times in seconds.
type Failover struct {
	Node           string  `json:"node"`
	Volumes        int     `json:"volumes"`
	Moved          int     `json:"moved"`
	AllMovedS      float64 `json:"all_moved_after_kill_s"`
	DeclaredDeadS  float64 `json:"declared_dead_after_kill_s"`
	FencedS        float64 `json:"fenced_after_kill_s"`
	Promoted       int     `json:"promotion_events"`
	AfterDeclaredS Latency `json:"promotion_after_declared_dead_s"`
	AfterFencedS   Latency `json:"promotion_after_fenced_s"`
	// The same after declared dead, split: volumes without a VM and VMs'
	// disks (both promoted in parallel once the node is fenced).
	BareAfterDeclaredS   Latency `json:"bare_promotion_after_declared_dead_s"`
	VMDiskAfterDeclaredS Latency `json:"vm_disk_promotion_after_declared_dead_s"`
	Note                 string  `json:"note,omitempty"`
	// The VMs that ran on the node (-vms): how many, how many run
	// elsewhere at the end, and when the first and the last were restarted
	// (their vm-recovered events) after the kill, the last after the fence.
	VMs                int     `json:"vms,omitempty"`
	VMsRestarted       int     `json:"vms_restarted,omitempty"`
	VMEvents           int     `json:"vm_recovered_events,omitempty"`
	VMFirstS           float64 `json:"first_vm_restarted_after_kill_s,omitempty"`
	VMLastS            float64 `json:"last_vm_restarted_after_kill_s,omitempty"`
	VMLastAfterFencedS float64 `json:"last_vm_restarted_after_fenced_s,omitempty"`
	VMSummary          string  `json:"vms_recovered_event,omitempty"`
	VMNote             string  `json:"vm_note,omitempty"`
}

// Goal is one PASS/FAIL line.
type Goal struct {
	Name   string `json:"name"`
	Target string `json:"target"`
	Value  string `json:"value"`
	Pass   *bool  `json:"pass"` // nil: not measured
}

// Report is scale.json.
type Report struct {
	Date            string              `json:"date"`
	Host            benchkit.HostInfo   `json:"host"`
	Tandemd         benchkit.BinaryInfo `json:"tandemd"`
	Params          Params              `json:"params"`
	LoadBefore      string              `json:"load_before"`
	LoadAfter       string              `json:"load_after"`
	CreateBaselineS float64             `json:"create_baseline_s"`
	CreateRestS     float64             `json:"create_rest_s"`
	Idle            []IdleSample        `json:"idle"`
	ListMS          Latency             `json:"volume_list_ms"`
	StatusMS        Latency             `json:"cluster_status_ms"`
	ProposeBaseline Latency             `json:"propose_baseline_ms"`
	ProposeAll      Latency             `json:"propose_all_ms"`
	// ProposeInterleaved is the propose goal's measurement, when taken.
	ProposeInterleaved *Interleaved          `json:"propose_interleaved,omitempty"`
	Failover           *Failover             `json:"failover,omitempty"`
	Goals              []Goal                `json:"goals"`
	DaemonLog          []benchkit.LogFinding `json:"daemon_log,omitempty"`
	Errors             []string              `json:"errors,omitempty"`
	DurationS          float64               `json:"duration_s"`
}

// AddError records a problem of the whole run (benchkit.Report).
func (rep *Report) AddError(msg string) { rep.Errors = append(rep.Errors, msg) }

// Problems counts the run's errors (benchkit.Report); a failed goal is
// reported, not an error of the run.
func (rep *Report) Problems() int { return len(rep.Errors) }

func verdict(ok bool) *bool { return &ok }

func (rep *Report) goal(name, target, value string, pass *bool) {
	rep.Goals = append(rep.Goals, Goal{Name: name, Target: target, Value: value, Pass: pass})
}

// evaluate fills Goals from what was measured.
func (rep *Report) evaluate() {
	rep.Goals = nil
	var last *IdleSample
	for i := range rep.Idle {
		if rep.Idle[i].Volumes == rep.Params.Volumes {
			last = &rep.Idle[i]
		}
	}
	if last != nil {
		maxRSS, maxCPU := 0.0, 0.0
		for _, n := range last.Nodes {
			maxRSS, maxCPU = max(maxRSS, n.RSSMB), max(maxCPU, n.CPUPct)
		}
		rep.goal("RSS per node", fmt.Sprintf("< %d MB", goalRSSMB), fmt.Sprintf("max %.0f MB", maxRSS), verdict(maxRSS < goalRSSMB))
		rep.goal("idle CPU per node", fmt.Sprintf("< %d%% of a core", goalIdleCPUPct), fmt.Sprintf("max %.1f%%", maxCPU), verdict(maxCPU < goalIdleCPUPct))
	} else {
		rep.goal("RSS per node", fmt.Sprintf("< %d MB", goalRSSMB), "-", nil)
		rep.goal("idle CPU per node", fmt.Sprintf("< %d%% of a core", goalIdleCPUPct), "-", nil)
	}
	if total := rep.CreateBaselineS + rep.CreateRestS; rep.CreateRestS > 0 {
		per1000 := total / float64(rep.Params.Volumes) * 1000
		rep.goal("create 1000 volumes", fmt.Sprintf("< %d s", goalCreateAllS), fmt.Sprintf("%.1f s for %d (%.1f s per 1000)", total, rep.Params.Volumes, per1000), verdict(per1000 < goalCreateAllS))
	}
	if rep.ListMS.N > 0 {
		rep.goal("volume list", fmt.Sprintf("< %d ms", goalListMS), fmt.Sprintf("max %.0f ms (p50 %.0f)", rep.ListMS.Max, rep.ListMS.P50), verdict(rep.ListMS.Max < goalListMS))
		rep.goal("cluster status", fmt.Sprintf("< %d ms", goalListMS), fmt.Sprintf("max %.0f ms (p50 %.0f)", rep.StatusMS.Max, rep.StatusMS.P50), verdict(rep.StatusMS.Max < goalListMS))
	}
	switch iv := rep.ProposeInterleaved; {
	case iv != nil && iv.All.N > 0 && iv.Reference.N > 0:
		ratio := iv.All.P99 / iv.Reference.P99
		rep.goal(fmt.Sprintf("metadata propose p99 vs a cluster with %d volumes (interleaved)", iv.ReferenceVolumes), fmt.Sprintf("<= %d×", goalProposeRatio), fmt.Sprintf("%.1f ms vs %.1f ms (%.2f×, %d proposals each)", iv.All.P99, iv.Reference.P99, ratio, iv.All.N), verdict(ratio <= goalProposeRatio))
	case rep.ProposeBaseline.N > 0 && rep.ProposeAll.N > 0:
		ratio := rep.ProposeAll.P99 / rep.ProposeBaseline.P99
		rep.goal("metadata propose p99 vs the baseline (samples minutes apart)", fmt.Sprintf("<= %d×", goalProposeRatio), fmt.Sprintf("%.1f ms vs %.1f ms (%.2f×)", rep.ProposeAll.P99, rep.ProposeBaseline.P99, ratio), verdict(ratio <= goalProposeRatio))
	}
	if f := rep.Failover; f != nil && f.AfterDeclaredS.N > 0 {
		rep.goal("every volume promoted after declared dead", fmt.Sprintf("<= %d s", goalPromotionS), fmt.Sprintf("max %.1f s (p50 %.1f, p99 %.1f) for %d", f.AfterDeclaredS.Max, f.AfterDeclaredS.P50, f.AfterDeclaredS.P99, f.Promoted), verdict(f.AfterDeclaredS.Max <= goalPromotionS && f.Moved == f.Volumes))
	} else {
		rep.goal("every volume promoted after declared dead", fmt.Sprintf("<= %d s", goalPromotionS), "-", nil)
	}
	if f := rep.Failover; f != nil && f.VMs > 0 {
		rep.goal(fmt.Sprintf("%d VMs on the lost node restarted", f.VMs), "all", fmt.Sprintf("%d of %d; the last %.1f s after the kill (%.1f s after the fence)", f.VMsRestarted, f.VMs, f.VMLastS, f.VMLastAfterFencedS), verdict(f.VMsRestarted == f.VMs))
	} else {
		rep.goal("10 VMs on the lost node restarted", "all", "not measured (-vms 0 or no failover)", nil)
	}
}

// Markdown renders scale.md.
func (rep *Report) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Scale: %d volumes with 2 replicas on %d nodes\n\n", rep.Params.Volumes, rep.Params.Nodes)
	fmt.Fprintf(&b, "Run %s on %s; %s. Load average before %s, after %s. %.0f s in all.\n\n", rep.Date, rep.Host.Summary("-"), rep.Tandemd.Summary(), rep.LoadBefore, rep.LoadAfter, rep.DurationS)
	fmt.Fprintf(&b, "Volumes of %d MiB, created %d at once through the nodes' admin sockets; the metadata propose latency is %d SetConfig calls through n1 (the goal's figures: %d through each of this cluster's n1 and a reference cluster's, started beside it with %d volumes, in turn, so that both samples see the same load on the host); idle CPU is measured over %s.\n\n", rep.Params.SizeBytes>>20, rep.Params.Parallel, rep.Params.Proposals, rep.Params.Interleaved, rep.Params.Baseline, rep.Params.Idle)
	b.WriteString("## Goals\n\n")
	t := benchkit.NewTable(&b, "Goal", "Target", "Measured", "Verdict")
	for _, g := range rep.Goals {
		v := "not measured"
		if g.Pass != nil {
			v = benchkit.Verdict(*g.Pass)
		}
		t.Row(g.Name, g.Target, g.Value, v)
	}
	b.WriteString("\n## At rest\n\n")
	t = benchkit.NewTable(&b, "Volumes", "Node", "RSS MB", "Idle CPU % of a core", "Goroutines", "Threads", "Load")
	for _, s := range rep.Idle {
		for _, n := range s.Nodes {
			t.Row(fmt.Sprint(s.Volumes), n.Node, fmt.Sprintf("%.0f", n.RSSMB), fmt.Sprintf("%.1f", n.CPUPct), fmt.Sprint(n.Goroutines), fmt.Sprint(n.Threads), s.Load)
		}
	}
	if per := rep.perVolume(); per != "" {
		b.WriteString("\n" + per + "\n")
	}
	b.WriteString("\n## Latency\n\n")
	t = benchkit.NewTable(&b, "What", "n", "p50 ms", "p99 ms", "max ms")
	row := func(name string, l Latency) {
		if l.N > 0 {
			t.Row(name, fmt.Sprint(l.N), fmt.Sprintf("%.1f", l.P50), fmt.Sprintf("%.1f", l.P99), fmt.Sprintf("%.1f", l.Max))
		}
	}
	row("volume list", rep.ListMS)
	row("cluster status", rep.StatusMS)
	row(fmt.Sprintf("metadata propose, %d volumes", rep.Params.Baseline), rep.ProposeBaseline)
	row(fmt.Sprintf("metadata propose, %d volumes", rep.Params.Volumes), rep.ProposeAll)
	if iv := rep.ProposeInterleaved; iv != nil {
		row(fmt.Sprintf("metadata propose, interleaved: the reference cluster (%d volumes)", iv.ReferenceVolumes), iv.Reference)
		row(fmt.Sprintf("metadata propose, interleaved: this cluster (%d volumes)", rep.Params.Volumes), iv.All)
	}
	fmt.Fprintf(&b, "\nCreating: %d volumes in %.1f s, then %d in %.1f s.\n", rep.Params.Baseline, rep.CreateBaselineS, rep.Params.Volumes-rep.Params.Baseline, rep.CreateRestS)
	if f := rep.Failover; f != nil {
		b.WriteString("\n## Failover\n\n")
		fmt.Fprintf(&b, "%s, primary of %d volumes, killed (every process) and cut off. Declared dead (its first fence-attempt event) after %.1f s, fenced after %.1f s; %d of %d volumes had a new primary %.1f s after the kill.\n\n", f.Node, f.Volumes, f.DeclaredDeadS, f.FencedS, f.Moved, f.Volumes, f.AllMovedS)
		t = benchkit.NewTable(&b, "Promotion time", "n", "p50 s", "p99 s", "max s")
		for _, r := range []struct {
			name string
			l    Latency
		}{{"after declared dead", f.AfterDeclaredS}, {"after fenced", f.AfterFencedS},
			{"after declared dead, volumes without a VM", f.BareAfterDeclaredS}, {"after declared dead, VMs' disks", f.VMDiskAfterDeclaredS}} {
			if r.l.N == 0 {
				continue
			}
			t.Row(r.name, fmt.Sprint(r.l.N), fmt.Sprintf("%.2f", r.l.P50), fmt.Sprintf("%.2f", r.l.P99), fmt.Sprintf("%.2f", r.l.Max))
		}
		if f.Note != "" {
			b.WriteString("\n" + f.Note + "\n")
		}
		if f.VMs > 0 {
			fmt.Fprintf(&b, "\n%d VMs (TCG, %d MiB, each on its own 2-replica disk, priorities %d down to 1) ran on %s: %d run elsewhere at the end; %d vm-recovered events, the first %.1f s and the last %.1f s after the kill (%.1f s after the fence). Recovery promotes every VM's disks on the nodes it plans to restart them on, all at once after the fence, then restarts the VMs one at a time, by priority.", f.VMs, vmMemoryMiB, f.VMs, f.Node, f.VMsRestarted, f.VMEvents, f.VMFirstS, f.VMLastS, f.VMLastAfterFencedS)
			if f.VMSummary != "" {
				fmt.Fprintf(&b, " Summary event: %q.", f.VMSummary)
			}
			if f.VMNote != "" {
				fmt.Fprintf(&b, " %s.", f.VMNote)
			}
			b.WriteString("\n")
		}
	}
	if len(rep.DaemonLog) > 0 {
		b.WriteString("\n## tandemd log findings\n\n")
		benchkit.FindingsTable{Column: "Example", Example: true, Width: 160, NodeSep: ":", Join: " ", Limit: 15,
			More: func(rest int) string { return fmt.Sprintf("… | | | %d more groups in scale.json", rest) }}.WriteFindings(&b, rep.DaemonLog)
	}
	if len(rep.Errors) > 0 {
		b.WriteString("\n## Errors\n\n")
		for _, e := range rep.Errors {
			fmt.Fprintf(&b, "- %s\n", benchkit.Escape(e))
		}
	}
	return b.String()
}

// perVolume is the growth per volume between the first and last idle
// samples, on the busiest node.
func (rep *Report) perVolume() string {
	if len(rep.Idle) < 2 {
		return ""
	}
	first, last := rep.Idle[0], rep.Idle[len(rep.Idle)-1]
	dv := float64(last.Volumes - first.Volumes)
	if dv <= 0 || len(first.Nodes) != len(last.Nodes) {
		return ""
	}
	var rss, cpu, gr float64
	for i := range last.Nodes {
		rss = max(rss, last.Nodes[i].RSSMB-first.Nodes[i].RSSMB)
		cpu = max(cpu, last.Nodes[i].CPUPct-first.Nodes[i].CPUPct)
		gr = max(gr, float64(last.Nodes[i].Goroutines-first.Nodes[i].Goroutines))
	}
	return fmt.Sprintf("Per volume, busiest node, from %d to %d volumes: %.2f MB RSS, %.3f%% of a core idle, %.1f goroutines.", first.Volumes, last.Volumes, rss/dv, cpu/dv, gr/dv)
}
