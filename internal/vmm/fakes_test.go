package vmm

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/tandemhci/tandem/compute"
	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/config"
	"github.com/tandemhci/tandem/internal/state"
	"github.com/tandemhci/tandem/internal/state/statetest"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// journal is the world's statetest.Journal; list and count keep the names
// the other tests of the package call it by.
type journal struct{ statetest.Journal }

func (j *journal) list() []string          { return j.List() }
func (j *journal) count(prefix string) int { return j.Count(prefix) }

// fakeVolumes is the volume subsystem: the catalog is the world's state;
// creates fail for the names in failCreate; local holds this node's
// replicas.
type fakeVolumes struct {
	w          *world
	failCreate map[string]error
	place      []string // what Place answers
	placeErr   map[int]error
	show       map[string]*tandemv1.VolumeInfo
	local      map[string]*fakeLocal
	handover   func(n int) error
	handovers  int
	takeover   map[string]error
}

func (f *fakeVolumes) Catalog(_ context.Context, fresh bool) (*consensus.MetaState, error) {
	if fresh && !f.w.quorate {
		return nil, status.Error(codes.FailedPrecondition, "no quorum")
	}
	if fresh && f.w.freshMS != nil {
		return f.w.freshMS, nil
	}
	return f.w.ms, nil
}

func (f *fakeVolumes) Create(_ context.Context, req *tandemv1.CreateVolumeRequest) (*tandemv1.VolumeInfo, error) {
	if req.Backend != "" {
		f.w.j.Add("volume create %s %v backend=%s storage=%s pool=%s replicas=%d", req.Name, req.Nodes, req.Backend, req.Storage, req.Pool, req.Replicas)
	} else {
		f.w.j.Add("volume create %s %v", req.Name, req.Nodes)
	}
	if err := f.failCreate[req.Name]; err != nil {
		return nil, err
	}
	f.w.ms.Volumes[req.Name] = &consensus.VolumeEntry{Name: req.Name, Size: req.SizeBytes}
	return &tandemv1.VolumeInfo{Name: req.Name}, nil
}

func (f *fakeVolumes) Delete(_ context.Context, req *tandemv1.DeleteVolumeRequest) (*tandemv1.DeleteVolumeResponse, error) {
	f.w.j.Add("volume delete %s", req.Name)
	delete(f.w.ms.Volumes, req.Name)
	return &tandemv1.DeleteVolumeResponse{}, nil
}

func (f *fakeVolumes) Place(_ context.Context, _ *consensus.MetaState, _ int64, replicas int, _ []string) ([]string, string, error) {
	if err := f.placeErr[replicas]; err != nil {
		return nil, "", err
	}
	return f.place[:min(replicas, len(f.place))], "", nil
}

func (f *fakeVolumes) Show(_ context.Context, name string, _ time.Duration, skip ...string) (*tandemv1.VolumeInfo, error) {
	f.w.note("show "+name+" skipping", skip...)
	if v, ok := f.show[name]; ok {
		return v, nil
	}
	return nil, status.Error(codes.Unavailable, "no replica answered")
}

func (f *fakeVolumes) NBDSocket() string { return "/data/nbd.sock" }

func (f *fakeVolumes) Holds(name string) bool { return f.local[name] != nil }

func (f *fakeVolumes) ServingPrimary(name string) bool {
	l := f.local[name]
	return l != nil && l.ServingPrimary()
}

func (f *fakeVolumes) Reconcile(name string) {
	if l := f.local[name]; l != nil {
		l.Reconcile()
	}
}

func (f *fakeVolumes) Record(name string) *consensus.VolumeRecord {
	if l := f.local[name]; l != nil {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.rec
	}
	return nil
}

func (f *fakeVolumes) AllowDual(context.Context, string, string) error { return nil }

func (f *fakeVolumes) EndDual(_ context.Context, name, _ string) error {
	f.w.j.Add("volume end-dual %s", name)
	return nil
}

// Takeover answers with takeover's verdict on name, and makes the local
// replica serve as primary when it is nil.
func (f *fakeVolumes) Takeover(_ context.Context, name string) error {
	f.w.j.Add("volume takeover %s", name)
	if err := f.takeover[name]; err != nil {
		return err
	}
	if l := f.local[name]; l != nil {
		l.mu.Lock()
		l.serving = true
		l.mu.Unlock()
	}
	return nil
}

