package vmm

import (
	"context"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/compute"
	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/apierr"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// nicDetachTimeout is how long a running guest has to release an
// unplugged NIC.
const nicDetachTimeout = 30 * time.Second

// AddNIC adds a NIC to a VM ('tandem vm nic add'). It is checked as a
// create's NICs are (a unicast MAC no VM uses; a bridge some node has),
// recorded at the end of the VM's NICs, and, when the VM runs, hot-plugged
// there at the end of its NICs too, so the record and the running domain
// keep the same order (what a migration's destination XML relies on). A
// failed hot-plug takes the record back.
func (m *Manager) AddNIC(ctx context.Context, req *tandemv1.AddVMNicRequest) (*tandemv1.VMInfo, error) {
	nic := req.Nic
	if nic == nil {
		nic = &tandemv1.VMNic{}
	}
	ms, meta, v, err := m.freshVM(ctx, req.Name)
	if err != nil {
		return nil, err
	}
	if len(v.Spec.NICs) >= consensus.MaxVMNICs {
		return nil, status.Errorf(codes.FailedPrecondition, "VM %s has %d NICs, the most a VM may have", v.Name, len(v.Spec.NICs))
	}
	if err := checkMACs(ms, []*tandemv1.VMNic{nic}); err != nil {
		return nil, err
	}
	if nic.Bridge != "" {
		if _, err := judgeSpec(&tandemv1.CreateVMRequest{MemoryMib: uint32(v.Spec.MemoryMiB), Vcpus: uint32(v.Spec.VCPUs)},
			m.askCompute(ctx, ms, dataMembers(ms, ""), &tandemv1.ComputeInfoRequest{Bridges: []string{nic.Bridge}})); err != nil {
			return nil, err
		}
	}
	mac := strings.ToLower(nic.Mac)
	if mac == "" {
		mac = randomMAC()
	}
	running := m.runningOn(ctx, ms, v)
	nv, err := meta.ChangeVMNICs(ctx, consensus.VMNICsCmd{VM: v.Name, Add: &consensus.VMNIC{Bridge: nic.Bridge, MAC: mac, IPs: nic.Ips}})
	if err != nil {
		return nil, apierr.From(err)
	}
	if running {
		add := &tandemv1.VMNic{Bridge: nic.Bridge, Mac: mac, Ips: nic.Ips}
		if err := m.nicOnNode(ctx, ms, nv, &tandemv1.PeerNicRequest{Nic: add}); err != nil {
			if _, uerr := meta.ChangeVMNICs(context.WithoutCancel(ctx), consensus.VMNICsCmd{VM: v.Name, RemoveMAC: mac}); uerr != nil {
				m.log.Error("the NIC could not be hot-plugged and its record could not be taken back", "vm", v.Name, "mac", mac, "err", uerr)
			}
			return nil, status.Errorf(status.Code(err), "VM %s: hot-plugging the NIC on %s: %s (nothing was changed)", v.Name, v.Node, grpcMessage(err))
		}
	}
	m.nicEvent(ctx, nv, fmt.Sprintf("NIC %s added%s", mac, liveOn(running, v.Node)))
	return m.afterChange(ctx, ms, nv), nil
}

// RemoveNIC removes a VM's NIC by its MAC ('tandem vm nic remove'). A
// running VM's guest releases it first (PCI hot-unplug); only then is the
// record changed, so a guest that does not let go leaves everything as
// it was.
func (m *Manager) RemoveNIC(ctx context.Context, req *tandemv1.RemoveVMNicRequest) (*tandemv1.VMInfo, error) {
	ms, meta, v, err := m.freshVM(ctx, req.Name)
	if err != nil {
		return nil, err
	}
	var macs []string
	found := false
	for _, n := range v.Spec.NICs {
		macs = append(macs, n.MAC)
		found = found || strings.EqualFold(n.MAC, req.Mac)
	}
	if !found {
		return nil, status.Errorf(codes.NotFound, "VM %s has no NIC with MAC %s (its NICs: %s)", v.Name, req.Mac, orNone(strings.Join(macs, ", ")))
	}
	running := m.runningOn(ctx, ms, v)
	if running {
		if err := m.nicOnNode(ctx, ms, v, &tandemv1.PeerNicRequest{RemoveMac: strings.ToLower(req.Mac)}); err != nil {
			return nil, status.Errorf(status.Code(err), "VM %s: unplugging NIC %s on %s: %s (nothing was changed)", v.Name, req.Mac, v.Node, grpcMessage(err))
		}
	}
	nv, err := meta.ChangeVMNICs(ctx, consensus.VMNICsCmd{VM: v.Name, RemoveMAC: req.Mac})
	if err != nil {
		return nil, apierr.From(err)
	}
	m.nicEvent(ctx, nv, fmt.Sprintf("NIC %s removed%s", strings.ToLower(req.Mac), liveOn(running, v.Node)))
	return m.afterChange(ctx, ms, nv), nil
}

// runningOn reports whether v's QEMU runs (or is paused) on its node.
func (m *Manager) runningOn(ctx context.Context, ms *consensus.MetaState, v *consensus.VMRecord) bool {
	if v.Desired != consensus.VMStarted || v.Node == "" {
		return false
	}
	st := m.live(ctx, ms, v, 3*time.Second).State
	return st == "running" || st == "paused"
}

func (m *Manager) nicOnNode(ctx context.Context, ms *consensus.MetaState, v *consensus.VMRecord, req *tandemv1.PeerNicRequest) error {
	req.Vm = VMInfoOf(v)
	return m.onNode(ctx, ms, v.Node, nicDetachTimeout+30*time.Second, func(ctx context.Context, c tandemv1.PeerClient) error {
		_, err := c.VMNic(ctx, req)
		return err
	})
}

func (m *Manager) nicEvent(ctx context.Context, v *consensus.VMRecord, detail string) {
	m.log.Info("VM NICs changed", "vm", v.Name, "change", detail)
	m.event(context.WithoutCancel(ctx), consensus.Event{Kind: "vm-nic", VM: v.Name, Node: v.Node, Detail: detail})
}

func (m *Manager) afterChange(ctx context.Context, ms *consensus.MetaState, v *consensus.VMRecord) *tandemv1.VMInfo {
	ms = ms.Clone()
	ms.VMs[v.Name] = v
	return m.live(ctx, ms, v, 3*time.Second)
}

func liveOn(running bool, node string) string {
	if running {
		return " (live on " + node + ")"
	}
	return " (at the next start)"
}

// VMNic hot-plugs (req.Nic) or unplugs (req.RemoveMac) a NIC of a running
// VM defined here.
func (m *Manager) VMNic(ctx context.Context, req *tandemv1.PeerNicRequest) (*tandemv1.VMInfo, error) {
	drv, done, err := m.busyDriver(ctx, req.Vm)
	if err != nil {
		return nil, err
	}
	defer done()
	if req.RemoveMac != "" {
		err = drv.DetachNIC(ctx, req.Vm.Name, req.RemoveMac, nicDetachTimeout)
	} else if req.Nic != nil {
		b := req.Nic.Bridge
		if b == "" {
			b = m.st.Config.Compute.Bridge
		}
		err = drv.AttachNIC(ctx, req.Vm.Name, compute.NICSpec{Bridge: b, MAC: req.Nic.Mac})
	} else {
		err = status.Error(codes.InvalidArgument, "no NIC to attach or detach")
	}
	if err != nil {
		return nil, computeErr(err)
	}
	return m.vmInfo(ctx, drv, req.Vm), nil
}
