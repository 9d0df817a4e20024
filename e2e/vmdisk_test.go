package e2e

import (
	"context"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tandemhci/tandem/internal/guest"
	"github.com/tandemhci/tandem/internal/testcluster"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// waitDiskBytes waits for a heartbeat of boot whose counter disk is size
// bytes as the guest kernel sees it, with writes acknowledged after
// after.Acked, and returns it.
func (vc *vmCluster) waitDiskBytes(t *testing.T, after guest.Datagram, size uint64, timeout time.Duration) guest.Datagram {
	t.Helper()
	ctx, cancel := context.WithTimeout(vc.ctx, timeout)
	defer cancel()
	d, err := vc.rx.WaitFor(ctx, func(d guest.Datagram) bool {
		return d.Boot == after.Boot && d.DiskBytes == size && d.Acked > after.Acked
	})
	if err != nil {
		last := vc.lastFromBoot(after.Boot)
		t.Fatalf("the guest did not report a %d-byte disk and new writes within %v (last heartbeat: disk %d bytes, %d writes acknowledged): %v", size, timeout, last.DiskBytes, last.Acked, err)
	}
	return d
}

// TestVMChanges is issue 18's VM changes. Online resize: the running test
// guest's 3-replica counter disk grows from 64 MiB to 96 and then 128 MiB
// with 'tandem vm disk resize'; after each step the guest's kernel reports
// the new size in its heartbeat while it keeps writing (no reboot: the
// same boot), every replica is UpToDate at the new size and volume verify
// passes. The VM then migrates live with the grown disk and keeps the
// size. Shrinking, a size that is not a multiple of 4 KiB and a volume
// that is not the VM's disk are refused and change nothing. vm set:
// --memory 0, --vcpus 0, more vCPUs than any node has CPUs and more
// memory than any node offers are refused; 256 MiB and 2 vCPUs set on
// the running VM leave its QEMU as it is until the VM restarts, and it
// has them after a stop and start. vm nic: a NIC hot-plugged into the
// running VM is in its domain, migrates with it, and is unplugged again
// (the guest releases it); removing it twice is refused.
func TestVMChanges(t *testing.T) {
	vc := newVMCluster(t)
	c, td, ctx := vc.c, vc.td, vc.ctx
	n1 := c.Nodes[0]
	up := vc.guestVM(t, "rs", n1, 62, 3)
	const disk = "rs-disk0"
	d := vc.waitDiskBytes(t, guest.Datagram{Boot: up.Boot}, 64<<20, time.Minute)
	t.Logf("guest up on %s: disk %d bytes, %d writes acknowledged", n1.Name, d.DiskBytes, d.Acked)

	for _, step := range []struct {
		size  string
		bytes int64
	}{{"96M", 96 << 20}, {"128M", 128 << 20}} {
		start := time.Now()
		if out, stderr, err := td.CLI(ctx, c.Nodes[1], "vm", "disk", "resize", "rs", disk, "--size", step.size); err != nil {
			t.Fatalf("vm disk resize to %s: %v\n%s%s", step.size, err, out, stderr)
		}
		d = vc.waitDiskBytes(t, d, uint64(step.bytes), time.Minute)
		t.Logf("resized to %s: the guest saw %d bytes %v after the command started, still writing (%d acknowledged, boot %d)", step.size, d.DiskBytes, time.Since(start).Round(time.Millisecond), d.Acked, d.Boot)
		info := waitVolume(t, ctx, td, n1, disk, time.Minute, func(info *tandemv1.VolumeInfo) bool {
			if info.SizeBytes != step.bytes || len(info.Replicas) != 3 {
				return false
			}
			for _, r := range info.Replicas {
				if r.State != tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE {
					return false
				}
			}
			return true
		})
		out, stderr, err := td.CLI(ctx, n1, "volume", "verify", disk)
		if err != nil {
			t.Fatalf("volume verify after the resize to %s: %v\n%s%s", step.size, err, out, stderr)
		}
		t.Logf("volume %s: %d bytes on %d UpToDate replicas; verify: %s", disk, info.SizeBytes, len(info.Replicas), strings.TrimSpace(out))
	}

	// Refusals change nothing.
	for _, r := range []struct {
		args []string
		want string
	}{
		{[]string{"rs", disk, "--size", "64M"}, "shrinking"},
		{[]string{"rs", disk, "--size", "134217729"}, "multiple of 4 KiB"},
		{[]string{"rs", "other-disk", "--size", "256M"}, `no disk on volume "other-disk"`},
	} {
		_, stderr, err := td.CLI(ctx, n1, append([]string{"vm", "disk", "resize"}, r.args...)...)
		if err == nil || !strings.Contains(stderr, r.want) {
			t.Fatalf("vm disk resize %v: want an error with %q, got %v: %s", r.args, r.want, err, stderr)
		}
	}
	if info := volumeCmd(t, ctx, td, n1, "show", disk); info.SizeBytes != 128<<20 {
		t.Fatalf("after refused resizes the volume is %d bytes", info.SizeBytes)
	}

	// A NIC hot-plugged into the running VM, recorded after the first.
	domiflist := func(n *testcluster.Node) string { return strings.ToLower(vc.virsh(t, n, "domiflist", "rs")) }
	nicAdded := vc.vm(t, n1, "nic", "add", "rs", vc.c.VMBridge)
	if len(nicAdded.Nics) != 2 {
		t.Fatalf("vm nic add: %d NICs recorded", len(nicAdded.Nics))
	}
	mac2 := nicAdded.Nics[1].Mac
	if l := domiflist(n1); !strings.Contains(l, mac2) || strings.Count(l, "bridge") != 2 {
		t.Fatalf("after vm nic add, the running domain on %s:\n%s", n1.Name, l)
	}
	t.Logf("NIC %s hot-plugged into the running VM", mac2)

	// The grown disk and the hot-plugged NIC migrate live with the VM.
	to := c.Nodes[2]
	done, mark := vc.migrateLive(t, n1, "rs", n1, to)
	t.Logf("migration %s -> %s with the grown disk: downtime %d ms", n1.Name, to.Name, done.DowntimeMs)
	after := vc.waitDiskBytes(t, mark, 128<<20, 2*time.Minute)
	t.Logf("after the migration the guest still sees %d bytes and writes (%d acknowledged)", after.DiskBytes, after.Acked)
	if l := domiflist(to); !strings.Contains(l, mac2) || strings.Count(l, "bridge") != 2 {
		t.Fatalf("after the migration, the domain on %s:\n%s", to.Name, l)
	}
	// Unplugged again: the guest releases it, then the record follows.
	if v := vc.vm(t, n1, "nic", "remove", "rs", mac2); len(v.Nics) != 1 {
		t.Fatalf("vm nic remove: %d NICs recorded", len(v.Nics))
	}
	if l := domiflist(to); strings.Contains(l, mac2) || strings.Count(l, "bridge") != 1 {
		t.Fatalf("after vm nic remove, the domain on %s:\n%s", to.Name, l)
	}
	if _, stderr, err := td.CLI(ctx, n1, "vm", "nic", "remove", "rs", mac2); err == nil || !strings.Contains(stderr, "has no NIC with MAC") {
		t.Fatalf("removing the NIC twice: %v %s", err, stderr)
	}
	vc.guestProgress(t, after, time.Minute)
	t.Logf("NIC %s unplugged; the guest writes on", mac2)

	// vm set: bad values are refused; good ones are recorded at once and
	// reach QEMU at the next start.
	for _, r := range []struct {
		args []string
		want string
	}{
		{[]string{"--memory", "0"}, `--memory: size "0" is zero`},
		{[]string{"--memory", "32M"}, "memory 32 MiB: at least 64 MiB"},
		{[]string{"--vcpus", "0"}, "vcpus 0: use 1 to 64"},
		{[]string{"--vcpus", strconv.Itoa(runtime.NumCPU() + 1)}, "is more than any node has CPUs"},
		{[]string{"--memory", "64G"}, "more than any node offers VMs"},
	} {
		_, stderr, err := td.CLI(ctx, n1, append([]string{"vm", "set", "rs"}, r.args...)...)
		if err == nil || !strings.Contains(stderr, r.want) {
			t.Fatalf("vm set rs %v: want an error with %q, got %v: %s", r.args, r.want, err, stderr)
		}
	}
	out, stderr, err := td.CLI(ctx, n1, "vm", "set", "rs", "--memory", "256M", "--vcpus", "2")
	if err != nil || !strings.Contains(out, "memory 192 -> 256 MiB") || !strings.Contains(out, "when the VM restarts") {
		t.Fatalf("vm set of a running VM: %v\n%s%s", err, out, stderr)
	}
	t.Logf("vm set: %s", strings.TrimSpace(out))
	dominfo := func() string { return vc.virsh(t, to, "dominfo", "rs") }
	if di := dominfo(); !regexp.MustCompile(`Max memory:\s+196608 KiB`).MatchString(di) || !regexp.MustCompile(`CPU\(s\):\s+1\n`).MatchString(di) {
		t.Fatalf("the running VM changed before a restart:\n%s", di)
	}
	vc.vm(t, n1, "stop", "rs", "--force")
	vc.vm(t, n1, "start", "rs", "--node", to.Name)
	vc.guestProgress(t, guest.Datagram{Boot: after.Boot + 1}, 3*time.Minute)
	if di := dominfo(); !regexp.MustCompile(`Max memory:\s+262144 KiB`).MatchString(di) || !regexp.MustCompile(`CPU\(s\):\s+2\n`).MatchString(di) {
		t.Fatalf("after the restart the VM does not have 2 vCPUs and 256 MiB:\n%s", di)
	}
	if v := vc.vm(t, n1, "show", "rs"); v.Vcpus != 2 || v.MemoryMib != 256 {
		t.Fatalf("vm show after vm set: %d vCPUs, %d MiB", v.Vcpus, v.MemoryMib)
	}
}

// virsh runs virsh against node n's libvirtd and returns its output.
func (vc *vmCluster) virsh(t *testing.T, n *testcluster.Node, args ...string) string {
	t.Helper()
	vc.mu.Lock()
	sock := vc.lv[n.Name].Socket
	vc.mu.Unlock()
	b, err := exec.CommandContext(vc.ctx, "virsh", append([]string{"-c", "qemu:///system?socket=" + sock}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("virsh %s on %s: %v\n%s", strings.Join(args, " "), n.Name, err, b)
	}
	return string(b)
}
