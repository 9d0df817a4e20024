package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

type handshakeResult struct {
	server    tls.ConnectionState
	serverErr error
	clientErr error
}

// handshake runs one TLS handshake over loopback TCP (the kernel buffers, so
// neither side can block the other on an alert) and has the server send one
// byte, so the client also learns about a rejection the server made after
// the client's own handshake completed (TLS 1.3 client certificates).
func handshake(t *testing.T, srv, cli *tls.Config) handshakeResult {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type srvResult struct {
		state tls.ConnectionState
		err   error
	}
	done := make(chan srvResult, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- srvResult{err: err}
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		tc := tls.Server(c, srv)
		err = tc.Handshake()
		if err == nil {
			_, err = tc.Write([]byte{1})
		}
		done <- srvResult{tc.ConnectionState(), err}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	tc := tls.Client(c, cli)
	cerr := tc.Handshake()
	if cerr == nil {
		var b [1]byte
		_, cerr = io.ReadFull(tc, b[:])
	}
	tc.Close()
	r := <-done
	return handshakeResult{server: r.state, serverErr: r.err, clientErr: cerr}
}

func (r handshakeResult) ok() error {
	return errors.Join(r.serverErr, r.clientErr)
}

type cluster struct {
	ca      *CA
	caPEM   []byte
	srvCert []byte
	srvKey  []byte
}

func newCluster(t *testing.T, name string) cluster {
	t.Helper()
	ca := mustCA(t, name)
	cert, key := mustNode(t, ca, "node-a", time.Now())
	return cluster{ca: ca, caPEM: ca.CertPEM(), srvCert: cert, srvKey: key}
}

func (c cluster) serverTLS(t *testing.T) *tls.Config {
	t.Helper()
	cfg, err := ServerTLS(c.srvCert, c.srvKey, c.caPEM)
	if err != nil {
		t.Fatalf("ServerTLS: %v", err)
	}
	return cfg
}

// clientTLS is ClientTLS trusting the cluster's CA, failing the test on error.
func (c cluster) clientTLS(t *testing.T, cert, key []byte) *tls.Config {
	t.Helper()
	cfg, err := ClientTLS(cert, key, c.caPEM)
	if err != nil {
		t.Fatalf("ClientTLS: %v", err)
	}
	return cfg
}

// mustHandshake is a handshake with the cluster's server that must succeed.
func (c cluster) mustHandshake(t *testing.T, cli *tls.Config) handshakeResult {
	t.Helper()
	r := handshake(t, c.serverTLS(t), cli)
	if err := r.ok(); err != nil {
		t.Fatalf("handshake failed: %v", err)
	}
	return r
}

// presenting is a TLS 1.3 server configuration that sends exactly pair,
// none of ServerTLS's checks applied.
func presenting(pair tls.Certificate) *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{pair}}
}

func keyPair(t *testing.T, cert, key []byte) tls.Certificate {
	t.Helper()
	pair, err := tls.X509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	return pair
}

func TestMTLSNodeToNode(t *testing.T) {
	cl := newCluster(t, "c1")
	cert, key := mustNode(t, cl.ca, "node-b", time.Now())
	r := cl.mustHandshake(t, cl.clientTLS(t, cert, key))
	if r.server.Version != tls.VersionTLS13 {
		t.Errorf("version = %x, want TLS 1.3", r.server.Version)
	}
	name, ou, ok := PeerIdentity(r.server)
	if !ok || name != "node-b" || ou != OUNode {
		t.Errorf("PeerIdentity = %q, %q, %v; want node-b, node, true", name, ou, ok)
	}
}

