package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"

	"github.com/tandemhci/tandem/bench/internal/benchkit"
)

// Baseline comparison (-baseline-bin): the selected jobs run on two sets of
// binaries in one invocation, alternating whole runs, the order flipped every
// round (baseline, candidate, candidate, baseline, baseline, …), so that
// whatever else loads the machine, even a load that grows or fades over the
// invocation, weighs on both alike. Each run is a complete run of its own (its own cluster,
// volumes and prefill); the report is the last candidate run's, with every
// run's headline figures and their medians beside it.

// BaselineComparison is every run of a -baseline-bin invocation.
type BaselineComparison struct {
	BaselineBin  string              `json:"baseline_bin"`
	CandidateBin string              `json:"candidate_bin"`
	Baseline     benchkit.BinaryInfo `json:"baseline_tandemd"`
	Candidate    benchkit.BinaryInfo `json:"candidate_tandemd"`
	Runs         []BaselineRun       `json:"runs"`
}

// BaselineRun is one whole run's headline figures.
type BaselineRun struct {
	Round int `json:"round"`
	// Binaries is "baseline" or "candidate".
	Binaries string           `json:"binaries"`
	Figures  []BaselineFigure `json:"figures"`
	Errors   []string         `json:"errors,omitempty"`
}

// BaselineFigure is one job's headline on one target in one run.
type BaselineFigure struct {
	Target        string  `json:"target"`
	Job           string  `json:"job"`
	RateMetric    string  `json:"rate_metric"`
	Rate          float64 `json:"rate"`
	P50US         float64 `json:"write_p50_us"`
	P99US         float64 `json:"write_p99_us"`
	ReplicasAfter string  `json:"replicas_after,omitempty"`
	// OthersCPUPct is what other processes used meanwhile (Result's).
	OthersCPUPct float64 `json:"others_cpu_pct"`
	// CPUPerWriteUS is Result.CPUPerWrite's sum, 0 when not measured.
	CPUPerWriteUS float64 `json:"cpu_per_write_us,omitempty"`
}

const (
	binBaseline  = "baseline"
	binCandidate = "candidate"
)

// executeBaseline runs cfg.rounds rounds of a baseline and a candidate run
// (baseline first in odd rounds, second in even ones) and returns the last candidate report with the comparison attached.
func executeBaseline(ctx context.Context, log *slog.Logger, cfg config) (*Report, error) {
	cmp := &BaselineComparison{BaselineBin: cfg.baseline, CandidateBin: cfg.Bin,
		Baseline: benchkit.Binary(filepath.Join(cfg.baseline, "tandemd"))}
	if cfg.Bin != "" {
		cmp.Candidate = benchkit.Binary(filepath.Join(cfg.Bin, "tandemd")).WithWorkTreeRevision(ctx)
	}
	var last *Report
	for round := 1; round <= cfg.rounds; round++ {
		order := []string{binBaseline, binCandidate}
		if round%2 == 0 {
			order[0], order[1] = order[1], order[0]
		}
		for _, which := range order {
			c := cfg
			if which == binBaseline {
				c.Bin = cfg.baseline
			}
			log.Info("comparison run", "round", round, "binaries", which, "bin", c.Bin)
			rep, err := execute(ctx, log, c)
			if rep != nil {
				cmp.Runs = append(cmp.Runs, baselineRun(round, which, rep))
				if which == binCandidate {
					last = rep
				}
			}
			if err != nil {
				if last == nil {
					last = rep // a baseline report stands in for a partial one
				}
				if last != nil {
					last.Baseline = cmp
				}
				return last, fmt.Errorf("round %d, %s: %w", round, which, err)
			}
		}
	}
	last.Baseline = cmp
	// Every other run's problems are the invocation's problems too (the
	// last candidate run's are already the report's own).
	for _, r := range cmp.Runs {
		if r.Binaries == binCandidate && r.Round == cfg.rounds {
			continue
		}
		for _, e := range r.Errors {
			last.Errors = append(last.Errors, fmt.Sprintf("round %d, %s run: %s", r.Round, r.Binaries, e))
		}
	}
	return last, nil
}

func baselineRun(round int, which string, rep *Report) BaselineRun {
	run := BaselineRun{Round: round, Binaries: which, Errors: slices.Clone(rep.Errors)}
	for _, r := range rep.Results {
		if r.Measurement == nil {
			continue
		}
		_, _, metric, rate := benchkit.Headline(r.Job, r.Measurement)
		f := BaselineFigure{Target: r.Target, Job: r.Job, RateMetric: metric, Rate: rate, ReplicasAfter: r.ReplicasAfter, OthersCPUPct: r.OthersCPUPct}
		if w := r.Measurement.Write; w != nil {
			f.P50US, f.P99US = w.P50US, w.P99US
		}
		if r.CPUPerWrite != nil {
			f.CPUPerWriteUS = r.CPUPerWrite.US
		}
		run.Figures = append(run.Figures, f)
	}
	return run
}

