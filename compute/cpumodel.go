package compute

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/digitalocean/go-libvirt"
	"libvirt.org/go/libvirtxml"
)

// CPUModels lists the CPU models libvirt knows for this node's domains
// (custom mode of the domain capabilities for the node's domain type and
// the given machine type; "" is MachinePC), in libvirt's order, and those
// of them it reports usable here. A model outside the list cannot start;
// one known but not usable starts only with features missing, which
// fallback='forbid' refuses.
func (d *Driver) CPUModels(ctx context.Context, machine string) (known, usable []string, err error) {
	typ := d.xmlOpts.DomainType
	if typ == "" {
		typ = DefaultDomainType
	}
	if machine == "" {
		machine = MachinePC
	}
	x, err := call(ctx, d, func() (string, error) {
		return d.lv.ConnectGetDomainCapabilities(nil, libvirt.OptString{"x86_64"}, libvirt.OptString{machine}, libvirt.OptString{typ}, 0)
	})
	if err != nil {
		return nil, nil, fmt.Errorf("compute: domain capabilities (%s, %s): %w", typ, machine, err)
	}
	return cpuModelsOf(x)
}

// cpuModelsOf reads the custom-mode CPU models of domain capabilities XML.
func cpuModelsOf(x string) (known, usable []string, err error) {
	var caps libvirtxml.DomainCaps
	if err := caps.Unmarshal(x); err != nil {
		return nil, nil, fmt.Errorf("compute: parse domain capabilities: %w", err)
	}
	if caps.CPU == nil {
		return nil, nil, nil
	}
	for _, m := range caps.CPU.Modes {
		if m.Name != "custom" {
			continue
		}
		for _, model := range m.Models {
			if model.Name == "" || slices.Contains(known, model.Name) {
				continue
			}
			known = append(known, model.Name)
			if model.Usable != "no" {
				usable = append(usable, model.Name)
			}
		}
	}
	return known, usable, nil
}

// wellKnownCPUModels are named first when an unknown model is refused:
// the default and a few generations an administrator is likely to want.
func wellKnownCPUModels() []string {
	return []string{DefaultCPUModel, "kvm64", "Nehalem", "Westmere", "SandyBridge", "Haswell", "Skylake-Client", "Cascadelake-Server", "EPYC", "EPYC-Rome"}
}

// CPUModelProblem is why model cannot be used given what CPUModels
// returned, "" if it can: unknown (naming a few known ones) or not usable
// on this node. Nothing is said when libvirt listed no models at all
// (drivers without capabilities, such as test://).
func CPUModelProblem(model string, known, usable []string) string {
	if len(known) == 0 || model == "" {
		return ""
	}
	if !slices.Contains(known, model) {
		const few = 6
		var some []string
		for _, w := range append(wellKnownCPUModels(), known...) {
			if len(some) == few {
				break
			}
			if slices.Contains(known, w) && !slices.Contains(some, w) {
				some = append(some, w)
			}
		}
		return fmt.Sprintf("cpu model %s: libvirt does not know it (it knows %d, e.g. %s; 'virsh domcapabilities' lists them)",
			model, len(known), strings.Join(some, ", "))
	}
	if !slices.Contains(usable, model) {
		return fmt.Sprintf("cpu model %s: libvirt knows it but cannot provide it here (usable='no' in 'virsh domcapabilities')", model)
	}
	return ""
}
