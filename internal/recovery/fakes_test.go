package recovery

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/ha"
	"github.com/tandemhci/tandem/internal/sealed"
	"github.com/tandemhci/tandem/internal/state"
	"github.com/tandemhci/tandem/internal/state/statetest"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
	"google.golang.org/protobuf/proto"
)

// fakeMeta is the metadata client: a state in memory, this node leading
// at term unless told otherwise.
type fakeMeta struct {
	j *statetest.Journal

	mu        sync.Mutex
	ms        *consensus.MetaState
	self      uint64
	leader    uint64
	term      uint64
	quorumErr error
}

func (f *fakeMeta) LocalState() (*consensus.MetaState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	// A copy, as the real client gives: recovery must re-read to see changes.
	ms := *f.ms
	ms.Nodes, ms.VMs = map[string]*consensus.NodeRecord{}, map[string]*consensus.VMRecord{}
	for k, n := range f.ms.Nodes {
		c := *n
		ms.Nodes[k] = &c
	}
	for k, v := range f.ms.VMs {
		c := *v
		ms.VMs[k] = &c
	}
	return &ms, nil
}

func (f *fakeMeta) Self() uint64 { return f.self }

func (f *fakeMeta) Leader() (uint64, uint64, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.leader, f.term, f.leader != 0
}

func (f *fakeMeta) setLeader(id, term uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.leader, f.term = id, term
}

func (f *fakeMeta) CheckQuorum(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.quorumErr
}

// SetVMHA applies the command's conditions as the state machine does; a
// refused write is journaled as "ha-refused".
func (f *fakeMeta) SetVMHA(_ context.Context, c consensus.VMHACmd) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	v := f.ms.VMs[c.Name]
	if v != nil && (c.IfNode != "" && v.Node != c.IfNode || c.IfState != "" && v.HAState != c.IfState && !(c.IfState == consensus.HAStarted && v.HAState == "")) {
		f.j.Add("ha-refused %s %s (on %s in %q)", c.Name, c.State, v.Node, v.HAState)
		return fmt.Errorf("VM %s is on %s in HA state %q", c.Name, v.Node, v.HAState)
	}
	f.j.Add("ha %s %s", c.Name, c.State)
	if v != nil {
		v.HAState, v.HAReason = c.State, c.Reason
	}
	return nil
}

func (f *fakeMeta) UpdateVM(_ context.Context, u consensus.VMUpdate) error {
	f.j.Add("update %s %s if %s", u.Name, u.Node, u.IfNode)
	f.mu.Lock()
	defer f.mu.Unlock()
	v := f.ms.VMs[u.Name]
	if v == nil || v.Node != u.IfNode {
		return errors.New("moved")
	}
	v.Node = u.Node
	return nil
}

func (f *fakeMeta) SetConfig(_ context.Context, kv map[string]string) error {
	f.j.Add("config %v", kv)
	f.mu.Lock()
	defer f.mu.Unlock()
	for k, v := range kv {
		f.ms.Config[k] = v
	}
	return nil
}

func (f *fakeMeta) SetNodeFence(_ context.Context, c consensus.NodeFenceCmd) (consensus.NodeRecord, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := f.ms.Nodes[c.Node]
	if n == nil {
		return consensus.NodeRecord{}, consensus.ErrNodeNotFound
	}
	f.ms.Applied++
	switch {
	case c.ConfirmedOff:
		n.ConfirmedOffAt, n.ConfirmedOffIndex = time.Now(), f.ms.Applied
	case c.Clear:
		f.j.Add("clear-confirm-off %s", c.Node)
		n.ConfirmedOffAt, n.ConfirmedOffIndex = time.Time{}, 0
	default:
		n.Fence = c.Config
	}
	return *n, nil
}

func (f *fakeMeta) AppliedIndex() (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ms.Applied, nil
}

// confirmOff is an operator's 'tandem node fence NODE --confirm-off'.
func (f *fakeMeta) confirmOff(node string) {
	f.j.Add("confirm-off %s", node)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ms.Applied++
	f.ms.Nodes[node].ConfirmedOffAt, f.ms.Nodes[node].ConfirmedOffIndex = time.Now(), f.ms.Applied
}

