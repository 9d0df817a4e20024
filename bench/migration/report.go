package main

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"

	"github.com/tandemhci/tandem/bench/internal/benchkit"
)

// goalOutageMs is the goal for the p50 outage of a planned
// migration.
const goalOutageMs = 100

// Report is everything migration.json holds.
type Report struct {
	Date       string              `json:"date"`
	DurationS  float64             `json:"duration_s"`
	Host       benchkit.VMHostInfo `json:"host"`
	LoadBefore string              `json:"loadavg_before"`
	LoadAfter  string              `json:"loadavg_after"`
	Tandemd    benchkit.BinaryInfo `json:"tandemd"`
	// LibvirtWarmup is how long each libvirtd's first QEMU probe took
	// (vmbench.WarmLibvirt), paid before the measurements.
	LibvirtWarmup map[string]float64    `json:"libvirt_warmup_s,omitempty"`
	Tools         map[string]string     `json:"tools"`
	Params        Params                `json:"parameters"`
	Goal          Goal                  `json:"goal"`
	Thesis        Thesis                `json:"thesis_reference"`
	Runs          []RateRun             `json:"runs"`
	DaemonLog     []benchkit.LogFinding `json:"daemon_log_findings"`
	Errors        []string              `json:"errors,omitempty"`
	LogExcerpts   map[string]string     `json:"log_excerpts,omitempty"`
}

// Params are the knobs of the run.
type Params struct {
	Nodes       int    `json:"nodes"`
	Replicas    int    `json:"disk_replicas"`
	MemoryMiB   uint64 `json:"guest_memory_mib"`
	Disk        string `json:"guest_disk"`
	Migrations  int    `json:"migrations_per_rate"`
	Rates       []int  `json:"rates_per_s"`
	DowntimeMs  uint   `json:"max_downtime_ms"`
	Settle      string `json:"settle"`
	Quiet       string `json:"reference_window"`
	Timeout     string `json:"timeout"`
	Accelerator string `json:"accelerator"`
	// Transport is how libvirt and QEMU carried the migrations.
	Transport string `json:"migration_transport,omitempty"`
	// Control adds a series without a guest disk at the highest rate.
	Control           bool `json:"control_series"`
	ControlMigrations int  `json:"control_migrations"`
}

// RateRun is one VM sending at one rate and its migrations.
type RateRun struct {
	Rate int `json:"rate_per_s"`
	// Diskless marks the control series: a guest without a disk.
	Diskless     bool          `json:"diskless,omitempty"`
	VM           string        `json:"vm"`
	GuestIP      string        `json:"guest_ip"`
	Receiver     string        `json:"receiver"`
	Cmdline      string        `json:"cmdline"`
	Created      bool          `json:"created"`
	Stopped      bool          `json:"stopped_at_end"`
	BootS        float64       `json:"boot_s"`
	Boot         uint64        `json:"boot"`
	Disk         string        `json:"disk"`
	ReplicaNodes []string      `json:"replica_nodes"`
	Witness      string        `json:"witness,omitempty"`
	Reference    *WindowResult `json:"reference,omitempty"`
	// ReferenceRate is the arrival rate over the reference window: the rate
	// the guest really achieved (TCG on a loaded host may fall short).
	ReferenceRate float64       `json:"reference_rate_per_s,omitempty"`
	Migrations    []Migration   `json:"migrations"`
	Summary       Summary       `json:"summary"`
	Stream        Continuity    `json:"stream"`
	Verify        *VerifyResult `json:"verify,omitempty"`
	// Restarts lists the guest's new boots during the series: after a
	// crash (it rebooted by itself) or a hang (the benchmark restarted it).
	Restarts    []Restart         `json:"restarts,omitempty"`
	Errors      []string          `json:"errors,omitempty"`
	LogExcerpts map[string]string `json:"log_excerpts,omitempty"`
}

