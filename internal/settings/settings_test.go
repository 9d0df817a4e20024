package settings

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tandemhci/tandem/ha"
)

func TestRegistry(t *testing.T) {
	keys := Keys()
	// Every key the code reads is registered.
	for _, k := range []string{ha.KeyHeartbeat, ha.KeySuspect, ha.KeyDead, ha.KeyFence, ha.KeyLease, ha.KeyGrace, ha.KeyArmed, KeyResyncRate, KeyDataStream} {
		if !slices.Contains(keys, k) {
			t.Errorf("key %s is not registered", k)
		}
	}
	if !slices.IsSorted(keys) || len(slices.Compact(slices.Clone(keys))) != len(keys) {
		t.Errorf("keys not sorted or not unique: %v", keys)
	}
	for _, s := range All() {
		// Defaults are canonical and valid, and the description is there.
		c, err := Canonical(s.Key, s.Default)
		if err != nil || c != s.Default {
			t.Errorf("%s: default %q canonical as %q, %v", s.Key, s.Default, c, err)
		}
		if s.Description == "" || s.Kind == "" {
			t.Errorf("%s: no description or kind", s.Key)
		}
	}
	// The defaults are the HA timing's and pass its coherence check.
	cfg := map[string]string{}
	for _, s := range All() {
		cfg[s.Key] = s.Default
	}
	if tm, err := ha.TimingFrom(cfg); err != nil || tm != ha.DefaultTiming() {
		t.Errorf("defaults as HA timing: %+v, %v", tm, err)
	}
	// All returns a copy: changing it changes nothing.
	a := All()
	a[0].Default = "garbage"
	if All()[0].Default == "garbage" {
		t.Error("All shares the registry")
	}
}

func TestCanonical(t *testing.T) {
	for _, tt := range []struct{ key, in, want string }{
		{"resync.rate", "100M", "100MiB/s"},
		{"resync.rate", "100MiB/s", "100MiB/s"},
		{"resync.rate", "104857600", "100MiB/s"},
		{"resync.rate", "0", "0"},
		{"resync.rate", "64K", "64KiB/s"},
		{"resync.rate", "1.5G", "1536MiB/s"},
		{"ha.dead_timeout", "5s", "5s"},
		{"ha.dead_timeout", "1500ms", "1.5s"},
		{"ha.self_fence_grace", "0s", "0s"},
		{"ha.heartbeat_interval", "50ms", "50ms"},
		{"ha.armed", "true", "true"},
		{"ha.armed", "FALSE", "false"},
	} {
		got, err := Canonical(tt.key, tt.in)
		if err != nil || got != tt.want {
			t.Errorf("Canonical(%s, %q) = %q, %v; want %q", tt.key, tt.in, got, err, tt.want)
		}
	}
	for _, tt := range []struct{ key, in, want string }{
		{"nosuch.key", "1", `unknown setting "nosuch.key"; the settings are: ha.armed, ha.dead_timeout,`},
		{"site", "lab", "resync.rate"},
		{"resync.rate", "abc", `resync.rate: rate "abc" is not a number`},
		{"resync.rate", "-5", `resync.rate: rate "-5" is negative`},
		{"resync.rate", "100", "below the minimum of 64 KiB/s"},
		{"resync.rate", "100GB", "ambiguous"},
		{"resync.rate", "", "empty"},
		{"ha.dead_timeout", "5", `ha.dead_timeout="5": not a duration`},
		{"ha.dead_timeout", "-1s", "between 100ms and 10m0s"},
		{"ha.heartbeat_interval", "10ms", "between 50ms and 10s"},
		{"ha.fence_timeout", "1h", "between 1s and 10m0s"},
		{"ha.armed", "yes", `ha.armed="yes": true or false`},
		{"ha.armed", "1", "true or false"},
	} {
		got, err := Canonical(tt.key, tt.in)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Canonical(%s, %q) = %q, %v; want an error saying %q", tt.key, tt.in, got, err, tt.want)
		}
	}
	var uk *UnknownKeyError
	if _, err := Canonical("nosuch", "1"); !errors.As(err, &uk) || uk.Key != "nosuch" {
		t.Errorf("unknown key: %v", err)
	}
}