func TestMTLSAdmin(t *testing.T) {
	cl := newCluster(t, "c1")
	cert, key, err := cl.ca.IssueAdmin("alice", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	r := cl.mustHandshake(t, cl.clientTLS(t, cert, key))
	name, ou, ok := PeerIdentity(r.server)
	if !ok || name != "alice" || ou != OUAdmin {
		t.Errorf("PeerIdentity = %q, %q, %v; want alice, admin, true", name, ou, ok)
	}

	// An admin certificate cannot be used to run a server.
	if _, err := ServerTLS(cert, key, cl.caPEM); err == nil {
		t.Error("ServerTLS accepted an admin (ClientAuth-only) certificate")
	}
}

func TestClientWithoutCertificate(t *testing.T) {
	cl := newCluster(t, "c1")
	r := cl.mustHandshake(t, cl.clientTLS(t, nil, nil))
	if name, ou, ok := PeerIdentity(r.server); ok {
		t.Errorf("PeerIdentity without client cert = %q, %q, true", name, ou)
	}
	if _, err := ClientTLS(cl.srvCert, nil, cl.caPEM); err == nil {
		t.Error("ClientTLS with a certificate but no key succeeded")
	}
}

func TestServerRefusesForeignClient(t *testing.T) {
	cl := newCluster(t, "c1")
	other := newCluster(t, "c2")
	// ClientTLS itself refuses a certificate that does not chain to the CA.
	if _, err := ClientTLS(other.srvCert, other.srvKey, cl.caPEM); err == nil {
		t.Error("ClientTLS accepted a client certificate from another CA")
	}
	// Force one in to see the server refuse it. (Certificates alone would
	// not do: the client only sends a certificate whose issuer is among the
	// CAs the server asks for, and otherwise sends none.)
	cli := cl.clientTLS(t, nil, nil)
	pair := keyPair(t, other.srvCert, other.srvKey)
	cli.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &pair, nil }
	r := handshake(t, cl.serverTLS(t), cli)
	if r.serverErr == nil || r.clientErr == nil {
		t.Fatalf("foreign client certificate accepted: server %v, client %v", r.serverErr, r.clientErr)
	}
	if !strings.Contains(r.serverErr.Error(), "unknown authority") {
		t.Errorf("server error = %v, want an unknown-authority error", r.serverErr)
	}
}

func TestClientRefusesForeignServer(t *testing.T) {
	cl := newCluster(t, "c1")
	other := newCluster(t, "c2")
	cert, key := mustNode(t, cl.ca, "node-b", time.Now())
	r := handshake(t, other.serverTLS(t), cl.clientTLS(t, cert, key))
	if r.clientErr == nil || !strings.Contains(r.clientErr.Error(), "server certificate") {
		t.Fatalf("client accepted a server from another CA: %v", r.clientErr)
	}
}

func TestClientRefusesExpiredServer(t *testing.T) {
	cl := newCluster(t, "c1")
	old := time.Now().Add(-NodeValidity - 24*time.Hour)
	cert, key := mustNode(t, cl.ca, "node-old", old)
	if _, err := ServerTLS(cert, key, cl.caPEM); err == nil {
		t.Error("ServerTLS accepted an expired certificate")
	}
	cli, _ := ClientTLS(nil, nil, cl.caPEM)
	r := handshake(t, presenting(keyPair(t, cert, key)), cli)
	if r.clientErr == nil || !strings.Contains(r.clientErr.Error(), "expired") {
		t.Fatalf("client accepted an expired server certificate: %v", r.clientErr)
	}
}

func TestClientRefusesOldTLS(t *testing.T) {
	cl := newCluster(t, "c1")
	cli := &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12}
	r := handshake(t, cl.serverTLS(t), cli)
	if r.serverErr == nil {
		t.Fatal("server accepted TLS 1.2")
	}
}

func TestServerSendsCA(t *testing.T) {
	cl := newCluster(t, "c1")
	cfg := cl.serverTLS(t)
	chain := cfg.Certificates[0].Certificate
	if len(chain) != 2 {
		t.Fatalf("server chain has %d certificates, want leaf + CA", len(chain))
	}
	if string(chain[1]) != string(cl.ca.cert.Raw) {
		t.Error("second certificate in server chain is not the CA")
	}
	// A bundle that already contains the CA is not extended again.
	cfg2, err := ServerTLS(append(cl.srvCert, cl.caPEM...), cl.srvKey, cl.caPEM)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(cfg2.Certificates[0].Certificate); n != 2 {
		t.Errorf("bundle chain has %d certificates, want 2", n)
	}
}

func TestServerTLSErrors(t *testing.T) {
	cl := newCluster(t, "c1")
	other := newCluster(t, "c2")
	if _, err := ServerTLS(other.srvCert, other.srvKey, cl.caPEM); err == nil {
		t.Error("ServerTLS accepted a certificate from another CA")
	}
	if _, err := ServerTLS(cl.srvCert, other.srvKey, cl.caPEM); err == nil {
		t.Error("ServerTLS accepted a mismatched key")
	}
	if _, err := ServerTLS(cl.srvCert, cl.srvKey, nil); err == nil {
		t.Error("ServerTLS accepted an empty CA")
	}
	if _, err := ServerTLS(cl.srvCert, cl.srvKey, cl.srvCert); err == nil || !strings.Contains(err.Error(), "not a CA") {
		t.Errorf("ServerTLS with a leaf as CA: err = %v", err)
	}
}

