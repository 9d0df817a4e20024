package fencing

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"
)

func testCtx(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

func mustStatus(t *testing.T, f Fencer, want PowerState) {
	t.Helper()
	got, err := f.Status(testCtx(t, 5*time.Second))
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	if got != want {
		t.Fatalf("Status = %s, want %s", got, want)
	}
}

func TestIPMIFenceKillsNodeAndUnfence(t *testing.T) {
	n := startNode(t)
	sim := startBMC(t, n.cmd.Process.Pid)
	agent := NewIPMI(sim.config(simPass, 5*time.Second))

	mustStatus(t, agent, PowerOn)
	if n.gone(0) {
		t.Fatal("node died before fencing")
	}

	res, err := agent.Fence(testCtx(t, 10*time.Second))
	if err != nil {
		t.Fatalf("Fence: %v (ipmi_sim output:\n%s)", err, sim.output.String())
	}
	if !res.Confirmed || !res.PowerOff {
		t.Fatalf("Fence result = %+v, want confirmed power-off", res)
	}
	if res.Agent != agent.Name() || res.At.IsZero() {
		t.Fatalf("Fence result = %+v: agent name or time missing", res)
	}
	// The script kills the node before it records "off", so a confirmed
	// fence means the node is already dead; allow only for reaping.
	if !n.gone(2 * time.Second) {
		t.Fatal("Fence confirmed but the node process is still running")
	}
	mustStatus(t, agent, PowerOff)

	// Fencing an already-off node is still confirmed (idempotent retries).
	if res, err := agent.Fence(testCtx(t, 10*time.Second)); err != nil || !res.Confirmed {
		t.Fatalf("second Fence = %+v, %v; want confirmed", res, err)
	}

	if err := agent.Unfence(testCtx(t, 10*time.Second)); err != nil {
		t.Fatalf("Unfence: %v", err)
	}
	mustStatus(t, agent, PowerOn)
}

func TestIPMIWrongPassword(t *testing.T) {
	n := startNode(t)
	sim := startBMC(t, n.cmd.Process.Pid)
	const wrong = "Wrong-Pa55word-Xy"
	cfg := sim.config(wrong, 2*time.Second)
	agent := NewIPMI(cfg)

	start := time.Now()
	res, err := agent.Fence(testCtx(t, 10*time.Second))
	if err == nil || res.Confirmed || res.PowerOff {
		t.Fatalf("Fence with wrong password = %+v, %v; want error and not confirmed", res, err)
	}
	if !errors.Is(err, ErrNotConfirmed) {
		t.Errorf("error %v does not match ErrNotConfirmed", err)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Errorf("Fence took %s, want within the 2s timeout", el)
	}
	if n.gone(200 * time.Millisecond) {
		t.Fatal("node was killed although authentication failed")
	}
	if _, err := agent.Status(testCtx(t, 5*time.Second)); err == nil {
		t.Error("Status with wrong password succeeded")
	}
	t.Logf("wrong password error: %v", err)

	// The password must not leak through the error, the result, fmt or slog.
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("fence", "cfg", cfg, "agent", agent, "err", err)
	slog.New(slog.NewTextHandler(&logs, nil)).Info("fence", "cfg", cfg, "agent", agent, "err", err)
	texts := map[string]string{
		"error":     err.Error(),
		"detail":    res.Detail,
		"slog":      logs.String(),
		"cfg %v":    fmt.Sprintf("%v", cfg),
		"cfg %+v":   fmt.Sprintf("%+v", cfg),
		"cfg %#v":   fmt.Sprintf("%#v", cfg),
		"cfg %s":    cfg.String(),
		"agent %v":  fmt.Sprintf("%v", agent),
		"agent %+v": fmt.Sprintf("%+v", agent),
		"agent %#v": fmt.Sprintf("%#v", agent),
		"result":    fmt.Sprintf("%+v", res),
	}
	for what, s := range texts {
		if strings.Contains(s, wrong) {
			t.Errorf("%s leaks the password: %s", what, s)
		}
	}
	if !strings.Contains(logs.String(), "REDACTED") {
		t.Errorf("slog output does not show a redacted password: %s", logs.String())
	}
}

func TestScrubbedErrorHidesPassword(t *testing.T) {
	a := &ipmiAgent{cfg: IPMIConfig{Host: "h", Port: 1, Password: "pw-in-lib-error"}.withDefaults()}
	err := a.wrap("connect", fmt.Errorf("library said pw-in-lib-error: %w", context.DeadlineExceeded))
	if strings.Contains(err.Error(), "pw-in-lib-error") {
		t.Fatalf("password leaked: %v", err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("scrubbing lost the cause: %v", err)
	}
}

func TestIPMIUnreachable(t *testing.T) {
	// Nothing listens on this port: no ipmi_sim was started.
	port := freeUDPPort(t)
	const timeout = 2 * time.Second
	agent := NewIPMI(IPMIConfig{Host: "127.0.0.1", Port: port, User: simUser, Password: simPass, Timeout: timeout})

	start := time.Now()
	res, err := agent.Fence(testCtx(t, 30*time.Second))
	el := time.Since(start)
	if err == nil || res.Confirmed || res.PowerOff {
		t.Fatalf("Fence of unreachable BMC = %+v, %v; want error and not confirmed", res, err)
	}
	if el > timeout+time.Second {
		t.Fatalf("Fence took %s, want within the %s timeout", el, timeout)
	}
	if strings.Contains(err.Error(), simPass) {
		t.Fatalf("error leaks the password: %v", err)
	}
	if st, err := agent.Status(testCtx(t, 30*time.Second)); err == nil || st != PowerUnknown {
		t.Fatalf("Status of unreachable BMC = %s, %v; want Unknown and error", st, err)
	}
	t.Logf("unreachable after %s: %v", el, err)
}

func TestIPMISilentBMCTimesOut(t *testing.T) {
	// A BMC that swallows packets (no ICMP refusal): only the timeout ends it.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	const timeout = 1500 * time.Millisecond
	agent := NewIPMI(IPMIConfig{Host: "127.0.0.1", Port: pc.LocalAddr().(*net.UDPAddr).Port, User: simUser, Password: simPass, Timeout: timeout})

	start := time.Now()
	res, err := agent.Fence(testCtx(t, 30*time.Second))
	el := time.Since(start)
	if err == nil || res.Confirmed {
		t.Fatalf("Fence of silent BMC = %+v, %v; want error and not confirmed", res, err)
	}
	if el > timeout+time.Second {
		t.Fatalf("Fence took %s, want within the %s timeout", el, timeout)
	}
	t.Logf("silent BMC after %s: %v", el, err)
}

func TestFenceAnyFallsBackToExpiredLease(t *testing.T) {
	port := freeUDPPort(t)
	ipmi := NewIPMI(IPMIConfig{Host: "127.0.0.1", Port: port, User: simUser, Password: simPass, Timeout: time.Second})
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	lease := 10 * time.Second
	last := now.Add(-(lease + LeaseMargin(lease, DefaultSelfFenceGrace) + time.Millisecond))
	l := NewLease("node-b", last, lease, func() time.Time { return now })

	res, err := FenceAny(testCtx(t, 10*time.Second), ipmi, l)
	if err != nil {
		t.Fatalf("FenceAny: %v", err)
	}
	if !res.Confirmed || res.PowerOff || res.Agent != "lease:node-b" {
		t.Fatalf("FenceAny = %+v; want confirmed by the lease, without power-off", res)
	}
}

func TestFenceAnyLeaseNotExpired(t *testing.T) {
	port := freeUDPPort(t)
	ipmi := NewIPMI(IPMIConfig{Host: "127.0.0.1", Port: port, User: simUser, Password: simPass, Timeout: time.Second})
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	l := NewLease("node-b", now.Add(-5*time.Second), 10*time.Second, func() time.Time { return now })

	res, err := FenceAny(testCtx(t, 10*time.Second), ipmi, l)
	if err == nil || res.Confirmed {
		t.Fatalf("FenceAny = %+v, %v; want not confirmed", res, err)
	}
	if !errors.Is(err, ErrNotConfirmed) {
		t.Errorf("error does not match ErrNotConfirmed: %v", err)
	}
	var active *LeaseActiveError
	if !errors.As(err, &active) {
		t.Fatalf("error carries no LeaseActiveError: %v", err)
	}
	want := 5*time.Second + LeaseMargin(10*time.Second, DefaultSelfFenceGrace)
	if active.Remaining != want {
		t.Errorf("Remaining = %s, want %s", active.Remaining, want)
	}
	if !strings.Contains(err.Error(), ipmi.Name()) || strings.Contains(err.Error(), simPass) {
		t.Errorf("combined error should name the IPMI agent and hide the password: %v", err)
	}
	t.Logf("combined error: %v", err)
}

func TestLeaseBoundary(t *testing.T) {
	lease := 30 * time.Second
	margin := LeaseMargin(lease, DefaultSelfFenceGrace)
	if want := DefaultSelfFenceGrace + 60*time.Millisecond; margin != want {
		t.Fatalf("LeaseMargin(30s) = %s, want %s (2·1000ppm·30s + grace)", margin, want)
	}
	last := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		elapsed time.Duration
		ok      bool
	}{
		{0, false},
		{lease, false},          // the lease alone is not enough
		{lease + margin, false}, // strictly greater is required
		{lease + margin + 1, true},
		{-time.Hour, false}, // a clock that went backwards proves nothing
	} {
		now := last.Add(tc.elapsed)
		f := NewLease("n", last, lease, func() time.Time { return now })
		res, err := f.Fence(t.Context())
		if res.Confirmed != tc.ok || (err == nil) != tc.ok {
			t.Errorf("elapsed %s: Fence = %+v, %v; want confirmed=%v", tc.elapsed, res, err, tc.ok)
		}
	}

	f := NewLease("n", last, 0, nil)
	if res, err := f.Fence(t.Context()); err == nil || res.Confirmed {
		t.Errorf("zero lease confirmed: %+v", res)
	}
	g := NewLease("n", last, lease, func() time.Time { return last.Add(lease + time.Second) }, WithSelfFenceGrace(0))
	if res, err := g.Fence(t.Context()); err != nil || !res.Confirmed {
		t.Errorf("lease+1s with zero grace not confirmed: %+v, %v", res, err)
	}
	if st, err := g.Status(t.Context()); err != nil || st != PowerUnknown {
		t.Errorf("lease Status = %s, %v; want Unknown", st, err)
	}
	if err := g.Unfence(t.Context()); err != nil {
		t.Errorf("lease Unfence: %v", err)
	}
}

// lying breaks the contract: confirmed together with an error.
type lying struct{}

func (lying) Name() string { return "lying" }
func (lying) Fence(context.Context) (Result, error) {
	return Result{Agent: "lying", Confirmed: true}, errors.New("oops")
}
func (lying) Status(context.Context) (PowerState, error) { return PowerUnknown, nil }
func (lying) Unfence(context.Context) error              { return nil }

func TestFenceAnyNeverTrustsFailures(t *testing.T) {
	if res, err := FenceAny(t.Context()); err == nil || res.Confirmed {
		t.Fatalf("FenceAny() with no agents = %+v, %v", res, err)
	}
	if res, err := FenceAny(t.Context(), lying{}); err == nil || res.Confirmed {
		t.Fatalf("FenceAny(lying) = %+v, %v; want not confirmed", res, err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	expired := NewLease("n", time.Time{}, time.Second, nil)
	if res, err := FenceAny(ctx, expired); err == nil || res.Confirmed {
		t.Fatalf("FenceAny with cancelled ctx = %+v, %v; want not confirmed", res, err)
	}
}