// Migration is one `tandem vm migrate` and what the stream showed.
type Migration struct {
	N       int    `json:"n"`
	From    string `json:"from"`
	To      string `json:"to"`
	Started string `json:"started"`
	// WallMs is the CLI call from start to exit: preparing (the dual-
	// primary window), libvirt's migration, the handover, the record.
	WallMs float64 `json:"wall_ms"`
	// TotalMs and DowntimeMs are libvirt's, from the JSON result; a zero
	// downtime means libvirt's completed-job statistics were unavailable.
	TotalMs    uint32 `json:"total_ms"`
	DowntimeMs uint32 `json:"downtime_ms"`
	Message    string `json:"message,omitempty"`
	// OutageMs is the longest gap of the stream within the call, and
	// OutageAtMs when (after the call started) it began.
	OutageMs      float64           `json:"outage_ms"`
	OutageAtMs    float64           `json:"outage_at_ms"`
	Lost          uint64            `json:"lost"`
	Window        WindowResult      `json:"window"`
	AckedAdvanced bool              `json:"acked_advanced"`
	Rebooted      bool              `json:"rebooted"`
	ReadyWarning  string            `json:"ready_warning,omitempty"`
	PrimaryAfter  string            `json:"primary_after,omitempty"`
	EpochAfter    uint64            `json:"epoch_after,omitempty"`
	ReplicasAfter string            `json:"replicas_after,omitempty"`
	NodeAfter     string            `json:"vm_node_after,omitempty"`
	StateAfter    string            `json:"vm_state_after,omitempty"`
	Error         string            `json:"error,omitempty"`
	Diagnosis     *Diagnosis        `json:"diagnosis,omitempty"`
	LogExcerpts   map[string]string `json:"log_excerpts,omitempty"`
}

// Restart is a new boot of the guest during a series.
type Restart struct {
	After int    `json:"after_migration"`
	How   string `json:"how"`
	Boot  uint64 `json:"boot"`
}

// guestHung is true when the guest stayed silent after the migration,
// even after datagrams were sent to it.
func (m *Migration) guestHung() bool {
	return m.Diagnosis != nil && m.Diagnosis.Poked && !m.Diagnosis.ResumedAfterPoke
}

// Label names the series in the report: "1000/s", or "1000/s, no disk
// (control)".
func (r RateRun) Label() string {
	if r.Diskless {
		return fmt.Sprintf("%d/s, no disk (control)", r.Rate)
	}
	return fmt.Sprintf("%d/s", r.Rate)
}

func (m *Migration) addError(msg string) {
	if m.Error != "" {
		m.Error += "; "
	}
	m.Error += msg
}

// WindowResult is a Window with its durations in milliseconds.
type WindowResult struct {
	Window
	LongestGapMs float64 `json:"longest_gap_ms"`
	GuestClockMs float64 `json:"guest_clock_over_gap_ms"`
	AckStallMs   float64 `json:"ack_stall_ms"`
	IntervalMs   float64 `json:"send_interval_ms"`
}

// Summary holds a rate's distributions over its successful migrations.
type Summary struct {
	Migrations int `json:"migrations"`
	Succeeded  int `json:"succeeded"`
	Failed     int `json:"failed"`
	// GuestCrashed counts migrations after which the guest rebooted,
	// GuestHung those after which it stayed silent even when sent
	// datagrams, GuestStalled those after which it was silent until sent
	// datagrams.
	GuestCrashed int  `json:"guest_crashed"`
	GuestHung    int  `json:"guest_hung"`
	GuestStalled int  `json:"guest_stalled"`
	OutageMs     Dist `json:"outage_ms"`
	OutageAtMs   Dist `json:"outage_at_ms"`
	TotalMs      Dist `json:"total_ms"`
	WallMs       Dist `json:"wall_ms"`
	// DowntimeMs covers the migrations whose libvirt downtime was known
	// (non-zero); DowntimeUnknown counts the others.
	DowntimeMs      Dist   `json:"downtime_ms"`
	DowntimeUnknown int    `json:"downtime_unknown"`
	Lost            Dist   `json:"lost"`
	LostTotal       uint64 `json:"lost_total"`
	// LossOutageMs is the thesis's estimate: mean lost datagrams per
	// migration times the send interval.
	LossOutageMs float64 `json:"loss_outage_ms"`
	AckStallMs   Dist    `json:"ack_stall_ms"`
	GuestClockMs Dist    `json:"guest_clock_over_gap_ms"`
	// StoppedMs is the gap minus the guest clock's advance over it: the
	// part of the outage during which the guest's clock stood still, i.e.
	// the VM was paused.
	StoppedMs Dist `json:"stopped_ms"`
}

// VerifyResult is `tandem volume verify` after the series.
type VerifyResult struct {
	CheckedBytes int64 `json:"checked_bytes"`
	Mismatches   int   `json:"mismatches"`
}

