package e2e

import (
	"context"
	"encoding/json"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
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
// (the guest releases it); removing it twice is refused. vm disk: a new
// 64 MiB 3-replica disk hot-plugged into the running VM (its primary the
// VM's node) is in the domain and the guest kernel sees it (the test
// guest's guest-get-disks), refusals (the boot disk, an unknown disk, a
// duplicate, another VM's volume, a volume whose primary is elsewhere)
// change nothing, it migrates live with the VM, and is detached on the
// target (gone from the domain, the guest and the record) and deleted; a
// disk added to the stopped VM is in its domain after its next start.
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

	// A disk hot-plugged into the running VM: a new 3-replica volume whose
	// primary is the VM's node, recorded after the first disk; the guest
	// kernel sees a new 64 MiB virtio disk.
	const disk2 = "rs-disk1"
	diskAdded := vc.vm(t, c.Nodes[1], "disk", "add", "rs", "--disk", "64M,replicas=3")
	if !slices.Equal(diskAdded.Volumes, []string{disk, disk2}) {
		t.Fatalf("vm disk add: disks recorded %v", diskAdded.Volumes)
	}
	if info := volumeCmd(t, ctx, td, n1, "show", disk2); info.Primary != n1.Name || info.SizeBytes != 64<<20 || len(info.Replicas) != 3 {
		t.Fatalf("the new disk's volume: primary %s, %d bytes, %d replicas", info.Primary, info.SizeBytes, len(info.Replicas))
	}
	if src := vc.diskSources(t, n1, "rs"); !slices.Equal(src, []string{disk, disk2}) {
		t.Fatalf("after vm disk add, the running domain on %s has the disks %v", n1.Name, src)
	}
	gd := vc.waitGuestDisks(t, n1, "rs", time.Minute, func(d map[string]uint64) bool { return d["/dev/vdb"] == 64<<20 })
	t.Logf("disk %s hot-plugged into the running VM; the guest kernel sees %v", disk2, gd)

	// Refusals change nothing: the first disk, an unknown one, a volume of
	// another VM, one whose primary is not the VM's node, a duplicate.
	volumeCmd(t, ctx, td, n1, "create", "rs-other", "--size", "64M", "--replicas", "2")
	vc.vm(t, n1, "create", "idle", "--memory", "64M", "--disk-volume", "rs-other")
	volumeCmd(t, ctx, td, n1, "create", "rs-far", "--size", "64M", "--nodes", c.Nodes[1].Name+","+c.Nodes[2].Name)
	for _, r := range []struct {
		args []string
		want string
	}{
		{[]string{"detach", "rs", disk}, "is the first disk of VM rs, which it boots from"},
		{[]string{"detach", "rs", "rs-nope"}, `VM rs has no disk on volume "rs-nope"`},
		{[]string{"add", "rs", "--disk-volume", disk2}, "already a disk of VM rs"},
		{[]string{"add", "rs", "--disk-volume", "rs-other"}, "volume rs-other is a disk of VM idle"},
		{[]string{"add", "rs", "--disk-volume", "rs-far"}, "the primary of volume rs-far is " + c.Nodes[1].Name + ", not " + n1.Name},
		{[]string{"add", "rs", "--disk-volume", "rs-nope"}, `no volume named "rs-nope"`},
		{[]string{"add", "rs", "--disk", "64M", "--disk-volume", "rs-far"}, "give one disk"},
		{[]string{"add", "rs", "--disk", "1000"}, "multiple of 4 KiB"},
	} {
		_, stderr, err := td.CLI(ctx, n1, append([]string{"vm", "disk"}, r.args...)...)
		if err == nil || !strings.Contains(stderr, r.want) {
			t.Fatalf("vm disk %v: want an error with %q, got %v: %s", r.args, r.want, err, stderr)
		}
	}
	if v := vc.vm(t, n1, "show", "rs"); !slices.Equal(v.Volumes, []string{disk, disk2}) {
		t.Fatalf("after the refusals the VM's disks are %v", v.Volumes)
	}
	if src := vc.diskSources(t, n1, "rs"); !slices.Equal(src, []string{disk, disk2}) {
		t.Fatalf("after the refusals the running domain has the disks %v", src)
	}
	waitVolume(t, ctx, td, n1, disk2, time.Minute, func(info *tandemv1.VolumeInfo) bool {
		for _, r := range info.Replicas {
			if r.State != tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE {
				return false
			}
		}
		return len(info.Replicas) == 3
	})

	// The grown disk and the hot-plugged NIC migrate live with the VM.
	to := c.Nodes[2]
	done, mark := vc.migrateLive(t, n1, "rs", n1, to)
	t.Logf("migration %s -> %s with the grown disk: downtime %d ms", n1.Name, to.Name, done.DowntimeMs)
	after := vc.waitDiskBytes(t, mark, 128<<20, 2*time.Minute)
	t.Logf("after the migration the guest still sees %d bytes and writes (%d acknowledged)", after.DiskBytes, after.Acked)
	if l := domiflist(to); !strings.Contains(l, mac2) || strings.Count(l, "bridge") != 2 {
		t.Fatalf("after the migration, the domain on %s:\n%s", to.Name, l)
	}
	// The hot-plugged disk came along, on the target's export.
	if src := vc.diskSources(t, to, "rs"); !slices.Equal(src, []string{disk, disk2}) {
		t.Fatalf("after the migration the domain on %s has the disks %v", to.Name, src)
	}
	if info := volumeCmd(t, ctx, td, n1, "show", disk2); info.Primary != to.Name {
		t.Fatalf("after the migration the primary of %s is %s, not %s", disk2, info.Primary, to.Name)
	}
	gd = vc.waitGuestDisks(t, to, "rs", time.Minute, func(d map[string]uint64) bool { return d["/dev/vdb"] == 64<<20 })
	t.Logf("after the migration the guest still sees %v", gd)
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

	// The disk detached on the target: the guest releases it, then the
	// record follows, then --delete deletes the volume.
	if v := vc.vm(t, n1, "disk", "detach", "rs", disk2, "--delete"); !slices.Equal(v.Volumes, []string{disk}) {
		t.Fatalf("vm disk detach: disks recorded %v", v.Volumes)
	}
	if src := vc.diskSources(t, to, "rs"); !slices.Equal(src, []string{disk}) {
		t.Fatalf("after vm disk detach the domain on %s has the disks %v", to.Name, src)
	}
	gd = vc.waitGuestDisks(t, to, "rs", time.Minute, func(d map[string]uint64) bool { _, ok := d["/dev/vdb"]; return !ok && d["/dev/vda"] == 128<<20 })
	if _, stderr, err := td.CLI(ctx, n1, "volume", "show", disk2); err == nil || !strings.Contains(stderr, disk2) {
		t.Fatalf("volume %s after detach --delete: %v %s", disk2, err, stderr)
	}
	if _, stderr, err := td.CLI(ctx, n1, "vm", "disk", "detach", "rs", disk2); err == nil || !strings.Contains(stderr, "has no disk on volume") {
		t.Fatalf("detaching the disk twice: %v %s", err, stderr)
	}
	after = vc.guestProgress(t, after, time.Minute)
	t.Logf("disk %s unplugged and deleted; the guest sees %v and writes on", disk2, gd)

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
	// vm set --cpu-model: a model libvirt does not know is refused and
	// changes nothing; one TCG emulates is recorded and reaches QEMU at the
	// next start (the VM is q35, the default).
	_, stderr, err = td.CLI(ctx, n1, "vm", "set", "rs", "--cpu-model", "nosuch")
	if err == nil || !strings.Contains(stderr, "cpu model nosuch: libvirt does not know it") || !strings.Contains(stderr, "qemu64") {
		t.Fatalf("vm set --cpu-model nosuch: want a refusal naming known models, got %v: %s", err, stderr)
	}
	t.Logf("refused: %s", strings.TrimSpace(stderr))
	if v := vc.vm(t, n1, "show", "rs"); v.CpuModel != "qemu64" || !v.CpuModelDefault || v.Machine != "q35" {
		t.Fatalf("after the refused model: machine %q, cpu model %q (default %v)", v.Machine, v.CpuModel, v.CpuModelDefault)
	}
	out, stderr, err = td.CLI(ctx, n1, "vm", "set", "rs", "--cpu-model", "Nehalem")
	if err != nil || !strings.Contains(out, "-> Nehalem") || !strings.Contains(out, "at the next start") {
		t.Fatalf("vm set --cpu-model Nehalem of the stopped VM: %v\n%s%s", err, out, stderr)
	}
	t.Logf("vm set: %s", strings.TrimSpace(out))
	// A disk added to the stopped VM is recorded only (its primary on the
	// node it ran on) and is in the domain from its next start.
	if v := vc.vm(t, n1, "disk", "add", "rs", "--disk", "64M,replicas=3"); !slices.Equal(v.Volumes, []string{disk, disk2}) || v.State == "running" {
		t.Fatalf("vm disk add of the stopped VM: disks %v, state %s", v.Volumes, v.State)
	}
	if info := volumeCmd(t, ctx, td, n1, "show", disk2); info.Primary != to.Name {
		t.Fatalf("the stopped VM's new disk has its primary on %s, not %s", info.Primary, to.Name)
	}
	vc.vm(t, n1, "start", "rs", "--node", to.Name)
	vc.guestProgress(t, guest.Datagram{Boot: after.Boot + 1}, 3*time.Minute)
	if src := vc.diskSources(t, to, "rs"); !slices.Equal(src, []string{disk, disk2}) {
		t.Fatalf("after the start the domain has the disks %v", src)
	}
	gd = vc.waitGuestDisks(t, to, "rs", time.Minute, func(d map[string]uint64) bool { return d["/dev/vdb"] == 64<<20 })
	t.Logf("disk %s added to the stopped VM; after its start the guest sees %v", disk2, gd)
	if di := dominfo(); !regexp.MustCompile(`Max memory:\s+262144 KiB`).MatchString(di) || !regexp.MustCompile(`CPU\(s\):\s+2\n`).MatchString(di) {
		t.Fatalf("after the restart the VM does not have 2 vCPUs and 256 MiB:\n%s", di)
	}
	if v := vc.vm(t, n1, "show", "rs"); v.Vcpus != 2 || v.MemoryMib != 256 || v.CpuModel != "Nehalem" || v.CpuModelDefault {
		t.Fatalf("vm show after vm set: %d vCPUs, %d MiB, cpu model %q", v.Vcpus, v.MemoryMib, v.CpuModel)
	}
	x := vc.virsh(t, to, "dumpxml", "rs")
	if !strings.Contains(x, ">Nehalem</model>") || !regexp.MustCompile(`machine='pc-q35-`).MatchString(x) {
		t.Fatalf("after the restart the domain is not a q35 with the Nehalem CPU model:\n%s", x)
	}
	t.Logf("the restarted guest runs on q35 with CPU model Nehalem")
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

// diskSources are the volumes of the virtio disks of domain name as n's
// libvirtd runs it, in the domain's order (the cloud-init seed and the
// CD-ROM, which are files, are left out).
func (vc *vmCluster) diskSources(t *testing.T, n *testcluster.Node, name string) []string {
	t.Helper()
	rows, _ := vc.blockDevices(t, n, name)
	var out []string
	for _, f := range rows {
		if len(f) == 4 && f[0] == "network" && f[1] == "disk" {
			out = append(out, f[3])
		}
	}
	return out
}

// diskTargets maps the source (volume, or file) of each disk of domain
// name as n's libvirtd runs it to its target.
func (vc *vmCluster) diskTargets(t *testing.T, n *testcluster.Node, name string) map[string]string {
	t.Helper()
	rows, _ := vc.blockDevices(t, n, name)
	out := map[string]string{}
	for _, f := range rows {
		if len(f) == 4 && f[1] == "disk" {
			out[f[3]] = f[2]
		}
	}
	return out
}

// waitGuestDisks asks the test guest's agent (guest-get-disks, through
// n's libvirtd) for its virtio disks and their sizes as its kernel sees
// them until ok holds, and returns them.
func (vc *vmCluster) waitGuestDisks(t *testing.T, n *testcluster.Node, name string, timeout time.Duration, ok func(map[string]uint64) bool) map[string]uint64 {
	t.Helper()
	vc.mu.Lock()
	sock := vc.lv[n.Name].Socket
	vc.mu.Unlock()
	var last string
	for deadline := time.Now().Add(timeout); ; {
		b, err := exec.CommandContext(vc.ctx, "virsh", "-c", "qemu:///system?socket="+sock, "qemu-agent-command", name, "--timeout", "5",
			`{"execute":"guest-get-disks"}`).CombinedOutput()
		last = string(b)
		if err == nil {
			var r struct {
				Return []struct {
					Name string `json:"name"`
					Size uint64 `json:"size"`
				} `json:"return"`
			}
			if err := json.Unmarshal(b, &r); err == nil {
				got := map[string]uint64{}
				for _, d := range r.Return {
					got[d.Name] = d.Size
				}
				if ok(got) {
					return got
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the guest's disks on %s did not become as expected within %v; last answer: %s", n.Name, timeout, last)
		}
		time.Sleep(time.Second)
	}
}
