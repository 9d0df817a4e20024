package consensus

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// HA states of a VM (docs/design.md §5): started -> fence -> recovery -> started, or error.
const (
	HAStarted  = "started"
	HAFence    = "fence"
	HARecovery = "recovery"
	HAError    = "error"
)

// maxEvents bounds the event log kept in the metadata shard.
const maxEvents = 1000

// IPMIFence is a node's BMC as the cluster stores it. The password is
// replicated to members (they run the recovery) and never leaves them; it
// is stored sealed (package internal/sealed, bound to the node and the
// field) so the Raft log and snapshots never hold it in plain text.
type IPMIFence struct {
	Host string `json:"host"`
	Port int    `json:"port,omitempty"`
	User string `json:"user"`
	// PasswordSealed is the sealed password; every record written since
	// sealing exists has it and no Password.
	PasswordSealed string `json:"password_sealed,omitempty"`
	// Password is the plain password of a record written before sealing
	// existed (an old snapshot or log entry); it still works, and the
	// next fence-config replaces it with a sealed one.
	Password string `json:"password,omitempty"`
}

// RedfishFence is a node's Redfish service. Its password is stored as
// IPMIFence's is.
type RedfishFence struct {
	Endpoint       string `json:"endpoint"`
	User           string `json:"user"`
	PasswordSealed string `json:"password_sealed,omitempty"`
	Password       string `json:"password,omitempty"`
	SystemID       string `json:"system_id,omitempty"`
	Insecure       bool   `json:"insecure,omitempty"`
}

// FenceConfig is how a node is fenced.
type FenceConfig struct {
	IPMI    *IPMIFence    `json:"ipmi,omitempty"`
	Redfish *RedfishFence `json:"redfish,omitempty"`
	// NoLease means the node's self-fence lease does not count as fencing
	// (no watchdog, or self-fencing disabled there).
	NoLease bool `json:"no_lease,omitempty"`
}

// Event is one entry of the cluster's event log (tandem events).
type Event struct {
	Seq    uint64    `json:"seq"`
	At     time.Time `json:"at"`
	By     string    `json:"by"`
	Kind   string    `json:"kind"`
	Node   string    `json:"node,omitempty"`
	VM     string    `json:"vm,omitempty"`
	Detail string    `json:"detail,omitempty"`
}

// VMHACmd moves a VM's HA state.
type VMHACmd struct {
	Name   string `json:"name"`
	State  string `json:"state"`
	Reason string `json:"reason,omitempty"`
	// IfState makes the move conditional (a recovery that lost its
	// leadership cannot overwrite the next leader's decision).
	IfState string `json:"if_state,omitempty"`
	// IfNode makes the move conditional on the VM being recorded on that
	// node: a recovery of a dead node changes only the VMs still recorded
	// there, never one another path has moved and restarted since
	// (fault-schedule seed 7174).
	IfNode string `json:"if_node,omitempty"`
}

// NodeFenceCmd stores a node's fence config or an operator's confirmation.
type NodeFenceCmd struct {
	Node   string       `json:"node"`
	Config *FenceConfig `json:"config,omitempty"`
	// ConfirmedOff records that an operator confirmed the node is off.
	ConfirmedOff bool `json:"confirmed_off,omitempty"`
	// Clear forgets a confirmation (the node is back).
	Clear bool `json:"clear,omitempty"`
}

const (
	opEvent     = "event"
	opVMHA      = "vm-ha"
	opNodeFence = "node-fence"
)

func (m *metaSM) applyHA(c *Command) ([]byte, error) {
	s := m.s
	switch c.Op {
	case opEvent:
		if c.Event == nil || c.Event.Kind == "" {
			return nil, fmt.Errorf("%w: event without kind", ErrBadCommand)
		}
		e := *c.Event
		e.At, e.By = c.At, c.By
		return json.Marshal(m.addEvent(e))
	case opVMHA:
		h := c.VMHA
		if h == nil {
			return nil, fmt.Errorf("%w: vm-ha without body", ErrBadCommand)
		}
		v, ok := m.vmForUpdate(h.Name)
		if !ok {
			return nil, fmt.Errorf("%w: %s", ErrNoSuchVM, h.Name)
		}
		switch h.State {
		case HAStarted, HAFence, HARecovery, HAError:
		default:
			return nil, fmt.Errorf("%w: unknown HA state %q", ErrBadCommand, h.State)
		}
		if h.IfState != "" && v.HAState != h.IfState && !(h.IfState == HAStarted && v.HAState == "") {
			return nil, fmt.Errorf("%w: VM %s is in HA state %q, not %q", ErrBadCommand, v.Name, v.HAState, h.IfState)
		}
		if h.IfNode != "" && v.Node != h.IfNode {
			return nil, fmt.Errorf("%w: VM %s is recorded on %s, not %s", ErrBadCommand, v.Name, v.Node, h.IfNode)
		}
		if v.HAState != h.State || v.HAReason != h.Reason {
			v.HAState, v.HAReason, v.HAChanged = h.State, h.Reason, c.At
		}
		return json.Marshal(v)
	case opNodeFence:
		f := c.NodeFence
		if f == nil {
			return nil, fmt.Errorf("%w: node-fence without body", ErrBadCommand)
		}
		n, ok := s.Nodes[f.Node]
		if !ok {
			return nil, fmt.Errorf("%w: %s", ErrNodeNotFound, f.Node)
		}
		if f.Config != nil {
			cfg := *f.Config
			n.Fence = &cfg
			m.audit(c, "node-fence-config", fmt.Sprintf("node %s: ipmi=%v redfish=%v lease=%v", n.Name, cfg.IPMI != nil, cfg.Redfish != nil, !cfg.NoLease))
		}
		switch {
		case f.ConfirmedOff:
			n.ConfirmedOffAt, n.ConfirmedOffIndex = c.At, s.Applied
			m.audit(c, "node-confirm-off", fmt.Sprintf("operator confirmed node %s is off", n.Name))
		case f.Clear:
			n.ConfirmedOffAt, n.ConfirmedOffIndex = time.Time{}, 0
		}
		return json.Marshal(n)
	}
	return nil, fmt.Errorf("%w: unknown op %q", ErrBadCommand, c.Op)
}

// AddEvent appends to the cluster's event log.
func (m *Meta) AddEvent(ctx context.Context, e Event) (Event, error) {
	out, err := proposeAs[Event](ctx, m, Command{Op: opEvent, Event: &e}, "event")
	if err != nil {
		return Event{}, err
	}
	return *out, nil
}

// SetVMHA moves a VM's HA state.
func (m *Meta) SetVMHA(ctx context.Context, h VMHACmd) (*VMRecord, error) {
	return proposeAs[VMRecord](ctx, m, Command{Op: opVMHA, VMHA: &h}, "VM")
}

// SetNodeFence stores a node's fence config or an operator's confirmation.
func (m *Meta) SetNodeFence(ctx context.Context, f NodeFenceCmd) (NodeRecord, error) {
	n, err := proposeAs[NodeRecord](ctx, m, Command{Op: opNodeFence, NodeFence: &f}, "node")
	if err != nil {
		return NodeRecord{}, err
	}
	return *n, nil
}

// EffectiveHAState is the VM's HA state as every report shows it: a VM
// that is not being recovered reads as its desired state when an operator
// stopped or disabled it, else as started.
func (v *VMRecord) EffectiveHAState() string {
	st := v.HAState
	if st == "" || st == HAStarted {
		st = HAStarted
		if v.Desired == VMStopped || v.Desired == VMDisabled {
			st = v.Desired
		}
	}
	return st
}
