package vmm

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tandemhci/tandem/compute"
	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/apierr"
	"github.com/tandemhci/tandem/internal/apinames"
	"github.com/tandemhci/tandem/internal/placement"
	"github.com/tandemhci/tandem/internal/settings"
	"github.com/tandemhci/tandem/internal/validate"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// The cluster side of the VM API: decisions (placement, N+1, the
// co-location invariant) are made here on fresh metadata; the node that
// runs a VM does the libvirt work through its peer API.

// VMInfoOf is a VM record as the API shows it, stopped until a node says
// otherwise.
func VMInfoOf(v *consensus.VMRecord) *tandemv1.VMInfo {
	out := &tandemv1.VMInfo{Name: v.Name, Uuid: v.UUID, Vcpus: uint32(v.Spec.VCPUs), MemoryMib: uint32(v.Spec.MemoryMiB),
		Volumes: slices.Clone(v.Spec.Volumes), Desired: v.Desired, Node: v.Node, Priority: int32(v.Priority),
		AntiAffinity: v.AntiAffinity, Kernel: v.Spec.Kernel, Initrd: v.Spec.Initrd, Cmdline: v.Spec.Cmdline,
		Created: timestamppb.New(v.Created), State: "stopped",
		Cdrom: v.Spec.CDROM, HasCdrom: v.Spec.HasCDROM, Boot: slices.Clone(v.Spec.Boot), Firmware: v.Spec.Firmware,
		CloudInit: v.Spec.CloudInit != "", Machine: v.Spec.Machine, CpuModel: v.Spec.CPUModel}
	if out.Machine == "" {
		out.Machine = consensus.VMMachinePC // recorded before q35 was the default
	}
	if v.NVRAM != nil {
		out.NvramSha256 = v.NVRAM.SHA256
	}
	for _, n := range v.Spec.NICs {
		out.Nics = append(out.Nics, &tandemv1.VMNic{Bridge: n.Bridge, Mac: n.MAC, Ips: slices.Clone(n.IPs)})
	}
	return out
}

