package daemon

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tandemhci/tandem/blockstore"
	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/units"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

var volumeNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

const maxVolumeSize = 64 << 40

func replicaStateProto(s consensus.ReplicaState) tandemv1.ReplicaState {
	switch s {
	case consensus.UpToDate:
		return tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE
	case consensus.Outdated:
		return tandemv1.ReplicaState_REPLICA_STATE_OUTDATED
	case consensus.Inconsistent:
		return tandemv1.ReplicaState_REPLICA_STATE_INCONSISTENT
	case consensus.SyncSource:
		return tandemv1.ReplicaState_REPLICA_STATE_SYNC_SOURCE
	case consensus.SyncTarget:
		return tandemv1.ReplicaState_REPLICA_STATE_SYNC_TARGET
	}
	return tandemv1.ReplicaState_REPLICA_STATE_UNSPECIFIED
}

func peerVolume(e *consensus.VolumeEntry) *tandemv1.PeerVolume {
	return &tandemv1.PeerVolume{Name: e.Name, ShardId: e.ShardID, SizeBytes: e.Size, Replicas: e.Replicas, Witness: e.Witness}
}

func entryOf(v *tandemv1.PeerVolume) (consensus.VolumeEntry, error) {
	if v == nil || v.Name == "" || v.ShardId == 0 || v.SizeBytes <= 0 || len(v.Replicas) == 0 {
		return consensus.VolumeEntry{}, status.Error(codes.InvalidArgument, "incomplete volume description")
	}
	return consensus.VolumeEntry{Name: v.Name, ShardID: v.ShardId, Size: v.SizeBytes, Replicas: v.Replicas, Witness: v.Witness}, nil
}

// info is this node's view of a volume it holds.
func (m *volumeManager) info(name string) (*tandemv1.VolumeInfo, error) {
	nv := m.get(name)
	if nv == nil {
		return nil, status.Errorf(codes.NotFound, "node %s holds no volume %q", m.d.cfg.NodeName, name)
	}
	e := nv.entry
	out := &tandemv1.VolumeInfo{Name: e.Name, SizeBytes: e.Size, ShardId: e.ShardID, Witness: e.Witness, AnsweredBy: m.d.cfg.NodeName}
	r := nv.rec.Load()
	if nv.unrelated {
		out.Warning = fmt.Sprintf("the replica on %s holds another volume's data; resolve with 'tandem volume resync %s --discard %s'", m.d.cfg.NodeName, e.Name, m.d.cfg.NodeName)
	}
	if r == nil {
		out.Warning = "the volume's record has not been applied on this node yet"
		return out, nil
	}
	out.Epoch, out.Primary, out.MigrationTarget = r.Epoch, r.Primary, r.MigrationTarget
	names := make([]string, 0, len(r.Replicas))
	for n := range r.Replicas {
		names = append(names, n)
	}
	slices.Sort(names)
	byName := map[string]*tandemv1.VolumeReplica{}
	for _, n := range names {
		rr := r.Replicas[n]
		vr := &tandemv1.VolumeReplica{Node: n, State: replicaStateProto(rr.State), Primary: n == r.Primary, Since: timestamppb.New(rr.Since), Reconcile: rr.Reconcile}
		byName[n] = vr
		out.Replicas = append(out.Replicas, vr)
	}
	nv.mu.Lock()
	p := nv.primary
	nv.mu.Unlock()
	if p != nil {
		for _, ps := range p.Status() {
			if vr, ok := byName[ps.Name]; ok {
				vr.Link, vr.DirtyBytes, vr.ResyncSentBytes = ps.State, ps.DirtyBytes, ps.ResyncBytes
			}
		}
		out.NbdUnix = fmt.Sprintf("nbd+unix:///%s?socket=%s", e.Name, m.d.lay.nbdSocket())
		out.NbdTcp = fmt.Sprintf("nbd://%s/%s", m.d.cfg.NBDAddr, e.Name)
	} else if r.Primary == m.d.cfg.NodeName {
		out.Warning = "this node is primary but replication has not started yet"
	}
	from := max(0, len(r.History)-10)
	for _, h := range r.History[from:] {
		out.History = append(out.History, &tandemv1.VolumeEvent{At: timestamppb.New(h.At), By: h.By, Epoch: h.Epoch, What: h.What, Reason: h.Reason})
	}
	return out, nil
}

