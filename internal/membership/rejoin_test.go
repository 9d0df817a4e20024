package membership

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/pki"
	"github.com/tandemhci/tandem/internal/state/statetest"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// rejoinWorld is a member n1 of cluster c1 with a real CA, whose metadata
// holds a valid join token, and a rejoin request of n3 with that token.
func rejoinWorld(t *testing.T) (*world, *pki.CA, *tandemv1.PeerJoinRequest) {
	t.Helper()
	w := newWorld()
	ca, _ := member(t, w)
	n3 := w.meta.ms.Nodes["n3"]
	n3.RaftAddr, n3.AdminAddr, n3.ReplicationAddr = "10.0.0.3:7001", "10.0.0.3:7002", "10.0.0.3:7003"
	n3.Role, n3.CertSerials = "data", []string{"0ld"}
	req := rejoinRequest(t, w, ca, "n3")
	req.ReplicaId = 3
	return w, ca, req
}

// rejoinRequest makes a token the world's metadata knows and a rejoin
// request of node with it.
func rejoinRequest(t *testing.T, w *world, ca *pki.CA, node string) *tandemv1.PeerJoinRequest {
	t.Helper()
	tok, err := pki.NewJoinToken(ca.Fingerprint())
	if err != nil {
		t.Fatal(err)
	}
	v := tok.Verifier()
	if w.meta.ms.Tokens == nil {
		w.meta.ms.Tokens = map[string]*consensus.TokenRecord{}
	}
	w.meta.ms.Tokens[tok.IDString()] = &consensus.TokenRecord{ID: tok.IDString(), Verifier: hex.EncodeToString(v[:]), ExpiresAt: rejoinAt.Add(time.Hour)}
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.NewCSR(key, node)
	if err != nil {
		t.Fatal(err)
	}
	return &tandemv1.PeerJoinRequest{Token: tok.String(), NodeName: node, Role: tandemv1.NodeRole_NODE_ROLE_DATA, CsrPem: csr, Rejoin: true,
		BackendAddr: "10.0.0.3:7000", RaftAddr: "10.0.0.3:7001", AdminAddr: "10.0.0.3:7002", ReplicationAddr: "10.0.0.3:7003"}
}

// TestAdmitRejoin: a member re-admits n3 with a token: the same replica, a
// certificate from the cluster CA whose serial is committed to n3's record,
// the current CA and key, and a certificate view holding the new serial;
// no Raft membership change and no cluster secret.
func TestAdmitRejoin(t *testing.T) {
	w, ca, req := rejoinWorld(t)
	resp, err := w.manager().Admit(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.ClusterId != "id1" || resp.ReplicaId != 3 || len(resp.ClusterSecret) != 0 || string(resp.CaPem) != string(ca.CertPEM()) || len(resp.CaKeyPem) == 0 {
		t.Fatalf("response %+v", resp)
	}
	blk, _ := pem.Decode(resp.CertPem)
	if blk == nil {
		t.Fatal("no certificate")
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.CertPEM())
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil || cert.Subject.CommonName != "n3" {
		t.Fatalf("certificate for %q: %v", cert.Subject.CommonName, err)
	}
	serial, err := pki.CertSerial(resp.CertPem)
	if err != nil {
		t.Fatal(err)
	}
	if j, want := w.meta.j.List(), []string{"rejoin n3 replica=3"}; !slices.Equal(j, want) {
		t.Fatalf("journal %q, want %q (one proposal, no Raft change)", j, want)
	}
	if got := w.meta.ms.Nodes["n3"].CertSerials; !slices.Equal(got, []string{"0ld", serial}) {
		t.Fatalf("n3's serials %v", got)
	}
	var viewed []string
	for _, n := range resp.CertView.GetNodes() {
		if n.Name == "n3" {
			viewed = n.Serials
		}
	}
	if !slices.Contains(viewed, serial) || resp.CertView.AppliedIndex != 42 {
		t.Fatalf("certificate view %+v lacks n3's new serial %s", resp.CertView, serial)
	}
}

// TestAdmitRejoinRefusals: a wrong, used or expired token, an unknown or
// removed node, another replica of the name and other addresses are
// refused; the pre-check read stops them (nothing proposed), with a clear
// message, and each is counted under its reason.
func TestAdmitRejoinRefusals(t *testing.T) {
	cases := []struct {
		name   string
		edit   func(t *testing.T, w *world, ca *pki.CA, r *tandemv1.PeerJoinRequest)
		code   codes.Code
		msg    string
		reason string
	}{
		{"wrong token", func(t *testing.T, w *world, ca *pki.CA, r *tandemv1.PeerJoinRequest) {
			tok, err := pki.NewJoinToken(ca.Fingerprint()) // right cluster, unknown token
			if err != nil {
				t.Fatal(err)
			}
			r.Token = tok.String()
		}, codes.PermissionDenied, "join token is not valid for this cluster", RefusedBadToken},
		{"used token", func(_ *testing.T, w *world, _ *pki.CA, r *tandemv1.PeerJoinRequest) {
			tok, _ := pki.ParseJoinToken(r.Token)
			w.meta.ms.Tokens[tok.IDString()].UsedBy = "n2"
		}, codes.PermissionDenied, "join token was already used (by n2)", RefusedUsedToken},
		{"expired token", func(_ *testing.T, w *world, _ *pki.CA, r *tandemv1.PeerJoinRequest) {
			tok, _ := pki.ParseJoinToken(r.Token)
			w.meta.ms.Tokens[tok.IDString()].ExpiresAt = rejoinAt.Add(-time.Second)
		}, codes.PermissionDenied, "join token has expired", RefusedExpiredToken},
		{"unknown node", func(_ *testing.T, _ *world, _ *pki.CA, r *tandemv1.PeerJoinRequest) {
			r.NodeName, r.ReplicaId = "n9", 9
		}, codes.NotFound, "n9 is not a node of this cluster, so it cannot rejoin; wipe its data directory and join it as a new node with 'tandem cluster join'", RefusedUnknownNode},
		{"removed node", func(_ *testing.T, w *world, _ *pki.CA, _ *tandemv1.PeerJoinRequest) {
			w.meta.ms.Nodes["n3"].State = consensus.NodeRemoved
		}, codes.PermissionDenied, "node n3 was removed from the cluster, so it cannot rejoin; wipe its data directory and join it as a new node", RefusedRemovedNode},
		{"other replica", func(_ *testing.T, _ *world, _ *pki.CA, r *tandemv1.PeerJoinRequest) { r.ReplicaId = 7 }, codes.NotFound, "holds replica 7", RefusedUnknownNode},
		{"other address", func(_ *testing.T, _ *world, _ *pki.CA, r *tandemv1.PeerJoinRequest) { r.RaftAddr = "10.0.0.33:7001" }, codes.InvalidArgument, "a rejoin keeps the recorded addresses", RefusedBadRequest},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w, ca, req := rejoinWorld(t)
			c.edit(t, w, ca, req)
			before := slices.Clone(w.meta.ms.Nodes["n3"].CertSerials)
			_, err := w.manager().Admit(context.Background(), req)
			if !statetest.IsStatus(err, c.code, c.msg) {
				t.Fatalf("got %v, want %v %q", err, c.code, c.msg)
			}
			if j := w.meta.j.List(); len(j) != 0 {
				t.Fatalf("a refused rejoin proposed %q", j)
			}
			if w.meta.checks != 1 || !slices.Equal(w.refused, []string{c.reason}) {
				t.Fatalf("checks %d, refusals counted %q, want [%s]", w.meta.checks, w.refused, c.reason)
			}
			if got := w.meta.ms.Nodes["n3"].CertSerials; !slices.Equal(got, before) {
				t.Fatalf("n3's serials changed: %v", got)
			}
		})
	}
}

