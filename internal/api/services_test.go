package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/apierr"
	"github.com/tandemhci/tandem/internal/config"
	"github.com/tandemhci/tandem/internal/state"
	"github.com/tandemhci/tandem/internal/vmm"
	"github.com/tandemhci/tandem/internal/volume"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// volumeMeta is the volume subsystem's metadata client: this replica's
// state fails with err.
type volumeMeta struct {
	volume.Meta
	err error
}

func (m volumeMeta) LocalState() (*consensus.MetaState, error) { return nil, m.err }

// vmVolumes is the volume subsystem as the VM manager sees it: its
// catalog fails with err.
type vmVolumes struct {
	vmm.Volumes
	err error
}

func (v vmVolumes) Catalog(context.Context, bool) (*consensus.MetaState, error) { return nil, v.err }

// serve runs the admin and peer services of cfg on an in-memory listener
// and returns their clients.
func serve(t *testing.T, cfg Config) (*grpc.ClientConn, func()) {
	t.Helper()
	ln := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	a := New(cfg)
	a.RegisterAdmin(srv)
	a.RegisterPeer(srv)
	go func() { _ = srv.Serve(ln) }()
	cc, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return ln.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	return cc, func() { cc.Close(); srv.Stop() }
}

// One domain error reaches the client with one code and one text, whether
// the volume or the VM side returns it: the services map every answer
// through apierr.From.
func TestOneErrorOneCodeAcrossServices(t *testing.T) {
	cases := []struct {
		name string
		err  error
		code codes.Code
		msg  string // "" when err's own text
	}{
		{"no quorum", fmt.Errorf("metadata: %w", consensus.ErrNoQuorum), codes.FailedPrecondition, apierr.NoQuorumMessage},
		{"not found", fmt.Errorf("vm web: %w", consensus.ErrNoSuchVM), codes.NotFound, ""},
		{"not primary", fmt.Errorf("volume v1: %w", consensus.ErrNotPrimary), codes.FailedPrecondition, ""},
		{"status passes", status.Error(codes.Unavailable, "the primary of v1 does not answer"), codes.Unavailable, "the primary of v1 does not answer"},
		{"deadline", fmt.Errorf("catalog: %w", context.DeadlineExceeded), codes.DeadlineExceeded, ""},
		{"unknown", errors.New("disk on fire"), codes.Internal, "disk on fire"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st := &state.State{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Config: config.Config{DataDir: t.TempDir()}}
			vols := volume.New(t.Context(), volume.Config{State: st, Meta: func() volume.Meta { return volumeMeta{err: c.err} }})
			vms := vmm.New(vmm.Config{State: st, Volumes: vmVolumes{err: c.err}, Background: t.Context()})
			cc, stop := serve(t, Config{State: st, Volumes: vols, VMs: vms, Node: Node{ReplicaID: func() uint64 { return 1 }}})
			defer stop()
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()

			_, volErr := tandemv1.NewVolumeClient(cc).List(ctx, &tandemv1.ListVolumesRequest{})
			_, vmErr := tandemv1.NewVMClient(cc).List(ctx, &tandemv1.ListVMsRequest{})
			want := c.msg
			if want == "" {
				want = c.err.Error()
			}
			for side, err := range map[string]error{"volume": volErr, "vm": vmErr} {
				s := status.Convert(err)
				if s.Code() != c.code || s.Message() != want {
					t.Errorf("%s side: %v %q, want %v %q", side, s.Code(), s.Message(), c.code, want)
				}
			}
		})
	}
}

// The peer side of volumes refuses while the node is in no cluster, and
// Ping still answers with the node's name.
func TestPeerOutsideCluster(t *testing.T) {
	st := &state.State{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Node: state.Node{Name: "n1"}, Meta: func() state.Meta { return nil }}
	vols := volume.New(t.Context(), volume.Config{State: st, Meta: func() volume.Meta { return nil }})
	cc, stop := serve(t, Config{State: st, Volumes: vols, Node: Node{ReplicaID: func() uint64 { return 0 }}})
	defer stop()
	peer := tandemv1.NewPeerClient(cc)
	_, err := peer.VolumeStatus(t.Context(), &tandemv1.PeerVolumeStatusRequest{Name: "v1"})
	if s := status.Convert(err); s.Code() != codes.FailedPrecondition || s.Message() != "volumes are not running on this node" {
		t.Fatalf("VolumeStatus outside a cluster: %v %q", s.Code(), s.Message())
	}
	resp, err := peer.Ping(t.Context(), &tandemv1.PingRequest{From: "n2"})
	if err != nil || resp.Name != "n1" || resp.ReplicaId != 0 {
		t.Fatalf("Ping outside a cluster: %v, %v", resp, err)
	}
}

// localMeta is a metadata client whose applied state is ms.
type localMeta struct {
	state.Meta
	ms *consensus.MetaState
}

func (m localMeta) LocalState() (*consensus.MetaState, error) { return m.ms, nil }

// A removal notice is acted on only for this node, in this cluster, from a
// member this node knows; anything else is refused and changes nothing.
func TestNodeRemovedRefusals(t *testing.T) {
	ms := &consensus.MetaState{Nodes: map[string]*consensus.NodeRecord{"n1": {Name: "n1"}, "n2": {Name: "n2"}}}
	st := &state.State{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Node: state.Node{Name: "n1"},
		Meta:    func() state.Meta { return localMeta{ms: ms} },
		Cluster: func() (state.Cluster, bool) { return state.Cluster{Name: "lab", ID: "c-1"}, true },
		Removal: &state.Removal{}, Fence: &state.SelfFence{}}
	cc, stop := serve(t, Config{State: st, Node: Node{ReplicaID: func() uint64 { return 1 }}})
	defer stop()
	peer := tandemv1.NewPeerClient(cc)
	for _, tc := range []struct {
		req  *tandemv1.PeerNodeRemovedRequest
		code codes.Code
		msg  string
	}{
		{&tandemv1.PeerNodeRemovedRequest{Node: "n2", ClusterId: "c-1"}, codes.InvalidArgument, `this is node n1, not "n2"`},
		{&tandemv1.PeerNodeRemovedRequest{Node: "n1", ClusterId: "c-9"}, codes.FailedPrecondition, `this node is in cluster lab (c-1), not "c-9"`},
		{&tandemv1.PeerNodeRemovedRequest{Node: "../n1", ClusterId: "c-1"}, codes.InvalidArgument, "node name"},
		// No certificate here: no member this node knows sent it.
		{&tandemv1.PeerNodeRemovedRequest{Node: "n1", ClusterId: "c-1", RemovedBy: "n2"}, codes.PermissionDenied, "is not a member this node knows"},
	} {
		_, err := peer.NodeRemoved(t.Context(), tc.req)
		if s := status.Convert(err); s.Code() != tc.code || !strings.Contains(s.Message(), tc.msg) {
			t.Errorf("%+v: %v %q, want %v %q", tc.req, s.Code(), s.Message(), tc.code, tc.msg)
		}
	}
	if _, known := st.Removal.Get(); known || st.Fence.Fenced() {
		t.Fatal("a refused notice changed the node")
	}
}