// markdown renders the comparison: the medians side by side, then
// every run.
func (c *BaselineComparison) markdown(b *strings.Builder) {
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	p("## Baseline comparison\n\n")
	p("Baseline binaries: `%s` (%s); candidate: `%s` (%s). Whole runs alternate, the order flipped every round (baseline first in odd rounds), so the machine's other load weighs on both alike; others' CPU is what other processes used during each job (percent of one core). Medians over the runs; the ranges show the noise. The per-round ratios set each candidate run against the baseline run of its own round.\n\n",
		c.BaselineBin, c.Baseline.RevisionSummary(), c.CandidateBin, c.Candidate.RevisionSummary())
	type key struct{ target, job string }
	var keys []key
	type pairKey struct {
		key
		round int
	}
	vals := map[key]map[string][]BaselineFigure{}
	// pairs holds each round's baseline and candidate figure: their
	// ratio cancels whatever load both runs of the round shared.
	pairs := map[pairKey][2]*BaselineFigure{}
	for _, r := range c.Runs {
		for _, f := range r.Figures {
			k := key{f.Target, f.Job}
			if vals[k] == nil {
				vals[k] = map[string][]BaselineFigure{}
				keys = append(keys, k)
			}
			vals[k][r.Binaries] = append(vals[k][r.Binaries], f)
			pk, i := pairKey{k, r.Round}, 0
			if r.Binaries == binCandidate {
				i = 1
			}
			pr := pairs[pk]
			pr[i] = &f
			pairs[pk] = pr
		}
	}
	t := benchkit.NewTable(b, "Target", "Job", "Metric", "Baseline median (range)", "Candidate median (range)", "Candidate / baseline", "Per-round candidate / baseline, median (range)")
	for _, k := range keys {
		rows := []struct {
			name string
			get  func(BaselineFigure) float64
		}{
			{rateName(vals[k]), func(f BaselineFigure) float64 { return f.Rate }},
			{"write p50 µs", func(f BaselineFigure) float64 { return f.P50US }},
			{"write p99 µs", func(f BaselineFigure) float64 { return f.P99US }},
			{"CPU per write µs", func(f BaselineFigure) float64 { return f.CPUPerWriteUS }},
		}
		for _, row := range rows {
			bs, cs := sampleOf(vals[k][binBaseline], row.get), sampleOf(vals[k][binCandidate], row.get)
			if len(bs.Sorted)+len(cs.Sorted) == 0 {
				continue // not measured for this target (the local files)
			}
			bm, cm := benchkit.Interpolated(bs.Sorted, 0.5), benchkit.Interpolated(cs.Sorted, 0.5)
			var rs []float64
			for pk, pr := range pairs {
				if pk.key == k && pr[0] != nil && pr[1] != nil {
					if q := benchkit.Ratio(row.get(*pr[1]), row.get(*pr[0])); q != nil {
						rs = append(rs, *q)
					}
				}
			}
			t.Row(k.target, k.job, row.name, rangeCell(bm, bs), rangeCell(cm, cs), benchkit.FmtRatio(benchkit.Ratio(cm, bm)), ratioRange(benchkit.SortSample(rs)))
		}
	}
	p("\n")
	t = benchkit.NewTable(b, "Round", "Binaries", "Target", "Job", "Rate", "write p50 µs", "write p99 µs", "others' CPU", "Replicas after", "Errors")
	for _, r := range c.Runs {
		if len(r.Figures) == 0 {
			t.Row(fmt.Sprint(r.Round), r.Binaries, "–", "–", "", "", "", "", "", fmt.Sprint(len(r.Errors)))
		}
		for _, f := range r.Figures {
			t.Row(fmt.Sprint(r.Round), r.Binaries, f.Target, f.Job, benchkit.FmtRate(f.Rate)+" "+f.RateMetric, benchkit.FmtUS(f.P50US), benchkit.FmtUS(f.P99US), fmt.Sprintf("%.0f%%", f.OthersCPUPct), f.ReplicasAfter, fmt.Sprint(len(r.Errors)))
		}
	}
	p("\n")
}

func rateName(byBin map[string][]BaselineFigure) string {
	for _, fs := range byBin {
		if len(fs) > 0 {
			return fs[0].RateMetric
		}
	}
	return "rate"
}

func sampleOf(fs []BaselineFigure, get func(BaselineFigure) float64) benchkit.Sample {
	xs := make([]float64, 0, len(fs))
	for _, f := range fs {
		if v := get(f); v > 0 {
			xs = append(xs, v)
		}
	}
	return benchkit.SortSample(xs)
}

func rangeCell(median float64, s benchkit.Sample) string {
	if len(s.Sorted) == 0 {
		return "–"
	}
	return fmt.Sprintf("%s (%s–%s)", benchkit.FmtUS(median), benchkit.FmtUS(s.Min), benchkit.FmtUS(s.Max))
}

func ratioRange(s benchkit.Sample) string {
	if len(s.Sorted) == 0 {
		return "–"
	}
	m := benchkit.Interpolated(s.Sorted, 0.5)
	return fmt.Sprintf("%s (%s–%s)", benchkit.FmtRatio(&m), benchkit.FmtRatio(&s.Min), benchkit.FmtRatio(&s.Max))
}
