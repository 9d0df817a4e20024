package membership

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/state"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// fakeMeta is the metadata client: a state and a Raft membership in memory,
// with a journal of the calls that change them.
type fakeMeta struct {
	mu      sync.Mutex
	ms      *consensus.MetaState
	mem     consensus.Membership
	calls   []string
	joinErr error
	nextID  uint64
}

func (f *fakeMeta) record(c string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, c)
}

func (f *fakeMeta) journal() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeMeta) State(context.Context) (*consensus.MetaState, error) { return f.ms, nil }
func (f *fakeMeta) LocalState() (*consensus.MetaState, error)           { return f.ms, nil }

func (f *fakeMeta) SetNodeState(_ context.Context, name, st string) (consensus.NodeRecord, error) {
	f.record("state " + name + " " + st)
	n, ok := f.ms.Nodes[name]
	if !ok {
		return consensus.NodeRecord{}, consensus.ErrNodeNotFound
	}
	n.State = st
	return *n, nil
}

func (f *fakeMeta) Join(_ context.Context, tokenID, _ string, n consensus.NodeRecord) (uint64, error) {
	f.record("join " + n.Name)
	if f.joinErr != nil {
		return 0, f.joinErr
	}
	return f.nextID, nil
}

func (f *fakeMeta) Audit(_ context.Context, action, detail string) error {
	f.record("audit " + action + ": " + detail)
	return nil
}

func (f *fakeMeta) Membership(context.Context) (consensus.Membership, error) { return f.mem, nil }
func (f *fakeMeta) LocalMembership() (consensus.Membership, error)           { return f.mem, nil }

func (f *fakeMeta) AddVoter(_ context.Context, id uint64, addr string) error {
	f.record("add-voter " + addr)
	f.mem.Voters[id] = addr
	return nil
}

func (f *fakeMeta) RemoveReplica(_ context.Context, id uint64) error {
	f.record("remove-replica " + f.mem.Voters[id] + f.mem.NonVoting[id])
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
	meta     *fakeMeta
	quorate  bool
	online   map[string]bool // backend address -> answers Ping
	vols     fakeVolumes
	cluster  *Cluster
	quorumN  int
	adminTok string // "" fails to read
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
	return &world{meta: &fakeMeta{ms: ms, mem: mem, nextID: 4}, quorate: true, online: map[string]bool{}, vols: fakeVolumes{}}
}

func (w *world) manager() *Manager {
	st := &state.State{
		Node: state.Node{Name: "n1", Role: "data"},
		Log:  slog.New(slog.NewTextHandler(io.Discard, nil)),
		Meta: func() state.Meta { return w.meta },
		Quorum: func(context.Context) error {
			w.quorumN++
			if !w.quorate {
				return status.Error(codes.FailedPrecondition, "no quorum: a majority of voters is not reachable; nothing was changed")
			}
			return nil
		},
		Peer: func(addr string) (tandemv1.PeerClient, error) { return fakePeer{up: w.online[addr]}, nil },
		Now:  func() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) },
	}
	return New(Config{
		State: st, Volumes: w.vols,
		Cluster: func() (Cluster, bool) {
			if w.cluster == nil {
				return Cluster{}, false
			}
			return *w.cluster, true
		},
		AdminToken: func() (string, error) {
			if w.adminTok == "" {
				return "", errors.New("open token: no such file or directory")
			}
			return w.adminTok, nil
		},
	})
}
