package daemon

import "testing"

// TestVMDepsOutsideACluster: before the node is in a cluster the VM
// manager sees no metadata client (a nil interface), so it answers that
// volumes do not run here (vmm's TestWaitPrimary).
func TestVMDepsOutsideACluster(t *testing.T) {
	d := &Daemon{}
	if m := d.vmMeta(); m != nil {
		t.Errorf("vmMeta() = %#v, want a nil interface", m)
	}
}
