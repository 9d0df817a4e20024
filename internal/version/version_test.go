package version

import "testing"

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
