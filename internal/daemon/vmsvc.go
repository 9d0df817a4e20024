package daemon

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/placement"
	"github.com/tandemhci/tandem/internal/volume"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// vmService is the admin VM API. Decisions (placement, N+1, the
// co-location invariant) are made here on fresh metadata; the node that
// runs a VM does the libvirt work through its Peer API.
type vmService struct {
	tandemv1.UnimplementedVMServer
	d *Daemon
}

func (s *vmService) volumes() *volume.Manager { return s.d.vols }

func vmInfoOf(v *consensus.VMRecord) *tandemv1.VMInfo {
	out := &tandemv1.VMInfo{Name: v.Name, Uuid: v.UUID, Vcpus: uint32(v.Spec.VCPUs), MemoryMib: uint32(v.Spec.MemoryMiB),
		Volumes: slices.Clone(v.Spec.Volumes), Desired: v.Desired, Node: v.Node, Priority: int32(v.Priority),
		AntiAffinity: v.AntiAffinity, Kernel: v.Spec.Kernel, Initrd: v.Spec.Initrd, Cmdline: v.Spec.Cmdline,
		Created: timestamppb.New(v.Created), State: "stopped"}
	for _, n := range v.Spec.NICs {
		out.Nics = append(out.Nics, &tandemv1.VMNic{Bridge: n.Bridge, Mac: n.MAC, Ips: slices.Clone(n.IPs)})
	}
	return out
}

// live adds the state libvirt reports on the VM's node.
func (s *vmService) live(ctx context.Context, ms *consensus.MetaState, v *consensus.VMRecord, timeout time.Duration) *tandemv1.VMInfo {
	info := vmInfoOf(v)
	info.HaState = haVM(v).HaState
	if v.Node == "" {
		info.State = "undefined"
		return info
	}
	defer func() {
		// Changed is when the VM was last started, moved or recovered:
		// how long it has been up where it runs now.
		if v.Desired == consensus.VMStarted && info.State == "running" {
			info.StartedAt = optTimestamp(v.Changed)
		}
	}()
	err := s.onNode(ctx, ms, v.Node, timeout, func(ctx context.Context, c tandemv1.PeerClient) error {
		got, err := c.VMState(ctx, &tandemv1.PeerVMRequest{Vm: info})
		if err == nil {
			info.State, info.ConsoleLog, info.Warning = got.State, got.ConsoleLog, got.Warning
		}
		return err
	})
	if err != nil {
		info.State = "unknown"
		info.Warning = fmt.Sprintf("node %s: %s", v.Node, grpcMessage(err))
	}
	return info
}

func (s *vmService) onNode(ctx context.Context, ms *consensus.MetaState, node string, timeout time.Duration, f func(context.Context, tandemv1.PeerClient) error) error {
	return s.d.callNode(ctx, ms, node, timeout, f)
}

func (s *vmService) fresh(ctx context.Context) (*consensus.MetaState, *consensus.Meta, error) {
	if err := s.d.requireQuorum(ctx); err != nil {
		return nil, nil, err
	}
	ms, err := s.volumes().Catalog(ctx, true)
	if err != nil {
		return nil, nil, err
	}
	_, meta, _ := s.d.cluster()
	return ms, meta, nil
}

func (s *vmService) List(ctx context.Context, _ *tandemv1.ListVMsRequest) (*tandemv1.ListVMsResponse, error) {
	ms, err := s.volumes().Catalog(ctx, false)
	if err != nil {
		return nil, err
	}
	names := slices.Sorted(func(yield func(string) bool) {
		for n := range ms.VMs {
			if !yield(n) {
				return
			}
		}
	})
	out := &tandemv1.ListVMsResponse{Vms: make([]*tandemv1.VMInfo, len(names))}
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out.Vms[i] = s.live(ctx, ms, ms.VMs[n], 2*time.Second)
		}()
	}
	wg.Wait()
	return out, nil
}

func (s *vmService) Show(ctx context.Context, req *tandemv1.VMRequest) (*tandemv1.VMInfo, error) {
	ms, err := s.volumes().Catalog(ctx, false)
	if err != nil {
		return nil, err
	}
	v, ok := ms.VMs[req.Name]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "no VM named %q", req.Name)
	}
	return s.live(ctx, ms, v, 3*time.Second), nil
}

