package daemon

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/tandemhci/tandem/consensus"
)

// TestResyncRate: resync.rate takes the units of --size, and a value an
// older version stored without checking reads as the default (unlimited)
// with one warning, never as a garbage rate.
func TestResyncRate(t *testing.T) {
	for _, tt := range []struct {
		stored string
		want   int64
		warn   bool
	}{
		{"", 0, false},
		{"104857600", 100 << 20, false},
		{"100M", 100 << 20, false},
		{"100MiB/s", 100 << 20, false},
		{"0", 0, false},
		{"abc", 0, true},
		{"-5", 0, true},
		{"100", 0, true}, // below 64 KiB/s: a forgotten unit
	} {
		var logs bytes.Buffer
		m := &volumeManager{log: slog.New(slog.NewTextHandler(&logs, nil))}
		ms := &consensus.MetaState{Config: map[string]string{}}
		if tt.stored != "" {
			ms.Config["resync.rate"] = tt.stored
		}
		for range 3 {
			if got := m.resyncRate(ms); got != tt.want {
				t.Errorf("resync.rate=%q: %d bytes/s, want %d", tt.stored, got, tt.want)
			}
		}
		if n := strings.Count(logs.String(), "level=WARN"); (n == 1) != tt.warn || n > 1 {
			t.Errorf("resync.rate=%q: %d warnings, want warn=%v:\n%s", tt.stored, n, tt.warn, logs.String())
		}
		if tt.warn && !strings.Contains(logs.String(), "resync.rate") {
			t.Errorf("resync.rate=%q: the warning does not name the key:\n%s", tt.stored, logs.String())
		}
	}
}
