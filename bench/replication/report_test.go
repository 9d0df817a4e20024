package main

import (
	"encoding/json"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/tandemhci/tandem/bench/internal/benchkit"
)

func near(a, b float64) bool { return math.Abs(a-b) < 1e-6*math.Max(1, math.Abs(b)) }

// res builds a successful result: lat is the write p50 (µs), sync the
// flush p50 (0: none), rate the IOPS and mbps the throughput.
func res(target, job string, lat, sync, iops, mbps float64) Result {
	m := &benchkit.Measurement{Write: &benchkit.LatStats{N: 1, P50US: lat, P99US: 2 * lat, P999US: 3 * lat}, IOPS: iops, MBps: mbps}
	if sync > 0 {
		m.Sync = &benchkit.LatStats{N: 1, P50US: sync, P99US: 2 * sync}
	}
	return Result{Target: target, Job: job, Measurement: m, WallS: 12, ServerCPUS: map[string]float64{"a": 3, "b": 3}}
}

func sampleResults() []Result {
	return []Result{
		res(targetLocal, benchkit.JobDurable, 40, 200, 4000, 16),
		res(targetLocalSync, benchkit.JobDurable, 20, 40, 16000, 64),
		res(targetQemu, benchkit.JobDurable, 70, 100, 5000, 20),
		res(targetR2, benchkit.JobDurable, 60, 100, 5500, 22), // 160 µs: 0.94× qemu, 2.67× floor
		res(targetLocal, benchkit.JobQD32, 200, 0, 100000, 400),
		res(targetQemu, benchkit.JobQD32, 600, 0, 50000, 200),
		res(targetR2, benchkit.JobQD32, 900, 0, 40000, 160), // 0.80× qemu
		res(targetLocal, benchkit.JobSeq, 1000, 0, 2000, 2000),
		res(targetQemu, benchkit.JobSeq, 2000, 0, 1000, 1000),
		{Target: targetR2, Job: benchkit.JobSeq, Error: "fio: exit status 1"},
	}
}

func TestCompare(t *testing.T) {
	rs := sampleResults()
	compare(rs)
	c := findResult(rs, targetR2, benchkit.JobDurable).Compare
	if c == nil || c.Floor != targetLocalSync || c.LatencyUS != 160 {
		t.Fatalf("comparison %+v", c)
	}
	want := map[string]float64{"lat/qemu": 160.0 / 170, "rate/qemu": 1.1, "lat/floor": 160.0 / 60, "rate/floor": 5500.0 / 16000}
	got := map[string]*float64{"lat/qemu": c.LatVsQemu, "rate/qemu": c.RateVsQemu, "lat/floor": c.LatVsFloor, "rate/floor": c.RateVsFloor}
	for k, w := range want {
		if got[k] == nil || !near(*got[k], w) {
			t.Errorf("%s = %v, want %v", k, got[k], w)
		}
	}
	// The fsync local run is compared with the fdatasync floor as well.
	if c := findResult(rs, targetLocal, benchkit.JobDurable).Compare; c.LatVsFloor == nil || !near(*c.LatVsFloor, 240.0/60) {
		t.Errorf("local fsync vs floor: %+v", c)
	}
	if c := findResult(rs, targetQemu, benchkit.JobQD32).Compare; c.Floor != targetLocal || !near(*c.RateVsFloor, 0.5) || !near(*c.LatVsQemu, 1) {
		t.Errorf("qemu qd32: %+v", c)
	}
	if r := findResult(rs, targetR2, benchkit.JobSeq); r.Compare != nil {
		t.Errorf("failed result got a comparison: %+v", r.Compare)
	}
}

// goalResults adds to sampleResults what every goal needs: the two-copy
// floor, the round trips (floor 15 + 25 + 150 = 190 µs) and the CPU per
// write of the QD32 job.
func goalResults() ([]Result, []RoundTrip) {
	rs := append(sampleResults(),
		res(targetTwoCopies, benchkit.JobDurable, 50, 100, 15000, 60), // pair 150 µs
		res(targetTwoCopies, benchkit.JobQD32, 400, 0, 90000, 360),    // 45000 per copy: 0.90× qemu-nbd
		res(targetTwoCopies, benchkit.JobSeq, 1500, 0, 1200, 1200),    // 600 MB/s per copy
	)
	findResult(rs, targetR2, benchkit.JobQD32).CPUPerWrite = &CPUPerWrite{US: 100, ByProcess: map[string]float64{"tandemd-n1": 70, "tandemd-n2": 30}, AllServersUS: 101}
	findResult(rs, targetQemu, benchkit.JobQD32).CPUPerWrite = &CPUPerWrite{US: 30, ByProcess: map[string]float64{qemuProc: 30}, AllServersUS: 30}
	rtt := func(id string, p50 float64) RoundTrip {
		return RoundTrip{ID: id, Measurement: &benchkit.Measurement{Write: &benchkit.LatStats{N: 1, P50US: p50}}}
	}
	return rs, []RoundTrip{rtt(rttUnix, 15), rtt(rttTCP, 25)}
}

