package vmm

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/compute"
	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/apierr"
	"github.com/tandemhci/tandem/internal/validate"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// diskDetachTimeout is how long a running guest has to release an
// unplugged disk.
const diskDetachTimeout = 30 * time.Second

// AddDisk adds a disk to a VM ('tandem vm disk add'): a new volume, whose
// primary is the VM's node when it has one (a VM runs where its disks'
// primaries are), or an existing one no VM uses. The volume is recorded
// after the VM's other disks, then hot-plugged into the running VM after
// its other disks too, so the record and the running domain keep the same
// order (what a migration's destination XML and an HA restart rely on). A
// failed hot-plug takes the record back and deletes a volume created for
// it. Every check that can refuse runs before anything is created.
func (m *Manager) AddDisk(ctx context.Context, req *tandemv1.AddVMDiskRequest) (*tandemv1.VMInfo, error) {
	dk := req.Disk
	if dk == nil {
		return nil, status.Error(codes.InvalidArgument, "no disk given: a new volume's size (--disk SIZE) or an existing volume (--disk-volume VOL)")
	}
	if dk.Volume != "" && (dk.SizeBytes != 0 || dk.Replicas != 0 || dk.Backend != "" || dk.Storage != "" || dk.Pool != "") {
		return nil, status.Errorf(codes.InvalidArgument, "an existing volume (%s) takes no size, replicas, backend, storage or pool", dk.Volume)
	}
	ms, meta, v, err := m.freshVM(ctx, req.Name)
	if err != nil {
		return nil, err
	}
	if most := maxDisksOf(v); len(v.Spec.Volumes) >= most {
		return nil, status.Errorf(codes.FailedPrecondition, "VM %s has %d disks, the most a VM may have%s", v.Name, len(v.Spec.Volumes), seedNote(v))
	}
	running, err := m.runningNow(ctx, ms, v)
	if err != nil {
		return nil, err
	}
	name := dk.Volume
	if name != "" {
		if err := m.checkExistingDisk(ctx, ms, v, name, running); err != nil {
			return nil, err
		}
	} else {
		if name = freeDiskName(ms, v.Name); name == "" {
			return nil, status.Errorf(codes.FailedPrecondition, "VM %s: no free volume name %s-diskN left", v.Name, v.Name)
		}
		if err := checkNewDisk(name, dk); err != nil {
			return nil, err
		}
	}
	created := false
	deleteCreated := func() {
		if !created {
			return
		}
		if _, err := m.vols.Delete(context.WithoutCancel(ctx), &tandemv1.DeleteVolumeRequest{Name: name}); err != nil {
			m.log.Warn("cleanup of a new VM disk failed", "vm", v.Name, "volume", name, "err", err)
		}
	}
	if dk.Volume == "" {
		vreq := &tandemv1.CreateVolumeRequest{Name: name, SizeBytes: dk.SizeBytes, Replicas: dk.Replicas, Backend: dk.Backend, Storage: dk.Storage, Pool: dk.Pool}
		switch {
		case v.Node == "":
			// Never placed: its start puts it where all its disks are.
		case dk.Backend == consensus.BackendRBD:
			vreq.Nodes = []string{v.Node}
		default:
			if vreq.Nodes, err = m.diskNodes(ctx, ms, v.Node, dk); err != nil {
				return nil, err
			}
		}
		if _, err := m.vols.Create(ctx, vreq); err != nil {
			return nil, status.Errorf(status.Code(err), "VM %s: creating its new disk %s: %s", v.Name, name, grpcMessage(err))
		}
		created = true
	}
	nv, err := meta.ChangeVMDisks(ctx, consensus.VMDisksCmd{VM: v.Name, Add: name})
	if err != nil {
		deleteCreated()
		return nil, apierr.From(err)
	}
	if running {
		if err := m.diskOnNode(ctx, ms, nv, &tandemv1.PeerDiskRequest{Volume: name}); err != nil {
			if _, uerr := meta.ChangeVMDisks(context.WithoutCancel(ctx), consensus.VMDisksCmd{VM: v.Name, Remove: name}); uerr != nil {
				m.log.Error("the disk could not be hot-plugged and its record could not be taken back", "vm", v.Name, "volume", name, "err", uerr)
				return nil, status.Errorf(status.Code(err), "VM %s: hot-plugging disk %s on %s: %s; taking the record back failed too (%s): detach it with 'tandem vm disk detach %s %s'",
					v.Name, name, v.Node, grpcMessage(err), grpcMessage(uerr), v.Name, name)
			}
			deleteCreated()
			return nil, status.Errorf(status.Code(err), "VM %s: hot-plugging disk %s on %s: %s (nothing was changed)", v.Name, name, v.Node, grpcMessage(err))
		}
	}
	m.diskEvent(ctx, nv, fmt.Sprintf("disk %s added%s", name, liveOn(running, v.Node)))
	return m.afterChange(ctx, ms, nv), nil
}