type volumeService struct {
	tandemv1.UnimplementedVolumeServer
	d *Daemon
}

func (s *volumeService) catalog(ctx context.Context, fresh bool) (*consensus.MetaState, error) {
	_, meta, _ := s.d.cluster()
	if meta == nil {
		return nil, status.Error(codes.FailedPrecondition, "this node is not in a cluster")
	}
	if fresh {
		rctx, cancel := context.WithTimeout(ctx, s.d.quorumTimeout())
		defer cancel()
		ms, err := meta.State(rctx)
		if err != nil {
			return nil, metaError(err)
		}
		return ms, nil
	}
	return meta.LocalState()
}

func (s *volumeService) Create(ctx context.Context, req *tandemv1.CreateVolumeRequest) (*tandemv1.VolumeInfo, error) {
	d := s.d
	switch {
	case !volumeNameRE.MatchString(req.Name):
		return nil, status.Errorf(codes.InvalidArgument, "volume name %q: use 1-63 lowercase letters, digits, '-' or '_', starting with a letter or digit", req.Name)
	case req.SizeBytes <= 0 || req.SizeBytes%4096 != 0:
		return nil, status.Errorf(codes.InvalidArgument, "size %s (%d bytes): must be a positive multiple of 4 KiB", units.FormatBytes(req.SizeBytes), req.SizeBytes)
	case req.SizeBytes > maxVolumeSize:
		return nil, status.Errorf(codes.InvalidArgument, "size %s is over the %s limit", units.FormatBytes(req.SizeBytes), units.FormatBytes(maxVolumeSize))
	}
	replicas := int(req.Replicas)
	if replicas == 0 {
		replicas = max(2, len(req.Nodes))
	}
	if replicas < 1 || replicas > 3 {
		return nil, status.Errorf(codes.InvalidArgument, "replicas %d: use 1, 2 or 3", replicas)
	}
	if err := d.requireQuorum(ctx); err != nil {
		return nil, err
	}
	ms, err := s.catalog(ctx, true)
	if err != nil {
		return nil, err
	}
	if _, ok := ms.Volumes[req.Name]; ok {
		return nil, status.Errorf(codes.AlreadyExists, "volume %q already exists", req.Name)
	}
	nodes, witness, err := s.place(ctx, ms, req.SizeBytes, replicas, req.Nodes)
	if err != nil {
		return nil, err
	}
	_, meta, _ := d.cluster()
	e, err := meta.CreateVolume(ctx, consensus.VolumeEntry{Name: req.Name, Size: req.SizeBytes, Replicas: nodes, Witness: witness})
	if err != nil {
		return nil, metaError(err)
	}
	if err := s.provision(ctx, ms, e); err != nil {
		d.log.Error("volume creation failed; cleaning up", "volume", e.Name, "err", err)
		cctx := context.WithoutCancel(ctx)
		// Marked deleting first, so that a node that cannot be cleaned up
		// now removes its replica when it can (sweepDeleted).
		if serr := meta.SetVolumeState(cctx, e.Name, consensus.VolumeDeleting); serr != nil {
			d.log.Error("cannot mark the failed volume deleting", "volume", e.Name, "err", serr)
		}
		if derr := s.destroy(cctx, ms, e); derr != nil {
			d.log.Error("cleanup of the failed volume is incomplete; it stays listed as deleting", "volume", e.Name, "err", derr)
		}
		return nil, err
	}
	if err := meta.SetVolumeState(ctx, e.Name, consensus.VolumeReady); err != nil {
		return nil, metaError(err)
	}
	d.log.Info("volume created", "volume", e.Name, "size", e.Size, "replicas", e.Replicas, "witness", e.Witness, "shard", e.ShardID)
	return s.show(ctx, e.Name, 10*time.Second)
}

