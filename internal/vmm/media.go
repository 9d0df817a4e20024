package vmm

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/apierr"
	"github.com/tandemhci/tandem/internal/validate"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// ChangeMedia puts an image into a VM's CD-ROM drive or ejects it
// (req.Image ""), 'tandem vm cdrom'. On a running VM the node that runs
// it changes the drive first (fetching and verifying the image), then
// the record follows; if recording fails the drive is put back. A stopped
// VM's record alone changes: its next start defines the drive so.
func (m *Manager) ChangeMedia(ctx context.Context, req *tandemv1.ChangeMediaRequest) (*tandemv1.VMInfo, error) {
	if req.Image != "" {
		if err := validate.ImageName(req.Image); err != nil {
			return nil, status.Error(codes.InvalidArgument, validate.Message(err))
		}
	}
	ms, meta, v, err := m.freshVM(ctx, req.Name)
	if err != nil {
		return nil, err
	}
	if !v.Spec.HasCDROM {
		return nil, status.Errorf(codes.FailedPrecondition, "VM %s has no CD-ROM drive (it was created without --cdrom)", v.Name)
	}
	if req.Image != "" {
		if _, ok := ms.Images[req.Image]; !ok {
			return nil, status.Errorf(codes.NotFound, "no image named %s (tandem image list shows them)", req.Image)
		}
	}
	before := v.Spec.CDROM
	if before == req.Image {
		return m.live(ctx, ms, v, 3*time.Second), nil
	}
	running := false
	if v.Desired == consensus.VMStarted && v.Node != "" {
		info := m.live(ctx, ms, v, 3*time.Second)
		running = info.State == "running" || info.State == "paused"
	}
	change := func(ctx context.Context, image string) error {
		vi := VMInfoOf(v)
		return m.onNode(ctx, ms, v.Node, 2*time.Minute+time.Duration(imageSize(ms, image)/(10<<20))*time.Second, func(ctx context.Context, c tandemv1.PeerClient) error {
			_, err := c.VMChangeMedia(ctx, &tandemv1.PeerChangeMediaRequest{Vm: vi, Image: image})
			return err
		})
	}
	if running {
		if err := change(ctx, req.Image); err != nil {
			return nil, status.Errorf(status.Code(err), "VM %s: changing its CD-ROM on %s: %s", v.Name, v.Node, grpcMessage(err))
		}
	}
	nv, err := meta.SetVMMedia(ctx, v.Name, req.Image)
	if err != nil {
		if running {
			if rerr := change(context.WithoutCancel(ctx), before); rerr != nil {
				m.log.Error("the CD-ROM change was not recorded and could not be undone on the node", "vm", v.Name, "err", rerr)
			}
		}
		return nil, apierr.From(err)
	}
	m.log.Info("CD-ROM changed", "vm", v.Name, "from", before, "to", req.Image, "live", running)
	// ms is the shared read-only metadata (consensus.Meta.LocalState):
	// the answer's view with the new record is a copy of it.
	ms = ms.Clone()
	ms.VMs[nv.Name] = nv
	return m.live(ctx, ms, nv, 3*time.Second), nil
}

func imageSize(ms *consensus.MetaState, name string) int64 {
	if r := ms.Images[name]; r != nil {
		return r.Size
	}
	return 0
}
