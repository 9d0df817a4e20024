package api

import (
	"context"

	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// credentialService is the admin credential API, internal/cluster's.
type credentialService struct {
	tandemv1.UnimplementedCredentialServer
	a *Services
}

func (s *credentialService) Create(ctx context.Context, req *tandemv1.CreateCredentialRequest) (*tandemv1.CreateCredentialResponse, error) {
	return answer(s.a.cfg.Cluster.CreateCredential(ctx, req))
}

func (s *credentialService) List(_ context.Context, req *tandemv1.ListCredentialsRequest) (*tandemv1.ListCredentialsResponse, error) {
	return answer(s.a.cfg.Cluster.ListCredentials(req))
}

func (s *credentialService) Revoke(ctx context.Context, req *tandemv1.RevokeCredentialRequest) (*tandemv1.RevokeCredentialResponse, error) {
	return answer(s.a.cfg.Cluster.RevokeCredential(ctx, req))
}
