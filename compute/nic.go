package compute

import (
	"context"
	"strings"
	"time"

	"github.com/digitalocean/go-libvirt"
	"libvirt.org/go/libvirtxml"
)

// nicInterface is the domain interface of NIC n, as DomainXML renders it.
func nicInterface(n NICSpec) libvirtxml.DomainInterface {
	model := n.Model
	if model == "" {
		model = "virtio"
	}
	iface := libvirtxml.DomainInterface{
		Source: &libvirtxml.DomainInterfaceSource{Bridge: &libvirtxml.DomainInterfaceSourceBridge{Bridge: n.Bridge}},
		Model:  &libvirtxml.DomainInterfaceModel{Type: model},
	}
	if n.MAC != "" {
		iface.MAC = &libvirtxml.DomainInterfaceMAC{Address: normalMAC(n.MAC)}
	}
	return iface
}

// AttachNIC hot-plugs NIC n into running domain name (and its persistent
// definition). It goes after the domain's other NICs, as the record
// appends it.
func (d *Driver) AttachNIC(ctx context.Context, name string, n NICSpec) error {
	if n.MAC == "" || n.Bridge == "" {
		return invalid("a hot-plugged NIC needs a MAC and a bridge")
	}
	dom, _, err := d.liveDef(ctx, name)
	if err != nil {
		return err
	}
	iface := nicInterface(n)
	x, err := iface.Marshal()
	if err != nil {
		return err
	}
	if err := call0(ctx, d, func() error {
		return d.lv.DomainAttachDeviceFlags(dom, x, uint32(libvirt.DomainDeviceModifyLive|libvirt.DomainDeviceModifyConfig))
	}); err != nil {
		return d.opErr("attach NIC "+n.MAC+" to", name, err)
	}
	d.log.Info("NIC attached", "domain", name, "mac", n.MAC, "bridge", n.Bridge)
	return nil
}

// DetachNIC unplugs the NIC with MAC mac from running domain name and
// waits, at most timeout, until the guest released it (PCI hot-unplug
// needs the guest's consent).
func (d *Driver) DetachNIC(ctx context.Context, name, mac string, timeout time.Duration) error {
	dom, def, err := d.liveDef(ctx, name)
	if err != nil {
		return err
	}
	iface := findNIC(def, mac)
	if iface == nil {
		return nil // gone already
	}
	x, err := iface.Marshal()
	if err != nil {
		return err
	}
	if err := call0(ctx, d, func() error {
		return d.lv.DomainDetachDeviceFlags(dom, x, uint32(libvirt.DomainDeviceModifyLive|libvirt.DomainDeviceModifyConfig))
	}); err != nil {
		return d.opErr("detach NIC "+mac+" from", name, err)
	}
	for deadline := time.Now().Add(timeout); ; {
		_, def, err := d.liveDef(ctx, name)
		if err != nil {
			return err
		}
		if findNIC(def, mac) == nil {
			d.log.Info("NIC detached", "domain", name, "mac", mac)
			return nil
		}
		if time.Now().After(deadline) {
			return invalid("the guest of domain %q has not released NIC %s within %v (it may not support PCI hot-unplug); it goes at the next restart", name, mac, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// findNIC is def's interface with MAC mac.
func findNIC(def *libvirtxml.Domain, mac string) *libvirtxml.DomainInterface {
	if def.Devices == nil {
		return nil
	}
	for i := range def.Devices.Interfaces {
		n := &def.Devices.Interfaces[i]
		if n.MAC != nil && strings.EqualFold(n.MAC.Address, mac) {
			return n
		}
	}
	return nil
}
