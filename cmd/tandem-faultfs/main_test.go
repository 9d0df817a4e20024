package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestServeAndControl runs serve in this process and drives it with the
// control commands, as a test in another process would.
func TestServeAndControl(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
	dir := t.TempDir()
	backing, mnt, sock := filepath.Join(dir, "b"), filepath.Join(dir, "m"), filepath.Join(dir, "c.sock")
	for _, d := range []string{backing, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var serveOut, serveErr syncBuffer
	served := make(chan error, 1)
	go func() {
		served <- run([]string{"serve", "-backing", backing, "-mount", mnt, "-control", sock}, &serveOut, &serveErr)
	}()
	for !strings.Contains(serveOut.String(), "ready") {
		select {
		case err := <-served:
			t.Fatalf("serve ended: %v\n%s", err, serveErr.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	ctl := func(args ...string) (string, error) {
		var out, errOut bytes.Buffer
		err := run(append([]string{"-control", sock}, args...), &out, &errOut)
		return out.String() + errOut.String(), err
	}
	if out, err := ctl("set", "-ops", "write", "-err", "EIO", "-times", "1"); err != nil {
		t.Fatalf("set: %v %s", err, out)
	}
	out, err := ctl("faults")
	if err != nil || !strings.Contains(out, `"err": "EIO"`) || !strings.Contains(out, `"times": 1`) {
		t.Fatalf("faults: %v %s", err, out)
	}
	if err := os.WriteFile(filepath.Join(mnt, "x"), []byte("x"), 0o644); err == nil {
		t.Fatal("write under an EIO fault set from the command line succeeded")
	}
	if out, err := ctl("counters"); err != nil || !strings.Contains(out, `"write/EIO": 1`) {
		t.Fatalf("counters: %v %s", err, out)
	}
	if out, err := ctl("set", "-ops", "bogus", "-err", "EIO"); err == nil || !strings.Contains(out+err.Error(), "unknown operation") {
		t.Fatalf("set with a bad operation: %v %s", err, out)
	}
	if _, err := ctl("frobnicate"); err == nil {
		t.Fatal("an unknown command succeeded")
	}
	if out, err := ctl("unmount"); err != nil {
		t.Fatalf("unmount: %v %s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("serve: %v\n%s", err, serveErr.String())
		}
	case <-ctx.Done():
		t.Fatal("serve did not return after unmount")
	}
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), " "+mnt+" ") {
		t.Fatal("still mounted after serve returned")
	}
}

// syncBuffer is a bytes.Buffer safe for one writer and one reader.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
