package vmm

import (
	"context"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/units"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// checkMACs refuses NIC addresses that libvirt would only refuse at the
// first start, and addresses another VM of the cluster already uses.
func checkMACs(ms *consensus.MetaState, nics []*tandemv1.VMNic) error {
	for i, n := range nics {
		if n.Mac == "" {
			continue
		}
		hw, err := net.ParseMAC(n.Mac)
		switch {
		case err != nil || len(hw) != 6:
			return status.Errorf(codes.InvalidArgument, "nic %d: MAC address %q: want six hex pairs such as 52:54:00:12:34:56", i, n.Mac)
		case hw[0]&1 != 0:
			return status.Errorf(codes.InvalidArgument, "nic %d: MAC address %s is a multicast address; a NIC needs a unicast one (first byte even)", i, n.Mac)
		}
		for _, o := range ms.VMs {
			for _, on := range o.Spec.NICs {
				if strings.EqualFold(on.MAC, hw.String()) {
					return status.Errorf(codes.AlreadyExists, "nic %d: MAC address %s is already used by VM %s", i, hw, o.Name)
				}
			}
		}
	}
	return nil
}

// checkSpec asks the nodes that could run the VM (node, or every data
// member) whether they have its kernel, initrd and bridges and enough
// memory. It refuses a VM no node could start; a VM only some nodes could
// start is created with a warning naming the others.
func (m *Manager) checkSpec(ctx context.Context, ms *consensus.MetaState, req *tandemv1.CreateVMRequest) (string, error) {
	ask := &tandemv1.ComputeInfoRequest{}
	for _, p := range []string{req.Kernel, req.Initrd} {
		if p != "" {
			ask.Paths = append(ask.Paths, p)
		}
	}
	for _, n := range req.Nics {
		if n.Bridge != "" && !slices.Contains(ask.Bridges, n.Bridge) {
			ask.Bridges = append(ask.Bridges, n.Bridge)
		}
	}
	if req.CpuModel != "" {
		ask.CpuModels = []string{req.CpuModel}
	}
	return judgeSpec(req, m.askCompute(ctx, ms, dataMembers(ms, req.Node), ask))
}

// checkCPUModel refuses a CPU model that a node with compute does not know
// (or cannot provide), naming the node and a few models it knows. Unlike
// a missing file or bridge, which only narrows where the VM may run, a
// model is refused if any node lacks it: placement does not look at CPU
// models, and a VM must be able to migrate and fail over to every node.
func checkCPUModel(answers map[string]*tandemv1.ComputeStatus) error {
	// Nodes saying the same (as identical nodes do) are named together.
	var problems []string
	nodes := map[string][]string{}
	for _, n := range slices.Sorted(maps.Keys(answers)) {
		if st := answers[n]; st.Available && len(st.CpuModelProblems) > 0 {
			p := strings.Join(st.CpuModelProblems, "; ")
			if nodes[p] == nil {
				problems = append(problems, p)
			}
			nodes[p] = append(nodes[p], n)
		}
	}
	if len(problems) == 0 {
		return nil
	}
	for i, p := range problems {
		problems[i] = fmt.Sprintf("on %s: %s", strings.Join(nodes[p], ", "), p)
	}
	return status.Errorf(codes.InvalidArgument, "%s", strings.Join(problems, "; "))
}

// judgeSpec decides from the nodes' answers. With none answering, or none
// with compute right now (libvirtd down everywhere), there is nothing to
// judge by: the VM is created with a warning and its first start will tell.
func judgeSpec(req *tandemv1.CreateVMRequest, answers map[string]*tandemv1.ComputeStatus) (string, error) {
	if len(answers) == 0 {
		return "", nil
	}
	if err := checkCPUModel(answers); err != nil {
		return "", err
	}
	nodes := map[string]*tandemv1.ComputeStatus{}
	var without []string
	for _, n := range slices.Sorted(maps.Keys(answers)) {
		if st := answers[n]; st.Available {
			nodes[n] = st
		} else {
			without = append(without, fmt.Sprintf("%s (%s)", n, orNone(st.Reason)))
		}
	}
	if len(nodes) == 0 {
		return fmt.Sprintf("the spec could not be checked: compute is unavailable on %s", strings.Join(without, ", ")), nil
	}
	names := slices.Sorted(maps.Keys(nodes))
	var largest string
	for _, n := range names {
		if largest == "" || nodes[n].CapacityMib > nodes[largest].CapacityMib {
			largest = n
		}
	}
	if uint64(req.MemoryMib) > nodes[largest].CapacityMib {
		return "", status.Errorf(codes.InvalidArgument, "memory %s is more than any node offers VMs (the largest, %s, offers %s)",
			units.FormatBytes(int64(req.MemoryMib)<<20), largest, units.FormatBytes(int64(nodes[largest].CapacityMib)<<20))
	}
	// A node that does not say how many CPUs it has (an older release)
	// lifts the limit.
	most, unknown := "", false
	for _, n := range names {
		switch c := nodes[n].Cpus; {
		case c == 0:
			unknown = true
		case most == "" || c > nodes[most].Cpus:
			most = n
		}
	}
	if !unknown && most != "" && req.Vcpus > nodes[most].Cpus {
		return "", status.Errorf(codes.InvalidArgument, "vcpus %d is more than any node has CPUs (the most, %s, has %d)", req.Vcpus, most, nodes[most].Cpus)
	}
	var able, lacking []string
	for _, n := range names {
		if m := nodes[n].Missing; len(m) > 0 {
			lacking = append(lacking, fmt.Sprintf("%s (%s)", n, strings.Join(m, "; ")))
		} else {
			able = append(able, n)
		}
	}
	switch {
	case len(lacking) == 0:
		return "", nil
	case len(able) == 0:
		return "", status.Errorf(codes.InvalidArgument, "no node can run this VM: %s", strings.Join(lacking, ", "))
	}
	return fmt.Sprintf("this VM can run only on %s; it cannot run on %s", strings.Join(able, ", "), strings.Join(lacking, ", ")), nil
}