// A token of another cluster is refused before quorum or the metadata
// is asked, as for a join.
func TestAdmitRejoinOtherCluster(t *testing.T) {
	w, _, req := rejoinWorld(t)
	other, err := pki.NewCA("other", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	req.Token = rejoinRequest(t, w, other, "n3").Token
	_, err = w.manager().Admit(context.Background(), req)
	if !statetest.IsStatus(err, codes.PermissionDenied, "join token is for another cluster") || w.quorumN != 0 || w.meta.checks != 0 {
		t.Fatalf("got %v after %d quorum checks and %d reads", err, w.quorumN, w.meta.checks)
	}
}

// fakeRejoin is the daemon's side of a rejoin: a node stopped, running
// or in no cluster.
type fakeRejoin struct {
	stopped, running bool
	resumed          bool
}

func (f *fakeRejoin) StoppedLocked() (Identity, string, bool) {
	return Identity{ClusterName: "c1", ClusterID: "id1", NodeName: "n1", ReplicaID: 1}, "certificate expired", f.stopped
}
func (f *fakeRejoin) RunningLocked() (Identity, bool) {
	return Identity{ClusterName: "c1", ClusterID: "id1", NodeName: "n1", ReplicaID: 1}, f.running
}
func (f *fakeRejoin) RefreshLocked(context.Context, Material, *consensus.CertView) error { return nil }
func (f *fakeRejoin) ResumeLocked(context.Context, Material, *consensus.CertView) error  { return nil }
func (f *fakeRejoin) Resumed(context.Context)                                            { f.resumed = true }

// Rejoin runs only on a stopped node or one that reaches no quorum;
// elsewhere it says what applies.
func TestRejoinOnlyWhenStopped(t *testing.T) {
	ca, err := pki.NewCA("c1", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tok, err := pki.NewJoinToken(ca.Fingerprint())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name    string
		quorate bool
		msg     string
	}{
		{"running with a quorum", true, "this node runs in its cluster and reaches a quorum: its certificate works"},
		{"in no cluster", false, "this node is not in a cluster: join one with 'tandem cluster join ADDR --token T'"},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld()
			w.quorate = c.quorate
			hooks := &fakeRejoin{running: c.quorate}
			m := w.manager()
			m.rejoin = hooks
			_, err := m.Rejoin(context.Background(), "10.0.0.2:7000", tok.String())
			if !statetest.IsStatus(err, codes.FailedPrecondition, c.msg) || hooks.resumed {
				t.Fatalf("got %v (resumed %v)", err, hooks.resumed)
			}
		})
	}
	w := newWorld()
	if _, err := w.manager().Rejoin(context.Background(), "nowhere", tok.String()); !statetest.IsStatus(err, codes.InvalidArgument, "want host:port") {
		t.Fatalf("bad address: %v", err)
	}
}
