package membership

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/state"
	"github.com/tandemhci/tandem/internal/state/statetest"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// fakeMeta is the metadata client: a state and a Raft membership in memory,
// with a journal of the calls that change them.
type fakeMeta struct {
	// The methods membership does not call are left to the nil interface:
	// calling one panics, which a test would show.
	state.Meta
	j       statetest.Journal
	ms      *consensus.MetaState
	mem     consensus.Membership
	joinErr error
	// checkErr is the join pre-check's answer; checks counts the calls.
	checkErr error
	checks   int
	bootErr  error
	nextID   uint64
	// joined is the record the last Join proposed.
	joined consensus.NodeRecord
}

func (f *fakeMeta) State(context.Context) (*consensus.MetaState, error) { return f.ms, nil }
func (f *fakeMeta) LocalState() (*consensus.MetaState, error)           { return f.ms, nil }

func (f *fakeMeta) Bootstrap(_ context.Context, c consensus.ClusterRecord, n consensus.NodeRecord) error {
	f.j.Add("bootstrap %s %s", c.Name, n.Name)
	return f.bootErr
}

func (f *fakeMeta) SetNodeState(_ context.Context, name, st string) (consensus.NodeRecord, error) {
	f.j.Add("state %s %s", name, st)
	n, ok := f.ms.Nodes[name]
	if !ok {
		return consensus.NodeRecord{}, consensus.ErrNodeNotFound
	}
	n.State = st
	if st == consensus.NodeRemoved {
		n.RemovedBy, n.RemovedAt = "n1", time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	}
	return *n, nil
}

func (f *fakeMeta) Join(_ context.Context, tokenID, _ string, n consensus.NodeRecord) (uint64, error) {
	f.j.Add("join %s", n.Name)
	f.joined = n
	if f.joinErr != nil {
		return 0, f.joinErr
	}
	return f.nextID, nil
}

// CheckJoin is a read: it answers checkErr and journals nothing.
func (f *fakeMeta) CheckJoin(context.Context, string, string, consensus.NodeRecord) error {
	f.checks++
	return f.checkErr
}

// rejoinAt is when the fake metadata decides rejoins (the world's clock).
var rejoinAt = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// CheckRejoin is a read: the state machine's own checks on the fake
// state; it journals nothing.
func (f *fakeMeta) CheckRejoin(_ context.Context, r consensus.RejoinCmd) (consensus.NodeRecord, error) {
	f.checks++
	r.Serial = ""
	if err := f.ms.CheckRejoin(r, rejoinAt); err != nil {
		return consensus.NodeRecord{}, err
	}
	return *f.ms.Nodes[r.Name], nil
}

// Rejoin checks again, journals and applies the rejoin to the fake state.
func (f *fakeMeta) Rejoin(_ context.Context, r consensus.RejoinCmd) (consensus.NodeRecord, error) {
	f.j.Add("rejoin %s replica=%d", r.Name, r.ReplicaID)
	if err := f.ms.CheckRejoin(r, rejoinAt); err != nil {
		return consensus.NodeRecord{}, err
	}
	f.ms.Tokens[r.TokenID].UsedBy = r.Name
	n := f.ms.Nodes[r.Name]
	n.CertSerials = append(n.CertSerials, r.Serial)
	n.CertNotAfter = r.NotAfter
	return *n, nil
}

func (f *fakeMeta) Audit(_ context.Context, action, detail string) error {
	f.j.Add("audit %s: %s", action, detail)
	return nil
}

func (f *fakeMeta) Membership(context.Context) (consensus.Membership, error) { return f.mem, nil }
func (f *fakeMeta) LocalMembership() (consensus.Membership, error)           { return f.mem, nil }

func (f *fakeMeta) AddVoter(_ context.Context, id uint64, addr string) error {
	f.j.Add("add-voter %s", addr)
	f.mem.Voters[id] = addr
	return nil
}

func (f *fakeMeta) RemoveReplica(_ context.Context, id uint64) error {
	f.j.Add("remove-replica %s%s", f.mem.Voters[id], f.mem.NonVoting[id])
	delete(f.mem.Voters, id)
	delete(f.mem.NonVoting, id)
	return nil
}

// fakeVolumes answers 'volume show' from a map; a missing volume did not
// answer.
type fakeVolumes map[string]*tandemv1.VolumeInfo

func (f fakeVolumes) Show(_ context.Context, name string, _ time.Duration) (*tandemv1.VolumeInfo, error) {
	if v, ok := f[name]; ok {
		return v, nil
	}
	return nil, status.Error(codes.Unavailable, "no replica answered")
}

// fakePeer answers Ping when up.
type fakePeer struct {
	tandemv1.PeerClient
	up bool
}

func (p fakePeer) Ping(context.Context, *tandemv1.PingRequest, ...grpc.CallOption) (*tandemv1.PingResponse, error) {
	if !p.up {
		return nil, status.Error(codes.Unavailable, "connection refused")
	}
	return &tandemv1.PingResponse{}, nil
}

