package cluster

import (
	"context"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/apierr"
	"github.com/tandemhci/tandem/internal/pki"
	"github.com/tandemhci/tandem/internal/validate"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// syncTimeout is the least time a member gets to confirm it applied a
// credential change (more when the caller's deadline allows).
const syncTimeout = 5 * time.Second

// CreateCredential makes a named API credential with role and returns its
// secret (shown this once). It returns once every reachable member has
// applied it, so the credential works against any of them at once.
func (m *Manager) CreateCredential(ctx context.Context, req *tandemv1.CreateCredentialRequest) (*tandemv1.CreateCredentialResponse, error) {
	if err := validate.CredentialName(req.Name); err != nil {
		return nil, status.Error(codes.InvalidArgument, validate.Message(err))
	}
	if consensus.RoleRank(req.Role) == 0 {
		return nil, status.Errorf(codes.InvalidArgument, "role %q: want one of %s", req.Role, strings.Join(consensus.Roles, ", "))
	}
	meta := m.st.Meta()
	if meta == nil {
		return nil, errNotInCluster
	}
	if err := m.st.Quorum(ctx); err != nil {
		return nil, err
	}
	secret, err := pki.NewAdminToken()
	if err != nil {
		return nil, status.Errorf(codes.Internal, "credential secret: %v", err)
	}
	v, err := pki.AdminTokenVerifier(secret)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "credential secret: %v", err)
	}
	if err := meta.CreateCredential(ctx, consensus.CredentialRecord{Name: req.Name, Role: req.Role, Verifier: hex.EncodeToString(v[:])}); err != nil {
		return nil, apierr.From(err)
	}
	info, unconfirmed, err := m.afterChange(ctx, req.Name)
	if err != nil {
		return nil, err
	}
	return &tandemv1.CreateCredentialResponse{Credential: info, Secret: secret, Unconfirmed: unconfirmed}, nil
}

// ListCredentials answers from this node's applied metadata, valid
// credentials only unless all.
func (m *Manager) ListCredentials(req *tandemv1.ListCredentialsRequest) (*tandemv1.ListCredentialsResponse, error) {
	meta := m.st.Meta()
	if meta == nil {
		return nil, errNotInCluster
	}
	ms, err := meta.LocalState()
	if err != nil {
		return nil, apierr.From(err)
	}
	out := &tandemv1.ListCredentialsResponse{}
	for _, name := range slices.Sorted(maps.Keys(ms.Credentials)) {
		if c := ms.Credentials[name]; req.All || !c.Revoked() {
			out.Credentials = append(out.Credentials, CredentialInfo(c))
		}
	}
	return out, nil
}

// RevokeCredential revokes a credential. It returns once every reachable
// member has applied the revocation (a linearizable read on each, through
// the peer call MetaSync), so from then on every one of them refuses the
// credential; members it could not reach are named in the answer.
func (m *Manager) RevokeCredential(ctx context.Context, req *tandemv1.RevokeCredentialRequest) (*tandemv1.RevokeCredentialResponse, error) {
	if req.Name == "" {
		return nil, status.Error(codes.InvalidArgument, "credential name is required")
	}
	meta := m.st.Meta()
	if meta == nil {
		return nil, errNotInCluster
	}
	if err := m.st.Quorum(ctx); err != nil {
		return nil, err
	}
	if err := meta.RevokeCredential(ctx, req.Name, req.Force); err != nil {
		return nil, apierr.From(err)
	}
	info, unconfirmed, err := m.afterChange(ctx, req.Name)
	if err != nil {
		return nil, err
	}
	return &tandemv1.RevokeCredentialResponse{Credential: info, Unconfirmed: unconfirmed}, nil
}

// afterChange waits for the members to apply a committed credential change
// and returns the record as this node applied it.
func (m *Manager) afterChange(ctx context.Context, name string) (*tandemv1.CredentialInfo, []string, error) {
	ms, err := m.st.Meta().LocalState()
	if err != nil {
		return nil, nil, apierr.From(err)
	}
	c, ok := ms.Credentials[name]
	if !ok {
		return nil, nil, status.Errorf(codes.Internal, "credential %s not in the applied metadata", name)
	}
	return CredentialInfo(c), m.syncMembers(ctx, ms), nil
}

// syncMembers asks every other member to apply the metadata up to the
// current commit index and returns those that did not confirm, each with
// why. This node applied it already: a proposal returns once applied here.
func (m *Manager) syncMembers(ctx context.Context, ms *consensus.MetaState) []string {
	var (
		mu     sync.Mutex
		failed []string
		wg     sync.WaitGroup
	)
	for _, n := range ms.Nodes {
		if n.Name == m.st.Node.Name || n.State == consensus.NodeRemoved {
			continue
		}
		wg.Go(func() {
			err := m.metaSync(ctx, n.BackendAddr)
			if err == nil {
				return
			}
			mu.Lock()
			failed = append(failed, fmt.Sprintf("%s: %s", n.Name, status.Convert(err).Message()))
			mu.Unlock()
		})
	}
	wg.Wait()
	slices.Sort(failed)
	return failed
}

func (m *Manager) metaSync(ctx context.Context, addr string) error {
	p, err := m.st.Peer(addr)
	if err != nil {
		return err
	}
	// Wait as long as the caller allows, less a second to answer, and at
	// least syncTimeout: a member that is merely slow still confirms.
	timeout := syncTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = max(timeout, time.Until(dl)-time.Second)
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	_, err = p.MetaSync(cctx, &tandemv1.MetaSyncRequest{})
	return err
}

// CredentialInfo is a credential record as the API shows it (never its
// verifier).
func CredentialInfo(c *consensus.CredentialRecord) *tandemv1.CredentialInfo {
	out := &tandemv1.CredentialInfo{Name: c.Name, Role: c.Role, CreatedAt: timestamppb.New(c.CreatedAt), CreatedBy: c.CreatedBy, RevokedBy: c.RevokedBy, Holder: c.Holder}
	if c.Revoked() {
		out.RevokedAt = timestamppb.New(c.RevokedAt)
	}
	return out
}
