package settings

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// A node acts on valid settings only; a bad stored value (an older
// version's) reads as the default, logged once however often it is read.
func TestInForce(t *testing.T) {
	var logs bytes.Buffer
	f := NewInForce(slog.New(slog.NewTextHandler(&logs, nil)))
	stored := map[string]string{"ha.fence_timeout": "1h", "ha.dead_timeout": "5s", "site": "lab"}
	for range 3 {
		got := f.Of(stored)
		if len(got) != 1 || got["ha.dead_timeout"] != "5s" {
			t.Fatalf("Of = %v", got)
		}
	}
	if n := strings.Count(logs.String(), "level=WARN"); n != 1 || !strings.Contains(logs.String(), "ha.fence_timeout") || !strings.Contains(logs.String(), "site") {
		t.Errorf("%d warnings:\n%s", n, logs.String())
	}
	// A new problem is logged again.
	f.Of(map[string]string{"other": "x"})
	if n := strings.Count(logs.String(), "level=WARN"); n != 2 {
		t.Errorf("a new problem: %d warnings in all, want 2", n)
	}
}
