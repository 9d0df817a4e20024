package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/tandemhci/tandem/blockstore/nbd"
	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/api"
	"github.com/tandemhci/tandem/internal/cluster"
	"github.com/tandemhci/tandem/internal/config"
	"github.com/tandemhci/tandem/internal/images"
	"github.com/tandemhci/tandem/internal/membership"
	"github.com/tandemhci/tandem/internal/metrics"
	"github.com/tandemhci/tandem/internal/nodedir"
	"github.com/tandemhci/tandem/internal/peers"
	"github.com/tandemhci/tandem/internal/pki"
	"github.com/tandemhci/tandem/internal/recovery"
	"github.com/tandemhci/tandem/internal/state"
	"github.com/tandemhci/tandem/internal/vmm"
	"github.com/tandemhci/tandem/internal/volume"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
	"github.com/tandemhci/tandem/replication"
)

// Daemon is one running tandemd.
type Daemon struct {
	cfg  config.Config
	log  *slog.Logger
	dir  nodedir.Dir
	mets *metrics.Metrics

	// st is the state shared with the subsystems split out of the daemon;
	// members is cluster membership, the first of them.
	st      *state.State
	members *membership.Manager
	clus    *cluster.Manager
	auth    *api.Auth
	// svc is the admin and peer gRPC services (internal/api), built in Run.
	svc *api.Services

	// Listeners are bound at startup so port conflicts fail fast, even
	// before the node belongs to a cluster and can serve TLS on them.
	unixLn, peerLn, adminLn, metricsLn net.Listener
	replLn, nbdLn, nbdUnixLn           net.Listener

	runCtx context.Context
	vols   *volume.Manager
	vms    *vmm.Manager
	imgs   *images.Manager
	ha     *recovery.Manager
	nbdSrv *nbd.Server

	unixSrv *grpc.Server
	health  *health.Server

	// hs is what TLS handshakes read: they must not take mu, which create
	// and join hold while Raft and peers dial in and out.
	hs handshakeState
	// conns are the connections the TLS listeners (backend, admin, NBD)
	// accepted, replConns the replication listener's, by peer certificate,
	// so a revocation cuts those already open (watchRevocations); a node
	// told of its removal cuts every replication connection (onRemoval).
	conns, replConns *pki.Conns
	// removedNotices rate-limits the notices to removed nodes that knock
	// (noticeRemovedPeer).
	removedNotices noticeLimiter

	mu       sync.Mutex // guards the fields below and serialises create/join
	id       *membership.Identity
	stopped  *stopped // set while the node does not run in its cluster (rejoin.go)
	tls      *nodedir.TLS
	host     *consensus.Host
	meta     *consensus.Meta
	peerSrv  *grpc.Server
	adminSrv *grpc.Server
	peers    *peers.Pool

	serveErr chan error
	ready    chan struct{} // closed once Run serves (Ready)
}

// StartupError is a configuration or environment problem found before
// serving; main prints it as one line and exits non-zero.
type StartupError struct{ Msg string }

func (e *StartupError) Error() string { return e.Msg }

func startupErr(format string, args ...any) error {
	return &StartupError{Msg: fmt.Sprintf(format, args...)}
}

// New checks the environment and binds every listener.
func New(cfg config.Config, log *slog.Logger) (*Daemon, error) {
	if err := cfg.Validate(); err != nil {
		return nil, startupErr("config invalid: %v", oneLine(err))
	}
	d := &Daemon{cfg: cfg, log: log, dir: nodedir.Dir(cfg.DataDir), serveErr: make(chan error, 4), ready: make(chan struct{}), conns: pki.NewConns(), replConns: pki.NewConns()}
	if err := d.dir.Check(); err != nil {
		return nil, startupErr("%v", err)
	}
	id, err := d.dir.LoadIdentity()
	if err != nil {
		return nil, startupErr("%v", err)
	}
	if id != nil && id.NodeName != cfg.NodeName {
		return nil, startupErr("node_name %q does not match %q recorded in %s; a node cannot be renamed", cfg.NodeName, id.NodeName, d.dir.Identity())
	}
	d.id = (*membership.Identity)(id)
	d.st = d.newState()
	d.members = d.newMembers()
	d.auth = api.NewAuth(d.st)
	d.clus = cluster.New(cluster.Config{State: d.st, Probe: d.probe, QuorumTimeout: d.quorumTimeout(), VolumeWarnings: d.volumeWarnings,
		CheckSetting: d.checkSetting})
	if err := d.bind(); err != nil {
		d.closeListeners()
		return nil, err
	}
	d.mets = metrics.New(metrics.Config{Node: cfg.NodeName, Member: d.member, Meta: func() metrics.Meta { return d.st.Meta() }})
	return d, nil
}