// place picks the replica nodes (the first is the initial primary) and, for
// an even count, a witness.
func (s *volumeService) place(ctx context.Context, ms *consensus.MetaState, size int64, replicas int, want []string) ([]string, string, error) {
	free := s.freeSpace(ctx, ms)
	isData := func(n string) bool {
		rec, ok := ms.Nodes[n]
		return ok && rec.State == consensus.NodeMember && rec.Role != "witness"
	}
	var nodes []string
	if len(want) > 0 {
		// Name a wrong node before complaining about the count: the count
		// is usually wrong because of it.
		for _, n := range want {
			if _, known := ms.Nodes[n]; !known {
				return nil, "", status.Errorf(codes.InvalidArgument, "no node named %q in this cluster (nodes: %s)", n, strings.Join(slices.Sorted(maps.Keys(ms.Nodes)), ", "))
			}
		}
		if len(want) != replicas {
			return nil, "", status.Errorf(codes.InvalidArgument, "%d node(s) given (%s) for %d replicas", len(want), strings.Join(want, ", "), replicas)
		}
		for _, n := range want {
			switch f, online := free[n]; {
			case !isData(n):
				return nil, "", status.Errorf(codes.InvalidArgument, "node %q is not a data node of this cluster", n)
			case slices.Contains(nodes, n):
				return nil, "", status.Errorf(codes.InvalidArgument, "node %q given twice", n)
			case !online:
				return nil, "", status.Errorf(codes.Unavailable, "node %q does not answer", n)
			case f < size:
				return nil, "", status.Errorf(codes.ResourceExhausted, "node %s has %s free; the volume needs %s", n, units.FormatBytes(f), units.FormatBytes(size))
			}
			nodes = append(nodes, n)
		}
	} else {
		var cands []string
		for n, f := range free {
			if isData(n) && f >= size {
				cands = append(cands, n)
			}
		}
		// Most free space first; the name breaks ties so placement is stable.
		slices.SortFunc(cands, func(a, b string) int {
			if free[a] != free[b] {
				if free[a] > free[b] {
					return -1
				}
				return 1
			}
			return strings.Compare(a, b)
		})
		if len(cands) < replicas {
			return nil, "", status.Errorf(codes.ResourceExhausted, "only %d online data node(s) have %s free for the volume; %d replicas needed", len(cands), units.FormatBytes(size), replicas)
		}
		nodes = cands[:replicas]
	}
	if replicas%2 == 1 {
		return nodes, "", nil
	}
	// An even number of data replicas needs a tie-breaker: prefer a
	// witness node, else any other online member.
	var witness string
	for n, rec := range ms.Nodes {
		if _, online := free[n]; !online || rec.State != consensus.NodeMember || slices.Contains(nodes, n) {
			continue
		}
		if witness == "" || (rec.Role == "witness" && ms.Nodes[witness].Role != "witness") || (rec.Role == ms.Nodes[witness].Role && n < witness) {
			witness = n
		}
	}
	if witness == "" {
		return nil, "", status.Error(codes.FailedPrecondition, "a 2-replica volume needs a third online node as witness")
	}
	return nodes, witness, nil
}

