package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPasswordFromFileOrStdin(t *testing.T) {
	file := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(file, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pws := &passwordSource{stdin: strings.NewReader("from-stdin\r\nignored\n"), prompt: io.Discard}
	cfg, err := parseIPMIFlag("bmc:624,admin,"+file, pws)
	if err != nil || cfg.Password != "from-file" || cfg.Host != "bmc" || cfg.Port != 624 {
		t.Fatalf("file: %v %v", cfg, err)
	}
	rf, err := parseRedfishFlag("https://bmc,root,-", pws)
	if err != nil || rf.Password != "from-stdin" {
		t.Fatalf("stdin: %v %v", rf, err)
	}
	// Standard input serves one flag only.
	if _, err := parseIPMIFlag("bmc,admin,-", pws); err == nil || !strings.Contains(err.Error(), "already reads its password from stdin") {
		t.Fatalf("second stdin: %v", err)
	}
	empty := &passwordSource{stdin: strings.NewReader("\n"), prompt: io.Discard}
	if _, err := parseIPMIFlag("bmc,admin,-", empty); err == nil || !strings.Contains(err.Error(), "no password on stdin") {
		t.Fatalf("empty stdin: %v", err)
	}
}
