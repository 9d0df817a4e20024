package cluster

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/state"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// testCert is a self-signed PEM certificate valid from before now until
// notAfter.
func testCert(t *testing.T, now, notAfter time.Time) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "n1"}, NotBefore: now.Add(-time.Hour), NotAfter: notAfter}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func TestCertWarnings(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	mk := func(notAfter time.Time) []byte { return testCert(t, now, notAfter) }
	if w := certWarnings("cert", mk(now.Add(365*24*time.Hour)), now, certWarnWithin); len(w) != 0 {
		t.Errorf("a certificate valid for a year: %v", w)
	}
	if w := certWarnings("cert", mk(now.Add(10*24*time.Hour)), now, certWarnWithin); len(w) != 1 || !strings.Contains(w[0], "expires on 2026-01-11T00:00:00Z (in 10 days)") {
		t.Errorf("expiring in 10 days: %v", w)
	}
	if w := certWarnings("cert", mk(now.Add(-time.Hour)), now, certWarnWithin); len(w) != 1 || !strings.Contains(w[0], "expired on") {
		t.Errorf("expired: %v", w)
	}
	if w := certWarnings("cert", []byte("garbage"), now, certWarnWithin); len(w) != 1 || !strings.Contains(w[0], "cannot be read") {
		t.Errorf("garbage: %v", w)
	}
}

// The health report of n1 in a cluster where n3 is offline, only n2 has a
// BMC, n1's certificate expires in 10 days and the volume subsystem has a
// warning of its own.
func TestHealthReport(t *testing.T) {
	meta := newFakeMeta()
	meta.ms.Nodes["n2"].Fence = &consensus.FenceConfig{IPMI: &consensus.IPMIFence{}}
	// A witness runs no VMs: it needs no BMC.
	meta.ms.Nodes["w1"] = &consensus.NodeRecord{Name: "w1", ReplicaID: 4, BackendAddr: "n2:7000", State: consensus.NodeMember, Role: "witness"}
	m, _ := newManager(t, meta, true)
	now := m.st.Now()
	cluster, _ := m.st.Cluster()
	cluster.NodeCert = testCert(t, now, now.Add(10*24*time.Hour))
	m.st.Cluster = func() (state.Cluster, bool) { return cluster, true }
	var volumesAsked *consensus.MetaState
	m.volumes = func(_ context.Context, ms *consensus.MetaState) []string {
		volumesAsked = ms
		return []string{"volume v1: n3 disconnected"}
	}

	st := m.Status(context.Background())
	before := len(st.Warnings)
	m.HealthReport(context.Background(), st)
	got := st.Warnings[before:]
	want := []string{
		"node n3 is offline: connection refused",
		"volume v1: n3 disconnected",
		"node n1's certificate expires on " + now.Add(10*24*time.Hour).UTC().Format(time.RFC3339) + " (in 10 days)",
	}
	if !slices.Equal(got, want) {
		t.Errorf("warnings:\n got %q\nwant %q", got, want)
	}
	if volumesAsked != meta.ms {
		t.Errorf("the volume warnings were not asked about the local state")
	}
	if len(st.Advisories) != 1 || !strings.HasPrefix(st.Advisories[0], "no BMC fencing configured for n1, n3: ") {
		t.Errorf("advisories: %q", st.Advisories)
	}
}

// Outside a cluster the report adds nothing and asks no volume.
func TestHealthReportOutsideACluster(t *testing.T) {
	m, _ := newManager(t, newFakeMeta(), false)
	m.volumes = func(context.Context, *consensus.MetaState) []string {
		t.Error("volumes asked outside a cluster")
		return nil
	}
	st := &tandemv1.ClusterStatus{}
	m.HealthReport(context.Background(), st)
	if len(st.Warnings)+len(st.Advisories) != 0 {
		t.Errorf("report outside a cluster: %+v", st)
	}
}

// With a short certificate lifetime only a certificate past its renewal
// point is a warning; the default keeps the 30 days.
func TestNodeCertWarnWithin(t *testing.T) {
	if got := nodeCertWarnWithin(map[string]string{}); got != certWarnWithin {
		t.Errorf("default: %v", got)
	}
	if got := nodeCertWarnWithin(map[string]string{"pki.cert_lifetime": "3m"}); got != time.Minute {
		t.Errorf("3m lifetime: %v", got)
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if w := expiryWarning("node n2's certificate", now.Add(2*time.Minute), now, time.Minute); w != "" {
		t.Errorf("a certificate before its renewal point: %q", w)
	}
	if w := expiryWarning("node n2's certificate", now.Add(30*time.Second), now, time.Minute); !strings.Contains(w, "node n2's certificate expires on") {
		t.Errorf("a certificate past its renewal point: %q", w)
	}
}
