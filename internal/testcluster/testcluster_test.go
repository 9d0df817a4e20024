package testcluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The test binary doubles as the processes run on the simulated hosts: when
// helperEnv is set, TestMain runs a helper instead of the tests. This avoids
// depending on python, nc or socat being installed.
const (
	helperEnv = "TESTCLUSTER_HELPER"
	idEnv     = "TESTCLUSTER_ID"
	echoPort  = "7000"
)

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "echo":
		helperEcho()
	case "dial":
		helperDial(os.Args[1])
	case "ignore-term":
		signal.Ignore(syscall.SIGTERM)
		fmt.Println("ready")
		select {}
	default:
		fmt.Fprintf(os.Stderr, "unknown helper %q\n", os.Getenv(helperEnv))
		os.Exit(2)
	}
}

// helperEcho answers every line with "<id> <line>", so clients can tell
// which cluster answered.
func helperEcho() {
	ln, err := net.Listen("tcp", ":"+echoPort)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println("listening on", ln.Addr())
	id := os.Getenv(idEnv)
	for {
		conn, err := ln.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		go func() {
			defer conn.Close()
			sc := bufio.NewScanner(conn)
			for sc.Scan() {
				fmt.Fprintf(conn, "%s %s\n", id, sc.Text())
			}
		}()
	}
}

// helperDial sends one line to addr and prints the answer; every step is
// bounded so an unreachable or frozen peer fails within about a second.
func helperDial(addr string) {
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		fail(err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(time.Second)); err != nil {
		fail(err)
	}
	if _, err := io.WriteString(conn, "ping\n"); err != nil {
		fail(err)
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		fail(err)
	}
	fmt.Print(line)
}

func testBinary(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

func startEcho(t *testing.T, c *Cluster, n *Node, id string) *Proc {
	t.Helper()
	p, err := c.Start(n, "echo", []string{testBinary(t)}, []string{helperEnv + "=echo", idEnv + "=" + id})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// dial connects from one node to the echo server on another and returns the
// answer.
func dial(t *testing.T, c *Cluster, from, to *Node) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := c.Exec(ctx, from, "env", helperEnv+"=dial", testBinary(t), net.JoinHostPort(to.IP, echoPort))
	return strings.TrimSpace(string(out)), err
}

// waitReachable polls until from gets an answer from to's echo server
// tagged with wantID, failing after a few seconds.
func waitReachable(t *testing.T, c *Cluster, from, to *Node, wantID string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, err := dial(t, c, from, to)
		if err == nil && out == wantID+" ping" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s cannot reach %s: out=%q err=%v\nlog of echo on %s:\n%s",
				from.Name, to.Name, out, err, to.Name, c.LogTail(to, "echo", 10))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func mustNotReach(t *testing.T, c *Cluster, from, to *Node) {
	t.Helper()
	start := time.Now()
	if out, err := dial(t, c, from, to); err == nil {
		t.Fatalf("%s reached %s (%q), want failure", from.Name, to.Name, out)
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("failing dial from %s to %s took %v, want bounded by ~1s timeouts", from.Name, to.Name, d)
	}
}

func netnsNames(t *testing.T) map[string]bool {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	names := map[string]bool{}
	for _, n := range parseNetnsList(out) {
		names[n] = true
	}
	return names
}

func procState(t *testing.T, pid int) byte {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// The state follows the parenthesised command name, which may contain spaces.
	_, rest, ok := strings.Cut(string(data), ") ")
	if !ok || rest == "" {
		t.Fatalf("unexpected /proc/%d/stat: %q", pid, data)
	}
	return rest[0]
}

func TestTopology(t *testing.T) {
	c := newParallel(t, Options{})
	if len(c.Nodes) != 3 {
		t.Fatalf("got %d nodes, want 3", len(c.Nodes))
	}
	if c.Node("n2") != c.Nodes[1] || c.Node("n4") != nil {
		t.Errorf("Node lookup broken")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	all := netnsNames(t)
	if !all[c.swNS] {
		t.Errorf("switch namespace %s missing", c.swNS)
	}
	for i, n := range c.Nodes {
		if n.Index != i+1 || n.Name != fmt.Sprintf("n%d", i+1) || n.IP != fmt.Sprintf("10.99.0.%d", 11+i) {
			t.Errorf("node %d = %+v", i, n)
		}
		if !all[n.NS] {
			t.Errorf("namespace %s missing", n.NS)
		}
		if fi, err := os.Stat(n.Dir); err != nil || !fi.IsDir() {
			t.Errorf("node dir %s: %v", n.Dir, err)
		}
		out, err := c.Exec(ctx, n, "ip", "-4", "-o", "addr", "show")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(out), "eth0    inet "+n.IP+"/24") || !strings.Contains(string(out), "lo    inet 127.0.0.1/8") {
			t.Errorf("%s addresses:\n%s", n.Name, out)
		}
	}
	out, err := exec.Command("ip", "-n", c.swNS, "-o", "link", "show", "master", "br0").CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	for _, port := range []string{"vn1@", "vn2@", "vn3@"} {
		if !strings.Contains(string(out), port) {
			t.Errorf("bridge port %s missing:\n%s", port, out)
		}
	}
	// The root namespace must stay untouched.
	root, err := exec.Command("ip", "-4", "-o", "addr", "show").CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(root), " 10.99.0.") {
		t.Errorf("root namespace has a cluster address:\n%s", root)
	}
}

