package main

import (
	"os"
	"path/filepath"
	"testing"
)

// TestExportDir: the files land in QEMU's and libnbd's layout with the key
// 0600, and a directory that holds any of them is refused before anything
// is issued, so a key is never overwritten.
func TestExportDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "consumer")
	if err := checkExportDir(dir); err != nil {
		t.Fatalf("a new directory: %v", err)
	}
	if err := writeExportDir(dir, []byte("ca"), []byte("cert"), []byte("key")); err != nil {
		t.Fatal(err)
	}
	for name, mode := range map[string]os.FileMode{exportCAFile: 0o644, exportCertFile: 0o644, exportKeyFile: 0o600} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.Mode().Perm() != mode {
			t.Errorf("%s: %v %v, want mode %v", name, err, fi, mode)
		}
	}
	if err := checkExportDir(dir); err == nil {
		t.Fatal("a directory holding certificate files was accepted")
	}
	if err := writeExportDir(dir, []byte("ca2"), []byte("cert2"), []byte("key2")); err == nil {
		t.Fatal("existing files were overwritten")
	}
	if b, _ := os.ReadFile(filepath.Join(dir, exportKeyFile)); string(b) != "key" {
		t.Fatalf("the key changed: %q", b)
	}
}
