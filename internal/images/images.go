package images

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/apierr"
	"github.com/tandemhci/tandem/internal/state"
	"github.com/tandemhci/tandem/internal/validate"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// ISO 9660's primary volume descriptor starts at sector 16 (byte 0x8000)
// with a type byte and the standard identifier "CD001".
const (
	isoMagicOffset = 0x8001
	isoMagic       = "CD001"
	// chunkSize is the size of the data messages of an upload and a read.
	chunkSize = 1 << 20
	// MaxSize bounds an image (internal/validate's rule).
	MaxSize = validate.MaxImageSize
	// sweepInterval is how often a node fetches the images it lacks and
	// removes the files of deleted ones.
	sweepInterval = 30 * time.Second
)

// Meta is the metadata client as the image manager uses it;
// *consensus.Meta satisfies it.
type Meta interface {
	State(ctx context.Context) (*consensus.MetaState, error)
	LocalState() (*consensus.MetaState, error)
	CreateImage(ctx context.Context, name string, size int64, sha256, node string) (*consensus.ImageRecord, error)
	AddImageCopy(ctx context.Context, name, sha256, node string) (*consensus.ImageRecord, error)
	DeleteImage(ctx context.Context, name string) error
}

// Peers calls other nodes' peer API.
type Peers interface {
	// Call runs f against node's peer API within timeout; its error is a
	// status error prefixed "on NODE: ".
	Call(ctx context.Context, ms *consensus.MetaState, node string, timeout time.Duration, f func(context.Context, tandemv1.PeerClient) error) error
}

// Config is what a Manager needs; every field is required.
type Config struct {
	State *state.State
	// Meta returns the metadata client, nil (a nil interface) while the
	// node is not in a cluster.
	Meta  func() Meta
	Peers Peers
}

// stamp identifies the file a verification was made of.
type stamp struct {
	sha256 string
	size   int64
	ino    uint64
	ctime  int64
}

// Manager keeps this node's copies of the images. Safe for concurrent use.
type Manager struct {
	st    *state.State
	metaf func() Meta
	peers Peers
	log   *slog.Logger

	mu       sync.Mutex
	verified map[string]stamp       // by image name
	locks    map[string]*sync.Mutex // one fetch or hash per image at a time
}

// New returns a Manager.
func New(c Config) *Manager {
	return &Manager{st: c.State, metaf: c.Meta, peers: c.Peers, log: c.State.Log.With("component", "images"),
		verified: map[string]stamp{}, locks: map[string]*sync.Mutex{}}
}

// Dir is where this node keeps its copies.
func (m *Manager) Dir() string { return filepath.Join(m.st.Config.DataDir, "images") }

// Path is the file of image name on this node.
func (m *Manager) Path(name string) string { return filepath.Join(m.Dir(), name+".iso") }

func (m *Manager) self() string { return m.st.Node.Name }

func (m *Manager) meta() (Meta, error) {
	mc := m.metaf()
	if mc == nil {
		return nil, status.Error(codes.FailedPrecondition, "this node is not in a cluster yet")
	}
	return mc, nil
}

func (m *Manager) fresh(ctx context.Context) (*consensus.MetaState, Meta, error) {
	mc, err := m.meta()
	if err != nil {
		return nil, nil, err
	}
	ms, err := mc.State(ctx)
	if err != nil {
		return nil, nil, apierr.From(err)
	}
	return ms, mc, nil
}

// record is image name's record: from this node's applied metadata, or,
// when that has none, from a linearizable read. A node that joined or
// restarted a moment ago may not have applied the upload yet, and refusing
// then left a fresh image without its copy there (e2e TestVMInstallFromISO,
// "on n3: no image named guest" 0.5 s after n3 joined).
func (m *Manager) record(ctx context.Context, mc Meta, name string) (*consensus.ImageRecord, *consensus.MetaState, error) {
	ms, err := apierr.LocalState(mc)
	if err != nil {
		return nil, nil, err
	}
	if r, ok := ms.Images[name]; ok {
		return r, ms, nil
	}
	if ms, err = mc.State(ctx); err != nil {
		return nil, nil, apierr.From(err)
	}
	if r, ok := ms.Images[name]; ok {
		return r, ms, nil
	}
	return nil, nil, status.Errorf(codes.NotFound, "no image named %s", name)
}