func TestReachIsolateHeal(t *testing.T) {
	c := newParallel(t, Options{})
	n1, n2, n3 := c.Node("n1"), c.Node("n2"), c.Node("n3")
	startEcho(t, c, n1, "n1")
	p2 := startEcho(t, c, n2, "n2")

	waitReachable(t, c, n1, n2, "n2")
	waitReachable(t, c, n3, n2, "n2")
	waitReachable(t, c, n2, n1, "n1")
	if tail := c.LogTail(n2, "echo", 5); !strings.Contains(tail, "listening on") {
		t.Errorf("LogTail = %q, want the listening line", tail)
	}

	c.Isolate(n2)
	mustNotReach(t, c, n1, n2)
	mustNotReach(t, c, n3, n2)
	mustNotReach(t, c, n2, n1) // both directions
	waitReachable(t, c, n3, n1, "n1")
	waitReachable(t, c, n2, n2, "n2") // the node itself keeps working
	if !p2.Alive() {
		t.Fatal("echo on isolated n2 died")
	}

	c.Heal(n2)
	waitReachable(t, c, n1, n2, "n2")
	waitReachable(t, c, n2, n1, "n1")
}

func TestKillRestart(t *testing.T) {
	c := newParallel(t, Options{})
	n1, n2 := c.Node("n1"), c.Node("n2")
	p := startEcho(t, c, n2, "first")
	waitReachable(t, c, n1, n2, "first")

	if _, err := c.Start(n2, "echo", []string{testBinary(t)}, nil); err == nil {
		t.Error("starting a second live process with the same name succeeded")
	}

	pid := p.PID()
	c.Kill(n2)
	if p.Alive() {
		t.Error("Alive after Kill")
	}
	if err := unix.Kill(pid, 0); !errors.Is(err, unix.ESRCH) {
		t.Errorf("pid %d still exists after Kill (err %v)", pid, err)
	}
	if err := p.Wait(context.Background()); err == nil {
		t.Error("Wait after SIGKILL returned nil")
	}
	mustNotReach(t, c, n1, n2)

	p2 := startEcho(t, c, n2, "second")
	if p2.PID() == pid {
		t.Errorf("restart reused pid %d", pid)
	}
	waitReachable(t, c, n1, n2, "second")
	if tail := c.LogTail(n2, "echo", 100); strings.Count(tail, "=== testcluster:") != 2 {
		t.Errorf("log should show two starts:\n%s", tail)
	}
}

func TestPauseResume(t *testing.T) {
	c := newParallel(t, Options{})
	n1, n2 := c.Node("n1"), c.Node("n2")
	p := startEcho(t, c, n2, "n2")
	waitReachable(t, c, n1, n2, "n2")

	c.Pause(n2)
	if s := procState(t, p.PID()); s != 'T' {
		t.Errorf("state after Pause = %c, want T", s)
	}
	mustNotReach(t, c, n1, n2)
	if !p.Alive() {
		t.Fatal("paused process reported dead")
	}

	c.Resume(n2)
	waitReachable(t, c, n1, n2, "n2")
	if s := procState(t, p.PID()); s == 'T' {
		t.Error("still stopped after Resume")
	}
}

func TestStop(t *testing.T) {
	c, n1 := oneNode(t)

	p := startEcho(t, c, n1, "x")
	c.Pause(n1) // Stop must also end a paused process
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := p.Stop(ctx); err != nil {
		t.Errorf("Stop: %v", err)
	}
	if p.Alive() {
		t.Error("Alive after Stop")
	}

	stubborn, err := c.Start(n1, "stubborn", []string{testBinary(t)}, []string{helperEnv + "=ignore-term"})
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(c.LogTail(n1, "stubborn", 1), "ready"); {
		if time.Now().After(deadline) {
			t.Fatalf("helper not ready:\n%s", c.LogTail(n1, "stubborn", 10))
		}
		time.Sleep(10 * time.Millisecond)
	}
	short, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel2()
	if err := stubborn.Stop(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Stop of SIGTERM-ignoring process = %v, want DeadlineExceeded", err)
	}
	if stubborn.Alive() {
		t.Error("Alive after Stop escalated to SIGKILL")
	}
}

