package api

import (
	"context"
	"crypto/tls"
	"errors"
	"os"
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
	// tokenFile holds the admin token this node was handed when it joined.
	tokenFile string
	// refused logs refused admin calls in aggregate (one line a minute).
	refused *refusal.Log
}

// NewAuth returns the guard of this node's servers; tokenFile is where the
// node keeps the admin token it was handed at create or join.
func NewAuth(st *state.State, tokenFile string) *Auth {
	return &Auth{st: st, tokenFile: tokenFile, refused: refusal.NewLog(st.Log, "admin calls refused", time.Minute)}
}

// AdminUnary guards the admin API. Over TCP the client must present a
// certificate from the cluster CA and a bearer token. Over the root-only unix
// socket the token alone suffices, and an uninitialised node accepts create,
// join and status without one, since no token exists yet.
func (a *Auth) AdminUnary(tcp bool) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if err := a.authorizeAdmin(ctx, info.FullMethod, tcp); err != nil {
			a.refused.Refused(callSource(ctx), status.Code(err).String(), info.FullMethod+": "+status.Convert(err).Message(), time.Now())
			return nil, err
		}
		return h(ctx, req)
	}
}

// AdminStream guards the admin API's streams.
func (a *Auth) AdminStream(tcp bool) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		if err := a.authorizeAdmin(ss.Context(), info.FullMethod, tcp); err != nil {
			return err
		}
		return h(srv, ss)
	}
}

func (a *Auth) authorizeAdmin(ctx context.Context, method string, tcp bool) error {
	if tcp {
		if _, ou, ok := peerCert(ctx); !ok || (ou != pki.OUAdmin && ou != pki.OUNode) {
			return status.Error(codes.Unauthenticated, "a client certificate from this cluster's CA is required")
		}
	}
	if unauthenticatedOK(method) {
		return nil
	}
	_, inCluster := a.st.Cluster()
	meta := a.st.Meta()
	if !inCluster || meta == nil {
		if !tcp && (method == methodCreate || method == methodJoin || method == methodStatus) {
			return nil
		}
		return status.Error(codes.FailedPrecondition, "this node is not in a cluster yet: run 'tandem cluster create NAME' or 'tandem cluster join ADDR --token T'")
	}
	tok := bearer(ctx)
	if tok == "" {
		return status.Error(codes.Unauthenticated, "missing admin token (send 'authorization: Bearer <token>')")
	}
	v, err := pki.AdminTokenVerifier(tok)
	if err != nil {
		return status.Error(codes.Unauthenticated, "invalid admin token")
	}
	if st, err := meta.LocalState(); err == nil && st.AdminTokenValid(v) {
		return nil
	}
	// A node that just joined may not have applied the token's record yet;
	// the token it was handed at join is on disk.
	if local, err := os.ReadFile(a.tokenFile); err == nil {
		if lv, err := pki.AdminTokenVerifier(strings.TrimSpace(string(local))); err == nil && pki.ConstantTimeEqual(lv, v) {
			return nil
		}
	}
	return status.Error(codes.Unauthenticated, "invalid admin token")
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