// DetachDisk takes a disk other than the first off a VM ('tandem vm disk
// detach'). A running VM's guest releases it first (PCI hot-unplug); only
// then is the record changed, so a guest that does not let go leaves
// everything as it was. With delete, the volume is deleted after.
func (m *Manager) DetachDisk(ctx context.Context, req *tandemv1.DetachVMDiskRequest) (*tandemv1.VMInfo, error) {
	ms, meta, v, err := m.freshVM(ctx, req.Name)
	if err != nil {
		return nil, err
	}
	switch i := slices.Index(v.Spec.Volumes, req.Volume); {
	case i < 0:
		return nil, status.Errorf(codes.NotFound, "VM %s has no disk on volume %q (its disks: %s)", v.Name, req.Volume, orNone(strings.Join(v.Spec.Volumes, ", ")))
	case i == 0:
		return nil, status.Errorf(codes.FailedPrecondition, "volume %s is the first disk of VM %s, which it boots from; it cannot be detached", req.Volume, v.Name)
	}
	running, err := m.runningNow(ctx, ms, v)
	if err != nil {
		return nil, err
	}
	if running {
		if err := m.diskOnNode(ctx, ms, v, &tandemv1.PeerDiskRequest{Volume: req.Volume, Detach: true}); err != nil {
			return nil, status.Errorf(status.Code(err), "VM %s: unplugging disk %s on %s: %s (nothing was changed)", v.Name, req.Volume, v.Node, grpcMessage(err))
		}
	}
	nv, err := meta.ChangeVMDisks(ctx, consensus.VMDisksCmd{VM: v.Name, Remove: req.Volume})
	if err != nil {
		return nil, apierr.From(err)
	}
	m.diskEvent(ctx, nv, fmt.Sprintf("disk %s detached%s", req.Volume, liveOn(running, v.Node)))
	info := m.afterChange(ctx, ms, nv)
	if req.Delete {
		if _, err := m.vols.Delete(ctx, &tandemv1.DeleteVolumeRequest{Name: req.Volume}); err != nil {
			return nil, status.Errorf(status.Code(err), "disk %s was detached from VM %s, but deleting its volume failed (delete it with 'tandem volume delete %s'): %s", req.Volume, v.Name, req.Volume, grpcMessage(err))
		}
		m.log.Info("detached disk deleted", "vm", v.Name, "volume", req.Volume)
	}
	return info, nil
}

// maxDisksOf is the most disks v may have: as a create allows
// (compute.MaxDisks), one fewer with a cloud-init seed, which takes a
// virtio target too.
func maxDisksOf(v *consensus.VMRecord) int {
	if v.Spec.CloudInit != "" {
		return consensus.MaxVMDisks - 1
	}
	return consensus.MaxVMDisks
}

func seedNote(v *consensus.VMRecord) string {
	if v.Spec.CloudInit != "" {
		return " with a cloud-init seed"
	}
	return ""
}

