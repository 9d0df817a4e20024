package consensus

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// VMNICsCmd adds a NIC to a VM (at the end, which is where a hot-plugged
// NIC goes in the running domain too) or removes one by its MAC.
type VMNICsCmd struct {
	VM        string `json:"vm"`
	Add       *VMNIC `json:"add,omitempty"`
	RemoveMAC string `json:"remove_mac,omitempty"`
}

// MaxVMNICs bounds a VM's NICs (virtio-net devices on the PCI bus).
const MaxVMNICs = 8

const opVMNICs = "vm-nics"

func (m *metaSM) applyVMNICs(c *Command) ([]byte, error) {
	u := c.VMNICs
	if u == nil || u.VM == "" || (u.Add == nil) == (u.RemoveMAC == "") {
		return nil, fmt.Errorf("%w: vm-nics needs a VM and either a NIC to add or a MAC to remove", ErrBadCommand)
	}
	v, ok := m.vmForUpdate(u.VM)
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNoSuchVM, u.VM)
	}
	if u.Add != nil {
		mac := strings.ToLower(u.Add.MAC)
		if mac == "" {
			return nil, fmt.Errorf("%w: vm-nics: a NIC needs a MAC", ErrBadCommand)
		}
		for _, o := range m.s.VMs {
			if slices.ContainsFunc(o.Spec.NICs, func(n VMNIC) bool { return strings.EqualFold(n.MAC, mac) }) {
				if o.Name == v.Name {
					return json.Marshal(v) // a retried proposal
				}
				return nil, fmt.Errorf("%w: MAC %s is used by VM %s", ErrBadCommand, mac, o.Name)
			}
		}
		if len(v.Spec.NICs) >= MaxVMNICs {
			return nil, fmt.Errorf("%w: VM %s has %d NICs, the most it may have", ErrBadCommand, v.Name, len(v.Spec.NICs))
		}
		n := *u.Add
		n.MAC, n.IPs = mac, slices.Clone(n.IPs)
		v.Spec.NICs = append(slices.Clone(v.Spec.NICs), n)
		v.Changed = c.At
		m.audit(c, "vm-nic-add", fmt.Sprintf("VM %s: NIC %s on %s", v.Name, mac, orDefault(n.Bridge)))
		return json.Marshal(v)
	}
	i := slices.IndexFunc(v.Spec.NICs, func(n VMNIC) bool { return strings.EqualFold(n.MAC, u.RemoveMAC) })
	if i < 0 {
		return nil, fmt.Errorf("%w: VM %s has no NIC with MAC %s", ErrBadCommand, v.Name, u.RemoveMAC)
	}
	v.Spec.NICs = slices.Delete(slices.Clone(v.Spec.NICs), i, i+1)
	v.Changed = c.At
	m.audit(c, "vm-nic-remove", fmt.Sprintf("VM %s: NIC %s removed", v.Name, strings.ToLower(u.RemoveMAC)))
	return json.Marshal(v)
}

func orDefault(bridge string) string {
	if bridge == "" {
		return "the node's default bridge"
	}
	return "bridge " + bridge
}

// ChangeVMNICs adds or removes one of a VM's NICs.
func (m *Meta) ChangeVMNICs(ctx context.Context, u VMNICsCmd) (*VMRecord, error) {
	return proposeAs[VMRecord](ctx, m, Command{Op: opVMNICs, VMNICs: &u}, "VM")
}
