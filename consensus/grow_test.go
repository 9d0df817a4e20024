package consensus

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestVolumeSize(t *testing.T) {
	m := checkedSM(t)
	apply := func(c Command) ([]byte, error) {
		c.At = time.Now()
		return m.checkedApply(&c)
	}
	if _, err := apply(Command{Op: opBootstrap, Bootstrap: &BootstrapCmd{Cluster: ClusterRecord{ID: "c"}, Node: NodeRecord{Name: "a", ReplicaID: 1}}}); err != nil {
		t.Fatal(err)
	}
	m.s.Volumes["v"] = &VolumeEntry{Name: "v", Size: 64 << 20, Replicas: []string{"a"}, State: VolumeReady}
	m.s.Volumes["r"] = &VolumeEntry{Name: "r", Size: 64 << 20, Backend: BackendRBD, State: VolumeReady}
	m.s.Volumes["c"] = &VolumeEntry{Name: "c", Size: 64 << 20, Replicas: []string{"a"}, State: VolumeCreating}
	for _, c := range []struct {
		cmd  VolumeSizeCmd
		want string
	}{
		{VolumeSizeCmd{Name: "v", Size: 32 << 20}, "shrinking"},
		{VolumeSizeCmd{Name: "v", Size: 64<<20 + 512}, "multiple of 4096"},
		{VolumeSizeCmd{Name: "r", Size: 128 << 20}, "RBD"},
		{VolumeSizeCmd{Name: "c", Size: 128 << 20}, "creating"},
		{VolumeSizeCmd{Name: "nope", Size: 128 << 20}, "no such volume"},
	} {
		cmd := c.cmd
		if _, err := apply(Command{Op: opVolumeSize, VolumeSize: &cmd}); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("%+v: %v, want %q", c.cmd, err, c.want)
		}
	}
	if _, err := apply(Command{Op: opVolumeSize}); !errors.Is(err, ErrBadCommand) {
		t.Fatalf("no body: %v", err)
	}
	if m.s.Volumes["v"].Size != 64<<20 {
		t.Fatal("a refused command changed the size")
	}
	for range 2 { // the second is a retried proposal
		if _, err := apply(Command{Op: opVolumeSize, VolumeSize: &VolumeSizeCmd{Name: "v", Size: 128 << 20}}); err != nil {
			t.Fatal(err)
		}
	}
	if m.s.Volumes["v"].Size != 128<<20 {
		t.Fatalf("size %d", m.s.Volumes["v"].Size)
	}
	n := 0
	for _, a := range m.s.Audit {
		if a.Action == "volume-resize" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d volume-resize audit entries, want 1", n)
	}
}