// runningNow reports whether v's QEMU runs (or is paused) on its node. A
// node that does not answer is an error, not "stopped": a disk recorded
// away from a guest that still has it open could then be deleted. So is
// a VM that should run but does not: its node restarts a crashed domain
// from the definition it has, which would not have the change.
func (m *Manager) runningNow(ctx context.Context, ms *consensus.MetaState, v *consensus.VMRecord) (bool, error) {
	if v.Node == "" {
		return false, nil
	}
	info := m.live(ctx, ms, v, 3*time.Second)
	switch info.State {
	case "running", "paused":
		return true, nil
	case "unknown":
		return false, status.Errorf(codes.Unavailable, "VM %s: cannot tell whether it runs on %s (%s); nothing was changed", v.Name, v.Node, info.Warning)
	}
	if v.Desired == consensus.VMStarted {
		return false, status.Errorf(codes.FailedPrecondition, "VM %s should run on %s but is %s there (being started or restarted); nothing was changed: try again once it runs, or stop it first", v.Name, v.Node, info.State)
	}
	return false, nil
}

// checkExistingDisk refuses a volume that is missing, already v's disk
// or another VM's, and, for a VM that runs, one whose primary (owner,
// for RBD) is not the VM's node.
func (m *Manager) checkExistingDisk(ctx context.Context, ms *consensus.MetaState, v *consensus.VMRecord, name string, running bool) error {
	if err := validate.VolumeName(name); err != nil {
		return status.Error(codes.InvalidArgument, validate.Message(err))
	}
	e, ok := ms.Volumes[name]
	if !ok {
		return status.Errorf(codes.NotFound, "no volume named %q", name)
	}
	if slices.Contains(v.Spec.Volumes, name) {
		return status.Errorf(codes.AlreadyExists, "volume %s is already a disk of VM %s", name, v.Name)
	}
	for _, o := range ms.VMs {
		if slices.Contains(o.Spec.Volumes, name) {
			return status.Errorf(codes.FailedPrecondition, "volume %s is a disk of VM %s", name, o.Name)
		}
	}
	if e.State != "" && e.State != consensus.VolumeReady {
		return status.Errorf(codes.FailedPrecondition, "volume %s is %s, not ready", name, e.State)
	}
	if !running {
		return nil // its start makes the VM's node primary of every disk
	}
	if e.IsRBD() {
		if e.Owner != v.Node {
			return status.Errorf(codes.FailedPrecondition, "RBD volume %s is owned by %s, not by %s where VM %s runs; move it first ('tandem volume promote %s --node %s')", name, orNone(e.Owner), v.Node, v.Name, name, v.Node)
		}
		return nil
	}
	info, err := m.vols.Show(ctx, name, 3*time.Second)
	if err != nil {
		return status.Errorf(codes.Unavailable, "volume %s: %s", name, grpcMessage(err))
	}
	if info.Primary != v.Node {
		return status.Errorf(codes.FailedPrecondition, "the primary of volume %s is %s, not %s where VM %s runs (a VM runs where its disks' primaries are); make %s its primary first ('tandem volume promote %s --node %s')", name, orNone(info.Primary), v.Node, v.Name, v.Node, name, v.Node)
	}
	return nil
}

// freeDiskName is NAME-diskN for the first N no volume has, "" if none
// up to the most disks a VM may have.
func freeDiskName(ms *consensus.MetaState, vm string) string {
	for i := range consensus.MaxVMDisks {
		name := fmt.Sprintf("%s-disk%d", vm, i)
		if _, taken := ms.Volumes[name]; !taken {
			return name
		}
	}
	return ""
}

