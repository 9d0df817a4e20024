package cluster

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/settings"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// certWarnWithin is how long before expiry a certificate is a warning.
const certWarnWithin = 30 * 24 * time.Hour

// HealthReport adds what an operator must know to a status: nodes offline,
// volumes not in sync, certificates about to expire (warnings), and missing
// BMC fencing (an advisory). It asks every volume's nodes, so only the
// Status RPC pays for it, not every caller of Status.
func (m *Manager) HealthReport(ctx context.Context, st *tandemv1.ClusterStatus) {
	meta := m.st.Meta()
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
	if m.volumes != nil {
		st.Warnings = append(st.Warnings, m.volumes(ctx, ms)...)
	}
	if c, ok := m.st.Cluster(); ok {
		now := m.st.Now()
		st.Warnings = append(st.Warnings, certWarnings("the cluster CA certificate", c.CACert, now, certWarnWithin)...)
		st.Warnings = append(st.Warnings, certWarnings("node "+m.st.Node.Name+"'s certificate", c.NodeCert, now, nodeCertWarnWithin(ms.Config))...)
	}
	// Other members' certificates, as their records say: each node renews
	// its own, so one near expiry means its renewal is failing.
	for _, name := range slices.Sorted(maps.Keys(ms.Nodes)) {
		n := ms.Nodes[name]
		if name == m.st.Node.Name || n.State == consensus.NodeRemoved || n.CertNotAfter.IsZero() {
			continue
		}
		if w := expiryWarning("node "+name+"'s certificate", n.CertNotAfter, m.st.Now(), nodeCertWarnWithin(ms.Config)); w != "" {
			st.Warnings = append(st.Warnings, w+"; it renews itself two thirds into its lifetime, so check that node's log")
		}
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

// certWarnings warns about a PEM certificate that expires within
// certWarnWithin or has expired.
func certWarnings(what string, pemBytes []byte, now time.Time, within time.Duration) []string {
	b, _ := pem.Decode(pemBytes)
	if b == nil {
		return []string{what + " cannot be read"}
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return []string{fmt.Sprintf("%s cannot be parsed: %v", what, err)}
	}
	if w := expiryWarning(what, c.NotAfter, now, within); w != "" {
		return []string{w}
	}
	return nil
}

// expiryWarning says that a certificate expires within within, or has
// expired; "" when neither.
func expiryWarning(what string, notAfter, now time.Time, within time.Duration) string {
	left := notAfter.Sub(now)
	switch {
	case left <= 0:
		return fmt.Sprintf("%s expired on %s", what, notAfter.UTC().Format(time.RFC3339))
	case left < within:
		return fmt.Sprintf("%s expires on %s (in %d days)", what, notAfter.UTC().Format(time.RFC3339), int(left.Hours()/24))
	}
	return ""
}

// nodeCertWarnWithin is certWarnWithin for certificates the nodes renew
// themselves: with a lifetime under 90 days (tests) a certificate is
// always within 30 days of expiry, so only one past its renewal point is
// worth a warning.
func nodeCertWarnWithin(cfg map[string]string) time.Duration {
	lifetime, err := settings.Duration(cfg, settings.KeyCertLifetime)
	if err != nil {
		return certWarnWithin
	}
	return min(certWarnWithin, lifetime/3)
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
