package compute

import (
	"encoding/xml"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"strings"
)

// ErrInvalidSpec is wrapped by every error Validate returns.
var ErrInvalidSpec = errors.New("invalid vm spec")

// Limits checked by Validate. The memory ceiling is 1 TiB.
const (
	MaxVCPUs     = 64
	MinMemoryMiB = 64
	MaxMemoryMiB = 1 << 20

	// DefaultDomainType is TCG: KVM is not usable on the test machines.
	DefaultDomainType = "qemu"
	// DefaultCPUModel is a model TCG can always emulate, so a guest can
	// live-migrate between any two nodes.
	DefaultCPUModel = "qemu64"

	// maxDiskSerial is virtio-blk's serial length; QEMU truncates longer ones.
	maxDiskSerial = 20
	maxDisks      = 26 * 27 // vda..vdzz
)

// VMSpec is what Tandem stores for a VM and hands to the node that runs it.
type VMSpec struct {
	Name      string
	UUID      string // optional; libvirt generates one when empty
	VCPUs     int
	MemoryMiB int
	Disks     []DiskSpec
	NICs      []NICSpec
	// Kernel, Initrd and Cmdline select direct kernel boot (optional).
	Kernel  string
	Initrd  string
	Cmdline string
	// SerialLog is the file the serial console is logged to. Empty means a
	// pty console instead.
	SerialLog string
	// Diskless allows a VM with neither disks nor a kernel: the firmware
	// finds nothing to boot and waits. Only tests want this (a guest whose
	// whole state is its RAM, e.g. to exercise migration).
	Diskless bool
}

// DiskSpec is one volume, reached through the local primary's NBD export.
type DiskSpec struct {
	Volume string // NBD export name
	Socket string // absolute path of the export's unix socket
	Serial string // optional virtio-blk serial, at most 20 characters
	Boot   bool   // boot from this disk (boot order follows the list order)
}

// NICSpec is one virtio-net (by default) NIC on a host bridge.
type NICSpec struct {
	Bridge string
	MAC    string // optional; libvirt generates one when empty
	Model  string // default "virtio"
}

// XMLOptions are node-level choices that are not part of the VM's identity.
type XMLOptions struct {
	// DomainType is the libvirt domain type: "qemu" (TCG, the default),
	// "kvm", or "test" for libvirt's test driver.
	DomainType string
	// NBDReconnectDelay, in seconds, makes QEMU's NBD client reconnect after
	// the export's socket drops (e.g. tandemd restarting) instead of failing
	// I/O at once. 0 omits the element: libvirt 9.0 (Debian 12) does not know
	// <reconnect delay> on NBD disk sources and its schema rejects it.
	NBDReconnectDelay uint
}