// freeSpace asks every member for the free space of its volume disk; nodes
// that do not answer are left out.
func (s *volumeService) freeSpace(ctx context.Context, ms *consensus.MetaState) map[string]int64 {
	out := map[string]int64{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for name, rec := range ms.Nodes {
		if rec.State != consensus.NodeMember {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := s.d.peerClient(rec.BackendAddr)
			if err != nil {
				return
			}
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			resp, err := c.DiskInfo(cctx, &tandemv1.DiskInfoRequest{})
			if err != nil || len(resp.Disks) == 0 {
				return
			}
			mu.Lock()
			out[name] = resp.Disks[0].FreeBytes
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

// provision opens the replicas, writes the first record, adds the witness.
func (s *volumeService) provision(ctx context.Context, ms *consensus.MetaState, e *consensus.VolumeEntry) error {
	pv := peerVolume(e)
	errs := make([]error, len(e.Replicas))
	var wg sync.WaitGroup
	for i, n := range e.Replicas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.onNode(ctx, ms, n, func(ctx context.Context, c tandemv1.PeerClient) error {
				_, err := c.VolumeOpen(ctx, &tandemv1.PeerVolumeOpenRequest{Volume: pv, Create: true})
				return err
			})
		}()
	}
	wg.Wait()
	var failed []error
	for _, err := range errs {
		if err != nil {
			failed = append(failed, err)
		}
	}
	if err := joinStatus(failed); err != nil {
		return err
	}
	if err := s.onNode(ctx, ms, e.Replicas[0], func(ctx context.Context, c tandemv1.PeerClient) error {
		_, err := c.VolumeInit(ctx, &tandemv1.PeerVolumeInitRequest{Volume: pv})
		return err
	}); err != nil {
		return err
	}
	if e.Witness != "" {
		return s.onNode(ctx, ms, e.Witness, func(ctx context.Context, c tandemv1.PeerClient) error {
			_, err := c.VolumeOpen(ctx, &tandemv1.PeerVolumeOpenRequest{Volume: pv, Create: true})
			return err
		})
	}
	return nil
}

// destroy removes a volume from every node it was placed on, then from the
// catalog. While a node has not confirmed, the catalog entry stays (as
// deleting): the next delete, or the node's own sweep, finishes the job.
func (s *volumeService) destroy(ctx context.Context, ms *consensus.MetaState, e *consensus.VolumeEntry) error {
	var errs []error
	for _, n := range append(slices.Clone(e.Replicas), e.Witness) {
		if n == "" {
			continue
		}
		if err := s.onNode(ctx, ms, n, func(ctx context.Context, c tandemv1.PeerClient) error {
			_, err := c.VolumeClose(ctx, &tandemv1.PeerVolumeCloseRequest{Name: e.Name, ShardId: e.ShardID, Destroy: true})
			return err
		}); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return joinStatus(errs)
	}
	_, meta, _ := s.d.cluster()
	if err := meta.DeleteVolume(ctx, e.Name); err != nil {
		return metaError(err)
	}
	return nil
}

func (s *volumeService) onNode(ctx context.Context, ms *consensus.MetaState, node string, f func(context.Context, tandemv1.PeerClient) error) error {
	return s.d.callNode(ctx, ms, node, 30*time.Second, f)
}

func (s *volumeService) List(ctx context.Context, _ *tandemv1.ListVolumesRequest) (*tandemv1.ListVolumesResponse, error) {
	ms, err := s.catalog(ctx, false)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(ms.Volumes))
	for n := range ms.Volumes {
		names = append(names, n)
	}
	slices.Sort(names)
	out := &tandemv1.ListVolumesResponse{}
	for _, n := range names {
		info, err := s.show(ctx, n, 2*time.Second)
		if err != nil {
			info = &tandemv1.VolumeInfo{Name: n, Warning: grpcMessage(err)}
		}
		out.Volumes = append(out.Volumes, info)
	}
	return out, nil
}

func (s *volumeService) Show(ctx context.Context, req *tandemv1.ShowVolumeRequest) (*tandemv1.VolumeInfo, error) {
	return s.show(ctx, req.Name, 3*time.Second)
}

// show asks every node holding the volume and keeps the freshest answer,
// preferring the primary's (it alone knows the replication links).
func (s *volumeService) show(ctx context.Context, name string, timeout time.Duration) (*tandemv1.VolumeInfo, error) {
	ms, err := s.catalog(ctx, false)
	if err != nil {
		return nil, err
	}
	e, ok := ms.Volumes[name]
	if !ok {
		// This node may not have applied the volume's creation yet.
		if ms, err = s.catalog(ctx, true); err != nil {
			return nil, err
		}
		if e, ok = ms.Volumes[name]; !ok {
			return nil, status.Errorf(codes.NotFound, "no volume named %q", name)
		}
	}
	answers := make([]*tandemv1.VolumeInfo, len(e.Replicas))
	var wg sync.WaitGroup
	for i, n := range e.Replicas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			_ = s.onNode(cctx, ms, n, func(ctx context.Context, c tandemv1.PeerClient) error {
				info, err := c.VolumeStatus(ctx, &tandemv1.PeerVolumeStatusRequest{Name: name})
				answers[i] = info
				return err
			})
		}()
	}
	wg.Wait()
	var best *tandemv1.VolumeInfo
	for _, a := range answers {
		if a == nil {
			continue
		}
		isPrimary := a.AnsweredBy == a.Primary && a.NbdTcp != ""
		bestPrimary := best != nil && best.AnsweredBy == best.Primary && best.NbdTcp != ""
		if best == nil || a.Epoch > best.Epoch || (a.Epoch == best.Epoch && isPrimary && !bestPrimary) {
			best = a
		}
	}
	if best == nil {
		best = &tandemv1.VolumeInfo{Name: e.Name, SizeBytes: e.Size, ShardId: e.ShardID, Witness: e.Witness,
			Warning: "no node holding the volume answered"}
	} else if best.AnsweredBy != best.Primary && best.Warning == "" {
		best.Warning = fmt.Sprintf("the primary %s did not answer; this is %s's view", best.Primary, best.AnsweredBy)
	}
	best.Created = timestamppb.New(e.Created)
	for _, vm := range ms.VMs {
		if slices.Contains(vm.Spec.Volumes, name) {
			best.UsedBy = vm.Name
		}
	}
	var why string
	best.State, why = volumeHealth(e.State, best)
	if why != "" && best.Warning == "" {
		best.Warning = why
	}
	return best, nil
}

