package daemon

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/apierr"
	"github.com/tandemhci/tandem/internal/membership"
	"github.com/tandemhci/tandem/internal/pki"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

func (d *Daemon) roleName() string {
	if d.cfg.Role == "witness" {
		return "witness"
	}
	return "data"
}

// nodeIPs are the addresses put into the node certificate: peers and
// dragonboat dial nodes by IP and verify it.
func (d *Daemon) nodeIPs() []net.IP {
	seen := map[string]bool{}
	var ips []net.IP
	for _, a := range []string{d.cfg.BackendAddr, d.cfg.RaftAddr, d.cfg.AdminAddr, d.cfg.ReplicationAddr, d.cfg.NBDAddr} {
		host, _, err := net.SplitHostPort(a)
		if err != nil {
			continue
		}
		ip := net.ParseIP(host)
		if ip == nil || ip.IsUnspecified() || seen[ip.String()] {
			continue
		}
		seen[ip.String()] = true
		ips = append(ips, ip)
	}
	return ips
}

func (d *Daemon) selfRecord() consensus.NodeRecord {
	return consensus.NodeRecord{
		Name:            d.cfg.NodeName,
		Role:            d.roleName(),
		Vote:            "voter",
		BackendAddr:     d.cfg.BackendAddr,
		RaftAddr:        d.cfg.RaftAddr,
		AdminAddr:       d.cfg.AdminAddr,
		ReplicationAddr: d.cfg.ReplicationAddr,
		NBDAddr:         d.cfg.NBDAddr,
	}
}

