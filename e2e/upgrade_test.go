package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tandemhci/tandem/internal/adminclient"
	"github.com/tandemhci/tandem/internal/guest"
	"github.com/tandemhci/tandem/internal/testcluster"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// streamGap is what the guest's heartbeat showed over part of a test.
type streamGap struct {
	// Longest is the longest interval between two datagrams, AckGap the
	// longest between two datagrams that acknowledged more disk writes.
	Longest, AckGap time.Duration
	// Lost counts the sequence numbers missing within one boot.
	Lost uint64
	// Rebooted is set when the guest's agent started again.
	Rebooted bool
}

// gapSince measures the heartbeat from arrival from on (the arrival before
// it included, so the first gap counts).
func (vc *vmCluster) gapSince(from int) streamGap {
	all := vc.rx.Arrivals()
	var g streamGap
	if len(all) == 0 {
		return g
	}
	from = min(max(0, from-1), len(all)-1)
	lastAck := from
	for i := from + 1; i < len(all); i++ {
		prev, cur := all[i-1], all[i]
		g.Longest = max(g.Longest, cur.At.Sub(prev.At))
		switch {
		case cur.Boot != prev.Boot || cur.Seq < prev.Seq:
			g.Rebooted = true
		case cur.Seq > prev.Seq+1:
			g.Lost += cur.Seq - prev.Seq - 1
		}
		if cur.Acked > all[lastAck].Acked {
			g.AckGap = max(g.AckGap, cur.At.Sub(all[lastAck].At))
			lastAck = i
		}
	}
	return g
}

// restartDaemon stops n's tandemd with SIGTERM (what systemd and a package
// upgrade do) and starts td's build there; it returns how long tandemd was
// gone (SIGTERM to answering again).
func (vc *vmCluster) restartDaemon(t *testing.T, n *testcluster.Node, td *testcluster.Tandem) (stopped, total time.Duration) {
	t.Helper()
	vc.mu.Lock()
	p, lv := vc.pr[n.Name], vc.lv[n.Name]
	vc.mu.Unlock()
	start := time.Now()
	if err := p.Stop(vc.ctx); err != nil {
		t.Fatalf("SIGTERM tandemd on %s: %v", n.Name, err)
	}
	stopped = time.Since(start)
	np, err := td.StartComputeDaemon(vc.ctx, n, lv, vmCapacityMiB)
	if err != nil {
		t.Fatal(err)
	}
	vc.mu.Lock()
	vc.pr[n.Name] = np
	vc.mu.Unlock()
	return stopped, time.Since(start)
}

func (vc *vmCluster) upgradeStatus(t *testing.T, n *testcluster.Node) *tandemv1.UpgradeStatusResponse {
	t.Helper()
	out, stderr, err := vc.td.CLI(vc.ctx, n, "cluster", "upgrade-status", "--output", "json")
	if err != nil {
		t.Fatalf("upgrade-status: %v\n%s", err, stderr)
	}
	var st tandemv1.UpgradeStatusResponse
	if err := adminclient.UnmarshalJSON([]byte(out), &st); err != nil {
		t.Fatalf("upgrade-status: %v\n%s", err, out)
	}
	return &st
}