// world is one node's view: n1 is this node, in a cluster "c1".
type world struct {
	meta    *fakeMeta
	quorate bool
	online  map[string]bool // backend address -> answers Ping
	vols    fakeVolumes
	cluster *Cluster
	quorumN int
	init    *fakeInit
	refused []string // reasons counted by JoinRefused
	// tellErr is what telling a removed node fails with (nil: it answers
	// that it stopped, having destroyed one VM).
	tellErr error
}

func newWorld() *world {
	ms := &consensus.MetaState{
		Cluster: consensus.ClusterRecord{Name: "c1"},
		Nodes: map[string]*consensus.NodeRecord{
			"n1": {Name: "n1", ReplicaID: 1, State: consensus.NodeMember, BackendAddr: "10.0.0.1:7000"},
			"n2": {Name: "n2", ReplicaID: 2, State: consensus.NodeMember, BackendAddr: "10.0.0.2:7000"},
			"n3": {Name: "n3", ReplicaID: 3, State: consensus.NodeMember, BackendAddr: "10.0.0.3:7000"},
		},
		Volumes: map[string]*consensus.VolumeEntry{},
		VMs:     map[string]*consensus.VMRecord{},
		Applied: 42,
	}
	mem := consensus.Membership{Voters: map[uint64]string{1: "10.0.0.1:7001", 2: "10.0.0.2:7001", 3: "10.0.0.3:7001"}, NonVoting: map[uint64]string{}}
	fm := &fakeMeta{ms: ms, mem: mem, nextID: 4}
	return &world{meta: fm, quorate: true, online: map[string]bool{}, vols: fakeVolumes{}, init: &fakeInit{meta: fm}}
}

func (w *world) manager() *Manager {
	st := statetest.NewState(state.Node{Name: "n1", Role: "data"})
	st.Meta = func() state.Meta { return w.meta }
	quorum := statetest.Quorum(&w.quorate)
	st.Quorum = func(ctx context.Context) error {
		w.quorumN++
		return quorum(ctx)
	}
	st.Peer = func(addr string) (tandemv1.PeerClient, error) { return fakePeer{up: w.online[addr]}, nil }
	st.Now = func() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) }
	return New(Config{
		State: st, Volumes: w.vols,
		Cluster: func() (Cluster, bool) {
			if w.cluster == nil {
				return Cluster{}, false
			}
			return *w.cluster, true
		},
		Init:        w.init,
		JoinRefused: func(reason string) { w.refused = append(w.refused, reason) },
		TellRemoved: func(_ context.Context, n consensus.NodeRecord, req *tandemv1.PeerNodeRemovedRequest) (*tandemv1.PeerNodeRemovedResponse, error) {
			w.meta.j.Add("tell %s at %s: removed from %s by %s at %s", req.Node, n.BackendAddr, req.ClusterId, req.RemovedBy, req.RemovedAt.AsTime().Format(time.RFC3339))
			if w.tellErr != nil {
				return nil, w.tellErr
			}
			return &tandemv1.PeerNodeRemovedResponse{First: true, VmsDestroyed: 1}, nil
		},
	})
}

// fakeInit is the daemon's side of create and join: it journals each step
// and checks it runs under the lock.
type fakeInit struct {
	mu       sync.Mutex
	locked   bool
	cluster  string
	steps    []string
	meta     *fakeMeta
	startErr error
	saved    Identity
	admin    AdminCredentials
	secret   []byte
}

func (f *fakeInit) Lock()   { f.mu.Lock(); f.locked = true }
func (f *fakeInit) Unlock() { f.locked = false; f.mu.Unlock() }

func (f *fakeInit) step(s string) {
	if !f.locked {
		panic(s + " called without the lock")
	}
	f.steps = append(f.steps, s)
}

func (f *fakeInit) ClusterLocked() (string, bool) {
	f.step("cluster?")
	return f.cluster, f.cluster != ""
}
func (f *fakeInit) ResetLocked() { f.step("reset"); f.cluster = "" }
func (f *fakeInit) SaveTLSLocked(m Material) error {
	f.step("save-tls")
	if len(m.CACert) == 0 || len(m.Key) == 0 {
		return errors.New("empty material")
	}
	return nil
}

func (f *fakeInit) SaveSecretLocked(secret []byte) error {
	f.step("save-secret")
	f.secret = secret
	return nil
}

func (f *fakeInit) SaveAdminLocked(c AdminCredentials) error {
	f.step("save-admin")
	f.admin = c
	return nil
}

func (f *fakeInit) StartLocked(_ context.Context, id Identity, members map[uint64]string, join bool) (state.Meta, error) {
	f.step(fmt.Sprintf("start %s replica=%d members=%v join=%v", id.ClusterName, id.ReplicaID, members, join))
	if f.startErr != nil {
		return nil, f.startErr
	}
	f.cluster = id.ClusterName
	return f.meta, nil
}

func (f *fakeInit) SaveIdentityLocked(id Identity) error {
	f.step("save-identity")
	f.saved = id
	return nil
}

func (f *fakeInit) ServeLocked() error { f.step("serve"); return nil }
