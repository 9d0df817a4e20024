package consensus

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
)

// A rejoin re-admits a member that cannot run in the cluster any more
// because its node certificate expired (or the CA was rotated) while it was
// off. It consumes a join token like a join, but creates nothing: the
// node's record keeps its replica ID, role, addresses and state, and gets
// the serial of the certificate the admitting member signed. The
// certificates it held before stay on the record like a renewal's (the
// last keepCertSerials): they are expired or chain to a retired CA, so no
// handshake accepts them, and removing the node revokes whatever is listed.

// RejoinCmd consumes a join token to re-admit node Name.
type RejoinCmd struct {
	TokenID  string `json:"token_id"`
	Verifier string `json:"verifier"`
	Name     string `json:"name"`
	// ReplicaID is the replica the node's identity holds: a data directory
	// of an earlier incarnation of the name (removed, then joined again)
	// does not match the record and is refused.
	ReplicaID uint64 `json:"replica_id"`
	// Serial and NotAfter are the new certificate's; empty in the
	// pre-check (CheckRejoin), which runs before it is signed.
	Serial   string    `json:"serial,omitempty"`
	NotAfter time.Time `json:"not_after,omitzero"`
}

// opNodeRejoin re-admits a member with a join token.
const opNodeRejoin = "node-rejoin"

// checkRejoin is every check of a rejoin, shared by the state machine
// (which decides) and the read-only pre-check (Meta.CheckRejoin). The token
// is checked first, exactly as for a join, so a bad token learns nothing
// about node names. retried is true when the same rejoin, certificate
// included, already applied (a proposal retried after a timeout).
func (s *MetaState) checkRejoin(r *RejoinCmd, at time.Time) (n *NodeRecord, retried bool, err error) {
	if r == nil || r.Name == "" {
		return nil, false, fmt.Errorf("%w: rejoin without node", ErrBadCommand)
	}
	t, ok := s.Tokens[r.TokenID]
	if !ok || subtle.ConstantTimeCompare([]byte(t.Verifier), []byte(r.Verifier)) != 1 {
		return nil, false, ErrTokenInvalid
	}
	n, known := s.Nodes[r.Name]
	if t.UsedBy != "" {
		if known && t.UsedBy == r.Name && r.Serial != "" && slices.Contains(n.CertSerials, r.Serial) {
			return n, true, nil
		}
		return nil, false, fmt.Errorf("%w (by %s)", ErrTokenUsed, t.UsedBy)
	}
	if !at.Before(t.ExpiresAt) {
		return nil, false, ErrTokenExpired
	}
	switch {
	case !known:
		return nil, false, fmt.Errorf("%w: %s is not a node of this cluster, so it cannot rejoin; wipe its data directory and join it as a new node with 'tandem cluster join'", ErrNodeNotFound, r.Name)
	case n.State == NodeRemoved:
		return nil, false, fmt.Errorf("%w: node %s was removed from the cluster, so it cannot rejoin; wipe its data directory and join it as a new node with 'tandem cluster join'", ErrCertRevoked, r.Name)
	case r.ReplicaID != n.ReplicaID:
		return nil, false, fmt.Errorf("%w: node %s is replica %d of this cluster, but the rejoining data directory holds replica %d (an earlier incarnation of the name); wipe it and join as a new node", ErrNodeNotFound, r.Name, n.ReplicaID, r.ReplicaID)
	}
	return n, false, nil
}

// CheckRejoin is the state machine's verdict on a rejoin, for callers
// outside the package that hold a state (tests, fakes): nil when the
// token and the node would be accepted at time at.
func (s *MetaState) CheckRejoin(r RejoinCmd, at time.Time) error {
	_, _, err := s.checkRejoin(&r, at)
	return err
}

func (m *metaSM) applyRejoin(c *Command) ([]byte, error) {
	r := c.Rejoin
	if r == nil || r.Serial == "" || strings.ToLower(r.Serial) != r.Serial {
		return nil, fmt.Errorf("%w: node-rejoin needs a node and a lower-case hex serial", ErrBadCommand)
	}
	n, retried, err := m.s.checkRejoin(r, c.At)
	if err != nil {
		return nil, err
	}
	if retried {
		return json.Marshal(n)
	}
	if _, revoked := m.s.Revoked[r.Serial]; revoked {
		return nil, fmt.Errorf("%w: serial %s", ErrCertRevoked, r.Serial)
	}
	t := m.s.Tokens[r.TokenID]
	t.UsedBy, t.UsedAt = r.Name, c.At
	if !slices.Contains(n.CertSerials, r.Serial) {
		n.CertSerials = append(n.CertSerials, r.Serial)
		if over := len(n.CertSerials) - keepCertSerials; over > 0 {
			n.CertSerials = slices.Clone(n.CertSerials[over:])
		}
	}
	n.CertNotAfter = r.NotAfter
	m.audit(c, "node-rejoin", fmt.Sprintf("node %s (replica %d) rejoined with token %s: certificate serial %s, valid until %s", n.Name, n.ReplicaID, r.TokenID, r.Serial, r.NotAfter.UTC().Format(time.RFC3339)))
	return json.Marshal(n)
}

