package compute

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"libvirt.org/go/libvirtxml"
)

// cdromSpec is an installer VM: an empty disk and an ISO in the drive.
func cdromSpec() VMSpec {
	s := fullSpec()
	s.HasCDROM = true
	s.CDROM = "/var/lib/tandem/images/debian.iso"
	return s
}

func bootOf(t *testing.T, x string) map[string]uint {
	t.Helper()
	var def libvirtxml.Domain
	if err := def.Unmarshal(x); err != nil {
		t.Fatal(err)
	}
	out := map[string]uint{}
	for _, d := range def.Devices.Disks {
		if d.Boot != nil {
			out[d.Target.Dev] = d.Boot.Order
		}
	}
	for i, n := range def.Devices.Interfaces {
		if n.Boot != nil {
			out["nic"+string(rune('0'+i))] = n.Boot.Order
		}
	}
	return out
}

// checkRoundTrip checks that the domain XML x of s parses back to s as
// rendered (normalized, NIC models defaulted).
func checkRoundTrip(t *testing.T, x string, s VMSpec) {
	t.Helper()
	got, _, err := ParseDomainXML(x)
	if err != nil {
		t.Fatal(err)
	}
	want := s.normalized()
	for i := range want.NICs {
		if want.NICs[i].Model == "" {
			want.NICs[i].Model = "virtio"
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, want)
	}
}

func TestDomainXMLCDROM(t *testing.T) {
	x, err := DomainXML(cdromSpec())
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "cdrom.xml", x)
	for _, want := range []string{
		`<disk type="file" device="cdrom">`,
		`<source file="/var/lib/tandem/images/debian.iso">`,
		`<target dev="hdc" bus="ide">`,
		`<readonly>`,
	} {
		if !strings.Contains(x, want) {
			t.Errorf("XML lacks %s:\n%s", want, x)
		}
	}
	// The default order: the boot disk, then the CD-ROM (an empty disk
	// falls through to the installer; an installed one boots itself).
	if got := bootOf(t, x); !reflect.DeepEqual(got, map[string]uint{"vda": 1, "hdc": 4}) {
		t.Errorf("default boot orders %v", got)
	}
	// An empty drive has no source.
	empty := cdromSpec()
	empty.CDROM = ""
	x, err = DomainXML(empty)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(x, `device="cdrom"`) || strings.Contains(x, "debian.iso") {
		t.Errorf("empty drive:\n%s", x)
	}
}

func TestDomainXMLBootOrder(t *testing.T) {
	for name, tc := range map[string]struct {
		boot []string
		want map[string]uint
	}{
		"cdrom first":    {[]string{"cdrom", "disk"}, map[string]uint{"hdc": 1, "vda": 4}},
		"network last":   {[]string{"disk", "cdrom", "network"}, map[string]uint{"vda": 1, "hdc": 4, "nic0": 7}},
		"network first":  {[]string{"network", "disk"}, map[string]uint{"nic0": 1, "vda": 4}},
		"cdrom only":     {[]string{"cdrom"}, map[string]uint{"hdc": 1}},
		"default":        {nil, map[string]uint{"vda": 1, "hdc": 4}},
		"disk and cdrom": {[]string{"disk", "cdrom"}, map[string]uint{"vda": 1, "hdc": 4}},
	} {
		t.Run(name, func(t *testing.T) {
			s := cdromSpec()
			s.Boot = tc.boot
			x, err := DomainXML(s)
			if err != nil {
				t.Fatal(err)
			}
			if got := bootOf(t, x); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("boot orders %v, want %v\n%s", got, tc.want, x)
			}
			checkRoundTrip(t, x, s)
		})
	}
	// Without a CD-ROM or network boot the XML is what it always was.
	plain, err := DomainXML(fullSpec())
	if err != nil {
		t.Fatal(err)
	}
	if got := bootOf(t, plain); !reflect.DeepEqual(got, map[string]uint{"vda": 1}) {
		t.Errorf("plain boot orders %v", got)
	}
}

