package api

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/pki"
	"github.com/tandemhci/tandem/internal/state"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
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
	ms  *consensus.MetaState
	err error
}

func (f fakeMeta) LocalState() (*consensus.MetaState, error) { return f.ms, f.err }

type fixture struct {
	auth      *Auth
	inCluster bool
	localErr  error // what reading the applied metadata fails with
	ms        *consensus.MetaState
	// secrets of the credentials in ms, by name: admin, ops (operator),
	// ro (readonly), gone (admin, revoked)
	secret map[string]string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{inCluster: true, secret: map[string]string{}, ms: &consensus.MetaState{Nodes: map[string]*consensus.NodeRecord{
		"n1": {Name: "n1", State: consensus.NodeMember},
		"n4": {Name: "n4", State: consensus.NodeRemoved},
	}, Credentials: map[string]*consensus.CredentialRecord{}}}
	for name, role := range map[string]string{"admin": consensus.RoleAdmin, "ops": consensus.RoleOperator, "ro": consensus.RoleReadonly, "gone": consensus.RoleAdmin} {
		tok, err := pki.NewAdminToken()
		if err != nil {
			t.Fatal(err)
		}
		v, _ := pki.AdminTokenVerifier(tok)
		f.secret[name] = tok
		f.ms.Credentials[name] = &consensus.CredentialRecord{Name: name, Role: role, Verifier: hex.EncodeToString(v[:])}
	}
	f.ms.Credentials["gone"].RevokedAt = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	st := &state.State{
		Node: state.Node{Name: "n1"},
		Log:  slog.New(slog.NewTextHandler(io.Discard, nil)),
		Meta: func() state.Meta {
			if !f.inCluster {
				return nil
			}
			return fakeMeta{ms: f.ms, err: f.localErr}
		},
		Cluster: func() (state.Cluster, bool) { return state.Cluster{Name: "lab"}, f.inCluster },
	}
	f.auth = NewAuth(st)
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
	adminCert := func(ctx context.Context) context.Context { return withCert(ctx, "admin@n1", pki.OUAdmin) }
	cases := []struct {
		name   string
		ctx    context.Context
		method string
		tcp    bool
		out    bool // not in a cluster
		code   codes.Code
		actor  string // on success: the credential the audit trail gets
		msg    string // on failure: part of the message
	}{
		{"unix, no token: the node's local admin", context.Background(), "/tandem.v1.Node/Remove", false, false, codes.OK, "local@n1", ""},
		{"unix, a token is checked", withToken(f.secret["ro"]), "/tandem.v1.VM/List", false, false, codes.OK, "ro", ""},
		{"unix, a readonly token cannot stop", withToken(f.secret["ro"]), "/tandem.v1.VM/Stop", false, false, codes.PermissionDenied, "", "credential ro has role readonly; /tandem.v1.VM/Stop needs role operator"},
		{"unix, wrong token", withToken("tandem-admin-nonsense"), "/tandem.v1.VM/List", false, false, codes.Unauthenticated, "", "invalid API credential"},
		{"unix, unknown token", withToken(func() string { s, _ := pki.NewAdminToken(); return s }()), "/tandem.v1.VM/List", false, false, codes.Unauthenticated, "", "unknown API credential"},
		{"unix, revoked token", withToken(f.secret["gone"]), "/tandem.v1.VM/List", false, false, codes.Unauthenticated, "", "credential gone was revoked at 2026-01-02T03:04:05Z"},
		{"unix, health needs no token", context.Background(), "/grpc.health.v1.Health/Check", false, false, codes.OK, "", ""},
		{"tcp, token but no certificate", withToken(f.secret["admin"]), "/tandem.v1.VM/List", true, false, codes.Unauthenticated, "", "client certificate"},
		{"tcp, admin certificate and admin token", adminCert(withToken(f.secret["admin"])), "/tandem.v1.Node/Remove", true, false, codes.OK, "admin", ""},
		{"tcp, readonly lists", adminCert(withToken(f.secret["ro"])), "/tandem.v1.VM/List", true, false, codes.OK, "ro", ""},
		{"tcp, readonly reads the audit", adminCert(withToken(f.secret["ro"])), "/tandem.v1.Cluster/Audit", true, false, codes.OK, "ro", ""},
		{"tcp, readonly cannot stop a VM", adminCert(withToken(f.secret["ro"])), "/tandem.v1.VM/Stop", true, false, codes.PermissionDenied, "", "has role readonly"},
		{"tcp, readonly cannot create a volume", adminCert(withToken(f.secret["ro"])), "/tandem.v1.Volume/Create", true, false, codes.PermissionDenied, "", "needs role operator"},
		{"tcp, operator stops a VM", adminCert(withToken(f.secret["ops"])), "/tandem.v1.VM/Stop", true, false, codes.OK, "ops", ""},
		{"tcp, operator cannot remove a node", adminCert(withToken(f.secret["ops"])), "/tandem.v1.Node/Remove", true, false, codes.PermissionDenied, "", "credential ops has role operator; /tandem.v1.Node/Remove needs role admin"},
		{"tcp, operator cannot make credentials", adminCert(withToken(f.secret["ops"])), "/tandem.v1.Credential/Create", true, false, codes.PermissionDenied, "", "needs role admin"},
		{"tcp, an unknown method needs admin", adminCert(withToken(f.secret["ops"])), "/tandem.v1.Cluster/NoSuch", true, false, codes.PermissionDenied, "", "needs role admin"},
		{"tcp, revoked token", adminCert(withToken(f.secret["gone"])), "/tandem.v1.VM/List", true, false, codes.Unauthenticated, "", "revoked"},
		{"tcp, certificate of another kind", withCert(withToken(f.secret["admin"]), "x", "export"), "/tandem.v1.VM/List", true, false, codes.Unauthenticated, "", ""},
		{"tcp, admin certificate without token", adminCert(context.Background()), "/tandem.v1.VM/List", true, false, codes.Unauthenticated, "", "missing API credential"},
		{"tcp, a node certificate alone is no credential", withCert(context.Background(), "n1", pki.OUNode), "/tandem.v1.VM/List", true, false, codes.Unauthenticated, "", "missing API credential"},
		{"tcp, a removed node's admin certificate", withCert(withToken(f.secret["admin"]), "admin@n4", pki.OUAdmin), "/tandem.v1.VM/List", true, false, codes.PermissionDenied, "", "certificate admin@n4 belongs to node n4, which was removed"},
		{"tcp, a removed node's certificate", withCert(withToken(f.secret["admin"]), "n4", pki.OUNode), "/tandem.v1.VM/List", true, false, codes.PermissionDenied, "", "which was removed"},
		{"outside a cluster, unix create", context.Background(), methodCreate, false, true, codes.OK, "", ""},
		{"outside a cluster, unix status", context.Background(), methodStatus, false, true, codes.OK, "", ""},
		{"outside a cluster, unix list", context.Background(), "/tandem.v1.VM/List", false, true, codes.FailedPrecondition, "", ""},
		{"outside a cluster, tcp create", adminCert(context.Background()), methodCreate, true, true, codes.FailedPrecondition, "", ""},
	}
	for _, c := range cases {
		f.inCluster = !c.out
		ctx, err := f.auth.authorizeAdmin(c.ctx, c.method, c.tcp)
		if status.Code(err) != c.code || !strings.Contains(status.Convert(err).Message(), c.msg) {
			t.Errorf("%s: %v, want %v %q", c.name, err, c.code, c.msg)
			continue
		}
		if err == nil && consensus.ActorFrom(ctx) != c.actor {
			t.Errorf("%s: actor %q, want %q", c.name, consensus.ActorFrom(ctx), c.actor)
		}
	}
}

