package volume

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tandemhci/tandem/blockstore/nbd"
	"github.com/tandemhci/tandem/blockstore/rbd"
	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/apierr"
	"github.com/tandemhci/tandem/internal/sealed"
	"github.com/tandemhci/tandem/internal/validate"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// RBD volumes (issue 15, docs/design.md §3.6). An RBD volume has no shard
// and no replicas: its catalog entry names the storage, pool and image,
// the owner node and an epoch. The owner opens the image with the
// exclusive lock and serves it on its NBD export, the unix socket and the
// TLS TCP export alike. Another node becomes the owner only by taking the
// image over (blocklist the old owner's client, break its lock, acquire
// it) and then committing itself as owner at the epoch it read, in that
// order. The clients to blocklist are recorded in the catalog first
// (consensus.BlockedClient), and only their own node removes their entries,
// once it proved no process of it can hold them (rbdunblock.go).

// rbdTimeout bounds one administrative Ceph step (connect, create,
// remove, stat) of an API call; the backend's own timeouts (10 s for the
// monitors, 30 s for the OSDs) are shorter or equal, so a dead cluster
// gives a clear error, not a hung call.
const rbdTimeout = 40 * time.Second

// showCephTimeout bounds the Ceph part of show (and so of list and the
// cluster status) while Ceph does not answer.
const showCephTimeout = 5 * time.Second

// StorageMeta is the metadata client's part for external storage and RBD
// volumes (*consensus.Meta).
type StorageMeta interface {
	AddStorage(ctx context.Context, r consensus.StorageRecord) (*consensus.StorageRecord, error)
	RemoveStorage(ctx context.Context, name string) error
	UpdateRBDVolume(ctx context.Context, u consensus.VolumeRBDCmd) (*consensus.VolumeEntry, error)
	Blocklist(ctx context.Context, u consensus.StorageBlocklistCmd) (*consensus.StorageRecord, error)
}

// rbdVolume is an RBD volume this node owns (or is opening).
type rbdVolume struct {
	mu    sync.Mutex // serialises open, close and takeover
	entry consensus.VolumeEntry
	vol   atomic.Pointer[rbd.Volume]

	attached atomic.Int32 // NBD connections using the export
}

func (m *Manager) storageMeta() (StorageMeta, error) {
	sm, ok := m.meta().(StorageMeta)
	if !ok || sm == nil {
		return nil, status.Error(codes.FailedPrecondition, "this node is not in a cluster")
	}
	return sm, nil
}

// storageBox seals and opens storage keys with the cluster secret.
func (m *Manager) storageBox() (*sealed.Box, error) {
	return sealed.NewFrom(m.secret, sealed.PurposeStorageKey)
}

// keyField is the associated data of a sealed key with the storage's name:
// a blob moved to another storage's record does not open.
const keyField = "rbd.key"

// rbdConfig is how this node reaches pool on storage st, key opened in
// memory.
func (m *Manager) rbdConfig(st *consensus.StorageRecord, pool string) (rbd.Config, error) {
	box, err := m.storageBox()
	if err != nil {
		return rbd.Config{}, status.Errorf(codes.FailedPrecondition, "cannot open the key of storage %s on %s: %v", st.Name, m.self(), err)
	}
	key, err := box.Open(st.KeySealed, st.Name, keyField)
	if err != nil {
		return rbd.Config{}, status.Errorf(codes.FailedPrecondition, "cannot open the key of storage %s on %s: %v", st.Name, m.self(), err)
	}
	if pool == "" {
		pool = st.Pool
	}
	return rbd.Config{MonHost: st.MonHost, Client: st.Client, Key: string(key), Pool: pool}, nil
}

// entryConfig is rbdConfig for volume e of catalog ms.
func (m *Manager) entryConfig(ms *consensus.MetaState, e *consensus.VolumeEntry) (rbd.Config, error) {
	st, ok := ms.Storage[e.Storage]
	if !ok {
		return rbd.Config{}, status.Errorf(codes.FailedPrecondition, "volume %s is on storage %s, which the cluster no longer knows", e.Name, e.Storage)
	}
	return m.rbdConfig(st, e.Pool)
}

// cephError is the API status of a Ceph step that failed, naming what
// was done and where.
func cephError(what string, err error) error {
	st := status.Convert(apierr.From(err))
	return status.Errorf(st.Code(), "%s: %s", what, st.Message())
}

