package main

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/tandemhci/tandem/bench/internal/benchkit"
	"github.com/tandemhci/tandem/bench/internal/vmbench"
)

// res is a successful result: write p50 lat and flush p50 sync (0: none)
// in µs, IOPS and MB/s.
func res(target, job string, lat, sync, iops, mbps float64) Result {
	m := &benchkit.Measurement{Write: &benchkit.LatStats{N: 1, P50US: lat}, IOPS: iops, MBps: mbps}
	if sync > 0 {
		m.Sync = &benchkit.LatStats{N: 1, P50US: sync}
	}
	return Result{Target: target, Job: job, Measurement: m}
}

func sample(nbdWrite, nbdFlush float64) []Result {
	return []Result{
		res(targetRBD, benchkit.JobDurable, 1000, 50, 900, 3.6),
		res(targetNBD, benchkit.JobDurable, nbdWrite, nbdFlush, 800, 3.2),
		res(targetR2, benchkit.JobDurable, 400, 300, 1400, 5.6),
		res(targetRBD, benchkit.JobQD32, 8000, 0, 4000, 16),
		res(targetNBD, benchkit.JobQD32, 9000, 0, 3000, 12),
		res(targetRBD, benchkit.JobSeq, 20000, 0, 150, 150),
		res(targetNBD, benchkit.JobSeq, 25000, 0, 120, 120),
		{Target: targetQemu, Job: benchkit.JobSeq, Error: "fio: exit status 1"},
	}
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9*math.Max(1, math.Abs(b)) }

func TestJobs(t *testing.T) {
	var ids []string
	for _, j := range jobs() {
		ids = append(ids, j.ID)
	}
	if got := strings.Join(ids, " "); got != "qd1-write-flush qd32-write seq-1m" {
		t.Fatalf("jobs %s", got)
	}
}

func TestFiguresAndGoal(t *testing.T) {
	fs := figures(sample(1100, 50))
	if len(fs) != 3 || fs[0].Target != targetRBD || fs[1].Target != targetNBD || fs[2].Target != targetR2 {
		t.Fatalf("figures %+v", fs)
	}
	nbd := fs[1]
	if nbd.PairP50US != 1150 || nbd.WriteP50US != 1100 || nbd.FlushP50US != 50 || nbd.QD32IOPS != 3000 || nbd.SeqMBps != 120 {
		t.Fatalf("nbd figure %+v", nbd)
	}
	if !near(*nbd.PairVsRBD, 1150.0/1050) || !near(*nbd.QD32VsRBD, 0.75) || !near(*nbd.SeqVsRBD, 0.8) {
		t.Fatalf("ratios %v %v %v", *nbd.PairVsRBD, *nbd.QD32VsRBD, *nbd.SeqVsRBD)
	}
	if r2 := fs[2]; r2.QD32VsRBD != nil || len(r2.Unmeasured) != 2 {
		t.Fatalf("r2 without QD32 and seq: %+v", r2)
	}
	g := evaluateGoal(fs, nil)
	if g.Verdict != "PASS" || !near(*g.Ratio, 1150.0/1050) || g.AddedUS != 100 || g.AddedWriteUS != 100 || g.AddedFlushUS != 0 {
		t.Fatalf("goal %+v", g)
	}
	// Exactly at the limit passes; above it misses.
	if g := evaluateGoal(figures(sample(1157.5, 50)), nil); g.Verdict != "PASS" {
		t.Fatalf("at the limit: %+v %v", g, *g.Ratio)
	}
	g = evaluateGoal(figures(sample(1100, 300)), nil)
	if g.Verdict != "MISS" || g.AddedFlushUS != 250 || !near(*g.WriteRatio, 1.1) {
		t.Fatalf("miss: %+v", g)
	}
	// Without the rbd engine, nothing to compare with.
	rs := sample(1100, 50)[1:]
	if g := evaluateGoal(figures(rs), rs); g.Verdict != "NOT MEASURED" || g.Ratio != nil {
		t.Fatalf("no reference: %+v", g)
	}
	if fs := figures(rs); fs[0].PairVsRBD != nil {
		t.Fatalf("ratios without the rbd engine: %+v", fs[0])
	}
}

