package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tandemhci/tandem/internal/adminclient"
	"github.com/tandemhci/tandem/internal/cephtest"
	"github.com/tandemhci/tandem/internal/testcluster"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// qemuIO is an interactive qemu-io on an RBD image, run in a node's
// namespace through QEMU's own librbd: an independent client that can
// write to the image like a stale QEMU could.
type qemuIO struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	mu    sync.Mutex
	out   bytes.Buffer
}

const qemuIOPrompt = "qemu-io> "

// startQemuIO opens pool/image read-write as client.user (keyring) with
// no cache, so every write goes to the OSDs at once.
func startQemuIO(t *testing.T, ctx context.Context, n *testcluster.Node, ceph *cephtest.Cluster, image, user, keyring string) *qemuIO {
	t.Helper()
	spec := fmt.Sprintf("rbd:%s/%s:id=%s:keyring=%s:conf=%s", ceph.Pool, image, user, keyring, ceph.Conf)
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", n.NS, "qemu-io", "-f", "raw", "-t", "none", spec)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	q := &qemuIO{cmd: cmd, stdin: stdin}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatalf("qemu-io: %v", err)
	}
	pid := cmd.Process.Pid
	t.Cleanup(func() {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		_ = cmd.Wait()
		_ = pw.Close()
	})
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := pr.Read(buf)
			q.mu.Lock()
			q.out.Write(buf[:k])
			q.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	if _, err := q.waitPrompt(0, time.Minute); err != nil {
		t.Fatalf("qemu-io on %s did not open %s: %v", n.Name, image, err)
	}
	return q
}

// kill ends the qemu-io process (SIGKILL) and waits for it.
func (q *qemuIO) kill() {
	_ = q.cmd.Process.Kill()
	_ = q.cmd.Wait()
}

