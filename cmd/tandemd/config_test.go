package main

import (
	"os"
	"path/filepath"
	"strings"
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

// TestInsecureTCPFlag: --migration-uri qemu+tcp needs --libvirt-insecure-tcp.
func TestInsecureTCPFlag(t *testing.T) {
	set := map[string]string{"node_name": "n1", "backend_addr": "10.0.0.1", "data_dir": t.TempDir(), "compute.migration_uri": "qemu+tcp://10.0.0.1/system"}
	if _, err := loadConfig("", set); err == nil || !strings.Contains(err.Error(), "compute.libvirt_insecure_tcp: true") {
		t.Fatalf("qemu+tcp without the flag: %v", err)
	}
	set["compute.libvirt_insecure_tcp"] = "yes"
	if _, err := loadConfig("", set); err == nil || !strings.Contains(err.Error(), "--libvirt-insecure-tcp") {
		t.Fatalf("--libvirt-insecure-tcp yes: %v", err)
	}
	set["compute.libvirt_insecure_tcp"] = "true"
	c, err := loadConfig("", set)
	if err != nil || !c.Compute.LibvirtInsecureTCP {
		t.Fatalf("with the flag: %+v, %v", c.Compute, err)
	}
}
