package main

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tandemhci/tandem/internal/testcluster"
)

// binDir builds tandemd (and tandem) as `make build` does, into a directory
// of the test's own. The end-to-end tests, which start clusters, are in e2e/.
func binDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := testcluster.BuildBinaries(ctx, dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestStartupErrors: configuration and environment problems stop tandemd
// with a non-zero exit and a one-line reason.
func TestStartupErrors(t *testing.T) {
	bin := binDir(t)
	dir := t.TempDir()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	notDir := filepath.Join(dir, "file")
	if err := os.WriteFile(notDir, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	badCfg := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(badCfg, []byte("node_name: n1\nbackend_addr: 127.0.0.1:1\nfrobnicate: yes\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	free := func() string { return freeAddr(t) }
	base := func(data string) []string {
		return []string{"--node-name", "n1", "--data-dir", data, "--backend-addr", free(), "--raft-addr", free(), "--admin-addr", free(), "--metrics-addr", "off",
			"--replication-addr", free(), "--nbd-addr", free()}
	}
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"port in use", append(base(filepath.Join(dir, "d1")), "--admin-addr", busy.Addr().String()), "port already in use"},
		{"data dir not writable", base(filepath.Join(notDir, "sub")), "data dir"},
		{"unknown config key", []string{"--config", badCfg}, "frobnicate"},
		{"missing node name", []string{"--backend-addr", free(), "--data-dir", filepath.Join(dir, "d2")}, "node_name"},
		{"bad role", append(base(filepath.Join(dir, "d3")), "--role", "boss"), "role"},
		{"missing config file", []string{"--config", filepath.Join(dir, "nope.yaml")}, "no such file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, filepath.Join(bin, "tandemd"), tc.args...)
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() == 0 {
				t.Fatalf("want non-zero exit, got %v\n%s", err, out)
			}
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			if len(lines) != 1 || !strings.HasPrefix(lines[0], "tandemd: ") || !strings.Contains(lines[0], tc.want) {
				t.Fatalf("want one line 'tandemd: ...%s...', got:\n%s", tc.want, out)
			}
		})
	}
}

// freeAddr is a loopback address no one listens on (as long as no one
// takes it meanwhile: the tests bind it soon after).
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