// AddStorage checks that the storage answers (monitors, key, pool) within
// a bound, seals its key and records it; on any failure nothing is stored.
func (m *Manager) AddStorage(ctx context.Context, req *tandemv1.AddStorageRequest) (*tandemv1.StorageInfo, error) {
	if err := validate.StorageName(req.Name); err != nil {
		return nil, status.Error(codes.InvalidArgument, validate.Message(err))
	}
	if req.Type != consensus.StorageRBD {
		return nil, status.Errorf(codes.InvalidArgument, "storage type %s: only %q is supported", validate.Show(req.Type), consensus.StorageRBD)
	}
	cfg := rbd.Config{MonHost: req.MonHost, Client: req.Client, Key: strings.TrimSpace(req.Key), Pool: req.Pool}
	if err := cfg.Validate(); err != nil {
		return nil, status.Error(codes.InvalidArgument, strings.TrimPrefix(err.Error(), rbd.ErrInvalid.Error()+": "))
	}
	sm, err := m.storageMeta()
	if err != nil {
		return nil, err
	}
	if err := m.st.Quorum(ctx); err != nil {
		return nil, err
	}
	ms, err := m.Catalog(ctx, true)
	if err != nil {
		return nil, err
	}
	if _, ok := ms.Storage[req.Name]; ok {
		return nil, status.Errorf(codes.AlreadyExists, "a storage named %q exists already", req.Name)
	}
	// Reach it now: the monitors answer, the key works, the pool exists
	// and its images can be listed.
	cctx, cancel := context.WithTimeout(ctx, rbdTimeout)
	defer cancel()
	p, err := rbd.Connect(cctx, cfg)
	if err != nil {
		return nil, cephError("storage "+req.Name+" not added", err)
	}
	defer p.Close()
	if _, err := p.List(cctx); err != nil {
		return nil, cephError("storage "+req.Name+" not added: listing pool "+req.Pool, err)
	}
	box, err := m.storageBox()
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "cannot seal the key on this node: %v", err)
	}
	blob, err := box.Seal([]byte(cfg.Key), req.Name, keyField)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "seal the key: %v", err)
	}
	rec, err := sm.AddStorage(ctx, consensus.StorageRecord{Name: req.Name, Type: req.Type, MonHost: cfg.MonHost, Client: cfg.Client, KeySealed: blob, Pool: cfg.Pool})
	if err != nil {
		return nil, metaError(err)
	}
	m.log.Info("storage added", "storage", rec.Name, "type", rec.Type, "pool", rec.Pool, "mon_host", rec.MonHost, "client", rec.Client)
	return storageInfo(rec, nil), nil
}

func storageInfo(r *consensus.StorageRecord, ms *consensus.MetaState) *tandemv1.StorageInfo {
	out := &tandemv1.StorageInfo{Name: r.Name, Type: r.Type, MonHost: r.MonHost, Client: r.Client, Pool: r.Pool, Created: timestamppb.New(r.Created)}
	if ms != nil {
		out.Volumes = ms.StorageUsers(r.Name)
	}
	for _, b := range r.Blocklisted {
		out.Blocklisted = append(out.Blocklisted, &tandemv1.BlockedClient{Addr: b.Addr, Node: b.Node, Volume: b.Volume,
			Since: timestamppb.New(b.Since), Expires: timestamppb.New(b.Expires)})
	}
	return out
}

// ListStorage lists the storages (this replica's view).
func (m *Manager) ListStorage(ctx context.Context) (*tandemv1.ListStorageResponse, error) {
	ms, err := m.Catalog(ctx, false)
	if err != nil {
		return nil, err
	}
	out := &tandemv1.ListStorageResponse{}
	for _, n := range sortedKeys(ms.Storage) {
		out.Storage = append(out.Storage, storageInfo(ms.Storage[n], ms))
	}
	return out, nil
}

func sortedKeys[V any](mp map[string]V) []string {
	out := make([]string, 0, len(mp))
	for k := range mp {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// ShowStorage describes a storage and whether this node reaches it now.
func (m *Manager) ShowStorage(ctx context.Context, name string) (*tandemv1.StorageInfo, error) {
	ms, err := m.Catalog(ctx, false)
	if err != nil {
		return nil, err
	}
	st, ok := ms.Storage[name]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "no storage named %q", name)
	}
	out := storageInfo(st, ms)
	out.Health = "ok"
	cfg, err := m.rbdConfig(st, "")
	if err == nil {
		cctx, cancel := context.WithTimeout(ctx, rbdTimeout)
		defer cancel()
		var p *rbd.Pool
		if p, err = rbd.Connect(cctx, cfg); err == nil {
			out.AvailableBytes, err = p.Available(cctx)
			p.Close()
		}
	}
	if err != nil {
		out.Health, out.Warning = "unavailable", status.Convert(apierr.From(err)).Message()
	}
	return out, nil
}

// RemoveStorage forgets a storage that no volume uses.
func (m *Manager) RemoveStorage(ctx context.Context, name string) error {
	sm, err := m.storageMeta()
	if err != nil {
		return err
	}
	if err := m.st.Quorum(ctx); err != nil {
		return err
	}
	ms, err := m.Catalog(ctx, true)
	if err != nil {
		return err
	}
	if _, ok := ms.Storage[name]; !ok {
		return status.Errorf(codes.NotFound, "no storage named %q", name)
	}
	if used := ms.StorageUsers(name); len(used) > 0 {
		return status.Errorf(codes.FailedPrecondition, "storage %s holds volumes %s; delete them first", name, strings.Join(used, ", "))
	}
	if err := sm.RemoveStorage(ctx, name); err != nil {
		return metaError(err)
	}
	return nil
}

