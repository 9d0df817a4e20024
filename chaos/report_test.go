package chaos

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A long run in several sittings (make chaos APPEND=1): each run's
// schedules are added to the report once, with the run as a segment; a
// seed already reported, or another profile, is refused.
func TestSummaryMerge(t *testing.T) {
	run := func(wall time.Duration, seeds ...uint64) *Summary {
		s := &Summary{Profile: "long", FirstSeed: seeds[0], Wall: wall}
		for _, sd := range seeds {
			r := &Result{Seed: sd, Ops: 10, AckedWrites: 5, Injected: map[Kind]int{Isolate: 1}}
			if sd >= 1002 { // reports from before phases have none
				r.Phases = &Phases{Setup: time.Duration(sd-1000) * time.Second, Faults: 20 * time.Second, Check: 10 * time.Second, Delete: time.Second}
			}
			if sd == 1001 {
				r.Anomalies = []Anomaly{{Checker: "writes", Detail: "lost"}}
			}
			s.Add(r)
		}
		return s
	}
	dir := t.TempDir()
	prefix := filepath.Join(dir, "chaos")
	first := run(10*time.Second, 1000, 1001) // a report from before segments
	if err := first.Write(prefix); err != nil {
		t.Fatal(err)
	}
	old, err := LoadSummary(prefix)
	if err != nil {
		t.Fatal(err)
	}
	next := run(5*time.Second, 1002, 1003)
	next.Segments = []Segment{{Seeds: "1002..1003", Schedules: 2, Commit: "abc123", Date: "2026-12-07T04:00:00Z", VMs: 1, Wall: 5 * time.Second}}
	if err := old.Merge(next); err != nil {
		t.Fatal(err)
	}
	if old.Schedules != 4 || old.Anomalies != 1 || old.Ops != 40 || old.Injected[Isolate] != 4 || old.Wall != 15*time.Second || len(old.Segments) != 2 {
		t.Fatalf("merged: %d schedules, %d anomalies, %d ops, %v injected, wall %s, %d segments", old.Schedules, old.Anomalies, old.Ops, old.Injected, old.Wall, len(old.Segments))
	}
	if g := old.Segments[0]; g.Seeds != "1000..1001" || g.Anomalies != 1 || g.Commit != "(not recorded)" {
		t.Fatalf("the earlier report's segment: %+v", g)
	}
	md := old.Markdown()
	for _, want := range []string{"| schedules | 4 (seeds 1000..1003) |", "## Runs merged into this report", "| 1002..1003 | 2 | 0 | abc123 |",
		"| mean schedule: setup / faults and heal / checks / delete (2 schedules timed) | 2.5s / 20s / 10s / 1s |"} {
		if !strings.Contains(md, want) {
			t.Errorf("no %q in\n%s", want, md)
		}
	}
	if err := old.Merge(run(time.Second, 1003, 1004)); err == nil || !strings.Contains(err.Error(), "seed 1003 is in the report already") {
		t.Fatalf("a seed merged twice: %v", err)
	}
	ci := run(time.Second, 1)
	ci.Profile = "ci"
	if err := old.Merge(ci); err == nil {
		t.Fatal("a ci-profile run merged into a long-profile report")
	}
	if old.Schedules != 4 {
		t.Fatalf("a refused merge changed the report: %d schedules", old.Schedules)
	}
	if got := seedRange([]*Result{{Seed: 7}, {Seed: 3}, {Seed: 5}}); got != "3,5,7" {
		t.Fatalf("seedRange of scattered seeds: %q", got)
	}
}
