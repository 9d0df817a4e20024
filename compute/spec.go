package compute

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"libvirt.org/go/libvirtxml"

	"github.com/tandemhci/tandem/internal/validate"
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

	// Machine types of VMSpec.Machine: q35 (PCIe, AHCI) for new VMs,
	// i440fx ("pc") for VMs created before q35 became the default, whose
	// hardware must not change under their guest.
	MachinePC  = "pc"
	MachineQ35 = "q35"
	// spareRootPorts is how many empty pcie-root-ports a q35 domain gets
	// for hot-plugged NICs and disks: q35 hot-plugs PCIe devices only into
	// free root ports, and libvirt adds none beyond the devices it places.
	spareRootPorts = 8
	// pcieFixedDevices are the devices libvirt places on root ports besides
	// the disks and NICs: the virtio-serial controller (guest agent), the
	// memory balloon and the USB controller.
	pcieFixedDevices = 3

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
	// HasCDROM gives the VM a read-only IDE CD-ROM drive; CDROM is the
	// host path of the ISO in it, "" for an empty drive.
	HasCDROM bool
	CDROM    string
	// Firmware is "" or FirmwareBIOS (SeaBIOS) or FirmwareUEFI (OVMF from
	// OVMFCode); NVRAM is then the absolute path of the VM's variable
	// store file on this node.
	Firmware string
	NVRAM    string
	// Boot is the firmware's boot order over BootDisk, BootCDROM and
	// BootNetwork (each at most once): "disk" is every disk marked Boot,
	// "network" the first NIC. Empty means disk then cdrom. A spec with
	// neither a CD-ROM nor network boot keeps the disks' order alone (see
	// NormalBoot).
	Boot []string
	// CloudInit is the host path of the VM's cloud-init NoCloud seed (an
	// ISO labelled cidata), "" for none. It is a read-only virtio disk
	// after the volumes, not a second CD-ROM: see seedDisk.
	CloudInit string
	// Machine is MachineQ35 or MachinePC; "" is MachinePC, the machine of
	// every VM recorded before the field existed.
	Machine string
	// CPUModel is a libvirt CPU model name (custom mode, no fallback);
	// "" is DefaultCPUModel.
	CPUModel string
}

// machine is s's machine type, "" read as MachinePC.
func (s VMSpec) machine() string {
	if s.Machine == "" {
		return MachinePC
	}
	return s.Machine
}

// cpuModel is s's CPU model, "" read as DefaultCPUModel.
func (s VMSpec) cpuModel() string {
	if s.CPUModel == "" {
		return DefaultCPUModel
	}
	return s.CPUModel
}

// Firmwares of VMSpec.Firmware, and the OVMF build UEFI VMs run (Debian's
// ovmf: 4 MiB flash, no Secure Boot, no SMM needed) with its variable
// store template (528 KiB).
const (
	FirmwareBIOS = "bios"
	FirmwareUEFI = "uefi"
	OVMFCode     = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	OVMFVars     = "/usr/share/OVMF/OVMF_VARS_4M.fd"
)

// Boot devices of VMSpec.Boot.
const (
	BootDisk    = "disk"
	BootCDROM   = "cdrom"
	BootNetwork = "network"
)

// cdromTarget is the CD-ROM's device on i440fx: the secondary IDE
// master, which SeaBIOS and OVMF boot from. q35 has no IDE: its drive is
// the first port of the built-in AHCI controller (cdromTargetQ35), which
// both firmwares boot from too.
const (
	cdromTarget    = "hdc"
	cdromTargetQ35 = "sda"
)

// normalized is s as its domain XML reads back: the boot order in
// NormalBoot's form, and no disk marked Boot when the order has no disk.
func (s VMSpec) normalized() VMSpec {
	s.Boot = s.NormalBoot()
	// The defaults read back as "", as Firmware's does.
	if s.Machine == MachinePC {
		s.Machine = ""
	}
	if s.CPUModel == DefaultCPUModel {
		s.CPUModel = ""
	}
	if s.Firmware == FirmwareBIOS {
		s.Firmware = "" // the default renders nothing
	}
	if s.Boot != nil && !slices.Contains(s.Boot, BootDisk) {
		s.Disks = slices.Clone(s.Disks)
		for i := range s.Disks {
			s.Disks[i].Boot = false
		}
	}
	if slices.ContainsFunc(s.Disks, func(d DiskSpec) bool { return d.RBD != nil && d.Socket != "" }) {
		s.Disks = slices.Clone(s.Disks)
		for i := range s.Disks {
			if s.Disks[i].RBD != nil {
				s.Disks[i].Socket = "" // not rendered: QEMU reaches Ceph itself
			}
		}
	}
	return s
}