// pickStorage is the storage a new RBD volume goes to: the one named, or
// the only one.
func pickStorage(ms *consensus.MetaState, name string) (*consensus.StorageRecord, error) {
	if name != "" {
		st, ok := ms.Storage[name]
		if !ok {
			return nil, status.Errorf(codes.NotFound, "no storage named %q (tandem storage list)", name)
		}
		return st, nil
	}
	switch len(ms.Storage) {
	case 0:
		return nil, status.Error(codes.FailedPrecondition, "no RBD storage is configured; add one with 'tandem storage add rbd NAME --pool P --mon ADDR --client C --key-file F'")
	case 1:
		for _, st := range ms.Storage {
			return st, nil
		}
	}
	return nil, status.Errorf(codes.InvalidArgument, "several storages are configured (%s); name one with --storage", strings.Join(sortedKeys(ms.Storage), ", "))
}

// createRBD creates the image, records the volume and has its owner open
// it; a failure at any step removes what the earlier ones made.
func (m *Manager) createRBD(ctx context.Context, req *tandemv1.CreateVolumeRequest) (*tandemv1.VolumeInfo, error) {
	if req.Replicas != 0 {
		return nil, status.Error(codes.InvalidArgument, "--replicas does not apply to an RBD volume: Ceph's pool replicates it")
	}
	if len(req.Nodes) > 1 {
		return nil, status.Error(codes.InvalidArgument, "an RBD volume has one owner: give at most one node")
	}
	if req.Pool != "" {
		if err := rbd.PoolName(req.Pool); err != nil {
			return nil, status.Error(codes.InvalidArgument, strings.TrimPrefix(err.Error(), rbd.ErrInvalid.Error()+": "))
		}
	}
	if _, err := m.storageMeta(); err != nil {
		return nil, err
	}
	if err := m.st.Quorum(ctx); err != nil {
		return nil, err
	}
	ms, err := m.Catalog(ctx, true)
	if err != nil {
		return nil, err
	}
	if _, ok := ms.Volumes[req.Name]; ok {
		return nil, status.Errorf(codes.AlreadyExists, "volume %q already exists", req.Name)
	}
	st, err := pickStorage(ms, req.Storage)
	if err != nil {
		return nil, err
	}
	owner := m.self()
	if len(req.Nodes) == 1 {
		owner = req.Nodes[0]
	}
	if rec, ok := ms.Nodes[owner]; !ok || rec.State != consensus.NodeMember || rec.Role == "witness" {
		return nil, status.Errorf(codes.InvalidArgument, "node %q is not a data node of this cluster; it cannot own a volume", owner)
	}
	cfg, err := m.rbdConfig(st, req.Pool)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, rbdTimeout)
	defer cancel()
	p, err := rbd.Connect(cctx, cfg)
	if err != nil {
		return nil, cephError(fmt.Sprintf("volume %s not created: storage %s", req.Name, st.Name), err)
	}
	defer p.Close()
	if err := p.Create(cctx, req.Name, req.SizeBytes); err != nil {
		return nil, cephError(fmt.Sprintf("volume %s not created: pool %s", req.Name, cfg.Pool), err)
	}
	cleanCtx := context.WithoutCancel(ctx)
	removeImage := func() {
		rctx, cancel := context.WithTimeout(cleanCtx, rbdTimeout)
		defer cancel()
		if err := p.Remove(rctx, req.Name); err != nil && !errors.Is(err, rbd.ErrNotFound) {
			m.log.Error("cannot remove the image of a failed create", "volume", req.Name, "pool", cfg.Pool, "err", err)
		}
	}
	e, err := m.meta().CreateVolume(ctx, consensus.VolumeEntry{Name: req.Name, Size: req.SizeBytes, Backend: consensus.BackendRBD,
		Storage: st.Name, Pool: cfg.Pool, Image: req.Name, Owner: owner})
	if err != nil {
		removeImage()
		return nil, metaError(err)
	}
	if err := m.onNode(ctx, ms, owner, func(ctx context.Context, c tandemv1.PeerClient) error {
		_, err := c.VolumeOpen(ctx, &tandemv1.PeerVolumeOpenRequest{Volume: &tandemv1.PeerVolume{Name: e.Name}, Create: true})
		return err
	}); err != nil {
		m.log.Error("the owner cannot open the new RBD volume; cleaning up", "volume", e.Name, "owner", owner, "err", err)
		meta := m.meta()
		if serr := meta.SetVolumeState(cleanCtx, e.Name, consensus.VolumeDeleting); serr != nil {
			m.log.Error("cannot mark the failed volume deleting", "volume", e.Name, "err", serr)
		}
		_ = m.onNode(cleanCtx, ms, owner, func(ctx context.Context, c tandemv1.PeerClient) error {
			_, err := c.VolumeClose(ctx, &tandemv1.PeerVolumeCloseRequest{Name: e.Name, Destroy: true})
			return err
		})
		removeImage()
		if derr := meta.DeleteVolume(cleanCtx, e.Name); derr != nil {
			m.log.Error("cannot remove the failed volume from the catalog", "volume", e.Name, "err", derr)
		}
		return nil, status.Errorf(status.Code(err), "volume %s not created: its owner %s cannot open the image: %s", e.Name, owner, grpcMessage(err))
	}
	if err := m.meta().SetVolumeState(ctx, e.Name, consensus.VolumeReady); err != nil {
		return nil, metaError(err)
	}
	m.log.Info("RBD volume created", "volume", e.Name, "size", e.Size, "storage", e.Storage, "pool", e.Pool, "owner", e.Owner)
	return m.Show(ctx, e.Name, 10*time.Second)
}

