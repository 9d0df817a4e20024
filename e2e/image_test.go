package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tandemhci/tandem/internal/adminclient"
	"github.com/tandemhci/tandem/internal/guest"
	"github.com/tandemhci/tandem/internal/testcluster"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// buildGuestISO makes a bootable ISO (grub-mkrescue: BIOS and UEFI) whose
// GRUB boots the test guest's kernel and initramfs with cmdline.
func buildGuestISO(t *testing.T, img guest.Image, cmdline string) string {
	t.Helper()
	for _, tool := range []string{"grub-mkrescue", "xorriso", "mformat"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (Debian packages grub-common, grub-pc-bin, xorriso, mtools: make deps)", tool)
		}
	}
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	if err := os.MkdirAll(filepath.Join(root, "boot", "grub"), 0o755); err != nil {
		t.Fatal(err)
	}
	for src, dst := range map[string]string{img.Kernel: "vmlinuz", img.Initrd: "initrd.img"} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, "boot", dst), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg := "set timeout=0\nset default=0\nmenuentry 'tandem test guest' {\n  linux /boot/vmlinuz " + cmdline + "\n  initrd /boot/initrd.img\n}\n"
	if err := os.WriteFile(filepath.Join(root, "boot", "grub", "grub.cfg"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	iso := filepath.Join(dir, "guest.iso")
	if out, err := exec.Command("grub-mkrescue", "-o", iso, root).CombinedOutput(); err != nil {
		t.Fatalf("grub-mkrescue: %v\n%s", err, out)
	}
	return iso
}

func sha256File(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// blockDevices are the rows (type, device, target, source) of virsh
// domblklist --details for domain name as n's libvirtd runs it, and the
// command's output.
func (vc *vmCluster) blockDevices(t *testing.T, n *testcluster.Node, name string) ([][]string, string) {
	t.Helper()
	vc.mu.Lock()
	lv := vc.lv[n.Name]
	vc.mu.Unlock()
	out, err := exec.CommandContext(vc.ctx, "virsh", "-c", "qemu+unix:///system?socket="+lv.Socket, "domblklist", name, "--details").CombinedOutput()
	if err != nil {
		t.Fatalf("virsh domblklist %s on %s: %v\n%s", name, n.Name, err, out)
	}
	var rows [][]string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) >= 3 {
			rows = append(rows, f)
		}
	}
	return rows, string(out)
}

// cdromSource is the ISO path in the CD-ROM drive of domain name as n's
// libvirtd runs it, "" for an empty drive.
func (vc *vmCluster) cdromSource(t *testing.T, n *testcluster.Node, name string) string {
	t.Helper()
	rows, out := vc.blockDevices(t, n, name)
	for _, f := range rows {
		if f[1] == "cdrom" {
			if len(f) == 4 && f[3] != "-" {
				return f[3]
			}
			return ""
		}
	}
	t.Fatalf("domain %s on %s has no CD-ROM drive:\n%s", name, n.Name, out)
	return ""
}

func (vc *vmCluster) images(t *testing.T, n *testcluster.Node) map[string]*tandemv1.ImageInfo {
	t.Helper()
	out, stderr, err := vc.td.CLI(vc.ctx, n, "image", "list", "--output", "json")
	if err != nil {
		t.Fatalf("image list: %v\n%s", err, stderr)
	}
	var resp tandemv1.ListImagesResponse
	if err := adminclient.UnmarshalJSON([]byte(out), &resp); err != nil {
		t.Fatalf("image list: %v\n%s", err, out)
	}
	m := map[string]*tandemv1.ImageInfo{}
	for _, i := range resp.Images {
		m[i.Name] = i
	}
	return m
}

