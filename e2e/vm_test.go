package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tandemhci/tandem/internal/adminclient"
	"github.com/tandemhci/tandem/internal/faultfs"
	"github.com/tandemhci/tandem/internal/guest"
	"github.com/tandemhci/tandem/internal/testcluster"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// vmCapacityMiB is what each node offers VMs in these tests, small enough
// that N+1 admission control has something to refuse.
const vmCapacityMiB = 512

type vmCluster struct {
	c   *testcluster.Cluster
	td  *testcluster.Tandem
	ctx context.Context
	mu  sync.Mutex // guards lv and pr (the BMC boots hosts concurrently)
	lv  map[string]*testcluster.Libvirtd
	pr  map[string]*testcluster.Proc
	img guest.Image
	rx  *guest.Receiver
	bmc map[string]*testcluster.BMC
	// witness is the witness node, if any.
	witness *testcluster.Node
	nbd     bool
	// faults are the data nodes' fault disks under their volume files
	// (vmClusterOpts.faultVolumes), by node name.
	faults map[string]*faultfs.FS
}

// boot starts a host's libvirtd and tandemd (also the BMC's power-on).
func (vc *vmCluster) boot(ctx context.Context, n *testcluster.Node) error {
	lv, err := vc.c.StartLibvirtd(ctx, n)
	if err != nil {
		return err
	}
	vc.mu.Lock()
	vc.lv[n.Name] = lv
	vc.mu.Unlock()
	_, err = vc.startDaemon(n)
	return err
}

func newVMCluster(t *testing.T) *vmCluster { return newVMClusterWith(t, vmClusterOpts{}) }

type vmClusterOpts struct {
	// witness makes the last node a witness (no data, no VMs).
	witness bool
	// bmc gives every data node an ipmi_sim BMC whose power-on restarts
	// libvirtd and tandemd.
	bmc bool
	// nbd turns on every node's TCP NBD export (TLS) on its IP, port 10809.
	nbd bool
	// timeout bounds the whole test (default 12 minutes).
	timeout time.Duration
	// faultVolumes puts every data node's volume files on a fault disk
	// (testcluster.FaultDisk "volumes"), in vmCluster.faults.
	faultVolumes bool
}

func newVMClusterWith(t *testing.T, o vmClusterOpts) *vmCluster {
	t.Helper()
	testcluster.Require(t)
	testcluster.RequireLibvirtd(t)
	bin := binDir(t)
	c := testcluster.New(t, testcluster.Options{Nodes: 3})
	td := testcluster.NewTandem(c, bin)
	if o.timeout == 0 {
		o.timeout = 12 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	t.Cleanup(cancel)
	root, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatal(err)
	}
	img, err := guest.EnsureImage(ctx, filepath.Dir(strings.TrimSpace(string(root))))
	if err != nil {
		t.Fatal(err)
	}
	vc := &vmCluster{c: c, td: td, ctx: ctx, lv: map[string]*testcluster.Libvirtd{}, pr: map[string]*testcluster.Proc{}, img: img, bmc: map[string]*testcluster.BMC{}, nbd: o.nbd, faults: map[string]*faultfs.FS{}}
	for i, n := range c.Nodes {
		if o.witness && i == len(c.Nodes)-1 {
			vc.witness = n
			p, err := td.StartDaemon(ctx, n, "--role", "witness")
			if err != nil {
				t.Fatal(err)
			}
			vc.pr[n.Name] = p
			continue
		}
		if o.faultVolumes {
			f, err := td.FaultDisk(n, "volumes")
			if err != nil {
				t.Fatal(err)
			}
			vc.faults[n.Name] = f
		}
		if err := vc.boot(ctx, n); err != nil {
			t.Fatal(err)
		}
		if o.bmc {
			b, err := c.StartBMC(ctx, n, testcluster.PowerHooks{On: vc.boot})
			if err != nil {
				t.Fatal(err)
			}
			vc.bmc[n.Name] = b
		}
	}
	if err := td.Form(ctx, "vms"); err != nil {
		t.Fatal(err)
	}
	if _, err := td.WaitStatus(ctx, c.Nodes[0], 15*time.Second, func(s *tandemv1.ClusterStatus) bool { return s.Quorate && s.VotesOnline == 3 }); err != nil {
		t.Fatal(err)
	}
	conn, err := c.ListenUDPOnSwitch(c.ReceiverIP + ":9999")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	vc.rx = guest.NewReceiver(conn, nil)
	stop := vc.rx.Start(ctx)
	t.Cleanup(func() { _ = stop() })
	return vc
}

func (vc *vmCluster) startDaemon(n *testcluster.Node) (*testcluster.Proc, error) {
	vc.mu.Lock()
	lv := vc.lv[n.Name]
	vc.mu.Unlock()
	var extra []string
	if vc.nbd {
		extra = []string{"--nbd-addr", nbdAddr(n)}
	}
	p, err := vc.td.StartComputeDaemon(vc.ctx, n, lv, vmCapacityMiB, extra...)
	if err == nil {
		vc.mu.Lock()
		vc.pr[n.Name] = p
		vc.mu.Unlock()
	}
	return p, err
}

