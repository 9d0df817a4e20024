package volume

import (
	"context"
	"fmt"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/units"
	"github.com/tandemhci/tandem/internal/validate"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
	"github.com/tandemhci/tandem/replication"
)

const (
	verifyChunk = 8 << 20
	verifyBlock = 64 << 10
)

// Verify runs an online verify on the volume's primary (the admin API's
// 'volume verify', from any node).
func (m *Manager) Verify(ctx context.Context, req *tandemv1.VerifyVolumeRequest) (*tandemv1.VerifyVolumeResponse, error) {
	info, err := m.Show(ctx, req.Name, 3*time.Second)
	if err != nil {
		return nil, err
	}
	if info.Backend == consensus.BackendRBD {
		return nil, status.Errorf(codes.FailedPrecondition, "volume %s is on Ceph RBD, whose copies Ceph keeps and checks itself (ceph pg deep-scrub); verify applies to replicated volumes", req.Name)
	}
	if info.Primary == "" || info.NbdUnix == "" {
		return nil, status.Errorf(codes.Unavailable, "volume %s has no reachable primary to verify from", req.Name)
	}
	ms, err := m.Catalog(ctx, false)
	if err != nil {
		return nil, err
	}
	rec, ok := ms.Nodes[info.Primary]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "primary %s is not in the cluster", info.Primary)
	}
	c, err := m.st.Peer(rec.BackendAddr)
	if err != nil {
		return nil, err
	}
	return c.VolumeVerify(ctx, req)
}

// replica is the volume's local replica, or the NotFound error the peer
// API gives for a volume this node keeps no data of.
func (m *Manager) replica(name string) (*nodeVolume, error) {
	nv := m.get(name)
	if nv == nil || nv.store == nil {
		return nil, status.Errorf(codes.NotFound, "node %s holds no replica of %q", m.self(), name)
	}
	return nv, nil
}

// Checksum returns per-block checksums of this node's replica (the peer
// call VolumeChecksum).
func (m *Manager) Checksum(ctx context.Context, req *tandemv1.VolumeChecksumRequest) (*tandemv1.VolumeChecksumResponse, error) {
	// Bounded before anything is read or allocated: a block of 1 byte
	// over 64 MiB would be 512 MiB of sums.
	if err := validate.Checksum(req.Offset, req.Length, req.Block); err != nil {
		return nil, status.Error(codes.InvalidArgument, validate.Message(err))
	}
	nv, err := m.replica(req.Name)
	if err != nil {
		return nil, err
	}
	if size := nv.store.Size(); req.Offset+req.Length > size { // the replica's own size: it changes when the volume grows
		return nil, status.Errorf(codes.InvalidArgument, "checksum range %d+%d is past the end of volume %s (%d bytes)", req.Offset, req.Length, req.Name, size)
	}
	sums, err := nv.store.ChecksumRange(ctx, req.Offset, req.Length, req.Block)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "checksum: %v", err)
	}
	return &tandemv1.VolumeChecksumResponse{Sums: sums}, nil
}

// VerifyHere runs the verify on this node, the primary (the peer call
// VolumeVerify): see verify.
func (m *Manager) VerifyHere(ctx context.Context, req *tandemv1.VerifyVolumeRequest) (*tandemv1.VerifyVolumeResponse, error) {
	nv, err := m.replica(req.Name)
	if err != nil {
		return nil, err
	}
	out, err := nv.verify(ctx, req.Repair, nil)
	if err != nil {
		return out, err
	}
	m.st.Log.Info("online verify done", "volume", req.Name, "checked", out.CheckedBytes, "mismatches", len(out.Mismatches), "repaired", out.RepairedBytes)
	return out, nil
}