func oneLine(err error) string {
	s := err.Error()
	out := make([]rune, 0, len(s))
	for _, r := range s {
		if r == '\n' {
			out = append(out, ';', ' ')
			continue
		}
		out = append(out, r)
	}
	return string(out)
}

func (d *Daemon) bind() error {
	sock := d.dir.Socket()
	if c, err := net.DialTimeout("unix", sock, 200*time.Millisecond); err == nil {
		c.Close()
		return startupErr("another tandemd is already serving %s", sock)
	}
	_ = os.Remove(sock)
	var err error
	if d.unixLn, err = net.Listen("unix", sock); err != nil {
		return startupErr("admin socket %s: %v", sock, err)
	}
	if err := os.Chmod(sock, 0o600); err != nil {
		return startupErr("admin socket %s: %v", sock, err)
	}
	// Calls over the socket without a token act as the node's admin.
	d.unixLn = api.LocalOnly(d.unixLn, d.log)
	listen := func(what, addr string) (net.Listener, error) {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, startupErr("%s address %s: %v", what, addr, portReason(err))
		}
		return ln, nil
	}
	if d.peerLn, err = listen("backend", d.cfg.BackendAddr); err != nil {
		return err
	}
	if d.adminLn, err = listen("admin", d.cfg.AdminAddr); err != nil {
		return err
	}
	// The Raft port belongs to dragonboat, which binds it later; probe it now.
	rl, err := listen("raft", d.cfg.RaftAddr)
	if err != nil {
		return err
	}
	rl.Close()
	if d.replLn, err = listen("replication", d.cfg.ReplicationAddr); err != nil {
		return err
	}
	if d.cfg.NBDAddr != "" {
		if d.nbdLn, err = listen("nbd", d.cfg.NBDAddr); err != nil {
			return err
		}
	}
	_ = os.Remove(d.dir.NBDSocket())
	if d.nbdUnixLn, err = net.Listen("unix", d.dir.NBDSocket()); err != nil {
		return startupErr("nbd socket %s: %v", d.dir.NBDSocket(), err)
	}
	// The socket serves every volume without authentication: root only
	// (QEMU runs as root, see docs/design.md §7). The data directory is
	// 0700, so nobody else reaches it between listen and chmod either.
	if err := os.Chmod(d.dir.NBDSocket(), 0o600); err != nil {
		return startupErr("nbd socket %s: %v", d.dir.NBDSocket(), err)
	}
	if m := d.cfg.MetricsAddr; m != "" && m != "off" {
		if d.metricsLn, err = listen("metrics", m); err != nil {
			return err
		}
	}
	return nil
}

func portReason(err error) string {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		msg := op.Err.Error()
		if se, ok := op.Err.(*os.SyscallError); ok {
			msg = se.Err.Error()
		}
		if msg == "address already in use" {
			return "port already in use (is another tandemd running?)"
		}
		return msg
	}
	return err.Error()
}

func (d *Daemon) closeListeners() {
	for _, l := range []net.Listener{d.unixLn, d.peerLn, d.adminLn, d.metricsLn, d.replLn, d.nbdLn, d.nbdUnixLn} {
		if l != nil {
			l.Close()
		}
	}
}