// fakeVolumes is this node's volume manager and the cluster's promotions.
type fakeVolumes struct {
	j         *statetest.Journal
	primaries int
	frozen    error // the cause FreezeAll was given
	mu        sync.Mutex
	// infos is what Show answers per volume; a promotion moves its primary.
	infos map[string]*tandemv1.VolumeInfo
	// onPromote tells the VM subsystem's placement about a promotion.
	onPromote func(vol, node string)
}

func (f *fakeVolumes) Show(_ context.Context, vol, skip string) (*tandemv1.VolumeInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if skip != "" {
		f.j.Add("show %s without %s", vol, skip)
	}
	info, ok := f.infos[vol]
	if !ok {
		return nil, fmt.Errorf("no volume %s", vol)
	}
	return proto.Clone(info).(*tandemv1.VolumeInfo), nil
}

func (f *fakeVolumes) FreezeAll(cause error) int {
	f.j.Add("freeze-all")
	f.frozen = cause
	return f.primaries
}

func (f *fakeVolumes) Primaries() int { return f.primaries }

func (f *fakeVolumes) WakeShards(node string) int {
	f.j.Add("wake-shards %s", node)
	return len(f.infos)
}

func (f *fakeVolumes) Promote(_ context.Context, _ *consensus.MetaState, vol, node string) error {
	f.j.Add("promote %s on %s", vol, node)
	if f.onPromote != nil {
		f.onPromote(vol, node)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if info := f.infos[vol]; info != nil {
		info.Primary = node
	}
	return nil
}

// fakeDomains is libvirt on this node.
type fakeDomains struct {
	j       *statetest.Journal
	mu      sync.Mutex
	running []string
}

func (f *fakeDomains) Running(context.Context) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.running), nil
}

func (f *fakeDomains) Destroy(_ context.Context, name string) error {
	f.j.Add("destroy %s", name)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.running = slices.DeleteFunc(f.running, func(n string) bool { return n == name })
	return nil
}

// fakeVMs is the VM subsystem: placement always picks target and keeps
// the volumes already primary there.
type fakeVMs struct {
	j       *statetest.Journal
	meta    *fakeMeta
	domains *fakeDomains  // nil: libvirtd does not answer
	hang    chan struct{} // set: Domains blocks until it is closed (a hung libvirtd)
	target  string
	primary map[string]string // volume -> node serving it as primary
	// runningOn is where RunningOn finds each VM; unknown the members
	// that do not answer it.
	runningOn map[string][]string
	unknown   []string
	// onPlace runs at the start of each Place: a test moves a VM there,
	// as another path would while a recovery runs. placeErr, when set and
	// it returns an error, makes Place fail with it (no node can run the VM).
	onPlace  func(vm string)
	placeErr func(vm string) error
	// startErr is what Start returns.
	startErr error
	mu       sync.Mutex // guards primary: promotions run in parallel
}

func (f *fakeVMs) RunningOn(_ context.Context, _ *consensus.MetaState, vm string) (running, unknown []string, err error) {
	f.j.Add("running-on %s", vm)
	return f.runningOn[vm], f.unknown, nil
}

func (f *fakeVMs) Domains(ctx context.Context) (Domains, error) {
	if f.hang != nil {
		select {
		case <-f.hang:
		case <-ctx.Done():
		}
		return nil, errors.New("libvirtd does not answer")
	}
	if f.domains == nil {
		return nil, errors.New("libvirtd does not answer")
	}
	return f.domains, nil
}

func (f *fakeVMs) Place(_ context.Context, vm, dead string) (Placement, error) {
	if f.onPlace != nil {
		f.onPlace(vm)
	}
	if f.placeErr != nil {
		if err := f.placeErr(vm); err != nil {
			return Placement{}, err
		}
	}
	ms, _ := f.meta.LocalState()
	cur := ms.VMs[vm]
	if cur == nil || cur.Node != dead {
		return Placement{}, fmt.Errorf("VM %s moved meanwhile", vm)
	}
	p := Placement{VM: cur, Node: f.target, State: ms}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, vol := range cur.Spec.Volumes {
		if f.primary[vol] != f.target {
			p.Promote = append(p.Promote, vol)
		}
	}
	return p, nil
}