func (s *volumeService) Delete(ctx context.Context, req *tandemv1.DeleteVolumeRequest) (*tandemv1.DeleteVolumeResponse, error) {
	if err := s.d.requireQuorum(ctx); err != nil {
		return nil, err
	}
	ms, err := s.catalog(ctx, true)
	if err != nil {
		return nil, err
	}
	e, ok := ms.Volumes[req.Name]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "no volume named %q", req.Name)
	}
	if info, _ := s.show(ctx, req.Name, 3*time.Second); info != nil && info.NbdConnections > 0 {
		return nil, status.Errorf(codes.FailedPrecondition, "volume %s is attached (%d NBD client(s) connected to its primary %s); detach it first", req.Name, info.NbdConnections, info.Primary)
	}
	_, meta, _ := s.d.cluster()
	if err := meta.SetVolumeState(ctx, e.Name, consensus.VolumeDeleting); err != nil {
		return nil, metaError(err)
	}
	if err := s.destroy(ctx, ms, e); err != nil {
		// Aborted, not the node's own code: a relayed Unavailable would
		// read as this daemon being unreachable.
		return nil, status.Errorf(codes.Aborted, "delete %s: %s; it stays listed as deleting until every node has removed its replica (run the command again to finish)", e.Name, grpcMessage(err))
	}
	return &tandemv1.DeleteVolumeResponse{}, nil
}

func (s *volumeService) Promote(ctx context.Context, req *tandemv1.PromoteVolumeRequest) (*tandemv1.VolumeInfo, error) {
	if err := s.d.requireQuorum(ctx); err != nil {
		return nil, err
	}
	ms, err := s.catalog(ctx, true)
	if err != nil {
		return nil, err
	}
	e, ok := ms.Volumes[req.Name]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "no volume named %q", req.Name)
	}
	if !slices.Contains(e.Replicas, req.Node) {
		return nil, status.Errorf(codes.InvalidArgument, "node %q holds no replica of %s (replicas: %s)", req.Node, e.Name, strings.Join(e.Replicas, ", "))
	}
	var out *tandemv1.VolumeInfo
	if err := s.onNode(ctx, ms, req.Node, func(ctx context.Context, c tandemv1.PeerClient) error {
		info, err := c.VolumePromote(ctx, req)
		out = info
		return err
	}); err != nil {
		return nil, err
	}
	s.audit(ctx, "volume-promote", fmt.Sprintf("volume %s: %s made primary by an operator (epoch %d)", req.Name, req.Node, out.GetEpoch()))
	return out, nil
}

// audit records an operator's action that no metadata command records by
// itself; the action is done, so a failure to record it is only logged.
func (s *volumeService) audit(ctx context.Context, action, detail string) {
	_, meta, _ := s.d.cluster()
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
	defer cancel()
	if err := meta.Audit(actx, action, detail); err != nil {
		s.d.log.Warn("cannot record an audit entry", "action", action, "detail", detail, "err", err)
	}
}