func TestValidate(t *testing.T) {
	if err := Validate(map[string]string{"resync.rate": "100MiB/s", "ha.armed": "false"}); err != nil {
		t.Errorf("valid config: %v", err)
	}
	err := Validate(map[string]string{"resync.rate": "abc", "nosuch.key": "1", "ha.armed": "true"})
	if err == nil || !strings.Contains(err.Error(), "resync.rate") || !strings.Contains(err.Error(), "nosuch.key") {
		t.Errorf("Validate reports every problem: %v", err)
	}
}

func TestValid(t *testing.T) {
	got, err := Valid(map[string]string{"resync.rate": "100M", "ha.fence_timeout": "1h", "site": "lab", "ha.armed": "true"})
	if len(got) != 2 || got["resync.rate"] != "100MiB/s" || got["ha.armed"] != "true" {
		t.Errorf("Valid kept %v", got)
	}
	if err == nil || !strings.Contains(err.Error(), "ha.fence_timeout") || !strings.Contains(err.Error(), `"site"`) {
		t.Errorf("Valid error: %v", err)
	}
	if _, err := Valid(nil); err != nil {
		t.Errorf("Valid(nil): %v", err)
	}
}

func TestReaders(t *testing.T) {
	cfg := map[string]string{"resync.rate": "100MiB/s", "ha.dead_timeout": "5s", "ha.armed": "false"}
	if r, err := Rate(cfg, KeyResyncRate); r != 100<<20 || err != nil {
		t.Errorf("Rate = %d, %v", r, err)
	}
	if d, err := Duration(cfg, ha.KeyDead); d != 5*time.Second || err != nil {
		t.Errorf("Duration = %v, %v", d, err)
	}
	if b, err := Bool(cfg, ha.KeyArmed); b || err != nil {
		t.Errorf("Bool = %v, %v", b, err)
	}
	// A key that is not a setting of that kind is an error, not a panic.
	if _, err := Rate(cfg, "nosuch"); err == nil {
		t.Error("Rate of an unknown key: no error")
	}
	if _, err := Duration(cfg, KeyResyncRate); err == nil {
		t.Error("Duration of a rate: no error")
	}
	// Absent: the default, no error.
	if r, err := Rate(nil, KeyResyncRate); r != 0 || err != nil {
		t.Errorf("absent rate = %d, %v", r, err)
	}
	// Stored by an older version that did not check: the default and an
	// error naming the key, never a garbage value. "100M" was once read as
	// 100 bytes/s; it is a valid value now.
	for in, want := range map[string]int64{"abc": 0, "-5": 0, "12": 0, "100M": 100 << 20} {
		r, err := Rate(map[string]string{"resync.rate": in}, KeyResyncRate)
		if r != want || (want == 0) != (err != nil) {
			t.Errorf("Rate(%q) = %d, %v; want %d", in, r, err, want)
		}
		if err != nil && !strings.Contains(err.Error(), "resync.rate") {
			t.Errorf("Rate(%q): error does not name the key: %v", in, err)
		}
	}
}

func TestResolve(t *testing.T) {
	got := Resolve(map[string]string{"resync.rate": "100M", "ha.dead_timeout": "bogus", "other": "x"})
	if len(got) != len(All()) {
		t.Fatalf("Resolve lists %d settings, want %d", len(got), len(All()))
	}
	by := map[string]Effective{}
	for _, e := range got {
		by[e.Key] = e
	}
	if e := by["resync.rate"]; e.Value != "100MiB/s" || !e.Set || e.Default != "0" || e.Kind != KindRate {
		t.Errorf("resync.rate: %+v", e)
	}
	if e := by["ha.dead_timeout"]; e.Value != "3s" || e.Set || e.Err == nil {
		t.Errorf("ha.dead_timeout with a bad stored value: %+v", e)
	}
	if e := by["ha.armed"]; e.Value != "true" || e.Set {
		t.Errorf("ha.armed: %+v", e)
	}
}