func randomMAC() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("52:54:00:%02x:%02x:%02x", b[0], b[1], b[2])
}

func randomUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func (s *vmService) Create(ctx context.Context, req *tandemv1.CreateVMRequest) (*tandemv1.VMInfo, error) {
	switch {
	case !volume.ValidName(req.Name):
		return nil, status.Errorf(codes.InvalidArgument, "VM name %q: use 1-63 lowercase letters, digits, '-' or '_', starting with a letter or digit", req.Name)
	case req.Vcpus < 1 || req.Vcpus > 64:
		return nil, status.Errorf(codes.InvalidArgument, "vcpus %d: use 1 to 64", req.Vcpus)
	case req.MemoryMib < 64:
		return nil, status.Errorf(codes.InvalidArgument, "memory %d MiB: at least 64 MiB", req.MemoryMib)
	case len(req.Disks) == 0 && req.Kernel == "":
		return nil, status.Error(codes.InvalidArgument, "a VM needs a disk (--disk SIZE or --disk-volume NAME) or a kernel to boot")
	}
	ms, meta, err := s.fresh(ctx)
	if err != nil {
		return nil, err
	}
	if _, ok := ms.VMs[req.Name]; ok {
		return nil, status.Errorf(codes.AlreadyExists, "VM %q already exists", req.Name)
	}
	if req.Node != "" {
		if n, ok := ms.Nodes[req.Node]; !ok || n.State != consensus.NodeMember {
			return nil, status.Errorf(codes.InvalidArgument, "node %q is not a member of this cluster", req.Node)
		}
	}
	if err := checkMACs(ms, req.Nics); err != nil {
		return nil, err
	}
	warning, err := s.checkSpec(ctx, ms, req)
	if err != nil {
		return nil, err
	}
	rec := consensus.VMRecord{Name: req.Name, UUID: randomUUID(), Desired: consensus.VMStopped, Priority: int(req.Priority), AntiAffinity: req.AntiAffinity,
		Spec: consensus.VMSpecRecord{VCPUs: int(req.Vcpus), MemoryMiB: int(req.MemoryMib), Kernel: req.Kernel, Initrd: req.Initrd, Cmdline: req.Cmdline}}
	for _, n := range req.Nics {
		mac := n.Mac
		if mac == "" {
			mac = randomMAC()
		}
		rec.Spec.NICs = append(rec.Spec.NICs, consensus.VMNIC{Bridge: n.Bridge, MAC: strings.ToLower(mac), IPs: n.Ips})
	}
	// Existing volumes are checked before anything is created.
	for i, dk := range req.Disks {
		if dk.Volume == "" {
			continue
		}
		if _, ok := ms.Volumes[dk.Volume]; !ok {
			return nil, status.Errorf(codes.NotFound, "disk %d: no volume named %q", i, dk.Volume)
		}
		for _, o := range ms.VMs {
			if slices.Contains(o.Spec.Volumes, dk.Volume) {
				return nil, status.Errorf(codes.FailedPrecondition, "disk %d: volume %s is a disk of VM %s", i, dk.Volume, o.Name)
			}
		}
	}
	var created []string
	cleanup := func() {
		for _, v := range created {
			if _, err := s.volumes().Delete(context.WithoutCancel(ctx), &tandemv1.DeleteVolumeRequest{Name: v}); err != nil {
				s.d.log.Warn("cleanup of a VM disk failed", "volume", v, "err", err)
			}
		}
	}
	for i, dk := range req.Disks {
		if dk.Volume != "" {
			rec.Spec.Volumes = append(rec.Spec.Volumes, dk.Volume)
			continue
		}
		name := fmt.Sprintf("%s-disk%d", req.Name, i)
		vreq := &tandemv1.CreateVolumeRequest{Name: name, SizeBytes: dk.SizeBytes, Replicas: dk.Replicas}
		if req.Node != "" {
			nodes, err := s.diskNodes(ctx, ms, req.Node, dk)
			if err != nil {
				cleanup()
				return nil, err
			}
			vreq.Nodes = nodes
		}
		if _, err := s.volumes().Create(ctx, vreq); err != nil {
			cleanup()
			return nil, status.Errorf(status.Code(err), "disk %d: %s", i, grpcMessage(err))
		}
		created = append(created, name)
		rec.Spec.Volumes = append(rec.Spec.Volumes, name)
	}
	v, err := meta.CreateVM(ctx, rec)
	if err != nil {
		cleanup()
		return nil, metaError(err)
	}
	s.d.log.Info("VM created", "vm", v.Name, "volumes", v.Spec.Volumes)
	var info *tandemv1.VMInfo
	if req.Start {
		if info, err = s.Start(ctx, &tandemv1.VMRequest{Name: v.Name, Node: req.Node, Force: req.Force}); err != nil {
			return nil, err
		}
	} else {
		info = vmInfoOf(v)
	}
	if warning != "" {
		info.Warning = strings.TrimPrefix(info.Warning+"; "+warning, "; ")
	}
	return info, nil
}