func (m *Manager) lock(name string) func() {
	m.mu.Lock()
	l, ok := m.locks[name]
	if !ok {
		l = &sync.Mutex{}
		m.locks[name] = l
	}
	m.mu.Unlock()
	l.Lock()
	return l.Unlock
}

// InfoOf is an image record as the API shows it; holders that are no
// longer members are left out.
func InfoOf(ms *consensus.MetaState, r *consensus.ImageRecord) *tandemv1.ImageInfo {
	var nodes []string
	for _, n := range r.Nodes {
		if rec, ok := ms.Nodes[n]; ok && rec.State == consensus.NodeMember {
			nodes = append(nodes, n)
		}
	}
	return &tandemv1.ImageInfo{Name: r.Name, SizeBytes: r.Size, Sha256: r.SHA256, Created: timestamppb.New(r.Created),
		Nodes: nodes, UsedBy: ms.ImageUsers(r.Name)}
}

// List is every image, sorted by name.
func (m *Manager) List(ctx context.Context) (*tandemv1.ListImagesResponse, error) {
	mc, err := m.meta()
	if err != nil {
		return nil, err
	}
	ms, err := apierr.LocalState(mc)
	if err != nil {
		return nil, err
	}
	out := &tandemv1.ListImagesResponse{}
	for _, n := range slices.Sorted(maps.Keys(ms.Images)) {
		out.Images = append(out.Images, InfoOf(ms, ms.Images[n]))
	}
	return out, nil
}

// Delete removes an image: refused while a VM's CD-ROM holds it. This
// node's copy goes at once, the others' at their next sweep.
func (m *Manager) Delete(ctx context.Context, name string) error {
	if err := validate.ImageName(name); err != nil {
		return status.Error(codes.InvalidArgument, validate.Message(err))
	}
	ms, mc, err := m.fresh(ctx)
	if err != nil {
		return err
	}
	if _, ok := ms.Images[name]; !ok {
		return status.Errorf(codes.NotFound, "no image named %s", name)
	}
	if users := ms.ImageUsers(name); len(users) > 0 {
		return status.Errorf(codes.FailedPrecondition, "image %s is in the CD-ROM of VM %s; eject it first (tandem vm cdrom %s eject)", name, strings.Join(users, ", "), users[0])
	}
	if err := mc.DeleteImage(ctx, name); err != nil {
		return apierr.From(err)
	}
	defer m.lock(name)()
	m.forget(name)
	if err := os.Remove(m.Path(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		m.log.Warn("cannot remove the copy of a deleted image", "image", name, "err", err)
	}
	m.log.Info("image deleted", "image", name)
	return nil
}

func (m *Manager) forget(name string) {
	m.mu.Lock()
	delete(m.verified, name)
	m.mu.Unlock()
}

// fileStamp identifies the file at path as it is now.
func fileStamp(fi os.FileInfo) (ino uint64, ctime int64) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino, st.Ctim.Nano()
	}
	return 0, fi.ModTime().UnixNano()
}