func TestPinnedTLS(t *testing.T) {
	cl := newCluster(t, "c1")
	r := handshake(t, cl.serverTLS(t), PinnedTLS(cl.ca.Fingerprint()))
	if err := r.ok(); err != nil {
		t.Fatalf("pinned handshake with the right cluster failed: %v", err)
	}
	if _, _, ok := PeerIdentity(r.server); ok {
		t.Error("joining node without a certificate has an identity")
	}

	// Wrong fingerprint.
	other := newCluster(t, "c2")
	r = handshake(t, cl.serverTLS(t), PinnedTLS(other.ca.Fingerprint()))
	if r.clientErr == nil || !strings.Contains(r.clientErr.Error(), "does not match the CA fingerprint") {
		t.Errorf("wrong fingerprint: client err = %v", r.clientErr)
	}

	// Someone in the middle sends the real CA certificate (it is public)
	// after a leaf from their own CA: the fingerprint matches, but the leaf
	// does not verify against it.
	pair := keyPair(t, other.srvCert, other.srvKey)
	pair.Certificate = append(pair.Certificate, cl.ca.cert.Raw)
	r = handshake(t, presenting(pair), PinnedTLS(cl.ca.Fingerprint()))
	if r.clientErr == nil || !strings.Contains(r.clientErr.Error(), "server certificate") {
		t.Errorf("man in the middle: client err = %v", r.clientErr)
	}

	// A server that does not send its CA cannot be matched.
	r = handshake(t, presenting(keyPair(t, cl.srvCert, cl.srvKey)), PinnedTLS(cl.ca.Fingerprint()))
	if r.clientErr == nil || !strings.Contains(r.clientErr.Error(), "did not send its CA") {
		t.Errorf("server without CA in chain: client err = %v", r.clientErr)
	}

	// Pinning a leaf's hash does not make the leaf a CA.
	leafFP, _ := CertFingerprint(cl.srvCert)
	pair2 := keyPair(t, cl.srvCert, cl.srvKey)
	pair2.Certificate = append(pair2.Certificate, pair2.Certificate[0])
	r = handshake(t, presenting(pair2), PinnedTLS(leafFP))
	if r.clientErr == nil || !strings.Contains(r.clientErr.Error(), "not a CA") {
		t.Errorf("pinned leaf: client err = %v", r.clientErr)
	}
}

func TestPeerIdentityEmpty(t *testing.T) {
	if _, _, ok := PeerIdentity(tls.ConnectionState{}); ok {
		t.Error("PeerIdentity of an empty state is ok")
	}
}

// A revoked certificate fails the handshake on either side; one the check
// accepts, and a client without a certificate, still pass.
func TestWithCertCheck(t *testing.T) {
	cl := newCluster(t, "c1")
	good, goodKey := mustNode(t, cl.ca, "node-b", time.Now())
	bad, badKey := mustNode(t, cl.ca, "node-c", time.Now())
	badSerial, err := CertSerial(bad)
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	check := func(leaf *x509.Certificate) error {
		seen = append(seen, leaf.Subject.CommonName+"/"+CertOU(leaf))
		if SerialHex(leaf) == badSerial {
			return errors.New("on the revocation list")
		}
		return nil
	}
	srv := WithCertCheck(cl.serverTLS(t), check)
	if err := handshake(t, srv, cl.clientTLS(t, good, goodKey)).ok(); err != nil {
		t.Fatalf("accepted certificate: %v", err)
	}
	if err := handshake(t, srv, cl.clientTLS(t, nil, nil)).ok(); err != nil {
		t.Fatalf("no client certificate: %v", err)
	}
	r := handshake(t, srv, cl.clientTLS(t, bad, badKey))
	if r.serverErr == nil || !strings.Contains(r.serverErr.Error(), "on the revocation list") {
		t.Fatalf("revoked client: server error %v", r.serverErr)
	}
	if r.clientErr == nil {
		t.Fatal("revoked client: its handshake went through")
	}
	// The client side: a server presenting a revoked certificate.
	revokedSrv, err := ServerTLS(bad, badKey, cl.caPEM)
	if err != nil {
		t.Fatal(err)
	}
	r = handshake(t, revokedSrv, WithCertCheck(cl.clientTLS(t, good, goodKey), check))
	if r.clientErr == nil || !strings.Contains(r.clientErr.Error(), "on the revocation list") {
		t.Fatalf("client accepted a revoked server: %v", r.clientErr)
	}
	if !slices.Contains(seen, "node-b/node") {
		t.Errorf("check saw %v", seen)
	}
}
