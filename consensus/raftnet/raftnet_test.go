package raftnet

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/lni/dragonboat/v4/config"
	pb "github.com/lni/dragonboat/v4/raftpb"
)

// testCA issues leaf certificates for loopback tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

func (ca *testCA) leaf(t *testing.T, cn string, serial int64) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// received collects what a transport handed to dragonboat.
type received struct {
	mu      sync.Mutex
	batches []pb.MessageBatch
	chunks  []pb.Chunk
	got     chan struct{}
}

func (r *received) onMessages(b pb.MessageBatch) {
	r.mu.Lock()
	r.batches = append(r.batches, b)
	r.mu.Unlock()
	r.got <- struct{}{}
}

func (r *received) onChunk(c pb.Chunk) bool {
	r.mu.Lock()
	r.chunks = append(r.chunks, c)
	r.mu.Unlock()
	r.got <- struct{}{}
	return c.ChunkId != 99 // chunk 99 is refused, which must close the connection
}

type pair struct {
	srv, cli *Transport
	rcv      *received
	addr     string
}

// newPair starts a server transport that accepts client certificates for
// which allow returns nil, and a client transport presenting clientCert.
func newPair(t *testing.T, ca *testCA, clientCert tls.Certificate, allow func(*x509.Certificate) error) *pair {
	t.Helper()
	srvCert := ca.leaf(t, "server", 2)
	rcv := &received{got: make(chan struct{}, 16)}
	serverTLS := func() (*tls.Config, error) {
		return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{srvCert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.pool,
			VerifyConnection: func(cs tls.ConnectionState) error { return allow(cs.PeerCertificates[0]) }}, nil
	}
	clientTLS := func() (*tls.Config, error) {
		return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{clientCert}, RootCAs: ca.pool, ServerName: "127.0.0.1"}, nil
	}
	f := &Factory{Config: Config{ListenAddr: "127.0.0.1:0", ServerTLS: serverTLS, ClientTLS: clientTLS, Log: slog.New(slog.DiscardHandler)}}
	srv := f.Create(nilNHC, rcv.onMessages, rcv.onChunk).(*Transport)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	cli := f.Create(nilNHC, func(pb.MessageBatch) {}, func(pb.Chunk) bool { return true }).(*Transport)
	return &pair{srv: srv, cli: cli, rcv: rcv, addr: srv.ln.Addr().String()}
}

func (p *pair) wait(t *testing.T) {
	t.Helper()
	select {
	case <-p.rcv.got:
	case <-time.After(30 * time.Second):
		t.Fatal("nothing delivered")
	}
}

