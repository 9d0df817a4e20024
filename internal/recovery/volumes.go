package recovery

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/consensus"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// maxParallelPromotions bounds the bare volumes promoted at once after a
// node loss: each promotion is a Raft commit on the volume's shard, a peer
// call and an event, and a node may have been primary of hundreds. With
// 16, 334 promotions took 8.2 s after the fence at 1000 volumes on 2 CPUs
// (bench/scale, issue 17), each waiting mostly on commits, not on CPU.
const maxParallelPromotions = 32

// maxParallelLookups bounds the Shows bareVolumes runs at once. Each may
// wait its whole timeout for the dead node's answer: 8 at once delayed the
// fence of a node that was primary of 176 volumes by 48 s (bench/scale,
// issue 17).
const maxParallelLookups = 64

// bareVolume is a volume whose primary was the dead node and that no VM
// recovery will promote: no VM of it is started on that node.
type bareVolume struct {
	name string
	ha   string
	info *tandemv1.VolumeInfo
}

// holdsVolumes reports whether node holds a replica of a ready volume: its
// loss may leave volumes without a primary.
func holdsVolumes(ms *consensus.MetaState, node string) bool {
	for _, v := range ms.Volumes {
		if v.State == consensus.VolumeReady && slices.Contains(v.Replicas, node) {
			return true
		}
	}
	return false
}

// bareVolumes are the ready volumes whose primary is dead, by name, that
// are no disk of a VM started on dead (those are promoted with their VM).
// Only the volumes with a replica on dead are asked about, in parallel.
func (m *Manager) bareVolumes(ctx context.Context, ms *consensus.MetaState, dead string) []bareVolume {
	withVM := map[string]bool{}
	for _, v := range ms.VMs {
		if v.Node == dead && v.Desired == consensus.VMStarted && v.HAState != consensus.HAError {
			for _, vol := range v.Spec.Volumes {
				withVM[vol] = true
			}
		}
	}
	var (
		mu  sync.Mutex
		out []bareVolume
		wg  sync.WaitGroup
	)
	sem := make(chan struct{}, maxParallelLookups)
	for name, e := range ms.Volumes {
		if e.State != consensus.VolumeReady || withVM[name] || !slices.Contains(e.Replicas, dead) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			info, err := m.vols.Show(ctx, name, dead)
			if err != nil {
				m.log.Warn("cannot tell where a volume's primary is", "volume", name, "err", err)
				return
			}
			if info.GetPrimary() != dead {
				return
			}
			mu.Lock()
			out = append(out, bareVolume{name: name, ha: e.HAMode(), info: info})
			mu.Unlock()
		}()
	}
	wg.Wait()
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// promotionTargets are the nodes that may take over v, best first: the
// UpToDate replicas other than dead that are members. The target's own
// volume shard refuses a replica that is not in the in-sync set, so a
// stale view here costs a refused attempt, never data.
func promotionTargets(ms *consensus.MetaState, v bareVolume, dead string) []string {
	var out []string
	for _, r := range v.info.GetReplicas() {
		n := ms.Nodes[r.GetNode()]
		if r.GetNode() == dead || n == nil || n.State != consensus.NodeMember || r.GetState() != tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE {
			continue
		}
		out = append(out, r.GetNode())
	}
	return out
}

// splitBare separates the volumes HA promotes from those left to an
// operator, telling the cluster about each of the latter once.
func (m *Manager) splitBare(ctx context.Context, dead string, bare []bareVolume) (auto []bareVolume) {
	for _, v := range bare {
		if v.ha == consensus.VolumeHAManual {
			m.event(ctx, consensus.Event{Kind: "volume-ha-manual", Node: dead, Detail: fmt.Sprintf(
				"volume %s keeps its primary on %s (HA manual); once the node is known off, promote it with 'tandem volume promote %s --node NODE'", v.name, dead, v.name)})
			continue
		}
		auto = append(auto, v)
	}
	return auto
}