func upgradeNode(st *tandemv1.UpgradeStatusResponse, name string) *tandemv1.UpgradeNode {
	for _, n := range st.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

func feature(st *tandemv1.UpgradeStatusResponse, name string) *tandemv1.GatedFeature {
	for _, f := range st.Features {
		if f.Name == name {
			return f
		}
	}
	return nil
}

// waitRecorded waits until node name's record says it runs protocol.
func (vc *vmCluster) waitRecorded(t *testing.T, via *testcluster.Node, name string, protocol uint32, ver string) *tandemv1.UpgradeStatusResponse {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		st := vc.upgradeStatus(t, via)
		if n := upgradeNode(st, name); n != nil && n.Protocol == protocol && n.Version == ver {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not record protocol %d (%s) within a minute: %+v", name, protocol, ver, st.Nodes)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// nodeNote is the gated feature: tandem node note via via.
func (vc *vmCluster) nodeNote(via *testcluster.Node, name, note string) (string, error) {
	_, stderr, err := vc.td.CLI(vc.ctx, via, "node", "note", name, note)
	return stderr, err
}

// TestRollingUpgrade is issue 14's rolling upgrade: three nodes run a
// release at protocol level 1; a newer build of the same source (another
// version string, protocol level 2, whose one gated feature is node notes)
// replaces tandemd on each node in turn: the node is evacuated
// (maintenance: the VM, on n1, is live-migrated away), its tandemd stopped
// with SIGTERM and started from the newer build, and failed back (the VM
// returns to n1); while n2 and n3 restart, the VM's disk loses and regains
// those replicas. The guest keeps its boot and its heartbeat loses no
// datagram; the gated feature is refused, naming the node still on the
// older release, until the last node runs the newer one, and works after.
//
// The VM is not also moved onto n2 and n3 before their steps: under QEMU
// TCG on a loaded host about one live migration in three crashes or hangs
// the guest kernel (bench/results/migration.md), and six more migrations
// made the test fail on that rather than on the upgrade.
func TestRollingUpgrade(t *testing.T) {
	// Two live migrations, three restarts and a second build under TCG.
	vc := newVMClusterWith(t, vmClusterOpts{timeout: 20 * time.Minute})
	c, td, ctx := vc.c, vc.td, vc.ctx
	nodes := c.Nodes
	n1 := nodes[0]

	// Every node recorded the release it runs (at start, asynchronously).
	var st *tandemv1.UpgradeStatusResponse
	var oldVer string
	for deadline := time.Now().Add(time.Minute); ; {
		st = vc.upgradeStatus(t, n1)
		oldVer = upgradeNode(st, n1.Name).GetVersion()
		all := len(st.Nodes) == len(nodes)
		for _, n := range st.Nodes {
			all = all && n.Protocol == 1 && n.Version == oldVer && oldVer != "" && !n.Behind
		}
		if all {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the nodes did not record their release within a minute: %+v", st.Nodes)
		}
		time.Sleep(300 * time.Millisecond)
	}
	if st.ClusterVersion != 1 || st.Protocol != 1 {
		t.Fatalf("before the upgrade: %+v", st)
	}
	if f := feature(st, "node-notes"); f == nil || f.Enabled || f.Level != 2 {
		t.Fatalf("node-notes before the upgrade: %+v", f)
	}
	newVer := oldVer + "-next"
	newBin := filepath.Join(t.TempDir(), "next")
	bctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	if err := testcluster.BuildBinariesWith(bctx, newBin, testcluster.BuildOptions{Version: newVer, Protocol: 2}); err != nil {
		cancel()
		t.Fatal(err)
	}
	cancel()
	tdNew := testcluster.NewTandem(c, newBin)

	// The older release does not know the feature at all.
	if stderr, err := vc.nodeNote(n1, n1.Name, "rack 1"); err == nil || !strings.Contains(stderr, "needs protocol level 2") {
		t.Fatalf("node note on the older release: %v\n%s", err, stderr)
	}

	vip := strings.TrimSuffix(c.ReceiverIP, ".1") + ".54"
	info := vc.vm(t, n1, "create", "g1", "--memory", "192M", "--disk", "64M,replicas=3", "--node", n1.Name,
		"--kernel", vc.img.Kernel, "--initrd", vc.img.Initrd, "--cmdline", vc.cmdline(vip), "--nic", c.VMBridge, "--start")
	if info.Node != n1.Name || info.State != "running" {
		t.Fatalf("g1 after create --start: %+v", info)
	}
	first := vc.guestProgress(t, guest.Datagram{}, 3*time.Minute)
	boot := first.Boot
	t.Logf("guest up in boot %d", boot)

	type step struct {
		node                   string
		took, restart, sigterm time.Duration
		gap                    streamGap
		guestCrash             bool
	}
	var steps []step
	for i, n := range nodes {
		other := nodes[(i+1)%len(nodes)]
		if i == len(nodes)-1 {
			// Before the last node: the newer nodes refuse the feature,
			// naming the node still on the older release, and nothing
			// changes.
			stderr, err := vc.nodeNote(nodes[0], n1.Name, "rack 1")
			if err == nil || !strings.Contains(stderr, "cluster version 2") || !strings.Contains(stderr, n.Name+" ("+oldVer) {
				t.Fatalf("node note before the last upgrade: %v\n%s", err, stderr)
			}
			t.Logf("refused before the last upgrade: %s", strings.TrimSpace(stderr))
			st := vc.upgradeStatus(t, other)
			if f := feature(st, "node-notes"); st.ClusterVersion != 1 || f == nil || f.Enabled || strings.Join(f.WaitingOn, ",") != n.Name {
				t.Fatalf("upgrade-status before the last upgrade: %+v %+v", st, f)
			}
			if un := upgradeNode(st, n.Name); un == nil || !un.Behind {
				t.Fatalf("%s not shown as behind: %+v", n.Name, st.Nodes)
			}
		}
		s := step{node: n.Name}
		from := len(vc.rx.Arrivals())
		// The VM's node before the step, where the failback leaves it.
		home := vc.vm(t, other, "show", "g1").Node
		start := time.Now()
		logs := vc.consoleSizes()
		returned, _, _ := vc.rx.Last()
		if out, stderr, err := td.CLI(ctx, other, "node", "maintenance", "enable", n.Name, "--output", "json"); err != nil {
			t.Fatalf("maintenance enable %s: %v\n%s%s", n.Name, err, out, stderr)
		}
		v := vc.waitVM(t, "g1", time.Minute, func(v *tandemv1.VMInfo) bool { return v.Node != n.Name && v.State == "running" })
		d, crashed := vc.movedOn(t, logs, returned, "g1", v.Node, "evacuation")
		s.guestCrash = s.guestCrash || crashed
		if !crashed && d.Boot != boot {
			t.Fatalf("guest rebooted during the evacuation of %s", n.Name)
		}
		boot = d.Boot
		// Upgrade the package: SIGTERM, the newer binary, start.
		s.sigterm, s.restart = vc.restartDaemon(t, n, tdNew)
		vc.waitRecorded(t, other, n.Name, 2, newVer)
		waitVolume(t, ctx, td, other, "g1-disk0", 2*time.Minute, func(v *tandemv1.VolumeInfo) bool {
			return replicaState(v, n.Name).State == tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE
		})
		logs = vc.consoleSizes()
		returned, _, _ = vc.rx.Last()
		if out, stderr, err := td.CLI(ctx, other, "node", "maintenance", "disable", n.Name, "--failback", "balanced"); err != nil {
			t.Fatalf("maintenance disable %s: %v\n%s%s", n.Name, err, out, stderr)
		}
		if v := vc.vm(t, other, "show", "g1"); v.Node != home || v.State != "running" {
			t.Fatalf("g1 after the failback of %s: %+v, want it on %s", n.Name, v, home)
		}
		d, crashed = vc.movedOn(t, logs, returned, "g1", home, "failback")
		s.guestCrash = s.guestCrash || crashed
		if !crashed && d.Boot != boot {
			t.Fatalf("guest rebooted during the failback to %s", n.Name)
		}
		boot = d.Boot
		s.took = time.Since(start)
		s.gap = vc.gapSince(from)
		if !s.guestCrash && (s.gap.Rebooted || s.gap.Lost > 0) {
			t.Fatalf("upgrading %s: the guest's heartbeat lost %d datagram(s) (rebooted: %v)", n.Name, s.gap.Lost, s.gap.Rebooted)
		}
		t.Logf("upgraded %s to %s: step %v (tandemd SIGTERM to exit %v, to answering again %v); longest UDP gap %v, longest disk-ack gap %v, %d datagrams lost",
			n.Name, newVer, s.took.Round(time.Millisecond), s.sigterm.Round(time.Millisecond), s.restart.Round(time.Millisecond),
			s.gap.Longest.Round(time.Millisecond), s.gap.AckGap.Round(time.Millisecond), s.gap.Lost)
		steps = append(steps, s)
	}

	// Every node runs the newer release: the cluster version rose by
	// itself, and the feature works, seen from every node.
	st = vc.upgradeStatus(t, nodes[1])
	if f := feature(st, "node-notes"); st.ClusterVersion != 2 || f == nil || !f.Enabled || len(f.WaitingOn) != 0 {
		t.Fatalf("upgrade-status after the upgrade: %+v %+v", st, f)
	}
	if stderr, err := vc.nodeNote(nodes[2], n1.Name, "rack 1"); err != nil {
		t.Fatalf("node note after the upgrade: %v\n%s", err, stderr)
	}
	out, _, err := td.CLI(ctx, nodes[1], "node", "list", "--output", "json")
	if err != nil {
		t.Fatal(err)
	}
	var nl tandemv1.ListNodesResponse
	if err := adminclient.UnmarshalJSON([]byte(out), &nl); err != nil {
		t.Fatal(err)
	}
	for _, n := range nl.Nodes {
		if n.Version != newVer || n.Protocol != 2 || (n.Name == n1.Name) != (n.Note == "rack 1") {
			t.Fatalf("node list after the upgrade: %s", out)
		}
	}
	if v := vc.vm(t, n1, "show", "g1"); v.State != "running" {
		t.Fatalf("g1 after the upgrade: %+v", v)
	}
	last, _, _ := vc.rx.Last()
	final := vc.guestProgress(t, last, time.Minute)
	if final.Acked < first.Acked {
		t.Fatalf("disk counter went back: %d -> %d", first.Acked, final.Acked)
	}
	var summary []string
	for _, s := range steps {
		summary = append(summary, fmt.Sprintf("%s: %v, gap %v, ack gap %v, lost %d, guest crash %v", s.node, s.took.Round(time.Millisecond),
			s.gap.Longest.Round(time.Millisecond), s.gap.AckGap.Round(time.Millisecond), s.gap.Lost, s.guestCrash))
	}
	t.Logf("rolling upgrade %s -> %s: %s", oldVer, newVer, strings.Join(summary, "; "))
}

// qemuPID is the PID libvirt recorded for domain name on n.
func (vc *vmCluster) qemuPID(t *testing.T, n *testcluster.Node, name string) int {
	t.Helper()
	pidFile := filepath.Join(vc.lv[n.Name].Dir, "run", "libvirt", "qemu", name+".pid")
	raw, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil || pid <= 1 {
		t.Fatalf("QEMU pid file %s: %q", pidFile, raw)
	}
	return pid
}

// TestSIGTERMWithRunningVM stops tandemd with SIGTERM (systemd's stop, a
// package upgrade) on the node running a VM whose guest writes to its
// replicated disk, and starts it again: QEMU keeps running (same process,
// same boot), the guest's disk writes resume, and the gap is reported.
func TestSIGTERMWithRunningVM(t *testing.T) {
	vc := newVMCluster(t)
	c, td, ctx := vc.c, vc.td, vc.ctx
	n1, n2 := c.Nodes[0], c.Nodes[1]
	vip := strings.TrimSuffix(c.ReceiverIP, ".1") + ".55"
	vc.vm(t, n1, "create", "s1", "--memory", "192M", "--disk", "64M,replicas=3", "--node", n1.Name,
		"--kernel", vc.img.Kernel, "--initrd", vc.img.Initrd, "--cmdline", vc.cmdline(vip), "--nic", c.VMBridge, "--start")
	mark := vc.guestProgress(t, guest.Datagram{}, 3*time.Minute)
	pid := vc.qemuPID(t, n1, "s1")

	for round := 1; round <= 2; round++ {
		from := len(vc.rx.Arrivals())
		before, _, _ := vc.rx.Last()
		stopped, total := vc.restartDaemon(t, n1, td)
		if err := syscall.Kill(pid, 0); err != nil {
			t.Fatalf("QEMU (pid %d) is gone after tandemd's SIGTERM and restart: %v", pid, err)
		}
		d := vc.guestProgress(t, before, 2*time.Minute)
		if d.Boot != mark.Boot {
			t.Fatalf("guest restarted across tandemd's SIGTERM: boot %d -> %d", mark.Boot, d.Boot)
		}
		if got := vc.qemuPID(t, n1, "s1"); got != pid {
			t.Fatalf("QEMU was restarted: pid %d -> %d", pid, got)
		}
		g := vc.gapSince(from)
		if g.Rebooted {
			t.Fatal("the guest's heartbeat shows a reboot")
		}
		t.Logf("round %d: tandemd SIGTERM to exit %v, to answering again %v; longest UDP gap %v, longest disk-ack gap %v, %d datagrams lost",
			round, stopped.Round(time.Millisecond), total.Round(time.Millisecond), g.Longest.Round(time.Millisecond), g.AckGap.Round(time.Millisecond), g.Lost)
	}
	if v := vc.vm(t, n2, "show", "s1"); v.Node != n1.Name || v.State != "running" {
		t.Fatalf("s1 after the restarts: %+v", v)
	}
	// What the guest wrote is on every replica.
	waitVolume(t, ctx, td, n2, "s1-disk0", 2*time.Minute, func(v *tandemv1.VolumeInfo) bool {
		for _, r := range v.Replicas {
			if r.State != tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE {
				return false
			}
		}
		return true
	})
	out, _, err := td.CLI(ctx, n1, "volume", "verify", "s1-disk0", "--output", "json")
	if err != nil {
		t.Fatal(err)
	}
	var ver tandemv1.VerifyVolumeResponse
	if err := adminclient.UnmarshalJSON([]byte(out), &ver); err != nil || len(ver.Mismatches) != 0 || ver.CheckedBytes == 0 {
		t.Fatalf("verify after the restarts: %v %s", err, out)
	}
}
