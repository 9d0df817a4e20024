package main

import (
	"strings"
	"testing"
)

// The propose goal is judged on the interleaved samples when there are
// some, and on the samples minutes apart only without them.
func TestProposeGoal(t *testing.T) {
	goal := func(rep *Report) Goal {
		t.Helper()
		rep.evaluate()
		for _, g := range rep.Goals {
			if strings.HasPrefix(g.Name, "metadata propose") {
				return g
			}
		}
		t.Fatalf("no propose goal in %+v", rep.Goals)
		return Goal{}
	}
	apart := func() *Report {
		return &Report{Params: Params{Volumes: 1000, Baseline: 10},
			ProposeBaseline: Latency{N: 300, P99: 2}, ProposeAll: Latency{N: 300, P99: 9}}
	}

	g := goal(apart())
	if g.Pass == nil || *g.Pass || !strings.Contains(g.Name, "minutes apart") {
		t.Errorf("without interleaved samples: %+v, want a FAIL on the samples minutes apart (4.5×)", g)
	}

	rep := apart()
	rep.ProposeInterleaved = &Interleaved{ReferenceVolumes: 10, Reference: Latency{N: 1000, P99: 5}, All: Latency{N: 1000, P99: 9}}
	g = goal(rep)
	if g.Pass == nil || !*g.Pass || !strings.Contains(g.Name, "interleaved") || !strings.Contains(g.Value, "1.80×") {
		t.Errorf("with interleaved samples at 1.8×: %+v, want a PASS on them", g)
	}
	rep.ProposeInterleaved.All.P99 = 10.5
	if g = goal(rep); g.Pass == nil || *g.Pass {
		t.Errorf("with interleaved samples at 2.1×: %+v, want a FAIL", g)
	}
	if md := rep.Markdown(); !strings.Contains(md, "interleaved: the reference cluster (10 volumes)") {
		t.Errorf("the Markdown lacks the interleaved rows:\n%s", md)
	}
}