// NormalBoot is the boot order the domain XML encodes for s: nil when s
// has neither a CD-ROM nor network boot (the disks' boot flags say it
// all), else s.Boot or the default (disk, if a disk boots, then cdrom).
func (s VMSpec) NormalBoot() []string {
	if !s.HasCDROM && !slices.Contains(s.Boot, BootNetwork) {
		return nil
	}
	if len(s.Boot) > 0 {
		return slices.Clone(s.Boot)
	}
	var out []string
	if slices.ContainsFunc(s.Disks, func(d DiskSpec) bool { return d.Boot }) {
		out = append(out, BootDisk)
	}
	return append(out, BootCDROM)
}

// DiskSpec is one volume, reached through the local primary's NBD export.
type DiskSpec struct {
	Volume string // NBD export name
	Socket string // absolute path of the export's unix socket
	Serial string // optional virtio-blk serial, at most 20 characters
	Boot   bool   // boot from this disk (boot order follows the list order)
	// RBD, when set, is the disk on Ceph RBD through QEMU's own librbd;
	// Socket is not used then.
	RBD *RBDDisk
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
	// PadTCGRAM gives a TCG guest its RAM in a memory backend of its own
	// that is 8 KiB larger than the spec (qemu:commandline), because QEMU
	// before 9.0 (Debian 12 ships 7.2) loses guest stores in live
	// migration when a RAM block's size is a multiple of 256 KiB: it syncs
	// such a block's dirty bitmap 64 pages at a time and forgets to reset
	// TCG's TLB, so later stores through the TLB's fast path are not
	// tracked and the destination gets stale pages (fixed upstream by
	// "physmem: Fix migration dirty bitmap coherency with TCG memory
	// access"). The guest kernel then crashes or hangs after the
	// switch-over, in about one migration of five here. An unaligned
	// block takes the per-page path, which does reset the TLB. <memory>
	// cannot do it: libvirt rounds it to whole MiB. Only for type "qemu".
	PadTCGRAM bool
}

// TCG RAM padding (see XMLOptions.PadTCGRAM).
const (
	tcgRAMBackend = "tandem-ram"
	tcgRAMPad     = 8 << 10 // bytes; QEMU rounds RAM sizes to 8 KiB
)

// tcgRAMArgs are the QEMU arguments that replace libvirt's RAM backend by
// a padded one: the later -machine and -m win over libvirt's own, and
// libvirt's backend stays unused (QEMU migrates only the RAM it maps).
func tcgRAMArgs(memMiB int) []libvirtxml.DomainQEMUCommandlineArg {
	size := uint64(memMiB)<<20 + tcgRAMPad
	return []libvirtxml.DomainQEMUCommandlineArg{
		{Value: "-object"},
		{Value: fmt.Sprintf(`{"qom-type":"memory-backend-ram","id":%q,"size":%d}`, tcgRAMBackend, size)},
		{Value: "-machine"}, {Value: "memory-backend=" + tcgRAMBackend},
		{Value: "-m"}, {Value: fmt.Sprintf("size=%dk", size>>10)},
	}
}