// Run serves until ctx ends, then shuts down gracefully.
func (d *Daemon) Run(ctx context.Context) error {
	d.runCtx = ctx
	d.vols = d.newVolumes(ctx)
	d.imgs = d.newImages()
	d.vms = d.newVMs(ctx)
	d.ha = d.newRecovery()
	certs := d.newRenewer()
	d.svc = api.New(api.Config{
		State: d.st, Cluster: d.clus, Members: d.members, Volumes: d.vols, VMs: d.vms, HA: d.ha, Certs: certs, Images: d.imgs,
		Node: api.Node{SetExpectedVotes: d.setExpectedVotes, CredentialsDir: d.dir.AdminDir(), ReplicaID: d.replicaID},
	})
	d.nbdSrv = d.newNBDServer()
	go func() { d.serveErr <- serveErr("nbd", d.nbdSrv.Serve(ctx, d.nbdUnixLn)) }()
	if d.nbdLn != nil {
		go func() { d.serveErr <- serveErr("nbd", d.nbdSrv.ServeTLS(ctx, d.conns.Listener(d.nbdLn))) }()
	}
	d.health = health.NewServer()
	d.unixSrv = grpc.NewServer(grpc.Creds(insecure.NewCredentials()), grpc.ChainUnaryInterceptor(d.auth.AdminUnary(false)), grpc.ChainStreamInterceptor(d.auth.AdminStream(false)))
	d.registerAdmin(d.unixSrv)
	go func() { d.serveErr <- serveErr("admin socket", d.unixSrv.Serve(d.unixLn)) }()

	var httpSrv *http.Server
	if d.metricsLn != nil {
		mux := http.NewServeMux()
		mux.Handle("/metrics", d.mets.Handler())
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
		if d.cfg.Pprof {
			mux.HandleFunc("/debug/pprof/", pprof.Index)
			mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
			mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
			mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
			mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		}
		httpSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() { d.serveErr <- serveErr("metrics", httpSrv.Serve(d.metricsLn)) }()
	}

	var expired string
	if d.id != nil {
		var err error
		if expired, err = d.expiredReason(time.Now()); err != nil {
			d.shutdown(httpSrv)
			return startupErr("rejoin cluster %q: %v", d.id.ClusterName, oneLine(err))
		}
	}
	switch {
	case expired != "":
		// Its data stays; nothing of the cluster starts until a rejoin.
		d.mu.Lock()
		d.stopped = &stopped{reason: expired}
		d.mu.Unlock()
		d.log.Error("tandemd started STOPPED: "+expired, "node", d.cfg.NodeName, "cluster", d.id.ClusterName, "replica", d.id.ReplicaID, "socket", d.dir.Socket())
	case d.id != nil:
		if err := d.startCluster(ctx); err != nil {
			d.shutdown(httpSrv)
			return startupErr("rejoin cluster %q: %v", d.id.ClusterName, oneLine(err))
		}
		d.log.Info("tandemd started", "node", d.cfg.NodeName, "cluster", d.id.ClusterName, "replica", d.id.ReplicaID, "admin", d.cfg.AdminAddr, "backend", d.cfg.BackendAddr)
		d.vols.Restore(ctx)
	default:
		d.log.Info("tandemd started; not in a cluster yet (use 'tandem cluster create' or 'tandem cluster join')", "node", d.cfg.NodeName, "socket", d.dir.Socket())
	}
	d.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	close(d.ready)
	go d.vms.Run(ctx)
	go d.imgs.Run(ctx)
	go d.ha.Run(ctx)
	go d.vols.SweepDeleted(ctx)
	go certs.Run(ctx)
	go d.watchRevocations(ctx)
	go d.onRemoval(ctx)
	go d.recordVersion(ctx)

	var err error
	select {
	case <-ctx.Done():
		d.log.Info("shutting down", "reason", context.Cause(ctx))
	case err = <-d.serveErr:
		d.log.Error("server failed", "err", err)
	}
	d.shutdown(httpSrv)
	return err
}

func serveErr(what string, err error) error {
	if err == nil || errors.Is(err, grpc.ErrServerStopped) || errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return fmt.Errorf("%s: %w", what, err)
}

