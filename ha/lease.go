package ha

import "time"

// Lease is a node's own self-fence lease. Not safe for concurrent use.
type Lease struct {
	t        Timing
	renewed  time.Time
	quorumOK time.Time
	// pingAt is a leader ping that found no quorum proof recent enough;
	// a check that started within an interval of it still counts.
	pingAt time.Time
}

// NewLease starts with a lease renewed at now (the node just started and
// the cluster cannot have given up on it yet).
func NewLease(t Timing, now time.Time) *Lease { return &Lease{t: t, renewed: now} }

// QuorumOK records a successful quorum check that started at start. The
// leader renews on it alone. A follower renews as of a pending leader ping
// (LeaderPing) if the check started within a heartbeat interval of it,
// before or after.
func (l *Lease) QuorumOK(start time.Time, leader bool) {
	if start.After(l.quorumOK) {
		l.quorumOK = start
	}
	if leader {
		l.renew(start)
	}
	if !l.pingAt.IsZero() {
		if d := start.Sub(l.pingAt); d >= -l.t.HeartbeatInterval && d <= l.t.HeartbeatInterval {
			l.renew(l.pingAt)
			l.pingAt = time.Time{}
		} else if d > l.t.HeartbeatInterval {
			l.pingAt = time.Time{}
		}
	}
}

// LeaderPing records a ping from the metadata leader received at at: it
// renews the lease if this node proved quorum within a heartbeat interval.
// Otherwise the ping is kept, and the caller should check quorum at once:
// a check started within an interval after the ping renews as of the ping
// (QuorumOK). Either way the renewal is never later than the ping, and
// rests on a quorum proof within an interval of it.
//
// Why the second way: quorum checks run once per HA round (an interval of
// sleep plus the check), so a proof is up to two intervals old when a ping
// lands. Requiring it within one interval before the ping left renewals to
// the pings' phase against the rounds; with checks slowed by load, a
// healthy node went 4 s without one and fenced itself (bench/scale,
// creating volumes; issue 17).
func (l *Lease) LeaderPing(at time.Time) bool {
	if at.Sub(l.quorumOK) > l.t.HeartbeatInterval {
		l.pingAt = at
		return false
	}
	l.renew(at)
	l.pingAt = time.Time{}
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
