package compute

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"libvirt.org/go/libvirtxml"
)

// seedSpec has the install CD-ROM and the cloud-init seed side by side.
func seedSpec() VMSpec {
	s := cdromSpec()
	s.CloudInit = "/var/lib/tandem/vms/web-1.cidata.iso"
	return s
}

func TestDomainXMLCloudInit(t *testing.T) {
	s := seedSpec()
	x, err := DomainXML(s)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "cloudinit.xml", x)
	var def libvirtxml.Domain
	if err := def.Unmarshal(x); err != nil {
		t.Fatal(err)
	}
	var seed *libvirtxml.DomainDisk
	for i, d := range def.Devices.Disks {
		if d.Source != nil && d.Source.File != nil && d.Source.File.File == s.CloudInit {
			seed = &def.Devices.Disks[i]
		}
	}
	switch {
	case seed == nil:
		t.Fatalf("no seed disk:\n%s", x)
	case seed.Device != "disk" || seed.ReadOnly == nil || seed.Target.Bus != "virtio" || seed.Target.Dev != diskTarget(len(s.Disks)) || seed.Boot != nil:
		t.Errorf("seed disk %+v, target %+v", seed, seed.Target)
	}
	// The CD-ROM is still there, with its boot order.
	if got := bootOf(t, x); !reflect.DeepEqual(got, map[string]uint{"vda": 1, "hdc": 4}) {
		t.Errorf("boot orders %v", got)
	}
	checkRoundTrip(t, x, s)
	// A seed alone (a kernel-booted VM) renders too.
	k := fullSpec()
	k.CloudInit = s.CloudInit
	if _, err := DomainXML(k); err != nil {
		t.Error(err)
	}
	for name, path := range map[string]string{"relative": "seed.iso", "control": "/a\nb.iso"} {
		bad := seedSpec()
		bad.CloudInit = path
		if err := bad.Validate(); !errors.Is(err, ErrInvalidSpec) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// Migration points the seed disk at the seed the destination built and
// changes nothing else; a destination without one is refused.
func TestRetargetCloudInit(t *testing.T) {
	spec := seedSpec()
	def := parsedDef(t, spec, XMLOptions{})
	dest := destOf(spec)
	dest.CloudInit = "/var/lib/tandem/n2/vms/web-1.cidata.iso"
	dest.CDROM = "/var/lib/tandem/n2/images/debian.iso"
	if err := retarget(def, dest, XMLOptions{}); err != nil {
		t.Fatal(err)
	}
	x := marshalled(t, def)
	if !strings.Contains(x, `<source file="`+dest.CloudInit+`"`) || strings.Contains(x, spec.CloudInit+`"`) {
		t.Errorf("seed not retargeted:\n%s", x)
	}
	if !strings.Contains(x, dest.CDROM) {
		t.Errorf("CD-ROM not retargeted:\n%s", x)
	}
	noSeed := destOf(spec)
	noSeed.CloudInit = ""
	if err := retarget(parsedDef(t, spec, XMLOptions{}), noSeed, XMLOptions{}); !errors.Is(err, ErrInvalidSpec) {
		t.Errorf("destination without a seed: %v", err)
	}
	// A seed the source does not have is a change of the guest.
	plain := cdromSpec()
	withSeed := destOf(plain)
	withSeed.CloudInit = dest.CloudInit
	if err := retarget(parsedDef(t, plain, XMLOptions{}), withSeed, XMLOptions{}); !errors.Is(err, ErrInvalidSpec) {
		t.Errorf("seed added by a migration: %v", err)
	}
}
