package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tandemhci/tandem/internal/guest"
	"github.com/tandemhci/tandem/internal/testcluster"
)

// TestCloudInit (issue 18): vm create --cloud-init gives the VM a NoCloud
// seed (an ISO labelled cidata on a read-only virtio disk) built on the
// node that starts it from the sealed files in its record. The test guest
// reads the seed from the raw device and reports the user-data's
// tandem_test_value in its heartbeat; the seed follows a live migration
// (the target builds its own) and a restart on another node; bad input is
// refused with nothing created.
func TestCloudInit(t *testing.T) {
	vc := newVMCluster(t)
	c, td, ctx := vc.c, vc.td, vc.ctx
	n1, n2, n3 := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	vip := strings.TrimSuffix(c.ReceiverIP, ".1") + ".52"
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	value := "ci-" + hex.EncodeToString(rnd[:])
	user := write("user-data.yaml", "#cloud-config\nhostname: ci\ntandem_test_value: "+value+"\n")
	netcfg := write("network-config", "version: 2\nethernets:\n  eth0:\n    addresses: ["+vip+"/24]\n")

	// Bad input: refused with a clear error, nothing created (the daemon
	// checks again what the CLI checked).
	for name, bad := range map[string]struct{ file, want string }{
		"not yaml":  {write("bad.yaml", "#cloud-config\nusers: [admin\n"), "not valid YAML"},
		"no header": {write("plain.txt", "this is not cloud-config\n"), "#cloud-config"},
		"too big":   {write("big.yaml", "#!/bin/sh\n"+strings.Repeat("# padding\n", 7000)), "64 KiB"},
		"missing":   {filepath.Join(dir, "nosuch.yaml"), "no such file"},
	} {
		_, stderr, err := td.CLI(ctx, n1, "vm", "create", "bad", "--memory", "192M", "--disk", "64M", "--cloud-init", bad.file)
		if err == nil || !strings.Contains(stderr, bad.want) {
			t.Fatalf("%s: %v %q, want an error containing %q", name, err, stderr, bad.want)
		}
		t.Logf("refused (%s): %s", name, strings.TrimSpace(stderr))
	}
	if out, _, err := td.CLI(ctx, n1, "vm", "list"); err != nil || strings.Contains(out, "bad") {
		t.Fatalf("a refused create left a VM: %v\n%s", err, out)
	}
	if out, _, err := td.CLI(ctx, n1, "volume", "list"); err != nil || strings.Contains(out, "bad-disk0") {
		t.Fatalf("a refused create left a volume: %v\n%s", err, out)
	}

	// The seed is vdb, after the one volume; the guest is told so.
	cmdline := vc.img.Cmdline(guest.Config{IP: vip + "/24", UDP: c.ReceiverIP + ":9999", Rate: 100, Disk: "/dev/vda", CloudInit: "/dev/vdb"})
	info := vc.vm(t, n1, "create", "ci", "--memory", "192M", "--disk", "64M,replicas=3", "--node", n1.Name,
		"--kernel", vc.img.Kernel, "--initrd", vc.img.Initrd, "--cmdline", cmdline, "--nic", c.VMBridge,
		"--cloud-init", user, "--network-config", netcfg, "--start")
	if info.State != "running" || !info.CloudInit {
		t.Fatalf("ci after create: %+v", info)
	}
	seed1 := filepath.Join(td.DataDir(n1), "vms", "ci.cidata.iso")
	if src := vc.seedSource(t, n1, "ci"); src != seed1 {
		t.Fatalf("seed on n1: %q, want %s", src, seed1)
	}
	first := vc.guestProgress(t, guest.Datagram{}, 3*time.Minute)
	got := vc.cloudValue(t, value, first.Boot, 2*time.Minute)
	t.Logf("guest up (seq %d); its heartbeat reports tandem_test_value %q from the seed", first.Seq, got.CloudInit)
	if out, _, err := td.CLI(ctx, n3, "vm", "show", "ci"); err != nil || !strings.Contains(out, "Cloud-init:") {
		t.Fatalf("vm show: %v\n%s", err, out)
	}

	// A disk hot-plugged next to the seed (vm disk add) takes the target
	// after it, never the seed's: the guest sees it as vdc and keeps
	// reading the seed on vdb. It migrates with the VM below, on the
	// target's export, and is detached before the restart (which numbers
	// the disks afresh: the seed would then follow it).
	if v := vc.vm(t, n3, "disk", "add", "ci", "--disk", "64M,replicas=3"); !slices.Equal(v.Volumes, []string{"ci-disk0", "ci-disk1"}) {
		t.Fatalf("vm disk add next to the seed: disks recorded %v", v.Volumes)
	}
	hotPlugged := func(n *testcluster.Node) {
		t.Helper()
		targets := vc.diskTargets(t, n, "ci")
		if targets["ci-disk0"] != "vda" || targets["ci-disk1"] != "vdc" || targets[filepath.Join(td.DataDir(n), "vms", "ci.cidata.iso")] != "vdb" {
			t.Fatalf("disk targets on %s: %v", n.Name, targets)
		}
		gd := vc.waitGuestDisks(t, n, "ci", time.Minute, func(d map[string]uint64) bool { return d["/dev/vdc"] == 64<<20 && d["/dev/vdb"] > 0 })
		t.Logf("on %s: targets %v; the guest sees %v", n.Name, targets, gd)
	}
	hotPlugged(n1)

	// Live migration: the target builds its own seed, the guest goes on in
	// the same boot, still reporting the value; the source's copy (the
	// user-data in plain text) is gone.
	done, mark := vc.migrateLive(t, n3, "ci", n1, n2)
	t.Logf("migration n1 -> n2 with the seed attached: downtime %d ms, total %d ms", done.DowntimeMs, done.TotalMs)
	seed2 := filepath.Join(td.DataDir(n2), "vms", "ci.cidata.iso")
	if src := vc.seedSource(t, n2, "ci"); src != seed2 {
		t.Fatalf("seed on n2 after the migration: %q, want %s", src, seed2)
	}
	if _, err := os.Stat(seed1); !os.IsNotExist(err) {
		t.Errorf("n1's seed after the migration: %v", err)
	}
	returned, _, _ := vc.rx.Last()
	after := vc.guestProgress(t, returned, 2*time.Minute)
	if after.Boot != mark.Boot || after.CloudInit != value {
		t.Fatalf("after the migration: boot %d (was %d), value %q", after.Boot, mark.Boot, after.CloudInit)
	}
	t.Logf("guest on n2: seq %d, still reporting %q", after.Seq, after.CloudInit)
	hotPlugged(n2)
	if v := vc.vm(t, n3, "disk", "detach", "ci", "ci-disk1", "--delete"); !slices.Equal(v.Volumes, []string{"ci-disk0"}) {
		t.Fatalf("vm disk detach: disks recorded %v", v.Volumes)
	}
	if targets := vc.diskTargets(t, n2, "ci"); len(targets) != 2 || targets["ci-disk0"] != "vda" {
		t.Fatalf("after the detach, disk targets on n2: %v", targets)
	}
	if v := vc.vm(t, n1, "show", "ci"); v.Node != n2.Name || v.State != "running" || !v.CloudInit {
		t.Fatalf("ci after the migration: %+v", v)
	}

	// A start on a third node (as an HA restart does, through the same
	// VMStart) builds the seed there from the record: the new boot reads it.
	vc.vm(t, n1, "stop", "ci", "--force")
	if v := vc.vm(t, n1, "start", "ci", "--node", n3.Name); v.Node != n3.Name || v.State != "running" {
		t.Fatalf("ci after start on n3: %+v", v)
	}
	seed3 := filepath.Join(td.DataDir(n3), "vms", "ci.cidata.iso")
	if src := vc.seedSource(t, n3, "ci"); src != seed3 {
		t.Fatalf("seed on n3: %q, want %s", src, seed3)
	}
	vc.guestProgress(t, guest.Datagram{Boot: mark.Boot + 1}, 3*time.Minute)
	vc.cloudValue(t, value, mark.Boot+1, 2*time.Minute)
	t.Logf("restarted on n3: the new boot reports %q from the seed n3 built", value)
}