// Goal is the goal and this run's verdict.
type Goal struct {
	Text    string        `json:"text"`
	LimitMs float64       `json:"limit_ms"`
	PerRate []RateVerdict `json:"per_rate"`
	// Verdict is PASS when every rate met the goal, FAIL when one did
	// not, NOT MEASURED without successful migrations.
	Verdict string `json:"verdict"`
}

// RateVerdict is the goal at one rate.
type RateVerdict struct {
	Rate   int     `json:"rate_per_s"`
	P50Ms  float64 `json:"p50_outage_ms"`
	N      int     `json:"n"`
	Met    bool    `json:"met"`
	Ratio  float64 `json:"ratio_to_thesis"`
	QEMUOK bool    `json:"below_qemu_default"`
}

// Thesis is the published reference the issue compares with.
type Thesis struct {
	Source        string  `json:"source"`
	OutageMs      float64 `json:"outage_ms"`
	OutageStdMs   float64 `json:"outage_std_ms"`
	QEMUDefaultMs float64 `json:"qemu_default_max_downtime_ms"`
	Note          string  `json:"note"`
}

func thesisReference() Thesis {
	return Thesis{
		Source: "Espen Braastad, 'Management of high availability services using virtualization', master's thesis on Heartbeat + Xen live migration as repair for graceful failures, " +
			"Oslo University College, 2006; §5.4 'Impact on UDP services'",
		OutageMs: 250, OutageStdMs: 90, QEMUDefaultMs: 300,
		Note: "Table 5.4: one g711 VoIP stream (50 pps, pktgen) towards the Xen VM, 50 graceful failures repaired by live migration: " +
			"13 ± 5 packets lost, outage 254 ± 94 ms (the '0.25 ± 0.09 s' of the text). Table 5.2, 45 s streams: 55 ± 13 lost at 100 pps " +
			"(4 ± 4 without failure), 1071 ± 91 at 1000 pps (177 ± 90 without); with plain `xm migrate` 15 ± 5 and 578 ± 81.",
	}
}

func evaluateGoal(runs []RateRun) Goal {
	g := Goal{Text: fmt.Sprintf("p50 UDP outage of a planned live migration < %d ms at every rate", goalOutageMs), LimitMs: goalOutageMs, Verdict: "NOT MEASURED"}
	th := thesisReference()
	all := len(runs) > 0
	n := 0
	for _, r := range runs {
		if r.Diskless {
			continue // the control measures QEMU, not Tandem
		}
		n++
		s := r.Summary
		if s.Succeeded == 0 {
			all = false
			continue
		}
		v := RateVerdict{Rate: r.Rate, P50Ms: s.OutageMs.P50, N: s.Succeeded, Met: s.OutageMs.P50 < goalOutageMs,
			Ratio: s.OutageMs.P50 / th.OutageMs, QEMUOK: s.OutageMs.P50 < th.QEMUDefaultMs}
		g.PerRate = append(g.PerRate, v)
		if !v.Met {
			all = false
		}
	}
	switch {
	case len(g.PerRate) == 0:
	case all && len(g.PerRate) == n:
		g.Verdict = "PASS"
	default:
		g.Verdict = "FAIL"
	}
	return g
}

