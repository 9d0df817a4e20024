package daemon

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/units"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// Volume states reported on top of the catalog's: a ready volume whose
// replicas are not all in sync is not "ready" to an operator.
const (
	volumeSyncing  = "syncing"
	volumeDegraded = "degraded"
)

// certWarnWithin is how long before expiry a certificate is a warning.
const certWarnWithin = 30 * 24 * time.Hour

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
	if v.GetAnsweredBy() != v.GetPrimary() || v.GetNbdTcp() == "" {
		return volumeDegraded, fmt.Sprintf("its primary %s does not serve it", orNone(v.GetPrimary()))
	}
	var degraded, syncing []string
	for _, r := range v.GetReplicas() {
		if r.GetPrimary() {
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

// healthReport adds what an operator must know to a status: nodes offline,
// volumes not in sync, certificates about to expire (warnings), and missing
// BMC fencing (an advisory). It asks every volume's nodes, so only the
// Status RPC pays for it, not every caller of status.
func (d *Daemon) healthReport(ctx context.Context, st *tandemv1.ClusterStatus) {
	_, meta, tm := d.cluster()
	if meta == nil {
		return
	}
	for _, n := range st.Nodes {
		if n.State == consensus.NodeMember && n.Health == tandemv1.Health_HEALTH_OFFLINE {
			st.Warnings = append(st.Warnings, fmt.Sprintf("node %s is offline: %s", n.Name, orNone(n.HealthDetail)))
		}
	}
	ms, err := meta.LocalState()
	if err != nil {
		return
	}
	st.Warnings = append(st.Warnings, d.volumeWarnings(ctx, ms)...)
	if tm != nil {
		now := time.Now()
		st.Warnings = append(st.Warnings, certWarnings("the cluster CA certificate", tm.caCert, now)...)
		st.Warnings = append(st.Warnings, certWarnings("node "+d.cfg.NodeName+"'s certificate", tm.cert, now)...)
	}
	var unfenced []string
	for name, n := range ms.Nodes {
		if n.State == consensus.NodeMember && n.Role != "witness" && (n.Fence == nil || (n.Fence.IPMI == nil && n.Fence.Redfish == nil)) {
			unfenced = append(unfenced, name)
		}
	}
	if len(unfenced) > 0 {
		slices.Sort(unfenced)
		st.Advisories = append(st.Advisories, fmt.Sprintf("no BMC fencing configured for %s: their VMs restart elsewhere only once the self-fence lease has run out; see 'tandem ha fence-config'", strings.Join(unfenced, ", ")))
	}
}

// volumeWarnings asks about every volume at once, a few at a time, and
// names those that are not ready.
func (d *Daemon) volumeWarnings(ctx context.Context, ms *consensus.MetaState) []string {
	names := make([]string, 0, len(ms.Volumes))
	for n := range ms.Volumes {
		names = append(names, n)
	}
	slices.Sort(names)
	out := make([]string, len(names))
	vs := &volumeService{d: d}
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			info, err := vs.show(ctx, name, 2*time.Second)
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
	return slices.DeleteFunc(out, func(s string) bool { return s == "" })
}

// certWarnings warns about a PEM certificate that expires within
// certWarnWithin or has expired.
func certWarnings(what string, pemBytes []byte, now time.Time) []string {
	b, _ := pem.Decode(pemBytes)
	if b == nil {
		return []string{what + " cannot be read"}
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return []string{fmt.Sprintf("%s cannot be parsed: %v", what, err)}
	}
	left := c.NotAfter.Sub(now)
	switch {
	case left <= 0:
		return []string{fmt.Sprintf("%s expired on %s", what, c.NotAfter.UTC().Format(time.RFC3339))}
	case left < certWarnWithin:
		return []string{fmt.Sprintf("%s expires on %s (in %d days)", what, c.NotAfter.UTC().Format(time.RFC3339), int(left.Hours()/24))}
	}
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
