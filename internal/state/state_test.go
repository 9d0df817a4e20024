package state

import "testing"

// A node outside a cluster has no metadata client; a typed nil wrapped in
// the interface would pass callers' nil checks and crash later.
func TestMetaOfNilIsNil(t *testing.T) {
	if m := MetaOf(nil); m != nil {
		t.Fatalf("MetaOf(nil) = %#v, want nil", m)
	}
}
