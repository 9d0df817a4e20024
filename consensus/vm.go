package consensus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/tandemhci/tandem/internal/sealed"
)

// VM desired states.
const (
	VMStarted  = "started"
	VMStopped  = "stopped"
	VMDisabled = "disabled"
)

// Errors of VM records.
var (
	ErrVMNameTaken = errors.New("a VM with this name exists")
	ErrNoSuchVM    = errors.New("no such VM")
)

// VMNIC is one network interface of a VM.
type VMNIC struct {
	Bridge string `json:"bridge,omitempty"`
	MAC    string `json:"mac"`
	// IPs are the addresses the VM declares, announced after a restart
	// elsewhere so that switches and peers learn the new port at once.
	IPs []string `json:"ips,omitempty"`
}

// VMSpecRecord is what a VM is made of; compute turns it into domain XML.
type VMSpecRecord struct {
	VCPUs     int      `json:"vcpus"`
	MemoryMiB int      `json:"memory_mib"`
	Volumes   []string `json:"volumes"` // first boots
	NICs      []VMNIC  `json:"nics,omitempty"`
	Kernel    string   `json:"kernel,omitempty"`
	Initrd    string   `json:"initrd,omitempty"`
	Cmdline   string   `json:"cmdline,omitempty"`
	// HasCDROM gives the VM a read-only CD-ROM drive; CDROM is the image
	// in it ("" when empty). Boot is the boot order (disk, cdrom,
	// network); empty means disk then cdrom.
	HasCDROM bool     `json:"has_cdrom,omitempty"`
	CDROM    string   `json:"cdrom,omitempty"`
	Boot     []string `json:"boot,omitempty"`
	// Firmware is "" or "bios" (SeaBIOS) or "uefi" (OVMF).
	Firmware string `json:"firmware,omitempty"`
	// CloudInit is the VM's cloud-init NoCloud seed (user-data, meta-data,
	// network-config: cloudinit.Seed.Marshal), sealed with the cluster
	// secret (internal/sealed, bound to the VM's name and UUID): user-data
	// may hold credentials. "" for none.
	CloudInit string `json:"cloud_init,omitempty"`
	// Machine is VMMachineQ35 or VMMachinePC; "" is VMMachinePC, so that
	// a VM recorded before the field existed keeps its i440fx hardware.
	Machine string `json:"machine,omitempty"`
	// CPUModel is the VM's own libvirt CPU model; "" is the cluster's
	// (setting vm.cpu_model), read when the VM starts.
	CPUModel string `json:"cpu_model,omitempty"`
}

// Machine types of VMSpecRecord.Machine.
const (
	VMMachinePC  = "pc"
	VMMachineQ35 = "q35"
)

// ValidCPUModelName reports whether s may be a CPU model name: 1 to 64 of
// [A-Za-z0-9_.-], as libvirt's model names are (qemu64, Skylake-Client-v4,
// Opteron_G5). Whether libvirt knows it is the API's check.
func ValidCPUModelName(s string) bool {
	if len(s) < 1 || len(s) > 64 {
		return false
	}
	for _, r := range s {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '.' || r == '-'
		if !ok {
			return false
		}
	}
	return true
}

// checkMachineCPU refuses a machine type or CPU model no node could run.
func checkMachineCPU(sp VMSpecRecord) error {
	if sp.Machine != "" && sp.Machine != VMMachinePC && sp.Machine != VMMachineQ35 {
		return fmt.Errorf("%w: machine %q: q35 or pc", ErrBadCommand, sp.Machine)
	}
	if sp.CPUModel != "" && !ValidCPUModelName(sp.CPUModel) {
		return fmt.Errorf("%w: cpu model %q: 1 to 64 of [A-Za-z0-9_.-]", ErrBadCommand, sp.CPUModel)
	}
	return nil
}

// MaxCloudInitSealed bounds VMSpecRecord.CloudInit: 64 KiB of files
// (cloudinit.MaxTotal) sealed and base64-encoded, with room to spare.
const MaxCloudInitSealed = 100 << 10

