package replication

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"testing"
	"time"
)

// selfSignedTLS returns a server and a client TLS config that trust one
// self-signed certificate, which both present (mutual TLS as the daemon's).
func selfSignedTLS(t testing.TB) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "n1"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
	server = &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13}
	client = &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS13}
	return server, client
}

// TestServeAuthorize checks that Serve names a connection's sender only
// through the Authorize it was given, and drops the connection when that
// refuses (or when there is none).
func TestServeAuthorize(t *testing.T) {
	srvTLS, cliTLS := selfSignedTLS(t)
	noVolume := func(string) (*Target, error) { return nil, ErrUnknownVolume }
	fromCN := func(st tls.ConnectionState) (string, error) {
		if len(st.VerifiedChains) == 0 {
			return "", errors.New("no verified chain")
		}
		return st.VerifiedChains[0][0].Subject.CommonName, nil
	}
	refuse := func(tls.ConnectionState) (string, error) { return "", errors.New("not a node certificate") }

	for _, tc := range []struct {
		name      string
		authorize Authorize
		helloFrom string
		drop      bool   // no ack: the connection is closed after the handshake
		want      Status // of the HelloAck
	}{
		{"named by authorize", fromCN, "n1", false, StatusUnknownVolume},
		{"hello disagrees with authorize", fromCN, "n2", false, StatusNotPrimary},
		{"authorize refuses", refuse, "n1", true, 0},
		{"no authorize", nil, "n1", true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			sec := NewSecondary(slog.New(slog.NewTextHandler(io.Discard, nil)), noVolume, tc.authorize)
			done := make(chan error, 1)
			go func() { done <- sec.Serve(ctx, tls.NewListener(ln, srvTLS)) }()
			defer func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("Serve: %v", err)
				}
			}()

			c, err := tls.Dial("tcp", ln.Addr().String(), cliTLS)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
				t.Fatal(err)
			}
			b, err := json.Marshal(Hello{Volume: "vol", From: tc.helloFrom, Epoch: 1})
			if err != nil {
				t.Fatal(err)
			}
			// The write may already fail when the secondary hung up.
			_, _ = c.Write(AppendFrame(nil, Header{Type: FrameHello, Epoch: 1}, b))
			var hdr [headerSize]byte
			h, p, err := ReadFrame(c, hdr[:], nil)
			if tc.drop {
				if err == nil {
					t.Fatalf("got a %s frame from an unauthorized connection", h.Type)
				}
				return
			}
			if err != nil {
				t.Fatalf("hello ack: %v", err)
			}
			var ack HelloAck
			if err := json.Unmarshal(p, &ack); err != nil {
				t.Fatal(err)
			}
			if h.Type != FrameHelloAck || ack.Status != tc.want {
				t.Fatalf("got %s %s (%s), want %s", h.Type, ack.Status, ack.Message, tc.want)
			}
		})
	}
}
