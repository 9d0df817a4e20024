package compute

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/digitalocean/go-libvirt"
	"libvirt.org/go/libvirtxml"
)

// parsedDef renders spec and reads it back as libvirt would hand it out.
func parsedDef(t *testing.T, spec VMSpec, opts XMLOptions) *libvirtxml.Domain {
	t.Helper()
	x, err := DomainXMLWithOptions(spec, opts)
	if err != nil {
		t.Fatal(err)
	}
	var def libvirtxml.Domain
	if err := def.Unmarshal(x); err != nil {
		t.Fatal(err)
	}
	return &def
}

func marshalled(t *testing.T, def *libvirtxml.Domain) string {
	t.Helper()
	x, err := marshalDomain(def)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// destOf moves spec's host-side details to another node.
func destOf(spec VMSpec) VMSpec {
	dest := spec
	dest.Disks = append([]DiskSpec(nil), spec.Disks...)
	for i := range dest.Disks {
		dest.Disks[i].Socket = "/run/tandem/n2/nbd.sock"
	}
	dest.NICs = append([]NICSpec(nil), spec.NICs...)
	for i := range dest.NICs {
		dest.NICs[i].Bridge = "br-n2"
	}
	if spec.SerialLog != "" {
		dest.SerialLog = "/var/lib/tandem/n2/" + spec.Name + ".log"
	}
	if spec.Kernel != "" {
		dest.Kernel = "/var/lib/tandem/n2/vmlinuz"
	}
	return dest
}

// Editing the source's definition gives what the old code path sent:
// the destination spec rendered from scratch.
func TestRetargetMatchesRenderedDestSpec(t *testing.T) {
	pty := fullSpec()
	pty.SerialLog = ""
	toPty := destOf(fullSpec())
	toPty.SerialLog = ""
	for name, tc := range map[string]struct {
		src, dest VMSpec
		opts      XMLOptions
	}{
		"full":        {fullSpec(), destOf(fullSpec()), XMLOptions{}},
		"reconnect":   {fullSpec(), destOf(fullSpec()), XMLOptions{DomainType: "kvm", NBDReconnectDelay: 2}},
		"kernel":      {kernelSpec(), destOf(kernelSpec()), XMLOptions{}},
		"pty":         {pty, destOf(pty), XMLOptions{}},
		"pty to file": {pty, destOf(fullSpec()), XMLOptions{}},
		"file to pty": {fullSpec(), toPty, XMLOptions{}},
		"same node":   {fullSpec(), fullSpec(), XMLOptions{}},
		"upper case": {fullSpec(), func() VMSpec {
			s := destOf(fullSpec())
			s.UUID = strings.ToUpper(s.UUID)
			s.NICs[0].MAC = "52:54:00:12:34:56"
			return s
		}(), XMLOptions{}},
		"no uuid": {fullSpec(), func() VMSpec { s := destOf(fullSpec()); s.UUID = ""; return s }(), XMLOptions{}},
		"rbd":     {rbdSpec(), destOf(rbdSpec()), XMLOptions{}},
		"rbd monitors": {rbdSpec(), func() VMSpec {
			s := destOf(rbdSpec())
			r := *s.Disks[1].RBD
			r.Hosts = []string{"10.0.0.9:6789"}
			s.Disks[1].RBD = &r
			return s
		}(), XMLOptions{}},
	} {
		t.Run(name, func(t *testing.T) {
			def := parsedDef(t, tc.src, tc.opts)
			if err := retarget(def, tc.dest, tc.opts); err != nil {
				t.Fatal(err)
			}
			want := tc.dest
			want.UUID = tc.src.UUID
			old, err := DomainXMLWithOptions(want, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if got := marshalled(t, def); canonicalXML(t, got) != canonicalXML(t, old) {
				t.Errorf("retargeted:\n%s\nrendered destination spec:\n%s", got, old)
			}
		})
	}
}

// What libvirt added to the definition survives the edit.
func TestRetargetKeepsLibvirtDetails(t *testing.T) {
	src := fullSpec()
	def := parsedDef(t, src, XMLOptions{NBDReconnectDelay: 2})
	// As libvirt echoes it: memory in KiB, a generated MAC, addresses,
	// aliases, a disk source index and a serial target model.
	def.Memory = &libvirtxml.DomainMemory{Unit: "KiB", Value: uint(src.MemoryMiB) * 1024}
	def.Devices.Interfaces[1].MAC = &libvirtxml.DomainInterfaceMAC{Address: "52:54:00:aa:bb:cc"}
	slot := uint(4)
	def.Devices.Disks[0].Address = &libvirtxml.DomainAddress{PCI: &libvirtxml.DomainAddressPCI{Slot: &slot}}
	def.Devices.Disks[0].Alias = &libvirtxml.DomainAlias{Name: "virtio-disk0"}
	def.Devices.Disks[0].Source.Index = 1
	def.Devices.Serials[0].Target.Model = &libvirtxml.DomainSerialTargetModel{Name: "isa-serial"}
	def.Devices.Emulator = "/usr/bin/qemu-system-x86_64"

	dest := destOf(src)
	if err := retarget(def, dest, XMLOptions{NBDReconnectDelay: 2}); err != nil {
		t.Fatal(err)
	}
	x := marshalled(t, def)
	for _, want := range []string{
		`<memory unit="KiB">524288</memory>`,
		`<mac address="52:54:00:aa:bb:cc">`,
		`<alias name="virtio-disk0">`,
		`slot="0x04"`,
		`<source protocol="nbd" name="vol-root" index="1">`,
		`<host transport="unix" socket="/run/tandem/n2/nbd.sock">`,
		`<reconnect delay="2">`,
		`<source bridge="br-n2">`,
		`<log file="/var/lib/tandem/n2/web-1.log" append="on">`, `<source mode="bind" path="/var/lib/tandem/n2/web-1.sock">`,
		`<model name="isa-serial">`,
		`<emulator>/usr/bin/qemu-system-x86_64</emulator>`,
	} {
		if !strings.Contains(x, want) {
			t.Errorf("retargeted XML lacks %s:\n%s", want, x)
		}
	}
	if strings.Contains(x, "/run/tandem/nbd.sock") || strings.Contains(x, src.SerialLog) {
		t.Errorf("retargeted XML still names the source's paths:\n%s", x)
	}
}

func TestRetargetRefusesGuestChanges(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*VMSpec)
		want   string
	}{
		{"name", func(s *VMSpec) { s.Name = "web-2" }, "name"},
		{"uuid", func(s *VMSpec) { s.UUID = "00000000-0000-0000-0000-000000000000" }, "uuid"},
		{"disk serial", func(s *VMSpec) { s.Disks[0].Serial = "other" }, "host-side"},
		{"boot", func(s *VMSpec) { s.Disks[1].Boot = true }, "host-side"},
		{"extra disk", func(s *VMSpec) {
			s.Disks = append(s.Disks, DiskSpec{Volume: "vol-x", Socket: "/run/tandem/n2/nbd.sock"})
		}, "host-side"},
		{"missing disk", func(s *VMSpec) { s.Disks = s.Disks[:1] }, "no disk on volume vol-data (vdb)"},
		// Disks are matched by volume: another export is another disk.
		{"other export", func(s *VMSpec) { s.Disks[1].Volume = "vol-data-n2" }, "no disk on volume vol-data (vdb)"},
		{"disks swapped", func(s *VMSpec) { s.Disks[0], s.Disks[1] = s.Disks[1], s.Disks[0] }, "host-side"},
		{"extra nic", func(s *VMSpec) { s.NICs = append(s.NICs, NICSpec{Bridge: "br0"}) }, "nics"},
		{"mac", func(s *VMSpec) { s.NICs[0].MAC = "52:54:00:00:00:99" }, "host-side"},
		{"nic model", func(s *VMSpec) { s.NICs[1].Model = "virtio" }, "host-side"},
		{"kernel", func(s *VMSpec) { s.Kernel = "/boot/vmlinuz" }, "host-side"},
		{"cmdline", func(s *VMSpec) { *s = destOf(kernelSpec()); s.Cmdline = "quiet" }, "host-side"},
		{"no initrd", func(s *VMSpec) { *s = destOf(kernelSpec()); s.Initrd = "" }, "host-side"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dest := destOf(fullSpec())
			tc.mutate(&dest)
			if err := dest.Validate(); err != nil {
				t.Fatalf("test spec invalid: %v", err)
			}
			src := fullSpec()
			if dest.Kernel != "" && len(dest.Disks) == 0 {
				src = kernelSpec()
			}
			err := retarget(parsedDef(t, src, XMLOptions{}), dest, XMLOptions{})
			if !errors.Is(err, ErrInvalidSpec) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("retarget: %v, want an ErrInvalidSpec containing %q", err, tc.want)
			}
		})
	}
	// A disk Tandem did not write is not silently carried along.
	def := parsedDef(t, fullSpec(), XMLOptions{})
	def.Devices.Disks[1].Source = &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: "/tmp/x.img"}}
	if err := retarget(def, destOf(fullSpec()), XMLOptions{}); err == nil || !strings.Contains(err.Error(), "not an NBD network disk") {
		t.Errorf("retarget of a file disk: %v", err)
	}
}