func (m *Manager) rbdGet(name string) *rbdVolume {
	m.rbdMu.Lock()
	defer m.rbdMu.Unlock()
	return m.rbdVols[name]
}

func (m *Manager) rbdSlot(name string) *rbdVolume {
	m.rbdMu.Lock()
	defer m.rbdMu.Unlock()
	rv, ok := m.rbdVols[name]
	if !ok {
		rv = &rbdVolume{}
		m.rbdVols[name] = rv
	}
	return rv
}

// freshEntry is the catalog (a linearizable read) and RBD volume name's
// entry in it.
func (m *Manager) freshEntry(ctx context.Context, name string) (*consensus.MetaState, *consensus.VolumeEntry, error) {
	ms, err := m.Catalog(ctx, true)
	if err != nil {
		return nil, nil, err
	}
	e, ok := ms.Volumes[name]
	if !ok {
		return nil, nil, status.Errorf(codes.NotFound, "no volume named %q", name)
	}
	if !e.IsRBD() {
		return nil, nil, status.Errorf(codes.InvalidArgument, "volume %s is not an RBD volume", name)
	}
	return ms, e, nil
}

// openRBD opens an RBD volume this node owns, with the exclusive lock
// (the peer call VolumeOpen without a shard). Opening one already open is
// a no-op.
func (m *Manager) openRBD(ctx context.Context, name string) error {
	ms, e, err := m.freshEntry(ctx, name)
	if err != nil {
		return err
	}
	return m.openRBDEntry(ctx, ms, e)
}

func (m *Manager) openRBDEntry(ctx context.Context, ms *consensus.MetaState, e *consensus.VolumeEntry) error {
	if m.st.Fence.Fenced() {
		return status.Errorf(codes.FailedPrecondition, "node %s is self-fenced: it serves no volume until quorum is back", m.self())
	}
	if e.Owner != m.self() {
		return status.Errorf(codes.FailedPrecondition, "node %s is not the owner of RBD volume %s: %s is (epoch %d)", m.self(), e.Name, e.Owner, e.Epoch)
	}
	if e.State == consensus.VolumeDeleting {
		return status.Errorf(codes.FailedPrecondition, "volume %s is being deleted", e.Name)
	}
	if vm := VMOf(ms, e.Name); vm != "" {
		return status.Errorf(codes.FailedPrecondition, "volume %s is a %s", e.Name, vmDiskNote(vm))
	}
	cfg, err := m.entryConfig(ms, e)
	if err != nil {
		return err
	}
	rv := m.rbdSlot(e.Name)
	rv.mu.Lock()
	defer rv.mu.Unlock()
	if rv.vol.Load() != nil {
		return nil
	}
	octx, cancel := context.WithTimeout(ctx, rbdTimeout)
	defer cancel()
	v, err := rbd.Open(octx, cfg, e.Image, rbd.OpenOptions{Exclusive: true})
	if err != nil {
		m.dropSlot(e.Name, rv)
		return cephError(fmt.Sprintf("open RBD image %s/%s on %s", e.Pool, e.Image, m.self()), err)
	}
	rv.entry = *e
	rv.vol.Store(v)
	m.log.Info("RBD volume opened with its exclusive lock", "volume", e.Name, "image", e.Pool+"/"+e.Image, "client", v.ClientAddr(), "epoch", e.Epoch)
	return nil
}

// dropSlot forgets rv if it is still name's slot and holds nothing.
func (m *Manager) dropSlot(name string, rv *rbdVolume) {
	m.rbdMu.Lock()
	defer m.rbdMu.Unlock()
	if m.rbdVols[name] == rv && rv.vol.Load() == nil {
		delete(m.rbdVols, name)
	}
}

// closeRBD closes this node's client of an RBD volume and returns its
// address ("" if it was not open).
func (m *Manager) closeRBD(name string) string {
	rv := m.rbdGet(name)
	if rv == nil {
		return ""
	}
	rv.mu.Lock()
	defer rv.mu.Unlock()
	v := rv.vol.Swap(nil)
	m.dropSlot(name, rv)
	if v == nil {
		return ""
	}
	addr := v.ClientAddr()
	if err := v.Close(); err != nil {
		m.log.Warn("closing the RBD client", "volume", name, "err", err)
	}
	m.log.Info("RBD volume closed", "volume", name, "client", addr)
	return addr
}

