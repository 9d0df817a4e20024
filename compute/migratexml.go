package compute

import (
	"context"
	"fmt"
	"reflect"
	"strings"

	"github.com/digitalocean/go-libvirt"
	"libvirt.org/go/libvirtxml"
)

// destXML is the running domain's migratable definition (flags selects
// the live or the inactive one) edited for the destination: see retarget.
func (d *Driver) destXML(ctx context.Context, dom libvirt.Domain, dest VMSpec, flags libvirt.DomainXMLFlags) (string, error) {
	x, err := call(ctx, d, func() (string, error) { return d.lv.DomainGetXMLDesc(dom, flags|libvirt.DomainXMLMigratable) })
	if err != nil {
		return "", d.opErr("get the migratable XML of", dom.Name, err)
	}
	var def libvirtxml.Domain
	if err := def.Unmarshal(x); err != nil {
		return "", fmt.Errorf("compute: parse the migratable XML of domain %q: %w", dom.Name, err)
	}
	if err := retarget(&def, dest, d.xmlOpts); err != nil {
		return "", err
	}
	return marshalDomain(&def)
}

// retarget edits def, the source's definition of a domain, into what the
// destination runs: the host-side details that DomainXMLWithOptions
// derives from dest replace the source's (each disk's NBD export, socket
// and reconnect delay, the CD-ROM's ISO path, the cloud-init seed's path, the NICs' bridges, the
// serial log, the kernel and initrd paths). Everything else, including what libvirt filled in (PCI
// addresses, aliases, generated MACs, the expanded machine type, the
// pcie-root-ports), is left as the source has it; so are the machine type
// and CPU model even when dest names others (they apply at the next start).
//
// dest must be valid and describe the same guest: a difference that
// retarget does not carry over (vCPUs, memory, disk serials or boot
// order, NIC models or MACs, the set of devices, the kernel command
// line) is an ErrInvalidSpec
// rather than something for libvirt's ABI check to find mid-migration.
func retarget(def *libvirtxml.Domain, dest VMSpec, opts XMLOptions) error {
	if dest.Name != def.Name {
		return invalid("destination name %q is not the domain's %q", dest.Name, def.Name)
	}
	if dest.UUID != "" && !strings.EqualFold(dest.UUID, def.UUID) {
		// libvirt refuses a destination definition under another UUID.
		return invalid("destination uuid %s is not the domain's %s", dest.UUID, def.UUID)
	}
	if def.Devices == nil {
		def.Devices = &libvirtxml.DomainDeviceList{}
	}
	devs := def.Devices
	// Disks are matched by their volume, not their target: a hot-plugged
	// disk's target is not the one DomainXMLWithOptions would give it
	// (disk.go).
	byVolume := make(map[string]DiskSpec, len(dest.Disks))
	for _, ds := range dest.Disks {
		byVolume[specKey(ds)] = ds
	}
	for i := range devs.Disks {
		disk := &devs.Disks[i]
		if isCDROM(*disk) {
			// The ISO's path is the destination's own copy.
			if !dest.HasCDROM {
				return invalid("destination spec has no CD-ROM drive")
			}
			setCDROMSource(disk, dest.CDROM)
			continue
		}
		if isSeed(*disk) {
			// The cloud-init seed the destination built from the record.
			if dest.CloudInit == "" {
				return invalid("destination spec has no cloud-init seed")
			}
			disk.Source.File.File = dest.CloudInit
			continue
		}
		if rbdOf(*disk) != nil && disk.Target != nil {
			// An RBD disk: the same image, reached from the destination
			// with its monitors and secret (the same UUID on every node).
			ds, ok := byVolume[diskKey(*disk)]
			if !ok || ds.RBD == nil {
				return invalid("destination spec has no RBD disk %s (%s)", disk.Target.Dev, disk.Source.Network.Name)
			}
			src, fresh := disk.Source.Network, rbdSource(ds.RBD).Network
			src.Name, src.Hosts, src.Auth = fresh.Name, fresh.Hosts, fresh.Auth
			continue
		}
		if _, err := nbdOf(*disk); err != nil || disk.Target == nil {
			return fmt.Errorf("compute: domain %q: disk %d is not an NBD network disk with a target", def.Name, i)
		}
		ds, ok := byVolume[diskKey(*disk)]
		if !ok {
			return invalid("destination spec has no disk on volume %s (%s)", disk.Source.Network.Name, disk.Target.Dev)
		}
		// Keep what else the source's network source carries; only the
		// export and how it is reached are the destination's own.
		src := disk.Source.Network
		fresh := nbdSource(ds, opts.NBDReconnectDelay).Network
		src.Name, src.Hosts, src.Reconnect = fresh.Name, fresh.Hosts, fresh.Reconnect
	}
	if len(devs.Interfaces) != len(dest.NICs) {
		return invalid("destination spec has %d nics, the domain %d", len(dest.NICs), len(devs.Interfaces))
	}
	for i := range devs.Interfaces {
		iface := &devs.Interfaces[i]
		if iface.Source == nil || iface.Source.Bridge == nil {
			return fmt.Errorf("compute: domain %q: nic %d is not on a bridge", def.Name, i)
		}
		iface.Source.Bridge.Bridge = dest.NICs[i].Bridge
	}
	for i := range devs.Serials {
		devs.Serials[i].Source, devs.Serials[i].Log = retargetConsole(devs.Serials[i].Source, devs.Serials[i].Log, dest.SerialLog)
	}
	for i := range devs.Consoles {
		devs.Consoles[i].Source, devs.Consoles[i].Log = retargetConsole(devs.Consoles[i].Source, devs.Consoles[i].Log, dest.SerialLog)
	}
	retargetAgentChannel(devs)
	// Only the files' paths move: adding or dropping a kernel (or initrd)
	// or changing the command line changes the guest, caught below.
	if o := def.OS; o != nil {
		if o.Kernel != "" && dest.Kernel != "" {
			o.Kernel = dest.Kernel
		}
		if o.Initrd != "" && dest.Initrd != "" {
			o.Initrd = dest.Initrd
		}
		if o.NVRam != nil && dest.NVRAM != "" {
			o.NVRam.NVRam = dest.NVRAM
		}
	}

	got, _, err := specOf(def)
	if err != nil {
		return err
	}
	want := dest.normalized()
	want.UUID = def.UUID
	// The machine type, CPU model, vCPUs and memory stay the running
	// guest's: a record changed since the start ('vm set', the cluster's
	// vm.cpu_model) applies at the next start, and must not stop the VM
	// from moving (maintenance evacuates by live migration).
	want.Machine, want.CPUModel = got.Machine, got.CPUModel
	want.VCPUs, want.MemoryMiB = got.VCPUs, got.MemoryMiB
	want.NICs = append([]NICSpec(nil), dest.NICs...)
	for i := range want.NICs {
		if want.NICs[i].Model == "" {
			want.NICs[i].Model = "virtio"
		}
		if want.NICs[i].MAC == "" {
			want.NICs[i].MAC = got.NICs[i].MAC // libvirt generated it
		}
		want.NICs[i].MAC = normalMAC(want.NICs[i].MAC)
		got.NICs[i].MAC = normalMAC(got.NICs[i].MAC)
	}
	want.Diskless = len(want.Disks) == 0 && want.Kernel == "" && !want.HasCDROM
	if !reflect.DeepEqual(got, want) {
		return invalid("destination spec differs from domain %q in more than host-side details: domain %+v, destination %+v", def.Name, got, want)
	}
	return nil
}

// retargetConsole points a serial or console device at the destination's
// log (a pty when there is none); a pty stays as the source has it.
func retargetConsole(src *libvirtxml.DomainChardevSource, lg *libvirtxml.DomainChardevLog, log string) (*libvirtxml.DomainChardevSource, *libvirtxml.DomainChardevLog) {
	if log == "" && src != nil && src.Pty != nil {
		return src, lg
	}
	return serialPort(log)
}
