package vmm

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/compute"
	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/apierr"
	"github.com/tandemhci/tandem/internal/state"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// Volumes is what the VM manager asks of the volume subsystem;
// *volume.Manager satisfies it. Errors are status errors.
type Volumes interface {
	// Catalog is the metadata: with fresh, read through the metadata
	// shard's leader (quorum needed), otherwise this node's copy.
	Catalog(ctx context.Context, fresh bool) (*consensus.MetaState, error)
	// Create creates a volume ('tandem volume create').
	Create(ctx context.Context, req *tandemv1.CreateVolumeRequest) (*tandemv1.VolumeInfo, error)
	// Delete deletes a volume ('tandem volume delete').
	Delete(ctx context.Context, req *tandemv1.DeleteVolumeRequest) (*tandemv1.DeleteVolumeResponse, error)
	// Place picks the nodes for a new volume's replicas of size bytes
	// (want, when given, are the nodes asked for).
	Place(ctx context.Context, ms *consensus.MetaState, size int64, replicas int, want []string) ([]string, string, error)
	// Show is a volume as its replicas report it, each asked within
	// timeout; the nodes in skip are not asked.
	Show(ctx context.Context, name string, timeout time.Duration, skip ...string) (*tandemv1.VolumeInfo, error)
	// NBDSocket is the path of this node's NBD socket, where the VMs it
	// runs open their disks.
	NBDSocket() string

	// This node's replica of volume name:

	// Holds reports whether this node holds a data replica (not a
	// witness) of it.
	Holds(name string) bool
	// ServingPrimary reports whether this node serves it as the primary
	// of its record's current epoch.
	ServingPrimary(name string) bool
	// Reconcile applies its record now, without waiting for the next
	// change.
	Reconcile(name string)
	// Record is its record as last seen here, nil before any.
	Record(name string) *consensus.VolumeRecord
	// AllowDual opens its migration window for target, as the primary.
	AllowDual(ctx context.Context, name, target string) error
	// EndDual closes an unused migration window, as the primary.
	EndDual(ctx context.Context, name, reason string) error
	// Handover makes target the single primary (docs/design.md I5).
	Handover(ctx context.Context, name, target string) error
	// Takeover makes this node, the target of its open migration window,
	// the single primary: it asks the primary to hand over, as the
	// target's first write does.
	Takeover(ctx context.Context, name string) error
}

// Meta is the metadata client as the VM manager uses it; *consensus.Meta
// satisfies it.
type Meta interface {
	LocalState() (*consensus.MetaState, error)
	CreateVM(ctx context.Context, v consensus.VMRecord) (*consensus.VMRecord, error)
	UpdateVM(ctx context.Context, u consensus.VMUpdate) (*consensus.VMRecord, error)
	DeleteVM(ctx context.Context, name string) error
	SetVMHA(ctx context.Context, h consensus.VMHACmd) (*consensus.VMRecord, error)
	SetMaintenance(ctx context.Context, node string, enable bool) (consensus.NodeRecord, error)
	// SetVMMedia records the image in a VM's CD-ROM drive ("" ejects).
	SetVMMedia(ctx context.Context, vm, image string) (*consensus.VMRecord, error)
	// SetVMNVRAM records a UEFI VM's variable store if the VM is on node.
	SetVMNVRAM(ctx context.Context, vm, node string, blob consensus.NVRAMBlob) (*consensus.VMRecord, error)
	// SetVMSpec records a VM's vCPUs and memory.
	SetVMSpec(ctx context.Context, u consensus.VMSpecCmd) (*consensus.VMRecord, error)
	// ChangeVMNICs adds or removes one of a VM's NICs.
	ChangeVMNICs(ctx context.Context, u consensus.VMNICsCmd) (*consensus.VMRecord, error)
	// ChangeVMDisks adds a volume to a VM's disks or removes one.
	ChangeVMDisks(ctx context.Context, u consensus.VMDisksCmd) (*consensus.VMRecord, error)
}

// Images is this node's store of ISO images; *images.Manager satisfies it.
type Images interface {
	// Local is the path of a verified copy of image name on this node,
	// fetched from a member that holds one first if need be. Errors are
	// status errors.
	Local(ctx context.Context, name string) (string, error)
}

// Peers calls other nodes' peer API.
type Peers interface {
	// Call runs f against node's peer API within timeout; its error is a
	// status error prefixed "on NODE: ".
	Call(ctx context.Context, ms *consensus.MetaState, node string, timeout time.Duration, f func(context.Context, tandemv1.PeerClient) error) error
}

// Config is what a Manager needs; every field is required.
type Config struct {
	State   *state.State
	Volumes Volumes
	// Meta returns the metadata client, nil (a nil interface) while the
	// node is not in a cluster.
	Meta  func() Meta
	Peers Peers
	// Images holds the ISO images VMs' CD-ROM drives attach; nil on a
	// node that runs no VMs (and in tests without images).
	Images Images
	// Secret reads the cluster secret that seals VMs' cloud-init seeds
	// (nil in tests without one: a seed is then refused).
	Secret func() ([]byte, error)
	// Background lives as long as the node: work that outlives the request
	// that began it (address announcements after a start) stops with it.
	Background context.Context
}