// TestVMInstallFromISO: an ISO built around the test guest is uploaded
// (checked, copied to every data node), a VM with an empty 1G disk boots
// from it in its CD-ROM drive (SeaBIOS, El Torito, GRUB), writes its
// counter to the empty disk and sends its heartbeat; it migrates live with
// the image inserted (the target attaches its own copy), the image is
// ejected and inserted on the running VM, and it migrates with the drive
// empty. Bad input changes nothing: a file that is not ISO 9660, a
// duplicate name, a missing image, deleting an image a VM holds.
func TestVMInstallFromISO(t *testing.T) {
	vc := newVMCluster(t)
	c, td, ctx := vc.c, vc.td, vc.ctx
	n1, n2, n3 := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	vip := strings.TrimSuffix(c.ReceiverIP, ".1") + ".51"
	iso := buildGuestISO(t, vc.img, vc.installCmdline(vip, false))
	want := sha256File(t, iso)

	// Not ISO 9660: refused before a byte is sent, nothing recorded.
	notISO := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(notISO, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, stderr, err := td.CLI(ctx, n1, "image", "upload", notISO, "--name", "bad"); err == nil || !strings.Contains(stderr, "not an ISO 9660 image") {
		t.Fatalf("upload of a non-ISO file: %v\n%s", err, stderr)
	}

	// The upload: progress on stderr, the SHA-256 recorded, a copy on
	// every data node.
	out, stderr, err := td.CLI(ctx, n2, "image", "upload", iso, "--name", "guest", "--output", "json")
	if err != nil {
		t.Fatalf("image upload: %v\n%s", err, stderr)
	}
	if !strings.Contains(stderr, "100%") || !strings.Contains(stderr, "/s") {
		t.Errorf("no progress on stderr:\n%s", stderr)
	}
	var up tandemv1.ImageInfo
	if err := adminclient.UnmarshalJSON([]byte(out), &up); err != nil {
		t.Fatal(err)
	}
	slices.Sort(up.Nodes)
	if up.Sha256 != want || strings.Join(up.Nodes, ",") != strings.Join([]string{n1.Name, n2.Name, n3.Name}, ",") || up.Warning != "" {
		t.Fatalf("uploaded image: %+v, want sha256 %s on every node", &up, want)
	}
	for _, n := range c.Nodes {
		p := filepath.Join(td.DataDir(n), "images", "guest.iso")
		if got := sha256File(t, p); got != want {
			t.Fatalf("copy on %s: sha256 %s, want %s", n.Name, got, want)
		}
	}
	t.Logf("image uploaded: %d bytes, on %v", up.SizeBytes, up.Nodes)
	if _, stderr, err := td.CLI(ctx, n1, "image", "upload", iso, "--name", "guest"); err == nil || !strings.Contains(stderr, "exists") {
		t.Fatalf("duplicate name: %v\n%s", err, stderr)
	}
	if imgs := vc.images(t, n3); len(imgs) != 1 || imgs["guest"] == nil {
		t.Fatalf("images after the refused uploads: %v", imgs)
	}

	// A missing image: refused before any volume is created.
	if _, stderr, err := td.CLI(ctx, n1, "vm", "create", "nocd", "--memory", "192M", "--disk", "64M", "--cdrom", "nosuch"); err == nil || !strings.Contains(stderr, "no image named nosuch") {
		t.Fatalf("create with a missing image: %v\n%s", err, stderr)
	}
	if out, _, err := td.CLI(ctx, n1, "volume", "list"); err != nil || strings.Contains(out, "nocd") {
		t.Fatalf("a refused create left a volume: %v\n%s", err, out)
	}

	// Install from the CD: an empty 1G disk (a replica on every node, so
	// that it can migrate anywhere), the default boot order (disk, then
	// cdrom) falls through to the CD.
	info := vc.vm(t, n1, "create", "inst", "--memory", "192M", "--disk", "1G,replicas=3", "--cdrom", "guest", "--nic", c.VMBridge, "--node", n1.Name, "--start")
	if info.State != "running" || info.Cdrom != "guest" || !info.HasCdrom {
		t.Fatalf("inst after create: %+v", info)
	}
	if src := vc.cdromSource(t, n1, "inst"); src != filepath.Join(td.DataDir(n1), "images", "guest.iso") {
		t.Fatalf("CD-ROM on n1: %q", src)
	}
	first := vc.guestProgress(t, guest.Datagram{}, 5*time.Minute)
	t.Logf("guest booted from the CD: seq %d, %d counter writes to the empty disk acknowledged", first.Seq, first.Acked)

	// An image in a drive cannot be deleted.
	if _, stderr, err := td.CLI(ctx, n3, "image", "delete", "guest"); err == nil || !strings.Contains(stderr, "VM inst") {
		t.Fatalf("delete of an image in use: %v\n%s", err, stderr)
	}

	// Live migration with the image inserted: the target attaches its own
	// copy; the guest goes on in the same boot.
	done, mark := vc.migrateLive(t, n3, "inst", n1, n2)
	t.Logf("migration n1 -> n2 with the CD-ROM: downtime %d ms, total %d ms", done.DowntimeMs, done.TotalMs)
	if src := vc.cdromSource(t, n2, "inst"); src != filepath.Join(td.DataDir(n2), "images", "guest.iso") {
		t.Fatalf("CD-ROM on n2 after the migration: %q", src)
	}

	// Eject and insert on the running VM.
	if v := vc.vm(t, n3, "cdrom", "inst", "eject"); v.Cdrom != "" || !v.HasCdrom {
		t.Fatalf("after eject: %+v", v)
	}
	if src := vc.cdromSource(t, n2, "inst"); src != "" {
		t.Fatalf("drive after eject: %q", src)
	}
	if _, stderr, err := td.CLI(ctx, n1, "vm", "cdrom", "inst", "insert", "nosuch"); err == nil || !strings.Contains(stderr, "no image named nosuch") {
		t.Fatalf("insert of a missing image: %v\n%s", err, stderr)
	}
	// Migrate with the drive empty, back to n1, then insert there.
	vc.migrateLive(t, n3, "inst", n2, n1)
	if v := vc.vm(t, n1, "cdrom", "inst", "insert", "guest"); v.Cdrom != "guest" {
		t.Fatalf("after insert: %+v", v)
	}
	if src := vc.cdromSource(t, n1, "inst"); src != filepath.Join(td.DataDir(n1), "images", "guest.iso") {
		t.Fatalf("drive after insert: %q", src)
	}
	returned, _, _ := vc.rx.Last()
	if d := vc.guestProgress(t, returned, 2*time.Minute); d.Boot != mark.Boot {
		t.Fatalf("guest rebooted: boot %d -> %d", mark.Boot, d.Boot)
	}

	// The counter writes are on every replica of the once empty disk.
	out, _, err = td.CLI(ctx, n1, "volume", "verify", "inst-disk0", "--output", "json")
	if err != nil {
		t.Fatal(err)
	}
	var ver tandemv1.VerifyVolumeResponse
	if err := adminclient.UnmarshalJSON([]byte(out), &ver); err != nil || len(ver.Mismatches) != 0 || ver.CheckedBytes == 0 {
		t.Fatalf("verify of the installed disk: %v %s", err, out)
	}

	// The install: the guest's bootable image onto the disk, the CD
	// ejected, a reboot from the disk; then a live migration with the
	// (empty) drive attached.
	booted := vc.installAndReboot(t, n1, "inst", iso)
	t.Logf("rebooted from the disk: boot %d, counter %d", booted.Boot, booted.Acked)
	vc.migrateLive(t, n3, "inst", n1, n2)
	if v := vc.vm(t, n1, "show", "inst"); v.Node != n2.Name || !v.HasCdrom || v.Cdrom != "" {
		t.Fatalf("inst after the migration from its disk: %+v", v)
	}
	returned, _, _ = vc.rx.Last()
	if d := vc.guestProgress(t, returned, 2*time.Minute); d.Boot != booted.Boot {
		t.Fatalf("guest rebooted in the migration: boot %d -> %d", booted.Boot, d.Boot)
	}

	// Ejected, the image can go.
	if out, stderr, err := td.CLI(ctx, n1, "image", "delete", "guest"); err != nil {
		t.Fatalf("image delete: %v\n%s%s", err, out, stderr)
	}
	if _, err := os.Stat(filepath.Join(td.DataDir(n1), "images", "guest.iso")); !os.IsNotExist(err) {
		t.Errorf("n1's copy after delete: %v", err)
	}
	if imgs := vc.images(t, n2); len(imgs) != 0 {
		t.Errorf("images after delete: %v", imgs)
	}
}

// TestVMWithCDROMFailsOver: a VM booted from an image in its CD-ROM drive
// is restarted on another node after a hard loss of its host (IPMI
// fencing), attaching that node's verified copy; the disk's counter goes
// on from every acknowledged write.
func TestVMWithCDROMFailsOver(t *testing.T) {
	vc := newVMClusterWith(t, vmClusterOpts{bmc: true})
	c, td := vc.c, vc.td
	for _, n := range c.Nodes {
		vc.fenceConfig(t, n)
	}
	n1 := c.Nodes[0]
	host := c.Nodes[1]
	vip := strings.TrimSuffix(c.ReceiverIP, ".1") + ".52"
	iso := buildGuestISO(t, vc.img, vc.cmdline(vip))
	if _, stderr, err := td.CLI(vc.ctx, n1, "image", "upload", iso, "--name", "guest"); err != nil {
		t.Fatalf("image upload: %v\n%s", err, stderr)
	}
	vc.vm(t, n1, "create", "cd1", "--memory", "192M", "--disk", "64M,replicas=3", "--cdrom", "guest", "--nic", c.VMBridge+",ip="+vip, "--node", host.Name, "--start")
	up := vc.guestProgress(t, guest.Datagram{}, 5*time.Minute)
	t.Logf("cd1 booted from the CD on %s: %d writes acknowledged", host.Name, up.Acked)
	lost := time.Now()
	vc.crash(host)
	lastAcked := vc.lastFromBoot(up.Boot)
	first := vc.waitRecovered(t, lastAcked, 3*time.Minute)
	t.Logf("cd1 restarted %v after the loss; disk counter %d >= last acknowledged %d", time.Since(lost).Round(time.Millisecond), first.Acked, lastAcked.Acked)
	v := vc.vm(t, n1, "show", "cd1")
	if v.Node == host.Name || v.State != "running" || v.Cdrom != "guest" {
		t.Fatalf("cd1 after recovery: %+v", v)
	}
	if src := vc.cdromSource(t, c.Node(v.Node), "cd1"); src != filepath.Join(td.DataDir(c.Node(v.Node)), "images", "guest.iso") {
		t.Fatalf("CD-ROM on %s after the failover: %q", v.Node, src)
	}
}

// TestVMUEFINVRAMFollows: a UEFI VM (OVMF) boots the same ISO. Its
// guest agent sets a UEFI variable to a random value once (efivarfs;
// tandem.efivar=on), then only reads it, and reports it in every
// heartbeat. The variable store, which QEMU writes back to the node's
// file, is recorded in the VM's record; it is on the target after a live
// migration, and after the loss of the VM's host HA restarts the VM
// elsewhere from the recorded store: the guest reads the same value, where
// a store that did not follow would make it set a new one.
func TestVMUEFINVRAMFollows(t *testing.T) {
	if _, err := os.Stat("/usr/share/OVMF/OVMF_CODE_4M.fd"); err != nil {
		t.Skip("OVMF not installed (Debian package ovmf)")
	}
	vc := newVMClusterWith(t, vmClusterOpts{bmc: true, timeout: 20 * time.Minute})
	c, td := vc.c, vc.td
	for _, n := range c.Nodes {
		vc.fenceConfig(t, n)
	}
	n1, n2, n3 := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	vip := strings.TrimSuffix(c.ReceiverIP, ".1") + ".53"
	iso := buildGuestISO(t, vc.img, vc.installCmdline(vip, true))
	if _, stderr, err := td.CLI(vc.ctx, n1, "image", "upload", iso, "--name", "guest"); err != nil {
		t.Fatalf("image upload: %v\n%s", err, stderr)
	}
	template := sha256File(t, "/usr/share/OVMF/OVMF_VARS_4M.fd")
	// GRUB's EFI loader runs out of memory for the guest's initramfs
	// under 192M of guest RAM.
	info := vc.vm(t, n1, "create", "efi", "--memory", "384M", "--disk", "64M,replicas=3", "--cdrom", "guest", "--firmware", "uefi",
		"--nic", c.VMBridge, "--node", n1.Name, "--start")
	if info.Firmware != "uefi" || info.State != "running" {
		t.Fatalf("efi after create: %+v", info)
	}
	up := vc.guestProgress(t, guest.Datagram{}, 8*time.Minute)
	t.Logf("UEFI guest booted from the CD: seq %d, %d writes acknowledged", up.Seq, up.Acked)
	withVar := vc.efiVar(t, up.Boot, 2*time.Minute)
	value := withVar.EFIVar
	t.Logf("the guest set its UEFI variable: %s", value)
	// The store with the variable (its name in UTF-16) reaches the record.
	name := utf16le("TandemTest")
	v := vc.waitVM(t, "efi", 2*time.Minute, func(v *tandemv1.VMInfo) bool {
		f := filepath.Join(td.DataDir(n1), "vms", "efi_VARS.fd")
		b, err := os.ReadFile(f)
		return err == nil && bytes.Contains(b, name) && v.NvramSha256 != template && v.NvramSha256 == sha256File(t, f)
	})
	t.Logf("NVRAM with the variable recorded: %s (template %s)", v.NvramSha256, template)

	vc.migrateLive(t, n3, "efi", n1, n2)
	if b, err := os.ReadFile(filepath.Join(td.DataDir(n2), "vms", "efi_VARS.fd")); err != nil || !bytes.Contains(b, name) {
		t.Fatalf("NVRAM on the migration's target %s lacks the variable: %v", n2.Name, err)
	}
	if d := vc.efiVar(t, up.Boot, time.Minute); d.EFIVar != value {
		t.Fatalf("after the migration the guest reads %q, want %q", d.EFIVar, value)
	}
	// The record holds the store once the target wrote it back.
	vc.waitVM(t, "efi", 2*time.Minute, func(v *tandemv1.VMInfo) bool {
		return v.Node == n2.Name && v.NvramSha256 == sha256File(t, filepath.Join(td.DataDir(n2), "vms", "efi_VARS.fd"))
	})

	// Failover: n2 is lost; HA restarts the VM elsewhere from the record.
	_, _, first := vc.loseHost(t, n2, up, 4*time.Minute)
	after := vc.efiVar(t, first.Boot, 8*time.Minute)
	if after.EFIVar != value {
		t.Fatalf("after the failover the guest's UEFI variable is %q, want %q set before the migration: the store did not follow", after.EFIVar, value)
	}
	v = vc.vm(t, n1, "show", "efi")
	if v.Node == n2.Name || v.State != "running" || v.NvramSha256 == "" {
		t.Fatalf("efi after the failover: %+v", v)
	}
	t.Logf("after the failover to %s (boot %d) the guest still reads its UEFI variable %s", v.Node, after.Boot, after.EFIVar)
	// The install under UEFI: the image onto the disk, the CD ejected,
	// OVMF boots the disk; the variable is still there.
	fromDisk := vc.installAndReboot(t, c.Node(v.Node), "efi", iso)
	if d := vc.efiVar(t, fromDisk.Boot, 2*time.Minute); d.EFIVar != value {
		t.Fatalf("booted from the disk, the guest's UEFI variable is %q, want %q", d.EFIVar, value)
	}
	t.Logf("UEFI guest rebooted from its disk: boot %d, counter %d", fromDisk.Boot, fromDisk.Acked)
	c.HealVM(n2)
	c.Heal(n2)
	if err := vc.powerOn(t, vc.bmc[n2.Name]); err != nil {
		t.Fatal(err)
	}
}

// installOffset is where the install tests' guests keep their counter: past
// the bootable image written at the disk's start (about 20 MiB), within
// the smallest disk (64 MiB).
const installOffset = 48 << 20

// installCmdline is the kernel command line of an installer ISO's guest.
func (vc *vmCluster) installCmdline(ip string, efiVar bool) string {
	return vc.img.Cmdline(guest.Config{IP: ip + "/24", UDP: vc.c.ReceiverIP + ":9999", Rate: 100, Disk: "/dev/vda", DiskOffset: installOffset, EFIVar: efiVar})
}

// installAndReboot plays an installer's last steps on VM vm, running on
// n from iso: it is stopped, the test guest's bootable image (the hybrid
// ISO, GRUB for BIOS and UEFI) is written at the start of its first disk
// through n's NBD export (the counter, at installOffset, stays), its CD
// is ejected, and it starts again: the disk is the only thing to boot
// from. It returns the first heartbeat of that boot, which went on from
// every counter write acknowledged before the stop.
func (vc *vmCluster) installAndReboot(t *testing.T, n *testcluster.Node, vm, iso string) guest.Datagram {
	t.Helper()
	st, err := os.Stat(iso)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() > installOffset {
		t.Fatalf("the ISO (%d bytes) would overwrite the counter at %d", st.Size(), installOffset)
	}
	before, _, _ := vc.rx.Last()
	info := vc.vm(t, n, "stop", vm, "--force")
	last := vc.lastFromBoot(before.Boot)
	runTool(t, vc.ctx, "qemu-io", "-f", "raw", "-c", fmt.Sprintf("write -s %s 0 %d", iso, st.Size()), nbdURI(vc.td, n, info.Volumes[0]))
	if v := vc.vm(t, n, "cdrom", vm, "eject"); v.Cdrom != "" || !v.HasCdrom {
		t.Fatalf("%s after eject: %+v", vm, v)
	}
	vc.vm(t, n, "start", vm, "--node", n.Name)
	return vc.waitRecovered(t, last, 5*time.Minute)
}

// efiVar waits for a heartbeat of boot that reports the guest's UEFI
// variable.
func (vc *vmCluster) efiVar(t *testing.T, boot uint64, timeout time.Duration) guest.Datagram {
	t.Helper()
	ctx, cancel := context.WithTimeout(vc.ctx, timeout)
	defer cancel()
	d, err := vc.rx.WaitFor(ctx, func(d guest.Datagram) bool { return d.Boot == boot && d.EFIVar != "" })
	if err != nil {
		t.Fatalf("no heartbeat of boot %d with the UEFI variable within %v: %v", boot, timeout, err)
	}
	return d
}

func utf16le(s string) []byte {
	var b []byte
	for _, r := range s {
		b = append(b, byte(r), byte(r>>8))
	}
	return b
}
