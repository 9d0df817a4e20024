package consensus

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestImageRecords(t *testing.T) {
	m := checkedSM(t)
	at := time.Now()
	apply := func(c Command) error {
		c.At = at
		_, err := m.checkedApply(&c)
		return err
	}
	if err := apply(Command{Op: opBootstrap, Bootstrap: &BootstrapCmd{Cluster: ClusterRecord{ID: "c"}, Node: NodeRecord{Name: "a", ReplicaID: 1}}}); err != nil {
		t.Fatal(err)
	}
	m.s.Nodes["b"] = &NodeRecord{Name: "b", State: NodeMember}
	sum := strings.Repeat("ab", 32)
	create := ImageCmd{Name: "deb", Size: 4 << 20, SHA256: sum, Node: "a"}
	for _, bad := range []ImageCmd{{Name: "x", Size: 1, SHA256: "nothex", Node: "a"}, {Name: "x", SHA256: sum, Node: "a"}, {Name: "x", Size: 1, SHA256: sum, Node: "zz"}} {
		if err := apply(Command{Op: opImageCreate, Image: &bad}); err == nil {
			t.Errorf("image-create %+v accepted", bad)
		}
	}
	if len(m.s.Images) != 0 {
		t.Fatalf("refused creates left records: %v", m.s.Images)
	}
	if err := apply(Command{Op: opImageCreate, Image: &create}); err != nil {
		t.Fatal(err)
	}
	if err := apply(Command{Op: opImageCreate, Image: &create}); err != nil {
		t.Fatalf("retried create: %v", err)
	}
	other := create
	other.SHA256 = strings.Repeat("cd", 32)
	if err := apply(Command{Op: opImageCreate, Image: &other}); !errors.Is(err, ErrBadCommand) || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("duplicate name: %v", err)
	}
	// A copy of another content is not a copy of this image.
	if err := apply(Command{Op: opImageCopy, Image: &ImageCmd{Name: "deb", SHA256: other.SHA256, Node: "b"}}); err == nil {
		t.Fatal("copy with another digest accepted")
	}
	if err := apply(Command{Op: opImageCopy, Image: &ImageCmd{Name: "deb", SHA256: sum, Node: "b"}}); err != nil {
		t.Fatal(err)
	}
	if got := m.s.Images["deb"].Nodes; strings.Join(got, ",") != "a,b" {
		t.Fatalf("nodes %v", got)
	}
	// A VM's CD-ROM must name an existing image.
	vm := VMRecord{Name: "inst", UUID: "u1", Spec: VMSpecRecord{VCPUs: 1, MemoryMiB: 128, CDROM: "nope"}}
	if err := apply(Command{Op: opVMCreate, VM: &vm}); err == nil {
		t.Fatal("VM with a missing image created")
	}
	vm.Spec.CDROM = "deb"
	if err := apply(Command{Op: opVMCreate, VM: &vm}); err != nil {
		t.Fatal(err)
	}
	if !m.s.VMs["inst"].Spec.HasCDROM {
		t.Fatal("a VM created with an image has no drive")
	}
	// Deleting an image in use is refused, naming the VM.
	if err := apply(Command{Op: opImageDelete, Image: &ImageCmd{Name: "deb"}}); err == nil || !strings.Contains(err.Error(), "VM inst") {
		t.Fatalf("delete of an image in use: %v", err)
	}
	if err := apply(Command{Op: opVMMedia, VMMedia: &VMMediaCmd{VM: "inst", Image: "nope"}}); err == nil {
		t.Fatal("inserted a missing image")
	}
	if err := apply(Command{Op: opVMMedia, VMMedia: &VMMediaCmd{VM: "inst"}}); err != nil {
		t.Fatal(err)
	}
	if got := m.s.VMs["inst"].Spec; got.CDROM != "" || !got.HasCDROM {
		t.Fatalf("after eject: %+v", got)
	}
	if err := apply(Command{Op: opImageDelete, Image: &ImageCmd{Name: "deb"}}); err != nil {
		t.Fatal(err)
	}
	if _, ok := m.s.Images["deb"]; ok {
		t.Fatal("image still recorded")
	}
	if err := apply(Command{Op: opImageDelete, Image: &ImageCmd{Name: "deb"}}); err == nil {
		t.Fatal("deleted a missing image")
	}
	// A snapshot round trip keeps images.
	m.s.Images["x"] = &ImageRecord{Name: "x", Size: 1, SHA256: sum, Nodes: []string{"a"}}
	if c := m.s.clone(); c.Images["x"] == nil || c.Images["x"].SHA256 != sum {
		t.Fatalf("clone lost the image: %+v", c.Images)
	}
}

func TestVMNVRAMRecord(t *testing.T) {
	m := checkedSM(t)
	apply := func(c Command) error {
		c.At = time.Now()
		_, err := m.checkedApply(&c)
		return err
	}
	if err := apply(Command{Op: opBootstrap, Bootstrap: &BootstrapCmd{Cluster: ClusterRecord{ID: "c"}, Node: NodeRecord{Name: "a", ReplicaID: 1}}}); err != nil {
		t.Fatal(err)
	}
	for _, v := range []VMRecord{
		{Name: "efi", UUID: "u1", Node: "a", Spec: VMSpecRecord{VCPUs: 1, MemoryMiB: 128, Firmware: "uefi"}},
		{Name: "bios", UUID: "u2", Node: "a", Spec: VMSpecRecord{VCPUs: 1, MemoryMiB: 128}},
	} {
		if err := apply(Command{Op: opVMCreate, VM: &v}); err != nil {
			t.Fatal(err)
		}
	}
	blob := NVRAMBlob{Gzip: []byte{1, 2, 3}, SHA256: strings.Repeat("0f", 32)}
	if err := apply(Command{Op: opVMNVRAM, VMNVRAM: &VMNVRAMCmd{VM: "bios", NVRAM: blob}}); err == nil {
		t.Fatal("NVRAM recorded for a BIOS VM")
	}
	if err := apply(Command{Op: opVMNVRAM, VMNVRAM: &VMNVRAMCmd{VM: "efi", NVRAM: blob, IfNode: "b"}}); err == nil {
		t.Fatal("NVRAM recorded by a node the VM is not on")
	}
	if err := apply(Command{Op: opVMNVRAM, VMNVRAM: &VMNVRAMCmd{VM: "efi", NVRAM: NVRAMBlob{Gzip: make([]byte, MaxNVRAMGzip+1), SHA256: blob.SHA256}}}); err == nil {
		t.Fatal("oversized NVRAM recorded")
	}
	if m.s.VMs["efi"].NVRAM != nil {
		t.Fatal("a refused command changed the record")
	}
	if err := apply(Command{Op: opVMNVRAM, VMNVRAM: &VMNVRAMCmd{VM: "efi", NVRAM: blob, IfNode: "a"}}); err != nil {
		t.Fatal(err)
	}
	if got := m.s.clone().VMs["efi"].NVRAM; got == nil || got.SHA256 != blob.SHA256 || len(got.Gzip) != 3 {
		t.Fatalf("recorded NVRAM after a snapshot round trip: %+v", got)
	}
}
