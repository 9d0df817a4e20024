package consensus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	sm "github.com/lni/dragonboat/v4/statemachine"

	"github.com/tandemhci/tandem/internal/version"
)

// Versions and the cluster version (issue 14).
//
// Every tandemd build supports protocol levels up to version.ProtocolLevel.
// Each node records its version and level in its NodeRecord when it starts
// (opNodeVersion). The cluster version, in the metadata state, is the level
// the whole cluster speaks: it rises, by itself, in the entry that makes
// every member (joining or member, down or not) report at least the new
// level, and never falls. A Raft command kind or a replication wire change
// that an older release does not know belongs to a Feature with a Level
// above the base; it is refused, on every replica alike, while the cluster
// version is below that level, so an older member never meets it. A replica
// that meets a command above its own level anyway (a node downgraded below
// the cluster version) stops applying with an error instead of skipping or
// misapplying it.

// BaseClusterVersion is the cluster version of a state that never recorded
// one: the first release with versions, whose commands every node knows.
const BaseClusterVersion uint32 = 1

// ErrFeatureGated refuses a change whose feature the cluster version does
// not allow yet; the text names the nodes still on an older release. The
// state machine's refusal crosses the Raft boundary with ErrBadCommand's
// code (the catch-all of resultErrors, so the table is unchanged) and this
// text; both map to FailedPrecondition.
var ErrFeatureGated = errors.New("feature not enabled by the cluster version")

// Feature is a change to the Raft commands or the replication wire that
// needs every member to run a release supporting Level.
type Feature struct {
	Name  string
	Level uint32
	// Ops are the metadata command kinds the feature adds.
	Ops         []string
	Description string
}

// Features lists every gated feature, lowest level first. A release that
// adds one raises version.DefaultProtocol to its level.
func Features() []Feature {
	return []Feature{
		{Name: "node-notes", Level: 2, Ops: []string{opNodeNote}, Description: "operator notes on nodes (tandem node note)"},
	}
}

// FeatureByName finds a feature of Features.
func FeatureByName(name string) (Feature, bool) {
	for _, f := range Features() {
		if f.Name == name {
			return f, true
		}
	}
	return Feature{}, false
}

// opFeature is the feature that adds op, ok false for the base commands.
func opFeature(op string) (Feature, bool) {
	for _, f := range Features() {
		if slices.Contains(f.Ops, op) {
			return f, true
		}
	}
	return Feature{}, false
}

// opLevel is the protocol level a command kind needs.
func opLevel(op string) uint32 {
	if f, ok := opFeature(op); ok {
		return f.Level
	}
	return BaseClusterVersion
}

// Version is the cluster version: what every member supports.
func (s *MetaState) Version() uint32 { return max(s.ClusterVersion, BaseClusterVersion) }

