package state

import (
	"testing"
	"time"
)

// A node outside a cluster has no metadata client; a typed nil wrapped in
// the interface would pass callers' nil checks and crash later.
func TestMetaOfNilIsNil(t *testing.T) {
	if m := MetaOf(nil); m != nil {
		t.Fatalf("MetaOf(nil) = %#v, want nil", m)
	}
}

func TestSelfFence(t *testing.T) {
	var nilFlag *SelfFence
	if nilFlag.Fenced() {
		t.Fatal("a nil flag reads fenced")
	}
	var f SelfFence
	if f.Fenced() {
		t.Fatal("the zero flag reads fenced")
	}
	at := time.Unix(100, 0)
	f.Set(at)
	if !f.Fenced() {
		t.Fatal("not fenced after Set")
	}
	if got := f.Clear(); !got.Equal(at) || f.Fenced() {
		t.Fatalf("Clear = %v, fenced %v; want %v, false", got, f.Fenced(), at)
	}
}
