package daemon

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/tandemhci/tandem/consensus"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

func TestVolumeHealth(t *testing.T) {
	const (
		utd = tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE
		st  = tandemv1.ReplicaState_REPLICA_STATE_SYNC_TARGET
		out = tandemv1.ReplicaState_REPLICA_STATE_OUTDATED
	)
	vol := func(answeredBy string, reps ...*tandemv1.VolumeReplica) *tandemv1.VolumeInfo {
		return &tandemv1.VolumeInfo{Name: "v", Primary: "n1", AnsweredBy: answeredBy, NbdTcp: "nbd://x/v",
			Replicas: append([]*tandemv1.VolumeReplica{{Node: "n1", State: utd, Primary: true}}, reps...)}
	}
	for _, tc := range []struct {
		name, catalog string
		v             *tandemv1.VolumeInfo
		state, why    string
	}{
		{"in sync", consensus.VolumeReady, vol("n1", &tandemv1.VolumeReplica{Node: "n2", State: utd, Link: "in-sync"}), "ready", ""},
		{"resyncing", consensus.VolumeReady, vol("n1", &tandemv1.VolumeReplica{Node: "n2", State: st, Link: "syncing", DirtyBytes: 35 << 20}), "syncing", "n2 SyncTarget, 35 MiB to resync"},
		{"outdated", consensus.VolumeReady, vol("n1", &tandemv1.VolumeReplica{Node: "n2", State: out, Link: "outdated", DirtyBytes: 4096}), "degraded", "n2 Outdated (link outdated, 4 KiB behind)"},
		{"link down but state UpToDate", consensus.VolumeReady, vol("n1", &tandemv1.VolumeReplica{Node: "n2", State: utd, Link: "fencing"}), "degraded", "n2 UpToDate (link fencing"},
		{"degraded wins over syncing", consensus.VolumeReady, vol("n1",
			&tandemv1.VolumeReplica{Node: "n2", State: st, Link: "syncing"},
			&tandemv1.VolumeReplica{Node: "n3", State: out, Link: "outdated"}), "degraded", "n3 Outdated"},
		{"primary silent", consensus.VolumeReady, vol("n2", &tandemv1.VolumeReplica{Node: "n2", State: utd}), "degraded", "primary n1 does not serve it"},
		{"nobody answered", consensus.VolumeReady, &tandemv1.VolumeInfo{Name: "v"}, "degraded", "no node"},
		{"deleting stays deleting", consensus.VolumeDeleting, vol("n1", &tandemv1.VolumeReplica{Node: "n2", State: out}), "deleting", ""},
		{"creating stays creating", consensus.VolumeCreating, &tandemv1.VolumeInfo{}, "creating", ""},
	} {
		state, why := volumeHealth(tc.catalog, tc.v)
		if state != tc.state || !strings.Contains(why, tc.why) || (tc.why == "" && why != "") {
			t.Errorf("%s: got %q, %q; want %q, %q", tc.name, state, why, tc.state, tc.why)
		}
	}
}

func TestCertWarnings(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	mk := func(notAfter time.Time) []byte {
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
	if w := certWarnings("cert", mk(now.Add(365*24*time.Hour)), now); len(w) != 0 {
		t.Errorf("a certificate valid for a year: %v", w)
	}
	if w := certWarnings("cert", mk(now.Add(10*24*time.Hour)), now); len(w) != 1 || !strings.Contains(w[0], "expires on 2026-01-11T00:00:00Z (in 10 days)") {
		t.Errorf("expiring in 10 days: %v", w)
	}
	if w := certWarnings("cert", mk(now.Add(-time.Hour)), now); len(w) != 1 || !strings.Contains(w[0], "expired on") {
		t.Errorf("expired: %v", w)
	}
	if w := certWarnings("cert", []byte("garbage"), now); len(w) != 1 || !strings.Contains(w[0], "cannot be read") {
		t.Errorf("garbage: %v", w)
	}
}
