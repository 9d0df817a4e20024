package main

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestQGADisks(t *testing.T) {
	dir := t.TempDir()
	for dev, size := range map[string]string{"vda": "262144\n", "vdb": "131072\n", "loop0": "0\n"} {
		if err := os.MkdirAll(filepath.Join(dir, dev), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, dev, "size"), []byte(size), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := qgaDisks(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []qgaDisk{{Name: "/dev/vda", Dependencies: []string{}, Size: 128 << 20}, {Name: "/dev/vdb", Dependencies: []string{}, Size: 64 << 20}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}
