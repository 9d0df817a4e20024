package consensus

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
)

// VMDisksCmd adds a volume to a VM's disks (at the end, which is where a
// hot-plugged disk goes in the running domain too) or removes one that is
// not its first (boot) disk.
type VMDisksCmd struct {
	VM     string `json:"vm"`
	Add    string `json:"add,omitempty"`
	Remove string `json:"remove,omitempty"`
}

// MaxVMDisks bounds a VM's disks as a create's are (compute.MaxDisks:
// virtio targets vda..vdzz).
const MaxVMDisks = 26 * 27

const opVMDisks = "vm-disks"

func (m *metaSM) applyVMDisks(c *Command) ([]byte, error) {
	u := c.VMDisks
	if u == nil || u.VM == "" || (u.Add == "") == (u.Remove == "") {
		return nil, fmt.Errorf("%w: vm-disks needs a VM and either a volume to add or one to remove", ErrBadCommand)
	}
	v, ok := m.vmForUpdate(u.VM)
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNoSuchVM, u.VM)
	}
	if u.Add != "" {
		if _, ok := m.s.Volumes[u.Add]; !ok {
			return nil, fmt.Errorf("%w: %s", ErrNoSuchVolume, u.Add)
		}
		for _, o := range m.s.VMs {
			if slices.Contains(o.Spec.Volumes, u.Add) {
				if o.Name == v.Name {
					return json.Marshal(v) // a retried proposal
				}
				return nil, fmt.Errorf("%w: volume %s is a disk of VM %s", ErrBadCommand, u.Add, o.Name)
			}
		}
		if len(v.Spec.Volumes) >= MaxVMDisks {
			return nil, fmt.Errorf("%w: VM %s has %d disks, the most it may have", ErrBadCommand, v.Name, len(v.Spec.Volumes))
		}
		v.Spec.Volumes = append(slices.Clone(v.Spec.Volumes), u.Add)
		v.Changed = c.At
		m.audit(c, "vm-disk-add", fmt.Sprintf("VM %s: disk %s added", v.Name, u.Add))
		return json.Marshal(v)
	}
	i := slices.Index(v.Spec.Volumes, u.Remove)
	switch {
	case i < 0:
		return nil, fmt.Errorf("%w: VM %s has no disk on volume %s", ErrBadCommand, v.Name, u.Remove)
	case i == 0:
		return nil, fmt.Errorf("%w: volume %s is VM %s's first disk, which boots it", ErrBadCommand, u.Remove, v.Name)
	}
	v.Spec.Volumes = slices.Delete(slices.Clone(v.Spec.Volumes), i, i+1)
	v.Changed = c.At
	m.audit(c, "vm-disk-detach", fmt.Sprintf("VM %s: disk %s detached", v.Name, u.Remove))
	return json.Marshal(v)
}

// ChangeVMDisks adds a volume to a VM's disks or removes one.
func (m *Meta) ChangeVMDisks(ctx context.Context, u VMDisksCmd) (*VMRecord, error) {
	return proposeAs[VMRecord](ctx, m, Command{Op: opVMDisks, VMDisks: &u}, "VM")
}
