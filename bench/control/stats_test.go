package main

import (
	"math"
	"testing"
	"time"

	"github.com/tandemhci/tandem/bench/internal/benchkit"
)

func TestSummarize(t *testing.T) {
	var v []float64
	for i := 1; i <= 1000; i++ {
		v = append(v, float64(1001-i)) // unsorted on purpose
	}
	s := summarize(v)
	if s.Count != 1000 || s.Min != 1 || s.Max != 1000 || s.P50 != 500 || s.P90 != 900 || s.P99 != 990 || s.Mean != 500.5 {
		t.Fatalf("summarize: %+v", s)
	}
	if v[0] != 1000 {
		t.Fatal("summarize sorted its input")
	}
	if s := summarize([]float64{7}); s.P50 != 7 || s.P99 != 7 {
		t.Fatalf("one sample: %+v", s)
	}
	if s := summarize(nil); s.Count != 0 {
		t.Fatalf("no samples: %+v", s)
	}
}

const metricsText = `# HELP tandem_raft_propose_seconds Time to commit.
# TYPE tandem_raft_propose_seconds histogram
tandem_raft_propose_seconds_bucket{node="n1",result="ok",shard="metadata",le="0.001"} 10
tandem_raft_propose_seconds_bucket{node="n1",result="ok",shard="metadata",le="0.002"} 90
tandem_raft_propose_seconds_bucket{node="n1",result="ok",shard="metadata",le="0.004"} 100
tandem_raft_propose_seconds_bucket{node="n1",result="ok",shard="metadata",le="+Inf"} 100
tandem_raft_propose_seconds_sum{node="n1",result="ok",shard="metadata"} 0.15
tandem_raft_propose_seconds_count{node="n1",result="ok",shard="metadata"} 100
tandem_raft_propose_seconds_bucket{node="n1",result="ok",shard="volume",le="+Inf"} 5
tandem_raft_metadata_term{node="n1"} 7
weird_labels{a="x\"y,z}",b="\\"} 1.5e3 1700000000000
`

func TestParsePromAndHistogram(t *testing.T) {
	s, err := parseProm([]byte(metricsText))
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := gauge(s, "tandem_raft_metadata_term"); !ok || v != 7 {
		t.Fatalf("term gauge = %v, %v", v, ok)
	}
	if v, ok := gauge(s, "weird_labels"); !ok || v != 1500 || s[len(s)-1].labels["a"] != `x"y,z}` || s[len(s)-1].labels["b"] != `\` {
		t.Fatalf("weird labels: %+v", s[len(s)-1])
	}
	h, err := extractHistogram(s, "tandem_raft_propose_seconds", map[string]string{"shard": "metadata", "result": "ok"})
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Upper) != 4 || h.Count != 100 || h.Sum != 0.15 {
		t.Fatalf("histogram: %+v", h)
	}
	// rank 50 lies in (0.001, 0.002] holding 80 observations from 10 on.
	if got, want := h.quantile(0.5), 0.001+0.001*40.0/80.0; math.Abs(got-want) > 1e-12 {
		t.Fatalf("p50 = %v, want %v", got, want)
	}
	if got := h.quantile(0.99); math.Abs(got-0.0038) > 1e-12 {
		t.Fatalf("p99 = %v", got)
	}

	before := histogram{Upper: h.Upper, Cum: []float64{10, 10, 10, 10}, Count: 10, Sum: 0.005}
	d, err := h.minus(before)
	if err != nil {
		t.Fatal(err)
	}
	if d.Count != 90 || d.Cum[0] != 0 || d.Cum[3] != 90 {
		t.Fatalf("delta: %+v", d)
	}
	if got := d.quantile(0.5); math.Abs(got-(0.001+0.001*45.0/80.0)) > 1e-12 {
		t.Fatalf("delta p50 = %v", got)
	}
	if _, err := h.minus(histogram{Upper: []float64{1, math.Inf(1)}, Cum: []float64{1, 1}}); err == nil {
		t.Fatal("minus accepted different buckets")
	}
	empty, err := extractHistogram(s, "tandem_raft_propose_seconds", map[string]string{"shard": "metadata", "result": "error"})
	if err != nil || empty.Count != 0 || !math.IsNaN(empty.quantile(0.5)) {
		t.Fatalf("absent series: %+v, %v", empty, err)
	}
	if d, err := h.minus(empty); err != nil || d.Count != h.Count {
		t.Fatalf("minus empty: %+v, %v", d, err)
	}
}

func TestParsePromErrors(t *testing.T) {
	for _, bad := range []string{"novalue", `m{a="x} 1`, `m{a=x} 1`, "m abc"} {
		if _, err := parseProm([]byte(bad)); err == nil {
			t.Errorf("parseProm(%q) accepted", bad)
		}
	}
}

func TestParseLeaderSample(t *testing.T) {
	s, ok := parseLeaderSample("ok 1000000000 1002000000 1 0 12")
	if !ok || !s.ok || !s.hasLeader || s.isLeader || s.term != 12 || s.end.Sub(s.start) != 2*time.Millisecond {
		t.Fatalf("ok sample: %+v %v", s, ok)
	}
	s, ok = parseLeaderSample("err 1 2 get http://x: connection refused")
	if !ok || s.ok {
		t.Fatalf("err sample: %+v %v", s, ok)
	}
	if _, ok := parseLeaderSample("garbage"); ok {
		t.Fatal("garbage accepted")
	}
}

func TestFirstNewLeader(t *testing.T) {
	at := func(ms int) time.Time { return time.Unix(100, 0).Add(time.Duration(ms) * time.Millisecond) }
	w := &watcher{samples: []leaderSample{
		{start: at(-20), end: at(-19), ok: true, hasLeader: true, term: 3},
		{start: at(-10), end: at(-9), ok: true, hasLeader: true, term: 3}, // before the kill at 0
		{start: at(0), end: at(1), ok: true, hasLeader: true, term: 3},    // followers still believe the old leader
		{start: at(150), end: at(151), ok: true, hasLeader: false, term: 4},
		{start: at(160), end: at(161)}, // failed scrape
		{start: at(170), end: at(172), ok: true, hasLeader: true, term: 4},
	}}
	hit, prev, ok := w.firstNewLeader(at(0), 3)
	if !ok || !hit.end.Equal(at(172)) || !prev.start.Equal(at(150)) {
		t.Fatalf("hit %+v prev %+v ok %v", hit, prev, ok)
	}
	if _, _, ok := w.firstNewLeader(at(0), 4); ok {
		t.Fatal("found a leader above term 4")
	}
}

func TestHistogramJSON(t *testing.T) {
	h := histogram{Upper: []float64{0.001, math.Inf(1)}, Cum: []float64{1, 2}, Count: 2, Sum: 0.5}
	b, err := h.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"buckets":[{"le":"0.001","cumulative":1},{"le":"+Inf","cumulative":2}],"count":2,"sum_s":0.5}`; string(b) != want {
		t.Fatalf("got %s, want %s", b, want)
	}
}

func TestPartialReportRenders(t *testing.T) {
	if err := benchkit.CheckPartial(&Report{}); err != nil {
		t.Fatal(err)
	}
}