func (d *Daemon) shutdown(httpSrv *http.Server) {
	if d.health != nil {
		d.health.Shutdown()
	}
	d.mu.Lock()
	servers := []*grpc.Server{d.unixSrv, d.adminSrv, d.peerSrv}
	d.mu.Unlock()
	var wg sync.WaitGroup
	for _, s := range servers {
		if s == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			stopGracefully(s, 5*time.Second)
		}()
	}
	wg.Wait()
	if d.nbdSrv != nil {
		d.nbdSrv.Close()
	}
	if d.vms != nil {
		d.vms.Close()
	}
	if d.vols != nil {
		d.vols.CloseAll()
	}
	if httpSrv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = httpSrv.Shutdown(sctx)
		cancel()
	}
	d.mu.Lock()
	d.peers.Close()
	if d.host != nil {
		d.host.Close()
		d.host = nil
	}
	d.mu.Unlock()
	d.closeListeners()
	_ = os.Remove(d.dir.Socket())
	_ = os.Remove(d.dir.NBDSocket())
}

func stopGracefully(s *grpc.Server, timeout time.Duration) {
	done := make(chan struct{})
	go func() { s.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
		s.Stop()
	}
}

// startCluster brings up Raft and the TLS servers for an initialised node.
// Callers hold no lock; it takes d.mu.
func (d *Daemon) startCluster(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.startClusterLocked(ctx, nil, false); err != nil {
		return err
	}
	return d.startTLSServersLocked()
}

func (d *Daemon) hostConfig() consensus.HostConfig {
	return consensus.HostConfig{
		Dir:                  d.dir.RaftDir(),
		RaftAddr:             d.cfg.RaftAddr,
		RTTMillisecond:       d.cfg.Raft.RTTMillisecond,
		VolumeRTTMillisecond: d.cfg.Raft.VolumeRTTMillisecond,
		ElectionRTT:          d.cfg.Raft.ElectionRTT,
		HeartbeatRTT:         d.cfg.Raft.HeartbeatRTT,
		SnapshotEntries:      d.cfg.Raft.SnapshotEntries,
		TLS:                  &consensus.RaftTLS{Server: d.raftServerTLS, Client: d.raftClientTLS},
		Logger:               d.log,
		OnPropose:            d.mets.ObservePropose,
		// Set by the test harness (testcluster.CheckMetaReadersEnv).
		CheckMetaReaders: os.Getenv("TANDEM_CHECK_META_READERS") == "1",
	}
}

// startClusterLocked starts the Raft host and metadata replica. members and
// join are used only the first time this replica starts.
func (d *Daemon) startClusterLocked(ctx context.Context, members map[uint64]string, join bool) error {
	m, err := d.dir.LoadTLS()
	if err != nil {
		return err
	}
	d.tls = m
	d.hs.tls.Store(m)
	if err := d.syncLibvirtPKI(ctx, m); err != nil {
		return fmt.Errorf("libvirt TLS files: %w", err)
	}
	host, err := consensus.NewHost(d.hostConfig())
	if err != nil {
		return err
	}
	replica := d.id.ReplicaID
	meta := consensus.NewMeta(host, d.cfg.NodeName)
	if err := meta.Start(replica, members, join, consensus.Voter); err != nil {
		host.Close()
		return err
	}
	d.host, d.meta = host, meta
	d.hs.meta.Store(meta)
	d.peers = peers.New(peers.Config{ClientTLS: d.clientTLS, Log: d.log.With("component", "peers")})
	return nil
}