// seedSource is the file of the cloud-init seed disk (serial cidata) of
// VM name on n, as libvirt there reports it.
func (vc *vmCluster) seedSource(t *testing.T, n *testcluster.Node, name string) string {
	t.Helper()
	rows, out := vc.blockDevices(t, n, name)
	for _, f := range rows {
		if len(f) == 4 && f[0] == "file" && f[1] == "disk" {
			return f[3]
		}
	}
	t.Fatalf("domain %s on %s has no seed disk:\n%s", name, n.Name, out)
	return ""
}

// cloudValue waits for a heartbeat of boot reporting value from the seed.
func (vc *vmCluster) cloudValue(t *testing.T, value string, boot uint64, timeout time.Duration) guest.Datagram {
	t.Helper()
	ctx, cancel := context.WithTimeout(vc.ctx, timeout)
	defer cancel()
	d, err := vc.rx.WaitFor(ctx, func(d guest.Datagram) bool { return d.Boot == boot && d.CloudInit == value })
	if err != nil {
		last, _, _ := vc.rx.Last()
		t.Fatalf("no heartbeat of boot %d reported tandem_test_value %q within %s (last: boot %d, %q): %v%s", boot, value, timeout, last.Boot, last.CloudInit, err, vc.guestCrash(nil))
	}
	return d
}
