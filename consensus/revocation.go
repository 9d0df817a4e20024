package consensus

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// ErrCertRevoked is returned by CheckCert for a certificate nobody may use
// any more; the handshake that presented it fails.
var ErrCertRevoked = errors.New("certificate revoked")

// Certificate kinds, as their organisational unit names them (internal/pki
// owns the names; consensus only compares them).
const (
	certOUNode  = "node"
	certOUAdmin = "admin"
	// adminCNPrefix starts the common name of a node's admin certificate
	// ("admin@<node>").
	adminCNPrefix = "admin@"
)

// RevokedCert is one entry of the cluster's revocation list. Entries are
// kept until the certificate would have expired anyway.
type RevokedCert struct {
	// Serial is the certificate's serial number in lower-case hex.
	Serial   string    `json:"serial"`
	Subject  string    `json:"subject"`
	Reason   string    `json:"reason"`
	At       time.Time `json:"at"`
	By       string    `json:"by"`
	NotAfter time.Time `json:"not_after,omitzero"`
}

// CertRef names a presented certificate for CheckCert, without x509 (the
// shard stores no certificates, only what identifies them).
type CertRef struct {
	Serial     string // lower-case hex
	CommonName string
	OU         string
}

// opRevokeCert adds an entry to the revocation list.
const opRevokeCert = "revoke-cert"

func (m *metaSM) applyRevocation(c *Command) ([]byte, error) {
	r := c.Revoke
	if r == nil || r.Serial == "" || strings.ToLower(r.Serial) != r.Serial {
		return nil, fmt.Errorf("%w: revoke-cert needs a lower-case hex serial", ErrBadCommand)
	}
	m.revoke(c, *r)
	return nil, nil
}

// revoke adds r to the list (idempotently: a retried proposal keeps the
// first entry) and prunes entries whose certificates have expired.
func (m *metaSM) revoke(c *Command, r RevokedCert) {
	s := m.s
	if s.Revoked == nil {
		s.Revoked = map[string]*RevokedCert{}
	}
	maps.DeleteFunc(s.Revoked, func(_ string, e *RevokedCert) bool {
		return !e.NotAfter.IsZero() && c.At.After(e.NotAfter)
	})
	if _, ok := s.Revoked[r.Serial]; ok {
		return
	}
	r.At, r.By = c.At, c.By
	s.Revoked[r.Serial] = &r
	m.certChanged()
	m.audit(c, "cert-revoke", fmt.Sprintf("certificate %s (%s) revoked: %s", r.Serial, r.Subject, r.Reason))
}

// revokeNode puts every certificate recorded for a removed node on the list.
func (m *metaSM) revokeNode(c *Command, n *NodeRecord) {
	for _, serial := range n.CertSerials {
		m.revoke(c, RevokedCert{Serial: serial, Subject: "CN=" + n.Name + ",OU=" + certOUNode, Reason: "node removed"})
	}
}

// checkCert is the rule every listener applies during the handshake:
//   - a serial on the revocation list is refused;
//   - a node certificate, or a node's admin certificate, naming a removed
//     node is refused, whatever its serial (nodes that joined before
//     serials were recorded are covered by this rule alone);
//   - a node certificate of a node whose record lists its serials must be
//     one of them, so a certificate the cluster never handed out for that
//     name is refused even though the CA signed it.
//
// Unknown names pass: a node admitted a moment ago may not be applied
// here yet, and its certificate chains to the CA.
func (s *MetaState) checkCert(ref CertRef) error {
	n, err := s.checkRevoked(ref)
	if err != nil || n == nil {
		return err
	}
	if ref.OU == certOUNode && len(n.CertSerials) > 0 && !slices.Contains(n.CertSerials, ref.Serial) {
		return fmt.Errorf("%w: serial %s was never issued to node %s", ErrCertRevoked, ref.Serial, ref.CommonName)
	}
	return nil
}

// checkRevoked is checkCert's first two rules, what revokes a certificate
// that was accepted: a serial on the list, a removed node's certificate. It
// returns the record of the node the certificate names, if any. (A node
// certificate merely renewed out of its record is refused from then on, but
// its open connections are not cut: they date from when it was valid.)
func (s *MetaState) checkRevoked(ref CertRef) (*NodeRecord, error) {
	if r, ok := s.Revoked[ref.Serial]; ok {
		return nil, fmt.Errorf("%w: serial %s (%s) on %s: %s", ErrCertRevoked, ref.Serial, r.Subject, r.At.UTC().Format(time.RFC3339), r.Reason)
	}
	name := ""
	switch ref.OU {
	case certOUNode:
		name = ref.CommonName
	case certOUAdmin:
		name, _ = strings.CutPrefix(ref.CommonName, adminCNPrefix)
	}
	n, ok := s.Nodes[name]
	if name == "" || !ok {
		return nil, nil
	}
	if n.State == NodeRemoved {
		return nil, fmt.Errorf("%w: node %s was removed from the cluster; wipe its data directory and join again", ErrCertRevoked, name)
	}
	return n, nil
}