func (d *Daemon) startTLSServersLocked() error {
	// Checked now so a bad certificate fails the start, not each handshake.
	if _, err := d.serverTLS(); err != nil {
		return fmt.Errorf("server TLS: %w", err)
	}
	srvTLS := d.dynamicServerTLS(d.conns, "h2")
	d.peerSrv = grpc.NewServer(grpc.Creds(credentials.NewTLS(srvTLS)), grpc.ChainUnaryInterceptor(d.auth.PeerUnary()), grpc.ChainStreamInterceptor(d.auth.PeerStream()))
	d.svc.RegisterPeer(d.peerSrv)
	hp := health.NewServer()
	healthpb.RegisterHealthServer(d.peerSrv, hp)
	go func() { d.serveErr <- serveErr("backend", d.peerSrv.Serve(d.conns.Listener(d.peerLn))) }()

	sec := replication.NewSecondary(d.log.With("component", "replication"), d.vols.Target, api.ReplicationPeer)
	// A replication connection may leave TLS right after its HelloAck
	// (replication.data_stream=plain; replication/plain.go). TLS 1.3
	// session tickets stay on: the only post-handshake message a Go server
	// sends unasked, they go out during its handshake, before the HelloAck,
	// so no TLS record can follow the switch (the primary checks).
	replTLS := d.dynamicServerTLS(d.replConns)
	go func() {
		d.serveErr <- serveErr("replication", sec.Serve(d.runCtx, tls.NewListener(d.replConns.Listener(d.replLn), replTLS)))
	}()

	d.adminSrv = grpc.NewServer(grpc.Creds(credentials.NewTLS(d.dynamicServerTLS(d.conns, "h2"))), grpc.ChainUnaryInterceptor(d.auth.AdminUnary(true)), grpc.ChainStreamInterceptor(d.auth.AdminStream(true)))
	d.registerAdmin(d.adminSrv)
	go func() { d.serveErr <- serveErr("admin", d.adminSrv.Serve(d.conns.Listener(d.adminLn))) }()
	return nil
}

func (d *Daemon) registerAdmin(s *grpc.Server) {
	d.svc.RegisterAdmin(s)
	healthpb.RegisterHealthServer(s, d.health)
	reflection.Register(s)
}

// pool is the peer pool, nil while the node is in no cluster (a nil
// *peers.Pool answers so).
func (d *Daemon) pool() *peers.Pool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.peers
}

// probe pings members for the node table (cluster.Config.Probe).
func (d *Daemon) probe(ctx context.Context, addrs []string, timeout time.Duration) map[string]cluster.Probe {
	return d.pool().Probe(ctx, d.cfg.NodeName, addrs, timeout)
}

// callNode is peers.Pool.Call on the current pool.
func (d *Daemon) callNode(ctx context.Context, ms *consensus.MetaState, node string, timeout time.Duration, f func(context.Context, tandemv1.PeerClient) error) error {
	return d.pool().Call(ctx, ms, node, timeout, f)
}

// volumeWarnings is cluster.Config.VolumeWarnings: none before Run.
func (d *Daemon) volumeWarnings(ctx context.Context, ms *consensus.MetaState) []string {
	if v := d.volumes(); v != nil {
		return v.Warnings(ctx, ms)
	}
	return nil
}

// volumes returns the volume manager (nil before Run).
func (d *Daemon) volumes() *volume.Manager {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.id == nil {
		return nil
	}
	return d.vols
}

// member is this node's metadata replica ID, ok once it has an identity
// (metrics.Config.Member).
func (d *Daemon) member() (uint64, bool) {
	if id, _, _ := d.cluster(); id != nil {
		return id.ReplicaID, true
	}
	return 0, false
}

// replicaID is this node's metadata replica ID, 0 while it is in no
// cluster.
func (d *Daemon) replicaID() uint64 {
	if id, m, _ := d.cluster(); id != nil && m != nil {
		return id.ReplicaID
	}
	return 0
}

func (d *Daemon) peerClient(addr string) (tandemv1.PeerClient, error) {
	return d.pool().Client(addr)
}

// cluster returns the running consensus handles, or nil when the node is not
// in a cluster.
func (d *Daemon) cluster() (*membership.Identity, *consensus.Meta, *nodedir.TLS) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.id, d.meta, d.tls
}

// clientTLS is the node's client identity for dialing peers. gRPC keeps
// a connection's configuration for all its reconnects, so this one reads
// the node's current certificate and CA on every handshake: a connection
// made before a renewal or a CA rotation still reconnects afterwards.
func (d *Daemon) clientTLS() (*tls.Config, error) {
	if _, err := d.currentClientTLS(); err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// Verification is VerifyConnection's, as in pki.ClientTLS.
		InsecureSkipVerify: true,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			cfg, err := d.currentClientTLS()
			if err != nil {
				return nil, err
			}
			return &cfg.Certificates[0], nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			cfg, err := d.currentClientTLS()
			if err != nil {
				return err
			}
			return cfg.VerifyConnection(cs)
		},
	}, nil
}
