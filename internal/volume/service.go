package volume

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tandemhci/tandem/blockstore"
	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/apinames"
	"github.com/tandemhci/tandem/internal/placement"
	"github.com/tandemhci/tandem/internal/units"
	"github.com/tandemhci/tandem/internal/validate"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
	"github.com/tandemhci/tandem/replication"
)

func replicaStateProto(s consensus.ReplicaState) tandemv1.ReplicaState {
	return apinames.ReplicaStateNamed(string(s))
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

// Info is this node's view of a volume it holds.
func (m *Manager) Info(name string) (*tandemv1.VolumeInfo, error) {
	nv := m.get(name)
	if nv == nil {
		return nil, status.Errorf(codes.NotFound, "node %s holds no volume %q", m.self(), name)
	}
	e := nv.entry
	out := &tandemv1.VolumeInfo{Name: e.Name, SizeBytes: e.Size, ShardId: e.ShardID, Witness: e.Witness, AnsweredBy: m.self()}
	r := nv.rec.Load()
	if nv.unrelated {
		out.Warning = fmt.Sprintf("the replica on %s holds another volume's data; resolve with 'tandem volume resync %s --discard %s'", m.self(), e.Name, m.self())
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
				vr.Link, vr.DirtyBytes, vr.ResyncSentBytes, vr.DataStream = ps.State, ps.DirtyBytes, ps.ResyncBytes, ps.Stream
			}
		}
		if ls := p.Local(); ls.State != "UpToDate" {
			if vr, ok := byName[m.self()]; ok {
				vr.Link = ls.Describe()
			}
			out.Warning = fmt.Sprintf("the primary's disk is detached; it serves through its peers: %s. Once the disk works, re-attach it with 'tandem volume resync %s'", ls.Describe(), e.Name)
		}
		out.NbdUnix = fmt.Sprintf("nbd+unix:///%s?socket=%s", e.Name, m.nbdSocket)
		if a := m.st.Node.NBDAddr; a != "" {
			// TLS only: an export certificate ('tandem volume export-cert') opens it.
			out.NbdTcp = fmt.Sprintf("nbds://%s/%s", a, e.Name)
		}
	} else if r.Primary == m.self() {
		out.Warning = "this node is primary but replication has not started yet"
	}
	from := max(0, len(r.History)-10)
	for _, h := range r.History[from:] {
		out.History = append(out.History, &tandemv1.VolumeEvent{At: timestamppb.New(h.At), By: h.By, Epoch: h.Epoch, What: h.What, Reason: h.Reason})
	}
	return out, nil
}

// Catalog is the metadata (the volume catalog with the nodes and VMs):
// with fresh a linearizable read bounded by the quorum timeout, else this
// replica's copy.
func (m *Manager) Catalog(ctx context.Context, fresh bool) (*consensus.MetaState, error) {
	meta := m.meta()
	if meta == nil {
		return nil, status.Error(codes.FailedPrecondition, "this node is not in a cluster")
	}
	if fresh {
		rctx, cancel := context.WithTimeout(ctx, m.quorumTimeout)
		defer cancel()
		ms, err := meta.State(rctx)
		if err != nil {
			return nil, metaError(err)
		}
		return ms, nil
	}
	return meta.LocalState()
}

