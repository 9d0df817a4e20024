package benchkit

import (
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/tandemhci/tandem/internal/testcluster"
)

func TestScanDaemonLogsGroups(t *testing.T) {
	dir := t.TempDir()
	log := "time=1 level=INFO msg=fine\n" +
		"time=2 level=WARN msg=\"peer 10.0.0.1 gone\"\n" +
		"time=3 level=WARN msg=\"peer 10.0.0.2 gone\"\n" +
		"time=4 level=ERROR msg=\"disk 7 failed\"\n"
	if err := os.WriteFile(filepath.Join(dir, "tandemd.log"), []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
	c := &testcluster.Cluster{Nodes: []*testcluster.Node{{Name: "n1", Dir: dir}, {Name: "n2", Dir: filepath.Join(dir, "missing")}}}
	got := ScanDaemonLogs(c)
	if len(got) != 2 || got[0].Level != "ERROR" || got[1].Level != "WARN" || got[1].Count != 2 || got[1].ByNode["n1"] != 2 {
		t.Fatalf("findings: %+v", got)
	}
}

func TestWriteResults(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	if err := WriteResults(dir, "x", map[string]int{"a": 1}, "# md\n"); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "x.json"))
	var v map[string]int
	if err != nil || json.Unmarshal(b, &v) != nil || v["a"] != 1 {
		t.Fatalf("json: %v %s", err, b)
	}
	if md, _ := os.ReadFile(filepath.Join(dir, "x.md")); string(md) != "# md\n" {
		t.Fatalf("md: %q", md)
	}
	if Truncate("abcdef", 3) != "abc…" || Truncate("ab", 3) != "ab" {
		t.Fatal("truncate")
	}
}

func TestFlagExit(t *testing.T) {
	if FlagExit("x", flag.ErrHelp) != 0 || FlagExit("x", errors.New("bad")) != 2 {
		t.Fatal("exit codes")
	}
}
