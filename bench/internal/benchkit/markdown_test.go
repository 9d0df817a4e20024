package benchkit

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

func TestTable(t *testing.T) {
	var b strings.Builder
	tb := NewTable(&b, "A", "B c")
	tb.Row("1", "x")
	tb.Rowf("%d | %s", 2, "y")
	if want := "| A | B c |\n|---|---|\n| 1 | x |\n| 2 | y |\n"; b.String() != want {
		t.Fatalf("table %q, want %q", b.String(), want)
	}
	if Escape("a|b\nc") != `a\|b c` || OrDash("") != "–" || OrDash("x") != "x" {
		t.Fatal("cells")
	}
	ok, bad := true, false
	if PassFail(nil) != "not measured" || PassFail(&ok) != "**PASS**" || PassFail(&bad) != "**FAIL**" || Verdict(false) != "**FAIL**" {
		t.Fatal("verdicts")
	}
	if got := ToolList(map[string]string{"b": "B 2", "a": "A 1"}); strings.Join(got, ",") != "A 1,B 2" {
		t.Fatalf("tools %q", got)
	}
}

// The layouts of the reports' daemon-log tables, byte for byte as they were
// written before the table writer.
func TestWriteFindings(t *testing.T) {
	fs := []LogFinding{
		{Level: "ERROR", Pattern: "msg=a|b", Count: 3, ByNode: map[string]int{"n2": 1, "n1": 2}, Example: "time=1 msg=a|b"},
		{Level: "WARN", Pattern: "msg=c", Count: 1, ByNode: map[string]int{"n1": 1}, Example: "time=2 msg=c"},
	}
	var b strings.Builder
	FindingsTable{Column: "Example", Example: true, Width: 240, NodeSep: ":", Join: " "}.WriteFindings(&b, fs)
	want := "| Level | Count | By node | Example |\n|---|---|---|---|\n" +
		"| ERROR | 3 | n1:2 n2:1 | `time=1 msg=a\\|b` |\n| WARN | 1 | n1:1 | `time=2 msg=c` |\n"
	if b.String() != want {
		t.Fatalf("control/replication layout:\n%q\nwant\n%q", b.String(), want)
	}
	b.Reset()
	FindingsTable{Column: "Pattern", Width: 150, NodeSep: " ", Join: ", ", Limit: 1,
		More: func(rest int) string { return fmt.Sprintf("… | %d more patterns in failover.json | |", rest) }}.WriteFindings(&b, fs)
	want = "| Level | Count | By node | Pattern |\n|---|---|---|---|\n" +
		"| ERROR | 3 | n1 2, n2 1 | `msg=a\\|b` |\n| … | 1 more patterns in failover.json | | |\n"
	if b.String() != want {
		t.Fatalf("failover layout:\n%q\nwant\n%q", b.String(), want)
	}
}

func TestStats(t *testing.T) {
	if MS(1500*time.Microsecond) != 1.5 {
		t.Fatal("ms")
	}
	s := SortSample([]float64{3, 1, 2, 4})
	if s.Min != 1 || s.Max != 4 || s.Mean != 2.5 || s.Sorted[0] != 1 {
		t.Fatalf("sample %+v", s)
	}
	if e := SortSample(nil); e.Sorted != nil || e.Max != 0 {
		t.Fatal("empty sample")
	}
	ten := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	if NearestRank(ten, 0.5) != 5 || NearestRank(ten, 0.95) != 10 || NearestRank(ten, 0) != 1 || !math.IsNaN(NearestRank(nil, 0.5)) {
		t.Fatal("nearest rank")
	}
	if Interpolated(ten, 0.5) != 5.5 || Interpolated(ten, 1) != 10 || !math.IsNaN(Interpolated(nil, 0.5)) {
		t.Fatal("interpolated")
	}
}

func TestHealthyAndSleep(t *testing.T) {
	st := &tandemv1.ClusterStatus{Quorate: true, Leader: "n1", Voters: 3, VotesOnline: 3}
	if !Healthy(st, 3) || Healthy(st, 2) {
		t.Fatal("healthy")
	}
	st.VotesOnline = 2
	if Healthy(st, 3) {
		t.Fatal("a voter offline is not healthy")
	}
}

func TestTempBinaries(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir())
	bin := t.TempDir()
	if _, _, err := TempBinaries(context.Background(), nil, "x", bin); err == nil {
		t.Fatal("binaries found in an empty directory")
	}
	if ents, _ := os.ReadDir(os.Getenv("TMPDIR")); len(ents) != 0 {
		t.Fatalf("temporary directory left after the error: %v", ents)
	}
	for _, n := range []string{"tandemd", "tandem"} {
		if err := os.WriteFile(filepath.Join(bin, n), nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	tmp, abs, err := TempBinaries(context.Background(), nil, "x", bin)
	if err != nil || abs != bin || !strings.Contains(tmp, "tandem-bench-x-") {
		t.Fatalf("tmp %q bin %q: %v", tmp, abs, err)
	}
}
