package vmm

import (
	"fmt"
	"slices"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/compute"
	"github.com/tandemhci/tandem/consensus"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// TestVMDisks: a new disk's volume is created with the VM's node as its
// primary, recorded after the VM's other disks, then hot-plugged into
// the running VM (a failed hot-plug takes the record back and deletes
// the new volume); a detach unplugs first and records only once the
// guest let go, then --delete deletes the volume; a stopped VM only
// changes its record; bad input is refused before anything changes.
func TestVMDisks(t *testing.T) {
	if consensus.MaxVMDisks != compute.MaxDisks {
		t.Fatalf("consensus.MaxVMDisks %d, compute.MaxDisks %d: a VM may have as many disks as a create allows", consensus.MaxVMDisks, compute.MaxDisks)
	}
	mkWorld := func(running bool) *world {
		w := newWorld()
		w.startedVM("web", "n2", []string{"n2", "n3"}, testVolume{"web-disk0", "n2"}, testVolume{"web-disk1", "n2"})
		w.startedVM("db", "n3", []string{"n3", "n1"}, testVolume{"db-disk0", "n3"})
		for _, s := range []struct{ name, primary string }{{"spare", "n2"}, {"elsewhere", "n3"}} {
			w.ms.Volumes[s.name] = &consensus.VolumeEntry{Name: s.name, State: consensus.VolumeReady}
			w.vols.show[s.name] = &tandemv1.VolumeInfo{Name: s.name, Primary: s.primary}
		}
		w.ms.Volumes["rbd-other"] = &consensus.VolumeEntry{Name: "rbd-other", Backend: consensus.BackendRBD, Owner: "n1", State: consensus.VolumeReady}
		if running {
			w.running["web"] = "running"
		} else {
			w.ms.VMs["web"].Desired = consensus.VMStopped
		}
		return w
	}
	newDisk := &tandemv1.AddVMDiskRequest{Name: "web", Disk: &tandemv1.VMDisk{SizeBytes: 64 << 20, Replicas: 3}}
	for _, tc := range []struct {
		name    string
		running bool
		req     *tandemv1.AddVMDiskRequest
		fail    error
		want    []string
		disks   []string
	}{
		{"new, running", true, newDisk, nil, []string{"volume create web-disk2 [n2 n1 n3]", "meta disk-add web web-disk2", "peer n2 disk-attach web web-disk2", "event vm-disk web"},
			[]string{"web-disk0", "web-disk1", "web-disk2"}},
		{"new, stopped", false, newDisk, nil, []string{"volume create web-disk2 [n2 n1 n3]", "meta disk-add web web-disk2", "event vm-disk web"},
			[]string{"web-disk0", "web-disk1", "web-disk2"}},
		{"new RBD, running", true, &tandemv1.AddVMDiskRequest{Name: "web", Disk: &tandemv1.VMDisk{SizeBytes: 64 << 20, Backend: "rbd", Storage: "ceph1"}}, nil,
			[]string{"volume create web-disk2 [n2] backend=rbd storage=ceph1 pool= replicas=0", "meta disk-add web web-disk2", "peer n2 disk-attach web web-disk2", "event vm-disk web"},
			[]string{"web-disk0", "web-disk1", "web-disk2"}},
		{"existing, running", true, &tandemv1.AddVMDiskRequest{Name: "web", Disk: &tandemv1.VMDisk{Volume: "spare"}}, nil,
			[]string{"meta disk-add web spare", "peer n2 disk-attach web spare", "event vm-disk web"}, []string{"web-disk0", "web-disk1", "spare"}},
		// Stopped: its start makes n2 (or wherever it starts) primary.
		{"existing elsewhere, stopped", false, &tandemv1.AddVMDiskRequest{Name: "web", Disk: &tandemv1.VMDisk{Volume: "elsewhere"}}, nil,
			[]string{"meta disk-add web elsewhere", "event vm-disk web"}, []string{"web-disk0", "web-disk1", "elsewhere"}},
		{"new, hot-plug fails", true, newDisk, status.Error(codes.Internal, "no free PCI slot"),
			[]string{"volume create web-disk2 [n2 n1 n3]", "meta disk-add web web-disk2", "peer n2 disk-attach web web-disk2", "meta disk-remove web web-disk2", "volume delete web-disk2"},
			[]string{"web-disk0", "web-disk1"}},
		{"existing, hot-plug fails", true, &tandemv1.AddVMDiskRequest{Name: "web", Disk: &tandemv1.VMDisk{Volume: "spare"}}, status.Error(codes.Internal, "no free PCI slot"),
			[]string{"meta disk-add web spare", "peer n2 disk-attach web spare", "meta disk-remove web spare"}, []string{"web-disk0", "web-disk1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := mkWorld(tc.running)
			w.vols.place = []string{"n1", "n2", "n3"}
			w.failDisk = tc.fail
			_, err := w.manager().AddDisk(t.Context(), tc.req)
			if (err != nil) != (tc.fail != nil) {
				t.Fatalf("AddDisk: %v", err)
			}
			if tc.fail != nil && !isStatus(err, codes.Internal, "nothing was changed") {
				t.Errorf("failed hot-plug: %v", err)
			}
			waitJournal(t, w, len(tc.want))
			if got := w.j.list(); !slices.Equal(got, tc.want) {
				t.Errorf("calls %q, want %q", got, tc.want)
			}
			if got := w.ms.VMs["web"].Spec.Volumes; !slices.Equal(got, tc.disks) {
				t.Errorf("disks recorded %v, want %v", got, tc.disks)
			}
			if _, ok := w.ms.Volumes["spare"]; !ok {
				t.Error("an existing volume was deleted")
			}
		})
	}
	for _, tc := range []struct {
		name    string
		running bool
		del     bool
		fail    error
		want    []string
	}{
		{"running", true, false, nil, []string{"peer n2 disk-detach web web-disk1", "meta disk-remove web web-disk1", "event vm-disk web"}},
		{"running, delete", true, true, nil, []string{"peer n2 disk-detach web web-disk1", "meta disk-remove web web-disk1", "event vm-disk web", "volume delete web-disk1"}},
		{"stopped", false, false, nil, []string{"meta disk-remove web web-disk1", "event vm-disk web"}},
		{"guest keeps it", true, true, status.Error(codes.InvalidArgument, "the guest has not released disk web-disk1"), []string{"peer n2 disk-detach web web-disk1"}},
	} {
		t.Run("detach "+tc.name, func(t *testing.T) {
			w := mkWorld(tc.running)
			w.failDisk = tc.fail
			_, err := w.manager().DetachDisk(t.Context(), &tandemv1.DetachVMDiskRequest{Name: "web", Volume: "web-disk1", Delete: tc.del})
			if tc.fail != nil {
				if !isStatus(err, codes.InvalidArgument, "nothing was changed") {
					t.Fatalf("got %v", err)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			// The event and the delete run in either order.
			waitJournal(t, w, len(tc.want))
			got := w.j.list()
			if !slices.Equal(sorted(got), sorted(tc.want)) || (len(got) > 1 && got[1] != tc.want[1]) || got[0] != tc.want[0] {
				t.Errorf("calls %q, want %q", got, tc.want)
			}
			_, kept := w.ms.Volumes["web-disk1"]
			if kept == (tc.del && tc.fail == nil) {
				t.Errorf("volume kept: %v", kept)
			}
			if recorded := slices.Contains(w.ms.VMs["web"].Spec.Volumes, "web-disk1"); recorded != (tc.fail != nil) {
				t.Errorf("disk still recorded: %v", recorded)
			}
		})
	}
	full := func(m *Manager, w *world) error {
		for i := range consensus.MaxVMDisks - 2 {
			w.ms.VMs["web"].Spec.Volumes = append(w.ms.VMs["web"].Spec.Volumes, fmt.Sprintf("x%d", i))
		}
		_, err := m.AddDisk(t.Context(), newDisk)
		return err
	}
	add := func(d *tandemv1.VMDisk) func(*Manager, *world) error {
		return func(m *Manager, _ *world) error {
			_, err := m.AddDisk(t.Context(), &tandemv1.AddVMDiskRequest{Name: "web", Disk: d})
			return err
		}
	}
	detach := func(vol string) func(*Manager, *world) error {
		return func(m *Manager, _ *world) error {
			_, err := m.DetachDisk(t.Context(), &tandemv1.DetachVMDiskRequest{Name: "web", Volume: vol, Delete: true})
			return err
		}
	}
	for _, tc := range []struct {
		name string
		call func(*Manager, *world) error
		code codes.Code
		msg  string
	}{
		{"no disk", add(nil), codes.InvalidArgument, "no disk given"},
		{"volume and size", add(&tandemv1.VMDisk{Volume: "spare", SizeBytes: 64 << 20}), codes.InvalidArgument, "an existing volume (spare) takes no size"},
		{"not 4K", add(&tandemv1.VMDisk{SizeBytes: 64<<20 + 1}), codes.InvalidArgument, "multiple of 4 KiB"},
		{"rbd replicas", add(&tandemv1.VMDisk{SizeBytes: 64 << 20, Backend: "rbd", Replicas: 2}), codes.InvalidArgument, "replicas does not apply"},
		{"unknown backend", add(&tandemv1.VMDisk{SizeBytes: 64 << 20, Backend: "nfs"}), codes.InvalidArgument, "backend"},
		{"missing volume", add(&tandemv1.VMDisk{Volume: "nope"}), codes.NotFound, `no volume named "nope"`},
		{"duplicate", add(&tandemv1.VMDisk{Volume: "web-disk1"}), codes.AlreadyExists, "volume web-disk1 is already a disk of VM web"},
		{"another VM's", add(&tandemv1.VMDisk{Volume: "db-disk0"}), codes.FailedPrecondition, "volume db-disk0 is a disk of VM db"},
		{"primary elsewhere", add(&tandemv1.VMDisk{Volume: "elsewhere"}), codes.FailedPrecondition, "the primary of volume elsewhere is n3, not n2 where VM web runs"},
		{"RBD owned elsewhere", add(&tandemv1.VMDisk{Volume: "rbd-other"}), codes.FailedPrecondition, "RBD volume rbd-other is owned by n1, not by n2"},
		{"too many", full, codes.FailedPrecondition, "the most a VM may have"},
		{"detach boot disk", detach("web-disk0"), codes.FailedPrecondition, "volume web-disk0 is the first disk of VM web, which it boots from"},
		{"detach unknown", detach("spare"), codes.NotFound, `VM web has no disk on volume "spare" (its disks: web-disk0, web-disk1)`},
		{"no VM", func(m *Manager, _ *world) error {
			_, err := m.DetachDisk(t.Context(), &tandemv1.DetachVMDiskRequest{Name: "nope", Volume: "web-disk1"})
			return err
		}, codes.NotFound, `no VM named "nope"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := mkWorld(true)
			before := len(w.ms.Volumes)
			err := tc.call(w.manager(), w)
			if !isStatus(err, tc.code, tc.msg) {
				t.Fatalf("got %v, want %v containing %q", err, tc.code, tc.msg)
			}
			if got := w.j.list(); len(got) != 0 || len(w.ms.Volumes) != before {
				t.Errorf("a refusal changed something: %q", got)
			}
		})
	}
	t.Run("started but not running", func(t *testing.T) {
		w := mkWorld(true)
		delete(w.running, "web") // crashed; its node restarts it from its own definition
		_, err := w.manager().AddDisk(t.Context(), newDisk)
		if !isStatus(err, codes.FailedPrecondition, "VM web should run on n2 but is shut off there") {
			t.Fatalf("got %v", err)
		}
		if got := w.j.list(); len(got) != 0 {
			t.Errorf("changed: %q", got)
		}
	})
	t.Run("node does not answer", func(t *testing.T) {
		w := mkWorld(true)
		delete(w.ms.Nodes, "n2") // the peer call fails: state unknown
		w.ms.Nodes["n2x"] = &consensus.NodeRecord{Name: "n2x", State: consensus.NodeMember}
		_, err := w.manager().DetachDisk(t.Context(), &tandemv1.DetachVMDiskRequest{Name: "web", Volume: "web-disk1", Delete: true})
		if !isStatus(err, codes.Unavailable, "cannot tell whether it runs on n2") {
			t.Fatalf("got %v", err)
		}
		if got := w.j.list(); len(got) != 0 {
			t.Errorf("changed: %q", got)
		}
	})
}

func sorted(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}
