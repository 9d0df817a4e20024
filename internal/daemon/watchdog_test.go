package daemon

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tandemhci/tandem/ha"
	"github.com/tandemhci/tandem/internal/config"
	"github.com/tandemhci/tandem/internal/state"
)

func TestWatchdogStopsPettingWhenSelfFenced(t *testing.T) {
	path := filepath.Join(t.TempDir(), "watchdog")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	if w, err := openWatchdog(filepath.Join(t.TempDir(), "none"), time.Second, log); w != nil || err != nil {
		t.Fatalf("missing device: %v %v", w, err)
	}
	w, err := openWatchdog(path, 4*time.Second, log)
	if err != nil || w == nil {
		t.Fatal(err)
	}
	tm := ha.DefaultTiming()
	tm.HeartbeatInterval = time.Millisecond
	h := &haManager{log: log, timing: tm}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { h.runWatchdog(ctx, w); close(done) }()
	size := func() int64 {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	for size() < 3 {
		time.Sleep(time.Millisecond)
	}
	h.mu.Lock()
	h.selfFenced = true
	stopped := size()
	h.mu.Unlock()
	time.Sleep(50 * time.Millisecond)
	if size() != stopped {
		t.Fatal("still petting after the self-fence")
	}
	cancel()
	<-done
	b, _ := os.ReadFile(path)
	if b[len(b)-1] != 'V' {
		t.Fatalf("no magic close on shutdown: %q", b[len(b)-8:])
	}
}

// A node whose lease ran out while it runs nothing (a node still joining)
// does not fence itself, so its watchdog keeps petting; one that may run
// something (libvirtd there but not answering) does.
func TestLeaseExpiryFencesOnlyWithSomethingToStop(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	for _, tc := range []struct {
		name   string
		socket func(dir string) string
		fenced bool
	}{
		{"compute off", func(string) string { return config.ComputeOff }, false},
		{"no libvirtd socket", func(dir string) string { return filepath.Join(dir, "libvirt-sock") }, false},
		{"libvirtd not answering", func(dir string) string {
			p := filepath.Join(dir, "libvirt-sock")
			if err := os.WriteFile(p, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			return p
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := &Daemon{log: log, st: &state.State{Fence: &state.SelfFence{}}}
			d.cfg.NodeName = "n1"
			d.cfg.DataDir = t.TempDir()
			d.cfg.Compute.LibvirtSocket = tc.socket(t.TempDir())
			d.st.Config, d.st.Log = d.cfg, log
			d.vms = d.newVMs(t.Context())
			h := newHAManager(d)
			h.lease = ha.NewLease(h.timing, time.Now().Add(-time.Minute)) // long expired
			h.selfFence(t.Context())
			if h.frozen() != tc.fenced {
				t.Fatalf("fenced = %v, want %v", h.frozen(), tc.fenced)
			}
		})
	}
}