// waitPrompt waits for a prompt after output offset from and returns the
// output before it.
func (q *qemuIO) waitPrompt(from int, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		q.mu.Lock()
		s := q.out.String()[from:]
		q.mu.Unlock()
		if i := strings.Index(s, qemuIOPrompt); i >= 0 {
			return s[:i], nil
		}
		if time.Now().After(deadline) {
			return s, fmt.Errorf("no qemu-io prompt within %v; output so far: %q", timeout, s)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// run sends one command and returns its output.
func (q *qemuIO) run(cmd string, timeout time.Duration) (string, error) {
	q.mu.Lock()
	// Past the prompt that came before this command.
	from := q.out.Len()
	q.mu.Unlock()
	if _, err := io.WriteString(q.stdin, cmd+"\n"); err != nil {
		return "", err
	}
	return q.waitPrompt(from, timeout)
}

// eventsOrder checks that events matching match[0], match[1], ... occur
// in that order: each is the first match after the previous one, and no
// later step matched between the two (what came before the first one is
// not looked at).
func eventsOrder(t *testing.T, evs []*tandemv1.Event, what []string, match ...func(*tandemv1.Event) bool) {
	t.Helper()
	last := -1
	for i, m := range match {
		at := -1
		for k := last + 1; k < len(evs); k++ {
			if m(evs[k]) {
				at = k
				break
			}
		}
		if at < 0 {
			t.Fatalf("no %s event after %s; events:\n%s", what[i], strings.Join(what[:i], " < "), eventLines(evs))
		}
		for k := last + 1; k < at && i > 0; k++ {
			for j := i + 1; j < len(match); j++ {
				if match[j](evs[k]) {
					t.Fatalf("%s (event %d) came before %s (event %d); want %s; events:\n%s", what[j], k, what[i], at, strings.Join(what, " < "), eventLines(evs))
				}
			}
		}
		last = at
	}
}

// TestRBDHAFailover is issue 15's HA acceptance for a VM whose disk is on
// RBD, on a 3-node cluster with a BMC per host and a micro Ceph:
//
//  1. Hard loss of the VM's host (created with --disk 64M,backend=rbd),
//     fenced by IPMI: the VM restarts on another node only after the
//     fence is confirmed, the old QEMU's client is blocklisted (the
//     takeover event names it) and the new owner is committed (labelled
//     HA recovery), in that event order, and the guest's disk counter is
//     at least the last value it reported acknowledged.
//  2. Power fencing broken (BMC unreachable, --no-lease) and the host
//     frozen and cut off, with a live stale writer on it (qemu-io, which
//     wrote a marker before): with ha.rbd_blocklist_is_fence off the VM
//     waits in "fence" with the reason shown; turned on, recovery
//     proceeds on the blocklist alone (rbd-blocklist before vm-recovered).
//     The host comes back (SIGCONT): the stale writer's write fails with
//     EBLOCKLISTED, the image still holds its old marker, not the new
//     data, and the host destroys its stale QEMU of the VM.
//  3. The blocklist entries are recorded per node (storage show) and
//     leave the catalog and Ceph only once their node proved its old
//     clients gone: n3's once it is powered back on; the host's not while
//     the stale writer lives (which still cannot write), and once it is
//     killed.
func TestRBDHAFailover(t *testing.T) {
	vc, ceph, keyring := rbdVMCluster(t, vmClusterOpts{bmc: true, timeout: 20 * time.Minute})
	c, td, ctx := vc.c, vc.td, vc.ctx
	for _, n := range c.Nodes {
		vc.fenceConfig(t, n)
	}
	n1, n3 := c.Nodes[0], c.Nodes[2]
	up := vc.guestWithDisk(t, "hr", n3, 61, "64M,backend=rbd")
	const hv = "hr-disk0"
	if v := volumeCmd(t, ctx, td, n1, "show", hv); v.Backend != "rbd" || v.Primary != n3.Name {
		t.Fatalf("volume %s of hr (--disk 64M,backend=rbd): backend %q, owner %s", hv, v.Backend, v.Primary)
	}
	t.Logf("guest hr up on %s with its disk on RBD, %d writes acknowledged", n3.Name, up.Acked)

	// 1. Hard loss, IPMI fencing.
	lost, _, first := vc.loseHost(t, n3, up, 2*time.Minute)
	v := vc.vm(t, n1, "show", "hr")
	if v.Node == n3.Name || v.State != "running" {
		t.Fatalf("hr after recovery: %+v", v)
	}
	evs := vc.events(t, n1)
	eventsOrder(t, evs, []string{"IPMI fence confirmed", "RBD takeover with the old client blocklisted", "the owner's commit, by HA", "vm-recovered"},
		func(e *tandemv1.Event) bool {
			return e.Kind == "fence-result" && e.Node == n3.Name && strings.Contains(e.Detail, "confirmed by ipmi")
		},
		func(e *tandemv1.Event) bool {
			return e.Kind == "volume-rbd-takeover" && strings.HasPrefix(e.Detail, "volume "+hv+":") && strings.Contains(e.Detail, "from "+n3.Name) &&
				strings.Contains(e.Detail, "blocklisted ") && !strings.Contains(e.Detail, "blocklisted none")
		},
		func(e *tandemv1.Event) bool {
			return e.Kind == "volume-owner" && strings.HasPrefix(e.Detail, "volume "+hv+":") && strings.HasSuffix(e.Detail, "; HA recovery")
		},
		func(e *tandemv1.Event) bool { return e.Kind == "vm-recovered" && e.Vm == "hr" })
	for _, e := range evs {
		if at := e.GetAt().AsTime(); at.After(lost) {
			t.Logf("  +%v %s %s %s", at.Sub(lost).Round(time.Millisecond), e.Kind, e.Node, clip(e.Detail, 160))
		}
	}
	// The old QEMU's client is recorded as n3's blocklist entry, and stays
	// in Ceph's blocklist while n3 is down.
	old3 := blocklistedOf(t, ctx, td, n1, n3.Name)
	if len(old3) == 0 {
		t.Fatalf("no blocklist entry of %s recorded after the takeover", n3.Name)
	}
	if inCeph := cephBlocklist(t, ctx, ceph); !containsAll(inCeph, old3) {
		t.Fatalf("Ceph's blocklist %v lacks %s's recorded entries %v", inCeph, n3.Name, old3)
	}
	c.Heal(n3)
	c.HealVM(n3)
	if err := vc.powerOn(t, vc.bmc[n3.Name]); err != nil {
		t.Fatal(err)
	}

	// 2. Power fencing broken, a stale writer on the host.
	host := c.Node(v.Node)
	var witness *testcluster.Node
	for _, n := range c.Nodes {
		if n != host {
			witness = n
			break
		}
	}
	stale := startQemuIO(t, ctx, host, ceph, hv, "tandem", keyring)
	const at = "32M"
	if out, err := stale.run("write -P 0xcd "+at+" 64k", time.Minute); err != nil || !strings.Contains(out, "wrote 65536/65536") {
		t.Fatalf("the stale writer could not write its marker before the loss: %v\n%s", err, out)
	}
	vc.fenceConfig(t, host, "--no-lease")
	vc.bmc[host.Name].Unreachable(true)
	t.Cleanup(func() { vc.bmc[host.Name].Unreachable(false) })
	c.Pause(host)
	c.Isolate(host)
	c.IsolateVM(host)
	// The guest is frozen: its last report is its last acknowledged write.
	time.Sleep(200 * time.Millisecond)
	before := vc.lastFromBoot(first.Boot)
	waitEvent(t, vc, witness, 2*time.Minute, func(e *tandemv1.Event) bool {
		return e.Kind == "fence-result" && e.Node == host.Name && strings.Contains(e.Detail, "not confirmed")
	})
	var hs *tandemv1.HAVM
	for deadline := time.Now().Add(time.Minute); ; {
		hs = haState(vc.haStatus(t, witness), "hr")
		if hs.HaState == "fence" && strings.Contains(hs.Reason, "ha.rbd_blocklist_is_fence is off") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("with power fencing broken and ha.rbd_blocklist_is_fence off, want hr waiting in fence with that reason: %+v", hs)
		}
		time.Sleep(time.Second)
	}
	t.Logf("setting off: hr waits: %s", hs.Reason)
	time.Sleep(3 * time.Second)
	if hs = haState(vc.haStatus(t, witness), "hr"); hs.Node != host.Name || hs.HaState != "fence" {
		t.Fatalf("recovery went on without fencing: %+v", hs)
	}
	if _, stderr, err := td.CLI(ctx, witness, "cluster", "config", "set", "ha.rbd_blocklist_is_fence=true"); err != nil {
		t.Fatalf("config set: %v\n%s", err, stderr)
	}
	set := time.Now()
	second := vc.waitRecovered(t, before, 2*time.Minute)
	t.Logf("setting on: hr restarted %v later; disk counter %d >= last acknowledged %d", time.Since(set).Round(time.Millisecond), second.Acked, before.Acked)
	evs = vc.events(t, witness)
	eventsOrder(t, evs, []string{"the unconfirmed power fence of " + host.Name, "rbd-blocklist of its clients", "vm-recovered"},
		func(e *tandemv1.Event) bool {
			return e.Kind == "fence-result" && e.Node == host.Name && strings.Contains(e.Detail, "not confirmed")
		},
		func(e *tandemv1.Event) bool {
			return e.Kind == "rbd-blocklist" && e.Node == host.Name && !strings.Contains(e.Detail, "none open")
		},
		func(e *tandemv1.Event) bool { return e.Kind == "vm-recovered" && e.Vm == "hr" })

	// The host comes back: its stale writer's writes fail and never land.
	c.Heal(host)
	c.HealVM(host)
	c.Resume(host)
	out, err := stale.run("write -P 0xab "+at+" 64k", 2*time.Minute)
	if err != nil {
		t.Fatalf("the stale writer's write did not return: %v", err)
	}
	if strings.Contains(out, "wrote ") || !strings.Contains(out, "Cannot send after transport endpoint shutdown") {
		t.Fatalf("want the stale writer's write to fail with EBLOCKLISTED (ESHUTDOWN), got: %q", out)
	}
	t.Logf("stale writer on %s after the failover: %s", host.Name, strings.TrimSpace(out))
	img := rbdHead(t, ctx, c, ceph, hv)
	off := 32 << 20
	if len(img) < off+65536 {
		t.Fatalf("image export is %d bytes", len(img))
	}
	if !bytes.Equal(img[off:off+65536], bytes.Repeat([]byte{0xcd}, 65536)) {
		t.Fatalf("at %s the image does not hold the marker written before the loss (first byte %#x): the stale write landed", at, img[off])
	}
	// The host's own QEMU of hr is gone once it is back: one VM, one place.
	vc.mu.Lock()
	sock := vc.lv[host.Name].Socket
	vc.mu.Unlock()
	for deadline := time.Now().Add(time.Minute); ; {
		out, err := exec.CommandContext(ctx, "virsh", "-c", "qemu:///system?socket="+sock, "list", "--name").CombinedOutput()
		if err == nil && !strings.Contains(string(out), "hr") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stale hr still runs on %s after it came back: %v\n%s", host.Name, err, out)
		}
		time.Sleep(time.Second)
	}
	if v := vc.vm(t, witness, "show", "hr"); v.Node == host.Name || v.State != "running" {
		t.Fatalf("hr at the end: %+v", v)
	}

	// 3. The blocklist entries go only once their node proved its old
	// clients gone. n3 came back powered off and on: nothing of it can
	// hold one, so its entries leave Ceph and the catalog.
	waitUnblocklisted(t, ctx, td, ceph, witness, n3.Name, old3, 2*time.Minute)
	// The host's entries stay while the stale writer lives, although its
	// stale QEMU is gone: a process of the host may still hold one.
	oldHost := blocklistedOf(t, ctx, td, witness, host.Name)
	if len(oldHost) < 2 {
		t.Fatalf("want the blocklist entries of %s's QEMU and of the stale writer recorded, got %v", host.Name, oldHost)
	}
	time.Sleep(25 * time.Second) // two sweeps of the host
	if still := blocklistedOf(t, ctx, td, witness, host.Name); !containsAll(still, oldHost) {
		t.Fatalf("%s's entries %v were removed (left %v) while its stale writer still runs", host.Name, oldHost, still)
	}
	if inCeph := cephBlocklist(t, ctx, ceph); !containsAll(inCeph, oldHost) {
		t.Fatalf("Ceph's blocklist %v lacks %s's entries %v while its stale writer still runs", inCeph, host.Name, oldHost)
	}
	out, err = stale.run("write -P 0xab "+at+" 64k", 2*time.Minute)
	if err != nil || strings.Contains(out, "wrote ") {
		t.Fatalf("the stale writer wrote again before its entry was removed: %v %q", err, out)
	}
	stale.kill()
	waitUnblocklisted(t, ctx, td, ceph, witness, host.Name, oldHost, 2*time.Minute)
	img = rbdHead(t, ctx, c, ceph, hv)
	if !bytes.Equal(img[off:off+65536], bytes.Repeat([]byte{0xcd}, 65536)) {
		t.Fatalf("at %s the image lost the marker written before the loss (first byte %#x)", at, img[off])
	}
}

