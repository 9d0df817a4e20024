package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/gopacket"

	"github.com/tandemhci/tandem/compute"
	"github.com/tandemhci/tandem/internal/adminclient"
	"github.com/tandemhci/tandem/internal/guest"
	"github.com/tandemhci/tandem/internal/testcluster"
	"github.com/tandemhci/tandem/netannounce"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
	"github.com/tandemhci/tandem/replication"
)

// events returns the cluster's event log as the CLI shows it in JSON.
func (vc *vmCluster) events(t *testing.T, n *testcluster.Node) []*tandemv1.Event {
	t.Helper()
	return clusterEvents(t, vc.ctx, vc.td, n)
}

// splitJSONObjects splits concatenated top-level JSON objects.
func splitJSONObjects(s string) []string {
	var out []string
	depth, start, inStr, esc := 0, -1, false, false
	for i, r := range s {
		switch {
		case esc:
			esc = false
		case inStr && r == '\\':
			esc = true
		case r == '"':
			inStr = !inStr
		case inStr:
		case r == '{':
			if depth == 0 {
				start = i
			}
			depth++
		case r == '}':
			depth--
			if depth == 0 && start >= 0 {
				out = append(out, s[start:i+1])
			}
		}
	}
	return out
}

// firstEvent is the index of the first event matching, or -1.
func firstEvent(evs []*tandemv1.Event, match func(*tandemv1.Event) bool) int {
	for i, e := range evs {
		if match(e) {
			return i
		}
	}
	return -1
}

func (vc *vmCluster) haStatus(t *testing.T, n *testcluster.Node) *tandemv1.HAStatusResponse {
	t.Helper()
	out, _, err := vc.td.CLI(vc.ctx, n, "ha", "status", "--output", "json")
	if err != nil {
		t.Fatal(err)
	}
	var st tandemv1.HAStatusResponse
	if err := adminclient.UnmarshalJSON([]byte(out), &st); err != nil {
		t.Fatal(err)
	}
	return &st
}

func haState(st *tandemv1.HAStatusResponse, vm string) *tandemv1.HAVM {
	for _, v := range st.Vms {
		if v.Name == vm {
			return v
		}
	}
	return &tandemv1.HAVM{}
}

// crash is a hard host loss: every process SIGKILLed and the links down.
func (vc *vmCluster) crash(n *testcluster.Node) {
	vc.c.Kill(n)
	vc.c.Isolate(n)
	vc.c.IsolateVM(n)
}

// guestVM starts a guest VM with a 3-replica (or 2 with a witness) disk on node.
func (vc *vmCluster) guestVM(t *testing.T, name string, node *testcluster.Node, ipLast int, replicas int) guest.Datagram {
	t.Helper()
	return vc.guestWithDisk(t, name, node, ipLast, fmt.Sprintf("64M,replicas=%d", replicas))
}

// guestWithDisk starts the test guest with one new disk (vm create --disk
// disk) on node and waits until it has acknowledged disk writes.
func (vc *vmCluster) guestWithDisk(t *testing.T, name string, node *testcluster.Node, ipLast int, disk string) guest.Datagram {
	t.Helper()
	ip := fmt.Sprintf("%s.%d", strings.TrimSuffix(vc.c.ReceiverIP, ".1"), ipLast)
	vc.vm(t, node, "create", name, "--memory", "192M", "--disk", disk, "--node", node.Name,
		"--kernel", vc.img.Kernel, "--initrd", vc.img.Initrd, "--cmdline", vc.cmdline(ip),
		"--nic", vc.c.VMBridge+",ip="+ip, "--start")
	ctx, cancel := context.WithTimeout(vc.ctx, 3*time.Minute)
	defer cancel()
	d, err := vc.rx.WaitFor(ctx, func(d guest.Datagram) bool { return d.Acked > 5 })
	if err != nil {
		t.Fatalf("guest %s did not come up: %v", name, err)
	}
	return d
}

// loseHost crashes host n (crash) while the guest of boot up runs there,
// waits for the guest's next boot elsewhere and checks it kept every
// acknowledged write (waitRecovered); it returns when the loss was, the
// last report before it and the first after.
func (vc *vmCluster) loseHost(t *testing.T, n *testcluster.Node, up guest.Datagram, timeout time.Duration) (lost time.Time, last, first guest.Datagram) {
	t.Helper()
	time.Sleep(500 * time.Millisecond)
	lost = time.Now()
	vc.crash(n)
	// Everything the guest reported before the crash; datagrams in flight
	// may still arrive, so read after.
	last = vc.lastFromBoot(up.Boot)
	first = vc.waitRecovered(t, last, timeout)
	t.Logf("restarted %v after the loss of %s; disk counter %d >= last acknowledged %d", time.Since(lost).Round(time.Millisecond), n.Name, first.Acked, last.Acked)
	return lost, last, first
}

