package fencing

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// The self-fence lease safety margin.
//
// A node that cannot renew its lease stops its VMs and freezes its volumes
// once its own clock says `lease` has passed since it started the last
// successful renewal (docs/design.md §5). We measure from when we saw that
// renewal, which is later, so the only ways the node can still be writing
// after our `lease` are:
//   - clock rate drift: its clock may run slow and ours fast, each by up to
//     MaxClockDriftPPM, so its `lease` can last lease·(1+2ρ) of ours;
//   - the self-fence action itself (noticing expiry, killing VMs, freezing
//     I/O), bounded by the grace (DefaultSelfFenceGrace unless overridden).
//
// Margin = 2·ρ·lease + grace. Only rates matter, not offsets: both ends use
// monotonic elapsed time, never each other's wall-clock timestamps.
const (
	// MaxClockDriftPPM bounds the clock rate error of each node: 2× NTP's
	// maximum slew (500 ppm), far above quartz tolerance (~100 ppm).
	MaxClockDriftPPM = 1000
	// DefaultSelfFenceGrace bounds how long a node takes, after its lease
	// ran out, to notice and finish stopping its VMs and freezing I/O.
	DefaultSelfFenceGrace = 2 * time.Second
)

// LeaseMargin is the safety margin added to a lease of the given length
// with the given self-fence grace.
func LeaseMargin(lease, grace time.Duration) time.Duration {
	drift := time.Duration(int64(lease) / 1_000_000 * 2 * MaxClockDriftPPM)
	return drift + grace
}

// LeaseActiveError says the lease may still be held; retry after Remaining.
type LeaseActiveError struct {
	Agent     string
	Remaining time.Duration
}

func (e *LeaseActiveError) Error() string {
	return fmt.Sprintf("%s: lease not provably expired, %s left", e.Agent, e.Remaining)
}

// Is makes LeaseActiveError match ErrNotConfirmed.
func (e *LeaseActiveError) Is(target error) bool { return target == ErrNotConfirmed }

// LeaseOption customises NewLease.
type LeaseOption func(*leaseAgent)

// WithSelfFenceGrace overrides DefaultSelfFenceGrace, e.g. to match the
// node's measured self-fence time. Negative values are treated as zero.
func WithSelfFenceGrace(d time.Duration) LeaseOption {
	return func(l *leaseAgent) { l.grace = max(d, 0) }
}

type leaseAgent struct {
	name        string
	lastRenewal time.Time
	lease       time.Duration
	grace       time.Duration
	clock       func() time.Time
}

// NewLease returns an agent that confirms fencing once the node's
// self-fence lease has provably expired: now - lastRenewal > lease + margin
// (see LeaseMargin).
//
// lastRenewal must be read from this process's clock (ideally time.Now, so
// it carries a monotonic reading) when the node's last renewal was
// observed, never a timestamp sent by the node. clock nil means time.Now.
func NewLease(name string, lastRenewal time.Time, lease time.Duration, clock func() time.Time, opts ...LeaseOption) Fencer {
	if clock == nil {
		clock = time.Now
	}
	l := &leaseAgent{name: name, lastRenewal: lastRenewal, lease: lease, grace: DefaultSelfFenceGrace, clock: clock}
	for _, o := range opts {
		o(l)
	}
	return l
}

func (l *leaseAgent) Name() string { return "lease:" + l.name }

// Fence does not act on the node: it only checks whether the node must
// have fenced itself by now.
func (l *leaseAgent) Fence(ctx context.Context) (Result, error) {
	now := l.clock()
	res := Result{Agent: l.Name(), At: now}
	if err := ctx.Err(); err != nil {
		res.Detail = err.Error()
		return res, fmt.Errorf("%w: %s: %w", ErrNotConfirmed, l.Name(), err)
	}
	if l.lease <= 0 {
		// A zero lease is a configuration error, not an instantly expired lease.
		err := errors.New("lease duration not configured")
		res.Detail = err.Error()
		return res, fmt.Errorf("%w: %s: %w", ErrNotConfirmed, l.Name(), err)
	}
	need := l.lease + LeaseMargin(l.lease, l.grace)
	elapsed := now.Sub(l.lastRenewal)
	if elapsed > need {
		res.Confirmed = true
		res.Detail = fmt.Sprintf("lease expired: %s since last renewal > lease %s + margin %s",
			elapsed, l.lease, need-l.lease)
		return res, nil
	}
	left := need - elapsed
	res.Detail = fmt.Sprintf("lease not provably expired: %s left", left)
	return res, &LeaseActiveError{Agent: l.Name(), Remaining: left}
}

// Status is Unknown: a lease says nothing about the power.
func (l *leaseAgent) Status(context.Context) (PowerState, error) { return PowerUnknown, nil }

// Unfence is a no-op: the node rejoins by renewing its lease itself.
func (l *leaseAgent) Unfence(context.Context) error { return nil }
