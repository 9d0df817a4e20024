package api

import (
	"context"
	"crypto/tls"
	"errors"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/pki"
	"github.com/tandemhci/tandem/internal/refusal"
	"github.com/tandemhci/tandem/internal/state"
)

const (
	methodCreate   = "/tandem.v1.Cluster/Create"
	methodJoin     = "/tandem.v1.Cluster/Join"
	methodStatus   = "/tandem.v1.Cluster/Status"
	methodPeerJoin = "/tandem.v1.Peer/Join"
)

// unauthenticatedOK lists calls that need no bearer token: health checks and
// reflection carry no cluster data (on TCP the client certificate is still
// required).
func unauthenticatedOK(method string) bool {
	return strings.HasPrefix(method, "/grpc.health.v1.Health/") ||
		strings.HasPrefix(method, "/grpc.reflection.")
}

// peerCert returns the verified identity of the TLS client, if any.
func peerCert(ctx context.Context) (name, ou string, ok bool) {
	p, found := peer.FromContext(ctx)
	if !found || p.AuthInfo == nil {
		return "", "", false
	}
	ti, isTLS := p.AuthInfo.(credentials.TLSInfo)
	if !isTLS {
		return "", "", false
	}
	return pki.PeerIdentity(ti.State)
}

// callSource is the address a call comes from ("local" on the unix socket).
func callSource(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil || p.Addr.Network() == "unix" {
		return "local"
	}
	return refusal.SourceOf(p.Addr)
}

// ReplicationPeer names the sender of a replication connection: only a
// node certificate of this cluster's CA may replicate. It is the
// replication.Authorize the data path is given, so that replication needs
// no PKI of its own.
func ReplicationPeer(state tls.ConnectionState) (string, error) {
	name, ou, ok := pki.PeerIdentity(state)
	if !ok || ou != pki.OUNode {
		return "", errors.New("peer presented no node certificate from this cluster")
	}
	return name, nil
}

// Auth guards the admin and peer gRPC servers.
type Auth struct {
	st *state.State
	// refused logs refused admin calls in aggregate (one line a minute).
	refused *refusal.Log
}

// NewAuth returns the guard of this node's servers.
func NewAuth(st *state.State) *Auth {
	return &Auth{st: st, refused: refusal.NewLog(st.Log, "admin calls refused", time.Minute)}
}

// LocalCaller is the credential name of calls over a node's unix socket.
func LocalCaller(node string) string { return "local@" + node }

// AdminUnary guards the admin API. Over TCP the client must present a
// certificate from the cluster CA (not one of a removed node) and a named
// API credential as bearer token. Over the root-only unix socket a call
// without a token is the node's local admin ("local@NODE"); a token, if
// sent, is checked like over TCP. Then the credential's role must be at
// least the one the method needs (requiredRole). An uninitialised node
// accepts only create, join and status, on the unix socket; a stopped one
// (its certificate expired while it was off) only join (its rejoin) and
// status, and refuses the rest with the reason and the way out.
func (a *Auth) AdminUnary(tcp bool) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		actx, err := a.authorizeAdmin(ctx, info.FullMethod, tcp)
		if err != nil {
			a.refused.Refused(callSource(ctx), status.Code(err).String(), info.FullMethod+": "+status.Convert(err).Message(), time.Now())
			return nil, err
		}
		return h(actx, req)
	}
}

// AdminStream guards the admin API's streams.
func (a *Auth) AdminStream(tcp bool) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		actx, err := a.authorizeAdmin(ss.Context(), info.FullMethod, tcp)
		if err != nil {
			a.st.Log.Warn("admin call refused", "method", info.FullMethod, "err", status.Convert(err).Message(), "tcp", tcp)
			return err
		}
		return h(srv, &actorStream{ServerStream: ss, ctx: actx})
	}
}

// actorStream is a server stream whose context names the caller.
type actorStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *actorStream) Context() context.Context { return s.ctx }