func TestValidateCDROMAndBoot(t *testing.T) {
	for name, mod := range map[string]func(*VMSpec){
		"relative iso":       func(s *VMSpec) { s.CDROM = "debian.iso" },
		"iso without drive":  func(s *VMSpec) { s.HasCDROM = false },
		"unknown device":     func(s *VMSpec) { s.Boot = []string{"floppy"} },
		"twice":              func(s *VMSpec) { s.Boot = []string{"disk", "disk"} },
		"cdrom without one":  func(s *VMSpec) { s.HasCDROM, s.CDROM, s.Boot = false, "", []string{"cdrom"} },
		"network without":    func(s *VMSpec) { s.NICs, s.Boot = nil, []string{"network"} },
		"disk without disks": func(s *VMSpec) { s.Disks, s.Boot = nil, []string{"disk"} },
	} {
		s := cdromSpec()
		mod(&s)
		if err := s.Validate(); !errors.Is(err, ErrInvalidSpec) {
			t.Errorf("%s: %v, want ErrInvalidSpec", name, err)
		}
	}
	// A VM with only a CD-ROM (a live system) is valid.
	s := cdromSpec()
	s.Disks = nil
	if err := s.Validate(); err != nil {
		t.Errorf("CD-ROM only: %v", err)
	}
}

// Migration puts the destination's copy of the ISO into the drive and
// changes nothing else.
func TestRetargetCDROM(t *testing.T) {
	spec := cdromSpec()
	spec.Boot = []string{"cdrom", "disk"}
	def := parsedDef(t, spec, XMLOptions{})
	dest := destOf(spec)
	dest.CDROM = "/var/lib/tandem/n2/images/debian.iso"
	if err := retarget(def, dest, XMLOptions{}); err != nil {
		t.Fatal(err)
	}
	x := marshalled(t, def)
	if !strings.Contains(x, dest.CDROM) || strings.Contains(x, spec.CDROM+`"`) {
		t.Errorf("CD-ROM not retargeted:\n%s", x)
	}
	// Another boot order, or no drive, is a change of the guest.
	for name, mod := range map[string]func(*VMSpec){
		"boot order": func(s *VMSpec) { s.Boot = []string{"disk", "cdrom"} },
		"no drive":   func(s *VMSpec) { s.HasCDROM, s.CDROM, s.Boot = false, "", nil },
	} {
		bad := dest
		mod(&bad)
		if err := retarget(parsedDef(t, spec, XMLOptions{}), bad, XMLOptions{}); !errors.Is(err, ErrInvalidSpec) {
			t.Errorf("%s: %v, want ErrInvalidSpec", name, err)
		}
	}
	// An ejected drive stays empty on the destination.
	empty := spec
	empty.CDROM = ""
	def = parsedDef(t, empty, XMLOptions{})
	destEmpty := destOf(empty)
	if err := retarget(def, destEmpty, XMLOptions{}); err != nil {
		t.Fatal(err)
	}
	got, _, err := specOf(def)
	if err != nil || !got.HasCDROM || got.CDROM != "" {
		t.Errorf("ejected drive after retarget: %+v %v", got, err)
	}
}

func TestDomainXMLUEFI(t *testing.T) {
	s := cdromSpec()
	s.Firmware = FirmwareUEFI
	s.NVRAM = "/var/lib/tandem/vms/web-1_VARS.fd"
	x, err := DomainXML(s)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`<loader readonly="yes" type="pflash">` + OVMFCode + `</loader>`,
		`<nvram>/var/lib/tandem/vms/web-1_VARS.fd</nvram>`,
	} {
		if !strings.Contains(x, want) {
			t.Errorf("XML lacks %s:\n%s", want, x)
		}
	}
	checkRoundTrip(t, x, s)
	// Migration moves the store's path only.
	def := parsedDef(t, s, XMLOptions{})
	dest := destOf(s)
	dest.NVRAM = "/var/lib/tandem/n2/vms/web-1_VARS.fd"
	if err := retarget(def, dest, XMLOptions{}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(marshalled(t, def), dest.NVRAM) {
		t.Error("NVRAM path not retargeted")
	}
	bios := dest
	bios.Firmware, bios.NVRAM = FirmwareBIOS, ""
	if err := retarget(parsedDef(t, s, XMLOptions{}), bios, XMLOptions{}); !errors.Is(err, ErrInvalidSpec) {
		t.Errorf("retarget to BIOS: %v", err)
	}
	for name, mod := range map[string]func(*VMSpec){
		"no store":        func(s *VMSpec) { s.NVRAM = "" },
		"store with bios": func(s *VMSpec) { s.Firmware = FirmwareBIOS },
		"unknown":         func(s *VMSpec) { s.Firmware = "coreboot" },
		"kernel":          func(s *VMSpec) { s.Kernel = "/boot/vmlinuz" },
	} {
		bad := s
		mod(&bad)
		if err := bad.Validate(); !errors.Is(err, ErrInvalidSpec) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
