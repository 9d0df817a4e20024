package e2e

import (
	"errors"
	"os/exec"
	"strings"
	"testing"
)

// TestOperatorConfigValidated: bad cluster settings are refused with exit
// code 2 and change nothing; a rate takes the units of --size.
func TestOperatorConfigValidated(t *testing.T) {
	c, td, ctx := volCluster(t)
	n1, n2 := c.Nodes[0], c.Nodes[1]

	if _, _, err := td.CLI(ctx, n1, "cluster", "config", "set", "resync.rate=100M"); err != nil {
		t.Fatal(err)
	}
	before, _, err := td.CLI(ctx, n2, "cluster", "config", "get", "--output", "json")
	if err != nil || !strings.Contains(squash(before), `"resync.rate": "100MiB/s"`) {
		t.Fatalf("resync.rate=100M not stored as 100MiB/s: %v\n%s", err, before)
	}
	for _, tt := range []struct{ kv, want string }{
		{"resync.rate=abc", `rate "abc" is not a number`},
		{"resync.rate=-5", `rate "-5" is negative`},
		{"resync.rate=100", "below the minimum of 64 KiB/s"},
		{"nosuch.key=1", `unknown setting "nosuch.key"; the settings are: ha.armed,`},
	} {
		_, stderr, err := td.CLI(ctx, n1, "cluster", "config", "set", tt.kv)
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(stderr, tt.want) {
			t.Errorf("config set %s: want exit 2 saying %q, got %v\n%s", tt.kv, tt.want, err, stderr)
		}
	}
	after, _, err := td.CLI(ctx, n2, "cluster", "config", "get", "--output", "json")
	if err != nil || after != before {
		t.Fatalf("config changed by refused sets: %v\nbefore:\n%s\nafter:\n%s", err, before, after)
	}
	out, _, err := td.CLI(ctx, n1, "cluster", "config", "get", "--defaults")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"resync.rate", "100MiB/s *", "ha.dead_timeout", "3s", "DEFAULT"} {
		if !strings.Contains(out, want) {
			t.Errorf("config get --defaults lacks %q:\n%s", want, out)
		}
	}
}
