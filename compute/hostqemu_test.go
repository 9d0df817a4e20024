package compute

import (
	"context"
	"os"
	"os/exec"
	"slices"
	"syscall"
	"testing"
	"time"
)

// A test binary re-run under QEMU's name stands in for a QEMU process:
// FindHostQEMU reads only the command line and the namespace.
func TestMain(m *testing.M) {
	if os.Getenv("TANDEM_FAKE_QEMU") == "1" {
		time.Sleep(time.Minute)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestKillHostQEMU(t *testing.T) {
	const dom = "unit-test-fake-qemu"
	cmd := exec.Command(os.Args[0], "-name", "guest="+dom+",debug-threads=on", "-S")
	cmd.Args[0] = "/usr/bin/qemu-system-x86_64"
	cmd.Env = append(os.Environ(), "TANDEM_FAKE_QEMU=1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	procs, err := FindHostQEMU()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(procs, HostQEMU{PID: cmd.Process.Pid, Domain: dom}) {
		t.Fatalf("fake QEMU %d not found: %v", cmd.Process.Pid, procs)
	}
	// Only matching domains are killed; this one is not reaped yet (a
	// paused libvirtd would not reap it either): a zombie counts as dead.
	if killed, err := KillHostQEMU(t.Context(), func(d string) bool { return d == "other" }); err != nil || len(killed) != 0 {
		t.Fatalf("killed %v, %v", killed, err)
	}
	if err := syscall.Kill(cmd.Process.Pid, 0); err != nil {
		t.Fatal("a QEMU that did not match was killed")
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	killed, err := KillHostQEMU(ctx, func(d string) bool { return d == dom })
	if err != nil || !slices.Equal(killed, []string{dom}) {
		t.Fatalf("killed %v, %v", killed, err)
	}
	if err := cmd.Wait(); err == nil {
		t.Fatal("the fake QEMU exited normally; it was not killed")
	}
	if st, _ := cmd.ProcessState.Sys().(syscall.WaitStatus); st.Signal() != syscall.SIGKILL {
		t.Fatalf("fake QEMU ended with %v, want SIGKILL", cmd.ProcessState)
	}
}
