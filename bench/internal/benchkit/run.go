package benchkit

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Report is what a benchmark publishes: every program's *Report implements
// it.
type Report interface {
	// Markdown renders the human report.
	Markdown() string
	// AddError records a problem of the whole run in the report.
	AddError(msg string)
	// Problems counts what makes the run fail (exit code 1).
	Problems() int
}

// PartialSuffix is added to the name of a run's results when it did not
// complete, so that they never replace the committed ones.
const PartialSuffix = ".partial"

// Finish publishes rep under the package's policy (see the package doc) and
// returns the program's exit code. rep may be nil: the run failed before it
// had anything to report. R is the report's pointer type (*Report).
func Finish[T any, R interface {
	*T
	Report
}](ctx context.Context, log *slog.Logger, out, name string, rep R, err error) int {
	var why string
	switch {
	case ctx.Err() != nil:
		why = fmt.Sprintf("run interrupted: %v (results are partial)", context.Cause(ctx))
	case err != nil:
		why = fmt.Sprintf("run failed: %v (results are partial)", err)
	}
	if rep != nil {
		file := name
		if why != "" {
			rep.AddError(why)
			file += PartialSuffix
		}
		if werr := Publish(log, out, file, rep, rep.Markdown()); werr != nil {
			log.Error("writing results", "err", werr)
			return 1
		}
	}
	switch {
	case why != "":
		if rep == nil {
			why += "; nothing written"
		}
		log.Error("benchmark incomplete", "why", why)
		return 1
	case rep == nil:
		// execute returns a report or an error; this is a bug.
		log.Error("benchmark returned no report")
		return 1
	case rep.Problems() > 0:
		log.Error("benchmark finished with problems (see the report)", "count", rep.Problems())
		return 1
	}
	return 0
}

// Render re-renders the Markdown of the results file path (after a change
// of the report's layout) into dir/name.md, and copies the JSON unchanged
// to dir/name.json.
func Render[T any, R interface {
	*T
	Report
}](path, dir, name string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read results: %w", err)
	}
	rep := R(new(T))
	if err := json.Unmarshal(data, rep); err != nil {
		return fmt.Errorf("decode %s: %w", path, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("results dir: %w", err)
	}
	// Read before written: path may be dir/name.json itself.
	if err := os.WriteFile(filepath.Join(dir, name+".json"), data, 0o644); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".md"), []byte(rep.Markdown()), 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

// CheckPartial marks an empty report as Finish marks an interrupted run's
// and checks that it renders with the mark: a run cut short publishes
// whatever it has, so every renderer must cope with missing parts.
func CheckPartial(rep Report) error {
	const mark = "run interrupted: test (results are partial)"
	rep.AddError(mark)
	if md := rep.Markdown(); !strings.Contains(md, mark) || rep.Problems() != 1 {
		return fmt.Errorf("partial report without its mark or counted %d problems:\n%s", rep.Problems(), md)
	}
	return nil
}

// CheckRender checks that rep's JSON holds everything its Markdown needs:
// decoded again (as Render does), it renders the same Markdown.
func CheckRender[T any, R interface {
	*T
	Report
}](rep R) error {
	js, err := json.Marshal(rep)
	if err != nil {
		return fmt.Errorf("encode: %w", err)
	}
	back := R(new(T))
	if err := json.Unmarshal(js, back); err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	if back.Markdown() != rep.Markdown() {
		return errors.New("the Markdown rendered from the JSON differs")
	}
	return nil
}

// Common is the flags every benchmark program shares; each program's config
// embeds it.
type Common struct {
	// Bin holds tandemd and tandem; empty builds them (Binaries).
	Bin string
	// Out receives <name>.json and <name>.md.
	Out string
	// Timeout bounds the whole run (RunContext).
	Timeout time.Duration
	// Render, when set, only re-renders the Markdown of this results file
	// into Out (the programs that offer -render).
	Render string
}

// ParseArgs parses args with fs and refuses positional arguments: the
// benchmarks take flags only.
func ParseArgs(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	return nil
}

// Shared is c itself: it lets Main reach the embedded Common of any config.
func (c Common) Shared() Common { return c }

// Flags registers -bin, -out and -timeout (default timeout) on fs, and
// -render when render.
func (c *Common) Flags(fs *flag.FlagSet, name string, timeout time.Duration, render bool) {
	fs.StringVar(&c.Bin, "bin", "", "directory holding tandemd and tandem; empty builds them into a temporary directory")
	fs.StringVar(&c.Out, "out", "bench/results", fmt.Sprintf("directory for %s.json and %s.md", name, name))
	fs.DurationVar(&c.Timeout, "timeout", timeout, "bound on the whole run")
	if render {
		fs.StringVar(&c.Render, "render", "", fmt.Sprintf("only re-render the Markdown report of this %s.json into -out (and copy the JSON there), without running anything", name))
	}
}

// Main is a benchmark program's whole run: parse its flags, then either
// re-render (-render) or execute under RunContext and publish through
// Finish. It returns the exit code.
func Main[C interface{ Shared() Common }, T any, R interface {
	*T
	Report
}](name string, args []string, parse func([]string) (C, error), execute func(context.Context, *slog.Logger, C) (R, error)) int {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	cfg, err := parse(args)
	if err != nil {
		return FlagExit(name, err)
	}
	com := cfg.Shared()
	if com.Render != "" {
		if err := Render[T, R](com.Render, com.Out, name); err != nil {
			log.Error("render", "err", err)
			return 1
		}
		return 0
	}
	ctx, cancel := RunContext(com.Timeout)
	defer cancel()
	rep, err := execute(ctx, log, cfg)
	return Finish(ctx, log, com.Out, name, rep, err)
}
