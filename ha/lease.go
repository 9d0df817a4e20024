package ha

import "time"

// Lease is a node's own self-fence lease. Not safe for concurrent use.
type Lease struct {
	t        Timing
	renewed  time.Time
	quorumOK time.Time
}

// NewLease starts with a lease renewed at now (the node just started and
// the cluster cannot have given up on it yet).
func NewLease(t Timing, now time.Time) *Lease { return &Lease{t: t, renewed: now} }

// QuorumOK records a successful quorum check that started at start. The
// leader renews on it alone.
func (l *Lease) QuorumOK(start time.Time, leader bool) {
	if start.After(l.quorumOK) {
		l.quorumOK = start
	}
	if leader {
		l.renew(start)
	}
}

// LeaderPing records a ping from the metadata leader received at at: it
// renews the lease if this node proved quorum within a heartbeat interval.
func (l *Lease) LeaderPing(at time.Time) bool {
	if at.Sub(l.quorumOK) > l.t.HeartbeatInterval {
		return false
	}
	l.renew(at)
	return true
}

func (l *Lease) renew(at time.Time) {
	if at.After(l.renewed) {
		l.renewed = at
	}
}

// Expired reports whether the lease ran out at now: the node must stop
// its VMs and freeze its volumes.
func (l *Lease) Expired(now time.Time) bool { return now.Sub(l.renewed) > l.t.SelfFenceLease }

// Renewed is the last renewal.
func (l *Lease) Renewed() time.Time { return l.renewed }

// SetTiming changes the timing (the cluster configuration changed).
func (l *Lease) SetTiming(t Timing) { l.t = t }