func TestMessagesAndChunksDelivered(t *testing.T) {
	ca := newTestCA(t)
	p := newPair(t, ca, ca.leaf(t, "n2", 3), func(*x509.Certificate) error { return nil })
	ctx := context.Background()
	c, err := p.cli.GetConnection(ctx, p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	big := bytes.Repeat([]byte{7}, 3<<20) // over one bufio buffer
	for i := range 3 {
		b := pb.MessageBatch{DeploymentId: 5, SourceAddress: "n2:7401", Requests: []pb.Message{{Type: pb.Heartbeat, ShardID: 1, From: 2, To: 1, Term: uint64(i)}}}
		if i == 2 {
			b.Requests[0].Entries = []pb.Entry{{Index: 9, Term: 2, Cmd: big}}
		}
		if err := c.SendMessageBatch(b); err != nil {
			t.Fatal(err)
		}
		p.wait(t)
	}
	p.rcv.mu.Lock()
	if len(p.rcv.batches) != 3 || p.rcv.batches[1].Requests[0].Term != 1 || p.rcv.batches[0].SourceAddress != "n2:7401" ||
		!bytes.Equal(p.rcv.batches[2].Requests[0].Entries[0].Cmd, big) {
		t.Fatalf("batches not delivered intact: %d", len(p.rcv.batches))
	}
	p.rcv.mu.Unlock()

	sc, err := p.cli.GetSnapshotConnection(ctx, p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	if err := sc.SendChunk(pb.Chunk{ShardID: 1, ChunkId: 0, ChunkCount: 2, Data: []byte("abc")}); err != nil {
		t.Fatal(err)
	}
	p.wait(t)
	// A chunk dragonboat refuses closes the connection: later sends fail.
	if err := sc.SendChunk(pb.Chunk{ShardID: 1, ChunkId: 99}); err != nil {
		t.Fatal(err)
	}
	p.wait(t)
	var sendErr error
	for range 50 {
		if sendErr = sc.SendChunk(pb.Chunk{ShardID: 1, ChunkId: 1, Data: []byte("x")}); sendErr != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if sendErr == nil {
		t.Fatal("connection kept open after a refused chunk")
	}
	p.rcv.mu.Lock()
	defer p.rcv.mu.Unlock()
	if len(p.rcv.chunks) != 2 || string(p.rcv.chunks[0].Data) != "abc" {
		t.Fatalf("chunks: %+v", p.rcv.chunks)
	}
}

// A client the server's check refuses delivers nothing, however it tries.
func TestRefusedPeerDeliversNothing(t *testing.T) {
	ca := newTestCA(t)
	p := newPair(t, ca, ca.leaf(t, "n4", 4), func(c *x509.Certificate) error {
		if c.Subject.CommonName == "n4" {
			return errors.New("revoked")
		}
		return nil
	})
	c, err := p.cli.GetConnection(context.Background(), p.addr)
	if err == nil {
		// TLS 1.3: the client may finish before the server refuses; the
		// frames then go nowhere.
		for range 20 {
			if c.SendMessageBatch(pb.MessageBatch{Requests: []pb.Message{{Type: pb.Heartbeat}}}) != nil {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		c.Close()
	}
	select {
	case <-p.rcv.got:
		t.Fatal("a refused peer's batch reached dragonboat")
	case <-time.After(300 * time.Millisecond):
	}
}

// Bad streams close their connection; the transport keeps serving others.
func TestBadStreamsClosed(t *testing.T) {
	ca := newTestCA(t)
	cert := ca.leaf(t, "n2", 3)
	p := newPair(t, ca, cert, func(*x509.Certificate) error { return nil })
	frame := func(n uint32) []byte {
		var h [4]byte
		binary.BigEndian.PutUint32(h[:], n)
		return h[:]
	}
	for name, stream := range map[string][]byte{
		"wrong magic":     []byte("HTTP/1.1 GET /"),
		"wrong version":   append([]byte(magic), 9, kindMessages),
		"unknown kind":    append([]byte(magic), version, 7),
		"oversized frame": append(append([]byte(magic), version, kindMessages), frame(MaxFrame+1)...),
		"garbage batch":   append(append(append([]byte(magic), version, kindMessages), frame(3)...), 0xff, 0xff, 0xff),
	} {
		conn, err := tls.Dial("tcp", p.addr, &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: ca.pool, ServerName: "127.0.0.1"})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if _, err := conn.Write(stream); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		if _, err := conn.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("%s: connection not closed (%v)", name, err)
		}
		conn.Close()
	}
	// Still serving.
	c, err := p.cli.GetConnection(context.Background(), p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SendMessageBatch(pb.MessageBatch{Requests: []pb.Message{{Type: pb.Heartbeat}}}); err != nil {
		t.Fatal(err)
	}
	p.wait(t)
}

// nilNHC stands for the NodeHostConfig dragonboat passes, which the
// transport does not read.
var nilNHC = config.NodeHostConfig{}

// FuzzStream feeds arbitrary bytes to the receiving side's decoder: it
// returns an error or frames no bigger than announced, and never panics.
func FuzzStream(f *testing.F) {
	good, _ := (&pb.MessageBatch{Requests: []pb.Message{{Type: pb.Heartbeat, ShardID: 1}}}).Marshal()
	var h [4]byte
	binary.BigEndian.PutUint32(h[:], uint32(len(good)))
	f.Add(append(append(append([]byte(magic), version, kindMessages), h[:]...), good...))
	f.Add(append([]byte(magic), version, kindChunks, 0, 0, 0, 1, 0))
	f.Add([]byte("TDRT"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		kind, err := readPreamble(r)
		if err != nil {
			return
		}
		for {
			frame, err := readFrame(r)
			if err != nil {
				return
			}
			if len(frame) > len(data) {
				t.Fatalf("frame of %d bytes from %d bytes of input", len(frame), len(data))
			}
			if kind == kindMessages {
				_ = decode(&pb.MessageBatch{}, frame)
			} else {
				_ = decode(&pb.Chunk{}, frame)
			}
		}
	})
}

// A connection whose peer certificate is refused after its handshake (a
// node removed since) is closed by Recheck, on the side that accepted it
// and on the side that dialed it; a check that refuses nothing closes
// nothing.
func TestRecheckCutsRefusedConnections(t *testing.T) {
	ca := newTestCA(t)
	p := newPair(t, ca, ca.leaf(t, "n4", 4), func(*x509.Certificate) error { return nil })
	ctx := context.Background()
	hb := pb.MessageBatch{Requests: []pb.Message{{Type: pb.Heartbeat}}}
	refuse := func(cn string) func(*x509.Certificate) error {
		return func(c *x509.Certificate) error {
			if c.Subject.CommonName == cn {
				return errors.New("revoked")
			}
			return nil
		}
	}

	// Accepting side: the server cuts n4's connection.
	c, err := p.cli.GetConnection(ctx, p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SendMessageBatch(hb); err != nil {
		t.Fatal(err)
	}
	p.wait(t) // accepted and verified
	if n := p.srv.Recheck(func(*x509.Certificate) error { return nil }); n != 0 {
		t.Fatalf("nothing refused, yet %d cut", n)
	}
	if n := p.srv.Recheck(refuse("n4")); n != 1 {
		t.Fatalf("server cut %d connections, want 1", n)
	}
	// The client learns when its writes meet the closed socket; nothing
	// more is delivered meanwhile.
	for c.SendMessageBatch(hb) == nil {
		time.Sleep(5 * time.Millisecond)
	}
	p.rcv.mu.Lock()
	if len(p.rcv.batches) != 1 {
		t.Errorf("%d batches delivered, want only the one before the cut", len(p.rcv.batches))
	}
	p.rcv.mu.Unlock()

	c.Close()

	// Dialing side: the client cuts its connection to a refused server.
	c2, err := p.cli.GetConnection(ctx, p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if n := p.cli.Recheck(refuse("server")); n != 1 {
		t.Fatalf("client cut %d connections, want 1", n)
	}
	if err := c2.SendMessageBatch(hb); err == nil {
		t.Fatal("a cut connection still sends")
	}
	c2.Close()
	p.cli.mu.Lock()
	defer p.cli.mu.Unlock()
	if len(p.cli.dialed) != 0 {
		t.Errorf("%d dialed connections still tracked after Close", len(p.cli.dialed))
	}
}

// TestTwoHostsShareTheListener: two NodeHosts of one process on one
// Factory share its address; the first transport listens, and each message
// and chunk reaches the host whose shard it is, a batch for both split.
func TestTwoHostsShareTheListener(t *testing.T) {
	ca := newTestCA(t)
	srvCert, cliCert := ca.leaf(t, "server", 2), ca.leaf(t, "n2", 3)
	serverTLS := func() (*tls.Config, error) {
		return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{srvCert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.pool}, nil
	}
	clientTLS := func() (*tls.Config, error) {
		return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cliCert}, RootCAs: ca.pool, ServerName: "127.0.0.1"}, nil
	}
	cfg := Config{ListenAddr: "127.0.0.1:0", ServerTLS: serverTLS, ClientTLS: clientTLS, Log: slog.New(slog.DiscardHandler)}
	f := &Factory{Config: cfg, OnSecond: func(shard uint64) bool { return shard >= 100 }}
	first, second := &received{got: make(chan struct{}, 16)}, &received{got: make(chan struct{}, 16)}
	t1 := f.Create(nilNHC, first.onMessages, first.onChunk).(*Transport)
	t2 := f.Create(nilNHC, second.onMessages, second.onChunk).(*Transport)
	for _, tr := range []*Transport{t1, t2} {
		if err := tr.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tr.Close() })
	}
	if t2.ln != nil || t2.first != t1 {
		t.Fatal("the second transport listens too")
	}
	cli := (&Factory{Config: cfg}).Create(nilNHC, func(pb.MessageBatch) {}, func(pb.Chunk) bool { return true }).(*Transport)
	c, err := cli.GetConnection(t.Context(), t1.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	wait := func(r *received) {
		t.Helper()
		select {
		case <-r.got:
		case <-time.After(30 * time.Second):
			t.Fatal("nothing delivered")
		}
	}
	b := pb.MessageBatch{DeploymentId: 5, SourceAddress: "n2:7401", Requests: []pb.Message{
		{Type: pb.Heartbeat, ShardID: 1, From: 2, To: 1}, {Type: pb.Heartbeat, ShardID: 101, From: 2, To: 1}, {Type: pb.Heartbeat, ShardID: 2, From: 2, To: 1}}}
	if err := c.SendMessageBatch(b); err != nil {
		t.Fatal(err)
	}
	wait(first)
	wait(second)
	sc, err := cli.GetSnapshotConnection(t.Context(), t1.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	if err := sc.SendChunk(pb.Chunk{ShardID: 101, ChunkId: 0, ChunkCount: 1, Data: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	wait(second)
	shards := func(r *received) (out []uint64) {
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, b := range r.batches {
			if b.DeploymentId != 5 || b.SourceAddress != "n2:7401" {
				t.Errorf("batch header lost in the split: %+v", b)
			}
			for _, m := range b.Requests {
				out = append(out, m.ShardID)
			}
		}
		for _, c := range r.chunks {
			out = append(out, c.ShardID+1000)
		}
		return out
	}
	if got := shards(first); !slices.Equal(got, []uint64{1, 2}) {
		t.Errorf("first host got %v, want messages of shards 1 and 2", got)
	}
	if got := shards(second); !slices.Equal(got, []uint64{101, 1101}) {
		t.Errorf("second host got %v, want shard 101's message and chunk", got)
	}
	// Once the second host's transport closes (its engine stops next),
	// nothing more reaches it.
	t2.Close()
	if err := c.SendMessageBatch(pb.MessageBatch{DeploymentId: 5, SourceAddress: "n2:7401", Requests: []pb.Message{{Type: pb.Heartbeat, ShardID: 101, From: 2, To: 1}}}); err != nil {
		t.Fatal(err)
	}
	wait(first)
	if got := shards(second); len(got) != 2 {
		t.Errorf("a closed host got %v", got)
	}
}
