package blockstore

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestProbeDisk(t *testing.T) {
	dir := t.TempDir()
	info, err := ProbeDisk(dir)
	if err != nil {
		t.Fatal(err)
	}
	if info.Kind != DiskDir || info.Capacity <= 0 || info.Free <= 0 || info.Free > info.Capacity || info.FSType == "" {
		t.Fatalf("ProbeDisk(dir) = %+v", info)
	}
	t.Logf("%s: %+v", dir, info)

	if _, err := ProbeDisk(filepath.Join(dir, "nope")); !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("missing path: %v", err)
	}
	file := filepath.Join(dir, "f")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ProbeDisk(file); !errors.Is(err, ErrNotDisk) || !strings.Contains(err.Error(), "regular file") {
		t.Errorf("regular file: %v", err)
	}
	if _, err := ProbeDisk("/dev/null"); !errors.Is(err, ErrNotDisk) || !strings.Contains(err.Error(), "character device") {
		t.Errorf("/dev/null: %v", err)
	}
}
