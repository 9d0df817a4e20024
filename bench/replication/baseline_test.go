package main

import (
	"strings"
	"testing"

	"github.com/tandemhci/tandem/bench/internal/benchkit"
)

func TestBaselineMarkdown(t *testing.T) {
	runOf := func(round int, which string, iops, lat float64) BaselineRun {
		return baselineRun(round, which, &Report{Results: []Result{
			res(targetR2, benchkit.JobQD32, lat, 0, iops, 0),
			{Target: targetR2, Job: benchkit.JobQD1, Error: "fio: exit status 1"}, // no figure
		}})
	}
	c := &BaselineComparison{BaselineBin: "/old", CandidateBin: "/new", Runs: []BaselineRun{
		runOf(1, binBaseline, 1000, 100),
		runOf(1, binCandidate, 1100, 90),
		runOf(2, binBaseline, 3000, 300),
		runOf(2, binCandidate, 900, 110),
	}}
	if n := len(c.Runs[0].Figures); n != 1 {
		t.Fatalf("figures of a run: %d, want 1 (a failed job has none)", n)
	}
	var b strings.Builder
	c.markdown(&b)
	md := b.String()
	for _, want := range []string{
		// medians of two: baseline (1000+3000)/2, candidate (1100+900)/2
		// per-round ratios 1.10 and 0.30
		"| tandem-r2 | qd32-write | IOPS | 2000 (1000–3000) | 1000 (900–1100) | 0.50× | 0.70× (0.30×–1.10×) |",
		"| tandem-r2 | qd32-write | write p50 µs | 200 (100–300) | 100 (90.0–110) | 0.50× | 0.63× (0.37×–0.90×) |",
		"| 2 | candidate | tandem-r2 | qd32-write | 900 IOPS | 110 | 220 | 0% |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
}