func (vc *vmCluster) vm(t *testing.T, n *testcluster.Node, args ...string) *tandemv1.VMInfo {
	t.Helper()
	out, stderr, err := vc.td.CLI(vc.ctx, n, append(append([]string{"vm"}, args...), "--output", "json")...)
	if err != nil {
		t.Fatalf("vm %v: %v\n%s", args, err, stderr)
	}
	var info tandemv1.VMInfo
	if err := adminclient.UnmarshalJSON([]byte(out), &info); err != nil {
		t.Fatalf("vm %v: %v\n%s", args, err, out)
	}
	return &info
}

func (vc *vmCluster) waitVM(t *testing.T, name string, timeout time.Duration, ok func(*tandemv1.VMInfo) bool) *tandemv1.VMInfo {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last *tandemv1.VMInfo
	for time.Now().Before(deadline) {
		out, _, err := vc.td.CLI(vc.ctx, vc.c.Nodes[0], "vm", "show", name, "--output", "json")
		if err == nil {
			var info tandemv1.VMInfo
			if adminclient.UnmarshalJSON([]byte(out), &info) == nil {
				last = &info
				if ok(&info) {
					return &info
				}
			}
		}
		time.Sleep(300 * time.Millisecond)
	}
	t.Fatalf("VM %s: condition not met within %s; last: %v", name, timeout, last)
	return nil
}

// guestProgress waits until the guest has acknowledged more disk writes
// and sent more datagrams than before, in the same boot.
func (vc *vmCluster) guestProgress(t *testing.T, after guest.Datagram, timeout time.Duration) guest.Datagram {
	t.Helper()
	d, err := vc.tryProgress(after, timeout)
	if err != nil {
		t.Fatalf("%v%s", err, vc.guestCrash(nil))
	}
	return d
}

func (vc *vmCluster) tryProgress(after guest.Datagram, timeout time.Duration) (guest.Datagram, error) {
	ctx, cancel := context.WithTimeout(vc.ctx, timeout)
	defer cancel()
	d, err := vc.rx.WaitFor(ctx, func(d guest.Datagram) bool {
		return d.Boot == after.Boot && d.Seq > after.Seq+20 && d.Acked > after.Acked+5
	})
	if err != nil {
		return d, fmt.Errorf("guest made no progress after seq %d acked %d: %w", after.Seq, after.Acked, err)
	}
	return d, nil
}

// migrateLive migrates name from one node to another through via and
// waits for the guest to go on in the same boot. It returns the migration's
// result and the guest's last datagram before it (its boot is the one the
// guest runs in now).
//
// QEMU 7.2 TCG crashed the guest kernel at the switchover in about one
// migration in five (an hrtimer or page fault in the timer interrupt):
// it lost guest stores, which compute.XMLOptions.PadTCGRAM now prevents
// (docs/design.md §6). A crash that still happens is logged
// with the crash and the step is repeated once from a fresh boot on from:
// the run still proves one live migration that kept the guest running, and
// a stall without a kernel crash fails at once.
func (vc *vmCluster) migrateLive(t *testing.T, via *testcluster.Node, name string, from, to *testcluster.Node) (*tandemv1.MigrateProgress, guest.Datagram) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		logs := vc.consoleSizes()
		mark, _, _ := vc.rx.Last()
		out, stderr, err := vc.td.CLI(vc.ctx, via, "vm", "migrate", name, "--to", to.Name, "--downtime-ms", "100", "--output", "json")
		if err != nil {
			t.Fatalf("migrate: %v\n%s", err, stderr)
		}
		var done tandemv1.MigrateProgress
		if err := adminclient.UnmarshalJSON([]byte(out), &done); err != nil || done.Phase != "done" {
			t.Fatalf("migrate result: %v %s", err, out)
		}
		// Progress beyond what had arrived when the migration returned is
		// the guest running on the target.
		returned, _, _ := vc.rx.Last()
		after, err := vc.tryProgress(returned, time.Minute)
		if err == nil {
			if after.Boot != mark.Boot {
				t.Fatalf("guest rebooted during migration: boot %d -> %d", mark.Boot, after.Boot)
			}
			return &done, mark
		}
		crash := vc.guestCrash(logs)
		if crash == "" || attempt == 2 {
			t.Fatalf("after migrating %s %s -> %s (attempt %d): %v%s", name, from.Name, to.Name, attempt, err, crash)
		}
		t.Logf("attempt %d: the guest kernel crashed at the switchover (QEMU TCG, not tandemd); restarting it on %s and migrating again:%s", attempt, from.Name, crash)
		vc.vm(t, from, "stop", name, "--force")
		vc.vm(t, from, "start", name, "--node", from.Name)
		vc.guestProgress(t, guest.Datagram{Boot: mark.Boot + 1}, 3*time.Minute)
	}
}