// rejoinQuery asks whether a rejoin would be accepted at time at; the
// answer is a rejoinVerdict.
type rejoinQuery struct {
	rejoin RejoinCmd
	at     time.Time
}

// rejoinVerdict carries the refusal as a value (a read's error is taken
// for a failed read and retried) and, on success, a copy of the record.
type rejoinVerdict struct {
	node NodeRecord
	err  error
}

func (s *MetaState) lookupRejoin(q rejoinQuery) rejoinVerdict {
	if !s.Bootstrapped() {
		return rejoinVerdict{err: ErrNotBootstrapped}
	}
	n, _, err := s.checkRejoin(&q.rejoin, q.at)
	if err != nil {
		return rejoinVerdict{err: err}
	}
	c := *n
	c.CertSerials = slices.Clone(n.CertSerials)
	c.Fence = nil // not needed, and it holds sealed secrets
	return rejoinVerdict{node: c}
}

// CheckRejoin runs the state machine's checks of a rejoin (token known,
// secret right, unused, unexpired; node known, not removed, same replica)
// on the committed state through a linearizable read, without proposing
// anything: a bogus rejoin costs no Raft entry. It returns the node's
// record when Rejoin would be accepted now; Rejoin checks again when it
// applies, and that check stays the authority.
func (m *Meta) CheckRejoin(ctx context.Context, r RejoinCmd) (NodeRecord, error) {
	r.Serial, r.NotAfter = "", time.Time{}
	v, err := m.h.Read(ctx, MetaShardID, rejoinQuery{rejoin: r, at: m.now().UTC()})
	if err != nil {
		return NodeRecord{}, err
	}
	verdict, ok := v.(rejoinVerdict)
	if !ok {
		return NodeRecord{}, fmt.Errorf("%w: rejoin check answered %T", ErrBadCommand, v)
	}
	return verdict.node, verdict.err
}

// Rejoin consumes the token and records the node's new certificate; the
// node's record is returned as committed.
func (m *Meta) Rejoin(ctx context.Context, r RejoinCmd) (NodeRecord, error) {
	n, err := proposeAs[NodeRecord](ctx, m, Command{Op: opNodeRejoin, Rejoin: &r}, "node")
	if err != nil {
		return NodeRecord{}, err
	}
	return *n, nil
}

// CertView is what the certificate check (checkCert) reads of the
// metadata: the nodes' states and issued serials, and the revocation
// list. A member hands it to a node that rejoins: that node's own replica
// is behind (it does not know the certificates its peers renewed while it
// was off, so it would refuse them), and it checks by the view until its
// replica has applied Applied.
type CertView struct {
	s       *MetaState
	Applied uint64
}

// CertViewNode is one node in a CertView.
type CertViewNode struct {
	Name    string
	Removed bool
	Serials []string
}

// NewCertView builds a view from its parts (as a member sent them).
func NewCertView(nodes []CertViewNode, revoked []string, applied uint64) *CertView {
	s := &MetaState{Nodes: map[string]*NodeRecord{}, Revoked: map[string]*RevokedCert{}}
	for _, n := range nodes {
		st := NodeMember
		if n.Removed {
			st = NodeRemoved
		}
		s.Nodes[n.Name] = &NodeRecord{Name: n.Name, State: st, CertSerials: slices.Clone(n.Serials)}
	}
	for _, serial := range revoked {
		s.Revoked[serial] = &RevokedCert{Serial: serial, Reason: "on the revocation list"}
	}
	return &CertView{s: s, Applied: applied}
}

// CertViewOf is the view of state s, as a member hands it out.
func CertViewOf(s *MetaState) (nodes []CertViewNode, revoked []string, applied uint64) {
	for _, n := range s.Nodes {
		nodes = append(nodes, CertViewNode{Name: n.Name, Removed: n.State == NodeRemoved, Serials: slices.Clone(n.CertSerials)})
	}
	slices.SortFunc(nodes, func(a, b CertViewNode) int { return strings.Compare(a.Name, b.Name) })
	for serial := range s.Revoked {
		revoked = append(revoked, serial)
	}
	slices.Sort(revoked)
	return nodes, revoked, s.Applied
}

// CheckCert applies the revocation rule (MetaState.checkCert) by the view.
func (v *CertView) CheckCert(ref CertRef) error { return v.s.checkCert(ref) }
