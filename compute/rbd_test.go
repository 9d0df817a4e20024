package compute

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func rbdSpec() VMSpec {
	s := fullSpec()
	s.Disks[1] = DiskSpec{Volume: "vol-data", Serial: "data0", RBD: &RBDDisk{Pool: "rbd", Image: "vol-data",
		Hosts: []string{"10.0.0.1:6789", "[fd00::2]:6789"}, User: "tandem", SecretUUID: CephSecretUUID("ceph1")}}
	return s
}

// An RBD disk renders as a libvirt network disk protocol='rbd' with cephx
// through a ceph secret, and parses back to the same spec.
func TestRBDDiskXML(t *testing.T) {
	spec := rbdSpec()
	x, err := DomainXMLWithOptions(spec, XMLOptions{DomainType: "qemu"})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`protocol="rbd" name="rbd/vol-data"`, `<host name="10.0.0.1" port="6789">`, `<host name="fd00::2" port="6789">`,
		`<auth username="tandem">`, `<secret type="ceph" uuid="` + CephSecretUUID("ceph1") + `">`, `cache="none"`} {
		if !strings.Contains(x, want) {
			t.Errorf("domain XML lacks %s:\n%s", want, x)
		}
	}
	got, _, err := ParseDomainXML(x)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Disks, spec.Disks) {
		t.Errorf("disks round trip:\n got %+v %+v\nwant %+v %+v", got.Disks[1], got.Disks[1].RBD, spec.Disks[1], spec.Disks[1].RBD)
	}
}

func TestRBDDiskValidate(t *testing.T) {
	for name, mut := range map[string]func(*RBDDisk){
		"no monitor":    func(r *RBDDisk) { r.Hosts = nil },
		"monitor":       func(r *RBDDisk) { r.Hosts = []string{"10.0.0.1"} },
		"pool":          func(r *RBDDisk) { r.Pool = "a/b" },
		"image":         func(r *RBDDisk) { r.Image = "" },
		"user":          func(r *RBDDisk) { r.User = "x:y" },
		"secret":        func(r *RBDDisk) { r.SecretUUID = "nope" },
		"image with at": func(r *RBDDisk) { r.Image = "img@snap" },
	} {
		s := rbdSpec()
		mut(s.Disks[1].RBD)
		if err := s.Validate(); !errors.Is(err, ErrInvalidSpec) {
			t.Errorf("%s: Validate = %v, want ErrInvalidSpec", name, err)
		}
	}
	if err := rbdSpec().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestCephSecretUUID(t *testing.T) {
	a, b := CephSecretUUID("ceph1"), CephSecretUUID("ceph2")
	if a == b || !uuidRE.MatchString(a) || a != CephSecretUUID("ceph1") {
		t.Fatalf("CephSecretUUID: %s %s", a, b)
	}
}