// Markdown renders the report.
func (rep *Report) Markdown() string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("# Tandem planned live-migration benchmark\n\n")
	p("Run %s (%.0f s). Host: %s; load average %s before, %s after.  \n",
		rep.Date, rep.DurationS, rep.Host.Summary("-"), benchkit.OrDash(rep.LoadBefore), benchkit.OrDash(rep.LoadAfter))
	p("tandemd: %s.  \n", rep.Tandemd.Summary())
	p("Tools: %s.  \n", strings.Join(benchkit.ToolList(rep.Tools), ", "))
	if len(rep.LibvirtWarmup) > 0 {
		var w []string
		for _, n := range slices.Sorted(maps.Keys(rep.LibvirtWarmup)) {
			w = append(w, fmt.Sprintf("%s %.1f s", n, rep.LibvirtWarmup[n]))
		}
		p("Every libvirtd probed QEMU once before the measurements, as a long-running host has (first probe: %s).  \n", strings.Join(w, ", "))
	}
	pr := rep.Params
	down := fmt.Sprintf("`--downtime-ms %d`", pr.DowntimeMs)
	if pr.DowntimeMs == 0 {
		down = "QEMU's default maximum downtime (300 ms)"
	}
	disk := fmt.Sprintf("%s disk with %d replicas", pr.Disk, pr.Replicas)
	p("Setup: %d-node cluster in network namespaces, one libvirtd per host, QEMU %s; one test guest per rate (%d MiB, 1 vCPU, kernel + busybox initramfs, "+
		"%s, NIC on the VM bridge), %d migrations per rate alternating between the disk's replica nodes, %s, a %s pause between migrations.",
		pr.Nodes, pr.Accelerator, pr.MemoryMiB, disk, pr.Migrations, down, pr.Settle)
	if pr.Transport != "" {
		p(" Migration transport: %s.", pr.Transport)
	}
	if pr.Control {
		p(" Control series: the same guest without a disk at the highest rate, %d migrations between the first nodes: libvirt's and QEMU's migration alone, "+
			"with no Tandem volume, no dual-primary window and no handover (its acknowledged disk counter stays 0; a restart shows as its sequence going back).",
			pr.ControlMigrations)
	}
	p("\n\n")

	p("## Goal\n\n%s: **%s**\n\n", rep.Goal.Text, rep.Goal.Verdict)
	for _, r := range rep.Runs {
		if s := r.Summary; s.GuestCrashed+s.GuestHung+s.GuestStalled > 0 {
			p("**%s: %d of %d migrations broke the guest**: %d times it crashed and rebooted, %d times it hung (restarted by the benchmark), "+
				"%d times it stalled until sent datagrams (see the migration details below).\n\n",
				r.Label(), s.GuestCrashed+s.GuestHung+s.GuestStalled, s.Migrations, s.GuestCrashed, s.GuestHung, s.GuestStalled)
		}
	}
	if len(rep.Goal.PerRate) > 0 {
		benchkit.NewTable(&b, "Rate", "Migrations", "p50 outage", "Goal", "Verdict",
			fmt.Sprintf("vs thesis (%.0f ± %.0f ms)", rep.Thesis.OutageMs, rep.Thesis.OutageStdMs), fmt.Sprintf("below QEMU's default %.0f ms", rep.Thesis.QEMUDefaultMs))
		for _, v := range rep.Goal.PerRate {
			p("| %d/s | %d | %.1f ms | < %d ms | %s | %.2f× | %s |\n", v.Rate, v.N, v.P50Ms, goalOutageMs, benchkit.Verdict(v.Met), v.Ratio, yesNo(v.QEMUOK))
		}
		p("\n")
	}

	p("## Results\n\n")
	p("Outage: the longest gap between two consecutive datagrams at the receiver during the `tandem vm migrate` call (see Method). " +
		"Total: libvirt's total migration time from the command's JSON result (`total_ms`); wall: the whole CLI call including the " +
		"dual-primary window and the handover. p50/p95 interpolate between ranks; ± is the sample standard deviation.\n\n")
	benchkit.NewTable(&b, "Rate", "OK/runs", "Outage p50", "p95", "max", "mean ± sd", "Lost datagrams (total; max per migration)", "Total p50", "Total p95", "Wall p50", "libvirt downtime p50 (known of n)", "Outage split p50: guest clock stopped + running", "Disk-ack stall p50 / max", "Reference: longest gap without migration", "Guest broken: rebooted / hung / stalled")
	for _, r := range rep.Runs {
		s := r.Summary
		ref := "–"
		if r.Reference != nil {
			ref = fmt.Sprintf("%.1f ms over %s (%d lost; %.0f datagrams/s arrived)", r.Reference.LongestGapMs, rep.Params.Quiet, r.Reference.Lost, r.ReferenceRate)
		}
		downtime := "–"
		if s.DowntimeMs.N > 0 {
			downtime = fmt.Sprintf("%.0f ms (%d of %d)", s.DowntimeMs.P50, s.DowntimeMs.N, s.Succeeded)
		} else if s.Succeeded > 0 {
			downtime = fmt.Sprintf("unknown (0 of %d)", s.Succeeded)
		}
		if s.Succeeded == 0 {
			p("| %s | 0/%d | – | – | – | – | – | – | – | – | – | – | – | %s | %d / %d / %d |\n", r.Label(), s.Migrations, ref, s.GuestCrashed, s.GuestHung, s.GuestStalled)
			continue
		}
		stall := fmt.Sprintf("%.0f / %.0f ms", s.AckStallMs.P50, s.AckStallMs.Max)
		if r.Diskless {
			stall = "– (no disk)"
		}
		p("| %s | %d/%d | **%.1f ms** | %.1f ms | %.1f ms | %.1f ± %.1f ms | %d; %.0f | %.0f ms | %.0f ms | %.0f ms | %s | %.0f + %.0f ms | %s | %s | %d / %d / %d |\n",
			r.Label(), s.Succeeded, s.Migrations, s.OutageMs.P50, s.OutageMs.P95, s.OutageMs.Max, s.OutageMs.Mean, s.OutageMs.Std,
			s.LostTotal, s.Lost.Max, s.TotalMs.P50, s.TotalMs.P95, s.WallMs.P50, downtime, s.StoppedMs.P50, s.GuestClockMs.P50,
			stall, ref, s.GuestCrashed, s.GuestHung, s.GuestStalled)
	}
	p("\n")
	if rep.hasUnknownDowntime() {
		p("A libvirt downtime of 0 means the completed-job statistics (`virDomainGetJobStats` with COMPLETED) were unavailable " +
			"on both source and destination, not that the guest did not pause; the stream gap is the measurement that counts.\n\n")
	}

	p("## Comparison with the thesis and QEMU's default\n\n")
	p("Reference: %s. %s\n\n", rep.Thesis.Source, rep.Thesis.Note)
	for _, r := range rep.Runs {
		s := r.Summary
		if s.Succeeded == 0 {
			continue
		}
		p("- %s: p50 outage %.1f ms = %.2f× the thesis's %.0f ms (mean %.1f ± %.1f ms vs %.0f ± %.0f ms); %s QEMU's default maximum downtime of %.0f ms; "+
			"loss-based estimate as in the thesis (lost datagrams × send interval) %.1f ms per migration.\n",
			r.Label(), s.OutageMs.P50, s.OutageMs.P50/rep.Thesis.OutageMs, rep.Thesis.OutageMs, s.OutageMs.Mean, s.OutageMs.Std, rep.Thesis.OutageMs, rep.Thesis.OutageStdMs,
			map[bool]string{true: "below", false: "not below"}[s.OutageMs.P50 < rep.Thesis.QEMUDefaultMs], rep.Thesis.QEMUDefaultMs, s.LossOutageMs)
	}
	p("\nThe setups differ: the thesis's stream went from a gateway to the VM (so a paused VM lost what was sent to it), ours goes from the guest to a receiver " +
		"on the switch (a paused guest sends nothing, so lost datagrams are only those caught in flight, and the gap is the measure); the thesis ran Xen " +
		"paravirtualised guests on real hardware with shared NFS storage, ours are QEMU TCG guests on 2 shared CPUs with synchronously replicated disks handed over at switch-over.\n\n")

	rep.analysis(p)

	p("## Guest continuity and disk\n\n")
	benchkit.NewTable(&b, "Rate", "VM", "Boot time", "Boots seen", "Seq/ack regressions", "Datagrams", "Acked counter first → last", "Guest send rate (own clock)", "Receive rate", "Replicas", "Verify after the series")
	for _, r := range rep.Runs {
		st := r.Stream
		ver := "–"
		if r.Verify != nil {
			ver = fmt.Sprintf("%d bytes compared, %d mismatches", r.Verify.CheckedBytes, r.Verify.Mismatches)
		}
		boots := fmt.Sprint(st.Boots)
		if st.OK() {
			boots += " (no restart)"
		} else {
			boots = "**" + boots + "**"
		}
		nodes := fmt.Sprintf("%s (witness %s)", strings.Join(r.ReplicaNodes, ", "), benchkit.OrDash(r.Witness))
		if r.Diskless {
			nodes = strings.Join(r.ReplicaNodes, ", ") + " (no disk)"
		}
		p("| %s | %s | %.0f s | %s | %d / %d | %d | %d → %d | %.0f/s | %.0f/s | %s | %s |\n",
			r.Label(), r.VM, r.BootS, boots, st.SeqBackwards, st.AckedBackwards, st.Datagrams, st.AckedFirst, st.AckedLast,
			st.GuestRate, st.ReceiveRate, nodes, ver)
	}
	restarts := false
	for _, r := range rep.Runs {
		for _, x := range r.Restarts {
			p("\n- %s: after migration %d, %s (boot %d).", r.Label(), x.After, x.How, x.Boot)
			restarts = true
		}
	}
	if restarts {
		p("\n")
	}
	p("\nAfter every migration the benchmark also waits until the guest has sent more datagrams and acknowledged at least %d more disk writes in the same boot "+
		"(`acked_advanced` in the JSON), and checks that the target became the disk's primary.\n\n", ackAdvance)

	p("## Method\n\n")
	p("This reproduces the UDP outage measurement of the thesis (Braastad 2006, §5.4.1): a constant-rate stream of small datagrams whose inter-arrival " +
		"times show the outage (its figures 5.6/5.7: the finer the rate, the smaller the uncertainty), at 100 and 1000 datagrams per second, repeated " +
		"per migration, with a reference window without migration.\n\n")
	p("- The guest agent (internal/guest) sends numbered datagrams at `tandem.rate` per second from inside the VM to a UDP socket on the cluster's switch " +
		"(`internal/guest.Receiver` over `ListenUDPOnSwitch`); each carries the guest's boot number, its sequence number, its acknowledged disk counter " +
		"(a 4 KiB O_DIRECT|O_SYNC write to its replicated disk every 10 ms) and its CLOCK_MONOTONIC.\n")
	p("- Each migration is `tandem vm migrate VM --to NODE --output json` run on the source node; the window is the call itself. The outage is the longest " +
		"gap between consecutive arrivals that overlaps the window (the gap that straddles the call's start or end counts in full). It overestimates the " +
		"real interruption by up to one send interval (10 ms at 100/s, 1 ms at 1000/s) plus the receiver's scheduling jitter; the reference column shows that jitter without migration.\n")
	p("- Lost datagrams are sequence numbers missing between consecutive arrivals within the window. Since the guest is the sender, a paused guest does not lose " +
		"datagrams, it just does not send them: the thesis's loss × interval estimate undercounts here, and is listed only for comparison.\n")
	p("- Guest clock over the gap: how far the guest's CLOCK_MONOTONIC advanced between the two datagrams around the longest gap; with TCG QEMU stops the " +
		"guest's clock while the VM is paused, so a value much smaller than the gap means the guest was stopped (not merely slow) during it. " +
		"Indicative only: right after a resume the guest's clock was seen to run ahead of the receiver's for a few milliseconds.\n")
	p("- Outage split: the gap minus the guest clock's advance over it is the time the guest's clock stood still (the VM paused for the switch-over, " +
		"comparable with libvirt's downtime); the rest is guest time in which the guest ran but sent nothing.\n")
	p("- Disk-ack stall: the longest time the acknowledged counter was seen not to advance during the window, i.e. the guest's disk writes waiting " +
		"(switch-over, NBD reconnect to the target's export, handover).\n")
	p("- Before each migration the benchmark waits until the source is the disk's primary with every replica UpToDate; between migrations it pauses %s.\n\n", rep.Params.Settle)

	for _, r := range rep.Runs {
		p("## Migrations: %s\n\n", r.Label())
		if len(r.Migrations) == 0 {
			p("None.\n\n")
		} else {
			benchkit.NewTable(&b, "#", "From → to", "Outage", "Began after", "Lost", "Guest clock over gap", "Disk-ack stall", "libvirt total", "libvirt downtime", "Wall", "Epoch after", "Result")
			for _, m := range r.Migrations {
				res := "ok"
				if m.Error != "" {
					res = "**" + benchkit.Escape(benchkit.Truncate(m.Error, 300)) + "**"
				}
				if m.ReadyWarning != "" {
					res += " (not ready before: " + benchkit.Escape(benchkit.Truncate(m.ReadyWarning, 120)) + ")"
				}
				p("| %d | %s → %s | %.1f ms | %.0f ms | %d | %.1f ms | %.0f ms | %d ms | %d ms | %.0f ms | %d | %s |\n",
					m.N, m.From, m.To, m.OutageMs, m.OutageAtMs, m.Lost, m.Window.GuestClockMs, m.Window.AckStallMs, m.TotalMs, m.DowntimeMs, m.WallMs, m.EpochAfter, res)
			}
			p("\n")
		}
		for _, m := range r.Migrations {
			if d := m.Diagnosis; d != nil {
				what := "the guest went silent"
				if m.Rebooted {
					what = "the guest rebooted"
				}
				p("### Migration %d (%s → %s): %s\n\n", m.N, m.From, m.To, what)
				p("Last datagram of the old stream arrived %.0f ms after the command started (wall %.0f ms, libvirt total %d ms, downtime %d ms); "+
					"when diagnosed the VM is on %s, state %q (virsh: %s).",
					d.SilentSinceMs, m.WallMs, m.TotalMs, m.DowntimeMs, benchkit.OrDash(d.VMNode), d.VMState, benchkit.OrDash(d.DomState))
				if d.Poked {
					p(" Datagrams sent to the guest (ARP + UDP, i.e. interrupts): %s.",
						map[bool]string{true: "**the stream resumed**", false: "the stream stayed silent"}[d.ResumedAfterPoke])
				}
				if d.Durable != nil {
					p(" Durability across the crash: the last datagram before it carried acknowledged counter %d, the rebooted guest read %d from its disk: %s.",
						d.LastAcked, *d.DiskCounterAtBoot, map[bool]string{true: "no acknowledged write lost", false: "**acknowledged writes lost**"}[*d.Durable])
				}
				p("\n\n")
				texts := []struct{ name, text string }{{"QEMU `info cpus`", d.CPUs}, {"QEMU `info lapic`", d.LAPIC}}
				for _, n := range slices.Sorted(maps.Keys(d.Consoles)) {
					texts = append(texts, struct{ name, text string }{"guest serial console on " + n + " (tail)", d.Consoles[n]})
				}
				for _, x := range texts {
					if x.text != "" {
						p("%s:\n\n```\n%s\n```\n\n", x.name, x.text)
					}
				}
				for _, e := range d.Errors {
					p("- diagnosis error: %s\n", benchkit.Escape(e))
				}
			}
		}
		for _, e := range r.Errors {
			p("- error: %s\n", benchkit.Escape(e))
		}
		if len(r.Errors) > 0 {
			p("\n")
		}
		excerpts := []map[string]string{r.LogExcerpts}
		for _, m := range r.Migrations {
			excerpts = append(excerpts, m.LogExcerpts)
		}
		for i, ex := range excerpts {
			if len(ex) == 0 {
				continue
			}
			what := "setup"
			if i > 0 {
				what = fmt.Sprintf("migration %d", r.Migrations[i-1].N)
			}
			p("<details><summary>Log excerpts after the failure (%s)</summary>\n\n", what)
			for _, k := range slices.Sorted(maps.Keys(ex)) {
				p("%s:\n\n```\n%s\n```\n\n", k, ex[k])
			}
			p("</details>\n\n")
		}
	}

	p("## Daemon logs\n\n")
	if len(rep.DaemonLog) == 0 {
		p("No WARN or ERROR lines in any tandemd log.\n\n")
	} else {
		p("WARN and ERROR lines of the tandemd logs, grouped (digits masked), most frequent first:\n\n")
		benchkit.FindingsTable{Column: "Message", Width: 200, NodeSep: ":", Join: " ", Limit: 15,
			More: func(rest int) string { return fmt.Sprintf("… | | | %d more groups in the JSON", rest) }}.WriteFindings(&b, rep.DaemonLog)
		p("\n")
	}
	if len(rep.Errors) > 0 {
		p("## Errors\n\n")
		for _, e := range rep.Errors {
			p("- %s\n", benchkit.Escape(e))
		}
		p("\n")
	}
	for _, k := range slices.Sorted(maps.Keys(rep.LogExcerpts)) {
		p("%s:\n\n```\n%s\n```\n\n", k, rep.LogExcerpts[k])
	}
	return b.String()
}

