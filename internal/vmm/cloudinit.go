package vmm

import (
	"context"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/compute"
	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/cloudinit"
	"github.com/tandemhci/tandem/internal/sealed"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// cloud-init (issue 18). The seed's files live in the VM's record, sealed
// with the cluster secret (user-data may hold credentials), bound to the
// VM's name and UUID. Whichever node starts the VM (a start, an HA
// restart, the target of a live migration) opens them and builds the ISO
// <data_dir>/vms/NAME.cidata.iso (mode 0600) before QEMU starts: the seed
// follows the VM with the record, and no node keeps a copy it does not
// need.

// seedField is the associated data naming the record's field.
const seedField = "spec.cloud_init"

// seedBox seals and opens cloud-init seeds with the cluster secret.
func (m *Manager) seedBox() (*sealed.Box, error) {
	return sealed.NewFrom(m.secret, sealed.PurposeCloudInit)
}

// sealSeed checks a create's cloud-init files for the VM (uuid, name) and
// returns their sealed form for its record; "" without any.
func (m *Manager) sealSeed(ci *tandemv1.CloudInit, uuid, name string) (string, error) {
	if ci == nil {
		return "", nil
	}
	seed := cloudinit.Seed{UserData: ci.UserData, MetaData: ci.MetaData, NetworkConfig: ci.NetworkConfig}
	if err := seed.Validate(uuid, name); err != nil {
		return "", status.Errorf(codes.InvalidArgument, "--cloud-init: %v", err)
	}
	box, err := m.seedBox()
	if err != nil {
		return "", status.Errorf(codes.FailedPrecondition, "cannot seal the cloud-init seed on %s: %v", m.self(), err)
	}
	s, err := box.Seal(seed.Marshal(), name, uuid, seedField)
	if err != nil {
		return "", status.Errorf(codes.Internal, "seal the cloud-init seed: %v", err)
	}
	return s, nil
}

// seedPath is where a VM's seed is on this node.
func (m *Manager) seedPath(name string) string {
	return filepath.Join(m.st.Config.DataDir, "vms", name+".cidata.iso")
}

// prepareSeed builds the seed of VM vm here from its record in ms and
// returns its path; "" for a VM without one. A VM running here keeps the
// seed QEMU has open.
func (m *Manager) prepareSeed(ctx context.Context, drv *compute.Driver, ms *consensus.MetaState, vm *tandemv1.VMInfo) (string, error) {
	v, ok := ms.VMs[vm.Name]
	if !ok || v.Spec.CloudInit == "" {
		if vm.CloudInit {
			return "", status.Errorf(codes.FailedPrecondition, "node %s does not know the cloud-init seed of %s yet", m.self(), vm.Name)
		}
		return "", nil
	}
	p := m.seedPath(vm.Name)
	if st, err := drv.State(ctx, vm.Name); err == nil && (st == compute.StateRunning || st == compute.StatePaused) {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return m.buildSeed(ctx, v)
}

// buildSeed opens the sealed seed of v's record and writes its ISO here.
func (m *Manager) buildSeed(ctx context.Context, v *consensus.VMRecord) (string, error) {
	box, err := m.seedBox()
	if err != nil {
		return "", status.Errorf(codes.FailedPrecondition, "node %s cannot open the cloud-init seed of %s: %v", m.self(), v.Name, err)
	}
	plain, err := box.Open(v.Spec.CloudInit, v.Name, v.UUID, seedField)
	if err != nil {
		return "", status.Errorf(codes.FailedPrecondition, "node %s cannot open the cloud-init seed of %s: %v", m.self(), v.Name, err)
	}
	seed, err := cloudinit.Unmarshal(plain)
	if err != nil {
		return "", status.Errorf(codes.DataLoss, "VM %s: %v", v.Name, err)
	}
	p := m.seedPath(v.Name)
	if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
		return "", status.Errorf(codes.Internal, "node %s: %v", m.self(), err)
	}
	bctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := cloudinit.Build(bctx, p, seed, v.UUID, v.Name); err != nil {
		return "", status.Errorf(codes.FailedPrecondition, "node %s: VM %s: %v", m.self(), v.Name, err)
	}
	m.log.Info("cloud-init seed built", "vm", v.Name, "path", p)
	return p, nil
}

// VMPrepareSeed builds, here, the seed of a VM about to migrate here.
func (m *Manager) VMPrepareSeed(ctx context.Context, vm *tandemv1.VMInfo) (*tandemv1.PeerNVRAMResponse, error) {
	drv, done, err := m.busyDriver(ctx, vm)
	if err != nil {
		return nil, err
	}
	defer done()
	ms, err := m.vols.Catalog(ctx, true)
	if err != nil {
		return nil, err
	}
	p, err := m.prepareSeed(ctx, drv, ms, vm)
	if err != nil {
		return nil, err
	}
	if p == "" {
		return nil, status.Errorf(codes.FailedPrecondition, "VM %s has no cloud-init seed", vm.Name)
	}
	return &tandemv1.PeerNVRAMResponse{Path: p}, nil
}

// handSeed asks the target of a migration to build the VM's seed and
// returns its path there ("" for a VM without one).
func (m *Manager) handSeed(ctx context.Context, vm *tandemv1.VMInfo, to string, tc tandemv1.PeerClient) (string, error) {
	if !vm.CloudInit {
		return "", nil
	}
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	resp, err := tc.VMPrepareSeed(cctx, &tandemv1.PeerVMRequest{Vm: vm})
	if err != nil {
		return "", status.Errorf(status.Code(err), "target %s cannot build the cloud-init seed of %s: %s", to, vm.Name, grpcMessage(err))
	}
	return resp.Path, nil
}

// dropSeed removes this node's seed of a VM that no longer runs here (it
// holds the user-data in plain text).
func (m *Manager) dropSeed(name string) {
	if err := os.Remove(m.seedPath(name)); err != nil && !os.IsNotExist(err) {
		m.log.Warn("cannot remove a cloud-init seed", "vm", name, "err", err)
	}
}