// Handover answers with handover's verdict on its nth call (from 1), nil
// without one.
func (f *fakeVolumes) Handover(_ context.Context, name, target string) error {
	f.handovers++
	f.w.j.Add("volume handover %s %s", name, target)
	if f.handover != nil {
		return f.handover(f.handovers)
	}
	return nil
}

// fakeLocal is a local replica; it becomes primary after becomeAfter
// reconciles (never when negative).
type fakeLocal struct {
	mu          sync.Mutex
	serving     bool
	becomeAfter int
	rec         *consensus.VolumeRecord
}

func (l *fakeLocal) ServingPrimary() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.serving
}

func (l *fakeLocal) Reconcile() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.becomeAfter < 0 {
		return
	}
	if l.becomeAfter--; l.becomeAfter <= 0 {
		l.serving = true
	}
}

// fakeMeta is the metadata client over the world's state.
type fakeMeta struct {
	w         *world
	createErr error
	// updateErrs are the answers of the next UpdateVMs, one each.
	updateErrs []error
	// onLocal, when set, runs at every LocalState (in the caller's
	// goroutine: a test changes the world through it without a race).
	onLocal func()
}

func (f *fakeMeta) LocalState() (*consensus.MetaState, error) {
	if f.onLocal != nil {
		f.onLocal()
	}
	return f.w.ms, nil
}

func (f *fakeMeta) CreateVM(_ context.Context, v consensus.VMRecord) (*consensus.VMRecord, error) {
	f.w.j.Add("meta create-vm %s %v", v.Name, v.Spec.Volumes)
	if f.createErr != nil {
		return nil, f.createErr
	}
	f.w.ms.VMs[v.Name] = &v
	return &v, nil
}

func (f *fakeMeta) UpdateVM(_ context.Context, u consensus.VMUpdate) (*consensus.VMRecord, error) {
	f.w.j.Add("meta update-vm %s desired=%s node=%s", u.Name, u.Desired, u.Node)
	if len(f.updateErrs) > 0 {
		err := f.updateErrs[0]
		f.updateErrs = f.updateErrs[1:]
		return nil, err
	}
	v, ok := f.w.ms.VMs[u.Name]
	if !ok {
		return nil, consensus.ErrNoSuchVM
	}
	if u.IfNode != "" && v.Node != u.IfNode && v.Node != u.Node {
		return nil, fmt.Errorf("%w: VM %s is on %s, not %s", consensus.ErrBadCommand, u.Name, v.Node, u.IfNode)
	}
	nv := *v
	if u.Desired != "" {
		nv.Desired = u.Desired
	}
	if u.Node != "" {
		nv.Node = u.Node
	}
	f.w.ms.VMs[u.Name] = &nv
	return &nv, nil
}

func (f *fakeMeta) DeleteVM(_ context.Context, name string) error {
	f.w.j.Add("meta delete-vm %s", name)
	delete(f.w.ms.VMs, name)
	return nil
}

func (f *fakeMeta) SetVMHA(_ context.Context, h consensus.VMHACmd) (*consensus.VMRecord, error) {
	f.w.j.Add("meta set-ha %s %s", h.Name, h.State)
	return f.w.ms.VMs[h.Name], nil
}

func (f *fakeMeta) SetMaintenance(_ context.Context, node string, enable bool) (consensus.NodeRecord, error) {
	f.w.j.Add("meta maintenance %s %v", node, enable)
	return *f.w.ms.Nodes[node], nil
}

func (f *fakeMeta) SetVMMedia(_ context.Context, vm, image string) (*consensus.VMRecord, error) {
	f.w.j.Add("meta set-media %s %s", vm, image)
	v, ok := f.w.ms.VMs[vm]
	if !ok {
		return nil, consensus.ErrNoSuchVM
	}
	nv := *v
	nv.Spec.CDROM = image
	f.w.ms.VMs[vm] = &nv
	return &nv, nil
}

