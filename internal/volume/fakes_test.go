package volume

import (
	"context"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/state"
	"github.com/tandemhci/tandem/internal/state/statetest"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// fakeMeta is the metadata client: local is this replica's (possibly
// lagging) copy, fresh what a linearizable read returns.
type fakeMeta struct {
	*statetest.Journal
	local, fresh *consensus.MetaState
}

func (f *fakeMeta) State(context.Context) (*consensus.MetaState, error) { return f.fresh, nil }
func (f *fakeMeta) LocalState() (*consensus.MetaState, error)           { return f.local, nil }

func (f *fakeMeta) Audit(_ context.Context, action, detail string) error {
	f.Add("audit %s: %s", action, detail)
	return nil
}

func (f *fakeMeta) CreateVolume(_ context.Context, v consensus.VolumeEntry) (*consensus.VolumeEntry, error) {
	f.Add("create-volume %s", v.Name)
	return &v, nil
}

func (f *fakeMeta) SetVolumeHA(_ context.Context, name, mode string) (*consensus.VolumeEntry, error) {
	f.Add("volume-ha %s %s", name, mode)
	return &consensus.VolumeEntry{Name: name, HA: mode}, nil
}

func (f *fakeMeta) SetVolumeState(_ context.Context, name, st string) error {
	f.Add("volume-state %s %s", name, st)
	return nil
}

func (f *fakeMeta) DeleteVolume(_ context.Context, name string) error {
	f.Add("delete-volume %s", name)
	return nil
}

// fakePeer is one node's peer API: its answer to VolumeStatus (nil: it
// does not answer) and a journal of the calls that change something.
type fakePeer struct {
	tandemv1.PeerClient
	*statetest.Journal
	node   string
	status *tandemv1.VolumeInfo
	// free is the volume disk's free space; negative: DiskInfo fails.
	free int64
	// hang makes VolumeStatus wait for its deadline, as a dead node's
	// connection does; asked counts the VolumeStatus calls.
	hang  bool
	asked atomic.Int64
}

func (p *fakePeer) DiskInfo(context.Context, *tandemv1.DiskInfoRequest, ...grpc.CallOption) (*tandemv1.DiskInfoResponse, error) {
	if p.free < 0 {
		return nil, status.Error(codes.Unavailable, "connection refused")
	}
	return &tandemv1.DiskInfoResponse{Disks: []*tandemv1.Disk{{Path: "/var/lib/tandem", FreeBytes: p.free}}}, nil
}

func (p *fakePeer) VolumeStatus(ctx context.Context, _ *tandemv1.PeerVolumeStatusRequest, _ ...grpc.CallOption) (*tandemv1.VolumeInfo, error) {
	p.asked.Add(1)
	if p.hang {
		<-ctx.Done()
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	if p.status == nil {
		return nil, status.Error(codes.Unavailable, "connection refused")
	}
	return p.status, nil
}

func (p *fakePeer) VolumePromote(_ context.Context, req *tandemv1.PromoteVolumeRequest, _ ...grpc.CallOption) (*tandemv1.VolumeInfo, error) {
	p.Add("promote %s on %s", req.Name, p.node)
	return &tandemv1.VolumeInfo{Name: req.Name, Primary: p.node, Epoch: 9}, nil
}

func (p *fakePeer) VolumeDiscard(_ context.Context, req *tandemv1.PeerVolumeStatusRequest, _ ...grpc.CallOption) (*tandemv1.PeerVolumeCloseResponse, error) {
	p.Add("discard %s on %s", req.Name, p.node)
	return &tandemv1.PeerVolumeCloseResponse{}, nil
}

func (p *fakePeer) VolumeDiscardPeer(_ context.Context, req *tandemv1.PromoteVolumeRequest, _ ...grpc.CallOption) (*tandemv1.VolumeInfo, error) {
	p.Add("discard-peer %s on %s", req.Node, p.node)
	return p.status, nil
}

// world is node n1's view of a cluster of n1, n2, n3 holding volume v on
// all three, used by VM vm1.
type world struct {
	j       *statetest.Journal
	meta    *fakeMeta
	peers   map[string]*fakePeer
	quorate bool
}

func newWorld() *world {
	j := &statetest.Journal{}
	ms := &consensus.MetaState{
		Nodes: map[string]*consensus.NodeRecord{},
		Volumes: map[string]*consensus.VolumeEntry{
			"v": {Name: "v", ShardID: 100, Size: 1 << 20, Replicas: []string{"n1", "n2", "n3"}, State: consensus.VolumeReady},
		},
		VMs: map[string]*consensus.VMRecord{"vm1": {Name: "vm1", Spec: consensus.VMSpecRecord{Volumes: []string{"v"}}}},
	}
	w := &world{j: j, meta: &fakeMeta{Journal: j, local: ms, fresh: ms}, peers: map[string]*fakePeer{}, quorate: true}
	for _, n := range []string{"n1", "n2", "n3"} {
		ms.Nodes[n] = &consensus.NodeRecord{Name: n, State: consensus.NodeMember, BackendAddr: n + ":7000"}
		w.peers[n] = &fakePeer{Journal: j, node: n}
	}
	return w
}

// manager is n1's Manager over the world.
func (w *world) manager(t *testing.T) *Manager {
	t.Helper()
	st := statetest.NewState(state.Node{Name: "n1", NBDAddr: "n1:10809"})
	st.Quorum = statetest.Quorum(&w.quorate)
	st.Peer = func(addr string) (tandemv1.PeerClient, error) {
		for _, p := range w.peers {
			if p.node+":7000" == addr {
				return p, nil
			}
		}
		return nil, status.Error(codes.Unavailable, "no such peer")
	}
	st.Cluster = func() (state.Cluster, bool) { return state.Cluster{Name: "c1", ID: "c1-id"}, true }
	st.Shards = func() *consensus.Volumes { return nil }
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return New(ctx, Config{
		State:         st,
		Meta:          func() Meta { return w.meta },
		Host:          func() Host { return nil },
		ReplicaID:     func() uint64 { return 1 },
		ListFile:      filepath.Join(t.TempDir(), "volumes.json"),
		NBDSocket:     "/run/tandem/nbd.sock",
		QuorumTimeout: time.Second,
		CallNode: func(ctx context.Context, ms *consensus.MetaState, node string, timeout time.Duration, f func(context.Context, tandemv1.PeerClient) error) error {
			p, ok := w.peers[node]
			if !ok {
				return status.Errorf(codes.NotFound, "node %s is not in the cluster", node)
			}
			cctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			if err := f(cctx, p); err != nil {
				return status.Errorf(status.Code(err), "on %s: %s", node, grpcMessage(err))
			}
			return nil
		},
	})
}

func (f *fakeMeta) AddExportCert(_ context.Context, r consensus.ExportCertRecord) (*consensus.ExportCertRecord, error) {
	f.Add("export-cert %s %v by %s", r.Name, r.Volumes, r.IssuedBy)
	return &r, nil
}

func (f *fakeMeta) RevokeCert(_ context.Context, r consensus.RevokedCert) error {
	f.Add("revoke %s %s", r.Serial, r.Subject)
	return nil
}