func goalsByID(goals []Goal) map[string]Goal {
	byID := map[string]Goal{}
	for _, g := range goals {
		byID[g.ID] = g
	}
	return byID
}

func TestEvaluateGoals(t *testing.T) {
	rs, rts := goalResults()
	compare(rs)
	goals := evaluateGoals(rs, rts)
	if len(goals) != 4 {
		t.Fatalf("%d goals, want the issue's 4: %+v", len(goals), goals)
	}
	byID := goalsByID(goals)
	met := func(id string) string {
		g, ok := byID[id]
		switch {
		case !ok:
			return "missing"
		case g.Met == nil:
			return "unmeasured"
		case *g.Met:
			return "pass"
		}
		return "fail"
	}
	// 1: 160 µs against the 190 µs floor; 2: 40000 against 50000 IOPS;
	// 3: the 2-replica job failed; 4: 100 µs against 30 µs.
	for id, want := range map[string]string{"1": "pass", "2": "pass", "3": "unmeasured", "4": "fail"} {
		if got := met(id); got != want {
			t.Errorf("goal %s: %s, want %s (%+v)", id, got, want, byID[id])
		}
	}
	for id, ratio := range map[string]float64{"1": 160.0 / 190, "2": 0.8, "4": 100.0 / 30} {
		if g := byID[id]; g.Ratio == nil || !near(*g.Ratio, ratio) {
			t.Errorf("goal %s ratio %v, want %.3f", id, g.Ratio, ratio)
		}
	}
	if g := byID["1"]; !strings.Contains(g.Reference, "190 µs") {
		t.Errorf("goal 1's reference is the replicated floor: %q", g.Reference)
	}
	if g := byID["3"]; !strings.Contains(g.Measured, "failed") || !strings.Contains(g.Reference, "600 MB/s per copy") {
		t.Errorf("goal 3 should show the failure against the floor per copy: %+v", g)
	}
	if g := byID["2"]; g.FloorRatio == nil || !near(*g.FloorRatio, 0.9) || g.FloorMet == nil || !*g.FloorMet {
		t.Errorf("goal 2's two-copy floor: %+v", g)
	}
	if g := byID["4"]; !strings.Contains(g.Measured, "tandemd-n1 70.0 + tandemd-n2 30.0") {
		t.Errorf("goal 4 should name both processes: %q", g.Measured)
	}
	// The references stay visible: qemu-nbd and the floors beside goal 1.
	var names []string
	for _, c := range byID["1"].Context {
		names = append(names, c.Name)
	}
	if want := []string{targetQemu, targetLocalSync, targetTwoCopies}; !slices.Equal(names, want) {
		t.Errorf("goal 1's other references %q, want %q", names, want)
	}

	// Exactly at the limits passes.
	rs = []Result{
		res(targetQemu, benchkit.JobQD32, 1, 0, 1000, 0), res(targetR2, benchkit.JobQD32, 1, 0, 700, 0),
		res(targetTwoCopies, benchkit.JobSeq, 1, 0, 0, 1000), res(targetR2, benchkit.JobSeq, 1, 0, 0, 400),
		res(targetTwoCopies, benchkit.JobDurable, 100, 100, 1, 0), res(targetR2, benchkit.JobDurable, 125, 125, 1, 0),
	}
	rs[0].CPUPerWrite, rs[1].CPUPerWrite = &CPUPerWrite{US: 20}, &CPUPerWrite{US: 30}
	compare(rs)
	rts = []RoundTrip{{ID: rttUnix, Measurement: &benchkit.Measurement{Write: &benchkit.LatStats{P50US: 10}}}, {ID: rttTCP, Measurement: &benchkit.Measurement{Write: &benchkit.LatStats{P50US: 30}}}}
	for _, g := range evaluateGoals(rs, rts) {
		if g.Met == nil || !*g.Met {
			t.Errorf("goal %s exactly at its limit should pass: %+v ratio %v", g.ID, g, benchkit.FmtRatio(g.Ratio))
		}
	}
	// Without a CPU sample goal 4 is not measured rather than wrong.
	rs[1].CPUPerWrite = nil
	if g := goalsByID(evaluateGoals(rs, rts))["4"]; g.Met != nil || !strings.Contains(g.Measured, "not measured") {
		t.Errorf("goal 4 without a CPU sample: %+v", g)
	}
}