// Manager runs this node's VMs and the cluster's VM policy. It is safe for
// concurrent use.
type Manager struct {
	st     *state.State
	vols   Volumes
	metaf  func() Meta
	peers  Peers
	imgs   Images
	secret func() ([]byte, error)
	bg     context.Context
	log    *slog.Logger

	mu  sync.Mutex
	drv *compute.Driver

	crash crashTracker

	nvmu sync.Mutex
	// nvSeen is, per UEFI VM running here, the variable store file's
	// size and mtime when it was last recorded (nvram.go).
	nvSeen map[string]fileSeen

	// serials are the serial console sessions open here (console.go).
	serials consoleSessions
	// secmu orders the Ceph secrets' sync with a start that defines one
	// and starts QEMU with it (rbd.go).
	secmu sync.Mutex

	// accel is the domain type compute.domain_type "auto" resolved to,
	// with the KVM probe's verdict, once (accel.go).
	accelMu sync.Mutex
	accel   *accelChoice

	// migrating holds, per VM, the node a migration from here is taking
	// it to (migrate.go): one at a time.
	migMu     sync.Mutex
	migrating map[string]string

	// retryFirst and retryMax bound the interval at which a failed
	// switchover is retried (switchover.go); tests shorten them.
	retryFirst, retryMax time.Duration
}

// New returns a Manager. On a node that runs VMs it creates the console
// log directory: incoming migrations log the console there before the VM
// is known here.
func New(c Config) *Manager {
	m := &Manager{st: c.State, vols: c.Volumes, metaf: c.Meta, peers: c.Peers, imgs: c.Images, secret: c.Secret, bg: c.Background,
		log: c.State.Log.With("component", "compute"), crash: newCrashTracker(), nvSeen: map[string]fileSeen{}, migrating: map[string]string{},
		retryFirst: handoverRetryFirst, retryMax: handoverRetryMax}
	if m.st.Config.ComputeEnabled() {
		if err := os.MkdirAll(filepath.Join(m.st.Config.DataDir, "vms"), 0o750); err != nil {
			m.log.Error("cannot create the VM console directory", "err", err)
		}
	}
	return m
}

// self is this node's name.
func (m *Manager) self() string { return m.st.Node.Name }

// meta is the metadata client, or the status error every call gives while
// the node is not in a cluster.
func (m *Manager) meta() (Meta, error) {
	if mc := m.metaf(); mc != nil {
		return mc, nil
	}
	return nil, status.Error(codes.FailedPrecondition, "this node is not in a cluster")
}

// metaLocal is this node's copy of the metadata (no quorum needed).
func (m *Manager) metaLocal() (*consensus.MetaState, error) { return apierr.LocalState(m.metaf()) }

// holds reports whether this node holds a data replica of volume name;
// volumes run only while the node is in a cluster.
func (m *Manager) holds(name string) (bool, error) {
	if m.metaf() == nil {
		return false, status.Error(codes.FailedPrecondition, "volumes are not running on this node")
	}
	return m.vols.Holds(name), nil
}

// fresh is the metadata read with quorum, for decisions.
func (m *Manager) fresh(ctx context.Context) (*consensus.MetaState, Meta, error) {
	if err := m.st.Quorum(ctx); err != nil {
		return nil, nil, err
	}
	ms, err := m.vols.Catalog(ctx, true)
	if err != nil {
		return nil, nil, err
	}
	mc, err := m.meta()
	if err != nil {
		return nil, nil, err
	}
	return ms, mc, nil
}

// freshVM is fresh with the VM named name in it.
func (m *Manager) freshVM(ctx context.Context, name string) (*consensus.MetaState, Meta, *consensus.VMRecord, error) {
	ms, mc, err := m.fresh(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	v, err := vmOf(ms, name)
	return ms, mc, v, err
}

// vmOf is the VM named name in ms, or NotFound.
func vmOf(ms *consensus.MetaState, name string) (*consensus.VMRecord, error) {
	v, ok := ms.VMs[name]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "no VM named %q", name)
	}
	return v, nil
}

// peerAt is the peer API of node, a member in ms.
func (m *Manager) peerAt(ms *consensus.MetaState, node string) (tandemv1.PeerClient, error) {
	n := ms.Nodes[node]
	if n == nil {
		return nil, status.Errorf(codes.NotFound, "node %s is not in the cluster", node)
	}
	return m.st.Peer(n.BackendAddr)
}

func (m *Manager) onNode(ctx context.Context, ms *consensus.MetaState, node string, timeout time.Duration, f func(context.Context, tandemv1.PeerClient) error) error {
	return m.peers.Call(ctx, ms, node, timeout, f)
}

// event records a cluster event without holding up the caller.
func (m *Manager) event(ctx context.Context, e consensus.Event) { go m.st.Events(ctx, e) }

func grpcMessage(err error) string { return status.Convert(err).Message() }

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
