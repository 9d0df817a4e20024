package ha

import (
	"slices"
	"time"
)

// Liveness of a node as the detector sees it.
type Liveness string

// Liveness values.
const (
	Alive   Liveness = "alive"
	Suspect Liveness = "suspect"
	Dead    Liveness = "dead"
)

// Transition is a change of a node's liveness.
type Transition struct {
	Node     string
	From, To Liveness
	LastSeen time.Time
}

type nodeState struct {
	lastSeen time.Time
	state    Liveness
}

// Detector is the failure detector's state machine. Not safe for
// concurrent use; the leader's loop owns it.
type Detector struct {
	t     Timing
	nodes map[string]*nodeState
}

// NewDetector starts watching nodes at now: each gets a full DeadTimeout.
func NewDetector(t Timing, now time.Time, nodes []string) *Detector {
	d := &Detector{t: t, nodes: map[string]*nodeState{}}
	d.SetNodes(now, nodes)
	return d
}

// SetNodes adds new nodes (seen at now) and forgets removed ones.
func (d *Detector) SetNodes(now time.Time, nodes []string) {
	for _, n := range nodes {
		if _, ok := d.nodes[n]; !ok {
			d.nodes[n] = &nodeState{lastSeen: now, state: Alive}
		}
	}
	for n := range d.nodes {
		if !slices.Contains(nodes, n) {
			delete(d.nodes, n)
		}
	}
}

// Seen records an answer from node received at at.
func (d *Detector) Seen(node string, at time.Time) {
	if s, ok := d.nodes[node]; ok && at.After(s.lastSeen) {
		s.lastSeen = at
	}
}

// Tick re-evaluates every node at now and returns the changes, sorted.
func (d *Detector) Tick(now time.Time) []Transition {
	var out []Transition
	for name, s := range d.nodes {
		silent := now.Sub(s.lastSeen)
		next := Alive
		switch {
		case silent >= d.t.DeadTimeout:
			next = Dead
		case silent >= d.t.SuspectTimeout:
			next = Suspect
		}
		if next != s.state {
			out = append(out, Transition{Node: name, From: s.state, To: next, LastSeen: s.lastSeen})
			s.state = next
		}
	}
	slices.SortFunc(out, func(a, b Transition) int {
		switch {
		case a.Node < b.Node:
			return -1
		case a.Node > b.Node:
			return 1
		}
		return 0
	})
	return out
}

// State is a node's liveness and when it last answered.
func (d *Detector) State(node string) (Liveness, time.Time, bool) {
	s, ok := d.nodes[node]
	if !ok {
		return "", time.Time{}, false
	}
	return s.state, s.lastSeen, true
}

// LeaseExpiry is when node's self-fence lease has provably run out, given
// that it last answered at lastSeen (see the package comment).
func (t Timing) LeaseExpiry(lastSeen time.Time, drift time.Duration) time.Time {
	return lastSeen.Add(t.SelfFenceLease + t.HeartbeatInterval + drift + t.SelfFenceGrace)
}