// destXML against libvirtd's test driver: libvirt's own migratable XML of
// a defined and running domain (with what it filled in) is edited and
// still reads back as the destination spec.
func TestDestXMLFromLibvirtd(t *testing.T) {
	d := dialTest(t, startLibvirtd(t))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const name = "vm-mig"
	spec := testSpec(name)
	if err := d.Define(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if err := d.Start(ctx, name); err != nil {
		t.Fatal(err)
	}
	dom, err := d.lookup(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	dest := destOf(spec)
	for _, flags := range []libvirt.DomainXMLFlags{0, libvirt.DomainXMLInactive} {
		x, err := d.destXML(ctx, dom, dest, flags)
		if err != nil {
			t.Fatalf("destXML(flags %d): %v", flags, err)
		}
		got, opts, err := ParseDomainXML(x)
		if err != nil {
			t.Fatal(err)
		}
		want := dest
		want.UUID = formatUUID(dom.UUID)
		want.NICs[1].MAC = got.NICs[1].MAC // libvirt generated it
		want.NICs[0].Model, want.NICs[1].Model = "virtio", "e1000"
		if !reflect.DeepEqual(got, want) || opts.NBDReconnectDelay != d.XMLOptions().NBDReconnectDelay {
			t.Errorf("flags %d: destination XML reads back as\n%+v %+v\nwant\n%+v\n%s", flags, got, opts, want, x)
		}
		if want.NICs[1].MAC == "" {
			t.Errorf("flags %d: libvirt's generated MAC was lost:\n%s", flags, x)
		}
	}
	bad := dest
	bad.NICs = dest.NICs[:1]
	if _, err := d.destXML(ctx, dom, bad, 0); !errors.Is(err, ErrInvalidSpec) {
		t.Errorf("destXML with a NIC less: %v, want ErrInvalidSpec", err)
	}
	// More vCPUs recorded since the start ('vm set'): the destination
	// runs the running guest's, and the change waits for the next start.
	more := dest
	more.VCPUs++
	x, err := d.destXML(ctx, dom, more, 0)
	if err != nil {
		t.Fatalf("destXML with more vCPUs recorded: %v", err)
	}
	if got, _, err := ParseDomainXML(x); err != nil || got.VCPUs != dest.VCPUs {
		t.Errorf("destination vCPUs %d (%v), want the running %d", got.VCPUs, err, dest.VCPUs)
	}
}
