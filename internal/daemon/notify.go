package daemon

import "time"

// Ready is closed once Run serves: every listener accepts calls and, on a
// node in a cluster, Raft and the volumes are up. A service manager is told
// the daemon started then, not before.
func (d *Daemon) Ready() <-chan struct{} { return d.ready }

// LastTick is when the daemon's health loop (HA's rounds) last completed,
// zero before the first or before Run. A service manager's watchdog pings
// only while it is recent, so a stuck daemon gets restarted.
func (d *Daemon) LastTick() time.Time {
	select {
	case <-d.ready:
		return d.ha.LastTick()
	default:
		return time.Time{}
	}
}