// checkRAMUnaligned asks the QEMU of VM name on n (through virsh, an
// independent client) for its RAM blocks: the guest's RAM must be the one
// block whose size is not a multiple of 256 KiB, since QEMU 7.2 loses a TCG
// guest's stores in live migration otherwise (compute.XMLOptions.PadTCGRAM).
// After a migration it shows that the padding went with the guest.
func (vc *vmCluster) checkRAMUnaligned(t *testing.T, n *testcluster.Node, name string) {
	t.Helper()
	vc.mu.Lock()
	lv := vc.lv[n.Name]
	vc.mu.Unlock()
	out, err := exec.CommandContext(vc.ctx, "virsh", "-c", "qemu+unix:///system?socket="+lv.Socket,
		"qemu-monitor-command", name, "--hmp", "info ramblock").CombinedOutput()
	if err != nil {
		t.Fatalf("virsh qemu-monitor-command %s on %s: %v\n%s", name, n.Name, err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		// Block Name, PSize (two fields), Offset, Used, Total.
		if len(f) != 6 || f[0] != "tandem-ram" {
			continue
		}
		used, err := strconv.ParseUint(strings.TrimPrefix(f[4], "0x"), 16, 64)
		if err != nil {
			t.Fatalf("info ramblock on %s: %v\n%s", n.Name, err, out)
		}
		if used%(256<<10) == 0 {
			t.Fatalf("guest RAM on %s is %d bytes, a multiple of 256 KiB, which QEMU 7.2 migrates with lost stores:\n%s", n.Name, used, out)
		}
		t.Logf("guest RAM block on %s: tandem-ram, %d bytes (%d MiB + %d KiB)", n.Name, used, used>>20, used%(1<<20)>>10)
		return
	}
	t.Fatalf("no tandem-ram block in the QEMU of %s on %s:\n%s", name, n.Name, out)
}

// movedOn waits for the guest to go on in the same boot after a live
// migration tandemd made on its own (an evacuation, a failback). A guest
// kernel crash at that switchover (QEMU TCG, see migrateLive) is logged and
// the guest started again on node, so that the rest of the test still
// runs; a stall without a crash fails. It returns the guest's progress and
// whether it had to be restarted.
func (vc *vmCluster) movedOn(t *testing.T, logs map[string]int64, returned guest.Datagram, name, node, what string) (guest.Datagram, bool) {
	t.Helper()
	d, err := vc.tryProgress(returned, time.Minute)
	if err == nil {
		return d, false
	}
	crash := vc.guestCrash(logs)
	if crash == "" {
		t.Fatalf("after the %s: %v", what, err)
	}
	t.Logf("the guest kernel crashed at the %s's switchover (QEMU TCG, not tandemd); restarting it on %s:%s", what, node, crash)
	vc.vm(t, vc.c.Nodes[0], "stop", name, "--force")
	vc.vm(t, vc.c.Nodes[0], "start", name, "--node", node)
	return vc.guestProgress(t, guest.Datagram{Boot: returned.Boot + 1}, 3*time.Minute), true
}

// consoleSizes is how long every node's VM console logs are now, so that a
// later guestCrash looks only at what was logged since.
func (vc *vmCluster) consoleSizes() map[string]int64 {
	out := map[string]int64{}
	for _, n := range vc.c.Nodes {
		logs, _ := filepath.Glob(filepath.Join(vc.td.DataDir(n), "vms", "*.console.log"))
		for _, path := range logs {
			if fi, err := os.Stat(path); err == nil {
				out[path] = fi.Size()
			}
		}
	}
	return out
}

// guestCrash names a guest kernel crash found in a node's serial console
// log, with the log's tail, or returns "". A stalled guest is then reported
// by its cause: QEMU 7.2 TCG crashed the guest kernel at a migration's
// switchover (lost stores, see migrateLive) until PadTCGRAM.
// Only what was logged after since's sizes counts (nil: everything).
func (vc *vmCluster) guestCrash(since map[string]int64) string {
	for _, n := range vc.c.Nodes {
		logs, _ := filepath.Glob(filepath.Join(vc.td.DataDir(n), "vms", "*.console.log"))
		for _, path := range logs {
			b, err := os.ReadFile(path)
			if err != nil {
				continue
			}
			if off := since[path]; off > 0 && off <= int64(len(b)) {
				b = b[off:]
			}
			s := string(b)
			for _, sign := range []string{"BUG:", "Oops", "Kernel panic", "general protection fault"} {
				if i := strings.LastIndex(s, sign); i >= 0 {
					return fmt.Sprintf("\nthe guest kernel crashed (%s in %s on %s):\n%s", sign, filepath.Base(path), n.Name, clip(s[i:], 3000))
				}
			}
		}
	}
	return ""
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "\n..."
	}
	return s
}

func (vc *vmCluster) cmdline(ip string) string {
	return vc.img.Cmdline(guest.Config{IP: ip + "/24", UDP: vc.c.ReceiverIP + ":9999", Rate: 100, Disk: "/dev/vda"})
}

