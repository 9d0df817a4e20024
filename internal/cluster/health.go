package cluster

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tandemhci/tandem/consensus"
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
		st.Warnings = append(st.Warnings, certWarnings("the cluster CA certificate", c.CACert, now)...)
		st.Warnings = append(st.Warnings, certWarnings("node "+m.st.Node.Name+"'s certificate", c.NodeCert, now)...)
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
