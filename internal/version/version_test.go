package version

import (
	"strconv"
	"testing"
)

// TestDefault: a test binary is linked without -X, so it reports "dev".
func TestDefault(t *testing.T) {
	if Version != Default || String() != "dev" {
		t.Fatalf("Version=%q String()=%q, want %q", Version, String(), "dev")
	}
}

// TestEmptyFallsBack: an empty -X value reports the default, never "".
func TestEmptyFallsBack(t *testing.T) {
	old := Version
	t.Cleanup(func() { Version = old })
	Version = ""
	if got := String(); got != Default {
		t.Fatalf("String() = %q, want %q", got, Default)
	}
}

// TestProtocolLevel: a test binary reports the release's level, and a bad
// -X value falls back to it instead of a level nobody supports.
func TestProtocolLevel(t *testing.T) {
	if Protocol != strconv.Itoa(DefaultProtocol) {
		t.Fatalf("Protocol literal %q differs from DefaultProtocol %d", Protocol, DefaultProtocol)
	}
	if got := ProtocolLevel(); got != DefaultProtocol {
		t.Fatalf("ProtocolLevel() = %d, want %d", got, DefaultProtocol)
	}
	old := Protocol
	t.Cleanup(func() { Protocol = old })
	for in, want := range map[string]uint32{"2": 2, "": DefaultProtocol, "0": DefaultProtocol, "x": DefaultProtocol, "-1": DefaultProtocol} {
		Protocol = in
		if got := ProtocolLevel(); got != want {
			t.Errorf("Protocol=%q: ProtocolLevel() = %d, want %d", in, got, want)
		}
	}
}