// A removed node has no metadata replica any more: its unix socket still
// answers the local admin, and refuses what it cannot check.
func TestAuthorizeAdminWithoutMetadata(t *testing.T) {
	f := newFixture(t)
	f.localErr = errors.New("local read of shard 1: shard not found")
	if _, err := f.auth.authorizeAdmin(context.Background(), methodStatus, false); err != nil {
		t.Fatalf("local admin: %v", err)
	}
	if _, err := f.auth.authorizeAdmin(withToken(f.secret["admin"]), methodStatus, false); status.Code(err) != codes.Unavailable {
		t.Fatalf("token without metadata: %v", err)
	}
	if _, err := f.auth.authorizeAdmin(withCert(withToken(f.secret["admin"]), "admin@n1", pki.OUAdmin), methodStatus, true); status.Code(err) != codes.Unavailable {
		t.Fatalf("tcp without metadata: %v", err)
	}
}

// Every RPC served on the admin servers, and every method of every admin
// service in the proto, has a deliberate entry in the role table.
func TestRoleTableComplete(t *testing.T) {
	srv := grpc.NewServer()
	New(Config{State: &state.State{Log: slog.New(slog.NewTextHandler(io.Discard, nil))}}).RegisterAdmin(srv)
	served := 0
	for svc, info := range srv.GetServiceInfo() {
		for _, m := range info.Methods {
			served++
			full := "/" + svc + "/" + m.Name
			if _, ok := methodRole(full); !ok {
				t.Errorf("admin RPC %s has no entry in the role table (internal/api/roles.go)", full)
			}
		}
	}
	svcs := tandemv1.File_tandem_v1_tandem_proto.Services()
	for i := range svcs.Len() {
		sd := svcs.Get(i)
		if sd.Name() == "Peer" {
			continue // the backend API: node certificates, no roles
		}
		for j := range sd.Methods().Len() {
			full := "/" + string(sd.FullName()) + "/" + string(sd.Methods().Get(j).Name())
			if _, ok := methodRole(full); !ok {
				t.Errorf("RPC %s of the proto has no entry in the role table (internal/api/roles.go)", full)
			}
		}
	}
	if served < 30 {
		t.Fatalf("only %d admin RPCs registered: the test does not see the services", served)
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

type fakeStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s fakeStream) Context() context.Context { return s.ctx }

// Streams are guarded like unary calls, and the handler's stream context
// names the caller.
func TestAdminStream(t *testing.T) {
	f := newFixture(t)
	var actor string
	h := func(_ any, ss grpc.ServerStream) error { actor = consensus.ActorFrom(ss.Context()); return nil }
	info := &grpc.StreamServerInfo{FullMethod: "/tandem.v1.VM/Migrate"}
	if err := f.auth.AdminStream(false)(nil, fakeStream{ctx: withToken(f.secret["ops"])}, info, h); err != nil || actor != "ops" {
		t.Fatalf("operator migrates: %v, actor %q", err, actor)
	}
	err := f.auth.AdminStream(false)(nil, fakeStream{ctx: withToken(f.secret["ro"])}, info, h)
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "role readonly") {
		t.Fatalf("readonly migrates: %v", err)
	}
}