var (
	nameRE   = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)
	uuidRE   = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	serialRE = regexp.MustCompile(`^[A-Za-z0-9_.+-]*$`)
	bridgeRE = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,15}$`)
	macRE    = regexp.MustCompile(`^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$`)
)

var nicModels = map[string]bool{"virtio": true, "e1000": true, "e1000e": true, "rtl8139": true}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidSpec, fmt.Sprintf(format, args...))
}

// Validate reports the first problem with the spec as a one-line error that
// wraps ErrInvalidSpec.
func (s VMSpec) Validate() error {
	if !nameRE.MatchString(s.Name) {
		return invalid("name %q must match [a-z0-9][a-z0-9_-]{0,62}", s.Name)
	}
	if s.UUID != "" && !uuidRE.MatchString(s.UUID) {
		return invalid("uuid %q is not of the form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", s.UUID)
	}
	if s.VCPUs < 1 || s.VCPUs > MaxVCPUs {
		return invalid("vcpus %d out of range 1..%d", s.VCPUs, MaxVCPUs)
	}
	if s.MemoryMiB < MinMemoryMiB || s.MemoryMiB > MaxMemoryMiB {
		return invalid("memory %d MiB out of range %d..%d", s.MemoryMiB, MinMemoryMiB, MaxMemoryMiB)
	}
	if len(s.Disks) == 0 && s.Kernel == "" && !s.Diskless {
		return invalid("at least one disk is needed unless a kernel is given (or Diskless is set)")
	}
	if len(s.Disks) > maxDisks {
		return invalid("%d disks, at most %d", len(s.Disks), maxDisks)
	}
	vols := make(map[string]int, len(s.Disks))
	for i, d := range s.Disks {
		switch {
		case d.Volume == "":
			return invalid("disk %d: empty volume", i)
		case len(d.Volume) > 4096 || strings.ContainsFunc(d.Volume, isControl):
			return invalid("disk %d: volume %q is not a valid NBD export name", i, d.Volume)
		case !filepath.IsAbs(d.Socket):
			return invalid("disk %d (%s): socket %q must be an absolute path", i, d.Volume, d.Socket)
		case len(d.Serial) > maxDiskSerial || !serialRE.MatchString(d.Serial):
			return invalid("disk %d (%s): serial %q must be at most %d of [A-Za-z0-9_.+-]", i, d.Volume, d.Serial, maxDiskSerial)
		}
		if j, dup := vols[d.Volume]; dup {
			return invalid("disks %d and %d both use volume %q", j, i, d.Volume)
		}
		vols[d.Volume] = i
	}
	macs := make(map[string]int, len(s.NICs))
	for i, n := range s.NICs {
		if !bridgeRE.MatchString(n.Bridge) {
			return invalid("nic %d: bridge %q is not a valid interface name", i, n.Bridge)
		}
		if n.Model != "" && !nicModels[n.Model] {
			return invalid("nic %d: model %q not one of virtio, e1000, e1000e, rtl8139", i, n.Model)
		}
		if n.MAC == "" {
			continue
		}
		hw, err := net.ParseMAC(n.MAC)
		if err != nil || !macRE.MatchString(n.MAC) {
			return invalid("nic %d: mac %q is not of the form 52:54:00:xx:xx:xx", i, n.MAC)
		}
		if hw[0]&1 == 1 {
			return invalid("nic %d: mac %q is a multicast address", i, n.MAC)
		}
		key := hw.String()
		if j, dup := macs[key]; dup {
			return invalid("nics %d and %d both use mac %s", j, i, key)
		}
		macs[key] = i
	}
	if s.Kernel == "" && (s.Initrd != "" || s.Cmdline != "") {
		return invalid("initrd and cmdline need a kernel")
	}
	for _, p := range []struct{ what, path string }{{"kernel", s.Kernel}, {"initrd", s.Initrd}, {"serial log", s.SerialLog}} {
		if p.path != "" && !filepath.IsAbs(p.path) {
			return invalid("%s %q must be an absolute path", p.what, p.path)
		}
	}
	return nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// The structs below mirror the subset of libvirt's domain XML that Tandem
// writes. encoding/xml (not templates) so that every value is escaped.

type domainXML struct {
	XMLName    xml.Name    `xml:"domain"`
	Type       string      `xml:"type,attr"`
	Name       string      `xml:"name"`
	UUID       string      `xml:"uuid,omitempty"`
	Memory     memoryXML   `xml:"memory"`
	VCPU       int         `xml:"vcpu"`
	OS         osXML       `xml:"os"`
	Features   featuresXML `xml:"features"`
	CPU        cpuXML      `xml:"cpu"`
	Clock      clockXML    `xml:"clock"`
	OnPoweroff string      `xml:"on_poweroff"`
	OnReboot   string      `xml:"on_reboot"`
	OnCrash    string      `xml:"on_crash"`
	Devices    devicesXML  `xml:"devices"`
}

type memoryXML struct {
	Unit  string `xml:"unit,attr"`
	Value int    `xml:",chardata"`
}

type osXML struct {
	Type    osTypeXML `xml:"type"`
	Kernel  string    `xml:"kernel,omitempty"`
	Initrd  string    `xml:"initrd,omitempty"`
	Cmdline string    `xml:"cmdline,omitempty"`
}

type osTypeXML struct {
	Arch  string `xml:"arch,attr"`
	Value string `xml:",chardata"`
}

// featuresXML: ACPI is what makes Shutdown (the power button) work.
type featuresXML struct {
	ACPI *struct{} `xml:"acpi"`
	APIC *struct{} `xml:"apic"`
}

type cpuXML struct {
	Mode  string      `xml:"mode,attr"`
	Match string      `xml:"match,attr"`
	Model cpuModelXML `xml:"model"`
}

type cpuModelXML struct {
	Fallback string `xml:"fallback,attr"`
	Value    string `xml:",chardata"`
}

type clockXML struct {
	Offset string `xml:"offset,attr"`
}

type devicesXML struct {
	Disks      []diskXML  `xml:"disk"`
	Interfaces []ifaceXML `xml:"interface"`
	Serials    []charXML  `xml:"serial"`
	Consoles   []charXML  `xml:"console"`
}

type diskXML struct {
	Type   string        `xml:"type,attr"`
	Device string        `xml:"device,attr"`
	Driver diskDriverXML `xml:"driver"`
	Source diskSourceXML `xml:"source"`
	Target diskTargetXML `xml:"target"`
	Serial string        `xml:"serial,omitempty"`
	Boot   *bootXML      `xml:"boot"`
}

// diskDriverXML: no io='native' — that is a file-posix (aio=) option and
// means nothing for QEMU's NBD client. cache='none' keeps the guest's
// flushes going to the export, which makes them durable on every replica.
// error_policy='stop' pauses the guest on an I/O error instead of failing
// it: when the export drops (tandemd restarting, and libvirt too old for
// NBD reconnect-delay), QEMU reconnects by itself and tandemd resumes the
// guest, which never sees the error.
type diskDriverXML struct {
	Name         string `xml:"name,attr"`
	Type         string `xml:"type,attr"`
	Cache        string `xml:"cache,attr,omitempty"`
	ErrorPolicy  string `xml:"error_policy,attr,omitempty"`
	RErrorPolicy string `xml:"rerror_policy,attr,omitempty"`
	Discard      string `xml:"discard,attr,omitempty"`
}

type diskSourceXML struct {
	Protocol  string        `xml:"protocol,attr"`
	Name      string        `xml:"name,attr"`
	Host      diskHostXML   `xml:"host"`
	Reconnect *reconnectXML `xml:"reconnect"`
}

type diskHostXML struct {
	Transport string `xml:"transport,attr"`
	Socket    string `xml:"socket,attr"`
}

type reconnectXML struct {
	Delay uint `xml:"delay,attr"`
}

type diskTargetXML struct {
	Dev string `xml:"dev,attr"`
	Bus string `xml:"bus,attr"`
}

type bootXML struct {
	Order int `xml:"order,attr"`
}

type ifaceXML struct {
	Type   string         `xml:"type,attr"`
	MAC    *macXML        `xml:"mac"`
	Source ifaceSourceXML `xml:"source"`
	Model  ifaceModelXML  `xml:"model"`
}

type macXML struct {
	Address string `xml:"address,attr"`
}

type ifaceSourceXML struct {
	Bridge string `xml:"bridge,attr"`
}

type ifaceModelXML struct {
	Type string `xml:"type,attr"`
}

// charXML is a <serial> or <console>.
type charXML struct {
	Type   string         `xml:"type,attr"`
	Source *charSourceXML `xml:"source"`
	Target charTargetXML  `xml:"target"`
}

type charSourceXML struct {
	Path   string `xml:"path,attr"`
	Append string `xml:"append,attr,omitempty"`
}

type charTargetXML struct {
	Type string `xml:"type,attr,omitempty"`
	Port *int   `xml:"port,attr"`
}

// diskTarget names the i-th virtio disk: vda..vdz, vdaa..vdzz.
func diskTarget(i int) string {
	const letters = "abcdefghijklmnopqrstuvwxyz"
	if i < 26 {
		return "vd" + letters[i:i+1]
	}
	i -= 26
	return "vd" + letters[i/26:i/26+1] + letters[i%26:i%26+1]
}

// DomainXML renders the spec with the default options (TCG, no NBD
// reconnect element; see XMLOptions).
func DomainXML(spec VMSpec) (string, error) {
	return DomainXMLWithOptions(spec, XMLOptions{})
}

// DomainXMLWithOptions renders the spec as libvirt domain XML.
func DomainXMLWithOptions(spec VMSpec, opts XMLOptions) (string, error) {
	if err := spec.Validate(); err != nil {
		return "", err
	}
	typ := opts.DomainType
	if typ == "" {
		typ = DefaultDomainType
	}
	d := domainXML{
		Type:     typ,
		Name:     spec.Name,
		UUID:     strings.ToLower(spec.UUID),
		Memory:   memoryXML{Unit: "MiB", Value: spec.MemoryMiB},
		VCPU:     spec.VCPUs,
		OS:       osXML{Type: osTypeXML{Arch: "x86_64", Value: "hvm"}, Kernel: spec.Kernel, Initrd: spec.Initrd, Cmdline: spec.Cmdline},
		Features: featuresXML{ACPI: &struct{}{}, APIC: &struct{}{}},
		// forbid: fail to start rather than silently run another model,
		// which would break migration between nodes.
		CPU:   cpuXML{Mode: "custom", Match: "exact", Model: cpuModelXML{Fallback: "forbid", Value: DefaultCPUModel}},
		Clock: clockXML{Offset: "utc"},
		// The cluster, not libvirt, decides where a stopped VM runs next, so
		// power-off and crash leave the domain off; a guest reboot stays put.
		OnPoweroff: "destroy",
		OnReboot:   "restart",
		OnCrash:    "destroy",
	}
	boot := 0
	for i, ds := range spec.Disks {
		disk := diskXML{
			Type:   "network",
			Device: "disk",
			Driver: diskDriverXML{Name: "qemu", Type: "raw", Cache: "none", ErrorPolicy: "stop", RErrorPolicy: "stop", Discard: "unmap"},
			Source: diskSourceXML{
				Protocol: "nbd",
				Name:     ds.Volume,
				Host:     diskHostXML{Transport: "unix", Socket: ds.Socket},
			},
			Target: diskTargetXML{Dev: diskTarget(i), Bus: "virtio"},
			Serial: ds.Serial,
		}
		if opts.NBDReconnectDelay > 0 {
			disk.Source.Reconnect = &reconnectXML{Delay: opts.NBDReconnectDelay}
		}
		if ds.Boot {
			boot++
			disk.Boot = &bootXML{Order: boot}
		}
		d.Devices.Disks = append(d.Devices.Disks, disk)
	}
	for _, n := range spec.NICs {
		model := n.Model
		if model == "" {
			model = "virtio"
		}
		iface := ifaceXML{Type: "bridge", Source: ifaceSourceXML{Bridge: n.Bridge}, Model: ifaceModelXML{Type: model}}
		if n.MAC != "" {
			hw, _ := net.ParseMAC(n.MAC) // validated above
			iface.MAC = &macXML{Address: hw.String()}
		}
		d.Devices.Interfaces = append(d.Devices.Interfaces, iface)
	}
	port := 0
	serial := charXML{Type: "pty", Target: charTargetXML{Port: &port}}
	console := charXML{Type: "pty", Target: charTargetXML{Type: "serial", Port: &port}}
	if spec.SerialLog != "" {
		// append: a restarted VM keeps the earlier boots' output.
		src := &charSourceXML{Path: spec.SerialLog, Append: "on"}
		serial.Type, serial.Source = "file", src
		console.Type, console.Source = "file", src
	}
	d.Devices.Serials = []charXML{serial}
	d.Devices.Consoles = []charXML{console}

	out, err := xml.MarshalIndent(d, "", "  ")
	if err != nil {
		return "", fmt.Errorf("compute: marshal domain %s: %w", spec.Name, err)
	}
	return string(out) + "\n", nil
}

// ParseDomainXML reads back XML written by DomainXMLWithOptions (or the
// same subset as libvirt echoes it), for round-trip tests and for
// comparing a node's running definition with the stored spec.
func ParseDomainXML(s string) (VMSpec, XMLOptions, error) {
	var d domainXML
	if err := xml.Unmarshal([]byte(s), &d); err != nil {
		return VMSpec{}, XMLOptions{}, fmt.Errorf("compute: parse domain xml: %w", err)
	}
	mem, err := toMiB(d.Memory)
	if err != nil {
		return VMSpec{}, XMLOptions{}, err
	}
	spec := VMSpec{
		Name:      d.Name,
		UUID:      d.UUID,
		VCPUs:     d.VCPU,
		MemoryMiB: mem,
		Kernel:    d.OS.Kernel,
		Initrd:    d.OS.Initrd,
		Cmdline:   d.OS.Cmdline,
	}
	opts := XMLOptions{DomainType: d.Type}
	for _, disk := range d.Devices.Disks {
		if disk.Type != "network" || disk.Source.Protocol != "nbd" {
			return VMSpec{}, XMLOptions{}, fmt.Errorf("compute: parse domain xml: disk %s is %s/%s, not an NBD network disk",
				disk.Target.Dev, disk.Type, disk.Source.Protocol)
		}
		spec.Disks = append(spec.Disks, DiskSpec{
			Volume: disk.Source.Name,
			Socket: disk.Source.Host.Socket,
			Serial: disk.Serial,
			Boot:   disk.Boot != nil,
		})
		if disk.Source.Reconnect != nil {
			opts.NBDReconnectDelay = disk.Source.Reconnect.Delay
		}
	}
	for _, iface := range d.Devices.Interfaces {
		n := NICSpec{Bridge: iface.Source.Bridge, Model: iface.Model.Type}
		if iface.MAC != nil {
			n.MAC = iface.MAC.Address
		}
		spec.NICs = append(spec.NICs, n)
	}
	for _, c := range d.Devices.Serials {
		if c.Type == "file" && c.Source != nil {
			spec.SerialLog = c.Source.Path
		}
	}
	spec.Diskless = len(spec.Disks) == 0 && spec.Kernel == ""
	return spec, opts, nil
}

func toMiB(m memoryXML) (int, error) {
	switch strings.ToLower(m.Unit) {
	case "mib", "m":
		return m.Value, nil
	case "", "kib", "k": // libvirt's own default and its echo format
		return m.Value / 1024, nil
	case "gib", "g":
		return m.Value * 1024, nil
	}
	return 0, fmt.Errorf("compute: parse domain xml: memory unit %q not supported", m.Unit)
}