func TestVMLifecycleMigrationAndMaintenance(t *testing.T) {
	vc := newVMCluster(t)
	c, td, ctx := vc.c, vc.td, vc.ctx
	n1, n2, n3 := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	vip := strings.TrimSuffix(c.ReceiverIP, ".1") + ".50"

	// A VM with a 3-replica disk boots on its volume's primary.
	info := vc.vm(t, n1, "create", "g1", "--memory", "192M", "--disk", "64M,replicas=3", "--node", n1.Name,
		"--kernel", vc.img.Kernel, "--initrd", vc.img.Initrd, "--cmdline", vc.cmdline(vip), "--nic", c.VMBridge, "--start")
	if info.Node != n1.Name || info.State != "running" {
		t.Fatalf("g1 after create --start: %+v", info)
	}
	first := vc.guestProgress(t, guest.Datagram{}, 3*time.Minute)
	t.Logf("guest up: seq %d, %d disk writes acknowledged", first.Seq, first.Acked)
	list, _, err := td.CLI(ctx, n2, "vm", "list")
	if err != nil || !strings.Contains(list, "g1") || !strings.Contains(list, "running") {
		t.Fatalf("vm list: %v\n%s", err, list)
	}
	// compute.domain_type is auto (the default): the node says what its
	// VMs run under and why. Here that is TCG: the KVM probe has no
	// kernel in /boot, or its kernel does not boot under this host's KVM.
	if show, stderr, err := td.CLI(ctx, n2, "node", "show", n1.Name); err != nil || !strings.Contains(show, "accel:") || !strings.Contains(show, "qemu (TCG (no KVM): ") {
		t.Fatalf("node show %s: want an accel line saying TCG, and why: %v\n%s\n%s", n1.Name, err, show, stderr)
	} else {
		for _, l := range strings.Split(show, "\n") {
			if strings.HasPrefix(l, "accel:") {
				t.Logf("node show %s: %s", n1.Name, strings.Join(strings.Fields(l), " "))
			}
		}
	}
	// The serial console reaches the CLI on any node; the agent logs there.
	if con, stderr, err := td.CLI(ctx, n3, "vm", "console", "g1", "--tail", "65536"); err != nil || !strings.Contains(con, "agent=tandem-guest") {
		t.Fatalf("vm console: %v\n%s\n%s", err, stderr, con)
	}
	if _, stderr, err := td.CLI(ctx, n3, "vm", "console", "nosuch"); err == nil || !strings.Contains(stderr, "nosuch") {
		t.Fatalf("console of an unknown VM: %v %q", err, stderr)
	}
	// The guest's writes are on every replica: verify compares checksums.
	out, _, err := td.CLI(ctx, n1, "volume", "verify", "g1-disk0", "--output", "json")
	if err != nil {
		t.Fatal(err)
	}
	var ver tandemv1.VerifyVolumeResponse
	if err := adminclient.UnmarshalJSON([]byte(out), &ver); err != nil || len(ver.Mismatches) != 0 || ver.CheckedBytes == 0 {
		t.Fatalf("verify after guest writes: %v %s", err, out)
	}
	before := volumeCmd(t, ctx, td, n1, "show", "g1-disk0")

	// Live migration: the guest continues (same boot), the target is primary
	// with a higher epoch, the source an UpToDate secondary.
	done, mark := vc.migrateLive(t, n3, "g1", n1, n2)
	vc.checkRAMUnaligned(t, n2, "g1")
	gap, _ := vc.rx.LongestOutage()
	t.Logf("migration n1 -> n2: libvirt downtime %d ms, total %d ms; UDP outage %v (%d datagrams lost)", done.DowntimeMs, done.TotalMs, gap.Gap, gap.LostSeqs)
	vol := volumeCmd(t, ctx, td, n1, "show", "g1-disk0")
	if vol.Primary != n2.Name || vol.Epoch <= before.Epoch || replicaState(vol, n1.Name).State != tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE {
		t.Fatalf("after migration: primary %s epoch %d (was %d), n1 %v", vol.Primary, vol.Epoch, before.Epoch, replicaState(vol, n1.Name))
	}
	if v := vc.vm(t, n1, "show", "g1"); v.Node != n2.Name || v.State != "running" {
		t.Fatalf("g1 after migration: %+v", v)
	}
	// The console follows the VM: the target's log gets the agent's next
	// status line (every 5 s).
	for deadline := time.Now().Add(30 * time.Second); ; {
		con, _, err := td.CLI(ctx, n1, "vm", "console", "g1", "--log")
		if err == nil && strings.Contains(con, "agent=tandem-guest") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("console after migration: %v\n%s", err, con)
		}
		time.Sleep(time.Second)
	}

	// A tandemd crash and restart on the VM's node does not kill the guest:
	// QEMU pauses on the I/O error, reconnects, and tandemd resumes it.
	vc.mu.Lock()
	p2 := vc.pr[n2.Name]
	vc.mu.Unlock()
	if err := syscall.Kill(p2.PID(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = p2.Wait(ctx)
	if _, err := vc.startDaemon(n2); err != nil {
		t.Fatal(err)
	}
	returned, _, _ := vc.rx.Last()
	if d := vc.guestProgress(t, returned, 2*time.Minute); d.Boot != mark.Boot {
		t.Fatalf("guest restarted across a tandemd restart: boot %d -> %d", mark.Boot, d.Boot)
	}

	// N+1: g2 on n1 with its other replica on n2 could not restart there
	// if n1 failed (n2 has g1), so it is refused; --force starts it.
	volumeCmd(t, ctx, td, n1, "create", "g2d", "--size", "16M", "--replicas", "2", "--nodes", n1.Name+","+n2.Name)
	vc.vm(t, n1, "create", "g2", "--memory", "448M", "--disk-volume", "g2d", "--kernel", vc.img.Kernel, "--initrd", vc.img.Initrd,
		"--cmdline", vc.img.Cmdline(guest.Config{IP: "10.0.0.2/24", UDP: "10.0.0.1:9", Rate: 1}))
	_, stderr, err := td.CLI(ctx, n1, "vm", "start", "g2", "--node", n1.Name)
	if err == nil || !strings.Contains(stderr, "N+1") {
		t.Fatalf("start breaking N+1 was not refused: %v\n%s", err, stderr)
	}
	g2 := vc.vm(t, n1, "start", "g2", "--node", n1.Name, "--force")
	if g2.State != "running" || !strings.Contains(g2.Warning, "N+1") {
		t.Fatalf("forced start: %+v", g2)
	}
	if v := vc.vm(t, n1, "stop", "g2", "--force"); v.Desired != "stopped" {
		t.Fatalf("stop g2: %+v", v)
	}

	// An Outdated replica refuses to run the VM: isolate n3 while the guest
	// writes, so that the primary commits it Outdated.
	c.Isolate(n3)
	waitVolume(t, ctx, td, n1, "g1-disk0", time.Minute, func(v *tandemv1.VolumeInfo) bool {
		return replicaState(v, n3.Name).State == tandemv1.ReplicaState_REPLICA_STATE_OUTDATED
	})
	c.Heal(n3)
	vc.vm(t, n1, "stop", "g1", "--force")
	waitVolume(t, ctx, td, n1, "g1-disk0", time.Minute, func(v *tandemv1.VolumeInfo) bool {
		return replicaState(v, n3.Name).State == tandemv1.ReplicaState_REPLICA_STATE_OUTDATED ||
			replicaState(v, n3.Name).State == tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE
	})
	// Isolating again keeps it Outdated for the check (resync needs the link).
	c.Isolate(n3)
	_, stderr, err = td.CLI(ctx, n1, "vm", "start", "g1", "--node", n3.Name)
	if err == nil || !strings.Contains(stderr, "Outdated") && !strings.Contains(stderr, "does not answer") && !strings.Contains(stderr, "compute unavailable") {
		t.Fatalf("start on an isolated/Outdated replica was not refused: %v\n%s", err, stderr)
	}
	c.Heal(n3)
	waitVolume(t, ctx, td, n1, "g1-disk0", 2*time.Minute, func(v *tandemv1.VolumeInfo) bool {
		return replicaState(v, n3.Name).State == tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE
	})
	vc.vm(t, n1, "start", "g1", "--node", n2.Name)
	mark, _, _ = vc.rx.Last()
	mark = vc.guestProgress(t, guest.Datagram{Boot: mark.Boot + 1}, 3*time.Minute)

	// Maintenance evacuates n2 by live migration and survives a restart.
	logs := vc.consoleSizes()
	out, stderr, err = td.CLI(ctx, n1, "node", "maintenance", "enable", n2.Name, "--output", "json")
	if err != nil {
		t.Fatalf("maintenance enable: %v\n%s%s", err, out, stderr)
	}
	t.Logf("maintenance: %s", stderr)
	v := vc.waitVM(t, "g1", 30*time.Second, func(v *tandemv1.VMInfo) bool { return v.Node != n2.Name && v.State == "running" })
	returned, _, _ = vc.rx.Last()
	if after, restarted := vc.movedOn(t, logs, returned, "g1", v.Node, "evacuation"); !restarted && after.Boot != mark.Boot {
		t.Fatalf("guest rebooted during evacuation")
	}
	t.Logf("evacuated to %s", v.Node)
	if err := vc.pr[n2.Name].Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := vc.startDaemon(n2); err != nil {
		t.Fatal(err)
	}
	nodes, _, err := td.CLI(ctx, n1, "node", "list", "--output", "json")
	if err != nil {
		t.Fatal(err)
	}
	var nl tandemv1.ListNodesResponse
	if err := adminclient.UnmarshalJSON([]byte(nodes), &nl); err != nil {
		t.Fatal(err)
	}
	for _, n := range nl.Nodes {
		if n.Name == n2.Name && !n.Maintenance {
			t.Fatalf("maintenance lost over a restart: %s", nodes)
		}
	}
	_, stderr, err = td.CLI(ctx, n1, "vm", "migrate", "g1", "--to", n2.Name)
	if err == nil || !strings.Contains(stderr, "maintenance") {
		t.Fatalf("migration onto a node in maintenance was not refused: %v\n%s", err, stderr)
	}
	// Disable with the balanced failback brings the evacuated VM back, once
	// n2's replica caught up with what the guest wrote while n2 restarted.
	waitVolume(t, ctx, td, n1, "g1-disk0", 2*time.Minute, func(v *tandemv1.VolumeInfo) bool {
		return replicaState(v, n2.Name).State == tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE
	})
	returned, _, _ = vc.rx.Last()
	logs = vc.consoleSizes()
	out, stderr, err = td.CLI(ctx, n1, "node", "maintenance", "disable", n2.Name, "--failback", "balanced")
	if err != nil {
		t.Fatalf("maintenance disable: %v\n%s%s", err, out, stderr)
	}
	if v := vc.vm(t, n1, "show", "g1"); v.Node != n2.Name || v.State != "running" {
		t.Fatalf("g1 after the balanced failback: %+v\n%s%s", v, out, stderr)
	}
	if d, restarted := vc.movedOn(t, logs, returned, "g1", n2.Name, "failback"); !restarted && d.Boot != returned.Boot {
		t.Fatal("guest rebooted during the failback")
	}
	b, _ := json.Marshal(vc.rx.Outages(500 * time.Millisecond))
	t.Logf("outages over the test: %s", b)

	// QEMU dies under the running VM (killed here; to libvirt a crash looks
	// the same): tandemd starts it again on the same node, in a new boot,
	// and records it.
	last, _, _ := vc.rx.Last()
	pidFile := filepath.Join(vc.lv[n2.Name].Dir, "run", "libvirt", "qemu", "g1.pid")
	raw, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil || pid <= 1 {
		t.Fatalf("QEMU pid file %s: %q", pidFile, raw)
	}
	killed := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	back, err := vc.rx.WaitFor(wctx, func(d guest.Datagram) bool { return d.Boot > last.Boot && d.Acked > 0 })
	cancel()
	if err != nil {
		t.Fatalf("VM not back after its QEMU was killed: %v", err)
	}
	if back.Acked < last.Acked {
		t.Fatalf("disk counter went back across the restart: %d -> %d", last.Acked, back.Acked)
	}
	t.Logf("QEMU killed; guest back in boot %d %v later", back.Boot, time.Since(killed).Round(time.Millisecond))
	if v := vc.vm(t, n1, "show", "g1"); v.Node != n2.Name || v.State != "running" {
		t.Fatalf("g1 after its restart: %+v", v)
	}
	var restarted bool
	for _, e := range vc.events(t, n1) {
		restarted = restarted || (e.Kind == "vm-restarted" && e.Vm == "g1" && e.Node == n2.Name)
	}
	if !restarted {
		t.Fatal("no vm-restarted event for g1 on " + n2.Name)
	}
}

// TestVMMigrationFailureKeepsSource kills the target's libvirtd while the
// migration waits on it: the VM keeps running on the source, the volume
// keeps its single primary and epoch, and the target cannot open it.
func TestVMMigrationFailureKeepsSource(t *testing.T) {
	vc := newVMCluster(t)
	c, td, ctx := vc.c, vc.td, vc.ctx
	n1, n2 := c.Nodes[0], c.Nodes[1]
	vip := strings.TrimSuffix(c.ReceiverIP, ".1") + ".51"
	volumeCmd(t, ctx, td, n1, "create", "fd", "--size", "64M", "--replicas", "2", "--nodes", n1.Name+","+n2.Name)
	vc.vm(t, n1, "create", "f1", "--memory", "192M", "--disk-volume", "fd", "--node", n1.Name,
		"--kernel", vc.img.Kernel, "--initrd", vc.img.Initrd, "--cmdline", vc.cmdline(vip), "--nic", c.VMBridge, "--start")
	mark := vc.guestProgress(t, guest.Datagram{}, 3*time.Minute)
	// The guest's writes are on both replicas of its 2-replica disk.
	out, _, err := td.CLI(ctx, n1, "volume", "verify", "fd", "--output", "json")
	if err != nil {
		t.Fatal(err)
	}
	var ver tandemv1.VerifyVolumeResponse
	if err := adminclient.UnmarshalJSON([]byte(out), &ver); err != nil || len(ver.Mismatches) != 0 || ver.CheckedBytes == 0 {
		t.Fatalf("verify after guest writes: %v %s", err, out)
	}
	before := volumeCmd(t, ctx, td, n1, "show", "fd")

	lv := vc.lv[n2.Name]
	type result struct {
		stderr string
		err    error
	}
	res := make(chan result, 1)
	go func() {
		// A slow stream keeps the migration in flight long enough.
		_, stderr, err := td.CLI(ctx, n1, "vm", "migrate", "f1", "--to", n2.Name, "--bandwidth-mibps", "1")
		res <- result{stderr, err}
	}()
	// The window opens just before libvirt starts; kill the target's
	// libvirtd once it is open and the memory copy runs.
	waitVolume(t, ctx, td, n1, "fd", time.Minute, func(v *tandemv1.VolumeInfo) bool { return v.MigrationTarget == n2.Name })
	time.Sleep(time.Second)
	if err := syscall.Kill(lv.Proc.PID(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	r := <-res
	if r.err == nil || !strings.Contains(r.stderr, "keeps running on "+n1.Name) {
		t.Fatalf("migration to a dead libvirtd: %v\n%s", r.err, r.stderr)
	}
	t.Logf("migration failed as expected: %s", strings.TrimSpace(r.stderr))
	if v := vc.vm(t, n1, "show", "f1"); v.Node != n1.Name || v.State != "running" {
		t.Fatalf("after the failed migration: %+v", v)
	}
	returned, _, _ := vc.rx.Last()
	after := vc.guestProgress(t, returned, time.Minute)
	if after.Boot != mark.Boot {
		t.Fatal("guest rebooted")
	}
	vol := volumeCmd(t, ctx, td, n1, "show", "fd")
	if vol.Primary != n1.Name || vol.Epoch != before.Epoch || vol.MigrationTarget != "" || replicaState(vol, n2.Name).State != tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE {
		t.Fatalf("volume after the failed migration: primary %s epoch %d (was %d), n2 %v", vol.Primary, vol.Epoch, before.Epoch, replicaState(vol, n2.Name))
	}
	// The window is closed: the target's export refuses the volume.
	if out, err := exec.CommandContext(ctx, "nbdinfo", nbdURI(td, n2, "fd")).CombinedOutput(); err == nil {
		t.Fatalf("the target still exports the volume after the failed migration:\n%s", out)
	}
	// With libvirtd back, the same migration succeeds.
	nlv, err := c.StartLibvirtd(ctx, n2)
	if err != nil {
		t.Fatal(err)
	}
	vc.lv[n2.Name] = nlv
	logs := vc.consoleSizes()
	if _, stderr, err := td.CLI(ctx, n1, "vm", "migrate", "f1", "--to", n2.Name); err != nil {
		t.Fatalf("migration after libvirtd came back: %v\n%s", err, stderr)
	}
	vc.movedOn(t, logs, after, "f1", n2.Name, "migration")
	if vol := volumeCmd(t, ctx, td, n1, "show", "fd"); vol.Primary != n2.Name || vol.Epoch != before.Epoch+1 {
		t.Fatalf("after the second migration: primary %s epoch %d", vol.Primary, vol.Epoch)
	}
	checkMigrationTLS(t, vc, n1, n2, "f1")
}

// checkMigrationTLS: the migrations from src to dst ran over TLS (libvirt's
// connection, as src's tandemd logged them), and dst's
// libvirtd refuses a host on the backend network that is not a member: no
// TCP listener, and TLS without a client certificate of the cluster CA is
// refused. src, a member, gets in with its node certificate and sees vm.
func checkMigrationTLS(t *testing.T, vc *vmCluster, src, dst *testcluster.Node, vm string) {
	t.Helper()
	c, ctx := vc.c, vc.ctx
	log, err := os.ReadFile(filepath.Join(src.Dir, "tandemd.log"))
	if err != nil {
		t.Fatal(err)
	}
	want := `msg="migration done"`
	tls := `dest="qemu+tls://` + dst.IP + `/system?pkipath=` + vc.td.DataDir(src) + `/libvirt-pki"`
	var done, overTLS int
	for _, l := range strings.Split(string(log), "\n") {
		if strings.Contains(l, "migration starting") {
			if !strings.Contains(l, tls) {
				t.Errorf("a migration did not use TLS for libvirt: %s", l)
			}
			overTLS++
		}
		if strings.Contains(l, want) {
			done++
		}
	}
	if done == 0 || overTLS == 0 {
		t.Fatalf("%s's log has no migration (%d started, %d done)", src.Name, overTLS, done)
	}
	t.Logf("%d migration(s) started over TLS (%s), %d done", overTLS, tls, done)

	if _, err := c.SwitchOnBackend(); err != nil {
		t.Fatal(err)
	}
	virsh := func(n *testcluster.Node, uri string) (string, error) {
		argv := []string{"virsh", "-c", uri, "list", "--name"}
		var out []byte
		var err error
		if n == nil {
			out, err = c.ExecSwitch(ctx, argv...)
		} else {
			out, err = c.Exec(ctx, n, argv...)
		}
		return strings.TrimSpace(string(out)), err
	}
	if out, err := virsh(nil, "qemu+tcp://"+dst.IP+"/system"); err == nil || !strings.Contains(out, "Connection refused") {
		t.Errorf("qemu+tcp to %s from the switch: %v, want connection refused\n%s", dst.Name, err, out)
	}
	// Without a client certificate: only the cluster's CA certificate.
	ca, err := os.ReadFile(filepath.Join(vc.td.DataDir(dst), "tls", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "cacert.pem"), ca, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := virsh(nil, "qemu+tls://"+dst.IP+"/system?pkipath="+dir); err == nil {
		t.Errorf("qemu+tls to %s without a client certificate was accepted:\n%s", dst.Name, out)
	}
	// A self-signed client certificate (the client trusts it and the
	// cluster CA, so only the server can refuse it).
	self := filepath.Join(t.TempDir(), "self")
	if out, err := exec.CommandContext(ctx, "sh", "-c", `set -e; mkdir -p "$1"; cd "$1"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout clientkey.pem -out clientcert.pem \
	-subj "/OU=node/CN=$2" -days 1 -addext keyUsage=critical,digitalSignature,keyEncipherment -addext extendedKeyUsage=clientAuth 2>&1
cat clientcert.pem "$3" > cacert.pem`, "sh", self, src.Name, filepath.Join(vc.td.DataDir(dst), "tls", "ca.crt")).CombinedOutput(); err != nil {
		t.Fatalf("openssl: %v\n%s", err, out)
	}
	if out, err := virsh(nil, "qemu+tls://"+dst.IP+"/system?pkipath="+self); err == nil {
		t.Errorf("qemu+tls to %s with a self-signed client certificate was accepted:\n%s", dst.Name, out)
	} else {
		t.Logf("self-signed client certificate refused: %s", out)
	}
	// A member with its node certificate gets in (the refusals above are
	// not a broken listener).
	if out, err := virsh(src, "qemu+tls://"+dst.IP+"/system?pkipath="+vc.td.DataDir(src)+"/libvirt-pki"); err != nil || !strings.Contains(out, vm) {
		t.Errorf("qemu+tls to %s from member %s: %v\n%s", dst.Name, src.Name, err, out)
	}
}

// TestVMCreateFromImage copies a qcow2 image into a VM's new replicated
// disk; qemu-img compares it with the export and verify with every replica.
func TestVMCreateFromImage(t *testing.T) {
	c, td, ctx := volCluster(t)
	n1 := c.Nodes[0]
	img := filepath.Join(t.TempDir(), "base.qcow2")
	runTool(t, ctx, "qemu-img", "create", "-q", "-f", "qcow2", img, "10M")
	runTool(t, ctx, "qemu-io", "-f", "qcow2", "-c", "write -P 0xab 0 1M", "-c", "write -P 0xcd 5M 64k", img)
	_, stderr, err := td.CLI(ctx, n1, "vm", "create", "bad", "--image", filepath.Join(t.TempDir(), "missing.img"))
	if err == nil || !strings.Contains(stderr, "missing.img") {
		t.Fatalf("missing image: %v\n%s", err, stderr)
	}
	out, stderr, err := td.CLI(ctx, n1, "vm", "create", "img1", "--memory", "128M", "--image", img, "--node", n1.Name, "--output", "json")
	if err != nil {
		t.Fatalf("create from image: %v\n%s", err, stderr)
	}
	if !strings.Contains(stderr, "copied into img1-disk0") {
		t.Errorf("no copy report on stderr:\n%s", stderr)
	}
	var info tandemv1.VMInfo
	if err := adminclient.UnmarshalJSON([]byte(out), &info); err != nil || len(info.Volumes) != 1 {
		t.Fatalf("create output: %v %s", err, out)
	}
	vol := volumeCmd(t, ctx, td, n1, "show", info.Volumes[0])
	if vol.SizeBytes != 10<<20 {
		t.Fatalf("disk size %d, want the image's 10 MiB", vol.SizeBytes)
	}
	runTool(t, ctx, "qemu-img", "compare", "-f", "qcow2", "-F", "raw", img, nbdURI(td, n1, info.Volumes[0]))
	out, _, err = td.CLI(ctx, n1, "volume", "verify", info.Volumes[0], "--output", "json")
	if err != nil {
		t.Fatal(err)
	}
	var ver tandemv1.VerifyVolumeResponse
	if err := adminclient.UnmarshalJSON([]byte(out), &ver); err != nil || len(ver.Mismatches) != 0 {
		t.Fatalf("replicas differ after the import: %v %s", err, out)
	}
	// Deleting the VM with --volumes removes its disk too.
	if out, stderr, err := td.CLI(ctx, n1, "vm", "delete", "img1", "--volumes"); err != nil || !strings.Contains(out, "with its volumes") {
		t.Fatalf("vm delete --volumes: %v\n%s%s", err, out, stderr)
	}
	if _, stderr, err := td.CLI(ctx, n1, "volume", "show", info.Volumes[0]); err == nil {
		t.Fatalf("volume %s still exists after vm delete --volumes", info.Volumes[0])
	} else if !strings.Contains(stderr, info.Volumes[0]) {
		t.Fatalf("volume show of a deleted volume: %q", stderr)
	}
	if _, _, err := td.CLI(ctx, n1, "vm", "show", "img1"); err == nil {
		t.Fatal("img1 still exists after vm delete")
	}
}