// diskNodes places a new disk's replicas with node first (its primary).
func (s *vmService) diskNodes(ctx context.Context, ms *consensus.MetaState, node string, dk *tandemv1.VMDisk) ([]string, error) {
	replicas := int(dk.Replicas)
	if replicas == 0 {
		replicas = 2
	}
	auto, _, err := s.volumes().Place(ctx, ms, dk.SizeBytes, min(replicas+1, 3), nil)
	if err != nil {
		auto, _, err = s.volumes().Place(ctx, ms, dk.SizeBytes, replicas, nil)
		if err != nil {
			return nil, err
		}
	}
	nodes := []string{node}
	for _, n := range auto {
		if n != node && len(nodes) < replicas {
			nodes = append(nodes, n)
		}
	}
	return nodes, nil
}

// clusterView is what placement decides on (pc, built by placementCluster)
// and the volume infos the caller acts on (primaries).
type clusterView struct {
	ms   *consensus.MetaState
	vols map[string]*tandemv1.VolumeInfo
	pc   placement.Cluster
}

func (s *vmService) view(ctx context.Context, ms *consensus.MetaState) *clusterView {
	compute := map[string]*tandemv1.ComputeStatus{} // answering nodes only
	vols := map[string]*tandemv1.VolumeInfo{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for name, n := range ms.Nodes {
		if n.State != consensus.NodeMember || n.Role == "witness" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = s.onNode(ctx, ms, name, 3*time.Second, func(ctx context.Context, c tandemv1.PeerClient) error {
				st, err := c.ComputeInfo(ctx, &tandemv1.ComputeInfoRequest{})
				if err == nil && st.Available {
					mu.Lock()
					compute[name] = st
					mu.Unlock()
				}
				return err
			})
		}()
	}
	for name := range ms.Volumes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if info, err := s.volumes().Show(ctx, name, 3*time.Second); err == nil {
				mu.Lock()
				vols[name] = info
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return &clusterView{ms: ms, vols: vols, pc: placementCluster(ms, compute, vols)}
}

// placementCluster is placement's input: every node of ms (up when its
// compute answered available), every VM, and each answering volume's
// replica states.
func placementCluster(ms *consensus.MetaState, compute map[string]*tandemv1.ComputeStatus, vols map[string]*tandemv1.VolumeInfo) placement.Cluster {
	var pc placement.Cluster
	for _, name := range slices.Sorted(mapKeys(ms.Nodes)) {
		n := ms.Nodes[name]
		pn := placement.Node{Name: name, Member: n.State == consensus.NodeMember, Witness: n.Role == "witness", Maintenance: n.Maintenance}
		if c := compute[name]; c != nil && c.Available {
			pn.Up, pn.CapacityMiB = true, c.CapacityMib
		}
		pc.Nodes = append(pc.Nodes, pn)
	}
	for _, name := range slices.Sorted(mapKeys(ms.VMs)) {
		pc.VMs = append(pc.VMs, placementVM(ms.VMs[name]))
	}
	pc.Replicas = map[string]map[string]placement.Replica{}
	for vol, info := range vols {
		if info == nil {
			continue
		}
		states := map[string]placement.Replica{}
		for _, r := range info.Replicas {
			states[r.Node] = replicaOf(r.State)
		}
		pc.Replicas[vol] = states
	}
	return pc
}

func placementVM(v *consensus.VMRecord) placement.VM {
	return placement.VM{Name: v.Name, MemoryMiB: v.Spec.MemoryMiB, Priority: v.Priority, AntiAffinity: v.AntiAffinity,
		Volumes: slices.Clone(v.Spec.Volumes), Node: v.Node, Started: v.Desired == consensus.VMStarted,
		HAError: v.HAState == consensus.HAError, EvacuatedFrom: v.EvacuatedFrom}
}

func replicaOf(st tandemv1.ReplicaState) placement.Replica {
	switch st {
	case tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE:
		return placement.UpToDate
	case tandemv1.ReplicaState_REPLICA_STATE_OUTDATED:
		return placement.Outdated
	case tandemv1.ReplicaState_REPLICA_STATE_INCONSISTENT:
		return placement.Inconsistent
	case tandemv1.ReplicaState_REPLICA_STATE_SYNC_SOURCE:
		return placement.SyncSource
	case tandemv1.ReplicaState_REPLICA_STATE_SYNC_TARGET:
		return placement.SyncTarget
	}
	return placement.None
}

func stateName(st tandemv1.ReplicaState) string {
	if r := replicaOf(st); r != placement.None {
		return string(r)
	}
	return "no replica"
}

func (s *vmService) Start(ctx context.Context, req *tandemv1.VMRequest) (*tandemv1.VMInfo, error) {
	ms, meta, err := s.fresh(ctx)
	if err != nil {
		return nil, err
	}
	v, ok := ms.VMs[req.Name]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "no VM named %q", req.Name)
	}
	cv := s.view(ctx, ms)
	node := req.Node
	if v.Desired == consensus.VMStarted && v.Node != "" {
		info := s.live(ctx, ms, v, 3*time.Second)
		if info.State == "running" || info.State == "paused" {
			if node != "" && node != v.Node {
				return nil, status.Errorf(codes.FailedPrecondition, "VM %s runs on %s; use 'tandem vm migrate %s --to %s' to move it", v.Name, v.Node, v.Name, node)
			}
			return info, nil
		}
	}
	pv := placementVM(v)
	p := placement.Start(&cv.pc, pv, node)
	switch {
	case node != "" && p.Node == "":
		return nil, status.Errorf(codes.FailedPrecondition, "cannot start VM %s on %s: %s", v.Name, node, p.Rejected[node])
	case p.Node == "":
		return nil, status.Errorf(codes.FailedPrecondition, "no node can run VM %s: %s", v.Name, p.Why())
	}
	node = p.Node
	var warning string
	if st := placement.Admit(&cv.pc, pv, node); st != nil {
		err := st[0]
		if !req.Force {
			return nil, status.Errorf(codes.FailedPrecondition, "%v; use --force to start it anyway", err)
		}
		warning = "started despite N+1 admission control: " + err.Error()
		s.d.log.Warn("N+1 overridden", "vm", v.Name, "node", node, "reason", err)
	}
	// Co-location: node becomes primary of every volume first (I5 handover,
	// so the old primary stays UpToDate).
	for _, vol := range v.Spec.Volumes {
		info := cv.vols[vol]
		if info == nil {
			return nil, status.Errorf(codes.Unavailable, "volume %s does not answer", vol)
		}
		if info.Primary == node {
			continue
		}
		if err := s.onNode(ctx, ms, info.Primary, 30*time.Second, func(ctx context.Context, c tandemv1.PeerClient) error {
			_, err := c.VolumeHandover(ctx, &tandemv1.PromoteVolumeRequest{Name: vol, Node: node})
			return err
		}); err != nil {
			return nil, status.Errorf(status.Code(err), "make %s primary of %s: %s (if %s is down, promote with 'tandem volume promote %s %s')", node, vol, grpcMessage(err), info.Primary, vol, node)
		}
	}
	var out *tandemv1.VMInfo
	if err := s.onNode(ctx, ms, node, 60*time.Second, func(ctx context.Context, c tandemv1.PeerClient) error {
		var err error
		out, err = c.VMStart(ctx, &tandemv1.PeerVMRequest{Vm: vmInfoOf(v)})
		return err
	}); err != nil {
		return nil, err
	}
	nv, err := meta.UpdateVM(ctx, consensus.VMUpdate{Name: v.Name, Desired: consensus.VMStarted, Node: node, Reason: "start"})
	if err != nil {
		return nil, metaError(err)
	}
	if nv.HAState != "" && nv.HAState != consensus.HAStarted {
		// An operator's start ends a failed or stuck recovery.
		if h, err := meta.SetVMHA(ctx, consensus.VMHACmd{Name: v.Name, State: consensus.HAStarted, Reason: "started by an operator on " + node}); err == nil {
			nv = h
		}
	}
	info := vmInfoOf(nv)
	info.State, info.ConsoleLog, info.Warning = out.State, out.ConsoleLog, warning
	return info, nil
}