func (f *fakeMeta) SetVMNVRAM(_ context.Context, vm, node string, blob consensus.NVRAMBlob) (*consensus.VMRecord, error) {
	f.w.j.Add("meta set-nvram %s", vm)
	v, ok := f.w.ms.VMs[vm]
	if !ok {
		return nil, consensus.ErrNoSuchVM
	}
	nv := *v
	nv.NVRAM = &blob
	f.w.ms.VMs[vm] = &nv
	return &nv, nil
}

// fakePeers answers the peer calls as every node of the world.
type fakePeers struct{ w *world }

func (p fakePeers) Call(ctx context.Context, ms *consensus.MetaState, node string, _ time.Duration, f func(context.Context, tandemv1.PeerClient) error) error {
	if _, ok := ms.Nodes[node]; !ok {
		return status.Errorf(codes.NotFound, "node %s is not in the cluster", node)
	}
	if err := f(ctx, fakePeer{w: p.w, node: node}); err != nil {
		return status.Errorf(status.Code(err), "on %s: %s", node, status.Convert(err).Message())
	}
	return nil
}

// fakePeer is one node's peer API; calls the tests do not expect panic.
type fakePeer struct {
	tandemv1.PeerClient
	w    *world
	node string
}

func (p fakePeer) ComputeInfo(_ context.Context, req *tandemv1.ComputeInfoRequest, _ ...grpc.CallOption) (*tandemv1.ComputeStatus, error) {
	p.w.note("compute asked", p.node)
	st, ok := p.w.compute[p.node]
	if !ok {
		return nil, status.Error(codes.Unavailable, "connection refused")
	}
	out := proto.Clone(st).(*tandemv1.ComputeStatus)
	if len(req.Paths) > 0 || len(req.Bridges) > 0 {
		out.Missing = p.w.missing[p.node]
	}
	if known := p.w.cpuModels[p.node]; known != nil {
		for _, model := range req.CpuModels {
			if pr := compute.CPUModelProblem(model, known, known); pr != "" {
				out.CpuModelProblems = append(out.CpuModelProblems, pr)
			}
		}
	}
	return out, nil
}

func (p fakePeer) VMState(_ context.Context, req *tandemv1.PeerVMRequest, _ ...grpc.CallOption) (*tandemv1.VMInfo, error) {
	out := proto.Clone(req.Vm).(*tandemv1.VMInfo)
	out.State = p.w.running[req.Vm.Name]
	if out.State == "" {
		out.State = "shut off"
	}
	return out, nil
}

func (p fakePeer) VMStart(_ context.Context, req *tandemv1.PeerVMRequest, _ ...grpc.CallOption) (*tandemv1.VMInfo, error) {
	p.w.j.Add("peer %s vm-start %s", p.node, req.Vm.Name)
	p.w.running[req.Vm.Name] = "running"
	out := proto.Clone(req.Vm).(*tandemv1.VMInfo)
	out.State = "running"
	return out, nil
}

func (p fakePeer) VMStop(_ context.Context, req *tandemv1.PeerVMRequest, _ ...grpc.CallOption) (*tandemv1.VMInfo, error) {
	p.w.j.Add("peer %s vm-stop %s", p.node, req.Vm.Name)
	delete(p.w.running, req.Vm.Name)
	out := proto.Clone(req.Vm).(*tandemv1.VMInfo)
	out.State = "shut off"
	return out, nil
}

func (p fakePeer) VolumeHandover(_ context.Context, req *tandemv1.PromoteVolumeRequest, _ ...grpc.CallOption) (*tandemv1.VolumeInfo, error) {
	p.w.j.Add("peer %s handover %s to %s", p.node, req.Name, req.Node)
	if info := p.w.vols.show[req.Name]; info != nil {
		info.Primary = req.Node
	}
	return &tandemv1.VolumeInfo{Name: req.Name, Primary: req.Node}, nil
}