func TestStartAndExecErrors(t *testing.T) {
	c, n1 := oneNode(t)
	if _, err := c.Start(n1, "missing", []string{"/nonexistent/binary"}, nil); err == nil {
		t.Error("Start of a missing binary succeeded")
	}
	other := &Node{Name: "n1"}
	if _, err := c.Start(other, "x", []string{"true"}, nil); err == nil {
		t.Error("Start on a foreign node succeeded")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := c.Exec(ctx, n1, "sh", "-c", "echo boom; exit 3")
	if err == nil || !strings.Contains(err.Error(), "boom") {
		t.Errorf("Exec error = %v, want it to include the output", err)
	}
	short, cancel2 := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel2()
	start := time.Now()
	if _, err := c.Exec(short, n1, "sleep", "30"); err == nil {
		t.Error("Exec outliving its context succeeded")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Exec ignored context cancellation for %v", d)
	}
}

func TestCloseRemovesEverything(t *testing.T) {
	c := newParallel(t, Options{})
	p := startEcho(t, c, c.Node("n3"), "n3")
	// A stray that left the harness's process group must die too.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Exec(ctx, c.Node("n1"), "sh", "-c", "setsid sleep 300 >/dev/null 2>&1 </dev/null &"); err != nil {
		t.Fatal(err)
	}
	names := append([]string{c.swNS}, c.Nodes[0].NS, c.Nodes[1].NS, c.Nodes[2].NS)
	strays, err := c.nsPids(c.Nodes[0].NS)
	if err != nil || len(strays) == 0 {
		t.Fatalf("stray sleep not found in n1: %v %v", strays, err)
	}

	c.Close()
	c.Close() // idempotent
	if p.Alive() {
		t.Error("process alive after Close")
	}
	all := netnsNames(t)
	for _, ns := range names {
		if all[ns] {
			t.Errorf("namespace %s survived Close", ns)
		}
	}
	for _, pid := range strays {
		// Not our child: it becomes a zombie of init until reaped, so give
		// it a moment and accept a zombie.
		deadline := time.Now().Add(2 * time.Second)
		for unix.Kill(pid, 0) == nil && procStateOrZ(pid) != 'Z' && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if unix.Kill(pid, 0) == nil && procStateOrZ(pid) != 'Z' {
			t.Errorf("stray pid %d survived Close", pid)
		}
	}
	if _, err := c.Start(c.Node("n1"), "late", []string{"true"}, nil); err == nil {
		t.Error("Start after Close succeeded")
	}
}

func procStateOrZ(pid int) byte {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 'Z'
	}
	if _, rest, ok := strings.Cut(string(data), ") "); ok && rest != "" {
		return rest[0]
	}
	return 'Z'
}

func TestConcurrentClustersSameSubnet(t *testing.T) {
	Require(t)
	t.Parallel()
	a := New(t, Options{})
	b := New(t, Options{})
	if a.Nodes[1].IP != b.Nodes[1].IP || a.Nodes[1].NS == b.Nodes[1].NS {
		t.Fatalf("want same IPs in distinct namespaces: %+v %+v", a.Nodes[1], b.Nodes[1])
	}
	startEcho(t, a, a.Node("n2"), "a")
	startEcho(t, b, b.Node("n2"), "b")
	waitReachable(t, a, a.Node("n1"), a.Node("n2"), "a")
	waitReachable(t, b, b.Node("n1"), b.Node("n2"), "b")

	// Faults stay inside their cluster.
	a.Isolate(a.Node("n2"))
	mustNotReach(t, a, a.Node("n1"), a.Node("n2"))
	waitReachable(t, b, b.Node("n1"), b.Node("n2"), "b")
	a.Heal(a.Node("n2"))
	waitReachable(t, a, a.Node("n1"), a.Node("n2"), "a")
}

