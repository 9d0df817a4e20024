package benchkit

import (
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type fakeReport struct {
	Value  int      `json:"value"`
	Errors []string `json:"errors,omitempty"`
}

func (r *fakeReport) Markdown() string    { return "# fake\n" + strings.Join(r.Errors, "\n") }
func (r *fakeReport) AddError(msg string) { r.Errors = append(r.Errors, msg) }
func (r *fakeReport) Problems() int       { return len(r.Errors) }

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func exists(t *testing.T, path string) bool {
	t.Helper()
	_, err := os.Stat(path)
	return err == nil
}

func TestFinishComplete(t *testing.T) {
	dir := t.TempDir()
	if code := Finish(context.Background(), quiet(), dir, "x", &fakeReport{Value: 1}, nil); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if !exists(t, filepath.Join(dir, "x.json")) || !exists(t, filepath.Join(dir, "x.md")) || exists(t, filepath.Join(dir, "x.partial.json")) {
		t.Fatal("a complete run publishes x.json and x.md only")
	}
	if code := Finish(context.Background(), quiet(), dir, "x", &fakeReport{Errors: []string{"e"}}, nil); code != 1 {
		t.Fatalf("a report with problems: exit %d", code)
	}
}

func TestFinishInterruptedKeepsCommittedResults(t *testing.T) {
	dir := t.TempDir()
	committed := filepath.Join(dir, "x.json")
	if err := os.WriteFile(committed, []byte("committed"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if code := Finish(ctx, quiet(), dir, "x", &fakeReport{}, nil); code != 1 {
		t.Fatalf("exit %d", code)
	}
	if b, _ := os.ReadFile(committed); string(b) != "committed" {
		t.Fatalf("committed results overwritten: %q", b)
	}
	md, err := os.ReadFile(filepath.Join(dir, "x.partial.md"))
	if err != nil || !strings.Contains(string(md), "run interrupted: context canceled (results are partial)") {
		t.Fatalf("partial report %q %v", md, err)
	}
	// A failed run without a report writes nothing.
	if code := Finish(context.Background(), quiet(), dir, "y", (*fakeReport)(nil), errors.New("boom")); code != 1 || exists(t, filepath.Join(dir, "y.partial.json")) {
		t.Fatalf("exit %d", code)
	}
	// A failed run with a report writes it as partial.
	if code := Finish(context.Background(), quiet(), dir, "z", &fakeReport{}, errors.New("boom")); code != 1 {
		t.Fatalf("exit %d", code)
	}
	if md, _ := os.ReadFile(filepath.Join(dir, "z.partial.md")); !strings.Contains(string(md), "run failed: boom") {
		t.Fatalf("failed report %q", md)
	}
}

func TestRender(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "x.json")
	if err := os.WriteFile(src, []byte(`{"value":3,"errors":["e1"]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Render[fakeReport](src, dir, "x"); err != nil {
		t.Fatal(err)
	}
	if md, _ := os.ReadFile(filepath.Join(dir, "x.md")); string(md) != "# fake\ne1" {
		t.Fatalf("md %q", md)
	}
	if js, _ := os.ReadFile(src); string(js) != `{"value":3,"errors":["e1"]}` {
		t.Fatalf("json changed: %q", js)
	}
}

func TestCheckPartial(t *testing.T) {
	if err := CheckPartial(&fakeReport{}); err != nil {
		t.Fatal(err)
	}
	if err := CheckPartial(&fakeReport{Errors: []string{"other"}}); err == nil {
		t.Fatal("a second problem passes")
	}
}

type fakeConfig struct{ Common }

func parseFake(args []string) (fakeConfig, error) {
	var c fakeConfig
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c.Flags(fs, "x", time.Minute, true)
	return c, fs.Parse(args)
}

func TestMainRuns(t *testing.T) {
	dir := t.TempDir()
	ran := false
	exec := func(ctx context.Context, _ *slog.Logger, c fakeConfig) (*fakeReport, error) {
		ran = true
		if _, ok := ctx.Deadline(); !ok || c.Out != dir {
			t.Errorf("context without the timeout, or out %q", c.Out)
		}
		return &fakeReport{Value: 2}, nil
	}
	if code := Main("x", []string{"-help"}, parseFake, exec); code != 0 || ran {
		t.Fatalf("-help: exit %d, ran %v", code, ran)
	}
	if code := Main("x", []string{"-out", dir}, parseFake, exec); code != 0 || !ran || !exists(t, filepath.Join(dir, "x.md")) {
		t.Fatalf("run: exit %d, ran %v", code, ran)
	}
	ran = false
	if code := Main("x", []string{"-out", t.TempDir(), "-render", filepath.Join(dir, "x.json")}, parseFake, exec); code != 0 || ran {
		t.Fatalf("render: exit %d, ran %v", code, ran)
	}
}

func TestParseArgs(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	n := fs.Int("n", 1, "")
	if err := ParseArgs(fs, []string{"-n", "3"}); err != nil || *n != 3 {
		t.Fatalf("ParseArgs = %v, n %d", err, *n)
	}
	fs = flag.NewFlagSet("x", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	if err := ParseArgs(fs, []string{"extra"}); err == nil || !strings.Contains(err.Error(), `unexpected arguments: ["extra"]`) {
		t.Errorf("ParseArgs with a positional argument = %v", err)
	}
	if err := ParseArgs(fs, []string{"-nope"}); err == nil {
		t.Error("ParseArgs accepted an unknown flag")
	}
}
