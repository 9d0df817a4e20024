package cluster

import (
	"context"
	"time"

	"github.com/tandemhci/tandem/internal/state"
)

// Probe is what pinging a member found.
type Probe struct {
	Online bool
	RTT    time.Duration
	// Detail says why a member is offline.
	Detail string
	// Version is the member's tandemd version.
	Version string
}

// Config is what a Manager needs; every field is required.
type Config struct {
	State *state.State
	// Probe pings the members serving the backend addresses addrs, each
	// within timeout, and reports by address.
	Probe func(ctx context.Context, addrs []string, timeout time.Duration) map[string]Probe
	// QuorumTimeout bounds one linearizable read or quorum check.
	QuorumTimeout time.Duration
}

// Manager answers the cluster-wide calls. It is safe for concurrent use.
type Manager struct {
	st      *state.State
	probe   func(ctx context.Context, addrs []string, timeout time.Duration) map[string]Probe
	timeout time.Duration
}

// New returns a Manager.
func New(c Config) *Manager {
	return &Manager{st: c.State, probe: c.Probe, timeout: c.QuorumTimeout}
}

// probeTimeout bounds each member's ping in the node table.
const probeTimeout = 250 * time.Millisecond