func (rep *Report) hasUnknownDowntime() bool {
	for _, r := range rep.Runs {
		if r.Summary.DowntimeUnknown > 0 {
			return true
		}
	}
	return false
}

func sq(x float64) float64 { return x * x }

func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "no"
}

// analysis writes what the numbers say: where the outage goes, Tandem's
// share of it next to the control, and the broken guests.
func (rep *Report) analysis(p func(string, ...any)) {
	p("## Analysis\n\n")
	var control *RateRun
	for i := range rep.Runs {
		if rep.Runs[i].Diskless {
			control = &rep.Runs[i]
		}
	}
	for _, r := range rep.Runs {
		s := r.Summary
		if s.Succeeded == 0 {
			continue
		}
		p("- %s, where the outage goes (p50): outage %.0f ms, libvirt's downtime %.0f ms. The guest's clock stood still for %.0f ms of the gap "+
			"(the VM paused for the switch-over) and advanced %.0f ms in which the guest sent nothing (the guest running but not yet sending: "+
			"most likely the destination QEMU starting with an empty TCG translation cache, on 2 CPUs shared by both QEMUs, three tandemd and three libvirtd). "+
			"The gap opens at the end of libvirt's migration (%.0f ms into the command, libvirt total %.0f ms); the CLI call lasts %.0f ms in all.\n",
			r.Label(), s.OutageMs.P50, s.DowntimeMs.P50, s.StoppedMs.P50, s.GuestClockMs.P50, s.OutageAtMs.P50, s.TotalMs.P50, s.WallMs.P50)
	}
	if control != nil && control.Summary.Succeeded > 0 {
		for _, r := range rep.Runs {
			if r.Diskless || r.Rate != control.Rate || r.Summary.Succeeded == 0 {
				continue
			}
			d, c := r.Summary, control.Summary
			se := math.Sqrt(sq(d.OutageMs.Std)/float64(d.OutageMs.N) + sq(c.OutageMs.Std)/float64(c.OutageMs.N))
			p("- Tandem's share at %d/s: p50 outage %.0f ms with the replicated disk against %.0f ms without a disk (control), a difference of %+.0f ms "+
				"(means %.0f and %.0f ms, difference %+.0f ± %.0f ms standard error within this run; the machine's load varies between runs). "+
				"This is what the volume adds to the guest-visible outage: the source QEMU drains and flushes the disk through the primary's synchronous replication while paused, the destination "+
				"opens the target's export, and the target takes over on its first write. libvirt's downtime p50 %.0f ms against %.0f ms, libvirt total %.0f ms "+
				"against %.0f ms; the CLI call (dual-primary window, handover, bookkeeping) p50 %.0f ms against %.0f ms.\n",
				r.Rate, d.OutageMs.P50, c.OutageMs.P50, d.OutageMs.P50-c.OutageMs.P50, d.OutageMs.Mean, c.OutageMs.Mean, d.OutageMs.Mean-c.OutageMs.Mean, se,
				d.DowntimeMs.P50, c.DowntimeMs.P50, d.TotalMs.P50, c.TotalMs.P50, d.WallMs.P50, c.WallMs.P50)
		}
	}
	broken, total, byDest := 0, 0, map[string]int{}
	for _, r := range rep.Runs {
		if r.Diskless {
			continue
		}
		s := r.Summary
		broken += s.GuestCrashed + s.GuestHung + s.GuestStalled
		total += s.Migrations
		for _, m := range r.Migrations {
			if m.Rebooted || m.Diagnosis != nil {
				byDest[m.To]++
			}
		}
	}
	if broken > 0 || (control != nil && control.Summary.Failed > 0) {
		p("- Broken guests: %d of %d migrations with a disk", broken, total)
		if control != nil {
			cs := control.Summary
			cb := cs.GuestCrashed + cs.GuestHung + cs.GuestStalled
			p(", %d of %d in the control without a disk", cb, cs.Migrations)
			for _, m := range control.Migrations {
				if m.Rebooted || m.Diagnosis != nil {
					byDest[m.To]++
				}
			}
			switch {
			case cb > 0:
				p(". The guest also breaks without a disk, i.e. without Tandem in its I/O path: the serial consoles show the guest kernel " +
					"finding its own memory corrupted right after the switch-over while libvirt reports a successful migration, which points at " +
					"QEMU's TCG live migration rather than at the volume handover")
			case broken > 0:
				p(". None broke in the control, which does not clear the disk path (the failure is rare; compare more runs)")
			}
		}
		var dests []string
		for _, n := range slices.Sorted(maps.Keys(byDest)) {
			dests = append(dests, fmt.Sprintf("%s: %d", n, byDest[n]))
		}
		p(". By destination node: %s.\n", strings.Join(dests, ", "))
	}
	p("\n")
}

// AddError records a problem of the whole run (benchkit.Report).
func (rep *Report) AddError(msg string) { rep.Errors = append(rep.Errors, msg) }

// Problems counts the run's errors (benchkit.Report).
func (rep *Report) Problems() int { return len(rep.Errors) }
