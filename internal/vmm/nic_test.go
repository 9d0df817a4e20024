package vmm

import (
	"slices"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/consensus"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// TestVMNICs: a NIC is recorded then hot-plugged into a running VM (a
// failed hot-plug takes the record back); a removal unplugs first and
// records only once the guest let go; a stopped VM only changes its
// record; bad MACs and unknown NICs are refused before anything changes.
func TestVMNICs(t *testing.T) {
	world := func(running bool) *world {
		w := newWorld()
		v := &consensus.VMRecord{Name: "web", Node: "n2", Desired: consensus.VMStopped,
			Spec: consensus.VMSpecRecord{NICs: []consensus.VMNIC{{MAC: "52:54:00:00:00:01"}}}}
		if running {
			v.Desired = consensus.VMStarted
			w.running["web"] = "running"
		}
		w.ms.VMs["web"] = v
		return w
	}
	add := &tandemv1.AddVMNicRequest{Name: "web", Nic: &tandemv1.VMNic{Mac: "52:54:00:00:00:02"}}
	for _, tc := range []struct {
		name    string
		running bool
		fail    error
		want    []string
		nics    int
	}{
		{"add running", true, nil, []string{"meta nic-add web 52:54:00:00:00:02 ", "peer n2 nic-attach web 52:54:00:00:00:02", "event vm-nic web"}, 2},
		{"add stopped", false, nil, []string{"meta nic-add web 52:54:00:00:00:02 ", "event vm-nic web"}, 2},
		{"add, hot-plug fails", true, status.Error(codes.Internal, "no PCI slot"), []string{"meta nic-add web 52:54:00:00:00:02 ", "peer n2 nic-attach web 52:54:00:00:00:02", "meta nic-remove web 52:54:00:00:00:02"}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := world(tc.running)
			w.failNIC = tc.fail
			_, err := w.manager().AddNIC(t.Context(), add)
			if (err != nil) != (tc.fail != nil) {
				t.Fatalf("AddNIC: %v", err)
			}
			waitJournal(t, w, len(tc.want))
			if got := w.j.list(); !slices.Equal(got, tc.want) {
				t.Errorf("calls %q, want %q", got, tc.want)
			}
			if n := len(w.ms.VMs["web"].Spec.NICs); n != tc.nics {
				t.Errorf("%d NICs recorded, want %d", n, tc.nics)
			}
		})
	}
	t.Run("remove running", func(t *testing.T) {
		w := world(true)
		if _, err := w.manager().RemoveNIC(t.Context(), &tandemv1.RemoveVMNicRequest{Name: "web", Mac: "52:54:00:00:00:01"}); err != nil {
			t.Fatal(err)
		}
		want := []string{"peer n2 nic-detach web 52:54:00:00:00:01", "meta nic-remove web 52:54:00:00:00:01", "event vm-nic web"}
		waitJournal(t, w, len(want))
		if got := w.j.list(); !slices.Equal(got, want) {
			t.Errorf("calls %q, want %q", got, want)
		}
	})
	t.Run("remove, guest keeps it", func(t *testing.T) {
		w := world(true)
		w.failNIC = status.Error(codes.InvalidArgument, "the guest has not released NIC")
		if _, err := w.manager().RemoveNIC(t.Context(), &tandemv1.RemoveVMNicRequest{Name: "web", Mac: "52:54:00:00:00:01"}); !isStatus(err, codes.InvalidArgument, "nothing was changed") {
			t.Fatalf("got %v", err)
		}
		if len(w.ms.VMs["web"].Spec.NICs) != 1 {
			t.Error("the record changed although the guest kept the NIC")
		}
	})
	for _, tc := range []struct {
		name string
		call func(m *Manager) error
		code codes.Code
		msg  string
	}{
		{"multicast MAC", func(m *Manager) error {
			_, err := m.AddNIC(t.Context(), &tandemv1.AddVMNicRequest{Name: "web", Nic: &tandemv1.VMNic{Mac: "01:00:5e:00:00:01"}})
			return err
		}, codes.InvalidArgument, "multicast"},
		{"MAC in use", func(m *Manager) error {
			_, err := m.AddNIC(t.Context(), &tandemv1.AddVMNicRequest{Name: "web", Nic: &tandemv1.VMNic{Mac: "52:54:00:00:00:01"}})
			return err
		}, codes.AlreadyExists, "already used by VM web"},
		{"unknown NIC", func(m *Manager) error {
			_, err := m.RemoveNIC(t.Context(), &tandemv1.RemoveVMNicRequest{Name: "web", Mac: "52:54:00:00:00:09"})
			return err
		}, codes.NotFound, "VM web has no NIC with MAC 52:54:00:00:00:09 (its NICs: 52:54:00:00:00:01)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := world(true)
			if err := tc.call(w.manager()); !isStatus(err, tc.code, tc.msg) {
				t.Fatalf("got %v, want %v containing %q", err, tc.code, tc.msg)
			}
			if got := w.j.list(); len(got) != 0 {
				t.Errorf("a refusal changed something: %q", got)
			}
		})
	}
}