// certQuery asks the state machine for checkCert (checkRevoked when
// revokedOnly) without copying the state.
type certQuery struct {
	ref         CertRef
	revokedOnly bool
}

// certGenQuery asks for the state machine's certGen.
type certGenQuery struct{}

// CertGeneration is a number that changes whenever this replica applies a
// change that may revoke a certificate it accepted before (a revocation, a
// node removed, a snapshot loaded; see checkRevoked). Listeners poll it to
// cut the connections of certificates revoked since their handshake; it
// means nothing across restarts.
func (m *Meta) CertGeneration() (uint64, error) {
	v, err := m.h.StaleRead(MetaShardID, certGenQuery{})
	if err != nil {
		return 0, err
	}
	g, _ := v.(uint64)
	return g, nil
}

// RevokeCert puts a certificate on the cluster's revocation list.
func (m *Meta) RevokeCert(ctx context.Context, r RevokedCert) error {
	_, err := m.propose(ctx, Command{Op: opRevokeCert, Revoke: &r})
	return err
}

// CheckCert applies the revocation rule (see MetaState.checkCert) to a
// presented certificate against this replica's applied state. It reads
// locally, without quorum, because it runs in every TLS handshake and must
// work on a node that lost its peers; a revocation reaches a node when it
// applies the entry.
func (m *Meta) CheckCert(ref CertRef) error {
	v, err := m.h.StaleRead(MetaShardID, certQuery{ref: ref})
	if err != nil {
		return fmt.Errorf("revocation list not readable yet: %w", err)
	}
	if err, _ := v.(error); err != nil {
		return err
	}
	return nil
}

// CheckRevoked applies the part of the rule that revokes a certificate
// accepted before (MetaState.checkRevoked: a serial on the list, a removed
// node's certificate) against this replica's applied state, as CheckCert
// does. Open connections are re-checked with it: one made with a node
// certificate since renewed out of its record stays open.
func (m *Meta) CheckRevoked(ref CertRef) error {
	v, err := m.h.StaleRead(MetaShardID, certQuery{ref: ref, revokedOnly: true})
	if err != nil {
		return fmt.Errorf("revocation list not readable yet: %w", err)
	}
	if err, _ := v.(error); err != nil {
		return err
	}
	return nil
}

// NodeCertCmd records a certificate the cluster issued to a member (a
// renewal), before the member starts using it.
type NodeCertCmd struct {
	Name     string    `json:"name"`
	Serial   string    `json:"serial"`
	NotAfter time.Time `json:"not_after"`
}

// opNodeCert records a member's renewed certificate.
const opNodeCert = "node-cert"

// keepCertSerials is how many of a node's certificates stay valid: the one
// in use and the ones before it, whose connections may still be open. An
// older one leaves the record and is refused from then on.
const keepCertSerials = 3

func (m *metaSM) applyNodeCert(c *Command) ([]byte, error) {
	nc := c.NodeCert
	if nc == nil || nc.Serial == "" || strings.ToLower(nc.Serial) != nc.Serial {
		return nil, fmt.Errorf("%w: node-cert needs a node and a lower-case hex serial", ErrBadCommand)
	}
	n, ok := m.s.Nodes[nc.Name]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNodeNotFound, nc.Name)
	}
	if n.State == NodeRemoved {
		return nil, fmt.Errorf("%w: node %s was removed", ErrCertRevoked, nc.Name)
	}
	if _, revoked := m.s.Revoked[nc.Serial]; revoked {
		return nil, fmt.Errorf("%w: serial %s", ErrCertRevoked, nc.Serial)
	}
	if !slices.Contains(n.CertSerials, nc.Serial) {
		n.CertSerials = append(n.CertSerials, nc.Serial)
		if over := len(n.CertSerials) - keepCertSerials; over > 0 {
			n.CertSerials = slices.Clone(n.CertSerials[over:])
		}
		m.audit(c, "node-cert", fmt.Sprintf("node %s renewed its certificate: serial %s, valid until %s", n.Name, nc.Serial, nc.NotAfter.UTC().Format(time.RFC3339)))
	}
	n.CertNotAfter = nc.NotAfter
	return nil, nil
}

// RecordNodeCert records a renewed certificate of node name; the node
// switches to it only once this has committed, so every member accepts it.
func (m *Meta) RecordNodeCert(ctx context.Context, name, serial string, notAfter time.Time) error {
	_, err := m.propose(ctx, Command{Op: opNodeCert, NodeCert: &NodeCertCmd{Name: name, Serial: serial, NotAfter: notAfter}})
	return err
}
