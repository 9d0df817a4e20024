package main

import (
	"strings"
	"testing"
)

// complete runs cobra's hidden __complete command, as the shell scripts do,
// and returns the candidates (the last line is the directive).
func complete(t *testing.T, dir string, args ...string) []string {
	t.Helper()
	r := runCLI(t, "", append([]string{"__complete", "--data-dir", dir}, args...)...)
	r.wantCode(t, 0)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) == 0 || !strings.HasPrefix(lines[len(lines)-1], ":") {
		t.Fatalf("no directive line in %q", r.stdout)
	}
	return lines[:len(lines)-1]
}

func TestCompletionOfNames(t *testing.T) {
	dir, _, _ := startVolumeDaemon(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"volume", "show", ""}, "scratch vm-disk"},
		{[]string{"volume", "verify", "vm"}, "vm-disk"},
		{[]string{"volume", "show", "vm-disk", ""}, ""}, // one name only
		{[]string{"node", "remove", ""}, "node-a node-b node-c"},
		{[]string{"node", "maintenance", ""}, "enable disable"},
		{[]string{"node", "maintenance", "enable", "node-"}, "node-a node-b node-c"},
		{[]string{"volume", "create", "x", "--nodes", "node-a,node-"}, "node-a,node-b node-a,node-c"},
		{[]string{"volume", "promote", "vm-disk", "--node", "node-c"}, "node-c"},
		{[]string{"vm", "disk", "detach", "web", "vm"}, "vm-disk"},
		{[]string{"vm", "disk", "add", "web", "--disk-volume", "scr"}, "scratch"},
		{[]string{"-o", ""}, "table json"},
		{[]string{"cluster", "config", "set", "resync"}, "resync.rate="},
		{[]string{"cluster", "config", "set", "resync.rate="}, ""},
	} {
		got := strings.Join(complete(t, dir, tc.args...), " ")
		if got != tc.want {
			t.Errorf("%q: got %q, want %q", tc.args, got, tc.want)
		}
	}
}

// TestCompletionWithoutDaemon: no daemon means no candidates, not an error
// or a hang.
func TestCompletionWithoutDaemon(t *testing.T) {
	clearEnv(t)
	if got := complete(t, t.TempDir(), "volume", "show", ""); len(got) != 0 {
		t.Errorf("candidates without a daemon: %q", got)
	}
}