// promoteRBD makes this node the owner of an RBD volume: take the image
// over (blocklist the lock owner's client, break its lock, acquire it),
// record that as an event, then commit the new owner at the epoch read
// (the peer call VolumePromote). Every step is in this order; a failed
// commit closes the client again, which releases the lock.
func (m *Manager) promoteRBD(ctx context.Context, name, reason string) (*tandemv1.VolumeInfo, error) {
	sm, err := m.storageMeta()
	if err != nil {
		return nil, err
	}
	ms, e, err := m.freshEntry(ctx, name)
	if err != nil {
		return nil, err
	}
	if e.Owner == m.self() && VMOf(ms, name) != "" {
		return m.showRBD(ctx, ms, e, 3*time.Second), nil
	}
	if e.Owner == m.self() {
		if err := m.openRBDEntry(ctx, ms, e); err != nil {
			return nil, err
		}
		return m.rbdStatus(name)
	}
	if e.State != consensus.VolumeReady {
		return nil, status.Errorf(codes.FailedPrecondition, "volume %s is %s", name, e.State)
	}
	cfg, err := m.entryConfig(ms, e)
	if err != nil {
		return nil, err
	}
	vm := VMOf(ms, name)
	if err := m.takeover(ctx, sm, ms, cfg, e, reason, vm); err != nil {
		return nil, err
	}
	if vm != "" {
		ms, e, err = m.freshEntry(ctx, name)
		if err != nil {
			return nil, err
		}
		return m.showRBD(ctx, ms, e, 3*time.Second), nil
	}
	return m.rbdStatus(name)
}

// takeover is promoteRBD's part under the volume's lock.
//
// The disk of VM vm (vm != "") is QEMU's: every other watcher is
// blocklisted too, and this node's client is closed once the owner is
// committed, releasing the lock for the VM's QEMU.
func (m *Manager) takeover(ctx context.Context, sm StorageMeta, ms *consensus.MetaState, cfg rbd.Config, e *consensus.VolumeEntry, reason, vm string) error {
	name := e.Name
	rv := m.rbdSlot(name)
	rv.mu.Lock()
	defer rv.mu.Unlock()
	if rv.vol.Load() != nil {
		return status.Errorf(codes.FailedPrecondition, "node %s has %s open already", m.self(), name)
	}
	octx, cancel := context.WithTimeout(ctx, rbdTimeout)
	defer cancel()
	v, err := rbd.Open(octx, cfg, e.Image, rbd.OpenOptions{})
	if err != nil {
		m.dropSlot(name, rv)
		return cephError(fmt.Sprintf("open RBD image %s/%s on %s", e.Pool, e.Image, m.self()), err)
	}
	fail := func(err error) error {
		_ = v.Close()
		m.dropSlot(name, rv)
		return err
	}
	takeover := v.Takeover
	if vm != "" {
		takeover = v.TakeoverAll
	}
	fenced, err := takeover(octx, rbd.DefaultBlocklistExpiry, func(addrs []string) error {
		return m.recordBlocklist(ctx, ms, e, addrs)
	})
	if err != nil {
		return fail(cephError(fmt.Sprintf("take RBD image %s/%s over on %s", e.Pool, e.Image, m.self()), err))
	}
	// The event comes before the commit: whoever reads the log sees the
	// old owner fenced before the new one is recorded.
	detail := fmt.Sprintf("volume %s: %s took the RBD image %s/%s over from %s (epoch %d): blocklisted %s, broke its lock, acquired it", name, m.self(), e.Pool, e.Image, e.Owner, e.Epoch, orNone(strings.Join(fenced, ", ")))
	if err := m.meta().Audit(ctx, "volume-rbd-takeover", detail); err != nil {
		return fail(metaError(err))
	}
	upd, err := sm.UpdateRBDVolume(ctx, consensus.VolumeRBDCmd{Name: name, Owner: m.self(), Epoch: e.Epoch, Blocklisted: fenced, Reason: reason})
	if err != nil {
		return fail(metaError(err))
	}
	if vm != "" {
		_ = v.Close()
		m.dropSlot(name, rv)
		m.log.Warn("RBD volume taken over for its VM's QEMU; this node's client closed", "volume", name, "vm", vm, "from", e.Owner, "blocklisted", fenced, "epoch", upd.Epoch)
		return nil
	}
	rv.entry = *upd
	rv.vol.Store(v)
	m.log.Warn("RBD volume taken over", "volume", name, "from", e.Owner, "blocklisted", fenced, "epoch", upd.Epoch)
	return nil
}

// rbdStatus is this node's view of an RBD volume it owns (the peer call
// VolumeStatus).
func (m *Manager) rbdStatus(name string) (*tandemv1.VolumeInfo, error) {
	rv := m.rbdGet(name)
	if rv == nil || rv.vol.Load() == nil {
		return nil, status.Errorf(codes.NotFound, "node %s has RBD volume %q not open", m.self(), name)
	}
	rv.mu.Lock()
	e := rv.entry
	rv.mu.Unlock()
	v := rv.vol.Load()
	out := &tandemv1.VolumeInfo{Name: name, SizeBytes: v.Size(), Epoch: e.Epoch, Primary: m.self(), AnsweredBy: m.self(),
		Backend: consensus.BackendRBD, Storage: e.Storage, Pool: e.Pool, Image: e.Image,
		NbdUnix: fmt.Sprintf("nbd+unix:///%s?socket=%s", name, m.nbdSocket), NbdConnections: rv.attached.Load()}
	if a := m.st.Node.NBDAddr; a != "" {
		out.NbdTcp = fmt.Sprintf("nbds://%s/%s", a, name)
	}
	return out, nil
}

