package main

import (
	"strings"
	"testing"
)

// An interrupted run publishes whatever it has: an almost empty report must
// render, with the mark benchkit.Finish adds.
func TestPartialReportRenders(t *testing.T) {
	rep := &Report{}
	rep.AddError("run interrupted: signal (results are partial)")
	if md := rep.Markdown(); !strings.Contains(md, "run interrupted") || rep.Problems() != 1 {
		t.Fatalf("partial report:\n%s", md)
	}
}
