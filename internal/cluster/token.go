package cluster

import (
	"context"
	"encoding/hex"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/apierr"
	"github.com/tandemhci/tandem/internal/pki"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

const (
	defaultTokenTTL = time.Hour
	maxTokenTTL     = 7 * 24 * time.Hour
)

// CreateToken records a one-time join token valid for ttl (an hour when
// zero, a week at most). The token names the CA's fingerprint, so a
// joining node can check it talks to this cluster.
func (m *Manager) CreateToken(ctx context.Context, ttl time.Duration) (*tandemv1.CreateTokenResponse, error) {
	if ttl == 0 {
		ttl = defaultTokenTTL
	}
	if ttl < 0 || ttl > maxTokenTTL {
		return nil, status.Errorf(codes.InvalidArgument, "ttl %s is longer than the maximum of %s", ttl, maxTokenTTL)
	}
	c, ok := m.st.Cluster()
	meta := m.st.Meta()
	if !ok || meta == nil {
		return nil, errNotInCluster
	}
	if err := m.st.Quorum(ctx); err != nil {
		return nil, err
	}
	fp, err := pki.CertFingerprint(c.CACert)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "CA: %v", err)
	}
	tok, err := pki.NewJoinToken(fp)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "token: %v", err)
	}
	v := tok.Verifier()
	exp := m.st.Now().Add(ttl).UTC()
	if err := meta.AddToken(ctx, consensus.TokenRecord{ID: tok.IDString(), Verifier: hex.EncodeToString(v[:]), ExpiresAt: exp}); err != nil {
		return nil, apierr.From(err)
	}
	return &tandemv1.CreateTokenResponse{Token: tok.String(), TokenId: tok.IDString(), ExpiresAt: timestamppb.New(exp)}, nil
}