// hashFile is the hex SHA-256 of the file at path.
func hashFile(ctx context.Context, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, ctxReader{ctx, f}); err != nil {
		return "", fmt.Errorf("hash %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// ctxReader stops a long copy when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// verifiedLocal is the path of this node's copy of r when it matches the
// record (hashing it unless it was verified unchanged since), "" when
// there is none or it does not match. Call with the image's lock held.
func (m *Manager) verifiedLocal(ctx context.Context, r *consensus.ImageRecord) (string, error) {
	p := m.Path(r.Name)
	fi, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	ino, ctime := fileStamp(fi)
	want := stamp{sha256: r.SHA256, size: r.Size, ino: ino, ctime: ctime}
	m.mu.Lock()
	got, ok := m.verified[r.Name]
	m.mu.Unlock()
	if ok && got == want {
		return p, nil
	}
	if fi.Size() == r.Size {
		sum, err := hashFile(ctx, p)
		if err != nil {
			return "", err
		}
		if sum == r.SHA256 {
			m.mu.Lock()
			m.verified[r.Name] = want
			m.mu.Unlock()
			return p, nil
		}
		m.log.Error("a copy of an image does not match its recorded SHA-256; replacing it", "image", r.Name, "sha256", sum, "want", r.SHA256)
	} else {
		m.log.Warn("a copy of an image has the wrong size; replacing it", "image", r.Name, "size", fi.Size(), "want", r.Size)
	}
	m.forget(r.Name)
	if err := os.Remove(p); err != nil {
		return "", err
	}
	return "", nil
}

// Local is the path of a verified copy of image name on this node,
// fetched from a node that holds one when this node has none or its copy
// does not match the record. VMs attach only such a path.
func (m *Manager) Local(ctx context.Context, name string) (string, error) {
	mc, err := m.meta()
	if err != nil {
		return "", err
	}
	r, ms, err := m.record(ctx, mc, name)
	if err != nil {
		return "", err
	}
	defer m.lock(name)()
	p, err := m.verifiedLocal(ctx, r)
	if err != nil {
		return "", status.Errorf(codes.Internal, "node %s: image %s: %v", m.self(), name, err)
	}
	if p == "" {
		if p, err = m.fetch(ctx, ms, r); err != nil {
			return "", err
		}
	}
	if !slices.Contains(r.Nodes, m.self()) {
		if _, err := mc.AddImageCopy(ctx, r.Name, r.SHA256, m.self()); err != nil {
			// The copy is good; the record catches up at the next sweep.
			m.log.Warn("cannot record this node's copy of an image", "image", name, "err", err)
		}
	}
	return p, nil
}

// fetch copies r from the first node holding it that answers, verifying
// the SHA-256 before the copy is renamed into place.
func (m *Manager) fetch(ctx context.Context, ms *consensus.MetaState, r *consensus.ImageRecord) (string, error) {
	var errs []string
	for _, node := range r.Nodes {
		if node == m.self() {
			continue
		}
		if n, ok := ms.Nodes[node]; !ok || n.State != consensus.NodeMember {
			continue
		}
		p, err := m.fetchFrom(ctx, ms, node, r)
		if err == nil {
			return p, nil
		}
		m.log.Warn("cannot copy an image from a peer", "image", r.Name, "from", node, "err", err)
		errs = append(errs, err.Error())
		if ctx.Err() != nil {
			break
		}
	}
	if len(errs) == 0 {
		return "", status.Errorf(codes.FailedPrecondition, "image %s: no other member holds a copy (holders: %s)", r.Name, strings.Join(r.Nodes, ", "))
	}
	return "", status.Errorf(codes.Unavailable, "node %s cannot get a verified copy of image %s: %s", m.self(), r.Name, strings.Join(errs, "; "))
}

func (m *Manager) fetchFrom(ctx context.Context, ms *consensus.MetaState, node string, r *consensus.ImageRecord) (string, error) {
	start := time.Now()
	f, tmp, err := m.tempFile(r.Name)
	if err != nil {
		return "", err
	}
	keep := false
	defer func() {
		if !keep {
			f.Close()
			os.Remove(tmp)
		}
	}()
	h := sha256.New()
	var n int64
	// The timeout covers the whole copy: at least 10 MB/s plus a minute.
	timeout := time.Minute + time.Duration(r.Size/(10<<20))*time.Second
	err = m.peers.Call(ctx, ms, node, timeout, func(ctx context.Context, c tandemv1.PeerClient) error {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return err
		}
		if err := f.Truncate(0); err != nil {
			return err
		}
		h.Reset()
		n = 0
		stream, err := c.ImageRead(ctx, &tandemv1.PeerImageRequest{Image: r.Name})
		if err != nil {
			return err
		}
		for {
			chunk, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			n += int64(len(chunk.Data))
			if n > r.Size {
				return fmt.Errorf("%s sent more than the image's %d bytes", node, r.Size)
			}
			h.Write(chunk.Data)
			if _, err := f.Write(chunk.Data); err != nil {
				return err
			}
		}
	})
	if err != nil {
		return "", err
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if n != r.Size || sum != r.SHA256 {
		return "", fmt.Errorf("the copy from %s has %d bytes and SHA-256 %s, the image %d bytes and %s", node, n, sum, r.Size, r.SHA256)
	}
	p, err := m.install(f, tmp, r)
	if err != nil {
		return "", err
	}
	keep = true
	m.log.Info("image copied", "image", r.Name, "from", node, "bytes", n, "took", time.Since(start).Round(time.Millisecond))
	return p, nil
}

// tempFile is a new file in the image directory for an image's bytes.
func (m *Manager) tempFile(name string) (*os.File, string, error) {
	if err := os.MkdirAll(m.Dir(), 0o755); err != nil {
		return nil, "", err
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	tmp := filepath.Join(m.Dir(), fmt.Sprintf(".part-%s-%x", name, b))
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	return f, tmp, err
}

// install syncs and closes f (at tmp, holding r's verified bytes) and
// renames it into place read-only; the directory is synced too.
func (m *Manager) install(f *os.File, tmp string, r *consensus.ImageRecord) (string, error) {
	if err := f.Sync(); err != nil {
		f.Close()
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	// QEMU (another user under libvirt's DAC) reads it; nobody writes it.
	if err := os.Chmod(tmp, 0o444); err != nil {
		return "", err
	}
	p := m.Path(r.Name)
	if err := os.Rename(tmp, p); err != nil {
		return "", err
	}
	if d, err := os.Open(m.Dir()); err == nil {
		_ = d.Sync()
		d.Close()
	}
	fi, err := os.Stat(p)
	if err != nil {
		return "", err
	}
	ino, ctime := fileStamp(fi)
	m.mu.Lock()
	m.verified[r.Name] = stamp{sha256: r.SHA256, size: r.Size, ino: ino, ctime: ctime}
	m.mu.Unlock()
	return p, nil
}

// Read streams this node's verified copy of image name (the peer call
// ImageRead); it never fetches.
func (m *Manager) Read(ctx context.Context, name string, send func(*tandemv1.ImageChunk) error) error {
	mc, err := m.meta()
	if err != nil {
		return err
	}
	r, _, err := m.record(ctx, mc, name)
	if err != nil {
		return err
	}
	unlock := m.lock(name)
	p, err := m.verifiedLocal(ctx, r)
	unlock()
	if err != nil {
		return status.Errorf(codes.Internal, "image %s: %v", name, err)
	}
	if p == "" {
		return status.Errorf(codes.FailedPrecondition, "node %s holds no verified copy of image %s", m.self(), name)
	}
	f, err := os.Open(p)
	if err != nil {
		return status.Errorf(codes.Internal, "image %s: %v", name, err)
	}
	defer f.Close()
	buf := make([]byte, chunkSize)
	for {
		n, err := io.ReadFull(f, buf)
		if n > 0 {
			if serr := send(&tandemv1.ImageChunk{Data: buf[:n]}); serr != nil {
				return serr
			}
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil
		}
		if err != nil {
			return status.Errorf(codes.Internal, "image %s: %v", name, err)
		}
	}
}

// Run keeps this node's copies in line with the records until ctx ends:
// it fetches the images this node lacks (a node that was down during an
// upload, or joined later) and removes the files of deleted images.
func (m *Manager) Run(ctx context.Context) {
	if !m.st.Config.ComputeEnabled() {
		return
	}
	t := time.NewTicker(sweepInterval)
	defer t.Stop()
	for {
		m.sweep(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (m *Manager) sweep(ctx context.Context) {
	mc := m.metaf()
	if mc == nil {
		return
	}
	ms, err := mc.LocalState()
	if err != nil || !ms.Bootstrapped() {
		return
	}
	for _, name := range slices.Sorted(maps.Keys(ms.Images)) {
		if slices.Contains(ms.Images[name].Nodes, m.self()) {
			continue
		}
		if _, err := m.Local(ctx, name); err != nil && ctx.Err() == nil {
			m.log.Warn("cannot copy an image to this node yet", "image", name, "err", err)
		}
	}
	entries, err := os.ReadDir(m.Dir())
	if err != nil {
		return
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".part-") {
			// A copy or upload that died with its tandemd: one under way
			// writes to its file all the time.
			if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > time.Hour {
				_ = os.Remove(filepath.Join(m.Dir(), e.Name()))
			}
			continue
		}
		name, ok := strings.CutSuffix(e.Name(), ".iso")
		if !ok || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		if _, ok := ms.Images[name]; ok {
			continue
		}
		unlock := m.lock(name)
		// Read again under the lock: an upload of that name may have
		// committed meanwhile.
		if cur, err := mc.LocalState(); err == nil {
			if _, ok := cur.Images[name]; !ok {
				m.forget(name)
				if err := os.Remove(m.Path(name)); err == nil {
					m.log.Info("copy of a deleted image removed", "image", name)
				}
			}
		}
		unlock()
	}
}
