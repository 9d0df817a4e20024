package volume

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/blockstore"
	"github.com/tandemhci/tandem/consensus"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// Growing a replicated volume online (docs/design.md §3.7). The order:
//
//  1. every secondary grows its replica (blockstore.LocalVolume.Grow: crash
//     safe on its own), through the peer call VolumeResize; an in-sync one
//     that cannot grow stops the resize before anything is committed;
//  2. the primary grows its replica, which is when its Primary's size and
//     its NBD export's (for new connections) change, so no write past the
//     old end is ever sent to a secondary that cannot take it;
//  3. the catalog records the new size (consensus volume-size).
//
// A crash or failure before 3 leaves some replicas larger than the
// catalog: harmless (the extra bytes are zeroes, a secondary larger than
// its primary is accepted, and running the resize again finishes it). A
// replica that was down, or out of sync, grows at its next session with the
// primary (replication's hello carries the size), and any replica opened
// smaller than the catalog grows then (openStore).

// SizeMeta records a replicated volume's size (consensus.Meta).
type SizeMeta interface {
	SetVolumeSize(ctx context.Context, name string, size int64) (*consensus.VolumeEntry, error)
}

// resizeReplicated grows replicated volume e to size (the Resize API).
func (m *Manager) resizeReplicated(ctx context.Context, ms *consensus.MetaState, e *consensus.VolumeEntry, size int64) (*tandemv1.VolumeInfo, error) {
	switch {
	case e.State != consensus.VolumeReady:
		return nil, status.Errorf(codes.FailedPrecondition, "volume %s is %s", e.Name, e.State)
	case size < e.Size:
		return nil, status.Errorf(codes.InvalidArgument, "volume %s is %d bytes; shrinking it to %d would discard data and is not supported", e.Name, e.Size, size)
	}
	if err := blockstore.CheckGrow(e.Size, size); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "volume %s: %v", e.Name, err)
	}
	sm, ok := m.meta().(SizeMeta)
	if !ok || sm == nil {
		return nil, status.Error(codes.FailedPrecondition, "this node is not in a cluster")
	}
	info, err := m.Show(ctx, e.Name, 3*time.Second)
	if err != nil {
		return nil, err
	}
	if info.Primary == "" || info.NbdUnix == "" {
		return nil, status.Errorf(codes.Unavailable, "volume %s: its primary does not answer; nothing was resized", e.Name)
	}
	inSync := map[string]bool{}
	for _, r := range info.Replicas {
		inSync[r.Node] = r.State == tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE
	}
	if !inSync[info.Primary] {
		return nil, status.Errorf(codes.FailedPrecondition, "volume %s: its primary %s is not UpToDate (its disk is detached or resyncing); nothing was resized", e.Name, info.Primary)
	}
	grow := func(node string) error {
		return m.onNode(ctx, ms, node, func(ctx context.Context, c tandemv1.PeerClient) error {
			_, err := c.VolumeResize(ctx, &tandemv1.ResizeVolumeRequest{Name: e.Name, SizeBytes: size})
			return err
		})
	}
	var behind []string
	for _, node := range e.Replicas {
		if node == info.Primary {
			continue
		}
		if err := grow(node); err != nil {
			if inSync[node] {
				return nil, status.Errorf(status.Code(err), "volume %s: in-sync replica on %s could not grow: %s; the size is unchanged (replicas that grew keep zeroes past it; run the resize again)",
					e.Name, node, status.Convert(err).Message())
			}
			behind = append(behind, node)
			m.log.Warn("out-of-sync replica did not grow now; it grows when it next connects to the primary", "volume", e.Name, "node", node, "err", err)
		}
	}
	if err := grow(info.Primary); err != nil {
		return nil, status.Errorf(status.Code(err), "volume %s: the primary %s could not grow: %s; the size is unchanged (run the resize again)",
			e.Name, info.Primary, status.Convert(err).Message())
	}
	if _, err := sm.SetVolumeSize(ctx, e.Name, size); err != nil {
		return nil, metaError(err)
	}
	m.log.Info("volume grown", "volume", e.Name, "old_size", e.Size, "size", size, "not_yet", behind)
	return m.Show(ctx, e.Name, 3*time.Second)
}

// growHere grows this node's replica of a replicated volume (the peer call
// VolumeResize); ok false when this node holds no replica of name.
func (m *Manager) growHere(ctx context.Context, name string, size int64) (*tandemv1.VolumeInfo, bool, error) {
	nv := m.get(name)
	if nv == nil {
		return nil, false, nil
	}
	if nv.store == nil {
		return nil, true, status.Errorf(codes.FailedPrecondition, "node %s is the witness of %s and holds no data", m.self(), name)
	}
	if nv.unrelated {
		return nil, true, status.Errorf(codes.FailedPrecondition, "the replica of %s on %s holds another volume's data; discard it first ('tandem volume resync %s --discard %s')", name, m.self(), name, m.self())
	}
	if err := nv.store.Grow(ctx, size); err != nil {
		if errors.Is(err, blockstore.ErrShrink) {
			return nil, true, status.Errorf(codes.InvalidArgument, "the replica of %s on %s is %d bytes; shrinking it to %d is not supported", name, m.self(), nv.store.Size(), size)
		}
		return nil, true, status.Errorf(codes.Internal, "grow the replica of %s on %s: %v", name, m.self(), err)
	}
	info, err := m.Info(name)
	return info, true, err
}

// growToCatalog grows a replica opened smaller than the catalog's size (it
// missed a grow while it was down or out of sync). The new bytes are
// zeroes, which is what every replica that grew holds there unless a write
// landed, and such a write left this replica's region dirty at the primary.
func growToCatalog(ctx context.Context, store *blockstore.LocalVolume, size int64) error {
	if store.Size() >= size {
		return nil
	}
	return store.Grow(ctx, size)
}