func (s *vmService) Stop(ctx context.Context, req *tandemv1.VMRequest) (*tandemv1.VMInfo, error) {
	ms, meta, err := s.fresh(ctx)
	if err != nil {
		return nil, err
	}
	v, ok := ms.VMs[req.Name]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "no VM named %q", req.Name)
	}
	// Desired first, so HA does not restart a VM being stopped.
	nv, err := meta.UpdateVM(ctx, consensus.VMUpdate{Name: v.Name, Desired: consensus.VMStopped, Reason: "stop"})
	if err != nil {
		return nil, metaError(err)
	}
	info := vmInfoOf(nv)
	if v.Node == "" {
		return info, nil
	}
	timeout := time.Duration(req.TimeoutSeconds)*time.Second + 30*time.Second
	if err := s.onNode(ctx, ms, v.Node, timeout, func(ctx context.Context, c tandemv1.PeerClient) error {
		got, err := c.VMStop(ctx, &tandemv1.PeerVMRequest{Vm: info, TimeoutSeconds: req.TimeoutSeconds, Force: req.Force})
		if err == nil {
			info.State = got.State
		}
		return err
	}); err != nil {
		return nil, err
	}
	return info, nil
}

func (s *vmService) Delete(ctx context.Context, req *tandemv1.VMRequest) (*tandemv1.DeleteVMResponse, error) {
	ms, meta, err := s.fresh(ctx)
	if err != nil {
		return nil, err
	}
	v, ok := ms.VMs[req.Name]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "no VM named %q", req.Name)
	}
	if v.Node != "" {
		if err := s.onNode(ctx, ms, v.Node, 30*time.Second, func(ctx context.Context, c tandemv1.PeerClient) error {
			_, err := c.VMUndefine(ctx, &tandemv1.PeerVMRequest{Vm: vmInfoOf(v), Force: req.Force})
			return err
		}); err != nil {
			return nil, err
		}
	}
	if err := meta.DeleteVM(ctx, v.Name); err != nil {
		return nil, metaError(err)
	}
	s.d.log.Info("VM deleted; its volumes are kept", "vm", v.Name, "volumes", v.Spec.Volumes)
	return &tandemv1.DeleteVMResponse{}, nil
}

func (s *vmService) Console(req *tandemv1.ConsoleRequest, stream tandemv1.VM_ConsoleServer) error {
	ctx := stream.Context()
	ms, err := s.volumes().Catalog(ctx, false)
	if err != nil {
		return err
	}
	v, ok := ms.VMs[req.Name]
	if !ok {
		return status.Errorf(codes.NotFound, "no VM named %q", req.Name)
	}
	if v.Node == "" {
		return status.Errorf(codes.FailedPrecondition, "VM %s has not run anywhere yet", v.Name)
	}
	n := ms.Nodes[v.Node]
	if n == nil {
		return status.Errorf(codes.NotFound, "node %s is not in the cluster", v.Node)
	}
	c, err := s.d.peerClient(n.BackendAddr)
	if err != nil {
		return err
	}
	in, err := c.VMConsole(ctx, req)
	if err != nil {
		return err
	}
	for {
		chunk, err := in.Recv()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if err := stream.Send(chunk); err != nil {
			return err
		}
	}
}