// blocklistedOf lists the blocklist entries recorded for node on storage
// ceph1 (storage show).
func blocklistedOf(t *testing.T, ctx context.Context, td *testcluster.Tandem, n *testcluster.Node, node string) []string {
	t.Helper()
	out, stderr, err := td.CLI(ctx, n, "storage", "show", "ceph1", "--output", "json")
	if err != nil {
		t.Fatalf("storage show: %v\n%s", err, stderr)
	}
	var st tandemv1.StorageInfo
	if err := adminclient.UnmarshalJSON([]byte(out), &st); err != nil {
		t.Fatalf("storage show: %v\n%s", err, out)
	}
	var addrs []string
	for _, b := range st.Blocklisted {
		if b.Node == node {
			addrs = append(addrs, b.Addr)
		}
	}
	return addrs
}

// cephBlocklist is Ceph's own OSD blocklist, addresses only.
func cephBlocklist(t *testing.T, ctx context.Context, ceph *cephtest.Cluster) []string {
	t.Helper()
	var ls []struct {
		Addr string `json:"addr"`
	}
	// Pacific prints the address entries, then the range entries.
	raw, err := ceph.Ceph(ctx, "osd", "blocklist", "ls", "--format", "json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.NewDecoder(bytes.NewReader(raw)).Decode(&ls); err != nil {
		t.Fatalf("ceph osd blocklist ls: %v: %q", err, raw)
	}
	var out []string
	for _, e := range ls {
		out = append(out, e.Addr)
	}
	return out
}

