package testcluster

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tandemhci/tandem/fencing"
)

// fenceFrom runs f with the fencing agent's sockets in from's namespace,
// where tandemd would run it.
func fenceFrom(t *testing.T, c *Cluster, from *Node, f func() error) {
	t.Helper()
	if err := c.InNetns(from, f); err != nil {
		t.Fatal(err)
	}
}

func TestBMCPowerCycle(t *testing.T) {
	Require(t)
	if _, err := exec.LookPath("ipmi_sim"); err != nil {
		t.Fatalf("ipmi_sim not installed (make deps installs openipmi): %v", err)
	}
	c := New(t, Options{Nodes: 2})
	n1, n2 := c.Nodes[0], c.Nodes[1]
	echo := startEcho(t, c, n1, "first")
	waitReachable(t, c, n2, n1, "first")

	booted := make(chan struct{}, 1)
	bmc := startEchoBMC(t, c, n1, "reborn", booted)
	if !strings.HasPrefix(bmc.Addr, strings.TrimSuffix(n1.IP, "11")) || bmc.Port != BMCPort {
		t.Errorf("BMC address %s, want on the backend subnet of %s, port %d", bmc.Addr, n1.IP, BMCPort)
	}
	if pw, err := os.ReadFile(bmc.PasswordFile); err != nil || strings.TrimSpace(string(pw)) != bmc.Password {
		t.Errorf("password file %s: %q, %v", bmc.PasswordFile, pw, err)
	}
	if fi, err := os.Stat(bmc.PasswordFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("password file mode: %v, %v", fi.Mode(), err)
	}

	cfg := bmc.IPMIConfig()
	cfg.Timeout = 5 * time.Second
	cfg.PollInterval = 50 * time.Millisecond
	agent := fencing.NewIPMI(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Power off through the real agent, from n2 as tandemd would.
	var res fencing.Result
	var ferr error
	fenceFrom(t, c, n2, func() error { res, ferr = agent.Fence(ctx); return nil })
	if ferr != nil || !res.Confirmed || !res.PowerOff {
		t.Fatalf("Fence = %+v, %v; want confirmed power off\n%s", res, ferr, c.LogTail(c.sw, "bmc-n1", 20))
	}
	// The BMC answered "off" only after the kill: no waiting needed.
	if echo.Alive() {
		t.Fatal("n1's process survived a confirmed power off")
	}
	if pids, _ := c.nsPids(n1.NS); len(pids) != 0 {
		t.Fatalf("processes left in %s after power off: %v", n1.NS, pids)
	}
	if bmc.PoweredOn() {
		t.Error("harness believes n1 is on after power off")
	}
	mustNotReach(t, c, n2, n1)
	var ps fencing.PowerState
	fenceFrom(t, c, n2, func() error { ps, ferr = agent.Status(ctx); return nil })
	if ferr != nil || ps != fencing.PowerOff {
		t.Fatalf("Status = %v, %v; want off", ps, ferr)
	}
	// Fencing an already fenced host is confirmed again.
	fenceFrom(t, c, n2, func() error { res, ferr = agent.Fence(ctx); return nil })
	if ferr != nil || !res.Confirmed {
		t.Fatalf("second Fence = %+v, %v", res, ferr)
	}

	// Power on: ports up and the On hook boots the host again.
	fenceFrom(t, c, n2, func() error { ferr = agent.Unfence(ctx); return nil })
	if ferr != nil {
		t.Fatalf("Unfence: %v", ferr)
	}
	select {
	case <-booted:
	case <-ctx.Done():
		t.Fatal("On hook not called after power on")
	}
	if err := bmc.WaitBoot(ctx); err != nil {
		t.Fatalf("On hook: %v", err)
	}
	if !bmc.PoweredOn() {
		t.Error("harness believes n1 is off after power on")
	}
	waitReachable(t, c, n2, n1, "reborn")

	// An unreachable BMC: fencing fails, never confirms, within its timeout,
	// and the host keeps running.
	bmc.Unreachable(true)
	short := cfg
	short.Timeout = 2 * time.Second
	fenceFrom(t, c, n2, func() error { res, ferr = fencing.NewIPMI(short).Fence(ctx); return nil })
	if ferr == nil || res.Confirmed || !errors.Is(ferr, fencing.ErrNotConfirmed) {
		t.Fatalf("Fence with BMC unreachable = %+v, %v; want an unconfirmed error", res, ferr)
	}
	if strings.Contains(ferr.Error(), bmc.Password) {
		t.Fatalf("fencing error leaks the BMC password: %v", ferr)
	}
	if ctx.Err() != nil {
		t.Fatalf("Fence not bounded by its own timeout: %v", ctx.Err())
	}
	if !bmc.PoweredOn() {
		t.Fatal("host powered off by an unreachable BMC")
	}
	waitReachable(t, c, n2, n1, "reborn")

	// Back again: status works.
	bmc.Unreachable(false)
	fenceFrom(t, c, n2, func() error { ps, ferr = agent.Status(ctx); return nil })
	if ferr != nil || ps != fencing.PowerOn {
		t.Fatalf("Status after BMC returned = %v, %v; want on", ps, ferr)
	}
}

// TestBMCResetWithIpmitool drives the BMC with the stock client, including a
// hard reset (off then on) and the password file.
func TestBMCResetWithIpmitool(t *testing.T) {
	Require(t)
	if _, err := exec.LookPath("ipmitool"); err != nil {
		t.Fatalf("ipmitool not installed (make deps installs it): %v", err)
	}
	c := New(t, Options{Nodes: 2})
	n1, n2 := c.Nodes[0], c.Nodes[1]
	first := startEcho(t, c, n1, "first")
	boots := make(chan struct{}, 4)
	bmc := startEchoBMC(t, c, n1, "reset", boots)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ipmitool := func(args ...string) string {
		t.Helper()
		argv := append([]string{"ipmitool", "-I", "lanplus", "-C", "3", "-H", bmc.Host, "-p", "623", "-U", bmc.User, "-f", bmc.PasswordFile}, args...)
		out, err := c.Exec(ctx, n2, argv...)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(out))
	}
	if out := ipmitool("chassis", "power", "status"); out != "Chassis Power is on" {
		t.Fatalf("status: %q", out)
	}
	ipmitool("chassis", "power", "reset")
	select {
	case <-boots:
	case <-ctx.Done():
		t.Fatal("no boot after reset")
	}
	if first.Alive() {
		t.Fatal("process survived a reset")
	}
	if err := bmc.WaitBoot(ctx); err != nil {
		t.Fatal(err)
	}
	waitReachable(t, c, n2, n1, "reset")
	if out := ipmitool("chassis", "power", "status"); out != "Chassis Power is on" {
		t.Fatalf("status after reset: %q", out)
	}
}

// startEchoBMC starts n's BMC; each power-on starts the echo helper with
// id and then signals booted.
func startEchoBMC(t *testing.T, c *Cluster, n *Node, id string, booted chan<- struct{}) *BMC {
	t.Helper()
	exe := testBinary(t)
	bmc, err := c.StartBMC(context.Background(), n, PowerHooks{On: func(ctx context.Context, n *Node) error {
		_, err := c.Start(n, "echo", []string{exe}, []string{helperEnv + "=echo", idEnv + "=" + id})
		booted <- struct{}{}
		return err
	}})
	if err != nil {
		t.Fatal(err)
	}
	return bmc
}
