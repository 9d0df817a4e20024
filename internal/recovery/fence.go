package recovery

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/fencing"
	"github.com/tandemhci/tandem/ha"
	"github.com/tandemhci/tandem/internal/apierr"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// fenceAgentsText lists a node's agents without secrets.
func fenceAgentsText(f *consensus.FenceConfig) ([]string, bool) {
	if f == nil {
		return nil, true
	}
	var out []string
	if f.IPMI != nil {
		port := f.IPMI.Port
		if port == 0 {
			port = fencing.DefaultIPMIPort
		}
		out = append(out, fmt.Sprintf("ipmi %s user %s password %s", net.JoinHostPort(f.IPMI.Host, strconv.Itoa(port)), f.IPMI.User, passwordMarker(f.IPMI.PasswordSealed, f.IPMI.Password)))
	}
	if f.Redfish != nil {
		out = append(out, fmt.Sprintf("redfish %s user %s password %s", f.Redfish.Endpoint, f.Redfish.User, passwordMarker(f.Redfish.PasswordSealed, f.Redfish.Password)))
	}
	return out, !f.NoLease
}

// passwordMarker says whether a password is set and how it is stored,
// never what it is.
func passwordMarker(sealedPW, plain string) string {
	switch {
	case sealedPW != "":
		return "set (sealed)"
	case plain != "":
		return "set (plain text: re-run fence-config to seal it)"
	}
	return "not set"
}

// requireMeta checks quorum and returns the metadata client.
func (m *Manager) requireMeta(ctx context.Context) (Meta, error) {
	if err := m.st.Quorum(ctx); err != nil {
		return nil, err
	}
	meta := m.meta()
	if meta == nil {
		return nil, status.Error(codes.FailedPrecondition, "this node is not in a cluster")
	}
	return meta, nil
}

// FenceConfig checks and records a node's fencing agents ('tandem node
// fence-config').
func (m *Manager) FenceConfig(ctx context.Context, req *tandemv1.FenceConfigRequest) (*tandemv1.FenceConfigResponse, error) {
	meta, err := m.requireMeta(ctx)
	if err != nil {
		return nil, err
	}
	cfg := &consensus.FenceConfig{NoLease: req.NoLease}
	if i := req.Ipmi; i != nil {
		switch {
		case i.Host == "":
			return nil, status.Error(codes.InvalidArgument, "ipmi: the BMC host is required")
		case i.User == "" || i.Password == "":
			return nil, status.Error(codes.InvalidArgument, "ipmi: user and password are required")
		case i.Port > 65535:
			return nil, status.Errorf(codes.InvalidArgument, "ipmi: port %d out of range", i.Port)
		}
		cfg.IPMI = &consensus.IPMIFence{Host: i.Host, Port: int(i.Port), User: i.User, Password: i.Password}
	}
	if r := req.Redfish; r != nil {
		if r.Endpoint == "" || r.User == "" || r.Password == "" {
			return nil, status.Error(codes.InvalidArgument, "redfish: endpoint, user and password are required")
		}
		cfg.Redfish = &consensus.RedfishFence{Endpoint: r.Endpoint, User: r.User, Password: r.Password, SystemID: r.SystemId, Insecure: r.Insecure}
	}
	if cfg.IPMI == nil && cfg.Redfish == nil && cfg.NoLease {
		m.st.Log.Warn("node has no fencing at all; its VMs wait for an operator after a failure", "node", req.Name)
	}
	// Only the sealed form is proposed: the Raft log and snapshots never
	// see the password.
	if err := m.sealFence(req.Name, cfg); err != nil {
		return nil, err
	}
	n, err := meta.SetNodeFence(ctx, consensus.NodeFenceCmd{Node: req.Name, Config: cfg})
	if err != nil {
		return nil, apierr.FromMeta(err)
	}
	agents, lease := fenceAgentsText(n.Fence)
	return &tandemv1.FenceConfigResponse{Name: n.Name, Agents: agents, Lease: lease}, nil
}

// Fence runs the node's agents now, or records an operator's word that
// the node is off (which lets a waiting recovery proceed).
func (m *Manager) Fence(ctx context.Context, req *tandemv1.FenceNodeRequest) (*tandemv1.FenceNodeResponse, error) {
	meta, err := m.requireMeta(ctx)
	if err != nil {
		return nil, err
	}
	ms, err := m.metaLocal()
	if err != nil {
		return nil, err
	}
	n, ok := ms.Nodes[req.Name]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "no node named %q", req.Name)
	}
	if req.Name == m.st.Node.Name {
		return nil, status.Errorf(codes.FailedPrecondition, "node %s cannot fence itself; run the command on another member", req.Name)
	}
	if req.ConfirmOff {
		if _, err := meta.SetNodeFence(ctx, consensus.NodeFenceCmd{Node: req.Name, ConfirmedOff: true}); err != nil {
			return nil, apierr.FromMeta(err)
		}
		m.event(ctx, consensus.Event{Kind: "fence-result", Node: req.Name, Detail: "an operator confirmed the node is off"})
		return &tandemv1.FenceNodeResponse{Confirmed: true, Agent: "operator", Detail: "recorded: the node is off"}, nil
	}
	t, _ := ha.TimingFrom(m.settings(ms.Config))
	agents := m.agents(n, time.Time{}, t)
	m.event(ctx, consensus.Event{Kind: "fence-attempt", Node: req.Name, Detail: "by an operator"})
	fctx, cancel := context.WithTimeout(ctx, t.FenceTimeout)
	defer cancel()
	res, ferr := fencing.FenceAny(fctx, agents...)
	detail := res.Detail
	if ferr != nil {
		detail = ferr.Error()
	}
	m.event(ctx, consensus.Event{Kind: "fence-result", Node: req.Name, Detail: fmt.Sprintf("confirmed=%v by %s: %s", res.Confirmed, res.Agent, detail)})
	if ferr != nil {
		return nil, status.Errorf(codes.Unavailable, "fencing %s not confirmed: %v", req.Name, ferr)
	}
	return &tandemv1.FenceNodeResponse{Confirmed: true, Agent: res.Agent, Detail: res.Detail}, nil
}
