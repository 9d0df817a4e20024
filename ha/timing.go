package ha

import (
	"errors"
	"fmt"
	"time"
)

// Timing is every HA time constant; cluster configuration keys set them.
type Timing struct {
	HeartbeatInterval time.Duration
	SuspectTimeout    time.Duration
	DeadTimeout       time.Duration
	// FenceTimeout bounds one fencing attempt by one agent.
	FenceTimeout   time.Duration
	SelfFenceLease time.Duration
	// SelfFenceGrace is what a node needs to destroy its VMs once its lease
	// ran out; the cluster waits for it too.
	SelfFenceGrace time.Duration
}

// Cluster configuration keys of the timing.
const (
	KeyHeartbeat = "ha.heartbeat_interval"
	KeySuspect   = "ha.suspect_timeout"
	KeyDead      = "ha.dead_timeout"
	KeyFence     = "ha.fence_timeout"
	KeyLease     = "ha.self_fence_lease"
	KeyGrace     = "ha.self_fence_grace"
	// KeyArmed is "false" when automatic recovery is disarmed.
	KeyArmed = "ha.armed"
)

// DefaultTiming is documented in the package comment.
func DefaultTiming() Timing {
	return Timing{
		HeartbeatInterval: 500 * time.Millisecond,
		SuspectTimeout:    1500 * time.Millisecond,
		DeadTimeout:       3 * time.Second,
		FenceTimeout:      10 * time.Second,
		SelfFenceLease:    4 * time.Second,
		SelfFenceGrace:    2 * time.Second,
	}
}

// Validate checks the relations the design relies on.
func (t Timing) Validate() error {
	var errs []error
	if t.HeartbeatInterval < 50*time.Millisecond {
		errs = append(errs, fmt.Errorf("%s %v: at least 50ms", KeyHeartbeat, t.HeartbeatInterval))
	}
	if t.SuspectTimeout < 2*t.HeartbeatInterval {
		errs = append(errs, fmt.Errorf("%s %v: at least two heartbeat intervals (%v)", KeySuspect, t.SuspectTimeout, 2*t.HeartbeatInterval))
	}
	if t.DeadTimeout <= t.SuspectTimeout {
		errs = append(errs, fmt.Errorf("%s %v: must be longer than %s (%v)", KeyDead, t.DeadTimeout, KeySuspect, t.SuspectTimeout))
	}
	if t.SelfFenceLease < 2*t.HeartbeatInterval {
		errs = append(errs, fmt.Errorf("%s %v: at least two heartbeat intervals", KeyLease, t.SelfFenceLease))
	}
	if t.FenceTimeout <= 0 || t.SelfFenceGrace < 0 {
		errs = append(errs, errors.New("fence timeout must be positive and the self-fence grace not negative"))
	}
	return errors.Join(errs...)
}

// TimingFrom reads the timing from cluster configuration, keeping the
// defaults for keys that are absent; a bad value is an error naming it.
func TimingFrom(cfg map[string]string) (Timing, error) {
	t := DefaultTiming()
	for _, f := range []struct {
		key string
		d   *time.Duration
	}{{KeyHeartbeat, &t.HeartbeatInterval}, {KeySuspect, &t.SuspectTimeout}, {KeyDead, &t.DeadTimeout},
		{KeyFence, &t.FenceTimeout}, {KeyLease, &t.SelfFenceLease}, {KeyGrace, &t.SelfFenceGrace}} {
		v, ok := cfg[f.key]
		if !ok {
			continue
		}
		d, err := time.ParseDuration(v)
		if err != nil {
			return DefaultTiming(), fmt.Errorf("%s=%q: %w", f.key, v, err)
		}
		*f.d = d
	}
	if err := t.Validate(); err != nil {
		return DefaultTiming(), err
	}
	return t, nil
}

// Armed reads the cluster-wide switch (armed unless "false").
func Armed(cfg map[string]string) bool { return cfg[KeyArmed] != "false" }