// lastFromBoot is the newest datagram of a boot.
func (vc *vmCluster) lastFromBoot(boot uint64) guest.Datagram {
	var last guest.Datagram
	for _, a := range vc.rx.Arrivals() {
		if a.Boot == boot && a.Seq >= last.Seq {
			last = a.Datagram
		}
	}
	return last
}

// waitRecovered waits for the guest's next boot and checks it continues
// from every disk write acknowledged before the loss (I2).
func (vc *vmCluster) waitRecovered(t *testing.T, before guest.Datagram, timeout time.Duration) guest.Datagram {
	t.Helper()
	ctx, cancel := context.WithTimeout(vc.ctx, timeout)
	defer cancel()
	first, err := vc.rx.WaitFor(ctx, func(d guest.Datagram) bool { return d.Boot == before.Boot+1 })
	if err != nil {
		t.Fatalf("guest not restarted within %v: %v", timeout, err)
	}
	if first.Acked < before.Acked {
		t.Fatalf("acknowledged disk writes lost: last acknowledged before the loss %d, the disk held %d after restart", before.Acked, first.Acked)
	}
	return first
}

func (vc *vmCluster) fenceConfig(t *testing.T, n *testcluster.Node, extra ...string) {
	t.Helper()
	b := vc.bmc[n.Name]
	args := append([]string{"node", "fence-config", n.Name, "--ipmi", fmt.Sprintf("%s:%d,%s,%s", b.Host, b.Port, b.User, b.PasswordFile)}, extra...)
	out, stderr, err := vc.td.CLI(vc.ctx, vc.c.Nodes[0], args...)
	if err != nil {
		t.Fatalf("fence-config: %v\n%s", err, stderr)
	}
	if strings.Contains(out+stderr, b.Password) {
		t.Fatal("the BMC password was printed")
	}
}