// nodeAt names the member whose backend address has addr's IP.
func nodeAt(ms *consensus.MetaState, addr string) string {
	ip, _, ok := strings.Cut(addr, ":")
	if !ok || ip == "" {
		return ""
	}
	for _, n := range sortedKeys(ms.Nodes) {
		b := ms.Nodes[n].BackendAddr
		if h, _, err := net.SplitHostPort(b); err == nil {
			b = h
		}
		if b == ip {
			return n
		}
	}
	return ""
}

// showRBD is an RBD volume as its owner serves it and as Ceph sees it.
func (m *Manager) showRBD(ctx context.Context, ms *consensus.MetaState, e *consensus.VolumeEntry, timeout time.Duration) *tandemv1.VolumeInfo {
	out := &tandemv1.VolumeInfo{Name: e.Name, SizeBytes: e.Size, Epoch: e.Epoch, Primary: e.Owner, Backend: consensus.BackendRBD,
		Storage: e.Storage, Pool: e.Pool, Image: e.Image, Created: timestamppb.New(e.Created), State: e.State}
	var warnings []string
	if vm := VMOf(ms, e.Name); vm == "" {
		cctx, cancel := context.WithTimeout(ctx, timeout)
		var owner *tandemv1.VolumeInfo
		err := m.onNode(cctx, ms, e.Owner, func(ctx context.Context, c tandemv1.PeerClient) error {
			var err error
			owner, err = c.VolumeStatus(ctx, &tandemv1.PeerVolumeStatusRequest{Name: e.Name})
			return err
		})
		cancel()
		if err == nil && owner != nil {
			out.NbdUnix, out.NbdTcp, out.NbdConnections, out.AnsweredBy = owner.NbdUnix, owner.NbdTcp, owner.NbdConnections, owner.AnsweredBy
		} else if e.State == consensus.VolumeReady {
			warnings = append(warnings, fmt.Sprintf("the owner %s does not serve it: %s", e.Owner, grpcMessage(err)))
		}
	}
	cfg, err := m.entryConfig(ms, e)
	if err == nil {
		// Show, list and the cluster status wait for a dead Ceph only
		// this long, not the create's bound.
		cfg.MonTimeout, cfg.OSDTimeout = max(timeout, showCephTimeout), max(timeout, showCephTimeout)
		sctx, cancel := context.WithTimeout(ctx, rbdTimeout)
		var p *rbd.Pool
		if p, err = rbd.Connect(sctx, cfg); err == nil {
			var info rbd.Info
			if info, err = p.Stat(sctx, e.Image); err == nil {
				out.SizeBytes = info.Size
				for _, w := range info.Watchers {
					out.Watchers = append(out.Watchers, &tandemv1.RBDClient{Addr: w.Addr, Client: fmt.Sprintf("client.%d", w.ID), Node: nodeAt(ms, w.Addr)})
				}
				if len(info.LockOwners) > 0 {
					l := info.LockOwners[0]
					out.LockOwner = &tandemv1.RBDClient{Addr: l.Addr, Client: l.Client, Node: nodeAt(ms, l.Addr)}
				}
			}
			p.Close()
		}
		cancel()
	}
	if err != nil {
		warnings = append(warnings, "Ceph: "+status.Convert(apierr.From(err)).Message())
	}
	if len(warnings) > 0 {
		out.Warning = strings.Join(warnings, "; ")
		if e.State == consensus.VolumeReady {
			out.State = "degraded"
		}
	}
	for _, vm := range ms.VMs {
		if slices.Contains(vm.Spec.Volumes, e.Name) {
			out.UsedBy = vm.Name
		}
	}
	return out
}

// deleteRBD removes an RBD volume no NBD client uses: its owner closes
// it, the image goes, then the catalog entry. An image still open
// somewhere (watchers) is not removed, and the entry stays as deleting.
func (m *Manager) deleteRBD(ctx context.Context, ms *consensus.MetaState, e *consensus.VolumeEntry) error {
	if info := m.showRBD(ctx, ms, e, 3*time.Second); info.NbdConnections > 0 {
		return status.Errorf(codes.FailedPrecondition, "volume %s is attached (%d NBD client(s) connected to its owner %s); detach it first", e.Name, info.NbdConnections, e.Owner)
	}
	meta := m.meta()
	if err := meta.SetVolumeState(ctx, e.Name, consensus.VolumeDeleting); err != nil {
		return metaError(err)
	}
	if err := m.onNode(ctx, ms, e.Owner, func(ctx context.Context, c tandemv1.PeerClient) error {
		_, err := c.VolumeClose(ctx, &tandemv1.PeerVolumeCloseRequest{Name: e.Name, Destroy: true})
		return err
	}); err != nil {
		m.log.Warn("the owner of an RBD volume being deleted does not answer; its client must be gone before the image goes", "volume", e.Name, "owner", e.Owner, "err", err)
	}
	cfg, err := m.entryConfig(ms, e)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, rbdTimeout)
	defer cancel()
	p, err := rbd.Connect(cctx, cfg)
	if err != nil {
		return status.Errorf(codes.Aborted, "delete %s: %s; it stays listed as deleting (run the command again to finish)", e.Name, status.Convert(apierr.From(err)).Message())
	}
	defer p.Close()
	if err := p.Remove(cctx, e.Image); err != nil && !errors.Is(err, rbd.ErrNotFound) {
		return status.Errorf(codes.Aborted, "delete %s: %s; it stays listed as deleting (run the command again to finish)", e.Name, status.Convert(apierr.From(err)).Message())
	}
	if err := meta.DeleteVolume(ctx, e.Name); err != nil {
		return metaError(err)
	}
	m.log.Info("RBD volume deleted", "volume", e.Name, "image", e.Pool+"/"+e.Image)
	return nil
}

