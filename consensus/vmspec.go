package consensus

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
)

// VMSpecCmd changes a VM's vCPUs, memory and CPU model (tandem vm set);
// zero (nil) leaves a field as it is, and a CPUModel of "" returns the VM
// to the cluster's model. The record changes at once; the VM's QEMU gets
// the new values when it next starts (a live migration keeps the running
// ones).
type VMSpecCmd struct {
	VM        string  `json:"vm"`
	VCPUs     int     `json:"vcpus,omitempty"`
	MemoryMiB int     `json:"memory_mib,omitempty"`
	CPUModel  *string `json:"cpu_model,omitempty"`
}

// Bounds of a VM's spec, as the API and the state machine check them.
const (
	MinVMMemoryMiB = 64
	MaxVMVCPUs     = 64
)

const opVMSpec = "vm-spec"

func (m *metaSM) applyVMSpec(c *Command) ([]byte, error) {
	u := c.VMSpec
	if u == nil || u.VM == "" {
		return nil, fmt.Errorf("%w: vm-spec without VM", ErrBadCommand)
	}
	v, ok := m.vmForUpdate(u.VM)
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNoSuchVM, u.VM)
	}
	if u.VCPUs < 0 || u.VCPUs > MaxVMVCPUs || (u.MemoryMiB != 0 && u.MemoryMiB < MinVMMemoryMiB) {
		return nil, fmt.Errorf("%w: vm-spec: %d vCPUs (1 to %d), %d MiB (at least %d)", ErrBadCommand, u.VCPUs, MaxVMVCPUs, u.MemoryMiB, MinVMMemoryMiB)
	}
	var changes []string
	if u.VCPUs != 0 && u.VCPUs != v.Spec.VCPUs {
		changes = append(changes, fmt.Sprintf("vCPUs %d -> %d", v.Spec.VCPUs, u.VCPUs))
		v.Spec.VCPUs = u.VCPUs
	}
	if u.CPUModel != nil && *u.CPUModel != "" && !ValidCPUModelName(*u.CPUModel) {
		return nil, fmt.Errorf("%w: vm-spec: cpu model %q: 1 to 64 of [A-Za-z0-9_.-]", ErrBadCommand, *u.CPUModel)
	}
	if u.MemoryMiB != 0 && u.MemoryMiB != v.Spec.MemoryMiB {
		changes = append(changes, fmt.Sprintf("memory %d -> %d MiB", v.Spec.MemoryMiB, u.MemoryMiB))
		v.Spec.MemoryMiB = u.MemoryMiB
	}
	if u.CPUModel != nil && *u.CPUModel != v.Spec.CPUModel {
		changes = append(changes, fmt.Sprintf("cpu model %s -> %s", orClusterDefault(v.Spec.CPUModel), orClusterDefault(*u.CPUModel)))
		v.Spec.CPUModel = *u.CPUModel
	}
	if len(changes) > 0 {
		v.Changed = c.At
		m.audit(c, "vm-spec", fmt.Sprintf("VM %s: %s", v.Name, strings.Join(changes, ", ")))
	}
	return json.Marshal(v)
}

// orClusterDefault names a VM's CPU model for the audit trail.
func orClusterDefault(model string) string {
	if model == "" {
		return "the cluster's default"
	}
	return model
}

// SetVMSpec records a VM's new vCPUs, memory and CPU model (zero, nil:
// unchanged).
func (m *Meta) SetVMSpec(ctx context.Context, u VMSpecCmd) (*VMRecord, error) {
	return proposeAs[VMRecord](ctx, m, Command{Op: opVMSpec, VMSpec: &u}, "VM")
}