// TestHAFailover covers issue 5's acceptance on a 3-node cluster with a BMC
// per host: a hard host loss (the metadata leader's), fencing failure then
// operator confirmation, and disarm/arm.
func TestHAFailover(t *testing.T) {
	vc := newVMClusterWith(t, vmClusterOpts{bmc: true})
	c, td, ctx := vc.c, vc.td, vc.ctx
	for _, n := range c.Nodes {
		vc.fenceConfig(t, n)
	}

	// 1. Hard loss of the host that runs the VM and leads the metadata
	// shard: IPMI confirms the power-off before the VM starts elsewhere.
	st, err := td.Status(ctx, c.Nodes[0])
	if err != nil {
		t.Fatal(err)
	}
	var leader *testcluster.Node
	for _, n := range st.Nodes {
		if n.Leader {
			leader = c.Node(n.Name)
		}
	}
	if leader == nil {
		t.Fatal("no metadata leader")
	}
	other := c.Nodes[0]
	if other == leader {
		other = c.Nodes[1]
	}
	up := vc.guestVM(t, "h1", leader, 60, 3)
	t.Logf("guest h1 up on %s (the metadata leader), %d writes acknowledged", leader.Name, up.Acked)
	_, _, first := vc.loseHost(t, leader, up, 90*time.Second)
	v := vc.vm(t, other, "show", "h1")
	if v.Node == leader.Name || v.State != "running" {
		t.Fatalf("h1 after recovery: %+v", v)
	}
	evs := vc.events(t, other)
	fenced := firstEvent(evs, func(e *tandemv1.Event) bool {
		return e.Kind == "fence-result" && e.Node == leader.Name && strings.Contains(e.Detail, "confirmed by ipmi")
	})
	recovered := firstEvent(evs, func(e *tandemv1.Event) bool { return e.Kind == "vm-recovered" && e.Vm == "h1" })
	if fenced < 0 || recovered < 0 || fenced > recovered {
		t.Fatalf("want the IPMI power-off confirmed before the VM restarted; events: %v", evs)
	}
	if hs := haState(vc.haStatus(t, other), "h1"); hs.HaState != "started" || hs.Node != v.Node {
		t.Fatalf("HA state after recovery: %+v", hs)
	}
	// Power the host back on through its BMC; it rejoins.
	b := vc.bmc[leader.Name]
	c.Heal(leader)
	c.HealVM(leader)
	// An operator's fence of a node that is off is confirmed by its BMC.
	if out, stderr, err := td.CLI(ctx, other, "node", "fence", leader.Name); err != nil || !strings.Contains(out, "fenced") {
		t.Fatalf("node fence: %v\n%s%s", err, out, stderr)
	}
	if err := vc.powerOn(t, b); err != nil {
		t.Fatal(err)
	}

	// 2. Disarmed: a loss triggers no recovery; arm resumes.
	host := c.Node(v.Node)
	if _, _, err := td.CLI(ctx, other, "ha", "disarm"); err != nil {
		t.Fatal(err)
	}
	nodeNotHost := other
	if nodeNotHost == host {
		nodeNotHost = leader
	}
	vc.crash(host)
	before := vc.lastFromBoot(first.Boot)
	waitEvent(t, vc, nodeNotHost, time.Minute, func(e *tandemv1.Event) bool { return e.Kind == "node-dead" && e.Node == host.Name })
	time.Sleep(5 * time.Second)
	if hs := haState(vc.haStatus(t, nodeNotHost), "h1"); hs.Node != host.Name || hs.HaState != "started" {
		t.Fatalf("disarmed HA moved the VM: %+v", hs)
	}
	if _, _, err := td.CLI(ctx, nodeNotHost, "ha", "arm"); err != nil {
		t.Fatal(err)
	}
	second := vc.waitRecovered(t, before, 90*time.Second)
	c.Heal(host)
	c.HealVM(host)
	if err := vc.powerOn(t, vc.bmc[host.Name]); err != nil {
		t.Fatal(err)
	}

	// 3. Fencing fails: BMC unreachable and no lease; the VM waits in
	// "fence" until an operator confirms the node is off.
	v = vc.vm(t, nodeNotHost, "show", "h1")
	host = c.Node(v.Node)
	var witness *testcluster.Node
	for _, n := range c.Nodes {
		if n != host {
			witness = n
			break
		}
	}
	vc.fenceConfig(t, host, "--no-lease")
	vc.bmc[host.Name].Unreachable(true)
	vc.crash(host)
	before = vc.lastFromBoot(second.Boot)
	waitEvent(t, vc, witness, time.Minute, func(e *tandemv1.Event) bool {
		return e.Kind == "fence-result" && e.Node == host.Name && strings.Contains(e.Detail, "not confirmed")
	})
	time.Sleep(3 * time.Second)
	hs := haState(vc.haStatus(t, witness), "h1")
	if hs.HaState != "fence" || !strings.Contains(hs.Reason, "not confirmed") || hs.Node != host.Name {
		t.Fatalf("with fencing failing, want h1 waiting in fence: %+v", hs)
	}
	if _, stderr, err := td.CLI(ctx, witness, "node", "fence", host.Name, "--confirm-off"); err != nil {
		t.Fatalf("confirm-off: %v\n%s", err, stderr)
	}
	vc.waitRecovered(t, before, 90*time.Second)
	vc.bmc[host.Name].Unreachable(false)
	out, _, _ := td.CLI(ctx, witness, "events", "--tail", "40")
	t.Logf("events:\n%s", out)
	// BMC passwords never reach logs, events or API answers.
	status, _, _ := td.CLI(ctx, witness, "ha", "status", "--output", "json")
	nodes, _, _ := td.CLI(ctx, witness, "node", "list", "--output", "json")
	for _, n := range c.Nodes {
		pw := vc.bmc[n.Name].Password
		for _, other := range c.Nodes {
			if logs, err := os.ReadFile(filepath.Join(other.Dir, "tandemd.log")); err != nil || strings.Contains(string(logs), pw) {
				t.Fatalf("BMC password of %s in %s's log (or log unreadable: %v)", n.Name, other.Name, err)
			}
		}
		if strings.Contains(out+status+nodes, pw) {
			t.Fatalf("BMC password of %s in CLI output", n.Name)
		}
	}
}

// powerOn switches a host on through its BMC (ipmitool from another host)
// and waits until it rejoined.
func (vc *vmCluster) powerOn(t *testing.T, b *testcluster.BMC) error {
	t.Helper()
	if err := ipmiPowerOn(vc.ctx, vc.c, b); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(vc.ctx, 2*time.Minute)
	defer cancel()
	if err := b.WaitBoot(wctx); err != nil {
		return err
	}
	_, err := vc.td.WaitStatus(vc.ctx, vc.otherThan(b.Node), time.Minute, func(s *tandemv1.ClusterStatus) bool { return int(s.VotesOnline) == len(vc.c.Nodes) })
	return err
}

func (vc *vmCluster) otherThan(n *testcluster.Node) *testcluster.Node {
	for _, o := range vc.c.Nodes {
		if o != n {
			return o
		}
	}
	return nil
}

