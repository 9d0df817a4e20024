package compute

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"libvirt.org/go/libvirtxml"
)

// q35Spec is cdromSpec on q35 with a cloud-init seed and a CPU model.
func q35Spec() VMSpec {
	s := cdromSpec()
	s.Machine = MachineQ35
	s.CPUModel = "Nehalem"
	s.CloudInit = "/var/lib/tandem/vms/web-1.cidata.iso"
	return s
}

func parseDef(t *testing.T, x string) *libvirtxml.Domain {
	t.Helper()
	var def libvirtxml.Domain
	if err := def.Unmarshal(x); err != nil {
		t.Fatal(err)
	}
	return &def
}

// q35: the machine, the CD-ROM on SATA (no IDE there), the CPU model, and
// root ports for every PCIe device plus spares for hot-plug.
func TestDomainXMLQ35(t *testing.T) {
	s := q35Spec()
	x, err := DomainXMLWithOptions(s, XMLOptions{DomainType: "qemu", PadTCGRAM: true})
	if err != nil {
		t.Fatal(err)
	}
	def := parseDef(t, x)
	if def.OS.Type.Machine != "q35" {
		t.Errorf("machine %q, want q35", def.OS.Type.Machine)
	}
	if m := def.CPU.Model; m == nil || m.Value != "Nehalem" || m.Fallback != "forbid" || def.CPU.Mode != "custom" {
		t.Errorf("cpu %+v", def.CPU)
	}
	var cd *libvirtxml.DomainDisk
	for i, d := range def.Devices.Disks {
		if d.Target.Bus == "ide" {
			t.Errorf("disk %s on IDE: q35 has none", d.Target.Dev)
		}
		if d.Device == "cdrom" {
			cd = &def.Devices.Disks[i]
		}
	}
	if cd == nil || cd.Target.Dev != "sda" || cd.Target.Bus != "sata" || cd.Boot == nil || cd.ReadOnly == nil {
		t.Errorf("CD-ROM %+v, want sda on sata, read-only, in the boot order", cd)
	}
	ports := 0
	for i, c := range def.Devices.Controllers {
		if c.Index == nil || *c.Index != uint(i) {
			t.Errorf("controller %d has index %v", i, c.Index)
		}
		if c.Type == "pci" && c.Model == "pcie-root-port" {
			ports++
		}
	}
	if c := def.Devices.Controllers[0]; c.Type != "pci" || c.Model != "pcie-root" {
		t.Errorf("first controller %+v, want the pcie-root", c)
	}
	// 2 disks, the seed, 2 NICs, 3 fixed devices, 8 spares.
	if want := 2 + 1 + 2 + pcieFixedDevices + spareRootPorts; ports != want {
		t.Errorf("%d pcie-root-ports, want %d", ports, want)
	}
	// The padded RAM backend is machine-independent.
	if !strings.Contains(x, "memory-backend="+tcgRAMBackend) {
		t.Errorf("no padded RAM on q35:\n%s", x)
	}
	// It reads back as written, so a migration's check matches.
	checkRoundTrip(t, x, s)
	if got := bootOf(t, x); !reflect.DeepEqual(got, map[string]uint{"vda": 1, "sda": 4}) {
		t.Errorf("boot orders %v", got)
	}
	// As libvirt echoes it: the expanded machine name.
	def.OS.Type.Machine = "pc-q35-7.2"
	if got, _, err := specOf(def); err != nil || got.Machine != MachineQ35 {
		t.Errorf("pc-q35-7.2 read as %q, %v", got.Machine, err)
	}
}

