package fencing

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// PowerState is what an agent knows about the node's power.
type PowerState int

const (
	// PowerUnknown means the agent has no positive evidence either way.
	PowerUnknown PowerState = iota
	PowerOn
	PowerOff
)

func (s PowerState) String() string {
	switch s {
	case PowerOn:
		return "on"
	case PowerOff:
		return "off"
	default:
		return "unknown"
	}
}

// ErrNotConfirmed matches every outcome in which fencing was not confirmed.
var ErrNotConfirmed = errors.New("fencing not confirmed")

// Result describes one fencing attempt.
type Result struct {
	Agent     string
	Confirmed bool // positive evidence that the node can no longer write
	PowerOff  bool // the evidence is a power-off reported by a BMC
	Detail    string
	At        time.Time
}

// Fencer is one fencing agent for one node.
//
// Fence returns a nil error only with Result.Confirmed == true; any other
// outcome returns Confirmed == false and a non-nil error.
type Fencer interface {
	Name() string
	// Fence powers the node off and confirms that it is off.
	Fence(ctx context.Context) (Result, error)
	// Status reports the node's power state: On, Off or Unknown.
	Status(ctx context.Context) (PowerState, error)
	// Unfence powers the node back on.
	Unfence(ctx context.Context) error
}

// FenceAny tries the agents in order and returns the first confirmed result.
// If none confirms, it returns the last result (Confirmed == false) and an
// error that joins every agent's failure and matches ErrNotConfirmed.
// Agent errors are already free of secrets, so the joined error is too.
func FenceAny(ctx context.Context, agents ...Fencer) (Result, error) {
	if len(agents) == 0 {
		return Result{At: time.Now()}, fmt.Errorf("%w: no fencing agents configured", ErrNotConfirmed)
	}
	errs := []error{ErrNotConfirmed}
	var last Result
	for _, a := range agents {
		if err := ctx.Err(); err != nil {
			errs = append(errs, fmt.Errorf("stopped before %s: %w", a.Name(), err))
			break
		}
		r, err := a.Fence(ctx)
		if err == nil && r.Confirmed {
			return r, nil
		}
		// Guard against agents that break the contract: a "confirmed" result
		// that comes with an error is not trusted.
		r.Confirmed = false
		last = r
		if err == nil {
			err = fmt.Errorf("%w: %s", ErrNotConfirmed, r.Detail)
		}
		errs = append(errs, fmt.Errorf("agent %s: %w", a.Name(), err))
	}
	if last.At.IsZero() {
		last.At = time.Now()
	}
	return last, errors.Join(errs...)
}

// fenceResult completes res, the outcome of a power-off that ended with
// err: confirmed off when err is nil, else not confirmed, with err as the
// detail.
func fenceResult(res Result, err error) (Result, error) {
	res.At = time.Now()
	if err != nil {
		res.Detail = err.Error()
		return res, fmt.Errorf("%w: %w", ErrNotConfirmed, err)
	}
	res.Confirmed, res.PowerOff = true, true
	return res, nil
}