// Behind lists, sorted, the nodes (joining or member) that do not report
// supporting level: they hold the cluster version below it. A node that
// never reported (Protocol 0) counts as behind.
func (s *MetaState) Behind(level uint32) []*NodeRecord {
	var out []*NodeRecord
	for _, n := range s.Nodes {
		if n.State != NodeRemoved && n.Protocol < level {
			out = append(out, n)
		}
	}
	slices.SortFunc(out, func(a, b *NodeRecord) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// gatedError is the refusal of feature f while the cluster version is
// below its level, naming the nodes that hold it back.
func (s *MetaState) gatedError(f Feature) error {
	var names []string
	for _, n := range s.Behind(f.Level) {
		v := n.Version
		if v == "" {
			v = "version not reported"
		}
		names = append(names, fmt.Sprintf("%s (%s, protocol %d)", n.Name, v, n.Protocol))
	}
	return fmt.Errorf("%w: %s needs cluster version %d, the cluster is at %d; nodes still on an older release: %s; upgrade them (tandem cluster upgrade-status)",
		ErrFeatureGated, f.Name, f.Level, s.Version(), strings.Join(names, ", "))
}

// Command ops of versions (kept at the end of the op lists).
const (
	opNodeVersion = "node-version"
	opNodeNote    = "node-note"
)

// NodeVersionCmd records the release a node runs.
type NodeVersionCmd struct {
	Name     string `json:"name"`
	Version  string `json:"version"`
	Protocol uint32 `json:"protocol"`
}

// NodeNoteCmd sets an operator's note on a node (feature node-notes).
type NodeNoteCmd struct {
	Name string `json:"name"`
	Note string `json:"note"`
}

// MaxNodeNote bounds a node's note, in bytes.
const MaxNodeNote = 256

// haltError is what Update returns for a command this build cannot apply:
// dragonboat stops the process on it, and this replica never skips or
// misapplies an entry its peers applied.
func (m *metaSM) haltError(e sm.Entry, c *Command, need uint32) error {
	return fmt.Errorf("metadata entry %d (%q) needs protocol level %d but this tandemd (version %s) supports %d: "+
		"this replica stops applying rather than skip or misapply it; install a release that supports cluster version %d",
		e.Index, c.Op, need, version.String(), m.supported(), max(need, m.s.Version()))
}

// supported is the highest level this replica's build applies.
func (m *metaSM) supported() uint32 {
	if m.level == 0 {
		return version.ProtocolLevel()
	}
	return m.level
}

// gate decides a command before it is applied. It returns halt, the level
// needed, when this build does not know a command the cluster version
// allows, or a refusal every replica gives alike (the command's level above
// the cluster version: a function of the replicated state only).
func (m *metaSM) gate(c *Command) (halt uint32, refuse error) {
	need := max(c.Level, opLevel(c.Op))
	if need > m.s.Version() {
		if f, ok := opFeature(c.Op); ok {
			return 0, m.s.gatedError(f)
		}
		return 0, fmt.Errorf("%w: command %q needs cluster version %d, the cluster is at %d", ErrFeatureGated, c.Op, need, m.s.Version())
	}
	if need > m.supported() {
		return need, nil
	}
	return 0, nil
}

// applyVersions applies the commands of this file.
func (m *metaSM) applyVersions(c *Command) ([]byte, error) {
	s := m.s
	switch c.Op {
	case opNodeVersion:
		v := c.NodeVersion
		if v == nil || v.Name == "" || v.Protocol == 0 {
			return nil, fmt.Errorf("%w: node-version needs a node and a protocol level", ErrBadCommand)
		}
		n, ok := s.Nodes[v.Name]
		if !ok {
			return nil, fmt.Errorf("%w: %s", ErrNodeNotFound, v.Name)
		}
		if v.Protocol < s.Version() {
			return nil, fmt.Errorf("%w: node %s runs %s (protocol %d) but the cluster version is %d: a release below the cluster version cannot rejoin; install one that supports %d",
				ErrFeatureGated, v.Name, v.Version, v.Protocol, s.Version(), s.Version())
		}
		if n.Version == v.Version && n.Protocol == v.Protocol {
			return json.Marshal(n) // restarted on the same release
		}
		prev := n.Version
		if prev == "" {
			prev = "unknown"
		}
		n.Version, n.Protocol = v.Version, v.Protocol
		m.audit(c, "node-version", fmt.Sprintf("node %s runs %s (protocol %d), was %s", n.Name, n.Version, n.Protocol, prev))
		m.raiseClusterVersion(c)
		return json.Marshal(n)
	case opNodeNote:
		nn := c.NodeNote
		if nn == nil || nn.Name == "" || len(nn.Note) > MaxNodeNote {
			return nil, fmt.Errorf("%w: node-note needs a node and at most %d bytes", ErrBadCommand, MaxNodeNote)
		}
		n, ok := s.Nodes[nn.Name]
		if !ok || n.State == NodeRemoved {
			return nil, fmt.Errorf("%w: %s", ErrNodeNotFound, nn.Name)
		}
		n.Note = nn.Note
		m.audit(c, "node-note", fmt.Sprintf("node %s: note %q", n.Name, n.Note))
		return json.Marshal(n)
	}
	return nil, fmt.Errorf("%w: unknown op %q", ErrBadCommand, c.Op)
}

// raiseClusterVersion raises the cluster version to the lowest level the
// nodes report, when that is higher: the finalisation of an upgrade,
// in the same entry as the last node's report or the removal of the last
// node that held it back. It reads the replicated state only.
func (m *metaSM) raiseClusterVersion(c *Command) {
	s := m.s
	low := uint32(0)
	first := true
	for _, n := range s.Nodes {
		if n.State == NodeRemoved {
			continue
		}
		if first || n.Protocol < low {
			low, first = n.Protocol, false
		}
	}
	if first || low <= s.Version() {
		return
	}
	prev := s.Version()
	s.ClusterVersion = low
	var enabled []string
	for _, f := range Features() {
		if f.Level > prev && f.Level <= low {
			enabled = append(enabled, f.Name)
		}
	}
	detail := fmt.Sprintf("cluster version %d -> %d: every node supports it", prev, low)
	if len(enabled) > 0 {
		detail += "; enabled: " + strings.Join(enabled, ", ")
	}
	m.audit(c, "cluster-version", detail)
}

// RecordVersion records that node runs release ver at protocol level
// proto; tandemd does it when it starts. A level below the cluster version
// is refused with ErrFeatureGated (the state machine refuses it too).
func (m *Meta) RecordVersion(ctx context.Context, node, ver string, proto uint32) (*NodeRecord, error) {
	s, err := m.State(ctx)
	if err != nil {
		return nil, err
	}
	if proto < s.Version() {
		return nil, fmt.Errorf("%w: node %s runs %s (protocol %d) but the cluster version is %d: a release below the cluster version cannot rejoin; install one that supports %d",
			ErrFeatureGated, node, ver, proto, s.Version(), s.Version())
	}
	if n, ok := s.Nodes[node]; ok && n.Version == ver && n.Protocol == proto {
		return n, nil // restarted on the same release: no entry needed
	}
	return proposeAs[NodeRecord](ctx, m, Command{Op: opNodeVersion, NodeVersion: &NodeVersionCmd{Name: node, Version: ver, Protocol: proto}}, "node")
}

// SetNodeNote sets (or, with "", clears) an operator's note on a node. It
// needs the feature node-notes: it is refused with ErrFeatureGated, naming
// the nodes on an older release, until the cluster version allows it.
func (m *Meta) SetNodeNote(ctx context.Context, node, note string) (*NodeRecord, error) {
	return proposeAs[NodeRecord](ctx, m, Command{Op: opNodeNote, NodeNote: &NodeNoteCmd{Name: node, Note: note}}, "node")
}

// checkGate refuses, before anything is proposed, a command of a feature
// that this build or the cluster version does not allow, with the nodes
// that hold it back. The state machine checks again when it applies.
func (m *Meta) checkGate(ctx context.Context, op string) error {
	f, ok := opFeature(op)
	if !ok {
		return nil
	}
	if f.Level > m.level {
		return fmt.Errorf("%w: %s needs protocol level %d and this tandemd (%s) supports %d; use a node that runs a newer release",
			ErrFeatureGated, f.Name, f.Level, version.String(), m.level)
	}
	s, err := m.State(ctx)
	if err != nil {
		return err
	}
	if s.Version() < f.Level {
		return s.gatedError(f)
	}
	return nil
}

// Level is the protocol level this client's build supports.
func (m *Meta) Level() uint32 { return m.level }
