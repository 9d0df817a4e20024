package images

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/config"
	"github.com/tandemhci/tandem/internal/state"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// The metadata is a shared in-memory state (the state machine's rules are
// consensus's tests); the files, hashes and copies are real.
type world struct {
	mu    sync.Mutex
	ms    *consensus.MetaState
	nodes map[string]*Manager
}

// fakeMeta is one node's view of the shared metadata; with lag, its
// applied copy (LocalState) has no image records yet, while a
// linearizable read (State) has them.
type fakeMeta struct {
	w   *world
	lag bool
}

func (f fakeMeta) State(context.Context) (*consensus.MetaState, error) {
	return fakeMeta{w: f.w}.LocalState()
}
func (f fakeMeta) LocalState() (*consensus.MetaState, error) {
	if f.lag {
		f.w.mu.Lock()
		defer f.w.mu.Unlock()
		b := *f.w.ms
		b.Images = map[string]*consensus.ImageRecord{}
		return &b, nil
	}
	f.w.mu.Lock()
	defer f.w.mu.Unlock()
	b := *f.w.ms
	b.Images = map[string]*consensus.ImageRecord{}
	for k, v := range f.w.ms.Images {
		c := *v
		c.Nodes = slices.Clone(v.Nodes)
		b.Images[k] = &c
	}
	return &b, nil
}
func (f fakeMeta) CreateImage(_ context.Context, name string, size int64, sum, node string) (*consensus.ImageRecord, error) {
	f.w.mu.Lock()
	defer f.w.mu.Unlock()
	if _, ok := f.w.ms.Images[name]; ok {
		return nil, consensus.ErrBadCommand
	}
	r := &consensus.ImageRecord{Name: name, Size: size, SHA256: sum, Nodes: []string{node}}
	f.w.ms.Images[name] = r
	return r, nil
}
func (f fakeMeta) AddImageCopy(_ context.Context, name, sum, node string) (*consensus.ImageRecord, error) {
	f.w.mu.Lock()
	defer f.w.mu.Unlock()
	r := f.w.ms.Images[name]
	if r == nil || r.SHA256 != sum {
		return nil, consensus.ErrBadCommand
	}
	if !slices.Contains(r.Nodes, node) {
		r.Nodes = append(r.Nodes, node)
	}
	return r, nil
}
func (f fakeMeta) DeleteImage(_ context.Context, name string) error {
	f.w.mu.Lock()
	defer f.w.mu.Unlock()
	delete(f.w.ms.Images, name)
	return nil
}

// fakePeers calls the other Manager's methods as its peer API would.
type fakePeers struct{ w *world }

func (p fakePeers) Call(ctx context.Context, _ *consensus.MetaState, node string, _ time.Duration, f func(context.Context, tandemv1.PeerClient) error) error {
	m := p.w.nodes[node]
	if m == nil {
		return status.Errorf(codes.Unavailable, "on %s: down", node)
	}
	return f(ctx, peerClient{m: m})
}

type peerClient struct {
	tandemv1.PeerClient
	m *Manager
}

