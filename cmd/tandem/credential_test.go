package main

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

type fakeCredentials struct {
	tandemv1.UnimplementedCredentialServer
}

func (c fakeCredentials) Create(_ context.Context, r *tandemv1.CreateCredentialRequest) (*tandemv1.CreateCredentialResponse, error) {
	return &tandemv1.CreateCredentialResponse{Credential: &tandemv1.CredentialInfo{Name: r.Name, Role: r.Role}, Secret: "tdma1.secret"}, nil
}

func (c fakeCredentials) List(context.Context, *tandemv1.ListCredentialsRequest) (*tandemv1.ListCredentialsResponse, error) {
	at := timestamppb.New(time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC))
	return &tandemv1.ListCredentialsResponse{Credentials: []*tandemv1.CredentialInfo{
		{Name: "bootstrap", Role: "admin", CreatedAt: at, CreatedBy: "n1", Holder: "n1"},
		{Name: "grafana", Role: "readonly", CreatedAt: at, CreatedBy: "local@n1", RevokedAt: at, RevokedBy: "alice"},
	}}, nil
}

func (c fakeCredentials) Revoke(_ context.Context, r *tandemv1.RevokeCredentialRequest) (*tandemv1.RevokeCredentialResponse, error) {
	return &tandemv1.RevokeCredentialResponse{Credential: &tandemv1.CredentialInfo{Name: r.Name, Role: "readonly"}, Unconfirmed: []string{"n3: unreachable"}}, nil
}

func TestCredentialCommands(t *testing.T) {
	dir, _ := startDaemonWith(t, func(s *grpc.Server) { tandemv1.RegisterCredentialServer(s, fakeCredentials{}) })

	r := runCLI(t, "", "--data-dir", dir, "credential", "create", "grafana", "--role", "root")
	r.wantCode(t, 2)
	wantMatch(t, "stderr", r.stderr, `--role must be one of readonly, operator, admin, not "root"`)
	r = runCLI(t, "", "--data-dir", dir, "credential", "create", "grafana")
	r.wantCode(t, 2)

	r = runCLI(t, "", "--data-dir", dir, "credential", "create", "grafana", "--role", "readonly")
	r.wantCode(t, 0)
	wantMatch(t, "stdout", r.stdout, `credential:\s+grafana\n`, `role:\s+readonly\n`, `secret:\s+tdma1.secret\n`)
	wantMatch(t, "stderr", r.stderr, `shown only now`)

	r = runCLI(t, "", "--data-dir", dir, "credential", "list", "--all")
	r.wantCode(t, 0)
	wantMatch(t, "stdout", r.stdout, `NAME\s+ROLE\s+CREATED\s+BY\s+HOLDER\s+REVOKED\n`, `bootstrap\s+admin\s+\S+\s+n1\s+n1\s+-\n`, `grafana\s+readonly\s+\S+\s+local@n1\s+-\s+2026-12-01T08:00:00Z by alice`)

	r = runCLI(t, "", "--data-dir", dir, "credential", "revoke", "grafana")
	r.wantCode(t, 0)
	wantMatch(t, "stdout", r.stdout, `revoked credential grafana \(role readonly\)`)
	wantMatch(t, "stderr", r.stderr, `warning: not confirmed by n3: unreachable`)
}
