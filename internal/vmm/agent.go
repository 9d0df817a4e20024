package vmm

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/compute"
	"github.com/tandemhci/tandem/consensus"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// The guest agent (issue 18): vm show asks the agent of a running VM for
// its addresses, and vm fsfreeze|fsthaw freeze and thaw its file systems,
// each through the node running the VM (Peer.VMGuestAgent). vm stop's
// agent-first shutdown is VMStop's (compute.Driver.StopGuest).

// Operations of PeerGuestAgentRequest.Op.
const (
	agentOpInfo     = "info"
	agentOpFSFreeze = "fsfreeze"
	agentOpFSThaw   = "fsthaw"
)

// Agent states in VMInfo.Agent.
const (
	agentAnswering    = "answering"
	agentNotAnswering = "not answering"
)

// agentInfoTimeout bounds vm show's question to the agent; agentOpTimeout
// a freeze or thaw (the guest syncs its file systems first).
const (
	agentInfoTimeout = 3 * time.Second
	agentOpTimeout   = 60 * time.Second
)

// guestAgentInfo adds to a running VM's info what its guest agent says:
// its addresses, or why the agent does not answer.
func (m *Manager) guestAgentInfo(ctx context.Context, ms *consensus.MetaState, v *consensus.VMRecord, info *tandemv1.VMInfo) {
	if info.State != compute.StateRunning.String() || v.Node == "" {
		return
	}
	err := m.onNode(ctx, ms, v.Node, agentInfoTimeout+2*time.Second, func(ctx context.Context, c tandemv1.PeerClient) error {
		got, err := c.VMGuestAgent(ctx, &tandemv1.PeerGuestAgentRequest{Vm: VMInfoOf(v), Op: agentOpInfo})
		if err == nil {
			info.Agent, info.GuestAddresses = got.Agent, got.Addresses
		}
		return err
	})
	if err != nil {
		info.Agent = fmt.Sprintf("%s: node %s: %s", agentNotAnswering, v.Node, grpcMessage(err))
	}
}

// FSFreeze freezes the file systems of a running VM through its agent.
func (m *Manager) FSFreeze(ctx context.Context, req *tandemv1.VMRequest) (*tandemv1.FSFreezeResponse, error) {
	return m.agentOp(ctx, req.Name, agentOpFSFreeze)
}

// FSThaw thaws them.
func (m *Manager) FSThaw(ctx context.Context, req *tandemv1.VMRequest) (*tandemv1.FSFreezeResponse, error) {
	return m.agentOp(ctx, req.Name, agentOpFSThaw)
}

func (m *Manager) agentOp(ctx context.Context, name, op string) (*tandemv1.FSFreezeResponse, error) {
	if name == "" {
		return nil, status.Error(codes.InvalidArgument, "no VM given")
	}
	ms, err := m.vols.Catalog(ctx, false)
	if err != nil {
		return nil, err
	}
	v, err := vmOf(ms, name)
	if err != nil {
		return nil, err
	}
	if v.Node == "" || v.Desired != consensus.VMStarted {
		return nil, status.Errorf(codes.FailedPrecondition, "VM %s is not running (desired %s); its guest agent answers only while it runs", name, v.Desired)
	}
	out := &tandemv1.FSFreezeResponse{Vm: name, Node: v.Node}
	err = m.onNode(ctx, ms, v.Node, agentOpTimeout+5*time.Second, func(ctx context.Context, c tandemv1.PeerClient) error {
		got, err := c.VMGuestAgent(ctx, &tandemv1.PeerGuestAgentRequest{Vm: VMInfoOf(v), Op: op})
		if err == nil {
			out.Filesystems, out.FreezeStatus = got.Filesystems, got.FreezeStatus
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	m.log.Info("guest file systems "+op, "vm", name, "node", v.Node, "filesystems", out.Filesystems, "status", out.FreezeStatus)
	return out, nil
}

// VMGuestAgent asks the agent of a VM running here. For info, an agent
// that does not answer is an answer (Agent says why); for fsfreeze and
// fsthaw it is FailedPrecondition.
func (m *Manager) VMGuestAgent(ctx context.Context, req *tandemv1.PeerGuestAgentRequest) (*tandemv1.PeerGuestAgentResponse, error) {
	vm := req.Vm
	if vm == nil || vm.Name == "" {
		return nil, status.Error(codes.InvalidArgument, "no VM given")
	}
	if req.Op != agentOpInfo && req.Op != agentOpFSFreeze && req.Op != agentOpFSThaw {
		return nil, status.Errorf(codes.InvalidArgument, "guest agent operation %q: use info, fsfreeze or fsthaw", req.Op)
	}
	drv, err := m.Driver(ctx)
	if err != nil {
		return nil, computeErr(err)
	}
	st, err := drv.State(ctx, vm.Name)
	if compute.IsNotFoundErr(err) || (err == nil && st != compute.StateRunning) {
		state := "undefined"
		if err == nil {
			state = st.String()
		}
		return nil, status.Errorf(codes.FailedPrecondition, "VM %s is not running on node %s (%s)", vm.Name, m.self(), state)
	}
	if err != nil {
		return nil, computeErr(err)
	}
	agent := drv.Agent(vm.Name)
	out := &tandemv1.PeerGuestAgentResponse{}
	if req.Op == agentOpInfo {
		actx, cancel := context.WithTimeout(ctx, agentInfoTimeout)
		defer cancel()
		addrs, err := agent.Addresses(actx)
		if err != nil {
			out.Agent = agentNotAnswering + ": " + agentReason(err)
			return out, nil
		}
		out.Agent, out.Addresses = agentAnswering, addrs
		return out, nil
	}
	actx, cancel := context.WithTimeout(ctx, agentOpTimeout)
	defer cancel()
	var n int
	if req.Op == agentOpFSFreeze {
		n, err = agent.FSFreeze(actx)
	} else {
		n, err = agent.FSThaw(actx)
	}
	if err != nil {
		return nil, agentStatus(vm.Name, req.Op, err)
	}
	out.Filesystems = int32(n)
	if s, err := agent.FSFreezeStatus(actx); err == nil {
		out.FreezeStatus = s
	}
	return out, nil
}

// agentReason is the short why of an agent error, for vm show.
func agentReason(err error) string {
	if errors.Is(err, compute.ErrAgentNotAnswering) {
		return "no guest agent answered (is qemu-guest-agent running in the guest?)"
	}
	return err.Error()
}

// agentStatus maps an agent error of a freeze or thaw: no agent, or the
// agent's refusal, is FailedPrecondition.
func agentStatus(vm, op string, err error) error {
	var ae *compute.AgentError
	switch {
	case errors.Is(err, compute.ErrAgentNotAnswering):
		return status.Errorf(codes.FailedPrecondition, "VM %s: %s: no guest agent answered (is qemu-guest-agent running in the guest?): %v", vm, op, err)
	case errors.As(err, &ae):
		return status.Errorf(codes.FailedPrecondition, "VM %s: %s refused by the guest agent: %s", vm, op, ae.Desc)
	}
	return computeErr(err)
}