// authorizeAdmin returns ctx naming the caller's credential
// (consensus.WithActor, so the audit trail records it), or the refusal.
func (a *Auth) authorizeAdmin(ctx context.Context, method string, tcp bool) (context.Context, error) {
	var certName, certOU string
	if tcp {
		var ok bool
		if certName, certOU, ok = peerCert(ctx); !ok || (certOU != pki.OUAdmin && certOU != pki.OUNode) {
			return nil, status.Error(codes.Unauthenticated, "a client certificate from this cluster's CA is required")
		}
	}
	if unauthenticatedOK(method) {
		return ctx, nil
	}
	_, inCluster := a.st.Cluster()
	meta := a.st.Meta()
	if !inCluster || meta == nil {
		if stopped, ok := a.st.StoppedInfo(); ok {
			// Rejoin is a Join with its flag; status says why and how.
			if !tcp && (method == methodJoin || method == methodStatus) {
				return consensus.WithActor(ctx, LocalCaller(a.st.Node.Name)), nil
			}
			return nil, status.Error(codes.FailedPrecondition, stopped.Reason)
		}
		if !tcp && (method == methodCreate || method == methodJoin || method == methodStatus) {
			return ctx, nil
		}
		return nil, status.Error(codes.FailedPrecondition, "this node is not in a cluster yet: run 'tandem cluster create NAME' or 'tandem cluster join ADDR --token T'")
	}
	if !tcp && bearer(ctx) == "" {
		// The socket is root-only (LocalOnly): whoever reaches it could
		// read the node's keys anyway. This needs no metadata, so it works
		// on a removed node too.
		return consensus.WithActor(ctx, LocalCaller(a.st.Node.Name)), nil
	}
	ms, err := meta.LocalState()
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "metadata not readable on this node (cannot check the credential): %v", err)
	}
	if tcp {
		if node := certNode(certName, certOU); node != "" {
			if n, ok := ms.Nodes[node]; ok && n.State == consensus.NodeRemoved {
				return nil, status.Errorf(codes.PermissionDenied, "certificate %s belongs to node %s, which was removed from the cluster", certName, node)
			}
		}
	}
	name, role, err := a.caller(ctx, ms)
	if err != nil {
		return nil, err
	}
	need := requiredRole(method)
	if consensus.RoleRank(role) < consensus.RoleRank(need) {
		return nil, status.Errorf(codes.PermissionDenied, "credential %s has role %s; %s needs role %s", name, role, method, need)
	}
	return consensus.WithActor(ctx, name), nil
}

// certNode is the node a client certificate belongs to: a node's own, or
// the admin certificate "admin@NODE" issued to it at create or join.
func certNode(name, ou string) string {
	switch ou {
	case pki.OUNode:
		return name
	case pki.OUAdmin:
		if n, ok := strings.CutPrefix(name, "admin@"); ok {
			return n
		}
	}
	return ""
}

// caller names the credential of the call and its role. A certificate
// names no one: on TCP the bearer credential is always required.
func (a *Auth) caller(ctx context.Context, ms *consensus.MetaState) (name, role string, err error) {
	tok := bearer(ctx)
	if tok == "" {
		return "", "", status.Error(codes.Unauthenticated, "missing API credential: send 'authorization: Bearer <secret>' (tandem: --token, TANDEM_TOKEN or <credentials>/token; make one with 'tandem credential create')")
	}
	v, err := pki.AdminTokenVerifier(tok)
	if err != nil {
		return "", "", status.Errorf(codes.Unauthenticated, "invalid API credential: %v", err)
	}
	c := ms.CredentialByVerifier(v)
	switch {
	case c == nil:
		return "", "", status.Error(codes.Unauthenticated, "unknown API credential")
	case c.Revoked():
		return "", "", status.Errorf(codes.Unauthenticated, "credential %s was revoked at %s", c.Name, c.RevokedAt.UTC().Format(time.RFC3339))
	}
	return c.Name, c.Role, nil
}

func bearer(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		if t, ok := strings.CutPrefix(v, "Bearer "); ok {
			return strings.TrimSpace(t)
		}
	}
	return ""
}

// PeerUnary guards the backend API: nodes only, by certificate. Join is the
// exception: the joiner has no certificate yet and proves itself with its
// one-time token instead.
func (a *Auth) PeerUnary() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if info.FullMethod != methodPeerJoin && !unauthenticatedOK(info.FullMethod) {
			if err := a.authorizePeer(ctx); err != nil {
				return nil, err
			}
		}
		return h(ctx, req)
	}
}

// PeerStream guards the backend API's streams.
func (a *Auth) PeerStream() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		if !unauthenticatedOK(info.FullMethod) {
			if err := a.authorizePeer(ss.Context()); err != nil {
				return err
			}
		}
		return h(srv, ss)
	}
}

func (a *Auth) authorizePeer(ctx context.Context) error {
	name, ou, ok := peerCert(ctx)
	if !ok || ou != pki.OUNode {
		return status.Error(codes.Unauthenticated, "backend calls need a node certificate from this cluster's CA")
	}
	// A removed node keeps a valid certificate; its name is what revokes it.
	if meta := a.st.Meta(); meta != nil {
		if st, err := meta.LocalState(); err == nil {
			if n, ok := st.Nodes[name]; ok && n.State == consensus.NodeRemoved {
				return status.Errorf(codes.PermissionDenied, "node %s was removed from the cluster; wipe its data directory and join again", name)
			}
		}
	}
	return nil
}
