package vmm

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/validate"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// diskGrower is the volume subsystem's part for growing a VM's disk;
// *volume.Manager has it (asserted, as rbdVolumes is).
type diskGrower interface {
	// Resize grows a volume: every replica of a replicated one, or an RBD
	// image through its owner.
	Resize(ctx context.Context, req *tandemv1.ResizeVolumeRequest) (*tandemv1.VolumeInfo, error)
	// RecordRBDSize records an RBD volume's new size, once its image
	// has grown (by the VM's QEMU).
	RecordRBDSize(ctx context.Context, name string, size int64) error
}

// ResizeDisk grows one of a VM's disks ('tandem vm disk resize'). A
// replicated volume grows on every replica first (volume resize), then
// the running VM's node makes QEMU see the new size. An RBD disk of a
// running VM is grown by its QEMU, which holds the image's lock, and
// the size is recorded after; a stopped VM's RBD disk grows through the
// owner. Shrinking is refused and changes nothing.
func (m *Manager) ResizeDisk(ctx context.Context, req *tandemv1.ResizeVMDiskRequest) (*tandemv1.VMInfo, error) {
	if err := validate.VolumeSize(req.SizeBytes); err != nil {
		return nil, status.Error(codes.InvalidArgument, validate.Message(err))
	}
	g, ok := m.vols.(diskGrower)
	if !ok {
		return nil, status.Error(codes.Unimplemented, "this node's volume subsystem cannot grow volumes")
	}
	ms, _, v, err := m.freshVM(ctx, req.Name)
	if err != nil {
		return nil, err
	}
	if !slices.Contains(v.Spec.Volumes, req.Volume) {
		return nil, status.Errorf(codes.InvalidArgument, "VM %s has no disk on volume %q (its disks: %s)", v.Name, req.Volume, strings.Join(v.Spec.Volumes, ", "))
	}
	e, ok := ms.Volumes[req.Volume]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "no volume named %q", req.Volume)
	}
	switch {
	case req.SizeBytes < e.Size:
		return nil, status.Errorf(codes.InvalidArgument, "disk %s of VM %s is %d bytes; shrinking it to %d would discard data and is not supported", req.Volume, v.Name, e.Size, req.SizeBytes)
	case req.SizeBytes == e.Size:
		return m.live(ctx, ms, v, 3*time.Second), nil
	}
	running := false
	if v.Desired == consensus.VMStarted && v.Node != "" {
		info := m.live(ctx, ms, v, 3*time.Second)
		running = info.State == "running" || info.State == "paused"
	}
	onVM := func(pr *tandemv1.PeerResizeDiskRequest) error {
		pr.Vm, pr.Volume, pr.SizeBytes = VMInfoOf(v), req.Volume, req.SizeBytes
		return m.onNode(ctx, ms, v.Node, 2*time.Minute, func(ctx context.Context, c tandemv1.PeerClient) error {
			_, err := c.VMResizeDisk(ctx, pr)
			return err
		})
	}
	how := "offline"
	switch {
	case e.IsRBD() && running:
		if err := onVM(&tandemv1.PeerResizeDiskRequest{RbdPool: e.Pool, RbdImage: e.Image}); err != nil {
			return nil, status.Errorf(status.Code(err), "VM %s: growing its RBD disk %s on %s: %s", v.Name, req.Volume, v.Node, grpcMessage(err))
		}
		if err := g.RecordRBDSize(ctx, req.Volume, req.SizeBytes); err != nil {
			return nil, status.Errorf(status.Code(err), "the RBD image of %s grew to %d bytes, but the size was not recorded (run the command again): %s", req.Volume, req.SizeBytes, grpcMessage(err))
		}
		how = "online, by QEMU's librbd on " + v.Node
	default:
		if _, err := g.Resize(ctx, &tandemv1.ResizeVolumeRequest{Name: req.Volume, SizeBytes: req.SizeBytes}); err != nil {
			return nil, err
		}
		if running && !e.IsRBD() {
			if err := onVM(&tandemv1.PeerResizeDiskRequest{}); err != nil {
				return nil, status.Errorf(status.Code(err), "volume %s grew to %d bytes, but VM %s on %s does not see it yet (it will after a restart or a migration; or run the command again): %s", req.Volume, req.SizeBytes, v.Name, v.Node, grpcMessage(err))
			}
			how = "online on " + v.Node
		}
	}
	m.log.Info("VM disk grown", "vm", v.Name, "volume", req.Volume, "from", e.Size, "to", req.SizeBytes, "how", how)
	m.event(context.WithoutCancel(ctx), consensus.Event{Kind: "vm-disk-resize", VM: v.Name, Node: v.Node,
		Detail: fmt.Sprintf("disk %s: %d -> %d bytes (%s)", req.Volume, e.Size, req.SizeBytes, how)})
	ms, _, v, err = m.freshVM(ctx, req.Name)
	if err != nil {
		return nil, err
	}
	return m.live(ctx, ms, v, 3*time.Second), nil
}

// VMResizeDisk makes a running VM defined here see its disk's new size:
// QEMU's librbd grows an RBD image; an NBD disk reconnects to its grown
// export.
func (m *Manager) VMResizeDisk(ctx context.Context, req *tandemv1.PeerResizeDiskRequest) (*tandemv1.VMInfo, error) {
	drv, done, err := m.busyDriver(ctx, req.Vm)
	if err != nil {
		return nil, err
	}
	defer done()
	if req.RbdImage != "" {
		err = drv.BlockResizeRBD(ctx, req.Vm.Name, req.RbdPool, req.RbdImage, req.SizeBytes)
	} else {
		err = drv.GrowNBDDisk(ctx, req.Vm.Name, req.Volume, req.SizeBytes)
	}
	if err != nil {
		return nil, computeErr(err)
	}
	return m.vmInfo(ctx, drv, req.Vm), nil
}
