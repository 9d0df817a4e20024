package e2e

import (
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tandemhci/tandem/internal/adminclient"
	"github.com/tandemhci/tandem/internal/faultfs"
	"github.com/tandemhci/tandem/internal/guest"
	"github.com/tandemhci/tandem/internal/nbdclient"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// TestPrimaryDiskEIO covers issue 16's risk "EIO on the primary's disk":
// a VM on a 2-replica volume whose primary's disk starts failing every
// write and sync with EIO keeps running (its disk counter goes on, in the
// same boot), the primary detaches its disk and serves through the peer
// (volume show and the events say so), and once the fault is cleared the
// operator's resync re-attaches the disk: the replicas verify identical
// and no acknowledged counter value was lost.
func TestPrimaryDiskEIO(t *testing.T) {
	vc := newVMClusterWith(t, vmClusterOpts{faultVolumes: true})
	c, td, ctx := vc.c, vc.td, vc.ctx
	n1 := c.Nodes[0]
	up := vc.guestVM(t, "e1", n1, 62, 2)
	info := vc.vm(t, n1, "show", "e1")
	if len(info.Volumes) != 1 {
		t.Fatalf("VM volumes %v", info.Volumes)
	}
	vol := info.Volumes[0]
	v := volumeCmd(t, ctx, td, n1, "show", vol)
	if v.Primary != n1.Name || len(v.Replicas) != 2 {
		t.Fatalf("volume %s: primary %s, replicas %v", vol, v.Primary, v.Replicas)
	}
	var peer string
	for _, r := range v.Replicas {
		if r.Node != n1.Name {
			peer = r.Node
		}
	}
	t.Logf("guest e1 up on %s, volume %s replicated to %s, %d writes acknowledged", n1.Name, vol, peer, up.Acked)

	// Every write and sync of the primary's volume files fails from now.
	if err := vc.faults[n1.Name].SetFault(faultfs.Fault{Ops: faultfs.OpWrite | faultfs.OpSync, Err: syscall.EIO}); err != nil {
		t.Fatal(err)
	}
	faultAt := time.Now()
	before := vc.lastFromBoot(up.Boot)
	d := vc.guestProgress(t, before, 90*time.Second)
	d = vc.guestProgress(t, d, 90*time.Second)
	if got := vc.faults[n1.Name].Counters(); len(got.Injected) == 0 {
		t.Fatalf("no fault was injected on %s's disk: counters %+v", n1.Name, got)
	}
	t.Logf("guest kept running on the failing disk: %d -> %d writes acknowledged (%v after the fault)", before.Acked, d.Acked, time.Since(faultAt).Round(time.Millisecond))

	// Status: the primary's replica Failed, its link diskless with the
	// cause; the peer UpToDate; the history and the events say so.
	v = waitVolume(t, ctx, td, n1, vol, time.Minute, func(v *tandemv1.VolumeInfo) bool {
		r := replicaState(v, n1.Name)
		return r.State == tandemv1.ReplicaState_REPLICA_STATE_FAILED && strings.HasPrefix(r.Link, "Diskless (detached after I/O error:")
	})
	if p := replicaState(v, peer); p.State != tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE || p.Link != "in-sync" {
		t.Fatalf("peer %s while the primary is diskless: %v link %q", peer, p.State, p.Link)
	}
	if v.Primary != n1.Name || !strings.Contains(v.Warning, "re-attach") {
		t.Fatalf("volume %s: primary %s, warning %q", vol, v.Primary, v.Warning)
	}
	if !slices.ContainsFunc(v.History, func(h *tandemv1.VolumeEvent) bool {
		return strings.Contains(h.What, "-> Failed") && strings.Contains(h.Reason, "I/O error")
	}) {
		t.Fatalf("no detach in the volume's history: %v", v.History)
	}
	t.Logf("volume show: %s link %q", n1.Name, replicaState(v, n1.Name).Link)
	text, _, err := td.CLI(ctx, n1, "volume", "show", vol)
	if err != nil || !strings.Contains(text, "Diskless (detached after I/O error") {
		t.Fatalf("volume show (text) does not show the detach: %v\n%s", err, text)
	}
	evs := waitEventKind(t, vc, "disk-detached")
	t.Logf("event: %s %s", evs.GetKind(), evs.GetDetail())

	// The disk works again: the operator's resync re-attaches it while the
	// guest keeps writing.
	vc.faults[n1.Name].Clear()
	out, stderr, err := td.CLI(ctx, n1, "volume", "resync", vol, "--wait", "--timeout-wait", "5m")
	if err != nil {
		t.Fatalf("volume resync: %v\n%s%s", err, out, stderr)
	}
	waitVolume(t, ctx, td, n1, vol, time.Minute, func(v *tandemv1.VolumeInfo) bool {
		for _, r := range v.Replicas {
			if r.State != tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE {
				return false
			}
		}
		return replicaState(v, n1.Name).Link == "" && v.Primary == n1.Name
	})
	waitEventKind(t, vc, "disk-reattached")
	d = vc.guestProgress(t, d, 90*time.Second)
	out, _, err = td.CLI(ctx, n1, "volume", "verify", vol, "--output", "json")
	if err != nil {
		t.Fatalf("verify: %v\n%s", err, out)
	}
	var ver tandemv1.VerifyVolumeResponse
	if err := adminclient.UnmarshalJSON([]byte(out), &ver); err != nil || len(ver.Mismatches) != 0 {
		t.Fatalf("replicas differ after the re-attach: %v %s", err, out)
	}

	// No acknowledged counter value lost: the disk holds at least the
	// last one the guest reported (read once the guest is stopped).
	vc.vm(t, n1, "stop", "e1", "--force")
	last := vc.lastFromBoot(up.Boot)
	client, err := nbdclient.Dial(ctx, "unix", nbdSocket(td, n1), vol)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	b := make([]byte, 4096)
	if err := client.ReadAt(ctx, b, 0); err != nil {
		t.Fatal(err)
	}
	st, err := guest.DecodeDiskState(b)
	if err != nil {
		t.Fatal(err)
	}
	if st.Boot != up.Boot || st.Counter < last.Acked {
		t.Fatalf("acknowledged disk writes lost: the guest reported %d acknowledged (boot %d), the disk holds %d (boot %d)", last.Acked, up.Boot, st.Counter, st.Boot)
	}
	t.Logf("disk counter %d >= last acknowledged %d; replicas identical (%d bytes checked)", st.Counter, last.Acked, ver.CheckedBytes)
}

// waitEventKind waits for a cluster event of kind.
func waitEventKind(t *testing.T, vc *vmCluster, kind string) *tandemv1.Event {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		evs := vc.events(t, vc.c.Nodes[0])
		if i := firstEvent(evs, func(e *tandemv1.Event) bool { return e.GetKind() == kind }); i >= 0 {
			return evs[i]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s event within a minute; events: %v", kind, evs)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
