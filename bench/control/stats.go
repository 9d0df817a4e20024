package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/tandemhci/tandem/bench/internal/benchkit"
)

// Summary describes a set of samples in milliseconds. Percentiles use the
// nearest-rank method: p99 of 1000 samples is the 990th smallest, an
// observed value rather than an interpolation.
type Summary struct {
	Count int     `json:"count"`
	Min   float64 `json:"min_ms"`
	Max   float64 `json:"max_ms"`
	Mean  float64 `json:"mean_ms"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P95   float64 `json:"p95_ms"`
	P99   float64 `json:"p99_ms"`
}

func summarize(ms []float64) Summary {
	if len(ms) == 0 {
		return Summary{}
	}
	smp := benchkit.SortSample(ms)
	s := smp.Sorted
	return Summary{
		Count: len(s),
		Min:   smp.Min,
		Max:   smp.Max,
		Mean:  smp.Mean,
		P50:   benchkit.NearestRank(s, 0.50),
		P90:   benchkit.NearestRank(s, 0.90),
		P95:   benchkit.NearestRank(s, 0.95),
		P99:   benchkit.NearestRank(s, 0.99),
	}
}

func countAbove(ms []float64, limit float64) int {
	n := 0
	for _, v := range ms {
		if v > limit {
			n++
		}
	}
	return n
}

// promSample is one line of the Prometheus text exposition format.
type promSample struct {
	name   string
	labels map[string]string
	value  float64
}

// parseProm parses the Prometheus text format, enough for what tandemd
// exposes: a hand-written parser avoids a direct dependency on
// prometheus/common just for this.
func parseProm(body []byte) ([]promSample, error) {
	var out []promSample
	for i, line := range strings.Split(string(body), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		s, err := parsePromLine(line)
		if err != nil {
			return nil, fmt.Errorf("metrics line %d: %w", i+1, err)
		}
		out = append(out, s)
	}
	return out, nil
}

func parsePromLine(line string) (promSample, error) {
	s := promSample{labels: map[string]string{}}
	i := strings.IndexAny(line, "{ \t")
	if i <= 0 {
		return s, fmt.Errorf("no value in %q", line)
	}
	s.name, line = line[:i], line[i:]
	if line[0] == '{' {
		rest, err := parseLabels(line[1:], s.labels)
		if err != nil {
			return s, fmt.Errorf("%s: %w", s.name, err)
		}
		line = rest
	}
	f := strings.Fields(line) // value and an optional timestamp
	if len(f) == 0 {
		return s, fmt.Errorf("%s: no value", s.name)
	}
	v, err := strconv.ParseFloat(f[0], 64) // also takes +Inf and NaN
	if err != nil {
		return s, fmt.Errorf("%s: value: %w", s.name, err)
	}
	s.value = v
	return s, nil
}

// parseLabels reads `name="value",...}` into m and returns what follows.
func parseLabels(s string, m map[string]string) (string, error) {
	for {
		s = strings.TrimLeft(s, " \t,")
		if strings.HasPrefix(s, "}") {
			return s[1:], nil
		}
		eq := strings.IndexByte(s, '=')
		if eq <= 0 || eq+1 >= len(s) || s[eq+1] != '"' {
			return "", fmt.Errorf("bad label list near %q", s)
		}
		name := strings.TrimSpace(s[:eq])
		val, rest, err := unquoteLabel(s[eq+2:])
		if err != nil {
			return "", fmt.Errorf("label %s: %w", name, err)
		}
		m[name], s = val, rest
	}
}

// unquoteLabel reads a label value up to its closing quote; s starts right
// after the opening quote.
func unquoteLabel(s string) (val, rest string, err error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"':
			return b.String(), s[i+1:], nil
		case c == '\\' && i+1 < len(s):
			i++
			if s[i] == 'n' {
				b.WriteByte('\n')
			} else {
				b.WriteByte(s[i])
			}
		default:
			b.WriteByte(c)
		}
	}
	return "", "", errors.New("unterminated label value")
}

// gauge returns the value of the first sample named name, if any.
func gauge(samples []promSample, name string) (float64, bool) {
	for _, s := range samples {
		if s.name == name {
			return s.value, true
		}
	}
	return 0, false
}

// histogram is one series of a Prometheus histogram: cumulative bucket
// counts by upper bound, ascending, the last bound being +Inf.
type histogram struct {
	Upper []float64
	Cum   []float64
	Count float64
	Sum   float64
}

// MarshalJSON writes bounds as Prometheus does ("+Inf"), which JSON numbers
// cannot hold.
func (h histogram) MarshalJSON() ([]byte, error) {
	type bucket struct {
		Le         string  `json:"le"`
		Cumulative float64 `json:"cumulative"`
	}
	out := struct {
		Buckets []bucket `json:"buckets"`
		Count   float64  `json:"count"`
		SumS    float64  `json:"sum_s"`
	}{Buckets: []bucket{}, Count: h.Count, SumS: h.Sum}
	for i, u := range h.Upper {
		out.Buckets = append(out.Buckets, bucket{strconv.FormatFloat(u, 'g', -1, 64), h.Cum[i]})
	}
	return json.Marshal(out)
}

// extractHistogram collects the series of histogram name whose labels
// include match. A series that does not exist yet is an empty histogram.
func extractHistogram(samples []promSample, name string, match map[string]string) (histogram, error) {
	var h histogram
	type bucket struct{ le, cum float64 }
	var bs []bucket
	for _, s := range samples {
		if !labelsMatch(s.labels, match) {
			continue
		}
		switch s.name {
		case name + "_bucket":
			le, err := strconv.ParseFloat(s.labels["le"], 64)
			if err != nil {
				return h, fmt.Errorf("%s: bucket bound %q: %w", name, s.labels["le"], err)
			}
			bs = append(bs, bucket{le, s.value})
		case name + "_sum":
			h.Sum = s.value
		case name + "_count":
			h.Count = s.value
		}
	}
	sort.Slice(bs, func(i, j int) bool { return bs[i].le < bs[j].le })
	for _, b := range bs {
		h.Upper = append(h.Upper, b.le)
		h.Cum = append(h.Cum, b.cum)
	}
	if len(bs) > 0 && !math.IsInf(h.Upper[len(h.Upper)-1], 1) {
		return h, fmt.Errorf("%s: no +Inf bucket", name)
	}
	return h, nil
}

func labelsMatch(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

// minus returns the observations made between an earlier scrape o and h.
func (h histogram) minus(o histogram) (histogram, error) {
	if len(o.Upper) == 0 {
		return h, nil
	}
	if !slices.Equal(h.Upper, o.Upper) {
		return histogram{}, errors.New("histogram buckets changed between scrapes")
	}
	d := histogram{Upper: slices.Clone(h.Upper), Count: h.Count - o.Count, Sum: h.Sum - o.Sum}
	for i := range h.Cum {
		d.Cum = append(d.Cum, h.Cum[i]-o.Cum[i])
	}
	if d.Count < 0 {
		return histogram{}, errors.New("histogram went backwards (daemon restarted?)")
	}
	return d, nil
}

// quantile interpolates linearly inside the bucket holding the q-quantile,
// as PromQL's histogram_quantile does; it is only as precise as the
// buckets. It returns seconds, or NaN without observations.
func (h histogram) quantile(q float64) float64 {
	n := len(h.Cum)
	if n < 2 || h.Cum[n-1] == 0 {
		return math.NaN()
	}
	rank := q * h.Cum[n-1]
	b := sort.Search(n, func(i int) bool { return h.Cum[i] >= rank })
	if b >= n-1 { // in the +Inf bucket: the best answer is its lower bound
		return h.Upper[n-2]
	}
	lo, below := 0.0, 0.0
	if b > 0 {
		lo, below = h.Upper[b-1], h.Cum[b-1]
	}
	inBucket := h.Cum[b] - below
	if inBucket == 0 {
		return h.Upper[b]
	}
	return lo + (h.Upper[b]-lo)*(rank-below)/inBucket
}