// Resize grows a volume. RBD volumes grow through their owner's client
// (it holds the exclusive lock), then the catalog records the size.
func (m *Manager) Resize(ctx context.Context, req *tandemv1.ResizeVolumeRequest) (*tandemv1.VolumeInfo, error) {
	if err := validate.VolumeSize(req.SizeBytes); err != nil {
		return nil, status.Error(codes.InvalidArgument, validate.Message(err))
	}
	ms, e, err := m.quorumEntry(ctx, req.Name)
	if err != nil {
		return nil, err
	}
	if !e.IsRBD() {
		return m.resizeReplicated(ctx, ms, e, req.SizeBytes) // grow.go
	}
	switch {
	case e.State != consensus.VolumeReady:
		return nil, status.Errorf(codes.FailedPrecondition, "volume %s is %s", e.Name, e.State)
	case req.SizeBytes < e.Size:
		return nil, status.Errorf(codes.InvalidArgument, "volume %s is %d bytes; shrinking it to %d would discard data and is not supported", e.Name, e.Size, req.SizeBytes)
	case req.SizeBytes == e.Size:
		return m.Show(ctx, e.Name, 3*time.Second)
	}
	if err := m.onNode(ctx, ms, e.Owner, func(ctx context.Context, c tandemv1.PeerClient) error {
		_, err := c.VolumeResize(ctx, req)
		return err
	}); err != nil {
		return nil, err
	}
	sm, err := m.storageMeta()
	if err != nil {
		return nil, err
	}
	if _, err := sm.UpdateRBDVolume(ctx, consensus.VolumeRBDCmd{Name: e.Name, Size: req.SizeBytes}); err != nil {
		return nil, metaError(err)
	}
	return m.Show(ctx, e.Name, 3*time.Second)
}

// ResizeHere grows an RBD volume this node owns, or this node's replica
// of a replicated volume (the peer call VolumeResize).
func (m *Manager) ResizeHere(ctx context.Context, name string, size int64) (*tandemv1.VolumeInfo, error) {
	if info, ok, err := m.growHere(ctx, name, size); ok { // a replicated volume's replica (grow.go)
		return info, err
	}
	rv := m.rbdGet(name)
	if rv == nil || rv.vol.Load() == nil {
		return m.resizeVMDisk(ctx, name, size)
	}
	rv.mu.Lock()
	v := rv.vol.Load()
	rv.mu.Unlock()
	if v == nil {
		return nil, status.Errorf(codes.FailedPrecondition, "node %s does not have RBD volume %q open", m.self(), name)
	}
	if size < v.Size() {
		return nil, status.Errorf(codes.InvalidArgument, "volume %s is %d bytes; shrinking is not supported", name, v.Size())
	}
	cctx, cancel := context.WithTimeout(ctx, rbdTimeout)
	defer cancel()
	if err := v.Resize(cctx, size); err != nil {
		return nil, cephError("resize "+name, err)
	}
	m.log.Info("RBD volume resized", "volume", name, "size", size)
	return m.rbdStatus(name)
}

// resizeVMDisk grows the RBD image of a stopped VM's disk that this node
// owns: tandemd keeps no client of a VM's disk, so it opens one for the
// resize only (a running VM's QEMU grows its own, see vmm.ResizeDisk).
func (m *Manager) resizeVMDisk(ctx context.Context, name string, size int64) (*tandemv1.VolumeInfo, error) {
	ms, e, err := m.freshEntry(ctx, name)
	if err != nil {
		return nil, err
	}
	if !e.IsRBD() || e.Owner != m.self() || VMOf(ms, name) == "" {
		return nil, status.Errorf(codes.FailedPrecondition, "node %s does not have RBD volume %q open", m.self(), name)
	}
	cfg, err := m.entryConfig(ms, e)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, rbdTimeout)
	defer cancel()
	v, err := rbd.Open(cctx, cfg, e.Image, rbd.OpenOptions{})
	if err != nil {
		return nil, cephError(fmt.Sprintf("open RBD image %s/%s on %s", e.Pool, e.Image, m.self()), err)
	}
	defer func() { _ = v.Close() }()
	if size < v.Size() {
		return nil, status.Errorf(codes.InvalidArgument, "volume %s is %d bytes; shrinking is not supported", name, v.Size())
	}
	if err := v.Resize(cctx, size); err != nil {
		return nil, cephError("resize "+name, err)
	}
	m.log.Info("RBD image of a stopped VM's disk resized", "volume", name, "vm", VMOf(ms, name), "size", size)
	return &tandemv1.VolumeInfo{Name: name, SizeBytes: size, Backend: consensus.BackendRBD}, nil
}