// pc (and "", every VM recorded before the field) renders as before:
// no machine attribute, the CD-ROM on IDE, no controllers, qemu64.
func TestDomainXMLPCUnchanged(t *testing.T) {
	for _, m := range []string{"", MachinePC} {
		s := cdromSpec()
		s.Machine = m
		x, err := DomainXML(s)
		if err != nil {
			t.Fatal(err)
		}
		golden(t, "cdrom.xml", x)
		if strings.Contains(x, "machine=") || strings.Contains(x, "controller") {
			t.Errorf("machine %q:\n%s", m, x)
		}
		got, _, err := ParseDomainXML(x)
		if err != nil || got.Machine != "" || got.CPUModel != "" {
			t.Errorf("machine %q read back as %q, cpu %q, %v", m, got.Machine, got.CPUModel, err)
		}
	}
	// libvirt's expansion of the default is still pc.
	def := parsedDef(t, fullSpec(), XMLOptions{})
	def.OS.Type.Machine = "pc-i440fx-7.2"
	if got, _, err := specOf(def); err != nil || got.Machine != "" {
		t.Errorf("pc-i440fx-7.2 read as %q, %v", got.Machine, err)
	}
	// qemu64 explicitly is the default.
	s := fullSpec()
	s.CPUModel = DefaultCPUModel
	a, _ := DomainXML(s)
	b, _ := DomainXML(fullSpec())
	if a != b {
		t.Errorf("explicit qemu64 renders differently:\n%s\n%s", a, b)
	}
}

func TestValidateMachineAndCPUModel(t *testing.T) {
	for name, mod := range map[string]func(*VMSpec){
		"machine":            func(s *VMSpec) { s.Machine = "isapc" },
		"machine case":       func(s *VMSpec) { s.Machine = "Q35" },
		"cpu model space":    func(s *VMSpec) { s.CPUModel = "qemu64 -enable-kvm" },
		"cpu model quote":    func(s *VMSpec) { s.CPUModel = `a"b` },
		"cpu model too long": func(s *VMSpec) { s.CPUModel = strings.Repeat("x", 65) },
	} {
		s := fullSpec()
		mod(&s)
		if err := s.Validate(); !errors.Is(err, ErrInvalidSpec) {
			t.Errorf("%s: %v, want ErrInvalidSpec", name, err)
		}
	}
	for _, m := range []string{"", "pc", "q35"} {
		s := fullSpec()
		s.Machine, s.CPUModel = m, "Skylake-Client-v4"
		if err := s.Validate(); err != nil {
			t.Errorf("machine %q: %v", m, err)
		}
	}
}

// A migration keeps the running guest's machine, CPU model, vCPUs and
// memory even when the record names others now (they apply at the next
// start); the q35
// CD-ROM is retargeted like the IDE one.
func TestRetargetQ35KeepsRunningModel(t *testing.T) {
	src := q35Spec()
	def := parsedDef(t, src, XMLOptions{})
	def.OS.Type.Machine = "pc-q35-7.2"
	dest := destOf(src)
	dest.CDROM = "/var/lib/tandem/n2/images/debian.iso"
	dest.CloudInit = "/var/lib/tandem/n2/vms/web-1.cidata.iso"
	dest.CPUModel = "" // the record went back to the cluster's default
	// 'vm set --vcpus/--memory' since the start: the next start's values.
	dest.VCPUs, dest.MemoryMiB = src.VCPUs+2, src.MemoryMiB*2
	if err := retarget(def, dest, XMLOptions{}); err != nil {
		t.Fatal(err)
	}
	x := marshalled(t, def)
	if def.VCPU.Value != uint(src.VCPUs) || def.Memory.Value != uint(src.MemoryMiB) || def.Memory.Unit != "MiB" {
		t.Errorf("destination has %d vCPUs and %d %s, want the running %d and %d MiB", def.VCPU.Value, def.Memory.Value, def.Memory.Unit, src.VCPUs, src.MemoryMiB)
	}
	for _, want := range []string{`machine="pc-q35-7.2"`, ">Nehalem<", `dev="sda" bus="sata"`, dest.CDROM, "pcie-root-port"} {
		if !strings.Contains(x, want) {
			t.Errorf("destination XML lacks %s:\n%s", want, x)
		}
	}
	// Other guest changes are still refused.
	bad := destOf(src)
	bad.HasCDROM, bad.CDROM, bad.Boot = false, "", nil
	if err := retarget(parsedDef(t, src, XMLOptions{}), bad, XMLOptions{}); !errors.Is(err, ErrInvalidSpec) {
		t.Errorf("no drive: %v, want ErrInvalidSpec", err)
	}
}
