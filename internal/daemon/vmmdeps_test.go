package daemon

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/vmm"
)

// TestHAStateAgrees: the VM list (vmm.HAState) and the HA status (haVM)
// show the same HA state for every VM.
func TestHAStateAgrees(t *testing.T) {
	for _, desired := range []string{consensus.VMStarted, consensus.VMStopped, consensus.VMDisabled} {
		for _, st := range []string{"", consensus.HAStarted, consensus.HAFence, consensus.HARecovery, consensus.HAError} {
			v := &consensus.VMRecord{Name: "web", Desired: desired, HAState: st}
			if got, want := vmm.HAState(v), haVM(v).HaState; got != want {
				t.Errorf("desired %s, HA %q: vmm says %q, HA status %q", desired, st, got, want)
			}
		}
	}
}

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
