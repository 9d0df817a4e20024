package consensus

import (
	"context"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"
)

// Roles of an API credential, weakest first. Each role may do what the
// roles before it may.
const (
	RoleReadonly = "readonly"
	RoleOperator = "operator"
	RoleAdmin    = "admin"
)

// Roles lists the roles, weakest first.
var Roles = []string{RoleReadonly, RoleOperator, RoleAdmin}

// RoleRank orders roles: 0 for an unknown role, then weakest first.
func RoleRank(role string) int { return slices.Index(Roles, role) + 1 }

// BootstrapCredential is the name of the admin credential made when the
// cluster is created (and of the admin tokens of the older format).
const BootstrapCredential = "bootstrap"

// Errors of the credential records.
var (
	ErrCredentialExists  = errors.New("a credential with this name exists")
	ErrNoSuchCredential  = errors.New("no such credential")
	ErrLastAdmin         = errors.New("refusing to revoke the last admin credential")
	errCredentialInvalid = fmt.Errorf("%w: credential needs a name, a known role and a 64-digit verifier", ErrBadCommand)
)

// CredentialRecord is a named API credential: only a verifier (hex SHA-256)
// of its bearer secret is kept, never the secret.
type CredentialRecord struct {
	Name     string `json:"name"`
	Role     string `json:"role"`
	Verifier string `json:"verifier"`
	// Holder is the node the secret was handed to (the bootstrap credential
	// is written to the creating node's data dir); removing that node
	// revokes it. Empty for credentials made for people and programs.
	Holder    string    `json:"holder,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	// CreatedBy is the credential (or local@node) that made this one.
	CreatedBy string    `json:"created_by"`
	RevokedAt time.Time `json:"revoked_at,omitzero"`
	RevokedBy string    `json:"revoked_by,omitempty"`
}

// Revoked reports whether the credential was revoked.
func (c *CredentialRecord) Revoked() bool { return !c.RevokedAt.IsZero() }

// CredentialCmd creates (Record set) or revokes (Name set) a credential.
type CredentialCmd struct {
	Record *CredentialRecord `json:"record,omitempty"`
	Name   string            `json:"name,omitempty"`
	// Force allows revoking the last admin credential.
	Force bool `json:"force,omitempty"`
}

// Credential command ops.
const (
	opCredentialCreate = "credential-create"
	opCredentialRevoke = "credential-revoke"
)

// CredentialByVerifier finds the credential whose secret has this verifier
// (revoked ones included, so the refusal can say so). It compares against
// every record in constant time.
func (s *MetaState) CredentialByVerifier(verifier [32]byte) *CredentialRecord {
	var found *CredentialRecord
	for _, name := range slices.Sorted(maps.Keys(s.Credentials)) {
		c := s.Credentials[name]
		b, err := hex.DecodeString(c.Verifier)
		if err != nil || len(b) != 32 {
			continue
		}
		if subtle.ConstantTimeCompare(b, verifier[:]) == 1 {
			found = c
		}
	}
	return found
}

// activeAdmins counts the admin credentials not revoked.
func (s *MetaState) activeAdmins() int {
	n := 0
	for _, c := range s.Credentials {
		if c.Role == RoleAdmin && !c.Revoked() {
			n++
		}
	}
	return n
}

// adoptAdminTokens turns the admin token verifiers of the older format
// (ClusterRecord.AdminTokenVerifiers) into admin credentials: the first is
// "bootstrap", the next "admin-2", ... holder is the node they were
// handed to, if known.
func (s *MetaState) adoptAdminTokens(at time.Time, by, holder string) {
	if len(s.Cluster.AdminTokenVerifiers) == 0 {
		return
	}
	if s.Credentials == nil {
		s.Credentials = map[string]*CredentialRecord{}
	}
	for _, v := range s.Cluster.AdminTokenVerifiers {
		name := BootstrapCredential
		for i := 2; s.Credentials[name] != nil; i++ {
			name = "admin-" + strconv.Itoa(i)
		}
		s.Credentials[name] = &CredentialRecord{Name: name, Role: RoleAdmin, Verifier: v, Holder: holder, CreatedAt: at, CreatedBy: by}
	}
	s.Cluster.AdminTokenVerifiers = nil
}

func (m *metaSM) applyCredential(c *Command) ([]byte, error) {
	s := m.s
	cc := c.Credential
	if cc == nil {
		return nil, fmt.Errorf("%w: credential op without body", ErrBadCommand)
	}
	switch c.Op {
	case opCredentialCreate:
		r := cc.Record
		if r == nil || r.Name == "" || RoleRank(r.Role) == 0 || len(r.Verifier) != 64 {
			return nil, errCredentialInvalid
		}
		if old, ok := s.Credentials[r.Name]; ok {
			if old.Verifier == r.Verifier && old.CreatedAt.Equal(c.At) {
				return nil, nil // a retried proposal
			}
			return nil, fmt.Errorf("%w: %s (names are not reused, even after revocation)", ErrCredentialExists, r.Name)
		}
		rec := *r
		rec.CreatedAt = c.At
		rec.CreatedBy = c.actor()
		rec.RevokedAt, rec.RevokedBy = time.Time{}, ""
		if s.Credentials == nil {
			s.Credentials = map[string]*CredentialRecord{}
		}
		s.Credentials[rec.Name] = &rec
		m.audit(c, "credential-create", fmt.Sprintf("credential %s, role %s", rec.Name, rec.Role))
		return nil, nil
	case opCredentialRevoke:
		r, ok := s.Credentials[cc.Name]
		if !ok {
			return nil, fmt.Errorf("%w: %s", ErrNoSuchCredential, cc.Name)
		}
		if r.Revoked() {
			return nil, nil // idempotent
		}
		if r.Role == RoleAdmin && s.activeAdmins() == 1 && !cc.Force {
			return nil, fmt.Errorf("%w (%s): nobody could then administer the cluster over the network; create another admin credential first, or pass --force (the root-only unix socket on each node stays a way in)", ErrLastAdmin, r.Name)
		}
		m.revokeCredential(c, r, "")
		return nil, nil
	}
	return nil, fmt.Errorf("%w: unknown op %q", ErrBadCommand, c.Op)
}

// revokeCredential marks r revoked and audits it; why says what caused it
// when it was not a revoke command.
func (m *metaSM) revokeCredential(c *Command, r *CredentialRecord, why string) {
	r.RevokedAt = c.At
	r.RevokedBy = c.actor()
	detail := fmt.Sprintf("credential %s (role %s) revoked", r.Name, r.Role)
	if why != "" {
		detail += ": " + why
	}
	m.audit(c, "credential-revoke", detail)
}

// revokeHeldBy revokes the credentials handed to node: a removed node's
// copies must stop working.
func (m *metaSM) revokeHeldBy(c *Command, node string) {
	for _, name := range slices.Sorted(maps.Keys(m.s.Credentials)) {
		if r := m.s.Credentials[name]; r.Holder == node && !r.Revoked() {
			m.revokeCredential(c, r, "its holder, node "+node+", was removed")
		}
	}
}

// actor is who asked for c: the API credential if the proposer knew it,
// else the proposing node.
func (c *Command) actor() string {
	if c.As != "" {
		return c.As
	}
	return c.By
}

type actorKey struct{}

// WithActor returns ctx carrying the name of the API credential on whose
// behalf proposals made with it are; the audit trail records it.
func WithActor(ctx context.Context, credential string) context.Context {
	return context.WithValue(ctx, actorKey{}, credential)
}

// ActorFrom returns the credential name WithActor stored, or "".
func ActorFrom(ctx context.Context) string {
	s, _ := ctx.Value(actorKey{}).(string)
	return s
}

// CreateCredential records a credential (name, role, verifier, holder).
func (m *Meta) CreateCredential(ctx context.Context, r CredentialRecord) error {
	_, err := m.propose(ctx, Command{Op: opCredentialCreate, Credential: &CredentialCmd{Record: &r}})
	return err
}

// RevokeCredential revokes the credential named name; force allows
// revoking the last admin credential. Revoking a revoked one is a no-op.
func (m *Meta) RevokeCredential(ctx context.Context, name string, force bool) error {
	_, err := m.propose(ctx, Command{Op: opCredentialRevoke, Credential: &CredentialCmd{Name: name, Force: force}})
	return err
}