// VMRecord is a VM as the cluster knows it.
type VMRecord struct {
	Name string       `json:"name"`
	UUID string       `json:"uuid"`
	Spec VMSpecRecord `json:"spec"`
	// Desired is started, stopped or disabled (left alone by HA).
	Desired string `json:"desired"`
	// Node is where the VM runs, or ran last.
	Node         string    `json:"node,omitempty"`
	Priority     int       `json:"priority,omitempty"`
	AntiAffinity string    `json:"anti_affinity,omitempty"`
	Created      time.Time `json:"created"`
	Changed      time.Time `json:"changed"`
	// EvacuatedFrom is the node a maintenance evacuation moved the VM off,
	// for the "balanced" failback.
	EvacuatedFrom string `json:"evacuated_from,omitempty"`
	// HAState is the recovery state (HAStarted when empty).
	HAState   string    `json:"ha_state,omitempty"`
	HAReason  string    `json:"ha_reason,omitempty"`
	HAChanged time.Time `json:"ha_changed,omitzero"`
	// NVRAM is a UEFI VM's variable store as last recorded (image.go),
	// nil until the first.
	NVRAM *NVRAMBlob `json:"nvram,omitempty"`
}

// VMUpdate changes a VM's desired state and/or node; empty fields stay.
type VMUpdate struct {
	Name    string `json:"name"`
	Desired string `json:"desired,omitempty"`
	Node    string `json:"node,omitempty"`
	// IfNode makes the update conditional on the VM's current node, so two
	// movers cannot both win.
	IfNode string `json:"if_node,omitempty"`
	Reason string `json:"reason,omitempty"`
	// EvacuatedFrom sets the evacuation mark; ClearEvacuated removes it.
	EvacuatedFrom  string `json:"evacuated_from,omitempty"`
	ClearEvacuated bool   `json:"clear_evacuated,omitempty"`
}

// retriedMove reports whether u, a conditional move whose condition no
// longer holds, would change nothing: the VM is already where u moves it,
// in the state u asks for. It then succeeds without a change, as a retried
// proposal whose first attempt committed must.
func retriedMove(v *VMRecord, u *VMUpdate) bool {
	return u.Node != "" && v.Node == u.Node && (u.Desired == "" || u.Desired == v.Desired) &&
		!u.ClearEvacuated && (u.EvacuatedFrom == "" || u.EvacuatedFrom == v.EvacuatedFrom)
}

// MaintenanceCmd switches a node's maintenance mode.
type MaintenanceCmd struct {
	Node   string `json:"node"`
	Enable bool   `json:"enable"`
}

const (
	opVMCreate      = "vm-create"
	opVMUpdate      = "vm-update"
	opVMDelete      = "vm-delete"
	opMaintenance   = "node-maintenance"
	maxVMNameLength = 64
)

func validDesired(s string) bool { return s == VMStarted || s == VMStopped || s == VMDisabled }

