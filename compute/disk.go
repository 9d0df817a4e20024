package compute

import (
	"context"
	"time"

	"github.com/digitalocean/go-libvirt"
	"libvirt.org/go/libvirtxml"
)

// Hot-plugged disks (vm disk add|detach, issue 18).
//
// A disk added to a running domain cannot take the target DomainXML would
// give it at the next start: the cloud-init seed sits right after the
// volumes (vdb for a one-disk VM), and an earlier detach may have left a
// gap. It takes the target after the highest virtio target in use, so
// libvirt, which keeps a bus's disks sorted by target, lists it after the
// others, in the record's order. Targets therefore identify nothing
// across a VM's life: disks are matched by their volume (the NBD export
// name, or the RBD pool/image) instead, in retarget and here.

// MaxDisks is the most disks a VM may have: targets vda..vdzz; one fewer
// with a cloud-init seed, which takes a target too.
const MaxDisks = maxDisks

// diskKey names the volume behind a domain disk: "nbd:EXPORT" or
// "rbd:POOL/IMAGE"; "" for any other disk (CD-ROM, seed).
func diskKey(disk libvirtxml.DomainDisk) string {
	if disk.Source == nil || disk.Source.Network == nil {
		return ""
	}
	switch n := disk.Source.Network; n.Protocol {
	case "nbd", "rbd":
		return n.Protocol + ":" + n.Name
	}
	return ""
}

// specKey is diskKey of the disk DomainXML renders for ds.
func specKey(ds DiskSpec) string {
	if ds.RBD != nil {
		return "rbd:" + ds.RBD.Pool + "/" + ds.RBD.Image
	}
	return "nbd:" + ds.Volume
}

// targetIndex is the inverse of diskTarget; false for other names.
func targetIndex(dev string) (int, bool) {
	const letters = "abcdefghijklmnopqrstuvwxyz"
	if len(dev) < 3 || len(dev) > 4 || dev[:2] != "vd" {
		return 0, false
	}
	idx := func(c byte) int {
		for i := range len(letters) {
			if letters[i] == c {
				return i
			}
		}
		return -1
	}
	a := idx(dev[2])
	if a < 0 {
		return 0, false
	}
	if len(dev) == 3 {
		return a, true
	}
	b := idx(dev[3])
	if b < 0 {
		return 0, false
	}
	return 26 + a*26 + b, true
}

// nextTarget is the virtio target after the highest one def uses; false
// when none is left (vdzz is taken: the VM needs a restart, which numbers
// its disks afresh).
func nextTarget(def *libvirtxml.Domain) (string, bool) {
	next := 0
	if def.Devices != nil {
		for _, dk := range def.Devices.Disks {
			if dk.Target == nil || dk.Target.Bus != "virtio" {
				continue
			}
			if i, ok := targetIndex(dk.Target.Dev); ok && i >= next {
				next = i + 1
			}
		}
	}
	if next >= maxDisks {
		return "", false
	}
	return diskTarget(next), true
}

// findVolumeDisk is def's disk on the volume ds names, nil if none.
func findVolumeDisk(def *libvirtxml.Domain, ds DiskSpec) *libvirtxml.DomainDisk {
	if def.Devices == nil {
		return nil
	}
	key := specKey(ds)
	for i := range def.Devices.Disks {
		if diskKey(def.Devices.Disks[i]) == key {
			return &def.Devices.Disks[i]
		}
	}
	return nil
}

// hotDisk is the disk element of ds as DomainXML renders a volume (same
// driver options, never in the boot order) on target dev.
func hotDisk(ds DiskSpec, dev string, reconnectDelay uint) libvirtxml.DomainDisk {
	src := nbdSource(ds, reconnectDelay)
	if ds.RBD != nil {
		src = rbdSource(ds.RBD)
	}
	return libvirtxml.DomainDisk{
		Device: "disk",
		Driver: diskDriver(),
		Source: src,
		Target: &libvirtxml.DomainDiskTarget{Dev: dev, Bus: "virtio"},
		Serial: ds.Serial,
	}
}

// AttachDisk hot-plugs the volume disk ds into running domain name (and
// its persistent definition), after the domain's other disks (see
// nextTarget). A disk already on that volume is left as it is, so a
// retried call changes nothing.
func (d *Driver) AttachDisk(ctx context.Context, name string, ds DiskSpec) error {
	if ds.Boot {
		return invalid("a hot-plugged disk does not boot")
	}
	probe := VMSpec{Name: name, VCPUs: 1, MemoryMiB: MinMemoryMiB, Disks: []DiskSpec{ds}}
	if err := probe.Validate(); err != nil {
		return err
	}
	dom, def, err := d.liveDef(ctx, name)
	if err != nil {
		return err
	}
	if findVolumeDisk(def, ds) != nil {
		return nil
	}
	dev, ok := nextTarget(def)
	if !ok {
		return invalid("domain %q has no virtio disk target left after vdzz; restart the VM (its disks are numbered afresh) and add the disk again", name)
	}
	disk := hotDisk(ds, dev, d.xmlOpts.NBDReconnectDelay)
	x, err := disk.Marshal()
	if err != nil {
		return err
	}
	if err := call0(ctx, d, func() error {
		return d.lv.DomainAttachDeviceFlags(dom, x, uint32(libvirt.DomainDeviceModifyLive|libvirt.DomainDeviceModifyConfig))
	}); err != nil {
		return d.opErr("attach disk "+ds.Volume+" to", name, err)
	}
	d.log.Info("disk attached", "domain", name, "volume", ds.Volume, "target", dev)
	return nil
}

// DetachDisk unplugs the disk on the volume ds names from running domain
// name and waits, at most timeout, until the guest released it (PCI
// hot-unplug needs the guest's consent). A disk that is not there is not
// an error.
func (d *Driver) DetachDisk(ctx context.Context, name string, ds DiskSpec, timeout time.Duration) error {
	dom, def, err := d.liveDef(ctx, name)
	if err != nil {
		return err
	}
	disk := findVolumeDisk(def, ds)
	if disk == nil {
		return nil
	}
	dev := ""
	if disk.Target != nil {
		dev = disk.Target.Dev
	}
	x, err := disk.Marshal()
	if err != nil {
		return err
	}
	if err := call0(ctx, d, func() error {
		return d.lv.DomainDetachDeviceFlags(dom, x, uint32(libvirt.DomainDeviceModifyLive|libvirt.DomainDeviceModifyConfig))
	}); err != nil {
		return d.opErr("detach disk "+ds.Volume+" from", name, err)
	}
	for deadline := time.Now().Add(timeout); ; {
		_, def, err := d.liveDef(ctx, name)
		if err != nil {
			return err
		}
		if findVolumeDisk(def, ds) == nil {
			d.log.Info("disk detached", "domain", name, "volume", ds.Volume, "target", dev)
			return nil
		}
		if time.Now().After(deadline) {
			return invalid("the guest of domain %q has not released disk %s (%s) within %v (it may not support PCI hot-unplug, or still use the disk)", name, ds.Volume, dev, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
