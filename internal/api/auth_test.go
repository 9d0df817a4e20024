package api

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/pki"
	"github.com/tandemhci/tandem/internal/state"
)

func TestBearer(t *testing.T) {
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer  tok "))
	if got := bearer(ctx); got != "tok" {
		t.Fatalf("bearer = %q", got)
	}
	ctx = metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Basic x"))
	if got := bearer(ctx); got != "" {
		t.Fatalf("basic auth taken as bearer: %q", got)
	}
}

// fakeMeta holds the applied metadata state; nothing else is called.
type fakeMeta struct {
	state.Meta
	ms *consensus.MetaState
}

func (f fakeMeta) LocalState() (*consensus.MetaState, error) { return f.ms, nil }

type fixture struct {
	auth      *Auth
	inCluster bool
	ms        *consensus.MetaState
	token     string // valid in the metadata
	fileToken string // valid only in the node's token file
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{inCluster: true, ms: &consensus.MetaState{Nodes: map[string]*consensus.NodeRecord{
		"n1": {Name: "n1", State: consensus.NodeMember},
		"n4": {Name: "n4", State: consensus.NodeRemoved},
	}}}
	var err error
	if f.token, err = pki.NewAdminToken(); err != nil {
		t.Fatal(err)
	}
	if f.fileToken, err = pki.NewAdminToken(); err != nil {
		t.Fatal(err)
	}
	v, _ := pki.AdminTokenVerifier(f.token)
	f.ms.Cluster.AdminTokenVerifiers = []string{hex.EncodeToString(v[:])}
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte(f.fileToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	st := &state.State{
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Meta: func() state.Meta {
			if !f.inCluster {
				return nil
			}
			return fakeMeta{ms: f.ms}
		},
		Cluster: func() (state.Cluster, bool) { return state.Cluster{Name: "lab"}, f.inCluster },
	}
	f.auth = NewAuth(st, file)
	return f
}

// withCert is a context whose TLS peer presented a verified certificate
// with this common name and organisational unit.
func withCert(ctx context.Context, cn, ou string) context.Context {
	leaf := &x509.Certificate{Subject: pkix.Name{CommonName: cn, OrganizationalUnit: []string{ou}}}
	info := credentials.TLSInfo{State: tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{leaf}}}}
	return peer.NewContext(ctx, &peer.Peer{AuthInfo: info})
}

func withToken(tok string) context.Context {
	return metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer "+tok))
}

func TestAuthorizeAdmin(t *testing.T) {
	f := newFixture(t)
	cases := []struct {
		name   string
		ctx    context.Context
		method string
		tcp    bool
		out    bool // not in a cluster
		code   codes.Code
	}{
		{"unix, token in the metadata", withToken(f.token), "/tandem.v1.VM/List", false, false, codes.OK},
		{"unix, token only in the node's file (just joined)", withToken(f.fileToken), "/tandem.v1.VM/List", false, false, codes.OK},
		{"unix, no token", context.Background(), "/tandem.v1.VM/List", false, false, codes.Unauthenticated},
		{"unix, wrong token", withToken("tandem-admin-nonsense"), "/tandem.v1.VM/List", false, false, codes.Unauthenticated},
		{"unix, health needs no token", context.Background(), "/grpc.health.v1.Health/Check", false, false, codes.OK},
		{"tcp, token but no certificate", withToken(f.token), "/tandem.v1.VM/List", true, false, codes.Unauthenticated},
		{"tcp, admin certificate and token", withCert(withToken(f.token), "alice", pki.OUAdmin), "/tandem.v1.VM/List", true, false, codes.OK},
		{"tcp, certificate of another kind", withCert(withToken(f.token), "x", "export"), "/tandem.v1.VM/List", true, false, codes.Unauthenticated},
		{"tcp, admin certificate without token", withCert(context.Background(), "alice", pki.OUAdmin), "/tandem.v1.VM/List", true, false, codes.Unauthenticated},
		{"outside a cluster, unix create", context.Background(), methodCreate, false, true, codes.OK},
		{"outside a cluster, unix status", context.Background(), methodStatus, false, true, codes.OK},
		{"outside a cluster, unix list", context.Background(), "/tandem.v1.VM/List", false, true, codes.FailedPrecondition},
		{"outside a cluster, tcp create", withCert(context.Background(), "alice", pki.OUAdmin), methodCreate, true, true, codes.FailedPrecondition},
	}
	for _, c := range cases {
		f.inCluster = !c.out
		err := f.auth.authorizeAdmin(c.ctx, c.method, c.tcp)
		if status.Code(err) != c.code {
			t.Errorf("%s: %v, want %v", c.name, err, c.code)
		}
	}
}

// A removed node keeps a valid certificate; its name is what revokes it.
func TestAuthorizePeer(t *testing.T) {
	f := newFixture(t)
	if err := f.auth.authorizePeer(withCert(context.Background(), "n1", pki.OUNode)); err != nil {
		t.Fatalf("member: %v", err)
	}
	if err := f.auth.authorizePeer(withCert(context.Background(), "n4", pki.OUNode)); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("removed node: %v", err)
	}
	if err := f.auth.authorizePeer(withCert(context.Background(), "alice", pki.OUAdmin)); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("admin certificate on the backend API: %v", err)
	}
	if err := f.auth.authorizePeer(context.Background()); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("no certificate: %v", err)
	}
}

func TestReplicationPeer(t *testing.T) {
	leaf := &x509.Certificate{Subject: pkix.Name{CommonName: "n2", OrganizationalUnit: []string{pki.OUNode}}}
	if name, err := ReplicationPeer(tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{leaf}}}); err != nil || name != "n2" {
		t.Fatalf("node certificate: %q %v", name, err)
	}
	leaf.Subject.OrganizationalUnit = []string{pki.OUAdmin}
	if _, err := ReplicationPeer(tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{leaf}}}); err == nil {
		t.Fatal("an admin certificate may replicate")
	}
}
