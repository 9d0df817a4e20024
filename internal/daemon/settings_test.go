package daemon

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// TestSettingsOf: the daemon acts on valid settings only; a bad stored
// value (an older version's) reads as the default, logged once.
func TestSettingsOf(t *testing.T) {
	var logs bytes.Buffer
	d := &Daemon{log: slog.New(slog.NewTextHandler(&logs, nil))}
	stored := map[string]string{"ha.fence_timeout": "1h", "ha.dead_timeout": "5s", "site": "lab"}
	for range 3 {
		got := d.settingsOf(stored)
		if len(got) != 1 || got["ha.dead_timeout"] != "5s" {
			t.Fatalf("settingsOf = %v", got)
		}
	}
	if n := strings.Count(logs.String(), "level=WARN"); n != 1 || !strings.Contains(logs.String(), "ha.fence_timeout") || !strings.Contains(logs.String(), "site") {
		t.Errorf("%d warnings:\n%s", n, logs.String())
	}
}