// Resync: resync of Outdated replicas is automatic once they are reachable;
// this reports where it stands. With discard_node it first throws that
// replica's data away, so that it is resynced in full from the primary.
func (s *volumeService) Resync(ctx context.Context, req *tandemv1.ResyncVolumeRequest) (*tandemv1.VolumeInfo, error) {
	if req.DiscardNode == "" {
		return s.show(ctx, req.Name, 3*time.Second)
	}
	if err := s.d.requireQuorum(ctx); err != nil {
		return nil, err
	}
	info, err := s.show(ctx, req.Name, 3*time.Second)
	if err != nil {
		return nil, err
	}
	ms, err := s.catalog(ctx, false)
	if err != nil {
		return nil, err
	}
	e := ms.Volumes[req.Name]
	switch {
	case e == nil:
		return nil, status.Errorf(codes.NotFound, "no volume named %q", req.Name)
	case !slices.Contains(e.Replicas, req.DiscardNode):
		return nil, status.Errorf(codes.InvalidArgument, "node %q holds no replica of %s", req.DiscardNode, req.Name)
	case info.Primary == req.DiscardNode:
		return nil, status.Errorf(codes.FailedPrecondition, "%s is the primary of %s: promote another UpToDate replica before discarding its data", req.DiscardNode, req.Name)
	case info.Primary == "" || info.NbdTcp == "":
		return nil, status.Errorf(codes.Unavailable, "the primary of %s does not answer; nothing was discarded", req.Name)
	}
	if err := s.onNode(ctx, ms, req.DiscardNode, func(ctx context.Context, c tandemv1.PeerClient) error {
		_, err := c.VolumeDiscard(ctx, &tandemv1.PeerVolumeStatusRequest{Name: req.Name})
		return err
	}); err != nil {
		return nil, err
	}
	var out *tandemv1.VolumeInfo
	if err := s.onNode(ctx, ms, info.Primary, func(ctx context.Context, c tandemv1.PeerClient) error {
		var err error
		out, err = c.VolumeDiscardPeer(ctx, &tandemv1.PromoteVolumeRequest{Name: req.Name, Node: req.DiscardNode})
		return err
	}); err != nil {
		return nil, err
	}
	s.d.log.Warn("replica data discarded by an operator; full resync", "volume", req.Name, "node", req.DiscardNode)
	return out, nil
}

func (s *peerService) VolumeDiscard(ctx context.Context, req *tandemv1.PeerVolumeStatusRequest) (*tandemv1.PeerVolumeCloseResponse, error) {
	vm := s.d.volumes()
	if vm == nil {
		return nil, status.Error(codes.FailedPrecondition, "volumes are not running on this node")
	}
	nv := vm.get(req.Name)
	if nv == nil || nv.witness {
		return nil, status.Errorf(codes.NotFound, "node %s holds no replica of %q", s.d.cfg.NodeName, req.Name)
	}
	nv.mu.Lock()
	primary := nv.primary != nil
	nv.mu.Unlock()
	if primary {
		return nil, status.Errorf(codes.FailedPrecondition, "%s is the primary of %s; its data cannot be discarded", s.d.cfg.NodeName, req.Name)
	}
	e := nv.entry
	if err := vm.close(req.Name, true, false); err != nil {
		return nil, status.Errorf(codes.Internal, "close replica: %v", err)
	}
	if err := vm.open(ctx, e, true); err != nil {
		return nil, openStatus(fmt.Errorf("recreate replica: %w", err))
	}
	return &tandemv1.PeerVolumeCloseResponse{}, nil
}

func (s *peerService) VolumeDiscardPeer(ctx context.Context, req *tandemv1.PromoteVolumeRequest) (*tandemv1.VolumeInfo, error) {
	vm := s.d.volumes()
	if vm == nil {
		return nil, status.Error(codes.FailedPrecondition, "volumes are not running on this node")
	}
	nv := vm.get(req.Name)
	if nv == nil {
		return nil, status.Errorf(codes.NotFound, "node %s holds no volume %q", s.d.cfg.NodeName, req.Name)
	}
	nv.mu.Lock()
	p := nv.primary
	nv.mu.Unlock()
	if p == nil {
		return nil, status.Errorf(codes.FailedPrecondition, "node %s is not the primary of %s", s.d.cfg.NodeName, req.Name)
	}
	if err := p.DiscardPeer(ctx, req.Node); err != nil {
		return nil, status.Errorf(codes.Unavailable, "%v", err)
	}
	return vm.info(req.Name)
}

// Peer side of volume management.

func (s *peerService) DiskInfo(_ context.Context, _ *tandemv1.DiskInfoRequest) (*tandemv1.DiskInfoResponse, error) {
	vm := s.d.volumes()
	if vm == nil {
		return nil, status.Error(codes.FailedPrecondition, "volumes are not running on this node")
	}
	dir := vm.volumeDir()
	if err := ensureDir(dir); err != nil {
		return nil, status.Errorf(codes.Internal, "volume dir: %v", err)
	}
	out := &tandemv1.DiskInfoResponse{}
	info, err := blockstore.ProbeDisk(dir)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	out.Disks = append(out.Disks, &tandemv1.Disk{Path: info.Path, Kind: string(info.Kind), CapacityBytes: info.Capacity, FreeBytes: info.Free})
	for _, p := range s.d.cfg.Disks {
		if filepath.Clean(p) == filepath.Clean(dir) {
			continue
		}
		if info, err := blockstore.ProbeDisk(p); err == nil {
			out.Disks = append(out.Disks, &tandemv1.Disk{Path: info.Path, Kind: string(info.Kind), CapacityBytes: info.Capacity, FreeBytes: info.Free})
		}
	}
	return out, nil
}

