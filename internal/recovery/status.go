package recovery

import (
	"context"
	"maps"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/fencing"
	"github.com/tandemhci/tandem/ha"
	"github.com/tandemhci/tandem/internal/apierr"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// HAVMs is the HA view of every VM, sorted by name; see HAVM.
func HAVMs(vms map[string]*consensus.VMRecord) []*tandemv1.HAVM {
	var out []*tandemv1.HAVM
	for _, name := range slices.Sorted(maps.Keys(vms)) {
		out = append(out, HAVM(vms[name]))
	}
	return out
}

// HAVM is the HA view of one VM. A VM that is meant to be stopped or
// disabled is not "started" just because recovery never touched it (an
// empty HA state): its HA state is its desired state. Fence, recovery and
// error stay visible whatever the desired state, since they tell what HA
// did or needs. A time never set is left out (nil), never the zero time.
func HAVM(v *consensus.VMRecord) *tandemv1.HAVM {
	return &tandemv1.HAVM{Name: v.Name, Node: v.Node, Desired: v.Desired, HaState: v.EffectiveHAState(), Reason: v.HAReason,
		Changed: optTimestamp(v.HAChanged), Priority: int32(v.Priority)}
}

// optTimestamp is nil for the zero time, so JSON shows no 0001-01-01.
func optTimestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func timingProto(t ha.Timing) *tandemv1.HATiming {
	ms := func(d time.Duration) uint32 { return uint32(d / time.Millisecond) }
	return &tandemv1.HATiming{HeartbeatIntervalMs: ms(t.HeartbeatInterval), SuspectTimeoutMs: ms(t.SuspectTimeout), DeadTimeoutMs: ms(t.DeadTimeout),
		FenceTimeoutMs: ms(t.FenceTimeout), SelfFenceLeaseMs: ms(t.SelfFenceLease)}
}

// Status is 'tandem ha status': the settings and every VM's HA state from
// this node's metadata, and the nodes' liveness from the leader's detector.
func (m *Manager) Status(ctx context.Context) (*tandemv1.HAStatusResponse, error) {
	ms, err := m.metaLocal()
	if err != nil {
		return nil, err
	}
	cfg := m.settings(ms.Config)
	t, _ := ha.TimingFrom(cfg)
	out := &tandemv1.HAStatusResponse{Armed: ha.Armed(cfg), Timing: timingProto(t)}
	out.Vms = HAVMs(ms.VMs)
	// Liveness is known on the leader only.
	meta := m.meta()
	if meta == nil {
		return out, nil
	}
	if lid, _, ok := meta.Leader(); ok {
		if ln := ms.NodeByReplica(lid); ln != nil {
			out.Leader = ln.Name
			if c, err := m.st.Peer(ln.BackendAddr); err == nil {
				lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				if lr, err := c.HALiveness(lctx, &tandemv1.HAStatusRequest{}); err == nil {
					out.Nodes = lr.Nodes
				}
				cancel()
			}
		}
	}
	return out, nil
}

// Arm arms or disarms automatic recovery, then answers as Status.
func (m *Manager) Arm(ctx context.Context, armed bool) (*tandemv1.HAStatusResponse, error) {
	meta, err := m.requireMeta(ctx)
	if err != nil {
		return nil, err
	}
	v := "true"
	if !armed {
		v = "false"
	}
	if err := meta.SetConfig(ctx, map[string]string{ha.KeyArmed: v}); err != nil {
		return nil, apierr.FromMeta(err)
	}
	kind := "ha-armed"
	if !armed {
		kind = "ha-disarmed"
	}
	m.event(ctx, consensus.Event{Kind: kind, Detail: "by an operator"})
	return m.Status(ctx)
}

func eventProto(e consensus.Event) *tandemv1.Event {
	return &tandemv1.Event{Seq: e.Seq, At: timestamppb.New(e.At), By: e.By, Kind: e.Kind, Node: e.Node, Vm: e.VM, Detail: e.Detail}
}

// eventPoll is how often a followed event log is read again.
const eventPoll = 200 * time.Millisecond

// Events sends the cluster's events after req.Since (or the last req.Tail,
// 20 by default) to send, and with req.Follow the new ones until ctx ends.
func (m *Manager) Events(ctx context.Context, req *tandemv1.EventsRequest, send func(*tandemv1.Event) error) error {
	ms, err := m.metaLocal()
	if err != nil {
		return err
	}
	since := req.Since
	if since == 0 {
		tail := int(req.Tail)
		if tail == 0 {
			tail = 20
		}
		if n := len(ms.Events); n > tail {
			since = ms.Events[n-tail-1].Seq
		}
	}
	for {
		for _, e := range ms.Events {
			if e.Seq > since {
				if err := send(eventProto(e)); err != nil {
					return err
				}
				since = e.Seq
			}
		}
		if !req.Follow || !sleep(ctx, eventPoll) {
			return nil
		}
		if ms, err = m.metaLocal(); err != nil {
			return err
		}
	}
}

// Liveness answers from this node's detector (the leader's): every member's
// liveness, last answer and when its lease provably ran out.
func (m *Manager) Liveness() (*tandemv1.HAStatusResponse, error) {
	ms, err := m.metaLocal()
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	t := m.timing
	m.mu.Unlock()
	out := &tandemv1.HAStatusResponse{Leader: m.st.Node.Name}
	for _, name := range slices.Sorted(maps.Keys(ms.Nodes)) {
		n := ms.Nodes[name]
		if n.State != consensus.NodeMember {
			continue
		}
		hn := &tandemv1.HANode{Name: name, Liveness: "unknown", FencingConfigured: n.Fence != nil && (n.Fence.IPMI != nil || n.Fence.Redfish != nil)}
		if st, last := m.liveness(name); st != "" {
			hn.Liveness, hn.LastSeen = string(st), optTimestamp(last)
			if !last.IsZero() {
				hn.LeaseExpires = timestamppb.New(t.LeaseExpiry(last, fencing.LeaseMargin(t.SelfFenceLease, 0)))
			}
		}
		out.Nodes = append(out.Nodes, hn)
	}
	return out, nil
}
