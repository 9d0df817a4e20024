package recovery

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tandemhci/tandem/ha"
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
	m := &Manager{log: log, timing: tm}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.runWatchdog(ctx, w); close(done) }()
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
	m.mu.Lock()
	m.selfFenced = true
	stopped := size()
	m.mu.Unlock()
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
