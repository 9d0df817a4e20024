package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// --image must name a regular file (a link to one is fine): a directory,
// a device or a FIFO is a usage error naming what it is, before qemu-img
// runs or anything is created.
func TestProbeImageNeedsRegularFile(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "dir-link")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		dir:         "is a directory, not a regular file",
		fifo:        "is a FIFO, not a regular file",
		"/dev/null": "is a device, not a regular file",
		link:        "(-> " + dir + ") is a directory",
	} {
		_, err := probeImage(context.Background(), path)
		var ue *usageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), want) || !strings.HasPrefix(err.Error(), "--image "+path) {
			t.Errorf("--image %s: %v, want a usage error containing %q", path, err, want)
		}
	}
	if _, err := probeImage(context.Background(), filepath.Join(dir, "missing.img")); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing image: %v", err)
	}
}