// RecordRBDSize records that RBD volume name's image is now size bytes
// (grown by the QEMU of the VM it is a disk of).
func (m *Manager) RecordRBDSize(ctx context.Context, name string, size int64) error {
	sm, err := m.storageMeta()
	if err != nil {
		return err
	}
	if _, err := sm.UpdateRBDVolume(ctx, consensus.VolumeRBDCmd{Name: name, Size: size}); err != nil {
		return metaError(err)
	}
	return nil
}

// rbdExport is the NBD export of an RBD volume this node owns; ok false
// when name is not one.
func (m *Manager) rbdExport(ctx context.Context, name string) (*nbd.Export, bool, error) {
	rv := m.rbdGet(name)
	if rv == nil {
		ms, err := m.metaLocal()
		if err != nil {
			return nil, false, nil
		}
		e, ok := ms.Volumes[name]
		if !ok || !e.IsRBD() {
			return nil, false, nil
		}
		if e.Owner != m.self() {
			return nil, true, fmt.Errorf("node %s is not the owner of RBD volume %s: %s is (epoch %d)", m.self(), name, e.Owner, e.Epoch)
		}
		// The owner after a restart, before its sweep reopened it.
		if err := m.openRBD(ctx, name); err != nil {
			return nil, true, fmt.Errorf("%s", grpcMessage(err))
		}
		if rv = m.rbdGet(name); rv == nil {
			return nil, true, fmt.Errorf("RBD volume %s is not open on %s", name, m.self())
		}
	}
	v := rv.vol.Load()
	if v == nil {
		return nil, true, fmt.Errorf("RBD volume %s is not open on %s", name, m.self())
	}
	return &nbd.Export{Name: name, Description: "tandem RBD volume " + name, Volume: v, MultiConn: true,
		Attach: func() func() {
			rv.attached.Add(1)
			return func() { rv.attached.Add(-1) }
		}}, true, nil
}

// reconcileRBD, on a linearizable catalog, opens the RBD volumes this node
// owns and has not open (after a restart) and closes those it no longer
// owns. A client closed because another node took the volume over was
// blocklisted by it; its entry goes once this node proved that none of
// its processes can hold it any more (sweepBlocklist).
func (m *Manager) reconcileRBD(ctx context.Context, ms *consensus.MetaState) {
	m.rbdMu.Lock()
	open := make([]string, 0, len(m.rbdVols))
	for n := range m.rbdVols {
		open = append(open, n)
	}
	m.rbdMu.Unlock()
	for _, n := range open {
		rv := m.rbdGet(n)
		if rv == nil || rv.vol.Load() == nil {
			continue
		}
		e, ok := ms.Volumes[n]
		if ok && e.IsRBD() && e.Owner == m.self() && e.State != consensus.VolumeDeleting && VMOf(ms, n) == "" {
			continue
		}
		addr := m.closeRBD(n)
		if ok && e.Owner != m.self() && addr != "" {
			m.log.Warn("another node owns this RBD volume now; closed this node's client", "volume", n, "owner", e.Owner, "epoch", e.Epoch, "client", addr)
		}
	}
	m.sweepBlocklist(ctx, ms)
	for _, n := range sortedKeys(ms.Volumes) {
		e := ms.Volumes[n]
		if !e.IsRBD() || e.Owner != m.self() || e.State != consensus.VolumeReady || VMOf(ms, n) != "" {
			continue // a VM's disk is its QEMU's to open
		}
		if rv := m.rbdGet(n); rv != nil && rv.vol.Load() != nil {
			continue
		}
		if err := m.openRBDEntry(ctx, ms, e); err != nil {
			m.log.Warn("cannot open an RBD volume this node owns; retrying", "volume", n, "err", grpcMessage(err))
		}
	}
}

// isRBD reports whether the catalog has name as an RBD volume: this
// replica's copy, or a linearizable read if it does not know name yet.
func (m *Manager) isRBD(ctx context.Context, name string) bool {
	ms, err := m.metaLocal()
	if err == nil {
		if e, ok := ms.Volumes[name]; ok {
			return e.IsRBD()
		}
	}
	ms, err = m.Catalog(ctx, true)
	if err != nil {
		return false
	}
	e, ok := ms.Volumes[name]
	return ok && e.IsRBD()
}

// closeAllRBD closes every RBD client of this node (the daemon stops, or
// the node fenced itself: its exports must stop writing) and counts them.
// Closing releases the exclusive lock; the owner reopens its volumes from
// the sweep once it may serve again.
func (m *Manager) closeAllRBD(why string) int {
	m.rbdMu.Lock()
	names := make([]string, 0, len(m.rbdVols))
	for n := range m.rbdVols {
		names = append(names, n)
	}
	m.rbdMu.Unlock()
	closed := 0
	for _, n := range names {
		if m.closeRBD(n) != "" {
			closed++
			m.log.Warn("RBD volume closed", "volume", n, "why", why)
		}
	}
	return closed
}