// TestCPUPerWrite: the processes holding the copies are counted, every
// server process apart, and a missing one leaves no figure.
func TestCPUPerWrite(t *testing.T) {
	window := map[string]float64{"tandemd-n1": 0.7, "tandemd-n2": 0.28, "tandemd-n3": 0.02}
	r2 := &Target{ID: targetR2, Nodes: []string{"n1", "n2"}, volume: "r2"}
	c := cpuPerWrite(window, 10, 1000, r2.copyProcs()) // 10000 writes
	if c == nil || !near(c.US, 98) || !near(c.ByProcess["tandemd-n1"], 70) || !near(c.ByProcess["tandemd-n2"], 28) || !near(c.AllServersUS, 100) {
		t.Fatalf("%+v", c)
	}
	if got := c.String(); got != "98.0 µs (tandemd-n1 70.0 + tandemd-n2 28.0)" {
		t.Errorf("String() = %q", got)
	}
	if c := cpuPerWrite(window, 10, 1000, []string{"tandemd-n1", "tandemd-n4"}); c != nil {
		t.Errorf("a process not sampled must leave no figure: %+v", c)
	}
	if c := cpuPerWrite(window, 0, 1000, r2.copyProcs()); c != nil {
		t.Errorf("no window, no figure: %+v", c)
	}
	q := &Target{ID: targetQemu}
	if got := q.copyProcs(); !slices.Equal(got, []string{qemuProc}) {
		t.Errorf("qemu-nbd's processes %q", got)
	}
	if got := (&Target{ID: targetLocal}).copyProcs(); got != nil {
		t.Errorf("a local file has no server: %q", got)
	}
}

func TestMarkdownAndJSON(t *testing.T) {
	rs := sampleResults()
	compare(rs)
	rs[2].OthersCPUPct, rs[2].OthersTop = 40, []ProcCPU{{PID: 7, Command: "go build", Pct: 35}} // qemu-nbd, durable
	rep := &Report{
		Params: Params{Nodes: 3, SizeBytes: 1 << 30, Runtime: "10s", Ramp: "2s", Jobs: benchkit.FioJobs()},
		Targets: []Target{
			{ID: targetLocal, Ready: true}, {ID: targetLocalSync, Jobs: []string{benchkit.JobDurable}, Ready: true}, {ID: targetQemu, Ready: true},
			{ID: targetR1, SetupError: "create volume r1: boom", volume: "r1"}, {ID: targetR2, Ready: true, volume: "r2"},
		},
		Results: rs,
		Goals:   evaluateGoals(rs, nil),
		Errors:  []string{"seq-1m on tandem-r2: fio: exit status 1"},
		HostBefore: &HostActivity{BusyPct: 12, LoadAvg: "0.5 0.4 0.3 1/200 5",
			Top: []ProcCPU{{PID: 42, Command: "go test | x", Pct: 50}}},
	}
	md := rep.Markdown()
	for _, want := range []string{
		"## Goals", "| 1 |", "| 4 |", "**PASS**", "not measured",
		"## 4K random write, QD1, each write followed by a flush", "| tandem-r2 | 60.0 | 120 | 180 | 100 | 200 | 160 | 5500 | 0.94× |",
		"| tandem-r1 | not run: setup failed |", "| tandem-r2 | **failed**: fio: exit status 1 |",
		"## Errors during the run", "| 40% ⚠ |", "⚠ Other processes used at least 10% of a core during: qemu-nbd (`go build` 35%)", "`go test \\| x` (pid 42) 50%", "| 1 GiB", /* not present: size is in the text */
	} {
		if want == "| 1 GiB" {
			if !strings.Contains(md, "1 GiB per target") {
				t.Error("size missing from the parameters line")
			}
			continue
		}
		if !strings.Contains(md, want) {
			t.Errorf("Markdown lacks %q", want)
		}
	}
	// local-fdatasync runs only the durable job.
	if strings.Count(md, "| local-fdatasync |") != 2 { // targets table + durable table
		t.Errorf("local-fdatasync should appear in the targets table and the durable table only")
	}
	// Every table row of a job table has as many cells as its header.
	for _, block := range strings.Split(md, "\n\n") {
		lines := strings.Split(strings.TrimSpace(block), "\n")
		if len(lines) < 2 || !strings.HasPrefix(lines[0], "| Target |") {
			continue
		}
		n := strings.Count(lines[0], " | ")
		for _, l := range lines[2:] {
			if strings.Count(strings.ReplaceAll(l, "\\|", ""), " | ") != n {
				t.Errorf("row %q has another cell count than header %q", l, lines[0])
			}
		}
	}
	if strings.Contains(md, "NaN") || strings.Contains(md, "Inf") {
		t.Error("Markdown contains NaN or Inf")
	}
	if _, err := json.Marshal(rep); err != nil {
		t.Errorf("report does not encode: %v", err)
	}
}