// optTimestamp is nil for the zero time, so JSON shows no 0001-01-01.
func optTimestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// live adds the state libvirt reports on the VM's node.
func (m *Manager) live(ctx context.Context, ms *consensus.MetaState, v *consensus.VMRecord, timeout time.Duration) *tandemv1.VMInfo {
	info := VMInfoOf(v)
	info.HaState = v.EffectiveHAState()
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
	err := m.onNode(ctx, ms, v.Node, timeout, func(ctx context.Context, c tandemv1.PeerClient) error {
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

// List is every VM with its live state, sorted by name.
func (m *Manager) List(ctx context.Context) (*tandemv1.ListVMsResponse, error) {
	ms, err := m.vols.Catalog(ctx, false)
	if err != nil {
		return nil, err
	}
	names := slices.Sorted(maps.Keys(ms.VMs))
	out := &tandemv1.ListVMsResponse{Vms: make([]*tandemv1.VMInfo, len(names))}
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Go(func() {
			out.Vms[i] = m.live(ctx, ms, ms.VMs[n], 2*time.Second)
		})
	}
	wg.Wait()
	return out, nil
}

// Show is one VM with its live state.
func (m *Manager) Show(ctx context.Context, name string) (*tandemv1.VMInfo, error) {
	ms, err := m.vols.Catalog(ctx, false)
	if err != nil {
		return nil, err
	}
	v, err := vmOf(ms, name)
	if err != nil {
		return nil, err
	}
	info := m.live(ctx, ms, v, 3*time.Second)
	m.guestAgentInfo(ctx, ms, v, info)
	if info.CpuModel == "" {
		info.CpuModel, info.CpuModelDefault = clusterCPUModel(ms), true
	}
	return info, nil
}

// clusterCPUModel is the cluster's CPU model (vm.cpu_model), the model of
// VMs without one of their own; a stored value that is not valid reads as
// the default.
func clusterCPUModel(ms *consensus.MetaState) string {
	model, _ := settings.String(ms.Config, settings.KeyVMCPUModel)
	return model
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

// Create records a VM, creating its new disks first; every check that can
// refuse it runs before the first volume is created, and the volumes it
// created are deleted again when it fails later.
func (m *Manager) Create(ctx context.Context, req *tandemv1.CreateVMRequest) (*tandemv1.VMInfo, error) {
	if err := checkCreate(req); err != nil {
		return nil, err
	}
	switch {
	case req.Vcpus < 1 || req.Vcpus > 64:
		return nil, status.Errorf(codes.InvalidArgument, "vcpus %d: use 1 to 64", req.Vcpus)
	case req.MemoryMib < 64:
		return nil, status.Errorf(codes.InvalidArgument, "memory %d MiB: at least 64 MiB", req.MemoryMib)
	case len(req.Disks) == 0 && req.Kernel == "" && req.Cdrom == "":
		return nil, status.Error(codes.InvalidArgument, "a VM needs a disk (--disk SIZE or --disk-volume NAME), a CD-ROM (--cdrom IMAGE) or a kernel to boot")
	}
	if err := checkBoot(req); err != nil {
		return nil, err
	}
	switch req.Firmware {
	case "", compute.FirmwareBIOS, compute.FirmwareUEFI:
	default:
		return nil, status.Errorf(codes.InvalidArgument, "--firmware %q: use bios or uefi", req.Firmware)
	}
	if req.Firmware == compute.FirmwareUEFI && req.Kernel != "" {
		return nil, status.Error(codes.InvalidArgument, "--firmware uefi and --kernel: a kernel boots directly, without firmware")
	}
	switch req.Machine {
	case "":
		req.Machine = consensus.VMMachineQ35
	case consensus.VMMachineQ35, consensus.VMMachinePC:
	default:
		return nil, status.Errorf(codes.InvalidArgument, "--machine %q: use q35 (the default) or pc (i440fx)", req.Machine)
	}
	model, err := cpuModelArg(req.CpuModel)
	if err != nil {
		return nil, err
	}
	req.CpuModel = model
	ms, meta, err := m.fresh(ctx)
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
	if req.Cdrom != "" {
		if _, ok := ms.Images[req.Cdrom]; !ok {
			return nil, status.Errorf(codes.NotFound, "--cdrom: no image named %s (tandem image list shows them; tandem image upload adds one)", req.Cdrom)
		}
	}
	warning, err := m.checkSpec(ctx, ms, req)
	if err != nil {
		return nil, err
	}
	rec := consensus.VMRecord{Name: req.Name, UUID: randomUUID(), Desired: consensus.VMStopped, Priority: int(req.Priority), AntiAffinity: req.AntiAffinity,
		Spec: consensus.VMSpecRecord{VCPUs: int(req.Vcpus), MemoryMiB: int(req.MemoryMib), Kernel: req.Kernel, Initrd: req.Initrd, Cmdline: req.Cmdline,
			HasCDROM: req.Cdrom != "", CDROM: req.Cdrom, Boot: slices.Clone(req.Boot), Firmware: req.Firmware,
			Machine: req.Machine, CPUModel: req.CpuModel}}
	if rec.Spec.CloudInit, err = m.sealSeed(req.CloudInit, rec.UUID, rec.Name); err != nil {
		return nil, err
	}
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
			if _, err := m.vols.Delete(context.WithoutCancel(ctx), &tandemv1.DeleteVolumeRequest{Name: v}); err != nil {
				m.st.Log.Warn("cleanup of a VM disk failed", "volume", v, "err", err)
			}
		}
	}
	for i, dk := range req.Disks {
		if dk.Volume != "" {
			rec.Spec.Volumes = append(rec.Spec.Volumes, dk.Volume)
			continue
		}
		name := fmt.Sprintf("%s-disk%d", req.Name, i)
		vreq := &tandemv1.CreateVolumeRequest{Name: name, SizeBytes: dk.SizeBytes, Replicas: dk.Replicas, Backend: dk.Backend, Storage: dk.Storage, Pool: dk.Pool}
		if dk.Backend == consensus.BackendRBD {
			// Placement ignores where an RBD image lives; the VM's node
			// (if given) owns it from the start.
			if req.Node != "" {
				vreq.Nodes = []string{req.Node}
			}
		} else if req.Node != "" {
			nodes, err := m.diskNodes(ctx, ms, req.Node, dk)
			if err != nil {
				cleanup()
				return nil, err
			}
			vreq.Nodes = nodes
		}
		if _, err := m.vols.Create(ctx, vreq); err != nil {
			cleanup()
			return nil, status.Errorf(status.Code(err), "disk %d: %s", i, grpcMessage(err))
		}
		created = append(created, name)
		rec.Spec.Volumes = append(rec.Spec.Volumes, name)
	}
	v, err := meta.CreateVM(ctx, rec)
	if err != nil {
		cleanup()
		return nil, apierr.FromMeta(err)
	}
	m.st.Log.Info("VM created", "vm", v.Name, "volumes", v.Spec.Volumes)
	var info *tandemv1.VMInfo
	if req.Start {
		if info, err = m.Start(ctx, &tandemv1.VMRequest{Name: v.Name, Node: req.Node, Force: req.Force}); err != nil {
			return nil, err
		}
	} else {
		info = VMInfoOf(v)
	}
	if warning != "" {
		info.Warning = strings.TrimPrefix(info.Warning+"; "+warning, "; ")
	}
	return info, nil
}

// cpuModelArg is a VM's own CPU model as given to create or set: "" for
// "" or "default" (the cluster's), else a name of libvirt's form (whether
// the nodes know it is checkSpec's question).
func cpuModelArg(s string) (string, error) {
	if s == "" || s == "default" {
		return "", nil
	}
	if !consensus.ValidCPUModelName(s) {
		return "", status.Errorf(codes.InvalidArgument, "--cpu-model %q: a libvirt CPU model name (1 to 64 of A-Z a-z 0-9 _ . -, such as qemu64 or Nehalem), or default", s)
	}
	return s, nil
}

// checkBoot checks a create's boot order: each of disk, cdrom and
// network at most once, and only devices the VM has.
func checkBoot(req *tandemv1.CreateVMRequest) error {
	seen := map[string]bool{}
	for _, b := range req.Boot {
		var missing string
		switch b {
		case compute.BootDisk:
			if len(req.Disks) == 0 {
				missing = "--boot disk: the VM has no disk"
			} else if req.Kernel != "" {
				missing = "--boot disk: a VM with --kernel boots that kernel"
			}
		case compute.BootCDROM:
			if req.Cdrom == "" {
				missing = "--boot cdrom: the VM has no CD-ROM (--cdrom IMAGE)"
			}
		case compute.BootNetwork:
			if len(req.Nics) == 0 {
				missing = "--boot network: the VM has no NIC (--nic)"
			}
		default:
			return status.Errorf(codes.InvalidArgument, "--boot %q: use disk, cdrom and network, comma-separated, in boot order", b)
		}
		if missing != "" {
			return status.Error(codes.InvalidArgument, missing)
		}
		if seen[b] {
			return status.Errorf(codes.InvalidArgument, "--boot lists %s twice", b)
		}
		seen[b] = true
	}
	return nil
}

// checkCreate applies the rules of internal/validate to what Create
// builds from the request (the API checked the request's own fields):
// every new disk's volume name and size, before the first one is created.
func checkCreate(req *tandemv1.CreateVMRequest) error {
	bad := func(err error) error { return status.Error(codes.InvalidArgument, validate.Message(err)) }
	if err := validate.VMName(req.Name); err != nil {
		return bad(err)
	}
	for what, p := range map[string]string{"kernel": req.Kernel, "initrd": req.Initrd} {
		if p != "" {
			if err := validate.HostPath(what, p); err != nil {
				return bad(err)
			}
		}
	}
	if req.Initrd != "" && req.Kernel == "" {
		return status.Error(codes.InvalidArgument, "--initrd needs --kernel")
	}
	for i, dk := range req.Disks {
		if dk.Volume != "" {
			if err := validate.VolumeName(dk.Volume); err != nil {
				return status.Errorf(codes.InvalidArgument, "disk %d: %s", i, validate.Message(err))
			}
			continue
		}
		if err := validate.VolumeName(fmt.Sprintf("%s-disk%d", req.Name, i)); err != nil {
			return status.Errorf(codes.InvalidArgument, "disk %d: its volume would be named %s-disk%d, which is too long: give the VM a name of at most %d characters", i, req.Name, i, validate.MaxNameLen-len(fmt.Sprintf("-disk%d", i)))
		}
		if err := validate.VolumeSize(dk.SizeBytes); err != nil {
			return status.Errorf(codes.InvalidArgument, "disk %d: %s", i, validate.Message(err))
		}
		switch dk.Backend {
		case consensus.BackendRBD:
			if dk.Replicas != 0 {
				return status.Errorf(codes.InvalidArgument, "disk %d: replicas does not apply to an RBD disk: Ceph's pool replicates it", i)
			}
		case "", consensus.BackendReplicated:
			if dk.Storage != "" || dk.Pool != "" {
				return status.Errorf(codes.InvalidArgument, "disk %d: storage and pool apply to RBD disks only (backend=rbd)", i)
			}
		default:
			return status.Errorf(codes.InvalidArgument, "disk %d: backend %s: use %q (the default) or %q", i, validate.Show(dk.Backend), consensus.BackendReplicated, consensus.BackendRBD)
		}
	}
	return nil
}

// diskNodes places a new disk's replicas with node first (its primary).
func (m *Manager) diskNodes(ctx context.Context, ms *consensus.MetaState, node string, dk *tandemv1.VMDisk) ([]string, error) {
	replicas := int(dk.Replicas)
	if replicas == 0 {
		replicas = 2
	}
	auto, _, err := m.vols.Place(ctx, ms, dk.SizeBytes, min(replicas+1, 3), nil)
	if err != nil {
		auto, _, err = m.vols.Place(ctx, ms, dk.SizeBytes, replicas, nil)
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

// ClusterView is what placement decides on and the volume infos the
// caller acts on (their primaries).
type ClusterView struct {
	Meta *consensus.MetaState
	// Volumes holds the answering volumes that are disks of a VM only.
	Volumes   map[string]*tandemv1.VolumeInfo
	Placement placement.Cluster
}

// View asks every data member for its compute and every VM's volumes for
// their replicas, in parallel, and builds placement's input from the
// answers. The nodes in dead are not asked (and so count as down): a node
// known lost would only make every ask wait out its reconnect. Volumes no
// VM uses are not asked: placement only looks at a VM's own disks, and at
// 1000 volumes asking all of them made each of a mass failover's VM
// restarts wait for a thousand lookups (issue 17).
func (m *Manager) View(ctx context.Context, ms *consensus.MetaState, dead ...string) *ClusterView {
	var compute map[string]*tandemv1.ComputeStatus // available nodes only
	vols := map[string]*tandemv1.VolumeInfo{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	wg.Go(func() {
		members := slices.DeleteFunc(dataMembers(ms, ""), func(n string) bool { return slices.Contains(dead, n) })
		compute = m.askCompute(ctx, ms, members, &tandemv1.ComputeInfoRequest{})
		maps.DeleteFunc(compute, func(_ string, st *tandemv1.ComputeStatus) bool { return !st.Available })
	})
	for name := range vmDisks(ms) {
		wg.Go(func() {
			if info, err := m.vols.Show(ctx, name, 3*time.Second, dead...); err == nil {
				mu.Lock()
				vols[name] = info
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return &ClusterView{Meta: ms, Volumes: vols, Placement: PlacementCluster(ms, compute, vols)}
}

// vmDisks is the set of volumes that are a disk of some VM of ms.
func vmDisks(ms *consensus.MetaState) map[string]bool {
	out := map[string]bool{}
	for _, v := range ms.VMs {
		for _, vol := range v.Spec.Volumes {
			if _, ok := ms.Volumes[vol]; ok {
				out[vol] = true
			}
		}
	}
	return out
}

// dataMembers are the members of ms that can run VMs (not witnesses):
// only the one named only, when only is not "".
func dataMembers(ms *consensus.MetaState, only string) []string {
	var out []string
	for name, n := range ms.Nodes {
		if n.State == consensus.NodeMember && n.Role != "witness" && (only == "" || name == only) {
			out = append(out, name)
		}
	}
	return out
}

// askCompute asks nodes, in parallel, for their compute status; the map
// holds the answers of those that answered within 3 s.
func (m *Manager) askCompute(ctx context.Context, ms *consensus.MetaState, nodes []string, ask *tandemv1.ComputeInfoRequest) map[string]*tandemv1.ComputeStatus {
	got := map[string]*tandemv1.ComputeStatus{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, name := range nodes {
		wg.Go(func() {
			_ = m.onNode(ctx, ms, name, 3*time.Second, func(ctx context.Context, c tandemv1.PeerClient) error {
				st, err := c.ComputeInfo(ctx, ask)
				if err == nil {
					mu.Lock()
					got[name] = st
					mu.Unlock()
				}
				return err
			})
		})
	}
	wg.Wait()
	return got
}

// PlacementCluster is placement's input: every node of ms (up when its
// compute answered available), every VM, and each answering volume's
// replica states.
func PlacementCluster(ms *consensus.MetaState, compute map[string]*tandemv1.ComputeStatus, vols map[string]*tandemv1.VolumeInfo) placement.Cluster {
	var pc placement.Cluster
	for _, name := range slices.Sorted(maps.Keys(ms.Nodes)) {
		n := ms.Nodes[name]
		pn := placement.Node{Name: name, Member: n.State == consensus.NodeMember, Witness: n.Role == "witness", Maintenance: n.Maintenance}
		if c := compute[name]; c != nil && c.Available {
			pn.Up, pn.CapacityMiB = true, c.CapacityMib
		}
		pc.Nodes = append(pc.Nodes, pn)
	}
	for _, name := range slices.Sorted(maps.Keys(ms.VMs)) {
		pc.VMs = append(pc.VMs, PlacementVM(ms.VMs[name]))
	}
	pc.Replicas = map[string]map[string]placement.Replica{}
	for vol, info := range vols {
		if info == nil {
			continue
		}
		states := map[string]placement.Replica{}
		for _, r := range info.Replicas {
			states[r.Node] = ReplicaOf(r.State)
		}
		if e, ok := ms.Volumes[vol]; ok && e.IsRBD() {
			// Ceph holds an RBD disk: every data node reaches it alike.
			for _, n := range dataMembers(ms, "") {
				states[n] = placement.UpToDate
			}
		}
		pc.Replicas[vol] = states
	}
	return pc
}

// PlacementVM is a VM record as placement sees it.
func PlacementVM(v *consensus.VMRecord) placement.VM {
	return placement.VM{Name: v.Name, MemoryMiB: v.Spec.MemoryMiB, Priority: v.Priority, AntiAffinity: v.AntiAffinity,
		Volumes: slices.Clone(v.Spec.Volumes), Node: v.Node, Started: v.Desired == consensus.VMStarted,
		HAError: v.HAState == consensus.HAError, EvacuatedFrom: v.EvacuatedFrom}
}

// ReplicaOf is a replica state as placement sees it.
func ReplicaOf(st tandemv1.ReplicaState) placement.Replica {
	name, _ := apinames.ReplicaState(st) // unknown: "", placement.None
	return placement.Replica(name)
}

// Start starts a VM where placement (or req.Node) says, after N+1
// admission control, making that node primary of its volumes first.
func (m *Manager) Start(ctx context.Context, req *tandemv1.VMRequest) (*tandemv1.VMInfo, error) {
	ms, meta, v, err := m.freshVM(ctx, req.Name)
	if err != nil {
		return nil, err
	}
	cv := m.View(ctx, ms)
	node := req.Node
	if v.Desired == consensus.VMStarted && v.Node != "" {
		info := m.live(ctx, ms, v, 3*time.Second)
		if info.State == "running" || info.State == "paused" {
			if node != "" && node != v.Node {
				return nil, status.Errorf(codes.FailedPrecondition, "VM %s runs on %s; use 'tandem vm migrate %s --to %s' to move it", v.Name, v.Node, v.Name, node)
			}
			return info, nil
		}
	}
	pv := PlacementVM(v)
	p := placement.Start(&cv.Placement, pv, node)
	switch {
	case node != "" && p.Node == "":
		return nil, status.Errorf(codes.FailedPrecondition, "cannot start VM %s on %s: %s", v.Name, node, p.Rejected[node])
	case p.Node == "":
		return nil, status.Errorf(codes.FailedPrecondition, "no node can run VM %s: %s", v.Name, p.Why())
	}
	node = p.Node
	var warning string
	if st := placement.Admit(&cv.Placement, pv, node); st != nil {
		err := st[0]
		if !req.Force {
			return nil, status.Errorf(codes.FailedPrecondition, "%v; use --force to start it anyway", err)
		}
		warning = "started despite N+1 admission control: " + err.Error()
		m.st.Log.Warn("N+1 overridden", "vm", v.Name, "node", node, "reason", err)
	}
	// Co-location: node becomes primary of every volume first (I5 handover,
	// so the old primary stays UpToDate).
	for _, vol := range v.Spec.Volumes {
		info := cv.Volumes[vol]
		if info == nil {
			return nil, status.Errorf(codes.Unavailable, "volume %s does not answer", vol)
		}
		if info.Primary == node {
			continue
		}
		if isRBD(ms, vol) {
			r, err := m.rbd()
			if err == nil {
				err = r.MoveRBDOwner(ctx, vol, node, "start of VM "+v.Name)
			}
			if err != nil {
				return nil, err
			}
			continue
		}
		if err := m.onNode(ctx, ms, info.Primary, 30*time.Second, func(ctx context.Context, c tandemv1.PeerClient) error {
			_, err := c.VolumeHandover(ctx, &tandemv1.PromoteVolumeRequest{Name: vol, Node: node})
			return err
		}); err != nil {
			return nil, status.Errorf(status.Code(err), "make %s primary of %s: %s (if %s is down, promote with 'tandem volume promote %s %s')", node, vol, grpcMessage(err), info.Primary, vol, node)
		}
	}
	var out *tandemv1.VMInfo
	if err := m.onNode(ctx, ms, node, 60*time.Second, func(ctx context.Context, c tandemv1.PeerClient) error {
		var err error
		out, err = c.VMStart(ctx, &tandemv1.PeerVMRequest{Vm: VMInfoOf(v)})
		return err
	}); err != nil {
		return nil, err
	}
	nv, err := meta.UpdateVM(ctx, consensus.VMUpdate{Name: v.Name, Desired: consensus.VMStarted, Node: node, Reason: "start"})
	if err != nil {
		return nil, apierr.FromMeta(err)
	}
	if nv.HAState != "" && nv.HAState != consensus.HAStarted {
		// An operator's start ends a failed or stuck recovery.
		if h, err := meta.SetVMHA(ctx, consensus.VMHACmd{Name: v.Name, State: consensus.HAStarted, Reason: "started by an operator on " + node}); err == nil {
			nv = h
		}
	}
	info := VMInfoOf(nv)
	info.State, info.ConsoleLog, info.Warning = out.State, out.ConsoleLog, warning
	return info, nil
}

// Stop records the VM as stopped, then stops it on its node.
func (m *Manager) Stop(ctx context.Context, req *tandemv1.VMRequest) (*tandemv1.VMInfo, error) {
	ms, meta, v, err := m.freshVM(ctx, req.Name)
	if err != nil {
		return nil, err
	}
	// Desired first, so HA does not restart a VM being stopped.
	nv, err := meta.UpdateVM(ctx, consensus.VMUpdate{Name: v.Name, Desired: consensus.VMStopped, Reason: "stop"})
	if err != nil {
		return nil, apierr.FromMeta(err)
	}
	info := VMInfoOf(nv)
	if v.Node == "" {
		return info, nil
	}
	timeout := time.Duration(req.TimeoutSeconds)*time.Second + 30*time.Second
	if err := m.onNode(ctx, ms, v.Node, timeout, func(ctx context.Context, c tandemv1.PeerClient) error {
		got, err := c.VMStop(ctx, &tandemv1.PeerVMRequest{Vm: info, TimeoutSeconds: req.TimeoutSeconds, Force: req.Force})
		if err == nil {
			info.State, info.StoppedBy = got.State, got.StoppedBy
		}
		return err
	}); err != nil {
		return nil, err
	}
	return info, nil
}

// Delete undefines the VM on its node and forgets it; its volumes stay.
func (m *Manager) Delete(ctx context.Context, req *tandemv1.VMRequest) error {
	ms, meta, v, err := m.freshVM(ctx, req.Name)
	if err != nil {
		return err
	}
	if v.Node != "" {
		if err := m.onNode(ctx, ms, v.Node, 30*time.Second, func(ctx context.Context, c tandemv1.PeerClient) error {
			_, err := c.VMUndefine(ctx, &tandemv1.PeerVMRequest{Vm: VMInfoOf(v), Force: req.Force})
			return err
		}); err != nil {
			return err
		}
	}
	if err := meta.DeleteVM(ctx, v.Name); err != nil {
		return apierr.FromMeta(err)
	}
	m.st.Log.Info("VM deleted; its volumes are kept", "vm", v.Name, "volumes", v.Spec.Volumes)
	return nil
}

// Console relays the console of a VM from the node it runs on.
func (m *Manager) Console(ctx context.Context, req *tandemv1.ConsoleRequest, send func(*tandemv1.ConsoleChunk) error) error {
	ms, err := m.vols.Catalog(ctx, false)
	if err != nil {
		return err
	}
	v, err := vmOf(ms, req.Name)
	if err != nil {
		return err
	}
	if v.Node == "" {
		return status.Errorf(codes.FailedPrecondition, "VM %s has not run anywhere yet", v.Name)
	}
	c, err := m.peerAt(ms, v.Node)
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
		if err := send(chunk); err != nil {
			return err
		}
	}
}
