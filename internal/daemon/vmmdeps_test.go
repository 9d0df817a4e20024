package daemon

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestVMDepsOutsideACluster: before the node is in a cluster the VM
// manager sees no metadata client (a nil interface) and no local volumes.
func TestVMDepsOutsideACluster(t *testing.T) {
	d := &Daemon{}
	if m := d.vmMeta(); m != nil {
		t.Errorf("vmMeta() = %#v, want a nil interface", m)
	}
	lv, err := vmVolumes{d}.Local("web-disk0")
	if lv != nil || status.Code(err) != codes.FailedPrecondition {
		t.Errorf("Local = %v, %v; want nil, FailedPrecondition", lv, err)
	}
}