func (m *metaSM) applyVM(c *Command) ([]byte, error) {
	s := m.s
	switch c.Op {
	case opVMCreate:
		v := c.VM
		if v == nil || v.Name == "" || len(v.Name) > maxVMNameLength || v.Spec.VCPUs <= 0 || v.Spec.MemoryMiB <= 0 {
			return nil, fmt.Errorf("%w: vm-create needs a name, vCPUs and memory", ErrBadCommand)
		}
		if old, ok := s.VMs[v.Name]; ok {
			if old.UUID == v.UUID {
				return json.Marshal(old) // a retried proposal
			}
			return nil, fmt.Errorf("%w: %s", ErrVMNameTaken, v.Name)
		}
		for _, vol := range v.Spec.Volumes {
			if _, ok := s.Volumes[vol]; !ok {
				return nil, fmt.Errorf("%w: %s", ErrNoSuchVolume, vol)
			}
			for _, other := range s.VMs {
				if slices.Contains(other.Spec.Volumes, vol) {
					return nil, fmt.Errorf("%w: volume %s is used by VM %s", ErrBadCommand, vol, other.Name)
				}
			}
		}
		if v.Spec.CDROM != "" {
			if _, ok := s.Images[v.Spec.CDROM]; !ok {
				return nil, fmt.Errorf("%w: no image named %s", ErrBadCommand, v.Spec.CDROM)
			}
			v.Spec.HasCDROM = true
		}
		// Never a plain user-data in the replicated state.
		if ci := v.Spec.CloudInit; ci != "" && (!sealed.IsSealed(ci) || len(ci) > MaxCloudInitSealed) {
			return nil, fmt.Errorf("%w: a VM's cloud-init seed must be sealed and at most %d bytes", ErrBadCommand, MaxCloudInitSealed)
		}
		if err := checkMachineCPU(v.Spec); err != nil {
			return nil, err
		}
		if v.Desired == "" {
			v.Desired = VMStopped
		}
		if !validDesired(v.Desired) {
			return nil, fmt.Errorf("%w: unknown desired state %q", ErrBadCommand, v.Desired)
		}
		e := *v
		e.Created, e.Changed = c.At, c.At
		s.VMs[e.Name] = &e
		m.audit(c, "vm-create", fmt.Sprintf("VM %s: %d vCPUs, %d MiB, volumes %v", e.Name, e.Spec.VCPUs, e.Spec.MemoryMiB, e.Spec.Volumes))
		return json.Marshal(&e)
	case opVMUpdate:
		u := c.VMUpdate
		if u == nil {
			return nil, fmt.Errorf("%w: vm-update without body", ErrBadCommand)
		}
		v, ok := m.vmForUpdate(u.Name)
		if !ok {
			return nil, fmt.Errorf("%w: %s", ErrNoSuchVM, u.Name)
		}
		if u.IfNode != "" && v.Node != u.IfNode {
			if retriedMove(v, u) {
				// Host.Propose retries an attempt that timed out, and the
				// first may have committed: the move is done (the
				// fault-schedule runner's finding 4, a live migration
				// reported failed though recorded on its target).
				return json.Marshal(v)
			}
			return nil, fmt.Errorf("%w: VM %s is on %s, not %s", ErrBadCommand, v.Name, v.Node, u.IfNode)
		}
		if u.Desired != "" && !validDesired(u.Desired) {
			return nil, fmt.Errorf("%w: unknown desired state %q", ErrBadCommand, u.Desired)
		}
		if u.Node != "" {
			if n, ok := s.Nodes[u.Node]; !ok || n.State != NodeMember {
				return nil, fmt.Errorf("%w: %s is not a member", ErrNodeNotFound, u.Node)
			}
		}
		before := *v
		if u.Desired != "" {
			v.Desired = u.Desired
		}
		if u.Node != "" {
			v.Node = u.Node
		}
		switch {
		case u.ClearEvacuated:
			v.EvacuatedFrom = ""
		case u.EvacuatedFrom != "":
			v.EvacuatedFrom = u.EvacuatedFrom
		}
		if before.Desired != v.Desired || before.Node != v.Node {
			v.Changed = c.At
			m.audit(c, "vm-update", fmt.Sprintf("VM %s: %s on %s -> %s on %s (%s)", v.Name, before.Desired, before.Node, v.Desired, v.Node, u.Reason))
		}
		return json.Marshal(v)
	case opVMDelete:
		if c.VMUpdate == nil {
			return nil, fmt.Errorf("%w: vm-delete without name", ErrBadCommand)
		}
		if _, ok := s.VMs[c.VMUpdate.Name]; !ok {
			return nil, fmt.Errorf("%w: %s", ErrNoSuchVM, c.VMUpdate.Name)
		}
		delete(s.VMs, c.VMUpdate.Name)
		m.audit(c, "vm-delete", "VM "+c.VMUpdate.Name)
		return nil, nil
	case opMaintenance:
		mc := c.Maintenance
		if mc == nil {
			return nil, fmt.Errorf("%w: node-maintenance without body", ErrBadCommand)
		}
		n, ok := s.Nodes[mc.Node]
		if !ok || n.State == NodeRemoved {
			return nil, fmt.Errorf("%w: %s", ErrNodeNotFound, mc.Node)
		}
		if n.Maintenance != mc.Enable {
			n.Maintenance = mc.Enable
			m.audit(c, "node-maintenance", fmt.Sprintf("node %s maintenance=%v", n.Name, mc.Enable))
		}
		return json.Marshal(n)
	}
	return nil, fmt.Errorf("%w: unknown op %q", ErrBadCommand, c.Op)
}

// CreateVM records a new VM.
func (m *Meta) CreateVM(ctx context.Context, v VMRecord) (*VMRecord, error) {
	return proposeAs[VMRecord](ctx, m, Command{Op: opVMCreate, VM: &v}, "VM")
}

// UpdateVM changes a VM's desired state or node.
func (m *Meta) UpdateVM(ctx context.Context, u VMUpdate) (*VMRecord, error) {
	return proposeAs[VMRecord](ctx, m, Command{Op: opVMUpdate, VMUpdate: &u}, "VM")
}

// DeleteVM removes a VM record.
func (m *Meta) DeleteVM(ctx context.Context, name string) error {
	_, err := m.propose(ctx, Command{Op: opVMDelete, VMUpdate: &VMUpdate{Name: name}})
	return err
}

// SetMaintenance switches a node's maintenance mode.
func (m *Meta) SetMaintenance(ctx context.Context, node string, enable bool) (NodeRecord, error) {
	n, err := proposeAs[NodeRecord](ctx, m, Command{Op: opMaintenance, Maintenance: &MaintenanceCmd{Node: node, Enable: enable}}, "node")
	if err != nil {
		return NodeRecord{}, err
	}
	return *n, nil
}
