package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadCephKey(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	const key = "AQBSdFRkAAAAABAAg5zq1VJ0yUEeaGCSRD0u3w=="
	for _, tc := range []struct{ name, body string }{
		{"keyring", "[client.tandem]\n\tkey = " + key + "\n\tcaps mon = \"profile rbd\"\n"},
		{"bare", key + "\n"},
		{"bare-comment", "# tandem's key\n" + key},
	} {
		got, err := readCephKey(write(tc.name, tc.body))
		if err != nil || got != key {
			t.Errorf("%s: %q, %v", tc.name, got, err)
		}
	}
	if _, err := readCephKey(write("two", "AQAA\nAQBB\n")); err == nil || !strings.Contains(err.Error(), "no key found") {
		t.Errorf("two lines: %v", err)
	}
	if _, err := readCephKey(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing file was read")
	}
}
