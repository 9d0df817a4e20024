package recovery

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// watchdog is the second guard of self-fencing (docs/design.md §5, as SBD and
// Proxmox use it): tandemd pets the device while its lease is valid. If
// tandemd hangs or fences itself, the petting stops and the hardware
// resets the node, even if destroying the VMs failed.
type watchdog struct {
	f   *os.File
	log *slog.Logger
}

// openWatchdog opens path and sets its timeout to the lease; a missing
// device is not an error (nil, nil): these machines have none.
func openWatchdog(path string, timeout time.Duration, log *slog.Logger) (*watchdog, error) {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	secs := max(int(timeout/time.Second), 1)
	// Regular files (tests) do not take the ioctl; a device that refuses
	// keeps its own timeout, which is logged.
	if err := unix.IoctlSetPointerInt(int(f.Fd()), unix.WDIOC_SETTIMEOUT, secs); err != nil {
		log.Warn("watchdog: cannot set its timeout; it keeps its own", "path", path, "want_seconds", secs, "err", err)
	}
	log.Info("watchdog armed: a hung or self-fenced tandemd resets this node", "path", path, "timeout_seconds", secs)
	return &watchdog{f: f, log: log}, nil
}

// pet keeps the node alive for one more timeout.
func (w *watchdog) pet() {
	if w == nil {
		return
	}
	if _, err := w.f.Write([]byte{'.'}); err != nil {
		w.log.Error("watchdog: pet failed", "err", err)
	}
}

// disarm is the magic close of a clean shutdown: no reset follows.
func (w *watchdog) disarm() {
	if w == nil {
		return
	}
	_, _ = w.f.Write([]byte{'V'})
	_ = w.f.Close()
}

// runWatchdog pets every interval while this node is not self-fenced.
func (m *Manager) runWatchdog(ctx context.Context, w *watchdog) {
	if w == nil {
		return
	}
	defer w.disarm()
	for {
		// Pet under the lock: once selfFence set the flag, no pet follows.
		m.mu.Lock()
		fenced, interval := m.selfFenced, m.timing.HeartbeatInterval
		if !fenced {
			w.pet()
		}
		m.mu.Unlock()
		if fenced {
			m.log.Error("watchdog: no longer petted; the hardware resets this node")
			<-ctx.Done()
			return
		}
		if !sleep(ctx, interval) {
			return
		}
	}
}