// Create validates, places and provisions a new volume (the admin call);
// a failed provisioning is cleaned up and the volume marked deleting.
func (m *Manager) Create(ctx context.Context, req *tandemv1.CreateVolumeRequest) (*tandemv1.VolumeInfo, error) {
	// The API checked these already (internal/api); a VM's new disks come
	// here directly.
	if err := validate.VolumeName(req.Name); err != nil {
		return nil, status.Error(codes.InvalidArgument, validate.Message(err))
	}
	if err := validate.VolumeSize(req.SizeBytes); err != nil {
		return nil, status.Error(codes.InvalidArgument, validate.Message(err))
	}
	switch req.Backend {
	case consensus.BackendRBD:
		return m.createRBD(ctx, req)
	case "", consensus.BackendReplicated:
		if req.Storage != "" || req.Pool != "" {
			return nil, status.Error(codes.InvalidArgument, "--storage and --pool apply to RBD volumes only (--backend rbd)")
		}
	default:
		return nil, status.Errorf(codes.InvalidArgument, "backend %s: use %q (the default) or %q", validate.Show(req.Backend), consensus.BackendReplicated, consensus.BackendRBD)
	}
	replicas := int(req.Replicas)
	if replicas == 0 {
		replicas = max(2, len(req.Nodes))
	}
	if replicas < 1 || replicas > 3 {
		return nil, status.Errorf(codes.InvalidArgument, "replicas %d: use 1, 2 or 3", replicas)
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
	nodes, witness, err := m.Place(ctx, ms, req.SizeBytes, replicas, req.Nodes)
	if err != nil {
		return nil, err
	}
	meta := m.meta()
	if err := validate.VolumeHA(req.Ha); err != nil {
		return nil, status.Error(codes.InvalidArgument, validate.Message(err))
	}
	e, err := meta.CreateVolume(ctx, consensus.VolumeEntry{Name: req.Name, Size: req.SizeBytes, Replicas: nodes, Witness: witness, HA: req.Ha})
	if err != nil {
		return nil, metaError(err)
	}
	if err := m.provision(ctx, ms, e); err != nil {
		m.st.Log.Error("volume creation failed; cleaning up", "volume", e.Name, "err", err)
		cctx := context.WithoutCancel(ctx)
		// Marked deleting first, so that a node that cannot be cleaned up
		// now removes its replica when it can (SweepDeleted).
		if serr := meta.SetVolumeState(cctx, e.Name, consensus.VolumeDeleting); serr != nil {
			m.st.Log.Error("cannot mark the failed volume deleting", "volume", e.Name, "err", serr)
		}
		if derr := m.destroy(cctx, ms, e); derr != nil {
			m.st.Log.Error("cleanup of the failed volume is incomplete; it stays listed as deleting", "volume", e.Name, "err", derr)
		}
		return nil, err
	}
	if err := meta.SetVolumeState(ctx, e.Name, consensus.VolumeReady); err != nil {
		return nil, metaError(err)
	}
	m.st.Log.Info("volume created", "volume", e.Name, "size", e.Size, "replicas", e.Replicas, "witness", e.Witness, "shard", e.ShardID)
	return m.Show(ctx, e.Name, 10*time.Second)
}

// Set changes a volume's settings: its HA policy.
func (m *Manager) Set(ctx context.Context, req *tandemv1.SetVolumeRequest) (*tandemv1.VolumeInfo, error) {
	if err := validate.VolumeName(req.Name); err != nil {
		return nil, status.Error(codes.InvalidArgument, validate.Message(err))
	}
	if err := validate.VolumeHA(req.Ha); err != nil {
		return nil, status.Error(codes.InvalidArgument, validate.Message(err))
	}
	if req.Ha == "" {
		return nil, status.Error(codes.InvalidArgument, "nothing to change: give --ha auto or --ha manual")
	}
	meta := m.meta()
	if meta == nil {
		return nil, status.Error(codes.FailedPrecondition, "this node is not in a cluster")
	}
	if _, err := meta.SetVolumeHA(ctx, req.Name, req.Ha); err != nil {
		return nil, metaError(err)
	}
	m.st.Log.Info("volume HA policy set", "volume", req.Name, "ha", req.Ha)
	return m.Show(ctx, req.Name, 5*time.Second)
}

// Place picks the replica nodes (the first is the initial primary) and, for
// an even count, a witness. Named nodes are taken in the order given;
// otherwise replicas and primaries are spread by count
// (placement.RankVolumeNodes).
func (m *Manager) Place(ctx context.Context, ms *consensus.MetaState, size int64, replicas int, want []string) ([]string, string, error) {
	free := m.freeSpace(ctx, ms)
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
		load := volumeLoad(ms)
		placement.RankVolumeNodes(cands, load, free)
		if len(cands) < replicas {
			return nil, "", status.Errorf(codes.ResourceExhausted, "only %d online data node(s) have %s free for the volume; %d replicas needed", len(cands), units.FormatBytes(size), replicas)
		}
		nodes = placement.PrimaryFirst(cands[:replicas], load)
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
func (m *Manager) freeSpace(ctx context.Context, ms *consensus.MetaState) map[string]int64 {
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
			c, err := m.st.Peer(rec.BackendAddr)
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
func (m *Manager) provision(ctx context.Context, ms *consensus.MetaState, e *consensus.VolumeEntry) error {
	pv := peerVolume(e)
	errs := make([]error, len(e.Replicas))
	var wg sync.WaitGroup
	for i, n := range e.Replicas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = m.onNode(ctx, ms, n, func(ctx context.Context, c tandemv1.PeerClient) error {
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
	if err := m.onNode(ctx, ms, e.Replicas[0], func(ctx context.Context, c tandemv1.PeerClient) error {
		_, err := c.VolumeInit(ctx, &tandemv1.PeerVolumeInitRequest{Volume: pv})
		return err
	}); err != nil {
		return err
	}
	if e.Witness != "" {
		return m.onNode(ctx, ms, e.Witness, func(ctx context.Context, c tandemv1.PeerClient) error {
			_, err := c.VolumeOpen(ctx, &tandemv1.PeerVolumeOpenRequest{Volume: pv, Create: true})
			return err
		})
	}
	return nil
}

// destroy removes a volume from every node it was placed on, then from the
// catalog. While a node has not confirmed, the catalog entry stays (as
// deleting): the next delete, or the node's own sweep, finishes the job.
func (m *Manager) destroy(ctx context.Context, ms *consensus.MetaState, e *consensus.VolumeEntry) error {
	var errs []error
	for _, n := range append(slices.Clone(e.Replicas), e.Witness) {
		if n == "" {
			continue
		}
		if err := m.onNode(ctx, ms, n, func(ctx context.Context, c tandemv1.PeerClient) error {
			_, err := c.VolumeClose(ctx, &tandemv1.PeerVolumeCloseRequest{Name: e.Name, ShardId: e.ShardID, Destroy: true})
			return err
		}); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return joinStatus(errs)
	}
	meta := m.meta()
	if err := meta.DeleteVolume(ctx, e.Name); err != nil {
		return metaError(err)
	}
	return nil
}

func (m *Manager) onNode(ctx context.Context, ms *consensus.MetaState, node string, f func(context.Context, tandemv1.PeerClient) error) error {
	return m.callNode(ctx, ms, node, 30*time.Second, f)
}

// List shows every volume of the catalog.
func (m *Manager) List(ctx context.Context, _ *tandemv1.ListVolumesRequest) (*tandemv1.ListVolumesResponse, error) {
	ms, err := m.Catalog(ctx, false)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(ms.Volumes))
	for n := range ms.Volumes {
		names = append(names, n)
	}
	slices.Sort(names)
	// Each Show waits up to its timeout for a node that does not answer:
	// one after the other, a dead node made the list take that long per
	// volume (issue 17). They run listParallel at once instead.
	// A node that let one Show wait out its timeout is not asked again
	// by this List: with a node dead and 1000 volumes the list otherwise
	// waited 2 s per listParallel volumes, 30 s and more, when an
	// operator watches a failover. Its replicas' states come from the
	// others' answers, as when it times out.
	var silent silentNodes
	out := &tandemv1.ListVolumesResponse{Volumes: make([]*tandemv1.VolumeInfo, len(names))}
	sem := make(chan struct{}, listParallel)
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			info, err := m.show(ctx, n, 2*time.Second, silent.skip, silent.noAnswer)
			if err != nil {
				info = &tandemv1.VolumeInfo{Name: n, Warning: grpcMessage(err)}
			}
			out.Volumes[i] = info
		})
	}
	wg.Wait()
	return out, nil
}

// silentNodes are the nodes that let a Show wait out its timeout, for the
// Shows that come after it in one List or health report to skip.
type silentNodes struct{ m sync.Map }

func (s *silentNodes) skip(node string) bool { _, ok := s.m.Load(node); return ok }
func (s *silentNodes) noAnswer(node string)  { s.m.Store(node, struct{}{}) }

// listParallel bounds the Shows a List runs at once.
const listParallel = 64

// Show asks every node holding the volume and keeps the freshest answer,
// preferring the primary's (it alone knows the replication links). Nodes
// in skip are not asked: a caller that knows a node is dead (HA recovery)
// does not wait on it, which costs up to the peer pool's 2 s reconnect.
func (m *Manager) Show(ctx context.Context, name string, timeout time.Duration, skip ...string) (*tandemv1.VolumeInfo, error) {
	return m.show(ctx, name, timeout, func(n string) bool { return slices.Contains(skip, n) }, nil)
}

// show is Show with the nodes to skip given by skip, and noAnswer (if
// set) told of each node that did not answer within the timeout.
func (m *Manager) show(ctx context.Context, name string, timeout time.Duration, skip func(string) bool, noAnswer func(string)) (*tandemv1.VolumeInfo, error) {
	ms, err := m.Catalog(ctx, false)
	if err != nil {
		return nil, err
	}
	e, ok := ms.Volumes[name]
	if !ok {
		// This node may not have applied the volume's creation yet.
		if ms, err = m.Catalog(ctx, true); err != nil {
			return nil, err
		}
		if e, ok = ms.Volumes[name]; !ok {
			return nil, status.Errorf(codes.NotFound, "no volume named %q", name)
		}
	}
	if e.IsRBD() {
		return m.showRBD(ctx, ms, e, timeout), nil
	}
	answers := make([]*tandemv1.VolumeInfo, len(e.Replicas))
	var wg sync.WaitGroup
	for i, n := range e.Replicas {
		if skip(n) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			err := m.onNode(cctx, ms, n, func(ctx context.Context, c tandemv1.PeerClient) error {
				info, err := c.VolumeStatus(ctx, &tandemv1.PeerVolumeStatusRequest{Name: name})
				answers[i] = info
				return err
			})
			if err != nil && noAnswer != nil && ctx.Err() == nil && cctx.Err() != nil {
				noAnswer(n) // the timeout, not the caller, ended it
			}
		}()
	}
	wg.Wait()
	var best *tandemv1.VolumeInfo
	for _, a := range answers {
		if a == nil {
			continue
		}
		isPrimary := a.AnsweredBy == a.Primary && a.NbdUnix != ""
		bestPrimary := best != nil && best.AnsweredBy == best.Primary && best.NbdUnix != ""
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
	best.SizeBytes = e.Size // the catalog's: it changes only once every in-sync replica grew (grow.go)
	best.Ha = e.HAMode()
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

// quorumEntry is, once this node sees a quorum, a fresh catalog and the
// volume name's entry in it; NotFound if there is none.
func (m *Manager) quorumEntry(ctx context.Context, name string) (*consensus.MetaState, *consensus.VolumeEntry, error) {
	if err := m.st.Quorum(ctx); err != nil {
		return nil, nil, err
	}
	ms, err := m.Catalog(ctx, true)
	if err != nil {
		return nil, nil, err
	}
	e, ok := ms.Volumes[name]
	if !ok {
		return nil, nil, status.Errorf(codes.NotFound, "no volume named %q", name)
	}
	return ms, e, nil
}

// Delete removes a volume that no NBD client uses from every node, then
// from the catalog.
func (m *Manager) Delete(ctx context.Context, req *tandemv1.DeleteVolumeRequest) (*tandemv1.DeleteVolumeResponse, error) {
	ms, e, err := m.quorumEntry(ctx, req.Name)
	if err != nil {
		return nil, err
	}
	if e.IsRBD() {
		if err := m.deleteRBD(ctx, ms, e); err != nil {
			return nil, err
		}
		return &tandemv1.DeleteVolumeResponse{}, nil
	}
	if info, _ := m.Show(ctx, req.Name, 3*time.Second); info != nil && info.NbdConnections > 0 {
		return nil, status.Errorf(codes.FailedPrecondition, "volume %s is attached (%d NBD client(s) connected to its primary %s); detach it first", req.Name, info.NbdConnections, info.Primary)
	}
	meta := m.meta()
	if err := meta.SetVolumeState(ctx, e.Name, consensus.VolumeDeleting); err != nil {
		return nil, metaError(err)
	}
	if err := m.destroy(ctx, ms, e); err != nil {
		// Aborted, not the node's own code: a relayed Unavailable would
		// read as this daemon being unreachable.
		return nil, status.Errorf(codes.Aborted, "delete %s: %s; it stays listed as deleting until every node has removed its replica (run the command again to finish)", e.Name, grpcMessage(err))
	}
	return &tandemv1.DeleteVolumeResponse{}, nil
}

// Promote makes req.Node the primary of a volume, on an operator's word.
func (m *Manager) Promote(ctx context.Context, req *tandemv1.PromoteVolumeRequest) (*tandemv1.VolumeInfo, error) {
	ms, e, err := m.quorumEntry(ctx, req.Name)
	if err != nil {
		return nil, err
	}
	if e.IsRBD() {
		if rec, ok := ms.Nodes[req.Node]; !ok || rec.State != consensus.NodeMember || rec.Role == "witness" {
			return nil, status.Errorf(codes.InvalidArgument, "node %q is not a data node of this cluster; it cannot own %s", req.Node, e.Name)
		}
	} else if !slices.Contains(e.Replicas, req.Node) {
		return nil, status.Errorf(codes.InvalidArgument, "node %q holds no replica of %s (replicas: %s)", req.Node, e.Name, strings.Join(e.Replicas, ", "))
	}
	if v := startedVMOf(ms, e.Name); v != nil && v.Node != req.Node && !req.Force {
		// A VM runs where its disks' primary is (I5): moved away under a
		// running VM, the disk fails its I/O and the VM pauses for good
		// (the fault-schedule runner's finding 5).
		return nil, status.Errorf(codes.FailedPrecondition, "volume %s is a disk of VM %s, which is started on %s: promoting it on %s would pause the VM. Move the VM instead ('tandem vm migrate %s --to %s'; its disks follow), stop it first, or use --force if %s is down for good and the VM is to be restarted by hand",
			e.Name, v.Name, v.Node, req.Node, v.Name, req.Node, v.Node)
	}
	var out *tandemv1.VolumeInfo
	fwd := &tandemv1.PromoteVolumeRequest{Name: req.Name, Node: req.Node}
	if err := m.onNode(ctx, ms, req.Node, func(ctx context.Context, c tandemv1.PeerClient) error {
		info, err := c.VolumePromote(ctx, fwd)
		out = info
		return err
	}); err != nil {
		return nil, err
	}
	if !e.IsRBD() { // an RBD takeover records its own events
		m.audit(ctx, "volume-promote", fmt.Sprintf("volume %s: %s made primary by an operator (epoch %d)", req.Name, req.Node, out.GetEpoch()))
	}
	return out, nil
}

// startedVMOf is the VM that has vol among its disks and should run, nil
// if none.
func startedVMOf(ms *consensus.MetaState, vol string) *consensus.VMRecord {
	for _, v := range ms.VMs {
		if v.Desired == consensus.VMStarted && slices.Contains(v.Spec.Volumes, vol) {
			return v
		}
	}
	return nil
}

// audit records an operator's action that no metadata command records by
// itself; the action is done, so a failure to record it is only logged.
func (m *Manager) audit(ctx context.Context, action, detail string) {
	meta := m.meta()
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
	defer cancel()
	if err := meta.Audit(actx, action, detail); err != nil {
		m.st.Log.Warn("cannot record an audit entry", "action", action, "detail", detail, "err", err)
	}
}

// Resync: resync of Outdated replicas is automatic once they are reachable;
// this reports where it stands. With discard_node it first throws that
// replica's data away, so that it is resynced in full from the primary.
func (m *Manager) Resync(ctx context.Context, req *tandemv1.ResyncVolumeRequest) (*tandemv1.VolumeInfo, error) {
	if req.DiscardNode == "" {
		info, err := m.Show(ctx, req.Name, 3*time.Second)
		if err != nil || !primaryFailed(info) {
			return info, err
		}
		return m.reattach(ctx, info)
	}
	if err := m.st.Quorum(ctx); err != nil {
		return nil, err
	}
	info, err := m.Show(ctx, req.Name, 3*time.Second)
	if err != nil {
		return nil, err
	}
	ms, err := m.Catalog(ctx, false)
	if err != nil {
		return nil, err
	}
	e := ms.Volumes[req.Name]
	switch {
	case e == nil:
		return nil, status.Errorf(codes.NotFound, "no volume named %q", req.Name)
	case !slices.Contains(e.Replicas, req.DiscardNode):
		return nil, status.Errorf(codes.InvalidArgument, "node %q holds no replica of %s", req.DiscardNode, req.Name)
	case info.Primary == req.DiscardNode && primaryFailed(info):
		return m.reattach(ctx, info)
	case info.Primary == req.DiscardNode:
		return nil, status.Errorf(codes.FailedPrecondition, "%s is the primary of %s: promote another UpToDate replica before discarding its data", req.DiscardNode, req.Name)
	case info.Primary == "" || info.NbdUnix == "":
		return nil, status.Errorf(codes.Unavailable, "the primary of %s does not answer; nothing was discarded", req.Name)
	}
	if err := m.onNode(ctx, ms, req.DiscardNode, func(ctx context.Context, c tandemv1.PeerClient) error {
		_, err := c.VolumeDiscard(ctx, &tandemv1.PeerVolumeStatusRequest{Name: req.Name})
		return err
	}); err != nil {
		return nil, err
	}
	var out *tandemv1.VolumeInfo
	if err := m.onNode(ctx, ms, info.Primary, func(ctx context.Context, c tandemv1.PeerClient) error {
		var err error
		out, err = c.VolumeDiscardPeer(ctx, &tandemv1.PromoteVolumeRequest{Name: req.Name, Node: req.DiscardNode})
		return err
	}); err != nil {
		return nil, err
	}
	m.st.Log.Warn("replica data discarded by an operator; full resync", "volume", req.Name, "node", req.DiscardNode)
	return out, nil
}

// primaryFailed reports that the volume's primary serves with its disk
// detached (its replica Failed, or SyncTarget from a re-attach cut short).
func primaryFailed(info *tandemv1.VolumeInfo) bool {
	for _, r := range info.GetReplicas() {
		if r.GetPrimary() {
			switch r.GetState() {
			case tandemv1.ReplicaState_REPLICA_STATE_FAILED, tandemv1.ReplicaState_REPLICA_STATE_SYNC_TARGET:
				return true
			}
		}
	}
	return false
}

// reattach asks the primary to copy its detached disk back in from a peer
// (the resync of a Failed primary; it returns once the disk is UpToDate).
func (m *Manager) reattach(ctx context.Context, info *tandemv1.VolumeInfo) (*tandemv1.VolumeInfo, error) {
	if err := m.st.Quorum(ctx); err != nil {
		return nil, err
	}
	ms, err := m.Catalog(ctx, false)
	if err != nil {
		return nil, err
	}
	var out *tandemv1.VolumeInfo
	if err := m.onNode(ctx, ms, info.Primary, func(ctx context.Context, c tandemv1.PeerClient) error {
		var err error
		out, err = c.VolumeDiscardPeer(ctx, &tandemv1.PromoteVolumeRequest{Name: info.Name, Node: info.Primary})
		return err
	}); err != nil {
		return nil, err
	}
	m.audit(ctx, "volume-reattach", fmt.Sprintf("volume %s: the detached disk of primary %s re-attached by an operator", info.Name, info.Primary))
	return out, nil
}

// The peer side of volume management: what a node does with its own
// replicas when the node running an admin call asks it.

// DiscardReplica throws this node's replica of volume name away and
// recreates it empty, to be resynced in full (the peer call VolumeDiscard).
func (m *Manager) DiscardReplica(ctx context.Context, name string) error {
	nv, err := m.holder(name)
	if err != nil {
		return m.rebuildUnopened(ctx, name, err)
	}
	nv.mu.Lock()
	primary := nv.primary != nil
	nv.mu.Unlock()
	if primary {
		return status.Errorf(codes.FailedPrecondition, "%s is the primary of %s; its data cannot be discarded", m.self(), name)
	}
	e := nv.entry
	if err := m.close(name, true, false); err != nil {
		return status.Errorf(codes.Internal, "close replica: %v", err)
	}
	if err := m.open(ctx, e, true); err != nil {
		return openStatus(fmt.Errorf("recreate replica: %w", err))
	}
	return nil
}

// rebuildUnopened recreates a replica of this node that is not open here
// because it failed to open (its metadata is corrupt, say: the blockstore
// error names this command as the way out). notHeld is returned when the
// catalog gives this node no replica of name.
func (m *Manager) rebuildUnopened(ctx context.Context, name string, notHeld error) error {
	ms, err := m.Catalog(ctx, true)
	if err != nil {
		return err
	}
	e := ms.Volumes[name]
	if e == nil || !slices.Contains(e.Replicas, m.self()) {
		return notHeld
	}
	if err := m.close(name, true, false); err != nil {
		return status.Errorf(codes.Internal, "remove the replica that failed to open: %v", err)
	}
	if err := m.open(ctx, *e, true); err != nil {
		return openStatus(fmt.Errorf("recreate replica: %w", err))
	}
	m.st.Log.Warn("replica that failed to open recreated empty by an operator's discard; full resync", "volume", name)
	return nil
}

// DiscardPeer makes the primary forget what it knows of peer's replica, so
// that it resyncs it in full (the peer call VolumeDiscardPeer).
func (m *Manager) DiscardPeer(ctx context.Context, name, peer string) (*tandemv1.VolumeInfo, error) {
	nv := m.get(name)
	if nv == nil {
		return nil, status.Errorf(codes.NotFound, "node %s holds no volume %q", m.self(), name)
	}
	nv.mu.Lock()
	p := nv.primary
	nv.mu.Unlock()
	if p == nil {
		return nil, status.Errorf(codes.FailedPrecondition, "node %s is not the primary of %s", m.self(), name)
	}
	if peer == m.self() {
		// The primary's own detached disk: copy every block back in from
		// a peer (re-attach).
		done, err := p.StartReattach(ctx)
		if errors.Is(err, replication.ErrNotDetached) && p.Local().State == "Attaching" {
			return m.Info(name) // under way already: --wait follows it
		}
		if err != nil {
			if errors.Is(err, replication.ErrNotDetached) {
				return nil, status.Errorf(codes.FailedPrecondition, "re-attach the disk of %s on %s: %v", name, m.self(), err)
			}
			return nil, status.Errorf(codes.Unavailable, "re-attach the disk of %s on %s: %v", name, m.self(), err)
		}
		go func() {
			if err := <-done; err != nil {
				m.log.Error("re-attach of the local disk failed; it stays detached", "volume", name, "err", err)
			}
		}()
		return m.Info(name)
	}
	if err := p.DiscardPeer(ctx, peer); err != nil {
		return nil, status.Errorf(codes.Unavailable, "%v", err)
	}
	return m.Info(name)
}

// DiskInfo describes this node's volume disk first, then its other disks.
func (m *Manager) DiskInfo() (*tandemv1.DiskInfoResponse, error) {
	dir := m.volumeDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, status.Errorf(codes.Internal, "volume dir: %v", err)
	}
	out := &tandemv1.DiskInfoResponse{}
	info, err := blockstore.ProbeDisk(dir)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	out.Disks = append(out.Disks, &tandemv1.Disk{Path: info.Path, Kind: string(info.Kind), CapacityBytes: info.Capacity, FreeBytes: info.Free})
	for _, p := range m.st.Config.Disks {
		if filepath.Clean(p) == filepath.Clean(dir) {
			continue
		}
		if info, err := blockstore.ProbeDisk(p); err == nil {
			out.Disks = append(out.Disks, &tandemv1.Disk{Path: info.Path, Kind: string(info.Kind), CapacityBytes: info.Capacity, FreeBytes: info.Free})
		}
	}
	return out, nil
}

// Open starts this node's part of a volume; with create it makes the
// replica and joins the new shard (the peer call VolumeOpen).
func (m *Manager) Open(ctx context.Context, v *tandemv1.PeerVolume, create bool) error {
	if v != nil && v.ShardId == 0 && v.Name != "" {
		// No shard: an RBD volume, which its owner opens from the catalog.
		return m.openRBD(ctx, v.Name)
	}
	e, err := entryOf(v)
	if err != nil {
		return err
	}
	if err := m.open(ctx, e, create); err != nil {
		return openStatus(err)
	}
	return nil
}

// Init writes a new volume's first record, on its initial primary (the
// peer call VolumeInit).
func (m *Manager) Init(ctx context.Context, v *tandemv1.PeerVolume) error {
	e, err := entryOf(v)
	if err != nil {
		return err
	}
	if err := m.initRecord(ctx, e); err != nil {
		return metaError(err)
	}
	return nil
}

// Close stops this node's part of a volume; destroy also deletes its
// replica and shard data (the peer call VolumeClose).
func (m *Manager) Close(name string, destroy bool) error {
	if m.rbdGet(name) != nil {
		m.closeRBD(name)
		return nil
	}
	if err := m.close(name, destroy, destroy); err != nil {
		return status.Errorf(codes.Internal, "%v", err)
	}
	return nil
}

// Status is this node's view of a volume with the NBD clients attached
// here (the peer call VolumeStatus).
func (m *Manager) Status(name string) (*tandemv1.VolumeInfo, error) {
	if m.rbdGet(name) != nil {
		return m.rbdStatus(name)
	}
	info, err := m.Info(name)
	if err != nil {
		return nil, err
	}
	if info.NbdUnix != "" {
		info.NbdConnections = int32(m.connections(name))
	}
	return info, nil
}

// PromoteHere makes this node the primary of volume name (the peer call
// VolumePromote, on the node an operator or HA promotes); reason is for
// the events, "operator promote" if empty.
func (m *Manager) PromoteHere(ctx context.Context, name, reason string) (*tandemv1.VolumeInfo, error) {
	if reason == "" {
		reason = "operator promote"
	}
	if m.isRBD(ctx, name) {
		return m.promoteRBD(ctx, name, reason)
	}
	nv, err := m.holder(name)
	if err != nil {
		return nil, err
	}
	self := m.self()
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	rec, err := nv.vols.Promote(pctx, nv.entry.ShardID, self, 0, reason)
	if err != nil {
		switch {
		case errors.Is(err, consensus.ErrNotUpToDate):
			return nil, status.Errorf(codes.FailedPrecondition, "cannot promote %s on %s: %v", name, self, err)
		case errors.Is(err, consensus.ErrNoQuorum):
			return nil, status.Errorf(codes.FailedPrecondition, "no quorum in volume %s's shard: nothing was changed", name)
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
	return m.Info(name)
}