func containsAll(have, want []string) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}

// waitUnblocklisted waits until node's entries addrs are gone from the
// catalog and from Ceph's blocklist, with the rbd-unblocklist event that
// says why.
func waitUnblocklisted(t *testing.T, ctx context.Context, td *testcluster.Tandem, ceph *cephtest.Cluster, n *testcluster.Node, node string, addrs []string, timeout time.Duration) {
	t.Helper()
	start := time.Now()
	for {
		left := blocklistedOf(t, ctx, td, n, node)
		inCeph := cephBlocklist(t, ctx, ceph)
		if !slices.ContainsFunc(addrs, func(a string) bool { return slices.Contains(left, a) || slices.Contains(inCeph, a) }) {
			break
		}
		if time.Since(start) > timeout {
			t.Fatalf("%s's blocklist entries %v not removed within %v: catalog still has %v, Ceph %v", node, addrs, timeout, left, inCeph)
		}
		time.Sleep(2 * time.Second)
	}
	var ev *tandemv1.Event
	for _, e := range clusterEvents(t, ctx, td, n) {
		if e.Kind == "rbd-unblocklist" && strings.Contains(e.Detail, ": "+node+" dropped") {
			ev = e
		}
	}
	if ev == nil {
		t.Fatalf("no rbd-unblocklist event for %s", node)
	}
	t.Logf("%s's blocklist entries removed %v after the check began: %s", node, time.Since(start).Round(time.Second), ev.Detail)
}