// checkNewDisk checks a new disk as a create's (checkCreate): its
// volume's name and size, and its backend's options.
func checkNewDisk(name string, dk *tandemv1.VMDisk) error {
	if err := validate.VolumeName(name); err != nil {
		return status.Errorf(codes.InvalidArgument, "the new disk's volume would be named %s, which is too long: %s", name, validate.Message(err))
	}
	if err := validate.VolumeSize(dk.SizeBytes); err != nil {
		return status.Error(codes.InvalidArgument, validate.Message(err))
	}
	switch dk.Backend {
	case consensus.BackendRBD:
		if dk.Replicas != 0 {
			return status.Error(codes.InvalidArgument, "replicas does not apply to an RBD disk: Ceph's pool replicates it")
		}
	case "", consensus.BackendReplicated:
		if dk.Storage != "" || dk.Pool != "" {
			return status.Error(codes.InvalidArgument, "storage and pool apply to RBD disks only (backend=rbd)")
		}
		if dk.Replicas > 3 {
			return status.Errorf(codes.InvalidArgument, "replicas %d: use 1, 2 or 3", dk.Replicas)
		}
	default:
		return status.Errorf(codes.InvalidArgument, "backend %s: use %q (the default) or %q", validate.Show(dk.Backend), consensus.BackendReplicated, consensus.BackendRBD)
	}
	return nil
}

func (m *Manager) diskOnNode(ctx context.Context, ms *consensus.MetaState, v *consensus.VMRecord, req *tandemv1.PeerDiskRequest) error {
	req.Vm = VMInfoOf(v)
	return m.onNode(ctx, ms, v.Node, diskDetachTimeout+30*time.Second, func(ctx context.Context, c tandemv1.PeerClient) error {
		_, err := c.VMDisk(ctx, req)
		return err
	})
}

func (m *Manager) diskEvent(ctx context.Context, v *consensus.VMRecord, detail string) {
	m.log.Info("VM disks changed", "vm", v.Name, "change", detail)
	m.event(context.WithoutCancel(ctx), consensus.Event{Kind: "vm-disk", VM: v.Name, Node: v.Node, Detail: detail})
}

// VMDisk hot-plugs (or, with req.Detach, unplugs) the disk on volume
// req.Volume of a running VM defined here. A replicated volume must be
// served here as primary, an RBD one owned here, before QEMU opens it.
func (m *Manager) VMDisk(ctx context.Context, req *tandemv1.PeerDiskRequest) (*tandemv1.VMInfo, error) {
	if req.Volume == "" {
		return nil, status.Error(codes.InvalidArgument, "no disk to attach or detach")
	}
	drv, done, err := m.busyDriver(ctx, req.Vm)
	if err != nil {
		return nil, err
	}
	defer done()
	ms, err := m.vols.Catalog(ctx, true)
	if err != nil {
		return nil, err
	}
	if _, ok := ms.Volumes[req.Volume]; !ok {
		return nil, status.Errorf(codes.NotFound, "no volume named %q", req.Volume)
	}
	spec := compute.VMSpec{Disks: []compute.DiskSpec{{Volume: req.Volume, Socket: m.vols.NBDSocket()}}}
	if err := m.withRBD(ms, &spec); err != nil {
		return nil, err
	}
	ds := spec.Disks[0]
	if req.Detach {
		err = drv.DetachDisk(ctx, req.Vm.Name, ds, diskDetachTimeout)
	} else {
		if err := m.readyDisk(ctx, drv, ms, req.Volume); err != nil {
			return nil, err
		}
		err = drv.AttachDisk(ctx, req.Vm.Name, ds)
	}
	if err != nil {
		return nil, computeErr(err)
	}
	return m.vmInfo(ctx, drv, req.Vm), nil
}

// readyDisk readies volume name for QEMU here, as a start does: an RBD
// volume owned here with its storage's secret defined, a replicated one
// served here as primary.
func (m *Manager) readyDisk(ctx context.Context, drv *compute.Driver, ms *consensus.MetaState, name string) error {
	if isRBD(ms, name) {
		m.secmu.Lock()
		defer m.secmu.Unlock()
		return m.attachRBD(ctx, drv, ms, []string{name})
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return m.waitPrimary(wctx, []string{name})
}
