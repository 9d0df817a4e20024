package membership

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/pki"
	"github.com/tandemhci/tandem/internal/sealed"
	"github.com/tandemhci/tandem/internal/state"
	"github.com/tandemhci/tandem/internal/validate"
	"github.com/tandemhci/tandem/internal/version"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// Identity is what a node remembers about its cluster across restarts.
// It is written last when creating or joining, so its presence means the
// node finished initialising.
type Identity struct {
	ClusterName string `json:"cluster_name"`
	ClusterID   string `json:"cluster_id"`
	NodeName    string `json:"node_name"`
	ReplicaID   uint64 `json:"replica_id"`
	Role        string `json:"role"`
}

// Material is the node's TLS material, PEM encoded.
type Material struct {
	CACert, CAKey, Cert, Key []byte
}

// AdminCredentials are what the CLI needs to reach the admin API.
type AdminCredentials struct {
	CACert, Cert, Key []byte
	Token, Endpoint   string
}

// Init is the daemon's side of create and join: it persists the node's
// files and starts its Raft replica and servers, which are wiring.
// Create and Join hold the Locker for their whole run, so they are
// serialised with each other and with everything that reads the handles
// it guards; every other method is called with it held.
type Init interface {
	sync.Locker
	// ClusterLocked is the cluster this node is in, false when none.
	ClusterLocked() (string, bool)
	// ResetLocked undoes a create or join that failed before the identity
	// was written (or its leftovers), so the node can start afresh.
	ResetLocked()
	SaveTLSLocked(Material) error
	// SaveSecretLocked keeps the cluster secret (package sealed), 0600.
	SaveSecretLocked(secret []byte) error
	SaveAdminLocked(AdminCredentials) error
	// StartLocked adopts id and starts the Raft host and the metadata
	// replica: members seeds a new shard; join starts a replica that was
	// added to a running one. It returns the metadata client.
	StartLocked(ctx context.Context, id Identity, members map[uint64]string, join bool) (state.Meta, error)
	SaveIdentityLocked(Identity) error
	// ServeLocked starts the TLS servers (peer, admin, replication).
	ServeLocked() error
}

const (
	bootstrapTimeout = 20 * time.Second
	// joinTimeout bounds asking a member to admit us, then confirming the
	// membership through the shard.
	joinTimeout = 30 * time.Second
)

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// nodeIPs are the addresses put into the node certificate.
func nodeIPs(n state.Node) []net.IP {
	return certIPs(n.BackendAddr, n.RaftAddr, n.AdminAddr, n.ReplicationAddr, n.NBDAddr)
}