func TestReplicatedFloor(t *testing.T) {
	rs, rts := goalResults()
	compare(rs)
	f, what := replicatedFloor(rs, rts)
	if !near(f, 190) || !strings.Contains(what, "190 µs") {
		t.Fatalf("floor %v %q, want 190 µs", f, what)
	}
	// Without either round trip there is no floor, rather than a wrong
	// one, and goal 1 is not measured.
	for _, partial := range [][]RoundTrip{nil, {rts[0]}, {rts[0], {ID: rttTCP, Error: "boom"}}} {
		if f, what := replicatedFloor(rs, partial); f != 0 || what != "" {
			t.Errorf("round trips %+v: floor %v %q, want none", partial, f, what)
		}
		if g := goalsByID(evaluateGoals(rs, partial))["1"]; g.Met != nil || !strings.Contains(g.Reference, "not measured") {
			t.Errorf("goal 1 without the floor: %+v", g)
		}
	}
	rs[3].ServerCPUS = nil // r2 durable
	md := (&Report{Params: Params{Jobs: benchkit.FioJobs()}, Targets: []Target{{ID: targetQemu}, {ID: targetR2, volume: "r2"}}, Results: rs, RoundTrips: rts, Goals: evaluateGoals(rs, rts)}).Markdown()
	for _, want := range []string{"## Links", "| unix |", "replicated floor 190 µs = unix round trip 15.0", "**FAIL**",
		"qemu-nbd: 170 µs (0.94×); local-fdatasync: 60.0 µs (2.67×); local-2copies: 150 µs (1.07×)",
		"| CPU per write |", "| 100 µs (tandemd-n1 70.0 + tandemd-n2 30.0) |", "| 30.0 µs |"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q", want)
		}
	}
}

func TestPartialReportRenders(t *testing.T) {
	if err := benchkit.CheckPartial(&Report{}); err != nil {
		t.Fatal(err)
	}
}

// TestTLSCost: the TLS target is set against the unix socket's job by job
// (TLS / unix), jobs missing on either side are left out, and the report
// shows the table.
func TestTLSCost(t *testing.T) {
	rs := append(sampleResults(),
		res(targetR2TLS, benchkit.JobDurable, 90, 110, 4400, 0), // 200 µs against 160
		res(targetR2TLS, benchkit.JobQD32, 1800, 0, 20000, 0),
		res(targetR2TLS, benchkit.JobSeq, 3000, 0, 0, 500), // the unix job failed
	)
	c := tlsCost(rs)
	if len(c) != 2 || c[0].Job != benchkit.JobDurable || c[1].Job != benchkit.JobQD32 {
		t.Fatalf("%+v", c)
	}
	if r := *c[0].LatRatio; r != 200.0/160 {
		t.Errorf("durable latency ratio %v", r)
	}
	if r := *c[1].RateRatio; r != 0.5 {
		t.Errorf("QD32 rate ratio %v", r)
	}
	if c[1].UnixServerCPU != 6 || *c[1].P99Ratio != 2 {
		t.Errorf("%+v", c[1])
	}
	rep := &Report{Results: rs, TLSCost: c}
	if md := rep.Markdown(); !strings.Contains(md, "## NBD over TLS (TCP) against the unix socket") || !strings.Contains(md, "| qd32-write | 40000 → 20000 IOPS | 0.50× |") {
		t.Errorf("markdown:\n%s", md)
	}
}

func TestCommonArgs(t *testing.T) {
	got := commonArgs([]string{"--name=a", "--rw=write", "--bs=4k", "--iodepth=1", "--output=x", "--size=5", "--time_based"})
	if want := []string{"--size=5", "--time_based"}; !slices.Equal(got, want) {
		t.Errorf("commonArgs = %q, want %q", got, want)
	}
}
