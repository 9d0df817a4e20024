package vmm

import (
	"context"
	"errors"
	"slices"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/consensus"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

func disk(size int64) *tandemv1.VMDisk { return &tandemv1.VMDisk{SizeBytes: size} }

// TestCreateRefusesBeforeCreatingVolumes: every refusal of a create comes
// before the first volume is made, so a refused VM leaves nothing behind.
func TestCreateRefusesBeforeCreatingVolumes(t *testing.T) {
	ok := func() *tandemv1.CreateVMRequest {
		return &tandemv1.CreateVMRequest{Name: "web", Vcpus: 1, MemoryMib: 512, Disks: []*tandemv1.VMDisk{disk(1 << 30)}}
	}
	for _, tc := range []struct {
		name  string
		setup func(w *world, req *tandemv1.CreateVMRequest)
		code  codes.Code
		msg   string
	}{
		{"bad name", func(_ *world, r *tandemv1.CreateVMRequest) { r.Name = "Web!" }, codes.InvalidArgument, "VM name"},
		{"no vcpus", func(_ *world, r *tandemv1.CreateVMRequest) { r.Vcpus = 0 }, codes.InvalidArgument, "vcpus 0"},
		{"too many vcpus", func(_ *world, r *tandemv1.CreateVMRequest) { r.Vcpus = 65 }, codes.InvalidArgument, "vcpus 65"},
		{"too little memory", func(_ *world, r *tandemv1.CreateVMRequest) { r.MemoryMib = 63 }, codes.InvalidArgument, "at least 64 MiB"},
		{"nothing to boot", func(_ *world, r *tandemv1.CreateVMRequest) { r.Disks = nil }, codes.InvalidArgument, "needs a disk"},
		{"no quorum", func(w *world, _ *tandemv1.CreateVMRequest) { w.quorate = false }, codes.FailedPrecondition, "no quorum"},
		{"name taken", func(w *world, _ *tandemv1.CreateVMRequest) {
			w.ms.VMs["web"] = &consensus.VMRecord{Name: "web"}
		}, codes.AlreadyExists, `VM "web" already exists`},
		{"unknown node", func(_ *world, r *tandemv1.CreateVMRequest) { r.Node = "n9" }, codes.InvalidArgument, `node "n9" is not a member`},
		{"joining node", func(w *world, r *tandemv1.CreateVMRequest) {
			w.ms.Nodes["n4"] = &consensus.NodeRecord{Name: "n4", State: consensus.NodeJoining}
			r.Node = "n4"
		}, codes.InvalidArgument, `node "n4" is not a member`},
		{"bad MAC", func(_ *world, r *tandemv1.CreateVMRequest) {
			r.Nics = []*tandemv1.VMNic{{Mac: "01:00:5e:00:00:01"}}
		}, codes.InvalidArgument, "multicast"},
		{"MAC in use", func(w *world, r *tandemv1.CreateVMRequest) {
			w.ms.VMs["db"] = &consensus.VMRecord{Name: "db", Spec: consensus.VMSpecRecord{NICs: []consensus.VMNIC{{MAC: "52:54:00:00:00:01"}}}}
			r.Nics = []*tandemv1.VMNic{{Mac: "52:54:00:00:00:01"}}
		}, codes.AlreadyExists, "already used by VM db"},
		{"too big for every node", func(_ *world, r *tandemv1.CreateVMRequest) { r.MemoryMib = 8192 }, codes.InvalidArgument, "more than any node offers"},
		{"kernel nowhere", func(w *world, r *tandemv1.CreateVMRequest) {
			r.Kernel = "/k"
			for _, n := range []string{"n1", "n2", "n3"} {
				w.missing[n] = []string{"/k: no such file or directory"}
			}
		}, codes.InvalidArgument, "no node can run this VM"},
		{"missing disk volume", func(_ *world, r *tandemv1.CreateVMRequest) {
			r.Disks = append(r.Disks, &tandemv1.VMDisk{Volume: "data"})
		}, codes.NotFound, `disk 1: no volume named "data"`},
		{"disk volume of another VM", func(w *world, r *tandemv1.CreateVMRequest) {
			w.ms.Volumes["data"] = &consensus.VolumeEntry{Name: "data"}
			w.ms.VMs["db"] = &consensus.VMRecord{Name: "db", Spec: consensus.VMSpecRecord{Volumes: []string{"data"}}}
			r.Disks = append(r.Disks, &tandemv1.VMDisk{Volume: "data"})
		}, codes.FailedPrecondition, "volume data is a disk of VM db"},
		{"RBD disk with replicas", func(_ *world, r *tandemv1.CreateVMRequest) {
			r.Disks[0].Backend, r.Disks[0].Replicas = consensus.BackendRBD, 2
		}, codes.InvalidArgument, "disk 0: replicas does not apply to an RBD disk"},
		{"pool on a replicated disk", func(_ *world, r *tandemv1.CreateVMRequest) { r.Disks[0].Pool = "vms" },
			codes.InvalidArgument, "disk 0: storage and pool apply to RBD disks only"},
		{"unknown backend", func(_ *world, r *tandemv1.CreateVMRequest) { r.Disks[0].Backend = "nfs" },
			codes.InvalidArgument, `disk 0: backend "nfs": use "replicated" (the default) or "rbd"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld()
			req := ok()
			tc.setup(w, req)
			_, err := w.manager().Create(t.Context(), req)
			if !isStatus(err, tc.code, tc.msg) {
				t.Fatalf("got %v, want %v containing %q", err, tc.code, tc.msg)
			}
			if got := w.j.list(); len(got) != 0 {
				t.Errorf("a refused create changed something: %q", got)
			}
		})
	}
	// The unmodified request is accepted, so each case above failed for
	// its own reason.
	w := newWorld()
	info, err := w.manager().Create(t.Context(), ok())
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"web-disk0"}; !slices.Equal(info.Volumes, want) || info.State != "stopped" {
		t.Errorf("created %v (%s), want disks %v, stopped", info.Volumes, info.State, want)
	}
}

// TestCreateRemovesItsVolumesOnFailure: a create that fails after making
// some disks deletes those, and only those (never an existing volume it
// was given).
func TestCreateRemovesItsVolumesOnFailure(t *testing.T) {
	req := func() *tandemv1.CreateVMRequest {
		return &tandemv1.CreateVMRequest{Name: "web", Vcpus: 1, MemoryMib: 512,
			Disks: []*tandemv1.VMDisk{disk(1 << 30), {Volume: "data"}, disk(2 << 30)}}
	}
	t.Run("a later disk fails", func(t *testing.T) {
		w := newWorld()
		w.ms.Volumes["data"] = &consensus.VolumeEntry{Name: "data"}
		w.vols.failCreate["web-disk2"] = status.Error(codes.ResourceExhausted, "not enough space")
		_, err := w.manager().Create(t.Context(), req())
		if !isStatus(err, codes.ResourceExhausted, "disk 2: not enough space") {
			t.Fatalf("got %v, want ResourceExhausted naming disk 2", err)
		}
		want := []string{"volume create web-disk0 []", "volume create web-disk2 []", "volume delete web-disk0"}
		if got := w.j.list(); !slices.Equal(got, want) {
			t.Errorf("calls %q, want %q", got, want)
		}
	})
	t.Run("recording the VM fails", func(t *testing.T) {
		w := newWorld()
		w.ms.Volumes["data"] = &consensus.VolumeEntry{Name: "data"}
		w.meta.createErr = consensus.ErrVMNameTaken
		_, err := w.manager().Create(t.Context(), req())
		if status.Code(err) != codes.AlreadyExists {
			t.Fatalf("got %v, want AlreadyExists", err)
		}
		if n := w.j.count("volume delete"); n != 2 || w.j.count("volume delete data") != 0 {
			t.Errorf("calls %q: want both new disks deleted and data kept", w.j.list())
		}
	})
}

// TestCreateOnNodePlacesDisksThere: with --node, that node holds every new
// disk's first replica (its primary), the rest as placement says; placement
// of one more replica than asked is preferred but not required.
func TestCreateOnNodePlacesDisksThere(t *testing.T) {
	for _, tc := range []struct {
		name     string
		replicas uint32
		place    []string
		failWide bool
		want     string
	}{
		{"default two", 0, []string{"n2", "n1", "n3"}, false, "volume create web-disk0 [n3 n2]"},
		{"three", 3, []string{"n1", "n3", "n2"}, false, "volume create web-disk0 [n3 n1 n2]"},
		{"narrow fallback", 2, []string{"n3", "n1"}, true, "volume create web-disk0 [n3 n1]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld()
			w.vols.place = tc.place
			if tc.failWide {
				w.vols.placeErr[3] = errors.New("only two nodes have room")
			}
			d := disk(1 << 30)
			d.Replicas = tc.replicas
			if _, err := w.manager().Create(t.Context(), &tandemv1.CreateVMRequest{Name: "web", Vcpus: 1, MemoryMib: 512, Node: "n3", Disks: []*tandemv1.VMDisk{d}}); err != nil {
				t.Fatal(err)
			}
			if got := w.j.list()[0]; got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// TestCreateRBDDisk: a new RBD disk is created on the RBD backend with its
// storage and pool, owned by the VM's node, whatever replica placement
// would say.
func TestCreateRBDDisk(t *testing.T) {
	w := newWorld()
	w.vols.place = []string{"n1", "n2", "n3"}
	d := disk(1 << 30)
	d.Backend, d.Storage, d.Pool = consensus.BackendRBD, "ceph1", "vms"
	if _, err := w.manager().Create(t.Context(), &tandemv1.CreateVMRequest{Name: "web", Vcpus: 1, MemoryMib: 512, Node: "n3", Disks: []*tandemv1.VMDisk{d}}); err != nil {
		t.Fatal(err)
	}
	if got, want := w.j.list()[0], "volume create web-disk0 [n3] backend=rbd storage=ceph1 pool=vms replicas=0"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestStartMovesPrimariesFirst: a start makes the chosen node primary of
// every volume before the node is asked to start the VM, and records the
// VM as started there only after it runs.
func TestStartMovesPrimariesFirst(t *testing.T) {
	w := newWorld()
	w.ms.Volumes["web-disk0"] = &consensus.VolumeEntry{Name: "web-disk0"}
	w.ms.VMs["web"] = &consensus.VMRecord{Name: "web", Desired: consensus.VMStopped,
		Spec: consensus.VMSpecRecord{MemoryMiB: 512, Volumes: []string{"web-disk0"}}}
	w.vols.show["web-disk0"] = &tandemv1.VolumeInfo{Name: "web-disk0", Primary: "n1", Replicas: []*tandemv1.VolumeReplica{
		{Node: "n1", State: tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE},
		{Node: "n2", State: tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE},
	}}
	info, err := w.manager().Start(t.Context(), &tandemv1.VMRequest{Name: "web", Node: "n2"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"peer n1 handover web-disk0 to n2", "peer n2 vm-start web", "meta update-vm web desired=started node=n2"}
	if got := w.j.list(); !slices.Equal(got, want) {
		t.Errorf("calls %q, want %q", got, want)
	}
	if info.Node != "n2" || info.State != "running" {
		t.Errorf("started %s on %s, want running on n2", info.State, info.Node)
	}

	// A node holding no replica is refused, and nothing is touched.
	w.j = &journal{}
	w.running = map[string]string{}
	w.ms.VMs["web"].Desired = consensus.VMStopped
	_, err = w.manager().Start(context.Background(), &tandemv1.VMRequest{Name: "web", Node: "n3"})
	if !isStatus(err, codes.FailedPrecondition, "cannot start VM web on n3") {
		t.Errorf("start on n3: %v", err)
	}
	if got := w.j.list(); len(got) != 0 {
		t.Errorf("a refused start changed something: %q", got)
	}
}

// TestStopRecordsDesiredFirst: the stop is recorded before the node is
// asked, so HA never restarts a VM being stopped.
func TestStopRecordsDesiredFirst(t *testing.T) {
	w := newWorld()
	w.ms.VMs["web"] = &consensus.VMRecord{Name: "web", Node: "n2", Desired: consensus.VMStarted}
	w.running["web"] = "running"
	info, err := w.manager().Stop(t.Context(), &tandemv1.VMRequest{Name: "web"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"meta update-vm web desired=stopped node=", "peer n2 vm-stop web"}
	if got := w.j.list(); !slices.Equal(got, want) {
		t.Errorf("calls %q, want %q", got, want)
	}
	if info.State != "shut off" {
		t.Errorf("state %q", info.State)
	}
}

func TestMaintenanceRefusesBadFailback(t *testing.T) {
	w := newWorld()
	err := w.manager().Maintenance(t.Context(), &tandemv1.NodeMaintenanceRequest{Name: "n2", Failback: "soon"}, func(*tandemv1.NodeMaintenanceProgress) error { return nil })
	if status.Code(err) != codes.InvalidArgument || len(w.j.list()) != 0 {
		t.Errorf("got %v, calls %q", err, w.j.list())
	}
	err = w.manager().Maintenance(t.Context(), &tandemv1.NodeMaintenanceRequest{Name: "n9"}, func(*tandemv1.NodeMaintenanceProgress) error { return nil })
	if status.Code(err) != codes.NotFound || len(w.j.list()) != 0 {
		t.Errorf("unknown node: got %v, calls %q", err, w.j.list())
	}
}
