package volume

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/apinames"
	"github.com/tandemhci/tandem/internal/units"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// Volume states reported on top of the catalog's: a ready volume whose
// replicas are not all in sync is not "ready" to an operator.
const (
	volumeSyncing  = "syncing"
	volumeDegraded = "degraded"
)

// volumeHealth classifies a volume from the freshest answer about it: a
// ready volume is syncing while a replica is SyncTarget, and degraded while
// a replica is fenced off, inconsistent or unreachable, or while its primary
// does not answer. why names the replicas concerned.
func volumeHealth(catalogState string, v *tandemv1.VolumeInfo) (state, why string) {
	if catalogState != consensus.VolumeReady {
		return catalogState, ""
	}
	if v.GetAnsweredBy() == "" {
		return volumeDegraded, "no node holding it answered"
	}
	if v.GetAnsweredBy() != v.GetPrimary() || v.GetNbdUnix() == "" {
		return volumeDegraded, fmt.Sprintf("its primary %s does not serve it", orNone(v.GetPrimary()))
	}
	var degraded, syncing []string
	for _, r := range v.GetReplicas() {
		if r.GetPrimary() {
			if st := r.GetState(); st != tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE {
				// Its disk was detached: it serves diskless through the
				// peers (or is re-attaching it).
				degraded = append(degraded, fmt.Sprintf("primary %s %s (%s)", r.GetNode(), stateName(st), orNone(r.GetLink())))
			}
			continue
		}
		st, link := r.GetState(), r.GetLink()
		switch {
		case st == tandemv1.ReplicaState_REPLICA_STATE_SYNC_TARGET || link == "syncing":
			syncing = append(syncing, fmt.Sprintf("%s SyncTarget, %s to resync", r.GetNode(), units.FormatBytes(r.GetDirtyBytes())))
		case st != tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE || (link != "" && link != "in-sync"):
			degraded = append(degraded, fmt.Sprintf("%s %s (link %s, %s behind)", r.GetNode(), stateName(st), orNone(link), units.FormatBytes(r.GetDirtyBytes())))
		}
	}
	switch {
	case len(degraded) > 0:
		return volumeDegraded, strings.Join(append(degraded, syncing...), "; ")
	case len(syncing) > 0:
		return volumeSyncing, strings.Join(syncing, "; ")
	}
	return catalogState, ""
}

// stateName is a replica state as the operator reads it.
func stateName(st tandemv1.ReplicaState) string {
	if name, ok := apinames.ReplicaState(st); ok {
		return name
	}
	return "no replica"
}

// Warnings asks about every volume of ms at once, a few at a time, and
// names those that are not ready (for the cluster status).
func (m *Manager) Warnings(ctx context.Context, ms *consensus.MetaState) []string {
	names := make([]string, 0, len(ms.Volumes))
	for n := range ms.Volumes {
		names = append(names, n)
	}
	slices.Sort(names)
	out := make([]string, len(names))
	// The storages are asked beside the volumes, within their own bound.
	storage := make(chan []string, 1)
	go func() { storage <- m.storageWarnings(ctx, ms) }()
	sem := make(chan struct{}, 8)
	// As in List: a node that timed out once is not waited for again,
	// or a dead node made cluster status take 2 s per 8 volumes.
	var silent silentNodes
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			info, err := m.show(ctx, name, 2*time.Second, silent.skip, silent.noAnswer)
			switch {
			case err != nil:
				out[i] = fmt.Sprintf("volume %s: %s", name, grpcMessage(err))
			case info.State == volumeDegraded || info.State == volumeSyncing:
				out[i] = fmt.Sprintf("volume %s is %s: %s", name, info.State, info.Warning)
			case info.State == consensus.VolumeDeleting:
				out[i] = fmt.Sprintf("volume %s is being deleted; if it stays, run 'tandem volume delete %s' again", name, name)
			}
		}()
	}
	wg.Wait()
	out = append(out, <-storage...)
	return slices.DeleteFunc(out, func(s string) bool { return s == "" })
}
