package main

import (
	"encoding/json"
	"testing"

	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

func TestConfigGetDefaults(t *testing.T) {
	dir, f := startDaemon(t)
	r := runCLI(t, "", "--data-dir", dir, "cluster", "config", "get", "--defaults")
	r.wantCode(t, 0)
	wantMatch(t, "stdout", r.stdout,
		`KEY\s+VALUE\s+DEFAULT\s+UNIT\s+DESCRIPTION`,
		`(?m)^ha\.dead_timeout\s+3s\s+3s\s+duration\s+no answer`,
		`(?m)^resync\.rate\s+100MiB/s \*\s+0\s+rate\s+resync limit`,
		`stored key site="lab" is not a known setting`,
		`stored value ha.dead_timeout="bogus" is not valid, the default 3s is in force`,
	)
	if c := f.only(t); !c.req.(*tandemv1.GetConfigRequest).GetDefaults() {
		t.Errorf("--defaults not sent: %v", c.req)
	}

	r = runCLI(t, "", "--data-dir", dir, "cluster", "config", "get", "--defaults", "-o", "json")
	r.wantCode(t, 0)
	var got struct {
		Settings []struct {
			Key, Value, Unit string
			DefaultValue     string `json:"default_value"`
			Set              bool
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || len(got.Settings) != 2 {
		t.Fatalf("json: %v\n%s", err, r.stdout)
	}
	if s := got.Settings[1]; s.Key != "resync.rate" || s.Value != "100MiB/s" || s.DefaultValue != "0" || !s.Set || s.Unit != "rate" {
		t.Errorf("json setting: %+v", s)
	}

	// Without --defaults: only what was set.
	r = runCLI(t, "", "--data-dir", dir, "cluster", "config", "get")
	r.wantCode(t, 0)
	wantMatch(t, "stdout", r.stdout, `(?m)^resync\.rate\s+100MiB/s$`)
}

// A setting the daemon refuses (InvalidArgument) is a usage error: exit 2.
func TestConfigSetRefusedIsUsageError(t *testing.T) {
	dir, _ := startDaemon(t)
	r := runCLI(t, "", "--data-dir", dir, "cluster", "config", "set", "nosuch.key=1")
	r.wantCode(t, 2)
	wantMatch(t, "stderr", r.stderr, `unknown setting "nosuch.key"; the settings are: resync.rate`)
	r = runCLI(t, "", "--data-dir", dir, "cluster", "config", "set", "resync.rate=100M")
	r.wantCode(t, 0)
}
