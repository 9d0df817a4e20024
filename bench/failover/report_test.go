package main

import (
	"strings"
	"testing"

	"github.com/tandemhci/tandem/bench/internal/benchkit"
	"github.com/tandemhci/tandem/bench/internal/vmbench"
)

func runWith(n int, ph map[string]float64) vmbench.Run {
	return vmbench.Run{N: n, Crashed: "n1", PhasesMs: ph, I2: "ok"}
}

func TestSummarizeAndGoal(t *testing.T) {
	var runs []vmbench.Run
	for i := range 10 {
		runs = append(runs, runWith(i+1, map[string]float64{vmbench.PhaseDead: 3000, vmbench.PhaseStarted: float64(4000 + 100*i), vmbench.PhaseFirst: float64(9000 + 100*i)}))
	}
	ps := vmbench.SummarizePhases(runs, vmbench.ReplicatedPhases())
	if len(ps) != len(vmbench.ReplicatedPhases()) {
		t.Fatalf("%d phase summaries, want %d", len(ps), len(vmbench.ReplicatedPhases()))
	}
	if s := vmbench.PhaseOf(ps, vmbench.PhaseStarted); s.N != 10 || s.P50 != 4400 || s.Max != 4900 {
		t.Fatalf("started: %+v", s)
	}
	if s := vmbench.PhaseOf(ps, vmbench.PhasePromoted); s.N != 0 {
		t.Fatalf("promoted was never observed: %+v", s)
	}
	g := evaluateGoal(ps, len(runs))
	if g.Verdict != "PASS" || g.StretchVerdict != "PASS" {
		t.Fatalf("goal %+v", g)
	}
	// Over 5 s: the goal passes, the stretch does not.
	for i := range runs {
		runs[i].PhasesMs[vmbench.PhaseStarted] += 2000
	}
	g = evaluateGoal(vmbench.SummarizePhases(runs, vmbench.ReplicatedPhases()), len(runs))
	if g.Verdict != "PASS" || g.StretchVerdict != "FAIL" {
		t.Fatalf("goal at 6.4 s: %+v", g)
	}
	// A run that never recovered fails the goal whatever the p50.
	delete(runs[3].PhasesMs, vmbench.PhaseStarted)
	g = evaluateGoal(vmbench.SummarizePhases(runs, vmbench.ReplicatedPhases()), len(runs))
	if g.Verdict != "FAIL" || g.N != 9 {
		t.Fatalf("goal with an unrecovered run: %+v", g)
	}
	if g := evaluateGoal(vmbench.SummarizePhases(nil, vmbench.ReplicatedPhases()), 0); g.Verdict != "NOT MEASURED" {
		t.Fatalf("no runs: %+v", g)
	}
}

func TestIntegrityAndMarkdown(t *testing.T) {
	c := uint64(90)
	runs := []vmbench.Run{
		runWith(1, map[string]float64{vmbench.PhaseDead: 3000, vmbench.PhaseFenced: 3400, vmbench.PhasePromoted: 3500, vmbench.PhaseStarted: 4200, vmbench.PhaseFirst: 9000}),
		{N: 2, Crashed: "n2", Target: "n3", PhasesMs: map[string]float64{vmbench.PhaseStarted: 4000}, I2: "VIOLATED", LastAckedBefore: 100, DiskAtBoot: &c,
			OrderProblem: []string{"(d) QEMU started on the secondary at 4000 ms without any confirmed fence"}, Errors: []string{"I2 VIOLATED"},
			LogExcerpts: map[string]string{"n1/tandemd.log": "time=... level=WARN msg=x"}},
	}
	in := vmbench.IntegrityOf(runs)
	if in.I2Checked != 2 || in.I2Violated != 1 || in.OrderErrors != 1 || in.Unrecovered != 1 || len(in.Problems) != 3 {
		t.Fatalf("integrity %+v", in)
	}
	rep := &Report{Date: "2026-01-01T00:00:00Z", Params: Params{Runs: 2, Settle: "2s", Rate: 100}, Runs: runs, Published: published(), Thesis: thesisMethod(),
		Timing: map[string]uint32{"dead_timeout_ms": 3000}, Tools: map[string]string{"qemu": "QEMU emulator version 7.2"}}
	rep.Phases = vmbench.SummarizePhases(runs, vmbench.ReplicatedPhases())
	rep.GuestBoot, rep.StartedLeader, rep.StartedOther = vmbench.Derived(runs)
	rep.Goal = evaluateGoal(rep.Phases, len(runs))
	rep.Integrity = in
	md := rep.Markdown()
	for _, want := range []string{"PROBLEMS FOUND", "**VIOLATED**", "Proxmox VE HA", "vSphere HA", "VMmanager Cloud", "dead_timeout 3000 ms",
		"tcpdump", "### Run 2: n2 crashed", "n1/tandemd.log", "| 1 | n1 |"} {
		if !strings.Contains(md, want) {
			t.Errorf("Markdown lacks %q", want)
		}
	}
	// The JSON holds everything the Markdown needs (-render).
	if err := benchkit.CheckRender(rep); err != nil {
		t.Error(err)
	}
	// A clean report says so.
	rep.Runs = runs[:1]
	rep.Phases = vmbench.SummarizePhases(rep.Runs, vmbench.ReplicatedPhases())
	rep.Goal = evaluateGoal(rep.Phases, 1)
	rep.Integrity = vmbench.IntegrityOf(rep.Runs)
	md = rep.Markdown()
	if !strings.Contains(md, "No problem found") || strings.Contains(md, "PROBLEMS FOUND") || !strings.Contains(md, "**PASS**") {
		t.Errorf("clean report:\n%s", md)
	}
}

func TestParseFlags(t *testing.T) {
	c, err := parseFlags([]string{"-runs", "3", "-bin", "/x"})
	if err != nil || c.series.Runs != 3 || c.Bin != "/x" || c.series.Rate != 100 {
		t.Fatalf("%+v %v", c, err)
	}
	for _, bad := range [][]string{{"-runs", "0"}, {"-rate", "0"}, {"extra"}, {"-recovery-timeout", "0s"}} {
		if _, err := parseFlags(bad); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

func TestPartialReportRenders(t *testing.T) {
	if err := benchkit.CheckPartial(&Report{}); err != nil {
		t.Fatal(err)
	}
}