func TestStringSetting(t *testing.T) {
	s, ok := Lookup(KeyVMCPUModel)
	if !ok || s.Kind != KindString || s.Default != "qemu64" {
		t.Fatalf("%s: %+v, %v", KeyVMCPUModel, s, ok)
	}
	for _, good := range []string{"qemu64", "Nehalem", "Skylake-Client-v4", "Opteron_G5", " EPYC-Rome "} {
		c, err := Canonical(KeyVMCPUModel, good)
		if err != nil || c != strings.TrimSpace(good) {
			t.Errorf("Canonical(%q) = %q, %v", good, c, err)
		}
	}
	for _, bad := range []string{"qemu64 --enable-kvm", "a/b", "<model>", "x'y", strings.Repeat("a", 65), "mödel", " "} {
		if c, err := Canonical(KeyVMCPUModel, bad); err == nil {
			t.Errorf("Canonical(%q) = %q, want an error", bad, c)
		}
	}
	for _, tc := range []struct {
		cfg     map[string]string
		want    string
		wantErr bool
	}{
		{nil, "qemu64", false},
		{map[string]string{KeyVMCPUModel: ""}, "qemu64", false},
		{map[string]string{KeyVMCPUModel: "Nehalem"}, "Nehalem", false},
		{map[string]string{KeyVMCPUModel: "bad model"}, "qemu64", true},
	} {
		got, err := String(tc.cfg, KeyVMCPUModel)
		if got != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("String(%v) = %q, %v; want %q, error %v", tc.cfg, got, err, tc.want, tc.wantErr)
		}
	}
	if _, err := String(nil, KeyResyncRate); err == nil {
		t.Error("String of a rate setting: no error")
	}
	// Resolve shows a set value, and a bad stored one as the default.
	for _, e := range Resolve(map[string]string{KeyVMCPUModel: "Haswell"}) {
		if e.Key == KeyVMCPUModel && (e.Value != "Haswell" || !e.Set) {
			t.Errorf("Resolve: %+v", e)
		}
	}
	for _, e := range Resolve(map[string]string{KeyVMCPUModel: "a b"}) {
		if e.Key == KeyVMCPUModel && (e.Value != "qemu64" || e.Set || e.Err == nil) {
			t.Errorf("Resolve of a bad value: %+v", e)
		}
	}
}

func TestDataStreamSetting(t *testing.T) {
	s, ok := Lookup(KeyDataStream)
	if !ok || s.Kind != KindString || s.Default != DataStreamTLS {
		t.Fatalf("%s: %+v, %v", KeyDataStream, s, ok)
	}
	for in, want := range map[string]string{"tls": "tls", "plain": "plain", " plain ": "plain"} {
		if c, err := Canonical(KeyDataStream, in); err != nil || c != want {
			t.Errorf("Canonical(%q) = %q, %v; want %q", in, c, err, want)
		}
	}
	for _, bad := range []string{"", "none", "PLAIN", "plaintext", "tls,plain", "plain tls", "true"} {
		if c, err := Canonical(KeyDataStream, bad); err == nil || !strings.Contains(err.Error(), KeyDataStream) {
			t.Errorf("Canonical(%q) = %q, %v; want an error naming the key", bad, c, err)
		}
	}
	if err := Validate(map[string]string{KeyDataStream: "plain"}); err != nil {
		t.Errorf("Validate: %v", err)
	}
	// What a node acts on: unset or unreadable is TLS, never plain.
	for _, tc := range []struct {
		cfg     map[string]string
		want    string
		wantErr bool
	}{
		{nil, DataStreamTLS, false},
		{map[string]string{KeyDataStream: ""}, DataStreamTLS, false},
		{map[string]string{KeyDataStream: "plain"}, DataStreamPlain, false},
		{map[string]string{KeyDataStream: "tls"}, DataStreamTLS, false},
		{map[string]string{KeyDataStream: "Plain"}, DataStreamTLS, true},
		{map[string]string{KeyDataStream: "off"}, DataStreamTLS, true},
	} {
		got, err := String(tc.cfg, KeyDataStream)
		if got != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("String(%v) = %q, %v; want %q, error %v", tc.cfg, got, err, tc.want, tc.wantErr)
		}
	}
	for _, e := range Resolve(map[string]string{KeyDataStream: "bogus"}) {
		if e.Key == KeyDataStream && (e.Value != DataStreamTLS || e.Set || e.Err == nil) {
			t.Errorf("Resolve of a bad value: %+v", e)
		}
	}
}