// certIPs are the distinct, specified IPs of host:port addresses: peers and
// dragonboat dial nodes by IP and verify it against the certificate.
func certIPs(addrs ...string) []net.IP {
	seen := map[string]bool{}
	var ips []net.IP
	for _, a := range addrs {
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

func selfRecord(n state.Node) consensus.NodeRecord {
	return consensus.NodeRecord{
		Name:            n.Name,
		Role:            n.Role,
		Vote:            "voter",
		BackendAddr:     n.BackendAddr,
		RaftAddr:        n.RaftAddr,
		AdminAddr:       n.AdminAddr,
		ReplicationAddr: n.ReplicationAddr,
		NBDAddr:         n.NBDAddr,
		// The creator's release goes into the bootstrap entry, so its
		// start needs no node-version entry of its own.
		Version:  version.String(),
		Protocol: version.ProtocolLevel(),
	}
}

// Create makes a new cluster of this one node: a CA, the node's and the
// admin's credentials, a one-voter metadata shard recording the cluster,
// then the identity and the servers.
func (m *Manager) Create(ctx context.Context, name string) (Identity, error) {
	if err := validate.ClusterName(name); err != nil {
		return Identity{}, status.Error(codes.InvalidArgument, validate.Message(err))
	}
	in := m.init
	in.Lock()
	defer in.Unlock()
	if cur, ok := in.ClusterLocked(); ok {
		return Identity{}, status.Errorf(codes.AlreadyExists, "this node is already in cluster %q", cur)
	}
	node := m.st.Node
	now := m.st.Now()
	ca, err := pki.NewCA(name, now)
	if err != nil {
		return Identity{}, status.Errorf(codes.Internal, "create CA: %v", err)
	}
	mat, err := issueNodeMaterial(ca, node, now)
	if err != nil {
		return Identity{}, status.Errorf(codes.Internal, "%v", err)
	}
	adminTok, err := pki.NewAdminToken()
	if err != nil {
		return Identity{}, status.Errorf(codes.Internal, "admin token: %v", err)
	}
	verifier, err := pki.AdminTokenVerifier(adminTok)
	if err != nil {
		return Identity{}, status.Errorf(codes.Internal, "admin token: %v", err)
	}
	secret, err := sealed.NewSecret()
	if err != nil {
		return Identity{}, status.Errorf(codes.Internal, "%v", err)
	}
	in.ResetLocked() // leftovers of an earlier failed attempt
	if err := in.SaveTLSLocked(mat); err != nil {
		return Identity{}, status.Errorf(codes.Internal, "%v", err)
	}
	if err := in.SaveSecretLocked(secret); err != nil {
		in.ResetLocked()
		return Identity{}, status.Errorf(codes.Internal, "%v", err)
	}
	if err := saveAdmin(in, ca, node, adminTok, now); err != nil {
		in.ResetLocked()
		return Identity{}, status.Errorf(codes.Internal, "%v", err)
	}
	fp := ca.Fingerprint()
	id := Identity{ClusterName: name, ClusterID: randomHex(16), NodeName: node.Name, ReplicaID: 1, Role: node.Role}
	meta, err := in.StartLocked(ctx, id, map[uint64]string{1: node.RaftAddr}, false)
	if err != nil {
		in.ResetLocked()
		return Identity{}, status.Errorf(codes.Internal, "start raft: %v", err)
	}
	self := selfRecord(node)
	self.ReplicaID = 1
	serial, err := pki.CertSerial(mat.Cert)
	if err != nil {
		in.ResetLocked()
		return Identity{}, status.Errorf(codes.Internal, "node certificate: %v", err)
	}
	self.CertSerials = []string{serial}
	bctx, cancel := context.WithTimeout(ctx, bootstrapTimeout)
	defer cancel()
	cr := consensus.ClusterRecord{Name: name, ID: id.ClusterID, CreatedAt: now.UTC(), CAFingerprint: hex.EncodeToString(fp[:]), AdminTokenVerifiers: []string{hex.EncodeToString(verifier[:])}}
	if err := meta.Bootstrap(bctx, cr, self); err != nil {
		in.ResetLocked()
		return Identity{}, status.Errorf(codes.Internal, "record cluster: %v", err)
	}
	if err := in.SaveIdentityLocked(id); err != nil {
		in.ResetLocked()
		return Identity{}, status.Errorf(codes.Internal, "%v", err)
	}
	if err := in.ServeLocked(); err != nil {
		return Identity{}, status.Errorf(codes.Internal, "%v", err)
	}
	return id, nil
}

// issueNodeMaterial makes the node's key and certificate, signed by ca.
func issueNodeMaterial(ca *pki.CA, node state.Node, now time.Time) (Material, error) {
	key, err := pki.NewKey()
	if err != nil {
		return Material{}, fmt.Errorf("node key: %w", err)
	}
	csr, err := pki.NewCSR(key, node.Name)
	if err != nil {
		return Material{}, fmt.Errorf("node CSR: %w", err)
	}
	cert, err := ca.SignNode(csr, node.Name, nodeIPs(node), now)
	if err != nil {
		return Material{}, fmt.Errorf("node certificate: %w", err)
	}
	caKey, err := ca.KeyPEM()
	if err != nil {
		return Material{}, fmt.Errorf("CA key: %w", err)
	}
	return Material{CACert: ca.CertPEM(), CAKey: caKey, Cert: cert, Key: key}, nil
}

// saveAdmin issues the admin certificate of this node and saves it with
// the cluster's admin token.
func saveAdmin(in Init, ca *pki.CA, node state.Node, token string, now time.Time) error {
	cert, key, err := ca.IssueAdmin("admin@"+node.Name, now)
	if err != nil {
		return fmt.Errorf("admin certificate: %w", err)
	}
	return in.SaveAdminLocked(AdminCredentials{CACert: ca.CertPEM(), Cert: cert, Key: key, Token: token, Endpoint: node.AdminAddr})
}

// Join runs on the joining node: it asks the member at addr to admit it
// (Admit), then starts its Raft replica and confirms its membership
// through the shard.
func (m *Manager) Join(ctx context.Context, addr, token string) (Identity, error) {
	tok, err := pki.ParseJoinToken(token)
	if err != nil {
		return Identity{}, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return Identity{}, status.Errorf(codes.InvalidArgument, "address %q: want host:port of a member's backend address", addr)
	}
	in := m.init
	in.Lock()
	defer in.Unlock()
	if cur, ok := in.ClusterLocked(); ok {
		return Identity{}, status.Errorf(codes.AlreadyExists, "this node is already in cluster %q", cur)
	}
	node := m.st.Node
	key, err := pki.NewKey()
	if err != nil {
		return Identity{}, status.Errorf(codes.Internal, "node key: %v", err)
	}
	csr, err := pki.NewCSR(key, node.Name)
	if err != nil {
		return Identity{}, status.Errorf(codes.Internal, "node CSR: %v", err)
	}
	// The token carries the CA fingerprint, so we talk only to the cluster
	// the operator meant, before we have its CA.
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(pki.PinnedTLS(tok.CAFingerprint))))
	if err != nil {
		return Identity{}, status.Errorf(codes.InvalidArgument, "dial %s: %v", addr, err)
	}
	defer conn.Close()
	jctx, cancel := context.WithTimeout(ctx, joinTimeout)
	defer cancel()
	role := tandemv1.NodeRole_NODE_ROLE_DATA
	if node.Role == "witness" {
		role = tandemv1.NodeRole_NODE_ROLE_WITNESS
	}
	resp, err := tandemv1.NewPeerClient(conn).Join(jctx, &tandemv1.PeerJoinRequest{
		Token: token, NodeName: node.Name, Role: role,
		BackendAddr: node.BackendAddr, RaftAddr: node.RaftAddr, AdminAddr: node.AdminAddr, CsrPem: csr,
		ReplicationAddr: node.ReplicationAddr, NbdAddr: node.NBDAddr,
		Protocol: version.ProtocolLevel(), Release: version.String(),
	}, grpc.WaitForReady(true))
	if err != nil {
		st := status.Convert(err)
		code := st.Code()
		if code == codes.Unavailable || code == codes.DeadlineExceeded {
			return Identity{}, status.Errorf(codes.Unavailable, "cannot reach a cluster member at %s: %s", addr, st.Message())
		}
		return Identity{}, status.Errorf(code, "join refused by %s: %s", addr, st.Message())
	}
	fp, err := pki.CertFingerprint(resp.CaPem)
	if err != nil || fp != tok.CAFingerprint {
		return Identity{}, status.Errorf(codes.PermissionDenied, "member at %s sent a CA that does not match the token", addr)
	}
	ca, err := pki.LoadCA(resp.CaPem, resp.CaKeyPem)
	if err != nil {
		return Identity{}, status.Errorf(codes.Internal, "cluster CA from %s: %v", addr, err)
	}
	in.ResetLocked()
	if err := in.SaveTLSLocked(Material{CACert: resp.CaPem, CAKey: resp.CaKeyPem, Cert: resp.CertPem, Key: key}); err != nil {
		return Identity{}, status.Errorf(codes.Internal, "%v", err)
	}
	if err := saveAdmin(in, ca, node, resp.AdminToken, m.st.Now()); err != nil {
		in.ResetLocked()
		return Identity{}, status.Errorf(codes.Internal, "%v", err)
	}
	// A member that predates cluster secrets has none to give: the node
	// joins, and sealing or opening secrets on it says how to add one.
	if len(resp.ClusterSecret) == sealed.SecretSize {
		if err := in.SaveSecretLocked(resp.ClusterSecret); err != nil {
			in.ResetLocked()
			return Identity{}, status.Errorf(codes.Internal, "%v", err)
		}
	} else {
		m.st.Log.Warn("the admitting member sent no cluster secret; this node cannot seal or open BMC passwords until its cluster.secret is copied from a member that has one", "via", addr)
	}
	id := Identity{ClusterName: resp.ClusterName, ClusterID: resp.ClusterId, NodeName: node.Name, ReplicaID: resp.ReplicaId, Role: node.Role}
	meta, err := in.StartLocked(ctx, id, nil, true)
	if err != nil {
		in.ResetLocked()
		return Identity{}, status.Errorf(codes.Internal, "start raft replica %d: %v (the cluster lists this node as joining; remove it with 'tandem node remove %s' before retrying)", resp.ReplicaId, err, node.Name)
	}
	// Committing our own membership proves we caught up and can reach quorum.
	mctx, cancel2 := context.WithTimeout(ctx, joinTimeout)
	defer cancel2()
	if _, err := meta.SetNodeState(mctx, node.Name, consensus.NodeMember); err != nil {
		in.ResetLocked()
		return Identity{}, status.Errorf(codes.Unavailable, "joined the Raft group but could not confirm membership: %v (remove it with 'tandem node remove %s' before retrying)", err, node.Name)
	}
	if err := in.SaveIdentityLocked(id); err != nil {
		return Identity{}, status.Errorf(codes.Internal, "%v", err)
	}
	if err := in.ServeLocked(); err != nil {
		return Identity{}, status.Errorf(codes.Internal, "%v", err)
	}
	m.st.Log.Info("joined cluster", "cluster", id.ClusterName, "replica", id.ReplicaID, "via", addr)
	return id, nil
}