func TestMarkdown(t *testing.T) {
	rs := sample(1400, 200)
	c := uint64(40)
	runs := []vmbench.Run{{N: 1, Crashed: "n1", Target: "n2", I2: "ok", DiskAtBoot: &c, LastAckedBefore: 39,
		PhasesMs: map[string]float64{vmbench.PhaseDead: 3000, vmbench.PhaseFenced: 3100, vmbench.PhaseTakeover: 3600, vmbench.PhasePromoted: 3700,
			vmbench.PhaseStarted: 5600, vmbench.PhaseFirst: 18000}, FenceAgent: "ipmi"}}
	rep := &Report{Date: "2026-01-01T00:00:00Z", Params: Params{Nodes: 3, SizeBytes: 512 << 20, Runtime: "10s", Ramp: "2s", Jobs: jobs(), Runs: 1},
		Ceph: CephInfo{OSDs: 3, Pool: "tandem", PoolSize: 2}, Results: rs,
		Targets:  []Target{{ID: targetRBD, Engine: []string{"--ioengine=rbd"}, Where: "n1"}, {ID: targetQemu, SetupError: "qemu-nbd: gone"}},
		Images:   []ImageInfo{{Name: "tandem/fio-direct", SizeBytes: 512 << 20, ObjectBytes: 4 << 20, Features: []string{"layering", "exclusive-lock"}}},
		Failover: &Failover{Runs: runs, Timing: map[string]uint32{"dead_timeout_ms": 3000}}}
	rep.Results[0].LibrbdCache = "false"
	rep.Figures = figures(rep.Results)
	rep.Goal = evaluateGoal(rep.Figures, rep.Results)
	rep.Failover.Phases = vmbench.SummarizePhases(runs, vmbench.RBDPhases())
	rep.Failover.Integrity = vmbench.IntegrityOf(runs)
	md := rep.Markdown()
	for _, want := range []string{"**MISS**", "1.52×", "+400.0 µs on the write p50", "| rbd-engine | 1000 | 50.0 | 1050 |", "`false` in 1 (qd1-write-flush)",
		"features layering, exclusive-lock", "**setup failed**: qemu-nbd: gone", "(c) RBD image taken over", "| 1 | n1 | n2 |", "3.60", "dead_timeout 3000 ms",
		"Integrity: no problem found", "Fence confirmed by: ipmi in 1 runs"} {
		if !strings.Contains(md, want) {
			t.Errorf("Markdown lacks %q", want)
		}
	}
	if rep.Problems() != 0 {
		t.Errorf("a missed goal counted as a problem: %d", rep.Problems())
	}
	// The JSON holds everything the Markdown needs (-render).
	if err := benchkit.CheckRender(rep); err != nil {
		t.Error(err)
	}
	// A broken I2 is a problem of the run.
	runs[0].I2, c = "VIOLATED", 10
	rep.Failover.Integrity = vmbench.IntegrityOf(runs)
	if rep.Problems() != 1 || !strings.Contains(rep.Markdown(), "PROBLEMS FOUND") {
		t.Errorf("violation: %d problems", rep.Problems())
	}
}

func TestParseFlags(t *testing.T) {
	c, err := parseFlags([]string{"-runs", "2", "-size", "256M", "-runtime", "5s", "-bin", "/x"})
	if err != nil || c.series.Runs != 2 || c.fio.Size != 256<<20 || c.fio.Runtime != 5*time.Second || c.Bin != "/x" || c.Out != "bench/results" {
		t.Fatalf("%+v %v", c, err)
	}
	if c, err := parseFlags(nil); err != nil || c.series.Runs != 3 || c.fio.Size != 512<<20 {
		t.Fatalf("defaults %+v %v", c, err)
	}
	for _, bad := range [][]string{{"-runs", "-1"}, {"-size", "1000"}, {"-runtime", "0s"}, {"-rate", "0"}, {"extra"}} {
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

func TestJobOrder(t *testing.T) {
	js := jobs()
	var got []string
	for _, r := range jobOrder(js[0], 2) {
		got = append(got, fmt.Sprintf("%s/%d", r.id, r.round))
	}
	if s := strings.Join(got, " "); s != "rbd-engine/1 tandem-nbd-rbd/1 tandem-nbd-rbd/2 rbd-engine/2 tandem-r2/0 qemu-nbd/0" {
		t.Fatalf("QD1 order %s", s)
	}
	if rs := jobOrder(js[1], 3); len(rs) != 4 || rs[0].id != targetRBD || rs[0].round != 0 {
		t.Fatalf("QD32 order %+v", rs)
	}
}

// TestGoalRounds: the repeated QD1 runs count by their median, the
// goal's ratio is the median of the rounds' ratios, and the report shows
// every round.
func TestGoalRounds(t *testing.T) {
	var rs []Result
	for k, v := range [][2]float64{{1000, 1100}, {5000, 1200}, {1000, 1050}} {
		for i, id := range []string{targetRBD, targetNBD} {
			r := res(id, benchkit.JobDurable, v[i], 50, 800, 3)
			r.Round = k + 1
			rs = append(rs, r)
		}
	}
	rs = append(rs, res(targetR2, benchkit.JobDurable, 400, 300, 1400, 5.6))
	fs := figures(rs)
	if fs[0].PairP50US != 1050 || fs[1].PairP50US != 1150 || fs[2].PairP50US != 700 {
		t.Fatalf("medians over rounds: %+v", fs)
	}
	g := evaluateGoal(fs, rs)
	// Rounds: 1150/1050, 1250/5050, 1100/1050: the median is 1100/1050.
	if len(g.Rounds) != 3 || g.Rounds[1].Round != 2 || g.Rounds[1].RBDUS != 5050 || !near(*g.Ratio, 1100.0/1050) || g.Verdict != "PASS" {
		t.Fatalf("goal %+v", g)
	}
	rep := &Report{Params: Params{GoalRounds: 3}, Figures: fs, Goal: g, Results: rs}
	if md := rep.Markdown(); !strings.Contains(md, "median of the rounds' ratios") || !strings.Contains(md, "2: 5050 → 1250 µs (0.25×)") || strings.Contains(md, "both sides") {
		t.Errorf("rounds missing:\n%s", md)
	}
}

func TestSpread(t *testing.T) {
	r := func(v float64) RoundRatio { return RoundRatio{Ratio: &v} }
	if lo, hi, split := spread([]RoundRatio{r(1.03), {}, r(1.55), r(1.02)}, 1.15); lo != 1.02 || hi != 1.55 || !split {
		t.Fatalf("spread %v %v %v", lo, hi, split)
	}
	if _, _, split := spread([]RoundRatio{r(1.03), r(1.1)}, 1.15); split {
		t.Fatal("all within the limit called split")
	}
	if _, _, split := spread(nil, 1.15); split {
		t.Fatal("no rounds called split")
	}
}