func TestStaleSweep(t *testing.T) {
	Require(t)
	t.Parallel()
	// The "creator" stays alive while the namespace is set up, so that
	// other tests' sweeps (in parallel, also from other packages) leave it
	// alone; it dies just before our New, which must sweep it.
	creator := exec.Command("sleep", "300")
	if err := creator.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = creator.Process.Kill() })
	stale := fmt.Sprintf("%s%d-dead-sw", nsPrefix, creator.Process.Pid)
	if out, err := exec.Command("ip", "netns", "add", stale).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "delete", stale).Run() })

	// An orphan still running inside the stale namespace.
	orphan := exec.Command("ip", "netns", "exec", stale, "sleep", "300")
	orphan.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := orphan.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- orphan.Wait() }()
	t.Cleanup(func() { _ = orphan.Process.Kill() })
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		out, _ := exec.Command("ip", "netns", "pids", stale).Output()
		if strings.TrimSpace(string(out)) != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("orphan never entered the stale namespace")
		}
	}

	_ = creator.Process.Kill()
	_ = creator.Wait()
	New(t, Options{Nodes: 1})
	if netnsNames(t)[stale] {
		t.Errorf("stale namespace %s not swept", stale)
	}
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		t.Error("process in stale namespace not killed")
	}
}

func TestCreatorPID(t *testing.T) {
	for name, want := range map[string]int{
		"tdmt1234-0a1f-sw": 1234,
		"tdmt77-beef-n12":  77,
		"tdmtx-n1":         0,
		"other1234-a-sw":   0,
		"tdmt-1-a":         0,
	} {
		got, ok := creatorPID(name)
		if ok != (want != 0) || got != want {
			t.Errorf("creatorPID(%q) = %d, %v; want %d", name, got, ok, want)
		}
	}
}

func TestPidAlive(t *testing.T) {
	if !pidAlive(os.Getpid()) {
		t.Error("own pid reported dead")
	}
	zombie := exec.Command("true")
	if err := zombie.Start(); err != nil {
		t.Fatal(err)
	}
	defer zombie.Wait()
	for deadline := time.Now().Add(2 * time.Second); procStateOrZ(zombie.Process.Pid) != 'Z'; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("child never became a zombie")
		}
	}
	if pidAlive(zombie.Process.Pid) {
		t.Error("zombie reported alive")
	}
}

const crashChildEnv = "TESTCLUSTER_CRASH_CHILD"

// TestCrashChild is the victim of TestCrashedTestIsSwept; it only runs when
// that test re-executes the binary.
func TestCrashChild(t *testing.T) {
	if os.Getenv(crashChildEnv) == "" {
		t.Skip("only run as a child of TestCrashedTestIsSwept")
	}
	c := New(t, Options{Nodes: 2})
	p := startEcho(t, c, c.Node("n2"), "victim")
	fmt.Printf("READY %d %s\n", p.PID(), c.prefix)
	select {} // wait to be SIGKILLed
}

// TestCrashedTestIsSwept SIGKILLs a test binary holding a cluster and checks
// that its processes die with it and the next New removes its namespaces.
func TestCrashedTestIsSwept(t *testing.T) {
	Require(t)
	t.Parallel()
	child := exec.Command(testBinary(t), "-test.run=^TestCrashChild$")
	child.Env = append(os.Environ(), crashChildEnv+"=1")
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = child.Process.Kill(); _ = child.Wait() })

	var echoPID int
	var prefix string
	ready := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if _, err := fmt.Sscanf(sc.Text(), "READY %d %s", &echoPID, &prefix); err == nil {
				ready <- nil
				return
			}
		}
		ready <- fmt.Errorf("child exited before READY: %v", sc.Err())
	}()
	select {
	case err := <-ready:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("child never became ready")
	}

	// Counted before the crash: once the child is dead, any concurrent
	// New may already sweep its namespaces.
	owned := 0
	for ns := range netnsNames(t) {
		if strings.HasPrefix(ns, prefix+"-") {
			owned++
		}
	}
	if owned != 3 {
		t.Fatalf("child cluster has %d namespaces, want 3 (sw, n1, n2)", owned)
	}

	if err := child.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()
	// PDEATHSIG: the echo server dies with the test binary. It is no longer
	// our descendant, so accept an unreaped zombie.
	for deadline := time.Now().Add(2 * time.Second); pidAlive(echoPID); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("echo pid %d survived its crashed test binary", echoPID)
		}
	}
	New(t, Options{Nodes: 1})
	for ns := range netnsNames(t) {
		if strings.HasPrefix(ns, prefix+"-") {
			t.Errorf("namespace %s of crashed test not swept", ns)
		}
	}
}

// oneNode starts a one-node cluster for a test running in parallel.
func oneNode(t *testing.T) (*Cluster, *Node) {
	t.Helper()
	c := newParallel(t, Options{Nodes: 1})
	return c, c.Node("n1")
}

// newParallel starts a cluster for a test that runs in parallel with
// others, skipping it where Require does.
func newParallel(t *testing.T, o Options) *Cluster {
	t.Helper()
	Require(t)
	t.Parallel()
	return New(t, o)
}
