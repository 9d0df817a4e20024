package cluster

import (
	"context"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/apierr"
	"github.com/tandemhci/tandem/internal/version"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// UpgradeStatus is 'tandem cluster upgrade-status': every node's recorded
// release and protocol level with its health, the cluster version, and
// each feature this release knows with the nodes it still waits on. It
// answers from the last applied state when there is no quorum, like
// Status.
func (m *Manager) UpgradeStatus(ctx context.Context) (*tandemv1.UpgradeStatusResponse, error) {
	st := m.Status(ctx)
	if !st.Initialized {
		return nil, errNotInCluster
	}
	ms, err := m.metaState(ctx, st.Quorate)
	if err != nil {
		return nil, apierr.From(err)
	}
	out := &tandemv1.UpgradeStatusResponse{ClusterVersion: ms.Version(), Protocol: version.ProtocolLevel(), AnsweredBy: st.AnsweredBy}
	top := ms.Version()
	for _, n := range ms.Nodes {
		if n.State != consensus.NodeRemoved {
			top = max(top, n.Protocol)
		}
	}
	for _, ni := range st.Nodes {
		if ni.State == consensus.NodeRemoved {
			continue
		}
		rec := ms.Nodes[ni.Name]
		if rec == nil {
			continue
		}
		out.Nodes = append(out.Nodes, &tandemv1.UpgradeNode{
			Name: ni.Name, Version: rec.Version, Protocol: rec.Protocol, State: rec.State,
			Health: ni.Health, Maintenance: rec.Maintenance, Behind: rec.Protocol < top,
		})
	}
	var waiting []string
	for _, f := range consensus.Features() {
		gf := &tandemv1.GatedFeature{Name: f.Name, Level: f.Level, Description: f.Description, Enabled: ms.Version() >= f.Level}
		if !gf.Enabled {
			for _, n := range ms.Behind(f.Level) {
				gf.WaitingOn = append(gf.WaitingOn, n.Name)
			}
		}
		out.Features = append(out.Features, gf)
	}
	for _, n := range out.Nodes {
		if n.Behind {
			waiting = append(waiting, n.Name)
		}
	}
	switch {
	case len(waiting) > 0:
		out.NextStep = fmt.Sprintf("upgrade %s (one at a time: 'tandem node maintenance enable', upgrade, restart, 'tandem node maintenance disable --failback balanced'); the cluster version then rises to %d by itself",
			strings.Join(waiting, ", "), top)
	default:
		out.NextStep = fmt.Sprintf("every node runs protocol %d; nothing to upgrade", ms.Version())
	}
	return out, nil
}

// metaState is the linearizable state when quorate, else the local one.
func (m *Manager) metaState(ctx context.Context, quorate bool) (*consensus.MetaState, error) {
	meta := m.st.Meta()
	if meta == nil {
		return nil, errNotInCluster
	}
	if quorate {
		rctx, cancel := context.WithTimeout(ctx, m.timeout)
		ms, err := meta.State(rctx)
		cancel()
		if err == nil {
			return ms, nil
		}
	}
	return meta.LocalState()
}

// noteSetter is the metadata client's gated node-note command
// (consensus.Meta.SetNodeNote).
type noteSetter interface {
	SetNodeNote(ctx context.Context, node, note string) (*consensus.NodeRecord, error)
}

// SetNote sets or clears an operator's note on a node: the feature
// node-notes, refused with FailedPrecondition naming the nodes on an older
// release until the cluster version allows it.
func (m *Manager) SetNote(ctx context.Context, node, note string) (*tandemv1.NodeInfo, error) {
	if node == "" {
		return nil, status.Error(codes.InvalidArgument, "a node name is required")
	}
	if len(note) > consensus.MaxNodeNote {
		return nil, status.Errorf(codes.InvalidArgument, "a node note holds at most %d bytes, this one has %d", consensus.MaxNodeNote, len(note))
	}
	if strings.ContainsAny(note, "\n\r\x00") {
		return nil, status.Error(codes.InvalidArgument, "a node note is one line of text")
	}
	if err := m.st.Quorum(ctx); err != nil {
		return nil, err
	}
	meta, ok := m.st.Meta().(noteSetter)
	if !ok {
		return nil, errNotInCluster
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	n, err := meta.SetNodeNote(pctx, node, note)
	if err != nil {
		return nil, apierr.From(err)
	}
	return &tandemv1.NodeInfo{Name: n.Name, State: n.State, Version: n.Version, Protocol: n.Protocol, Note: n.Note, Maintenance: n.Maintenance}, nil
}