// verify compares every block of every in-sync replica (or of only those
// named) with the local one without stopping I/O. Blocks that differ are
// checked again with the block quiesced, since a write may have been in
// flight; the ones still different are reported and, with repair, resent.
func (nv *nodeVolume) verify(ctx context.Context, repair bool, only []string) (*tandemv1.VerifyVolumeResponse, error) {
	m := nv.m
	name := nv.entry.Name
	nv.mu.Lock()
	p := nv.primary
	nv.mu.Unlock()
	if p == nil {
		return nil, status.Errorf(codes.FailedPrecondition, "node %s is not the primary of %s", m.self(), name)
	}
	if ls := p.Local(); ls.State != "UpToDate" {
		// Verify compares against the primary's disk, which holds nothing
		// to rely on while detached.
		return nil, status.Errorf(codes.FailedPrecondition, "the disk of primary %s of %s is %s: re-attach it first with 'tandem volume resync %s'", m.self(), name, ls.Describe(), name)
	}
	meta := m.meta()
	if meta == nil {
		return nil, status.Error(codes.Unavailable, "metadata: this node is not in a cluster")
	}
	ms, err := meta.LocalState()
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "metadata: %v", err)
	}
	var peers []string
	links := map[string]replication.PeerStatus{}
	for _, ps := range p.Status() {
		links[ps.Name] = ps
		if ps.State == "in-sync" && (only == nil || slices.Contains(only, ps.Name)) {
			peers = append(peers, ps.Name)
		}
	}
	remote := func(ctx context.Context, peer string, off, n int64) ([]uint64, error) {
		c, err := m.st.Peer(ms.Nodes[peer].BackendAddr)
		if err != nil {
			return nil, err
		}
		resp, err := c.VolumeChecksum(ctx, &tandemv1.VolumeChecksumRequest{Name: name, Offset: off, Length: n, Block: verifyBlock})
		if err != nil {
			return nil, fmt.Errorf("checksums from %s: %w", peer, err)
		}
		return resp.Sums, nil
	}
	if err := p.Flush(ctx); err != nil {
		return nil, status.Errorf(codes.Unavailable, "flush before verify: %v", err)
	}
	size := nv.store.Size() // the primary's replica, grown with the volume
	out := &tandemv1.VerifyVolumeResponse{Primary: m.self()}
	// Name every replica, compared or not: a report that only covers the
	// in-sync ones reads as an all-clear when one was never looked at.
	var states map[string]consensus.ReplicaState
	if r := nv.rec.Load(); r != nil {
		states = map[string]consensus.ReplicaState{}
		for n, rr := range r.Replicas {
			states[n] = rr.State
		}
	}
	out.Replicas = verifyReplicas(m.self(), nv.entry.Replicas, states, links, peers, only)
	type suspect struct {
		peer string
		off  int64
	}
	var suspects []suspect
	for off := int64(0); off < size; off += verifyChunk {
		n := min(int64(verifyChunk), size-off)
		local, err := nv.store.ChecksumRange(ctx, off, n, verifyBlock)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "local checksum: %v", err)
		}
		for _, peer := range peers {
			sums, err := remote(ctx, peer, off, n)
			if err != nil {
				return nil, status.Errorf(codes.Unavailable, "%v", err)
			}
			for i := range min(len(sums), len(local)) {
				if sums[i] != local[i] {
					suspects = append(suspects, suspect{peer, off + int64(i)*verifyBlock})
				}
			}
		}
		out.CheckedBytes += n
	}
	// A peer that left sync during the scan (fenced: a stalled link found
	// dead, say) misses writes by design, and its differences say nothing
	// a resync will not mend: it is reported as not compared, not as
	// mismatched (the fault-schedule runner's seed 18).
	left := map[string]string{}
	leftSync := func() {
		for _, ps := range p.Status() {
			if slices.Contains(peers, ps.Name) && ps.State != "in-sync" && left[ps.Name] == "" {
				left[ps.Name] = ps.State
			}
		}
	}
	leftSync()
	for _, sp := range suspects {
		if left[sp.peer] != "" {
			continue
		}
		n := min(int64(verifyBlock), size-sp.off)
		// Recheck with the block quiesced: a write in flight during the
		// scan is not a mismatch.
		var a, b []uint64
		err := p.Quiesced(ctx, sp.off, n, func() error {
			var err error
			if a, err = nv.store.ChecksumRange(ctx, sp.off, n, verifyBlock); err != nil {
				return fmt.Errorf("local checksum: %w", err)
			}
			b, err = remote(ctx, sp.peer, sp.off, n)
			return err
		})
		if err != nil {
			return nil, status.Errorf(codes.Unavailable, "recheck at %d: %v", sp.off, err)
		}
		if len(a) == len(b) && len(a) > 0 && a[0] == b[0] {
			continue
		}
		out.Mismatches = append(out.Mismatches, &tandemv1.VerifyMismatch{Node: sp.peer, Offset: sp.off, Length: n})
		for _, vr := range out.Replicas {
			if vr.Node == sp.peer {
				vr.MismatchedBytes += n
			}
		}
		if repair {
			if err := p.Repair(ctx, sp.peer, sp.off, n); err != nil {
				return out, status.Errorf(codes.Unavailable, "repair %s at %d: %v", sp.peer, sp.off, err)
			}
			out.RepairedBytes += n
		}
	}
	leftSync()
	dropLeftSync(out, left)
	return out, nil
}

// dropLeftSync reports the peers in left (peer: its link state now) as not
// compared, without their mismatches.
func dropLeftSync(out *tandemv1.VerifyVolumeResponse, left map[string]string) {
	if len(left) == 0 {
		return
	}
	out.Mismatches = slices.DeleteFunc(out.Mismatches, func(mm *tandemv1.VerifyMismatch) bool { return left[mm.Node] != "" })
	for _, vr := range out.Replicas {
		if st := left[vr.Node]; st != "" {
			vr.Compared, vr.MismatchedBytes = false, 0
			vr.SkippedReason = fmt.Sprintf("left sync during the verify (link %s): it misses writes until its resync, which is automatic", st)
		}
	}
}

// verifyReplicas lists every replica but the primary (self) and says
// whether it is compared. Replicas outside only (when given) are left out.
func verifyReplicas(self string, replicas []string, states map[string]consensus.ReplicaState, links map[string]replication.PeerStatus, compared, only []string) []*tandemv1.VerifyReplica {
	var out []*tandemv1.VerifyReplica
	for _, n := range replicas {
		if n == self || (only != nil && !slices.Contains(only, n)) {
			continue
		}
		vr := &tandemv1.VerifyReplica{Node: n, State: replicaStateProto(states[n]), Compared: slices.Contains(compared, n)}
		if !vr.Compared {
			link, ok := links[n]
			switch {
			case !ok:
				vr.SkippedReason = "the primary has no replication link to it"
			case link.State == "syncing" || states[n] == consensus.SyncTarget:
				vr.SkippedReason = fmt.Sprintf("resync running (link %s, %s still to send)", link.State, units.FormatBytes(link.DirtyBytes))
			default:
				vr.SkippedReason = fmt.Sprintf("not in sync (state %s, link %s)", states[n], orUnknown(link.State))
			}
		}
		out = append(out, vr)
	}
	return out
}
