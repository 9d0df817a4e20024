package cluster

import (
	"context"
	"time"

	"github.com/tandemhci/tandem/consensus"
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

// Config is what a Manager needs; every field but VolumeWarnings is
// required.
type Config struct {
	State *state.State
	// Probe pings the members serving the backend addresses addrs, each
	// within timeout, and reports by address.
	Probe func(ctx context.Context, addrs []string, timeout time.Duration) map[string]Probe
	// QuorumTimeout bounds one linearizable read or quorum check.
	QuorumTimeout time.Duration
	// VolumeWarnings names the volumes of ms that are not in sync, for the
	// health report; nil reports none.
	VolumeWarnings func(ctx context.Context, ms *consensus.MetaState) []string
	// CheckSetting checks a setting's canonical value against the nodes
	// (vm.cpu_model: a model every node's libvirt knows) before it is
	// recorded; nil checks nothing beyond the value's form.
	CheckSetting func(ctx context.Context, key, value string) error
}

// Manager answers the cluster-wide calls. It is safe for concurrent use.
type Manager struct {
	st      *state.State
	probe   func(ctx context.Context, addrs []string, timeout time.Duration) map[string]Probe
	timeout time.Duration
	volumes func(ctx context.Context, ms *consensus.MetaState) []string
	check   func(ctx context.Context, key, value string) error
}

// New returns a Manager.
func New(c Config) *Manager {
	return &Manager{st: c.State, probe: c.Probe, timeout: c.QuorumTimeout, volumes: c.VolumeWarnings, check: c.CheckSetting}
}

// probeTimeout bounds each member's ping in the node table.
const probeTimeout = 250 * time.Millisecond