func (f *fakeVMs) PlanAll(ctx context.Context, dead string) ([]Placement, error) {
	ms, _ := f.meta.LocalState()
	var out []Placement
	for _, v := range recoveryOrder(ms, dead) {
		p, err := f.Place(ctx, v.Name, dead)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// promoted records that vol's primary is node now.
func (f *fakeVMs) promoted(vol, node string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.primary[vol] = node
}

func (f *fakeVMs) Start(_ context.Context, p Placement) error {
	f.j.Add("start %s on %s", p.VM.Name, p.Node)
	return f.startErr
}

// fixture is a Manager on node n1 over the fakes, with fast timing.
type fixture struct {
	j    *statetest.Journal
	st   *state.State
	meta *fakeMeta
	vols *fakeVolumes
	vms  *fakeVMs
	m    *Manager
	// secret and secretErr are what Config.Secret returns.
	secret    []byte
	secretErr error
}

// newFixture: n1 (this node, replica 1) leads at term 7; n2 and n3 are
// members; n2 has no fencing at all (only an operator can confirm it off).
func newFixture(t *testing.T) *fixture {
	t.Helper()
	j := &statetest.Journal{}
	ms := &consensus.MetaState{
		Config: map[string]string{},
		Nodes: map[string]*consensus.NodeRecord{
			"n1": {Name: "n1", ReplicaID: 1, State: consensus.NodeMember, BackendAddr: "n1:1"},
			"n2": {Name: "n2", ReplicaID: 2, State: consensus.NodeMember, BackendAddr: "n2:1", Fence: &consensus.FenceConfig{NoLease: true}},
			"n3": {Name: "n3", ReplicaID: 3, State: consensus.NodeMember, BackendAddr: "n3:1"},
		},
		VMs: map[string]*consensus.VMRecord{},
	}
	meta := &fakeMeta{j: j, ms: ms, self: 1, leader: 1, term: 7}
	f := &fixture{j: j, meta: meta, vols: &fakeVolumes{j: j}}
	f.vms = &fakeVMs{j: j, meta: meta, target: "n3", primary: map[string]string{}}
	f.vols.onPromote = f.vms.promoted
	f.st = statetest.NewState(state.Node{Name: "n1"})
	f.st.Events = func(_ context.Context, e consensus.Event) { j.Add("event %s %s: %s", e.Kind, e.Node, e.Detail) }
	f.st.Config.Watchdog = "off"
	f.st.Config.Compute.LibvirtSocket = filepath.Join(t.TempDir(), "libvirt-sock")
	f.m = New(Config{State: f.st, Meta: func() Meta { return meta }, Volumes: f.vols, VMs: f.vms,
		Settings: func(c map[string]string) map[string]string { return c },
		Secret:   func() ([]byte, error) { return f.secret, f.secretErr }})
	f.secret = bytes.Repeat([]byte{5}, sealed.SecretSize)
	tm := ha.DefaultTiming()
	tm.HeartbeatInterval = 5 * time.Millisecond
	f.m.timing = tm
	return f
}

// libvirtd makes the libvirt socket exist, with domains running.
func (f *fixture) libvirtd(t *testing.T, running ...string) {
	t.Helper()
	if err := os.WriteFile(f.st.Config.Compute.LibvirtSocket, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	f.vms.domains = &fakeDomains{j: f.j, running: running}
}

func (f *fixture) addVM(name, node string, priority int, vols ...string) {
	f.meta.mu.Lock()
	defer f.meta.mu.Unlock()
	f.meta.ms.VMs[name] = &consensus.VMRecord{Name: name, Node: node, Desired: consensus.VMStarted, Priority: priority,
		Spec: consensus.VMSpecRecord{Volumes: vols, MemoryMiB: 512}}
}

// dead makes the leader's detector see node dead.
func (f *fixture) dead(node string) {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	t := f.m.timing
	f.m.det = ha.NewDetector(t, time.Now().Add(-2*t.DeadTimeout), []string{"n1", "n2", "n3"})
	f.m.det.Seen("n1", time.Now())
	f.m.det.Seen("n3", time.Now())
	f.m.det.Tick(time.Now())
}

// answers makes the leader's detector see node answer again.
func (f *fixture) answers(node string) {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	f.m.det.Seen(node, time.Now())
	f.m.det.Tick(time.Now())
}

// waitFor waits until the journal has an entry starting with prefix.
func (f *fixture) waitFor(t *testing.T, prefix string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !f.j.Has(prefix) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the journal:\n%s", prefix, strings.Join(f.j.List(), "\n"))
		}
		time.Sleep(time.Millisecond)
	}
}