// promoteBare promotes each volume of bare on its best UpToDate replica,
// at most maxParallelPromotions at once, each with a few attempts; every
// outcome is an event. dead is fenced already.
func (m *Manager) promoteBare(ctx context.Context, dead string, term uint64, bare []bareVolume) {
	if len(bare) == 0 {
		return
	}
	start := time.Now()
	var (
		wg           sync.WaitGroup
		mu           sync.Mutex
		done, failed int
	)
	sem := make(chan struct{}, maxParallelPromotions)
	for _, v := range bare {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			target, err := m.promoteOne(ctx, dead, term, v)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed++
				m.log.Error("volume not recovered", "volume", v.name, "err", err)
				m.event(ctx, consensus.Event{Kind: "volume-recovery-failed", Node: dead, Detail: fmt.Sprintf("volume %s: %s", v.name, status.Convert(err).Message())})
				return
			}
			done++
			m.log.Warn("volume recovered", "volume", v.name, "on", target)
			m.event(ctx, consensus.Event{Kind: "promotion", Node: target, Detail: fmt.Sprintf("volume %s promoted on %s after %s died (no VM; HA auto)", v.name, target, dead)})
		}()
	}
	wg.Wait()
	m.event(ctx, consensus.Event{Kind: "volumes-recovered", Node: dead, Detail: fmt.Sprintf(
		"%d of %d volumes without a VM promoted in %s; %d failed", done, len(bare), time.Since(start).Round(time.Millisecond), failed)})
}

// promoteOne tries v's targets in order, for a few rounds.
func (m *Manager) promoteOne(ctx context.Context, dead string, term uint64, v bareVolume) (string, error) {
	var lastErr error
	for attempt := 1; attempt <= 3; attempt++ {
		if ctx.Err() != nil || !m.stillLeading(term) {
			return "", fmt.Errorf("recovery of %s stopped: no longer the metadata leader", v.name)
		}
		ms, err := m.metaLocal()
		if err != nil {
			return "", err
		}
		if attempt > 1 {
			// A fresh view: a replica may have become UpToDate, or the
			// volume may have been promoted by an operator meanwhile.
			info, err := m.vols.Show(ctx, v.name, dead)
			if err == nil {
				if info.GetPrimary() != dead && info.GetPrimary() != "" {
					return info.GetPrimary(), nil
				}
				v.info = info
			}
		}
		targets := promotionTargets(ms, v, dead)
		if len(targets) == 0 {
			lastErr = fmt.Errorf("no UpToDate replica of %s on a member other than %s", v.name, dead)
		}
		for _, node := range targets {
			if lastErr = m.vols.Promote(ctx, ms, v.name, node); lastErr == nil {
				return node, nil
			}
		}
		sleep(ctx, recoveryRetry)
	}
	return "", lastErr
}

// promoteVMDisks promotes the disks of dead's VMs on the nodes the
// recovery plan restarts them on, at most maxParallelPromotions at once,
// before the first VM starts: a VM start takes about a second under TCG
// and a promotion milliseconds, so with each VM's disks promoted in its
// turn the tenth VM's disk got a primary 8 s after the first (bench/scale,
// issue 17), while its data was unavailable to everyone. A failure is only
// logged: the VM's own restart places it again on fresh state and
// promotes what is still missing, and reports. planned names the VMs it
// placed (some of their disks may have moved).
func (m *Manager) promoteVMDisks(ctx context.Context, dead string, term uint64) (planned map[string]bool) {
	planned = map[string]bool{}
	plans, err := m.vms.PlanAll(ctx, dead)
	if err != nil {
		m.log.Warn("cannot plan the restarts; each VM's disks are promoted in its turn", "dead_node", dead, "err", err)
		return planned
	}
	for _, p := range plans {
		planned[p.VM.Name] = true
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, maxParallelPromotions)
	for _, p := range plans {
		for _, vol := range p.Promote {
			wg.Go(func() {
				sem <- struct{}{}
				defer func() { <-sem }()
				if ctx.Err() != nil || !m.stillLeading(term) {
					return
				}
				if err := m.vols.Promote(ctx, p.State, vol, p.Node); err != nil {
					m.log.Warn("VM disk not promoted ahead of its VM; its restart tries again", "vm", p.VM.Name, "volume", vol, "on", p.Node, "err", err)
					return
				}
				m.event(ctx, consensus.Event{Kind: "promotion", Node: p.Node, VM: p.VM.Name, Detail: fmt.Sprintf(
					"volume %s promoted on %s, where VM %s restarts", vol, p.Node, p.VM.Name)})
			})
		}
	}
	wg.Wait()
	return planned
}
