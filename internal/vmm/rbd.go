package vmm

import (
	"context"
	"slices"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/compute"
	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/volume"
)

// VMs on Ceph RBD (issue 15, docs/design.md §3.6): an RBD disk is a
// libvirt network disk that QEMU opens through its own librbd, with cephx
// through a libvirt secret of this node (ephemeral and private: libvirtd
// keeps the key in memory only). Co-location does not apply: any node may
// run the VM, but only the disk's owner in the catalog, so only one QEMU
// writes (it holds the image's exclusive lock).

// rbdVolumes is the volume subsystem's part for VMs on RBD;
// *volume.Manager has it (asserted on Volumes, so the Volumes interface
// and its test fakes stay as they are).
type rbdVolumes interface {
	// AttachRBD readies an RBD volume this node owns for QEMU here.
	AttachRBD(ctx context.Context, name string) (volume.RBDAccess, error)
	// MoveRBDOwner records another owner of a stopped VM's RBD disk.
	MoveRBDOwner(ctx context.Context, name, to, reason string) error
	// StorageAccess is how this node reaches a storage's pool.
	StorageAccess(ms *consensus.MetaState, name string) (volume.RBDAccess, error)
}

func (m *Manager) rbd() (rbdVolumes, error) {
	r, ok := m.vols.(rbdVolumes)
	if !ok {
		return nil, status.Error(codes.Unimplemented, "this node's volume subsystem has no RBD support")
	}
	return r, nil
}

// isRBD reports whether volume name is on RBD in ms.
func isRBD(ms *consensus.MetaState, name string) bool {
	e, ok := ms.Volumes[name]
	return ok && e.IsRBD()
}

// replicated are the volumes of vols that are not on RBD in ms.
func replicated(ms *consensus.MetaState, vols []string) []string {
	return slices.DeleteFunc(slices.Clone(vols), func(v string) bool { return isRBD(ms, v) })
}

// rbdDisk is the libvirt disk of RBD volume e reached with acc.
func rbdDisk(e *consensus.VolumeEntry, acc volume.RBDAccess) *compute.RBDDisk {
	return &compute.RBDDisk{Pool: e.Pool, Image: e.Image, Hosts: acc.Monitors, User: acc.User, SecretUUID: compute.CephSecretUUID(e.Storage)}
}

// withRBD makes spec's disks on RBD (in ms) network disks through librbd.
func (m *Manager) withRBD(ms *consensus.MetaState, spec *compute.VMSpec) error {
	for i := range spec.Disks {
		e, ok := ms.Volumes[spec.Disks[i].Volume]
		if !ok || !e.IsRBD() {
			continue
		}
		r, err := m.rbd()
		if err != nil {
			return err
		}
		acc, err := r.StorageAccess(ms, e.Storage)
		if err != nil {
			return err
		}
		spec.Disks[i].RBD = rbdDisk(e, acc)
		spec.Disks[i].Socket = ""
	}
	return nil
}

// attachRBD, before QEMU starts here, readies the VM's RBD disks: this
// node must own each (fresh read), keeps no client of its own, and has
// the storage's secret defined in libvirtd.
func (m *Manager) attachRBD(ctx context.Context, drv *compute.Driver, ms *consensus.MetaState, vols []string) error {
	for _, name := range vols {
		if !isRBD(ms, name) {
			continue
		}
		r, err := m.rbd()
		if err != nil {
			return err
		}
		acc, err := r.AttachRBD(ctx, name)
		if err != nil {
			return err
		}
		if err := drv.DefineCephSecret(ctx, compute.CephSecretUUID(acc.Storage), "storage "+acc.Storage, acc.Key); err != nil {
			return status.Errorf(codes.Internal, "node %s: %v", m.self(), err)
		}
	}
	return nil
}

// syncCephSecrets keeps, on this node, the libvirt secret of every storage
// that a started VM's disk is on (any node's VM: a live migration or an HA
// restart may bring it here, and QEMU opens the disk as it arrives), and
// removes those of the other storages: a storage whose VMs all stopped
// leaves no key in libvirtd.
func (m *Manager) syncCephSecrets(ctx context.Context, drv *compute.Driver, ms *consensus.MetaState) {
	if len(ms.Storage) == 0 {
		return
	}
	m.secmu.Lock()
	defer m.secmu.Unlock()
	want := map[string]bool{}
	for _, v := range ms.VMs {
		// A VM being started or migrated here is not recorded started
		// yet.
		if v.Desired != consensus.VMStarted && !m.crash.isBusy(v.Name) {
			continue
		}
		for _, vol := range v.Spec.Volumes {
			if e, ok := ms.Volumes[vol]; ok && e.IsRBD() {
				want[e.Storage] = true
			}
		}
	}
	have, err := drv.Secrets(ctx)
	if err != nil {
		return
	}
	for name := range ms.Storage {
		uuid := compute.CephSecretUUID(name)
		defined := slices.Contains(have, uuid)
		switch {
		case want[name] && !defined:
			r, err := m.rbd()
			if err != nil {
				return
			}
			acc, err := r.StorageAccess(ms, name)
			if err == nil {
				err = drv.DefineCephSecret(ctx, uuid, "storage "+name, acc.Key)
			}
			if err != nil {
				m.log.Warn("cannot define the Ceph secret of a storage", "storage", name, "err", err)
			}
		case !want[name] && defined:
			if err := drv.UndefineSecret(ctx, uuid); err != nil {
				m.log.Warn("cannot undefine the Ceph secret of a storage", "storage", name, "err", err)
			} else {
				m.log.Info("Ceph secret undefined: no started VM uses the storage", "storage", name)
			}
		}
	}
}