var (
	cpuModelRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)
	uuidRE     = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	serialRE   = regexp.MustCompile(`^[A-Za-z0-9_.+-]*$`)
	bridgeRE   = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,15}$`)
	macRE      = regexp.MustCompile(`^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$`)
)

var nicModels = map[string]bool{"virtio": true, "e1000": true, "e1000e": true, "rtl8139": true}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidSpec, fmt.Sprintf(format, args...))
}

// Validate reports the first problem with the spec as a one-line error that
// wraps ErrInvalidSpec.
func (s VMSpec) Validate() error {
	if err := validate.VMName(s.Name); err != nil {
		return invalid("%s", validate.Message(err))
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
	if len(s.Disks) == 0 && s.Kernel == "" && !s.Diskless && !s.HasCDROM {
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
		case d.RBD != nil:
			if err := d.RBD.validate(); err != nil {
				return invalid("disk %d (%s): %v", i, d.Volume, err)
			}
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
	switch s.Firmware {
	case "", FirmwareBIOS:
		if s.NVRAM != "" {
			return invalid("an NVRAM store needs UEFI firmware")
		}
	case FirmwareUEFI:
		if !filepath.IsAbs(s.NVRAM) {
			return invalid("UEFI needs the absolute path of its NVRAM store, not %q", s.NVRAM)
		}
		if s.Kernel != "" {
			return invalid("a kernel boots directly, without UEFI")
		}
	default:
		return invalid("firmware %q: use bios or uefi", s.Firmware)
	}
	if m := s.Machine; m != "" && m != MachinePC && m != MachineQ35 {
		return invalid("machine %q: use q35 or pc", m)
	}
	if s.CPUModel != "" && !cpuModelRE.MatchString(s.CPUModel) {
		return invalid("cpu model %q: 1 to 64 of [A-Za-z0-9_.-]", s.CPUModel)
	}
	if s.CDROM != "" && !s.HasCDROM {
		return invalid("cdrom %q without a CD-ROM drive", s.CDROM)
	}
	if s.CDROM != "" && (!filepath.IsAbs(s.CDROM) || strings.ContainsFunc(s.CDROM, isControl)) {
		return invalid("cdrom %q must be an absolute path", s.CDROM)
	}
	if s.CloudInit != "" && (!filepath.IsAbs(s.CloudInit) || strings.ContainsFunc(s.CloudInit, isControl)) {
		return invalid("cloud-init seed %q must be an absolute path", s.CloudInit)
	}
	if s.CloudInit != "" && len(s.Disks) >= maxDisks {
		return invalid("%d disks and a cloud-init seed, at most %d disks with one", len(s.Disks), maxDisks-1)
	}
	seen := map[string]bool{}
	for _, b := range s.Boot {
		switch {
		case b != BootDisk && b != BootCDROM && b != BootNetwork:
			return invalid("boot device %q: use disk, cdrom or network", b)
		case seen[b]:
			return invalid("boot device %s listed twice", b)
		case b == BootCDROM && !s.HasCDROM:
			return invalid("boot from cdrom needs a CD-ROM drive")
		case b == BootNetwork && len(s.NICs) == 0:
			return invalid("boot from network needs a NIC")
		case b == BootDisk && !slices.ContainsFunc(s.Disks, func(d DiskSpec) bool { return d.Boot }):
			return invalid("boot from disk needs a disk marked to boot")
		}
		seen[b] = true
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
	d, err := domainDef(spec, opts)
	if err != nil {
		return "", err
	}
	return marshalDomain(d)
}

func marshalDomain(d *libvirtxml.Domain) (string, error) {
	out, err := d.Marshal()
	if err != nil {
		return "", fmt.Errorf("compute: marshal domain %s: %w", d.Name, err)
	}
	return out + "\n", nil
}

// domainDef builds the libvirt definition of a valid spec.
func domainDef(spec VMSpec, opts XMLOptions) (*libvirtxml.Domain, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	typ := opts.DomainType
	if typ == "" {
		typ = DefaultDomainType
	}
	d := &libvirtxml.Domain{
		Type:   typ,
		Name:   spec.Name,
		UUID:   strings.ToLower(spec.UUID),
		Memory: &libvirtxml.DomainMemory{Unit: "MiB", Value: uint(spec.MemoryMiB)},
		VCPU:   &libvirtxml.DomainVCPU{Value: uint(spec.VCPUs)},
		OS: &libvirtxml.DomainOS{
			Type:   &libvirtxml.DomainOSType{Arch: "x86_64", Type: "hvm"},
			Kernel: spec.Kernel, Initrd: spec.Initrd, Cmdline: spec.Cmdline,
		},
		// ACPI is what makes Shutdown (the power button) work.
		Features: &libvirtxml.DomainFeatureList{ACPI: &libvirtxml.DomainFeature{}, APIC: &libvirtxml.DomainFeatureAPIC{}},
		// forbid: fail to start rather than silently run another model,
		// which would break migration between nodes.
		CPU: &libvirtxml.DomainCPU{Mode: "custom", Match: "exact",
			Model: &libvirtxml.DomainCPUModel{Fallback: "forbid", Value: spec.cpuModel()}},
		Clock: &libvirtxml.DomainClock{Offset: "utc"},
		// The cluster, not libvirt, decides where a stopped VM runs next, so
		// power-off and crash leave the domain off; a guest reboot stays put.
		OnPoweroff: "destroy",
		OnReboot:   "restart",
		OnCrash:    "destroy",
		Devices:    &libvirtxml.DomainDeviceList{},
	}
	q35 := spec.machine() == MachineQ35
	if q35 {
		// libvirt expands it to the newest q35 (pc-q35-7.2 on Debian 12);
		// the expanded name travels with a migration.
		d.OS.Type.Machine = MachineQ35
	}
	if opts.PadTCGRAM && typ == "qemu" {
		d.QEMUCommandline = &libvirtxml.DomainQEMUCommandline{Args: tcgRAMArgs(spec.MemoryMiB)}
	}
	if spec.Firmware == FirmwareUEFI {
		d.OS.Loader = &libvirtxml.DomainLoader{Path: OVMFCode, Readonly: "yes", Type: "pflash"}
		d.OS.NVRam = &libvirtxml.DomainNVRam{NVRam: spec.NVRAM}
	}
	// Boot orders: the disks marked Boot in list order, unless the spec
	// has a boot order (NormalBoot), which places the groups.
	order := bootOrders(spec)
	for i, ds := range spec.Disks {
		src := nbdSource(ds, opts.NBDReconnectDelay)
		if ds.RBD != nil {
			src = rbdSource(ds.RBD)
		}
		disk := libvirtxml.DomainDisk{
			Device: "disk",
			Driver: diskDriver(),
			Source: src,
			Target: &libvirtxml.DomainDiskTarget{Dev: diskTarget(i), Bus: "virtio"},
			Serial: ds.Serial,
		}
		if ds.Boot {
			disk.Boot = order(BootDisk)
		}
		d.Devices.Disks = append(d.Devices.Disks, disk)
	}
	if spec.HasCDROM {
		cd := cdromDisk(spec.CDROM, order(BootCDROM))
		if q35 {
			cd.Target = &libvirtxml.DomainDiskTarget{Dev: cdromTargetQ35, Bus: "sata"}
		}
		d.Devices.Disks = append(d.Devices.Disks, cd)
	}
	if spec.CloudInit != "" {
		d.Devices.Disks = append(d.Devices.Disks, seedDisk(spec.CloudInit, len(spec.Disks)))
	}
	for i, n := range spec.NICs {
		iface := nicInterface(n)
		if i == 0 {
			iface.Boot = order(BootNetwork)
		}
		d.Devices.Interfaces = append(d.Devices.Interfaces, iface)
	}
	// The serial port and the VNC display: console.go.
	d.Devices.Serials, d.Devices.Consoles = serialDevices(spec.SerialLog)
	d.Devices.Graphics, d.Devices.Videos = displayDevices()
	d.Devices.Channels = append(d.Devices.Channels, agentChannel())
	if q35 {
		d.Devices.Controllers = rootPorts(spec)
	}
	return d, nil
}

// rootPorts are a q35 domain's PCI controllers: the pcie-root (index 0,
// which libvirt wants first once any PCI controller is given) and
// pcie-root-ports, one for each device libvirt places on one (an estimate
// from above: the virtio disks and the seed, the NICs, pcieFixedDevices)
// plus spareRootPorts left free for hot-plug. libvirt fills free ports
// before adding any, so the spares must be counted on top. Without
// addresses: libvirt assigns them.
func rootPorts(spec VMSpec) []libvirtxml.DomainController {
	n := len(spec.Disks) + len(spec.NICs) + pcieFixedDevices + spareRootPorts
	if spec.CloudInit != "" {
		n++
	}
	out := make([]libvirtxml.DomainController, n+1)
	for i := range out {
		idx := uint(i)
		out[i] = libvirtxml.DomainController{Type: "pci", Model: "pcie-root-port", Index: &idx}
	}
	out[0].Model = "pcie-root"
	return out
}

// bootOrders returns the boot element of the next device of a group:
// nil for a group not in the boot order, otherwise increasing orders, the
// groups placed as NormalBoot lists them (disks keep their list order).
func bootOrders(spec VMSpec) func(group string) *libvirtxml.DomainDeviceBoot {
	groups := spec.NormalBoot()
	if groups == nil {
		groups = []string{BootDisk}
	}
	// Each group gets a block of orders wide enough for all its devices.
	width := uint(len(spec.Disks) + 1)
	next := map[string]uint{}
	for i, g := range groups {
		next[g] = uint(i)*width + 1
	}
	return func(group string) *libvirtxml.DomainDeviceBoot {
		o, ok := next[group]
		if !ok {
			return nil
		}
		next[group] = o + 1
		return &libvirtxml.DomainDeviceBoot{Order: o}
	}
}

// cdromDisk is the read-only CD-ROM drive holding the ISO at path (empty
// when path is "").
func cdromDisk(path string, boot *libvirtxml.DomainDeviceBoot) libvirtxml.DomainDisk {
	disk := libvirtxml.DomainDisk{
		Device:   "cdrom",
		Driver:   &libvirtxml.DomainDiskDriver{Name: "qemu", Type: "raw"},
		Target:   &libvirtxml.DomainDiskTarget{Dev: cdromTarget, Bus: "ide"},
		ReadOnly: &libvirtxml.DomainDiskReadOnly{},
		Boot:     boot,
	}
	setCDROMSource(&disk, path)
	return disk
}

// setCDROMSource puts the ISO at path into a CD-ROM disk ("" ejects).
func setCDROMSource(disk *libvirtxml.DomainDisk, path string) {
	if path == "" {
		disk.Source = nil
		return
	}
	disk.Source = &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: path}}
}

// seedDisk is the cloud-init seed at path as the read-only virtio disk
// after the i volumes. A disk rather than a second CD-ROM drive: the
// install CD-ROM holds the IDE slot both firmwares boot from, q35 has no
// IDE at all, a guest needs no ATAPI driver for virtio-blk, and
// cloud-init finds the seed by its label on any block device. Read-only,
// so libvirt's migration safety check has nothing to copy (as for the
// CD-ROM); it never boots.
func seedDisk(path string, i int) libvirtxml.DomainDisk {
	return libvirtxml.DomainDisk{
		Device:   "disk",
		Driver:   &libvirtxml.DomainDiskDriver{Name: "qemu", Type: "raw"},
		Source:   &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: path}},
		Target:   &libvirtxml.DomainDiskTarget{Dev: diskTarget(i), Bus: "virtio"},
		ReadOnly: &libvirtxml.DomainDiskReadOnly{},
		Serial:   seedSerial,
	}
}

// seedSerial names the seed disk to the guest (/dev/disk/by-id).
const seedSerial = "cidata"

// isSeed reports whether a disk is the cloud-init seed: the only file
// disk Tandem defines, read-only and with the seed's serial (any other
// file disk is refused as one Tandem did not write).
func isSeed(disk libvirtxml.DomainDisk) bool {
	return disk.Device == "disk" && disk.Source != nil && disk.Source.File != nil && disk.Source.File.File != "" &&
		disk.ReadOnly != nil && disk.Serial == seedSerial
}

// isCDROM reports whether a disk is a CD-ROM drive.
func isCDROM(disk libvirtxml.DomainDisk) bool { return disk.Device == "cdrom" }

// diskDriver: no io='native' — that is a file-posix (aio=) option and
// means nothing for QEMU's NBD client. cache='none' keeps the guest's
// flushes going to the export, which makes them durable on every replica.
// error_policy='stop' pauses the guest on an I/O error instead of failing
// it: when the export drops (tandemd restarting, and libvirt too old for
// NBD reconnect-delay), QEMU reconnects by itself and tandemd resumes the
// guest, which never sees the error.
func diskDriver() *libvirtxml.DomainDiskDriver {
	return &libvirtxml.DomainDiskDriver{Name: "qemu", Type: "raw", Cache: "none", ErrorPolicy: "stop", RErrorPolicy: "stop", Discard: "unmap"}
}

// nbdSource is a disk's source: the volume's export on the NBD unix socket.
func nbdSource(ds DiskSpec, reconnectDelay uint) *libvirtxml.DomainDiskSource {
	src := &libvirtxml.DomainDiskSourceNetwork{
		Protocol: "nbd",
		Name:     ds.Volume,
		Hosts:    []libvirtxml.DomainDiskSourceHost{{Transport: "unix", Socket: ds.Socket}},
	}
	if reconnectDelay > 0 {
		src.Reconnect = &libvirtxml.DomainDiskSourceNetworkReconnect{Delay: strconv.FormatUint(uint64(reconnectDelay), 10)}
	}
	return &libvirtxml.DomainDiskSource{Network: src}
}

// consoleSource is the serial console's backend: the log file, or a pty
// when there is none.
func consoleSource(log string) *libvirtxml.DomainChardevSource {
	if log == "" {
		return &libvirtxml.DomainChardevSource{Pty: &libvirtxml.DomainChardevSourcePty{}}
	}
	// append: a restarted VM keeps the earlier boots' output.
	return &libvirtxml.DomainChardevSource{File: &libvirtxml.DomainChardevSourceFile{Path: log, Append: "on"}}
}

// normalMAC is a validated MAC in libvirt's lower-case form.
func normalMAC(mac string) string {
	hw, err := net.ParseMAC(mac)
	if err != nil {
		return mac
	}
	return hw.String()
}

// ParseDomainXML reads back XML written by DomainXMLWithOptions (or the
// same subset as libvirt echoes it), for round-trip tests and for
// comparing a node's running definition with the stored spec.
func ParseDomainXML(s string) (VMSpec, XMLOptions, error) {
	var d libvirtxml.Domain
	if err := d.Unmarshal(s); err != nil {
		return VMSpec{}, XMLOptions{}, fmt.Errorf("compute: parse domain xml: %w", err)
	}
	return specOf(&d)
}

// specOf is the VMSpec (and options) a definition describes; it refuses
// what Tandem never writes, such as a disk that is not an NBD network disk.
func specOf(d *libvirtxml.Domain) (VMSpec, XMLOptions, error) {
	spec := VMSpec{Name: d.Name, UUID: d.UUID}
	opts := XMLOptions{DomainType: d.Type}
	if d.OS != nil && d.OS.Type != nil && isQ35(d.OS.Type.Machine) {
		spec.Machine = MachineQ35
	}
	if d.CPU != nil && d.CPU.Model != nil && d.CPU.Model.Value != DefaultCPUModel {
		spec.CPUModel = d.CPU.Model.Value
	}
	if d.VCPU != nil {
		spec.VCPUs = int(d.VCPU.Value)
	}
	if d.Memory != nil {
		mem, err := toMiB(d.Memory)
		if err != nil {
			return VMSpec{}, XMLOptions{}, err
		}
		spec.MemoryMiB = mem
	}
	if d.QEMUCommandline != nil {
		for _, a := range d.QEMUCommandline.Args {
			if a.Value == "memory-backend="+tcgRAMBackend {
				opts.PadTCGRAM = true
			}
		}
	}
	if d.OS != nil {
		spec.Kernel, spec.Initrd, spec.Cmdline = d.OS.Kernel, d.OS.Initrd, d.OS.Cmdline
		if d.OS.Loader != nil && d.OS.Loader.Type == "pflash" {
			spec.Firmware = FirmwareUEFI
			if d.OS.NVRam != nil {
				spec.NVRAM = d.OS.NVRam.NVRam
			}
		}
	}
	devs := d.Devices
	if devs == nil {
		devs = &libvirtxml.DomainDeviceList{}
	}
	type booted struct {
		order uint
		group string
	}
	var boots []booted
	for _, disk := range devs.Disks {
		if isCDROM(disk) {
			if spec.HasCDROM {
				return VMSpec{}, XMLOptions{}, fmt.Errorf("compute: parse domain xml: more than one CD-ROM drive")
			}
			spec.HasCDROM = true
			if disk.Source != nil && disk.Source.File != nil {
				spec.CDROM = disk.Source.File.File
			}
			if disk.Boot != nil {
				boots = append(boots, booted{disk.Boot.Order, BootCDROM})
			}
			continue
		}
		if isSeed(disk) {
			if spec.CloudInit != "" {
				return VMSpec{}, XMLOptions{}, fmt.Errorf("compute: parse domain xml: more than one cloud-init seed")
			}
			spec.CloudInit = disk.Source.File.File
			continue
		}
		if disk.Boot != nil {
			boots = append(boots, booted{disk.Boot.Order, BootDisk})
		}
		if r := rbdOf(disk); r != nil {
			spec.Disks = append(spec.Disks, DiskSpec{Volume: r.Image, Serial: disk.Serial, Boot: disk.Boot != nil, RBD: r})
			continue
		}
		net, err := nbdOf(disk)
		if err != nil {
			return VMSpec{}, XMLOptions{}, fmt.Errorf("compute: parse domain xml: %w", err)
		}
		ds := DiskSpec{Volume: net.Name, Serial: disk.Serial, Boot: disk.Boot != nil}
		if len(net.Hosts) > 0 {
			ds.Socket = net.Hosts[0].Socket
		}
		spec.Disks = append(spec.Disks, ds)
		if net.Reconnect != nil {
			delay, err := strconv.ParseUint(net.Reconnect.Delay, 10, 32)
			if err != nil {
				return VMSpec{}, XMLOptions{}, fmt.Errorf("compute: parse domain xml: disk %s: reconnect delay: %w", ds.Volume, err)
			}
			opts.NBDReconnectDelay = uint(delay)
		}
	}
	for _, iface := range devs.Interfaces {
		var n NICSpec
		if iface.Source != nil && iface.Source.Bridge != nil {
			n.Bridge = iface.Source.Bridge.Bridge
		}
		if iface.Model != nil {
			n.Model = iface.Model.Type
		}
		if iface.MAC != nil {
			n.MAC = iface.MAC.Address
		}
		if iface.Boot != nil {
			boots = append(boots, booted{iface.Boot.Order, BootNetwork})
		}
		spec.NICs = append(spec.NICs, n)
	}
	slices.SortFunc(boots, func(a, b booted) int { return cmp.Compare(a.order, b.order) })
	for _, b := range boots {
		if !slices.Contains(spec.Boot, b.group) {
			spec.Boot = append(spec.Boot, b.group)
		}
	}
	if !spec.HasCDROM && !slices.Contains(spec.Boot, BootNetwork) {
		spec.Boot = nil
	}
	for _, c := range devs.Serials {
		if log := serialLogOf(c.Source, c.Log); log != "" {
			spec.SerialLog = log
		}
	}
	spec.Diskless = len(spec.Disks) == 0 && spec.Kernel == "" && !spec.HasCDROM
	return spec, opts, nil
}

// isQ35 reports whether a machine type, as written ("q35") or as libvirt
// expands it ("pc-q35-7.2"), is a q35; anything else here is i440fx.
func isQ35(machine string) bool {
	return machine == MachineQ35 || strings.HasPrefix(machine, "pc-q35-")
}

// nbdOf is a disk's NBD source; any other kind of disk is an error.
func nbdOf(disk libvirtxml.DomainDisk) (*libvirtxml.DomainDiskSourceNetwork, error) {
	dev := ""
	if disk.Target != nil {
		dev = disk.Target.Dev
	}
	if disk.Source == nil || disk.Source.Network == nil || disk.Source.Network.Protocol != "nbd" {
		return nil, fmt.Errorf("disk %s is not an NBD network disk", dev)
	}
	return disk.Source.Network, nil
}

func toMiB(m *libvirtxml.DomainMemory) (int, error) {
	v := int(m.Value)
	switch strings.ToLower(m.Unit) {
	case "mib", "m":
		return v, nil
	case "", "kib", "k": // libvirt's own default and its echo format
		return v / 1024, nil
	case "gib", "g":
		return v * 1024, nil
	}
	return 0, fmt.Errorf("compute: parse domain xml: memory unit %q not supported", m.Unit)
}
