package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSystemdNotify runs tandemd as systemd would (Type=notify with a
// watchdog): it must say READY=1 once it serves, pet the watchdog while its
// health loop runs, and say STOPPING=1 on SIGTERM, then exit 0.
func TestSystemdNotify(t *testing.T) {
	bin := binDir(t)
	dir, err := os.MkdirTemp("", "notify")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "notify.sock")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	free := func() string { return freeAddr(t) }
	cfg := filepath.Join(dir, "tandem.yaml")
	yaml := fmt.Sprintf("node_name: n1\ndata_dir: %s\nbackend_addr: %s\nraft_addr: %s\nadmin_addr: %s\nreplication_addr: %s\nnbd_addr: %s\nmetrics_addr: \"off\"\nwatchdog: \"off\"\ncompute:\n  libvirt_socket: \"off\"\n",
		filepath.Join(dir, "data"), free(), free(), free(), free(), free())
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "tandemd"), "--config", cfg)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock, "WATCHDOG_USEC=2000000")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-exited
		}
	}()

	got := map[string]int{}
	buf := make([]byte, 4096)
	wait := func(msg string, n int) {
		t.Helper()
		for got[msg] < n {
			if err := ln.SetReadDeadline(time.Now().Add(20 * time.Second)); err != nil {
				t.Fatal(err)
			}
			k, err := ln.Read(buf)
			if err != nil {
				t.Fatalf("waiting for %s (seen %v): %v\n%s", msg, got, err, out.String())
			}
			for _, m := range strings.Split(strings.TrimSpace(string(buf[:k])), "\n") {
				got[m]++
			}
		}
	}
	wait("READY=1", 1)
	wait("WATCHDOG=1", 3)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	wait("STOPPING=1", 1)
	if err := <-exited; err != nil {
		t.Fatalf("tandemd after SIGTERM: %v\n%s", err, out.String())
	}
}
