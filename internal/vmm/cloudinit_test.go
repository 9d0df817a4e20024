package vmm

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/tandemhci/tandem/internal/cloudinit"
	"github.com/tandemhci/tandem/internal/guest"
	"github.com/tandemhci/tandem/internal/sealed"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// seedManager is n1's manager with a cluster secret and a data dir.
func seedManager(t *testing.T, w *world) *Manager {
	m := w.manager()
	secret := bytes.Repeat([]byte{7}, sealed.SecretSize)
	m.secret = func() ([]byte, error) { return secret, nil }
	m.st.Config.DataDir = t.TempDir()
	return m
}

// A create seals the seed into the record (never the plain user-data);
// the node that starts the VM builds the ISO from it.
func TestCreateSealsCloudInit(t *testing.T) {
	w := newWorld()
	m := seedManager(t, w)
	user := "#cloud-config\ntandem_test_value: s3cr3t-v4lue\n"
	info, err := m.Create(t.Context(), &tandemv1.CreateVMRequest{Name: "web", Vcpus: 1, MemoryMib: 512, Disks: []*tandemv1.VMDisk{disk(1 << 30)},
		CloudInit: &tandemv1.CloudInit{UserData: []byte(user)}})
	if err != nil {
		t.Fatal(err)
	}
	if !info.CloudInit {
		t.Error("VM info does not say a seed is attached")
	}
	rec := w.ms.VMs["web"]
	if !sealed.IsSealed(rec.Spec.CloudInit) || strings.Contains(rec.Spec.CloudInit, "s3cr3t") {
		t.Fatalf("record's seed is not sealed: %q", rec.Spec.CloudInit)
	}
	if _, err := exec.LookPath("xorriso"); err != nil {
		t.Skip("xorriso not installed")
	}
	p, err := m.buildSeed(t.Context(), rec)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := guest.ReadISOFile(f, cloudinit.UserData, cloudinit.MaxTotal)
	if err != nil || string(got) != user {
		t.Fatalf("user-data in the seed: %q, %v", got, err)
	}
	meta, err := guest.ReadISOFile(f, cloudinit.MetaData, cloudinit.MaxTotal)
	if err != nil || string(meta) != "instance-id: "+rec.UUID+"\nlocal-hostname: web\n" {
		t.Fatalf("default meta-data: %q, %v", meta, err)
	}
	// A blob moved to another VM's record does not open there.
	other := *rec
	other.Name = "db"
	if _, err := m.buildSeed(t.Context(), &other); !isStatus(err, codes.FailedPrecondition, "cannot open") {
		t.Errorf("a seed moved to another VM: %v", err)
	}
	m.dropSeed("web")
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Errorf("seed after dropSeed: %v", err)
	}
}

func TestCreateRefusesBadCloudInit(t *testing.T) {
	for name, tc := range map[string]struct {
		ci     *tandemv1.CloudInit
		secret bool
		code   codes.Code
		msg    string
	}{
		"not yaml":  {&tandemv1.CloudInit{UserData: []byte("#cloud-config\na: [\n")}, true, codes.InvalidArgument, "not valid YAML"},
		"no header": {&tandemv1.CloudInit{UserData: []byte("echo hi\n")}, true, codes.InvalidArgument, "#cloud-config"},
		"too big": {&tandemv1.CloudInit{UserData: []byte("#!/bin/sh\n"), NetworkConfig: append([]byte("a: "), bytes.Repeat([]byte("x"), cloudinit.MaxTotal)...)},
			true, codes.InvalidArgument, "at most 65536"},
		"no secret": {&tandemv1.CloudInit{UserData: []byte("#cloud-config\n")}, false, codes.FailedPrecondition, "cannot seal"},
	} {
		t.Run(name, func(t *testing.T) {
			w := newWorld()
			m := w.manager()
			if tc.secret {
				m = seedManager(t, w)
			}
			_, err := m.Create(t.Context(), &tandemv1.CreateVMRequest{Name: "web", Vcpus: 1, MemoryMib: 512, Disks: []*tandemv1.VMDisk{disk(1 << 30)}, CloudInit: tc.ci})
			if !isStatus(err, tc.code, tc.msg) {
				t.Fatalf("got %v, want %v %q", err, tc.code, tc.msg)
			}
			if len(w.j.list()) != 0 || len(w.ms.VMs) != 0 {
				t.Errorf("a refused create changed something: %v %v", w.j.list(), w.ms.VMs)
			}
		})
	}
}
