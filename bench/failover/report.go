package main

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/tandemhci/tandem/bench/internal/benchkit"
	"github.com/tandemhci/tandem/bench/internal/vmbench"
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
	Runs          []vmbench.Run         `json:"runs"`
	// Phases summarises each phase over the runs that observed it.
	Phases []vmbench.PhaseSummary `json:"phases"`
	// GuestBoot is (e) minus the QEMU launch: the test guest's cold boot
	// under TCG until its first datagram.
	GuestBoot vmbench.PhaseSummary `json:"guest_boot"`
	// StartedLeader and StartedOther split (d) by whether the failure
	// detector started afresh on a new metadata leader after the crash
	// (Run.DetectorRestarted), as it does when the crashed host led the
	// metadata shard.
	StartedLeader vmbench.PhaseSummary `json:"d_started_crashed_leader"`
	StartedOther  vmbench.PhaseSummary `json:"d_started_crashed_follower"`
	Goal          Goal                 `json:"goal"`
	Published     []Published          `json:"published"`
	Thesis        Thesis               `json:"thesis_method"`
	Integrity     vmbench.Integrity    `json:"integrity"`
	// Capture counts what the packet capture saw over the whole run.
	Capture   vmbench.CaptureStats  `json:"capture"`
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

// evaluateGoal judges (d): every run must have recovered, and the p50 over
// them must be under 10 s (stretch 5 s).
func evaluateGoal(ps []vmbench.PhaseSummary, runs int) Goal {
	d := vmbench.PhaseOf(ps, vmbench.PhaseStarted)
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
			ws = append(ws, fmt.Sprintf("%s %s then %s", n, vmbench.FmtMs(w[0]), vmbench.FmtMs(w[1])))
		}
		p("Before the runs every libvirtd probed QEMU's capabilities once (`virsh domcapabilities`: %s), as a host that has run VMs before has them cached; "+
			"otherwise the first restart on each host pays for the probe inside (d).\n\n", strings.Join(ws, ", "))
	} else {
		p("libvirt was not warmed up (-warm-libvirt=false): the first restart on each host includes libvirt's probe of QEMU's capabilities.\n\n")
	}

	p("## Result against the goal\n\n")
	g := rep.Goal
	d := vmbench.PhaseOf(rep.Phases, vmbench.PhaseStarted)
	e := vmbench.PhaseOf(rep.Phases, vmbench.PhaseFirst)
	benchkit.NewTable(&b, "Measure", "Result", "Goal", "Verdict")
	p("| (d) hard host loss → QEMU started on the secondary (%d of %d runs) | p50 %s, p95 %s, max %s | p50 < 10 s | %s |\n",
		g.N, g.Runs, vmbench.FmtMs(d.P50), vmbench.FmtMs(d.P95), vmbench.FmtMs(d.Max), passFail(g.Verdict))
	p("| same | | p50 < 5 s (stretch) | %s |\n", passFail(g.StretchVerdict))
	p("| (e) hard host loss → first UDP datagram of the restarted guest | p50 %s, p95 %s, max %s | (information: includes the guest's cold boot under TCG) | |\n",
		vmbench.FmtMs(e.P50), vmbench.FmtMs(e.P95), vmbench.FmtMs(e.Max))
	if gb := rep.GuestBoot; gb.N > 0 {
		p("| of which the guest's cold boot (QEMU launched → first datagram, %d runs) | p50 %s, max %s | | |\n", gb.N, vmbench.FmtMs(gb.P50), vmbench.FmtMs(gb.Max))
	}
	if l, o := rep.StartedLeader, rep.StartedOther; l.N > 0 || o.N > 0 {
		p("| (d) split: failure detector restarted on a new metadata leader after the crash (%d runs) / already running (%d runs) | p50 %s / %s, max %s / %s | | |\n",
			l.N, o.N, vmbench.FmtMs(vmbench.NaNIfEmpty(l, l.P50)), vmbench.FmtMs(vmbench.NaNIfEmpty(o, o.P50)), vmbench.FmtMs(vmbench.NaNIfEmpty(l, l.Max)), vmbench.FmtMs(vmbench.NaNIfEmpty(o, o.Max)))
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
	vmbench.WritePhaseTable(&b, vmbench.ReplicatedPhases(), rep.Phases)

	p("## Compared with published figures\n\n")
	benchkit.NewTable(&b, "System", "Node loss → VM restarted", "Source")
	if d.N > 0 {
		p("| **Tandem** (this run, (d) QEMU started) | p50 %s, max %s | this report |\n", vmbench.FmtMs(d.P50), vmbench.FmtMs(d.Max))
	}
	if e.N > 0 {
		p("| **Tandem** (this run, (e) guest answering again) | p50 %s, max %s | this report |\n", vmbench.FmtMs(e.P50), vmbench.FmtMs(e.Max))
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
	vmbench.WriteRunsTable(&b, rep.Runs, vmbench.ReplicatedPhases(), "rejoin: boot / 3/3 online / UpToDate")

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
	vmbench.WriteRunDetails(&b, rep.Runs)
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