func ipmiPowerOn(ctx context.Context, c *testcluster.Cluster, b *testcluster.BMC) error {
	var from *testcluster.Node
	for _, n := range c.Nodes {
		if n != b.Node {
			from = n
			break
		}
	}
	out, err := c.Exec(ctx, from, "ipmitool", "-I", "lanplus", "-C", "3", "-H", b.Host, "-p", fmt.Sprint(b.Port), "-U", b.User, "-f", b.PasswordFile, "chassis", "power", "on")
	if err != nil {
		return fmt.Errorf("ipmitool power on: %w: %s", err, out)
	}
	return nil
}

func waitEvent(t *testing.T, vc *vmCluster, n *testcluster.Node, timeout time.Duration, match func(*tandemv1.Event) bool) *tandemv1.Event {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		out, _, err := vc.td.CLI(vc.ctx, n, "events", "--tail", "1000", "--output", "json")
		if err == nil {
			for _, line := range splitJSONObjects(out) {
				var e tandemv1.Event
				if adminclient.UnmarshalJSON([]byte(line), &e) == nil && match(&e) {
					return &e
				}
			}
		}
		time.Sleep(300 * time.Millisecond)
	}
	t.Fatalf("event not seen within %v", timeout)
	return nil
}

// TestHAPartitionAndWitness: two data nodes and a witness. The VM's host is
// cut off while powered: it fences itself (VM destroyed) within its lease,
// and only then does the other side restart the VM.
func TestHAPartitionAndWitness(t *testing.T) {
	vc := newVMClusterWith(t, vmClusterOpts{witness: true})
	c, td, ctx := vc.c, vc.td, vc.ctx
	n1, n2 := c.Nodes[0], c.Nodes[1]
	// Incoherent HA timing is refused as a whole.
	if _, stderr, err := td.CLI(ctx, n1, "cluster", "config", "set", "ha.dead_timeout=1s"); err == nil || !strings.Contains(stderr, "ha.dead_timeout") {
		t.Fatalf("dead timeout shorter than suspect accepted: %v\n%s", err, stderr)
	}
	up := vc.guestVM(t, "p1", n1, 61, 2)
	t.Logf("guest p1 up on %s", n1.Name)
	vmIP := netip.MustParseAddr(strings.TrimSuffix(c.ReceiverIP, ".1") + ".61")
	mac := vc.vm(t, n1, "show", "p1").Nics[0].Mac
	// Watch the VM network where a switch would learn the VM's port.
	var capt *netannounce.Capturer
	if err := c.InNetns(c.Switch(), func() error {
		var err error
		capt, err = netannounce.Capture(ctx, "br1", netannounce.CaptureOptions{Filter: func(p gopacket.Packet) bool {
			a, err := netannounce.AnnouncementFromPacket(p)
			return err == nil && a.Addr == vmIP
		}})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer capt.Close()
	c.Isolate(n1)
	cut := time.Now()
	// n1 keeps power; its guest must be destroyed by its own tandemd.
	drv, err := compute.Dial(ctx, vc.lv[n1.Name].Socket, "qemu:///system")
	if err != nil {
		t.Fatal(err)
	}
	defer drv.Close()
	var destroyedAt time.Time
	for time.Since(cut) < time.Minute {
		st, err := drv.State(ctx, "p1")
		if err == nil && st != compute.StateRunning && st != compute.StatePaused {
			destroyedAt = time.Now()
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if destroyedAt.IsZero() {
		t.Fatal("the isolated host did not fence itself")
	}
	lastAcked := vc.lastFromBoot(up.Boot)
	first := vc.waitRecovered(t, lastAcked, 90*time.Second)
	recoveredAt := time.Now()
	t.Logf("self-fenced %v after the cut, VM back on the other side %v after the cut", destroyedAt.Sub(cut).Round(time.Millisecond), recoveredAt.Sub(cut).Round(time.Millisecond))
	ev := waitEvent(t, vc, n2, 10*time.Second, func(e *tandemv1.Event) bool { return e.Kind == "vm-recovered" && e.Vm == "p1" })
	if !ev.At.AsTime().After(destroyedAt) {
		t.Fatalf("the VM restarted at %v, before the isolated copy was destroyed at %v", ev.At.AsTime(), destroyedAt)
	}
	if v := vc.vm(t, n2, "show", "p1"); v.Node != n2.Name || v.State != "running" {
		t.Fatalf("p1 after recovery: %+v", v)
	}
	_ = first
	// The new host announced the VM's address (gratuitous ARP).
	select {
	case p, ok := <-capt.Packets():
		if !ok {
			t.Fatalf("capture ended: %v", capt.Err())
		}
		a, err := netannounce.AnnouncementFromPacket(p.Packet)
		if err != nil || a.MAC.String() != mac {
			t.Fatalf("announcement %+v (%v), want MAC %s", a, err, mac)
		}
		t.Logf("gratuitous ARP for %s is-at %s seen on the VM network at +%v", a.Addr, a.MAC, p.Timestamp.Sub(cut).Round(time.Millisecond))
	case <-time.After(30 * time.Second):
		t.Fatal("no gratuitous ARP for the recovered VM's address")
	}
	// Healed, the old host serves nothing for the volume: its export refuses.
	c.Heal(n1)
	vol := waitVolume(t, ctx, td, n2, "p1-disk0", time.Minute, func(v *tandemv1.VolumeInfo) bool {
		return v.Primary == n2.Name && replicaState(v, n1.Name).State == tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE
	})
	t.Logf("after healing: primary %s epoch %d, %s resynced", vol.Primary, vol.Epoch, n1.Name)
	// The new primary's replica side refuses the old epoch outright (I1).
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", n1.NS, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "TANDEM_TEST_HELPER=hello",
		"HELLO_DIR="+td.DataDir(n1), "HELLO_ADDR="+n2.IP+":7402", "HELLO_VOLUME=p1-disk0", "HELLO_EPOCH=1")
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != fmt.Sprint(uint16(replication.StatusStaleEpoch)) {
		t.Fatalf("a write session at the old epoch: %v %q, want stale-epoch refusal", err, out)
	}
	if out, err := runNBDInfo(ctx, nbdURI(td, n1, "p1-disk0")); err == nil {
		t.Fatalf("the old host still exports the volume:\n%s", out)
	}
}

func runNBDInfo(ctx context.Context, uri string) (string, error) {
	out, err := exec.CommandContext(ctx, "nbdinfo", uri).CombinedOutput()
	return string(out), err
}

// TestSelfFenceWithLibvirtdPaused: a host cut off from the cluster while
// its libvirtd is paused (SIGSTOP: every libvirt call hangs) still kills
// its QEMU before the cluster restarts the VM on the other side, because
// the self-fence kills QEMU by PID instead of waiting for libvirtd.
func TestSelfFenceWithLibvirtdPaused(t *testing.T) {
	vc := newVMClusterWith(t, vmClusterOpts{witness: true})
	c := vc.c
	n1, n2 := c.Nodes[0], c.Nodes[1]
	up := vc.guestVM(t, "sf1", n1, 63, 2)
	pid := qemuPIDOf(t, "sf1")
	t.Logf("guest sf1 up on %s, QEMU pid %d", n1.Name, pid)
	lv := vc.lv[n1.Name].Proc.PID()
	if err := syscall.Kill(lv, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(lv, syscall.SIGCONT)
	c.Isolate(n1)
	cut := time.Now()
	var deadAt time.Time
	for time.Since(cut) < time.Minute {
		if !processAlive(pid) {
			deadAt = time.Now()
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if deadAt.IsZero() {
		t.Fatal("the isolated host's QEMU still runs a minute after the cut (libvirtd paused)")
	}
	vc.waitRecovered(t, vc.lastFromBoot(up.Boot), 90*time.Second)
	ev := waitEvent(t, vc, n2, 10*time.Second, func(e *tandemv1.Event) bool { return e.Kind == "vm-recovered" && e.Vm == "sf1" })
	t.Logf("QEMU on %s dead %v after the cut; VM recovered on the other side %v after it", n1.Name,
		deadAt.Sub(cut).Round(time.Millisecond), ev.At.AsTime().Sub(cut).Round(time.Millisecond))
	if !ev.At.AsTime().After(deadAt) {
		t.Fatalf("the VM restarted at %v, before the isolated copy's QEMU died at %v", ev.At.AsTime(), deadAt)
	}
	if !strings.Contains(c.LogTail(n1, "tandemd", 300), "self-fence: VM killed") {
		t.Errorf("n1's log does not say it killed the VM:\n%s", c.LogTail(n1, "tandemd", 30))
	}
}

// qemuPIDOf finds the QEMU process running domain name (names are unique
// in a test).
func qemuPIDOf(t *testing.T, name string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if strings.Contains(filepath.Base(args[0]), "qemu-system") && slices.ContainsFunc(args, func(a string) bool {
			return strings.HasPrefix(a, "guest="+name+",") || a == "guest="+name
		}) {
			return pid
		}
	}
	t.Fatalf("no QEMU runs %s", name)
	return 0
}

// processAlive: pid exists and is not a zombie.
func processAlive(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || i+2 >= len(b) || (b[i+2] != 'Z' && b[i+2] != 'X')
}
