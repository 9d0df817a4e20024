package benchkit

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/tandemhci/tandem/internal/testcluster"
)

// WriteResults writes rep as <dir>/<name>.json and md as <dir>/<name>.md.
func WriteResults(dir, name string, rep any, md string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("results dir: %w", err)
	}
	js, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return fmt.Errorf("encode results: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".json"), append(js, '\n'), 0o644); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".md"), []byte(md), 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

// LogFinding is a group of similar WARN/ERROR lines in the tandemd logs.
type LogFinding struct {
	Level   string         `json:"level"`
	Pattern string         `json:"pattern"`
	Count   int            `json:"count"`
	ByNode  map[string]int `json:"by_node"`
	Example string         `json:"example"`
}

// Truncate shortens s to n bytes plus an ellipsis.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// ScanDaemonLogs groups the WARN and ERROR lines of every node's tandemd
// log, digits masked, most frequent first (ERROR before WARN).
func ScanDaemonLogs(c *testcluster.Cluster) []LogFinding {
	digits := regexp.MustCompile(`[0-9]+`)
	groups := map[string]*LogFinding{}
	for _, n := range c.Nodes {
		f, err := os.Open(filepath.Join(n.Dir, "tandemd.log"))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			var level string
			switch {
			case strings.Contains(line, "level=ERROR"):
				level = "ERROR"
			case strings.Contains(line, "level=WARN"):
				level = "WARN"
			default:
				continue
			}
			msg := line
			if i := strings.Index(line, " msg="); i >= 0 {
				msg = line[i+1:]
			}
			key := level + " " + digits.ReplaceAllString(Truncate(msg, 160), "N")
			g, ok := groups[key]
			if !ok {
				g = &LogFinding{Level: level, Pattern: key[len(level)+1:], ByNode: map[string]int{}, Example: line}
				groups[key] = g
			}
			g.Count++
			g.ByNode[n.Name]++
		}
		f.Close()
	}
	out := slices.Collect(maps.Values(groups))
	slices.SortFunc(out, func(a, b *LogFinding) int {
		if a.Level != b.Level {
			return strings.Compare(a.Level, b.Level)
		}
		return b.Count - a.Count
	})
	res := make([]LogFinding, 0, len(out))
	for _, g := range out {
		res = append(res, *g)
	}
	return res
}

// FlagExit is a program's exit code for an error of its flags: 0 for -help
// (the flag package has printed the usage), else 2 after printing
// "prog: err".
func FlagExit(prog string, err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	fmt.Fprintln(os.Stderr, prog+":", err)
	return 2
}

// RunContext is the context of a whole run: cancelled by SIGINT or SIGTERM
// and after timeout.
func RunContext(timeout time.Duration) (context.Context, context.CancelFunc) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	return ctx, func() { cancel(); stop() }
}

// Publish writes rep and md as <dir>/<name>.json and .md, prints md to
// stdout and logs where they went.
func Publish(log *slog.Logger, dir, name string, rep any, md string) error {
	if err := WriteResults(dir, name, rep, md); err != nil {
		return err
	}
	fmt.Print(md)
	log.Info("results written", "json", filepath.Join(dir, name+".json"), "markdown", filepath.Join(dir, name+".md"))
	return nil
}
