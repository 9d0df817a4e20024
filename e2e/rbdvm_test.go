package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tandemhci/tandem/internal/cephtest"
	"github.com/tandemhci/tandem/internal/guest"
	"github.com/tandemhci/tandem/internal/testcluster"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// rbdVMCluster is a VM cluster (libvirtd on every node) with a micro Ceph
// in the switch namespace, on the backend network, and storage ceph1
// added with client.tandem's key (also returned as a keyring file).
func rbdVMCluster(t *testing.T, o vmClusterOpts) (*vmCluster, *cephtest.Cluster, string) {
	t.Helper()
	if err := cephtest.Available(); err != nil {
		t.Skipf("no Ceph binaries: %v", err)
	}
	if _, err := os.Stat("/usr/lib/x86_64-linux-gnu/qemu/block-rbd.so"); err != nil {
		t.Skipf("QEMU has no rbd block driver (Debian's qemu-block-extra; make apt-deps installs it): %v", err)
	}
	if o.timeout == 0 {
		o.timeout = 15 * time.Minute
	}
	vc := newVMClusterWith(t, o)
	c, ctx := vc.c, vc.ctx
	ceph := startCeph(t, ctx, c)
	key := tandemClient(t, ctx, ceph)
	kf := filepath.Join(t.TempDir(), "tandem.keyring")
	if err := os.WriteFile(kf, []byte("[client.tandem]\n\tkey = "+key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, stderr, err := vc.td.CLI(ctx, c.Nodes[0], "storage", "add", "rbd", "ceph1", "--pool", ceph.Pool, "--mon", ceph.MonHost, "--client", "tandem", "--key-file", kf); err != nil {
		t.Fatalf("storage add: %v\n%s", err, stderr)
	}
	return vc, ceph, kf
}

// rbdHead is the start of an RBD image, read with the rbd CLI from the
// switch namespace (Ceph's own client, not Tandem's).
func rbdHead(t *testing.T, ctx context.Context, c *testcluster.Cluster, ceph *cephtest.Cluster, image string) []byte {
	t.Helper()
	f := filepath.Join(t.TempDir(), "head")
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", c.Switch().NS, "rbd", "-c", ceph.Conf, "export", ceph.Pool+"/"+image, f)
	cmd.Env = append(os.Environ(), ceph.Env()...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("rbd export: %v\n%s", err, out)
	}
	b, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRBDVM is issue 15's VM on RBD: the test guest boots with its
// counter disk on an RBD volume, opened by QEMU's own librbd (cephx
// through a libvirt secret), on a node that is not where the volume was
// created (placement ignores replica location); Ceph sees exactly QEMU as
// the watcher and lock owner. A live migration moves the VM; afterwards
// the volume has exactly one watcher and the lock owner is the target,
// and the catalog's owner followed. The disk grows online (by QEMU's
// librbd; the guest sees the new size). Stopped, the image holds a
// counter at least the last one the guest reported acknowledged, the
// disk grows offline, fio's own rbd engine writes and verifies the image
// past the counter, and the node's libvirt secret is gone. A second RBD
// disk hot-plugged into the running VM (vm disk add --disk 64M,backend=rbd)
// is seen by the guest, migrates with the VM, and is detached and deleted.
func TestRBDVM(t *testing.T) {
	vc, ceph, _ := rbdVMCluster(t, vmClusterOpts{})
	c, td, ctx := vc.c, vc.td, vc.ctx
	n1, n2, n3 := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	vip := strings.TrimSuffix(c.ReceiverIP, ".1") + ".51"

	volumeCmd(t, ctx, td, n1, "create", "rv", "--size", "64M", "--backend", "rbd")
	info := vc.vm(t, n1, "create", "gr", "--memory", "192M", "--disk-volume", "rv", "--node", n3.Name,
		"--kernel", vc.img.Kernel, "--initrd", vc.img.Initrd, "--cmdline", vc.cmdline(vip), "--nic", c.VMBridge, "--start")
	if info.Node != n3.Name || info.State != "running" {
		t.Fatalf("gr after create --start: %+v", info)
	}
	first := vc.guestProgress(t, guest.Datagram{}, 3*time.Minute)
	t.Logf("guest up on an RBD disk: seq %d, %d disk writes acknowledged", first.Seq, first.Acked)

	// One watcher, QEMU on n3, holding the lock; tandemd has no client.
	oneClient := func(node string) *tandemv1.VolumeInfo {
		t.Helper()
		var v *tandemv1.VolumeInfo
		for deadline := time.Now().Add(time.Minute); ; {
			v = volumeCmd(t, ctx, td, n2, "show", "rv")
			if v.Primary == node && len(v.Watchers) == 1 && v.Watchers[0].Node == node && v.LockOwner != nil && v.LockOwner.Node == node && v.LockOwner.Addr == v.Watchers[0].Addr {
				return v
			}
			if time.Now().After(deadline) {
				t.Fatalf("volume rv: want owner, one watcher and the lock on %s; owner %s, watchers %v, lock %v, warning %q", node, v.Primary, v.Watchers, v.LockOwner, v.Warning)
			}
			time.Sleep(time.Second)
		}
	}
	before := oneClient(n3.Name)
	t.Logf("before migration: owner %s epoch %d, watcher %s, lock %s (%s)", before.Primary, before.Epoch, before.Watchers[0].Addr, before.LockOwner.Addr, before.LockOwner.Client)
	if before.UsedBy != "gr" || before.Warning != "" {
		t.Fatalf("show: used by %q, warning %q", before.UsedBy, before.Warning)
	}

	// A second RBD disk hot-plugged into the running VM (issue 18): a new
	// image owned by the VM's node and opened by its QEMU (the guest sees
	// it); it migrates with the VM and is detached and deleted after the
	// online resize below.
	const disk2 = "gr-disk0"
	if v := vc.vm(t, n1, "disk", "add", "gr", "--disk", "64M,backend=rbd"); !slices.Equal(v.Volumes, []string{"rv", disk2}) {
		t.Fatalf("vm disk add of an RBD disk: disks recorded %v", v.Volumes)
	}
	rbdDisks := func(n *testcluster.Node) {
		t.Helper()
		if src := vc.diskSources(t, n, "gr"); !slices.Equal(src, []string{ceph.Pool + "/rv", ceph.Pool + "/" + disk2}) {
			t.Fatalf("the domain on %s has the disks %v", n.Name, src)
		}
		if v := volumeCmd(t, ctx, td, n1, "show", disk2); v.Primary != n.Name {
			t.Fatalf("the owner of %s is %s, not %s", disk2, v.Primary, n.Name)
		}
		gd := vc.waitGuestDisks(t, n, "gr", time.Minute, func(d map[string]uint64) bool { return d["/dev/vdb"] == 64<<20 })
		t.Logf("RBD disk %s on %s; the guest sees %v", disk2, n.Name, gd)
	}
	rbdDisks(n3)

	done, mark := vc.migrateLive(t, n1, "gr", n3, n2)
	t.Logf("migration n3 -> n2: downtime %d ms, total %d ms", done.DowntimeMs, done.TotalMs)
	after := oneClient(n2.Name)
	t.Logf("after migration: owner %s epoch %d, watcher %s, lock %s (%s)", after.Primary, after.Epoch, after.Watchers[0].Addr, after.LockOwner.Addr, after.LockOwner.Client)
	if after.Epoch <= before.Epoch || after.LockOwner.Addr == before.LockOwner.Addr {
		t.Fatalf("after migration: epoch %d (was %d), lock %s (was %s)", after.Epoch, before.Epoch, after.LockOwner.Addr, before.LockOwner.Addr)
	}
	if v := vc.vm(t, n1, "show", "gr"); v.Node != n2.Name || v.State != "running" {
		t.Fatalf("gr after migration: %+v", v)
	}
	last := vc.guestProgress(t, mark, 2*time.Minute)

	// Grown online: the VM's QEMU grows the image (it holds the lock) and
	// the guest sees the new size; the size is recorded and QEMU is still
	// the one client.
	if out, stderr, err := td.CLI(ctx, n1, "vm", "disk", "resize", "gr", "rv", "--size", "96M"); err != nil {
		t.Fatalf("vm disk resize of a running VM's RBD disk: %v\n%s%s", err, out, stderr)
	}
	last = vc.waitDiskBytes(t, last, 96<<20, time.Minute)
	if v := oneClient(n2.Name); v.SizeBytes != 96<<20 {
		t.Fatalf("volume rv after the online resize: %d bytes", v.SizeBytes)
	}
	t.Logf("grown online to 96 MiB: the guest sees %d bytes and writes on (%d acknowledged)", last.DiskBytes, last.Acked)

	// The hot-plugged RBD disk came along; detached, it leaves the domain,
	// the guest and the record, and --delete removes its image.
	rbdDisks(n2)
	if v := vc.vm(t, n1, "disk", "detach", "gr", disk2, "--delete"); !slices.Equal(v.Volumes, []string{"rv"}) {
		t.Fatalf("vm disk detach of the RBD disk: disks recorded %v", v.Volumes)
	}
	if src := vc.diskSources(t, n2, "gr"); !slices.Equal(src, []string{ceph.Pool + "/rv"}) {
		t.Fatalf("after the detach the domain on %s has the disks %v", n2.Name, src)
	}
	vc.waitGuestDisks(t, n2, "gr", time.Minute, func(d map[string]uint64) bool { _, ok := d["/dev/vdb"]; return !ok })
	if _, stderr, err := td.CLI(ctx, n1, "volume", "show", disk2); err == nil || !strings.Contains(stderr, disk2) {
		t.Fatalf("volume %s after detach --delete: %v %s", disk2, err, stderr)
	}
	last = vc.guestProgress(t, last, time.Minute)
	t.Logf("RBD disk %s detached and deleted; the guest writes on", disk2)

	// Stopped: the counter on the image (read by Ceph's own client) is at
	// least the last acknowledged one, and no secret stays in libvirtd.
	vc.vm(t, n1, "stop", "gr", "--force")
	st, err := guest.DecodeDiskState(rbdHead(t, ctx, c, ceph, "rv"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Counter < last.Acked {
		t.Fatalf("counter on the image %d < last acknowledged %d", st.Counter, last.Acked)
	}
	t.Logf("counter on the image %d (last acknowledged %d)", st.Counter, last.Acked)

	// Grown offline: the owner opens the stopped VM's image for the resize
	// only; Ceph reports the new size.
	if out, stderr, err := td.CLI(ctx, n1, "vm", "disk", "resize", "gr", "rv", "--size", "128M"); err != nil {
		t.Fatalf("vm disk resize of a stopped VM's RBD disk: %v\n%s%s", err, out, stderr)
	}
	if v := volumeCmd(t, ctx, td, n1, "show", "rv"); v.SizeBytes != 128<<20 || len(v.Watchers) != 0 {
		t.Fatalf("volume rv after the offline resize: %d bytes, watchers %v", v.SizeBytes, v.Watchers)
	}

	// fio's own rbd engine (Ceph's client, not Tandem's) writes and
	// verifies the volume's image past the guest's counter, now that no
	// QEMU holds it.
	fio := exec.CommandContext(ctx, "ip", "netns", "exec", c.Switch().NS, "fio", "--name=rbdverify", "--ioengine=rbd",
		"--clientname=admin", "--pool="+ceph.Pool, "--rbdname=rv", "--rw=randwrite", "--bs=4k", "--offset=32M", "--size=16M",
		"--iodepth=16", "--verify=crc32c", "--do_verify=1", "--verify_fatal=1", "--verify_state_save=0", "--output-format=terse")
	fio.Env = append(os.Environ(), ceph.Env()...)
	if out, err := fio.CombinedOutput(); err != nil || strings.Contains(string(out), "verify:") {
		t.Fatalf("fio --ioengine=rbd --verify=crc32c on rv: %v\n%s", err, out)
	}
	if after, err := guest.DecodeDiskState(rbdHead(t, ctx, c, ceph, "rv")); err != nil || after.Counter != st.Counter {
		t.Fatalf("fio past 32M changed the guest's counter block: %v (counter %d, was %d)", err, after.Counter, st.Counter)
	}
	t.Logf("fio's rbd engine: 16 MiB of 4K random writes at 32M verified (crc32c)")
	for deadline := time.Now().Add(30 * time.Second); ; {
		var left []string
		for _, n := range []*testcluster.Node{n1, n2, n3} {
			vc.mu.Lock()
			sock := vc.lv[n.Name].Socket
			vc.mu.Unlock()
			out, _ := exec.CommandContext(ctx, "virsh", "-c", "qemu:///system?socket="+sock, "secret-list").CombinedOutput()
			if strings.Contains(string(out), "ceph") {
				left = append(left, n.Name+": "+string(out))
			}
		}
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("libvirt secrets left after the VM stopped:\n%s", strings.Join(left, "\n"))
		}
		time.Sleep(time.Second)
	}
}