// abortInitLocked undoes a create or join that failed before the identity
// was written, so the node can try again from scratch.
func (d *Daemon) abortInitLocked() {
	if d.peers != nil {
		d.peers.close()
		d.peers = nil
	}
	if d.host != nil {
		d.host.Close()
	}
	d.host, d.meta, d.id, d.tls = nil, nil, nil, nil
	for _, p := range []string{d.lay.raftDir(), d.lay.tlsDir(), d.lay.adminDir(), d.lay.identity()} {
		_ = os.RemoveAll(p)
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (d *Daemon) create(ctx context.Context, name string) error {
	if !membership.ValidName(name) {
		return status.Errorf(codes.InvalidArgument, "cluster name %q: use 1-63 lowercase letters, digits and '-', starting with a letter or digit", name)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.id != nil {
		return status.Errorf(codes.AlreadyExists, "this node is already in cluster %q", d.id.ClusterName)
	}
	now := time.Now()
	ca, err := pki.NewCA(name, now)
	if err != nil {
		return status.Errorf(codes.Internal, "create CA: %v", err)
	}
	m, err := d.issueNodeMaterial(ca, now)
	if err != nil {
		return status.Errorf(codes.Internal, "%v", err)
	}
	adminTok, err := pki.NewAdminToken()
	if err != nil {
		return status.Errorf(codes.Internal, "admin token: %v", err)
	}
	verifier, err := pki.AdminTokenVerifier(adminTok)
	if err != nil {
		return status.Errorf(codes.Internal, "admin token: %v", err)
	}
	d.abortInitLocked() // leftovers of an earlier failed attempt
	if err := d.lay.saveTLS(m); err != nil {
		return status.Errorf(codes.Internal, "%v", err)
	}
	if err := d.writeAdminCredentials(ca, adminTok, now); err != nil {
		d.abortInitLocked()
		return status.Errorf(codes.Internal, "%v", err)
	}
	fp := ca.Fingerprint()
	id := &identity{ClusterName: name, ClusterID: randomHex(16), NodeName: d.cfg.NodeName, ReplicaID: 1, Role: d.roleName()}
	d.id = id
	if err := d.startClusterLocked(ctx, map[uint64]string{1: d.cfg.RaftAddr}, false); err != nil {
		d.abortInitLocked()
		return status.Errorf(codes.Internal, "start raft: %v", err)
	}
	self := d.selfRecord()
	self.ReplicaID = 1
	bctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	cr := consensus.ClusterRecord{Name: name, ID: id.ClusterID, CreatedAt: now.UTC(), CAFingerprint: hex.EncodeToString(fp[:]), AdminTokenVerifiers: []string{hex.EncodeToString(verifier[:])}}
	if err := d.meta.Bootstrap(bctx, cr, self); err != nil {
		d.abortInitLocked()
		return status.Errorf(codes.Internal, "record cluster: %v", err)
	}
	if err := saveIdentity(d.lay, id); err != nil {
		d.abortInitLocked()
		return status.Errorf(codes.Internal, "%v", err)
	}
	if err := d.startTLSServersLocked(); err != nil {
		return status.Errorf(codes.Internal, "%v", err)
	}
	d.log.Info("cluster created", "cluster", name, "id", id.ClusterID, "credentials", d.lay.adminDir())
	return nil
}

// issueNodeMaterial makes this node's key and certificate, signed by ca.
func (d *Daemon) issueNodeMaterial(ca *pki.CA, now time.Time) (*tlsMaterial, error) {
	key, err := pki.NewKey()
	if err != nil {
		return nil, fmt.Errorf("node key: %w", err)
	}
	csr, err := pki.NewCSR(key, d.cfg.NodeName)
	if err != nil {
		return nil, fmt.Errorf("node CSR: %w", err)
	}
	cert, err := ca.SignNode(csr, d.cfg.NodeName, d.nodeIPs(), now)
	if err != nil {
		return nil, fmt.Errorf("node certificate: %w", err)
	}
	caKey, err := ca.KeyPEM()
	if err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	return &tlsMaterial{caCert: ca.CertPEM(), caKey: caKey, cert: cert, key: key}, nil
}

func (d *Daemon) writeAdminCredentials(ca *pki.CA, token string, now time.Time) error {
	cert, key, err := ca.IssueAdmin("admin@"+d.cfg.NodeName, now)
	if err != nil {
		return fmt.Errorf("admin certificate: %w", err)
	}
	return d.lay.saveAdmin(adminCredentials{caCert: ca.CertPEM(), cert: cert, key: key, token: token, endpoint: d.cfg.AdminAddr})
}

// join runs on the joining node: it asks a member to admit it, then starts
// its Raft replica and confirms membership through the shard.
func (d *Daemon) join(ctx context.Context, addr, token string) (*identity, error) {
	tok, err := pki.ParseJoinToken(token)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "address %q: want host:port of a member's backend address", addr)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.id != nil {
		return nil, status.Errorf(codes.AlreadyExists, "this node is already in cluster %q", d.id.ClusterName)
	}
	key, err := pki.NewKey()
	if err != nil {
		return nil, status.Errorf(codes.Internal, "node key: %v", err)
	}
	csr, err := pki.NewCSR(key, d.cfg.NodeName)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "node CSR: %v", err)
	}
	// The token carries the CA fingerprint, so we talk only to the cluster
	// the operator meant, before we have its CA.
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(pki.PinnedTLS(tok.CAFingerprint))))
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "dial %s: %v", addr, err)
	}
	defer conn.Close()
	jctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	role := tandemv1.NodeRole_NODE_ROLE_DATA
	if d.roleName() == "witness" {
		role = tandemv1.NodeRole_NODE_ROLE_WITNESS
	}
	resp, err := tandemv1.NewPeerClient(conn).Join(jctx, &tandemv1.PeerJoinRequest{
		Token: token, NodeName: d.cfg.NodeName, Role: role,
		BackendAddr: d.cfg.BackendAddr, RaftAddr: d.cfg.RaftAddr, AdminAddr: d.cfg.AdminAddr, CsrPem: csr,
		ReplicationAddr: d.cfg.ReplicationAddr, NbdAddr: d.cfg.NBDAddr,
	}, grpc.WaitForReady(true))
	if err != nil {
		st := status.Convert(err)
		code := st.Code()
		if code == codes.Unavailable || code == codes.DeadlineExceeded {
			return nil, status.Errorf(codes.Unavailable, "cannot reach a cluster member at %s: %s", addr, st.Message())
		}
		return nil, status.Errorf(code, "join refused by %s: %s", addr, st.Message())
	}
	fp, err := pki.CertFingerprint(resp.CaPem)
	if err != nil || fp != tok.CAFingerprint {
		return nil, status.Errorf(codes.PermissionDenied, "member at %s sent a CA that does not match the token", addr)
	}
	ca, err := pki.LoadCA(resp.CaPem, resp.CaKeyPem)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "cluster CA from %s: %v", addr, err)
	}
	d.abortInitLocked()
	if err := d.lay.saveTLS(&tlsMaterial{caCert: resp.CaPem, caKey: resp.CaKeyPem, cert: resp.CertPem, key: key}); err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	if err := d.writeAdminCredentials(ca, resp.AdminToken, time.Now()); err != nil {
		d.abortInitLocked()
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	id := &identity{ClusterName: resp.ClusterName, ClusterID: resp.ClusterId, NodeName: d.cfg.NodeName, ReplicaID: resp.ReplicaId, Role: d.roleName()}
	d.id = id
	if err := d.startClusterLocked(ctx, nil, true); err != nil {
		d.abortInitLocked()
		return nil, status.Errorf(codes.Internal, "start raft replica %d: %v (the cluster lists this node as joining; remove it with 'tandem node remove %s' before retrying)", resp.ReplicaId, err, d.cfg.NodeName)
	}
	// Committing our own membership proves we caught up and can reach quorum.
	mctx, cancel2 := context.WithTimeout(ctx, 30*time.Second)
	defer cancel2()
	if _, err := d.meta.SetNodeState(mctx, d.cfg.NodeName, consensus.NodeMember); err != nil {
		d.abortInitLocked()
		return nil, status.Errorf(codes.Unavailable, "joined the Raft group but could not confirm membership: %v (remove it with 'tandem node remove %s' before retrying)", err, d.cfg.NodeName)
	}
	if err := saveIdentity(d.lay, id); err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	if err := d.startTLSServersLocked(); err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	d.log.Info("joined cluster", "cluster", id.ClusterName, "replica", id.ReplicaID, "via", addr)
	return id, nil
}

// requireQuorum refuses mutations when no majority is reachable.
func (d *Daemon) requireQuorum(ctx context.Context) error {
	_, meta, _ := d.cluster()
	if meta == nil {
		return status.Error(codes.FailedPrecondition, "this node is not in a cluster")
	}
	qctx, cancel := context.WithTimeout(ctx, d.quorumTimeout())
	defer cancel()
	if err := meta.Host().CheckQuorum(qctx, consensus.MetaShardID); err != nil {
		return metaError(err)
	}
	return nil
}

// quorumTimeout covers one election after a leader loss, with room to spare.
func (d *Daemon) quorumTimeout() time.Duration {
	r := d.cfg.Raft
	t := time.Duration(r.RTTMillisecond*r.ElectionRTT*8) * time.Millisecond
	if t < 1500*time.Millisecond {
		t = 1500 * time.Millisecond
	}
	return t
}

// metaError maps consensus errors to API status codes (apierr.FromMeta).
func metaError(err error) error { return apierr.FromMeta(err) }
