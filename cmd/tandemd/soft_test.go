package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSoftSettingsApplied: tandemd re-executes itself so that dragonboat
// reads tandemd's soft settings. The re-executed image counts the settings
// dragonboat reports applying and warns on stderr when any is missing, so
// a clean `tandemd --version` shows that all were applied; and it leaves
// no temporary directory behind, and runs in the directory it was started
// in (a relative --config path is found).
func TestSoftSettingsApplied(t *testing.T) {
	bin := filepath.Join(binDir(t), "tandemd")
	tmp, work := t.TempDir(), t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	run := func(args ...string) (string, string, error) {
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Dir = work
		cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
		var out, errOut strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		return out.String(), errOut.String(), err
	}
	out, errOut, err := run("--version")
	if err != nil || !strings.HasPrefix(out, "tandemd ") || errOut != "" {
		t.Fatalf("tandemd --version: %v\nstdout: %s\nstderr: %s", err, out, errOut)
	}
	if err := os.WriteFile(filepath.Join(work, "rel.yaml"), []byte("frobnicate: yes\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, errOut, err = run("--config", "rel.yaml")
	if err == nil || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, "frobnicate") {
		t.Fatalf("relative --config: want the one-line error about its key, got %v: %s", err, errOut)
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Fatalf("left behind in TMPDIR: %v", left)
	}
}