func (s *peerService) VolumeOpen(ctx context.Context, req *tandemv1.PeerVolumeOpenRequest) (*tandemv1.PeerVolumeOpenResponse, error) {
	e, err := entryOf(req.Volume)
	if err != nil {
		return nil, err
	}
	vm := s.d.volumes()
	if vm == nil {
		return nil, status.Error(codes.FailedPrecondition, "volumes are not running on this node")
	}
	if err := vm.open(ctx, e, req.Create); err != nil {
		return nil, openStatus(err)
	}
	return &tandemv1.PeerVolumeOpenResponse{}, nil
}

// openStatus maps a failure to open or create a replica: lack of space is
// the operator's to resolve (ResourceExhausted), not an internal error.
func openStatus(err error) error {
	if errors.Is(err, syscall.ENOSPC) {
		return status.Error(codes.ResourceExhausted, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// joinStatus joins per-node failures into one status with the first one's code.
func joinStatus(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	msgs := make([]string, len(errs))
	for i, err := range errs {
		msgs[i] = grpcMessage(err)
	}
	return status.Error(status.Code(errs[0]), strings.Join(msgs, "; "))
}

func (s *peerService) VolumeInit(ctx context.Context, req *tandemv1.PeerVolumeInitRequest) (*tandemv1.PeerVolumeInitResponse, error) {
	e, err := entryOf(req.Volume)
	if err != nil {
		return nil, err
	}
	vm := s.d.volumes()
	if vm == nil {
		return nil, status.Error(codes.FailedPrecondition, "volumes are not running on this node")
	}
	if err := vm.initRecord(ctx, e); err != nil {
		return nil, metaError(err)
	}
	return &tandemv1.PeerVolumeInitResponse{}, nil
}

func (s *peerService) VolumeClose(_ context.Context, req *tandemv1.PeerVolumeCloseRequest) (*tandemv1.PeerVolumeCloseResponse, error) {
	vm := s.d.volumes()
	if vm == nil {
		return nil, status.Error(codes.FailedPrecondition, "volumes are not running on this node")
	}
	if err := vm.close(req.Name, req.Destroy, req.Destroy); err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	return &tandemv1.PeerVolumeCloseResponse{}, nil
}

func (s *peerService) VolumeStatus(_ context.Context, req *tandemv1.PeerVolumeStatusRequest) (*tandemv1.VolumeInfo, error) {
	vm := s.d.volumes()
	if vm == nil {
		return nil, status.Error(codes.FailedPrecondition, "volumes are not running on this node")
	}
	info, err := vm.info(req.Name)
	if err != nil {
		return nil, err
	}
	if info.NbdTcp != "" {
		info.NbdConnections = int32(s.d.nbdConnections(req.Name))
	}
	return info, nil
}

func (s *peerService) VolumePromote(ctx context.Context, req *tandemv1.PromoteVolumeRequest) (*tandemv1.VolumeInfo, error) {
	vm := s.d.volumes()
	if vm == nil {
		return nil, status.Error(codes.FailedPrecondition, "volumes are not running on this node")
	}
	nv := vm.get(req.Name)
	if nv == nil || nv.witness {
		return nil, status.Errorf(codes.NotFound, "node %s holds no replica of %q", s.d.cfg.NodeName, req.Name)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	rec, err := nv.vols.Promote(pctx, nv.entry.ShardID, s.d.cfg.NodeName, 0, "operator promote")
	if err != nil {
		switch {
		case errors.Is(err, consensus.ErrNotUpToDate):
			return nil, status.Errorf(codes.FailedPrecondition, "cannot promote %s on %s: %v", req.Name, s.d.cfg.NodeName, err)
		case errors.Is(err, consensus.ErrNoQuorum):
			return nil, status.Errorf(codes.FailedPrecondition, "no quorum in volume %s's shard: nothing was changed", req.Name)
		}
		return nil, metaError(err)
	}
	nv.observe(rec)
	// Wait briefly for replication to start so the answer shows the links.
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		nv.mu.Lock()
		up := nv.primary != nil && nv.primaryEpoch == rec.Epoch
		nv.mu.Unlock()
		if up {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return vm.info(req.Name)
}