// world is the cluster as node n1 sees it: three data members with 4 GiB
// for VMs each, all answering.
type world struct {
	j  *journal
	ms *consensus.MetaState
	// freshMS, when set, is what a read with quorum returns, ms being this
	// node's stale copy.
	freshMS *consensus.MetaState
	quorate bool
	compute map[string]*tandemv1.ComputeStatus
	missing map[string][]string // what each node lacks of a spec's files and bridges
	// cpuModels are the CPU models each node's libvirt knows (nil: it
	// cannot say, as libvirt's test driver).
	cpuModels map[string][]string
	running   map[string]string // VM -> libvirt state
	vols      *fakeVolumes
	meta      *fakeMeta
	fence     *state.SelfFence
	now       time.Time
	failNIC   error // what the peer's NIC hot-plug answers
	failDisk  error // what the peer's disk hot-plug answers

	mu    sync.Mutex
	asked map[string][]string // what the manager asked: note's key -> values
}

// note records a question the manager asked of the fakes (they are asked
// in parallel).
func (w *world) note(key string, values ...string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.asked == nil {
		w.asked = map[string][]string{}
	}
	w.asked[key] = append(w.asked[key], values...)
}

func newWorld() *world {
	w := &world{j: &journal{}, quorate: true, fence: &state.SelfFence{}, running: map[string]string{},
		now:       time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		missing:   map[string][]string{},
		cpuModels: map[string][]string{},
		ms: &consensus.MetaState{
			Nodes: map[string]*consensus.NodeRecord{
				"n1": {Name: "n1", State: consensus.NodeMember, BackendAddr: "10.0.0.1:7000"},
				"n2": {Name: "n2", State: consensus.NodeMember, BackendAddr: "10.0.0.2:7000"},
				"n3": {Name: "n3", State: consensus.NodeMember, BackendAddr: "10.0.0.3:7000"},
			},
			Volumes: map[string]*consensus.VolumeEntry{},
			VMs:     map[string]*consensus.VMRecord{},
		},
		compute: map[string]*tandemv1.ComputeStatus{
			"n1": {Available: true, CapacityMib: 4096},
			"n2": {Available: true, CapacityMib: 4096},
			"n3": {Available: true, CapacityMib: 4096},
		},
	}
	w.vols = &fakeVolumes{w: w, failCreate: map[string]error{}, place: []string{"n2", "n1", "n3"}, placeErr: map[int]error{},
		show: map[string]*tandemv1.VolumeInfo{}, local: map[string]*fakeLocal{}}
	w.meta = &fakeMeta{w: w}
	return w
}

// manager is n1's VM manager in w. Compute is off, so nothing dials
// libvirt.
func (w *world) manager() *Manager {
	var cfg config.Config
	cfg.NodeName, cfg.DataDir = "n1", "/nonexistent"
	cfg.Compute.LibvirtSocket = config.ComputeOff
	st := statetest.NewState(state.Node{Name: "n1", DataDir: "/nonexistent"})
	st.Config = cfg
	st.Quorum = statetest.Quorum(&w.quorate)
	st.Peer = func(string) (tandemv1.PeerClient, error) {
		return nil, status.Error(codes.Unavailable, "no peers in tests")
	}
	st.Now = func() time.Time { return w.now }
	st.Events = func(_ context.Context, e consensus.Event) { w.j.Add("event %s %s", e.Kind, e.VM) }
	st.Fence = w.fence
	metaf := func() Meta {
		if w.meta == nil { // out of a cluster: a nil interface
			return nil
		}
		return w.meta
	}
	return New(Config{State: st, Volumes: w.vols, Meta: metaf, Peers: fakePeers{w}, Background: context.Background()})
}

func (f *fakeVolumes) Resize(_ context.Context, req *tandemv1.ResizeVolumeRequest) (*tandemv1.VolumeInfo, error) {
	f.w.j.Add("volume resize %s %d", req.Name, req.SizeBytes)
	f.w.ms.Volumes[req.Name].Size = req.SizeBytes
	return &tandemv1.VolumeInfo{Name: req.Name, SizeBytes: req.SizeBytes}, nil
}

func (f *fakeVolumes) RecordRBDSize(_ context.Context, name string, size int64) error {
	f.w.j.Add("volume record-size %s %d", name, size)
	f.w.ms.Volumes[name].Size = size
	return nil
}

