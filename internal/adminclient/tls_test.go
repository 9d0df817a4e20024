package adminclient

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// testCA is a throwaway CA; internal/pki is deliberately not used here.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key := genKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue signs a leaf certificate and returns it as PEM cert and key.
func (ca *testCA) issue(t *testing.T, cn string, usage x509.ExtKeyUsage, dnsNames ...string) (certPEM, keyPEM []byte) {
	t.Helper()
	key := genKey(t)
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		DNSNames:     dnsNames,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}

func genKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// writeCreds lays out a credentials dir the way a node writes <data_dir>/admin.
func writeCreds(t *testing.T, ca *testCA, clientCA *testCA) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "admin")
	cert, key := clientCA.issue(t, "admin", x509.ExtKeyUsageClientAuth)
	writeFile(t, filepath.Join(dir, CAFile), string(ca.pem))
	writeFile(t, filepath.Join(dir, CertFile), string(cert))
	writeFile(t, filepath.Join(dir, KeyFile), string(key))
	writeFile(t, filepath.Join(dir, TokenFile), "remote-token\n")
	return dir
}

// tlsServer is a node's admin endpoint on 127.0.0.1 whose certificate names
// only a DNS host, so a successful dial by IP proves the host name is not
// checked while the chain is.
type tlsServer struct {
	addr     string
	f        *fakeCluster
	clientCN chan string
}

func startTLSServer(t *testing.T, serverCA, clientCA *testCA) *tlsServer {
	t.Helper()
	certPEM, keyPEM := serverCA.issue(t, "node-a", x509.ExtKeyUsageServerAuth, "node-a.tandem.invalid")
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(clientCA.cert)
	s := &tlsServer{f: &fakeCluster{}, clientCN: make(chan string, 10)}
	creds := credentials.NewTLS(&tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
	})
	record := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if p, ok := peer.FromContext(ctx); ok {
			if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.PeerCertificates) > 0 {
				s.clientCN <- ti.State.PeerCertificates[0].Subject.CommonName
			}
		}
		return h(ctx, req)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(creds), grpc.UnaryInterceptor(record))
	tandemv1.RegisterClusterServer(srv, s.f)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	s.addr = lis.Addr().String()
	return s
}

func TestRemoteMTLS(t *testing.T) {
	clearEnv(t)
	ca := newTestCA(t, "tandem cluster CA")
	srv := startTLSServer(t, ca, ca)
	creds := writeCreds(t, ca, ca)

	c, err := Dial(context.Background(), Options{Server: srv.addr, Credentials: creds, DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	st, err := c.Cluster.Status(context.Background(), &tandemv1.StatusRequest{})
	if err != nil {
		t.Fatalf("Status over mTLS: %v (%s)", err, Explain(err))
	}
	if st.GetClusterName() != "prod" {
		t.Errorf("status %v", st)
	}
	if got := srv.f.lastAuth(t); len(got) != 1 || got[0] != "Bearer remote-token" {
		t.Errorf("authorization %q", got)
	}
	if cn := <-srv.clientCN; cn != "admin" {
		t.Errorf("client certificate CN %q", cn)
	}
}

func TestRemoteRejectsServerFromOtherCA(t *testing.T) {
	clearEnv(t)
	ours := newTestCA(t, "our CA")
	other := newTestCA(t, "someone else's CA")
	srv := startTLSServer(t, other, ours)
	creds := writeCreds(t, ours, ours)

	c, err := Dial(context.Background(), Options{Server: srv.addr, Credentials: creds})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Cluster.Status(context.Background(), &tandemv1.StatusRequest{})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("err %v, want Unavailable", err)
	}
	msg := Explain(err)
	for _, want := range []string{"TLS handshake with tandemd at " + srv.addr + " failed", "not issued by the cluster CA", "check the admin credentials"} {
		if !strings.Contains(msg, want) {
			t.Errorf("Explain = %q, want it to contain %q", msg, want)
		}
	}
	srv.f.mu.Lock()
	defer srv.f.mu.Unlock()
	if len(srv.f.auth) != 0 {
		t.Error("call reached the server")
	}
}

func TestRemoteServerRejectsForeignClient(t *testing.T) {
	clearEnv(t)
	ca := newTestCA(t, "cluster CA")
	stranger := newTestCA(t, "stranger CA")
	srv := startTLSServer(t, ca, ca)
	creds := writeCreds(t, ca, stranger) // trusts the server, but our cert is foreign

	c, err := Dial(context.Background(), Options{Server: srv.addr, Credentials: creds})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Cluster.Status(context.Background(), &tandemv1.StatusRequest{}); err == nil {
		t.Fatal("server accepted a client certificate from another CA")
	}
}

func TestRemoteMissingCredentials(t *testing.T) {
	clearEnv(t)
	ca := newTestCA(t, "cluster CA")
	for _, missing := range []string{CAFile, CertFile, KeyFile, TokenFile} {
		t.Run(missing, func(t *testing.T) {
			creds := writeCreds(t, ca, ca)
			path := filepath.Join(creds, missing)
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			_, err := Dial(context.Background(), Options{Server: "10.0.0.1:7443", Credentials: creds})
			if err == nil {
				t.Fatal("Dial succeeded without " + missing)
			}
			if !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("error does not wrap fs.ErrNotExist: %v", err)
			}
			msg := Explain(err)
			want := []string{path, "copy <data_dir>/admin", "from a cluster node"}
			if missing == TokenFile {
				want = []string{path, "tandem credential create NAME --role"}
			}
			for _, want := range want {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not mention %q", msg, want)
				}
			}
		})
	}
	// An explicit token makes the token file unnecessary.
	creds := writeCreds(t, ca, ca)
	if err := os.Remove(filepath.Join(creds, TokenFile)); err != nil {
		t.Fatal(err)
	}
	c, err := Dial(context.Background(), Options{Server: "10.0.0.1:7443", Credentials: creds, Token: "explicit"})
	if err != nil {
		t.Fatalf("Dial with explicit token: %v", err)
	}
	c.Close()
}

func TestRemoteBadServerAddress(t *testing.T) {
	clearEnv(t)
	if _, err := Dial(context.Background(), Options{Server: "10.0.0.1"}); err == nil || !strings.Contains(err.Error(), "host:port") {
		t.Errorf("err %v", err)
	}
}
