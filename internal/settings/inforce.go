package settings

import (
	"log/slog"
	"sync"
)

// InForce turns the stored cluster configuration into the settings a node
// acts on (Valid), logging each distinct problem once rather than on every
// read: subsystems read the settings every few hundred milliseconds.
type InForce struct {
	log *slog.Logger

	mu   sync.Mutex
	last string // the problem last logged
}

// NewInForce returns an InForce that logs to log.
func NewInForce(log *slog.Logger) *InForce { return &InForce{log: log} }

// Of is Valid(cfg) without the error, which is logged once per distinct
// problem: an unknown key or a bad value stored by an older version reads
// as its default.
func (f *InForce) Of(cfg map[string]string) map[string]string {
	valid, err := Valid(cfg)
	if err != nil {
		f.mu.Lock()
		warn := f.last != err.Error()
		f.last = err.Error()
		f.mu.Unlock()
		if warn {
			f.log.Warn("ignoring bad cluster settings, their defaults are in force; fix them with 'tandem cluster config set'", "err", err)
		}
	}
	return valid
}
