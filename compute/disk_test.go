package compute

import (
	"errors"
	"strings"
	"testing"

	"libvirt.org/go/libvirtxml"
)

func TestTargetIndex(t *testing.T) {
	for i := range maxDisks {
		dev := diskTarget(i)
		if got, ok := targetIndex(dev); !ok || got != i {
			t.Fatalf("targetIndex(%s) = %d, %v; want %d", dev, got, ok, i)
		}
	}
	for _, bad := range []string{"", "vd", "hdc", "sda", "vdA", "vd1", "vdaaa"} {
		if _, ok := targetIndex(bad); ok {
			t.Errorf("targetIndex(%q) accepted", bad)
		}
	}
}

// hotPlugged is def with ds attached as AttachDisk does it: on the
// target after the highest virtio one, listed after the bus's other
// disks as libvirt keeps them.
func hotPlugged(t *testing.T, def *libvirtxml.Domain, ds DiskSpec) string {
	t.Helper()
	dev, ok := nextTarget(def)
	if !ok {
		t.Fatal("no target left")
	}
	def.Devices.Disks = append(def.Devices.Disks, hotDisk(ds, dev, 0))
	return dev
}

// A disk hot-plugged into a VM with a cloud-init seed and a CD-ROM takes
// the target after the seed's, never the seed's or the CD-ROM's; a
// migration's destination XML then finds it by its volume, points it at
// the destination's export and keeps its target; the domain's disk order
// is the record's.
func TestRetargetHotPluggedDisk(t *testing.T) {
	src := seedSpec() // vda, vdb, seed vdc, CD-ROM hdc
	def := parsedDef(t, src, XMLOptions{})
	added := DiskSpec{Volume: "vol-added", Socket: src.Disks[0].Socket}
	if dev := hotPlugged(t, def, added); dev != "vdd" {
		t.Fatalf("hot-plugged disk on %s, want vdd (after the seed on vdc)", dev)
	}
	if got := findVolumeDisk(def, added); got == nil || got.Target.Dev != "vdd" || got.Boot != nil {
		t.Fatalf("findVolumeDisk: %+v", got)
	}
	dest := destOf(src)
	dest.Disks = append(dest.Disks, DiskSpec{Volume: "vol-added", Socket: "/run/tandem/n2/nbd.sock"})
	dest.CloudInit = "/var/lib/tandem/n2/vms/web-1.cidata.iso"
	if err := retarget(def, dest, XMLOptions{}); err != nil {
		t.Fatal(err)
	}
	x := marshalled(t, def)
	for _, want := range []string{`name="vol-added"`, `<target dev="vdd" bus="virtio">`, `<target dev="vdc" bus="virtio">`, dest.CloudInit} {
		if !strings.Contains(x, want) {
			t.Errorf("retargeted XML lacks %s:\n%s", want, x)
		}
	}
	if strings.Contains(x, "/run/tandem/nbd.sock") {
		t.Errorf("retargeted XML still names the source's socket:\n%s", x)
	}
	// The record without the disk (a detach recorded, the domain still
	// holding it) is refused, not migrated with a stray disk.
	def = parsedDef(t, src, XMLOptions{})
	hotPlugged(t, def, added)
	if err := retarget(def, destOf(src), XMLOptions{}); !errors.Is(err, ErrInvalidSpec) || !strings.Contains(err.Error(), "no disk on volume vol-added") {
		t.Errorf("destination without the hot-plugged disk: %v", err)
	}
}

// After a detach leaves a gap, the next disk still goes after the
// highest target, so the domain keeps the record's order; an RBD disk is
// matched by its pool and image.
func TestRetargetAfterDetachAndRBD(t *testing.T) {
	src := fullSpec() // vda, vdb
	def := parsedDef(t, src, XMLOptions{})
	rbd := DiskSpec{Volume: "vol-rbd", RBD: &RBDDisk{Pool: "rbd", Image: "vol-rbd", Hosts: []string{"10.0.0.1:6789"}, User: "tandem", SecretUUID: CephSecretUUID("ceph1")}}
	if dev := hotPlugged(t, def, rbd); dev != "vdc" {
		t.Fatalf("RBD disk on %s, want vdc", dev)
	}
	// vol-data (vdb) detached.
	def.Devices.Disks = append(def.Devices.Disks[:1], def.Devices.Disks[2:]...)
	third := DiskSpec{Volume: "vol-3", Socket: src.Disks[0].Socket}
	if dev := hotPlugged(t, def, third); dev != "vdd" {
		t.Fatalf("disk after a detach on %s, want vdd", dev)
	}
	dest := destOf(src)
	r := *rbd.RBD
	r.Hosts = []string{"10.0.0.9:6789"}
	dest.Disks = []DiskSpec{dest.Disks[0], {Volume: "vol-rbd", RBD: &r}, {Volume: "vol-3", Socket: "/run/tandem/n2/nbd.sock"}}
	if err := retarget(def, dest, XMLOptions{}); err != nil {
		t.Fatal(err)
	}
	x := marshalled(t, def)
	if !strings.Contains(x, `<host name="10.0.0.9" port="6789">`) || !strings.Contains(x, `<target dev="vdd" bus="virtio">`) {
		t.Errorf("retargeted XML:\n%s", x)
	}
	// The record's order is the domain's: swapping them is a change.
	dest.Disks[1], dest.Disks[2] = dest.Disks[2], dest.Disks[1]
	def = parsedDef(t, src, XMLOptions{})
	hotPlugged(t, def, rbd)
	def.Devices.Disks = append(def.Devices.Disks[:1], def.Devices.Disks[2:]...)
	hotPlugged(t, def, third)
	if err := retarget(def, dest, XMLOptions{}); !errors.Is(err, ErrInvalidSpec) {
		t.Errorf("disks out of order: %v", err)
	}
}

func TestNextTargetExhausted(t *testing.T) {
	def := &libvirtxml.Domain{Devices: &libvirtxml.DomainDeviceList{Disks: []libvirtxml.DomainDisk{
		{Target: &libvirtxml.DomainDiskTarget{Dev: diskTarget(maxDisks - 1), Bus: "virtio"}},
		{Target: &libvirtxml.DomainDiskTarget{Dev: "hdc", Bus: "ide"}},
	}}}
	if dev, ok := nextTarget(def); ok {
		t.Fatalf("nextTarget after vdzz: %s", dev)
	}
	if dev, ok := nextTarget(&libvirtxml.Domain{}); !ok || dev != "vda" {
		t.Fatalf("nextTarget of no disks: %s %v", dev, ok)
	}
}
