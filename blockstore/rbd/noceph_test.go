//go:build !ceph

package rbd

import (
	"context"
	"errors"
	"testing"
)

// TestNotBuilt: without the ceph tag, a valid request fails with
// ErrNotBuilt, which says how to get a Ceph build.
func TestNotBuilt(t *testing.T) {
	if Built {
		t.Fatal("Built is true without the ceph tag")
	}
	cfg := Config{MonHost: "127.0.0.1", Client: "tandem", Key: goodKey, Pool: "rbd"}
	if _, err := Connect(context.Background(), cfg); !errors.Is(err, ErrNotBuilt) {
		t.Errorf("Connect() = %v, want ErrNotBuilt", err)
	}
	if _, err := Open(context.Background(), cfg, "vol", OpenOptions{}); !errors.Is(err, ErrNotBuilt) {
		t.Errorf("Open() = %v, want ErrNotBuilt", err)
	}
}
