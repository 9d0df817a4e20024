package main

import (
	"context"
	"log/slog"
	"time"

	sd "github.com/coreos/go-systemd/v22/daemon"
)

// liveness is what the service manager's watchdog follows.
type liveness interface {
	Ready() <-chan struct{}
	LastTick() time.Time
}

// notifySystemd tells systemd (Type=notify) when tandemd serves, pets its
// watchdog while the daemon's health loop keeps ticking, and says when it
// stops. Outside systemd (no NOTIFY_SOCKET) every call is a no-op.
func notifySystemd(ctx context.Context, d liveness, log *slog.Logger) {
	select {
	case <-ctx.Done():
		return
	case <-d.Ready():
	}
	if _, err := sd.SdNotify(false, sd.SdNotifyReady); err != nil {
		log.Warn("cannot tell systemd that tandemd is ready", "err", err)
	}
	defer func() { _, _ = sd.SdNotify(false, sd.SdNotifyStopping) }()
	interval, err := sd.SdWatchdogEnabled(false)
	if err != nil || interval <= 0 {
		<-ctx.Done()
		return
	}
	// Ping at half the interval, but only while the health loop is alive:
	// a loop stuck for the whole interval lets systemd restart tandemd.
	tick := time.NewTicker(interval / 2)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if last := d.LastTick(); time.Since(last) < interval {
			_, _ = sd.SdNotify(false, sd.SdNotifyWatchdog)
		} else {
			log.Error("health loop stalled; not petting systemd's watchdog", "last_round", last)
		}
	}
}