func (p fakePeer) VMResizeDisk(_ context.Context, req *tandemv1.PeerResizeDiskRequest, _ ...grpc.CallOption) (*tandemv1.VMInfo, error) {
	if req.RbdImage != "" {
		p.w.j.Add("peer %s vm-resize-disk %s %s rbd %s/%s %d", p.node, req.Vm.Name, req.Volume, req.RbdPool, req.RbdImage, req.SizeBytes)
	} else {
		p.w.j.Add("peer %s vm-resize-disk %s %s %d", p.node, req.Vm.Name, req.Volume, req.SizeBytes)
	}
	return req.Vm, nil
}

func (f *fakeMeta) SetVMSpec(_ context.Context, u consensus.VMSpecCmd) (*consensus.VMRecord, error) {
	f.w.j.Add("meta set-spec %s vcpus=%d memory=%d", u.VM, u.VCPUs, u.MemoryMiB)
	v, ok := f.w.ms.VMs[u.VM]
	if !ok {
		return nil, consensus.ErrNoSuchVM
	}
	nv := *v
	nv.Spec.VCPUs, nv.Spec.MemoryMiB = u.VCPUs, u.MemoryMiB
	if u.CPUModel != nil {
		f.w.j.Add("meta set-spec %s cpu-model=%q", u.VM, *u.CPUModel)
		nv.Spec.CPUModel = *u.CPUModel
	}
	f.w.ms.VMs[u.VM] = &nv
	return &nv, nil
}

func (f *fakeMeta) ChangeVMNICs(_ context.Context, u consensus.VMNICsCmd) (*consensus.VMRecord, error) {
	v, ok := f.w.ms.VMs[u.VM]
	if !ok {
		return nil, consensus.ErrNoSuchVM
	}
	nv := *v
	nv.Spec.NICs = slices.Clone(v.Spec.NICs)
	if u.Add != nil {
		f.w.j.Add("meta nic-add %s %s %s", u.VM, u.Add.MAC, u.Add.Bridge)
		nv.Spec.NICs = append(nv.Spec.NICs, *u.Add)
	} else {
		f.w.j.Add("meta nic-remove %s %s", u.VM, u.RemoveMAC)
		nv.Spec.NICs = slices.DeleteFunc(nv.Spec.NICs, func(n consensus.VMNIC) bool { return n.MAC == u.RemoveMAC })
	}
	f.w.ms.VMs[u.VM] = &nv
	return &nv, nil
}

func (p fakePeer) VMNic(_ context.Context, req *tandemv1.PeerNicRequest, _ ...grpc.CallOption) (*tandemv1.VMInfo, error) {
	if req.RemoveMac != "" {
		p.w.j.Add("peer %s nic-detach %s %s", p.node, req.Vm.Name, req.RemoveMac)
		if err := p.w.failNIC; err != nil {
			return nil, err
		}
		return req.Vm, nil
	}
	p.w.j.Add("peer %s nic-attach %s %s", p.node, req.Vm.Name, req.Nic.Mac)
	if err := p.w.failNIC; err != nil {
		return nil, err
	}
	return req.Vm, nil
}

func (f *fakeMeta) ChangeVMDisks(_ context.Context, u consensus.VMDisksCmd) (*consensus.VMRecord, error) {
	v, ok := f.w.ms.VMs[u.VM]
	if !ok {
		return nil, consensus.ErrNoSuchVM
	}
	nv := *v
	if u.Add != "" {
		f.w.j.Add("meta disk-add %s %s", u.VM, u.Add)
		nv.Spec.Volumes = append(slices.Clone(v.Spec.Volumes), u.Add)
	} else {
		f.w.j.Add("meta disk-remove %s %s", u.VM, u.Remove)
		nv.Spec.Volumes = slices.DeleteFunc(slices.Clone(v.Spec.Volumes), func(s string) bool { return s == u.Remove })
	}
	f.w.ms.VMs[u.VM] = &nv
	return &nv, nil
}

func (p fakePeer) VMDisk(_ context.Context, req *tandemv1.PeerDiskRequest, _ ...grpc.CallOption) (*tandemv1.VMInfo, error) {
	verb := "disk-attach"
	if req.Detach {
		verb = "disk-detach"
	}
	p.w.j.Add("peer %s %s %s %s", p.node, verb, req.Vm.Name, req.Volume)
	if err := p.w.failDisk; err != nil {
		return nil, err
	}
	return req.Vm, nil
}
