package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestConfigPath(t *testing.T) {
	dir := t.TempDir()
	def := filepath.Join(dir, "tandem.yaml")
	if got := configPath("", false, def); got != "" {
		t.Fatalf("no default file: %q, want flags only", got)
	}
	if err := os.WriteFile(def, []byte("node_name: n1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		flag     string
		explicit bool
		want     string
	}{
		{"", false, def}, // the default file is read without --config
		{"/etc/other.yaml", true, "/etc/other.yaml"}, // --config wins
		{"", true, ""}, // --config "" reads no file
	}
	for _, c := range cases {
		if got := configPath(c.flag, c.explicit, def); got != c.want {
			t.Errorf("configPath(%q, %v) = %q, want %q", c.flag, c.explicit, got, c.want)
		}
	}
}
