package cephtest

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestKey: a generated key has Ceph's encoding (type AES, 16-byte secret),
// which is why the base64 of every cephx key starts with "AQ".
func TestKey(t *testing.T) {
	k, err := newKey()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := base64.StdEncoding.DecodeString(k)
	if err != nil || len(raw) != 28 || !strings.HasPrefix(k, "AQ") || raw[10] != 16 {
		t.Errorf("key %q (%d bytes, %v) is not a cephx key", k, len(raw), err)
	}
}

// TestStartAndClose starts a one-OSD cluster, checks that it serves and
// that Close leaves no process and no file behind.
func TestStartAndClose(t *testing.T) {
	if err := Available(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	dir := filepath.Join(t.TempDir(), "ceph")
	c, err := Start(ctx, Options{Dir: dir, OSDs: 1, PoolSize: 1, OSDBytes: 2 << 30, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	t.Logf("1 mon, 1 mgr, 1 OSD ready in %v", c.Started.Round(time.Millisecond))
	pids := c.PIDs()
	for _, n := range []string{"mon.a", "mgr.x", "osd.0"} {
		if pids[n] == 0 {
			t.Errorf("%s is not running (%v)", n, pids)
		}
	}
	var df struct {
		Pools []struct {
			Name string `json:"name"`
		} `json:"pools"`
	}
	if err := c.CephJSON(ctx, &df, "df"); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, p := range df.Pools {
		found = found || p.Name == c.Pool
	}
	if !found {
		t.Errorf("pool %s not in ceph df: %+v", c.Pool, df)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for n, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("%s (pid %d) still exists after Close: %v", n, pid, err)
		}
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cluster directory still there after Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestTempDirSweepsOrphans: a directory of a process that is gone is
// removed by the next TempDir; this process's own is kept.
func TestTempDirSweepsOrphans(t *testing.T) {
	// A PID that is surely free: a child that has exited and was reaped.
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	orphan := filepath.Join(os.TempDir(), fmt.Sprintf("%s%d-x", tempPrefix, cmd.Process.Pid))
	if err := os.MkdirAll(filepath.Join(orphan, "c"), 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(orphan) })
	d, err := TempDir()
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(d)
	if _, err := os.Stat(orphan); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("orphan %s still there: %v", orphan, err)
	}
	if !strings.HasPrefix(filepath.Base(d), fmt.Sprintf("%s%d-", tempPrefix, os.Getpid())) {
		t.Errorf("TempDir() = %s, want it named after this process", d)
	}
	d2, err := TempDir()
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(d2)
	if _, err := os.Stat(d); err != nil {
		t.Errorf("TempDir removed this process's own directory: %v", err)
	}
}