func (c peerClient) ImageRead(ctx context.Context, req *tandemv1.PeerImageRequest, _ ...grpc.CallOption) (grpc.ServerStreamingClient[tandemv1.ImageChunk], error) {
	var chunks []*tandemv1.ImageChunk
	err := c.m.Read(ctx, req.Image, func(ch *tandemv1.ImageChunk) error {
		chunks = append(chunks, &tandemv1.ImageChunk{Data: bytes.Clone(ch.Data)})
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &chunkStream{chunks: chunks}, nil
}

func (c peerClient) ImageFetch(ctx context.Context, req *tandemv1.PeerImageRequest, _ ...grpc.CallOption) (*tandemv1.PeerImageResponse, error) {
	p, err := c.m.Local(ctx, req.Image)
	if err != nil {
		return nil, err
	}
	return &tandemv1.PeerImageResponse{Path: p}, nil
}

type chunkStream struct {
	grpc.ClientStream
	chunks []*tandemv1.ImageChunk
}

func (s *chunkStream) Recv() (*tandemv1.ImageChunk, error) {
	if len(s.chunks) == 0 {
		return nil, io.EOF
	}
	c := s.chunks[0]
	s.chunks = s.chunks[1:]
	return c, nil
}

func newWorld(t *testing.T, names ...string) *world {
	w := &world{ms: &consensus.MetaState{Nodes: map[string]*consensus.NodeRecord{}, VMs: map[string]*consensus.VMRecord{}, Images: map[string]*consensus.ImageRecord{}}, nodes: map[string]*Manager{}}
	w.ms.Cluster.ID = "c"
	for _, n := range names {
		w.ms.Nodes[n] = &consensus.NodeRecord{Name: n, State: consensus.NodeMember, Role: "data"}
		st := &state.State{Node: state.Node{Name: n}, Log: slog.New(slog.DiscardHandler), Config: config.Config{DataDir: filepath.Join(t.TempDir(), n)}}
		w.nodes[n] = New(Config{State: st, Meta: func() Meta { return fakeMeta{w: w} }, Peers: fakePeers{w}})
	}
	return w
}

// isoBytes is an image with the ISO 9660 signature.
func isoBytes(size int) []byte {
	b := make([]byte, size)
	copy(b[isoMagicOffset:], isoMagic)
	for i := isoMagicOffset + 16; i < size; i++ {
		b[i] = byte(i * 7)
	}
	return b
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// recvOf delivers b as an upload in chunks, with sha as the last
// message's checksum.
func recvOf(name string, size int64, b []byte, sha string) func() (*tandemv1.UploadImageRequest, error) {
	var msgs []*tandemv1.UploadImageRequest
	for off := 0; off < len(b); off += 10000 {
		msgs = append(msgs, &tandemv1.UploadImageRequest{Data: b[off:min(off+10000, len(b))]})
	}
	if len(msgs) == 0 {
		msgs = append(msgs, &tandemv1.UploadImageRequest{})
	}
	msgs[0].Name, msgs[0].SizeBytes = name, size
	msgs = append(msgs, &tandemv1.UploadImageRequest{Sha256: sha})
	return func() (*tandemv1.UploadImageRequest, error) {
		if len(msgs) == 0 {
			return nil, io.EOF
		}
		m := msgs[0]
		msgs = msgs[1:]
		return m, nil
	}
}

// files is what the node's image directory holds.
func files(t *testing.T, m *Manager) []string {
	t.Helper()
	es, err := os.ReadDir(m.Dir())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

func TestUploadRefusesBadInputAndKeepsNothing(t *testing.T) {
	w := newWorld(t, "n1")
	m := w.nodes["n1"]
	ctx := t.Context()
	good := isoBytes(100_000)
	notISO := make([]byte, 100_000)
	for name, tc := range map[string]struct {
		recv func() (*tandemv1.UploadImageRequest, error)
		code codes.Code
	}{
		"not iso 9660":  {recvOf("a", int64(len(notISO)), notISO, sum(notISO)), codes.InvalidArgument},
		"too short":     {recvOf("a", 1000, good[:1000], sum(good[:1000])), codes.InvalidArgument},
		"wrong sha256":  {recvOf("a", int64(len(good)), good, sum(notISO)), codes.DataLoss},
		"no sha256":     {recvOf("a", int64(len(good)), good, ""), codes.InvalidArgument},
		"short of size": {recvOf("a", int64(len(good))+1, good, sum(good)), codes.InvalidArgument},
		"over size":     {recvOf("a", int64(len(good))-1, good, sum(good)), codes.InvalidArgument},
		"bad name":      {recvOf("A/../b", int64(len(good)), good, sum(good)), codes.InvalidArgument},
	} {
		_, err := m.Upload(ctx, tc.recv)
		if status.Code(err) != tc.code {
			t.Errorf("%s: %v, want %s", name, err, tc.code)
		}
		if f := files(t, m); len(f) != 0 {
			t.Errorf("%s: left %v", name, f)
		}
		if len(w.ms.Images) != 0 {
			t.Fatalf("%s: recorded %v", name, w.ms.Images)
		}
	}
	if _, err := m.Upload(ctx, recvOf("a", int64(len(good)), good, sum(good))); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Upload(ctx, recvOf("a", int64(len(good)), good, sum(good))); status.Code(err) != codes.AlreadyExists {
		t.Fatalf("duplicate: %v", err)
	}
	if f := files(t, m); !slices.Equal(f, []string{"a.iso"}) {
		t.Fatalf("files after the uploads: %v", f)
	}
}

// An upload is copied to the other nodes; a node whose copy went bad
// replaces it from a peer before handing out its path; a deleted image's
// copies go at the next sweep.
func TestCopiesVerifiedAndReplaced(t *testing.T) {
	w := newWorld(t, "n1", "n2", "n3")
	ctx := t.Context()
	good := isoBytes(3*chunkSize + 12345)
	info, err := w.nodes["n1"].Upload(ctx, recvOf("deb", int64(len(good)), good, sum(good)))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(info.Nodes)
	if !slices.Equal(info.Nodes, []string{"n1", "n2", "n3"}) || info.Warning != "" || info.Sha256 != sum(good) {
		t.Fatalf("upload: %+v", info)
	}
	for n, m := range w.nodes {
		b, err := os.ReadFile(m.Path("deb"))
		if err != nil || !bytes.Equal(b, good) {
			t.Fatalf("copy on %s: %v", n, err)
		}
	}
	// Corrupt n2's copy in place (as root can, whatever the mode).
	m2 := w.nodes["n2"]
	f, err := os.OpenFile(m2.Path("deb"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("rot"), 40000); err != nil {
		t.Fatal(err)
	}
	f.Close()
	p, err := m2.Local(ctx, "deb")
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); !bytes.Equal(b, good) {
		t.Fatal("a corrupt copy was handed out")
	}
	// A node that is down when the image is uploaded gets it later; while
	// nobody holds a copy, Local says so.
	delete(w.nodes, "n3")
	w.ms.Images["deb"].Nodes = []string{"n1"}
	m1 := w.nodes["n1"]
	delete(w.nodes, "n1")
	m3 := newWorld(t, "n3").nodes["n3"]
	m3.metaf = func() Meta { return fakeMeta{w: w} }
	m3.peers = fakePeers{w}
	if _, err := m3.Local(ctx, "deb"); status.Code(err) != codes.Unavailable || !bytes.Contains([]byte(err.Error()), []byte("n1")) {
		t.Fatalf("no holder reachable: %v", err)
	}
	if f := files(t, m3); len(f) != 0 {
		t.Fatalf("a failed fetch left %v", f)
	}
	w.nodes["n1"] = m1
	m3.sweep(ctx)
	if b, err := os.ReadFile(m3.Path("deb")); err != nil || !bytes.Equal(b, good) || !slices.Contains(w.ms.Images["deb"].Nodes, "n3") {
		t.Fatalf("n3 after its sweep: %v, holders %v", err, w.ms.Images["deb"].Nodes)
	}
	if _, err := m2.Local(ctx, "nosuch"); status.Code(err) != codes.NotFound {
		t.Fatalf("missing image: %v", err)
	}
	// Delete: the local copy at once, another node's at its sweep.
	if err := m2.Delete(ctx, "deb"); err != nil {
		t.Fatal(err)
	}
	if f := files(t, m2); len(f) != 0 {
		t.Fatalf("n2 after delete: %v", f)
	}
	m3.sweep(ctx)
	if f := files(t, m3); len(f) != 0 {
		t.Fatalf("sweep left %v", f)
	}
}

func TestDeleteRefusedWhileInADrive(t *testing.T) {
	w := newWorld(t, "n1")
	m := w.nodes["n1"]
	good := isoBytes(100_000)
	if _, err := m.Upload(t.Context(), recvOf("deb", int64(len(good)), good, sum(good))); err != nil {
		t.Fatal(err)
	}
	w.ms.VMs["web"] = &consensus.VMRecord{Name: "web", Spec: consensus.VMSpecRecord{HasCDROM: true, CDROM: "deb"}}
	err := m.Delete(t.Context(), "deb")
	if status.Code(err) != codes.FailedPrecondition || !bytes.Contains([]byte(err.Error()), []byte("VM web")) {
		t.Fatalf("delete of an image in a drive: %v", err)
	}
	if _, err := os.Stat(m.Path("deb")); err != nil {
		t.Fatalf("the copy went: %v", err)
	}
	if err := m.Delete(t.Context(), "nosuch"); status.Code(err) != codes.NotFound {
		t.Fatalf("delete of a missing image: %v", err)
	}
}

// TestLaggingNodeFetches: a node whose applied metadata does not have an
// image yet (it joined a moment ago) reads the record with quorum instead
// of refusing, both to fetch its own copy and to serve one.
func TestLaggingNodeFetches(t *testing.T) {
	w := newWorld(t, "n1", "n2")
	ctx := t.Context()
	good := isoBytes(chunkSize + 77)
	if _, err := w.nodes["n1"].Upload(ctx, recvOf("fresh", int64(len(good)), good, sum(good))); err != nil {
		t.Fatal(err)
	}
	m2 := w.nodes["n2"]
	if err := os.Remove(m2.Path("fresh")); err != nil {
		t.Fatal(err)
	}
	m2.metaf = func() Meta { return fakeMeta{w: w, lag: true} }
	p, err := m2.Local(ctx, "fresh")
	if err != nil {
		t.Fatalf("a node behind on the metadata refused the image: %v", err)
	}
	if b, err := os.ReadFile(p); err != nil || !bytes.Equal(b, good) {
		t.Fatalf("copy on n2: %v", err)
	}
	var got []byte
	if err := m2.Read(ctx, "fresh", func(c *tandemv1.ImageChunk) error { got = append(got, c.GetData()...); return nil }); err != nil {
		t.Fatalf("a node behind on the metadata refused to serve the image: %v", err)
	}
	if !bytes.Equal(got, good) {
		t.Fatal("served copy differs")
	}
}
