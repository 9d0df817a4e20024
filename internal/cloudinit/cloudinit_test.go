package cloudinit

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tandemhci/tandem/internal/guest"
)

const (
	testUUID = "5e1f6a8c-0a47-4c3b-9d2e-6f1b2a3c4d5e"
	testName = "web"
)

func TestValidate(t *testing.T) {
	ok := []Seed{
		{UserData: []byte("#cloud-config\nhostname: web\nusers: [{name: admin}]\n")},
		{UserData: []byte("#cloud-config\n")},
		{UserData: []byte("#!/bin/sh\necho hi\n")},
		{UserData: []byte("Content-Type: multipart/mixed; boundary=x\n\n--x--\n")},
		{UserData: []byte("#cloud-config\r\na: 1\r\n"), MetaData: []byte("instance-id: i-1\n"), NetworkConfig: []byte("version: 2\nethernets: {}\n")},
	}
	for _, s := range ok {
		if err := s.Validate(testUUID, testName); err != nil {
			t.Errorf("%q: %v", s.UserData, err)
		}
	}
	bad := []struct {
		seed Seed
		want string
	}{
		{Seed{}, "user-data is empty"},
		{Seed{UserData: []byte("#cloud-config\nusers: [unclosed\n")}, "not valid YAML"},
		{Seed{UserData: []byte("#cloud-config\n- a\n- b\n")}, "YAML mapping"},
		{Seed{UserData: []byte("hostname: web\n")}, "add that line"},
		{Seed{UserData: []byte("hello world, not yaml: [\n")}, "must be #cloud-config YAML"},
		{Seed{UserData: []byte("#cloud-configx\na: 1\n")}, "exactly #cloud-config"},
		{Seed{UserData: []byte("#cloud-config\na: 1\n"), MetaData: []byte("instance-id: [\n")}, "meta-data"},
		{Seed{UserData: []byte("#cloud-config\na: 1\n"), NetworkConfig: []byte("just text")}, "network-config"},
		{Seed{UserData: append([]byte("#cloud-config\nx: "), bytes.Repeat([]byte("a"), MaxTotal)...)}, "at most 65536"},
	}
	for _, c := range bad {
		err := c.seed.Validate(testUUID, testName)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%.40q: %v, want %q", c.seed.UserData, err, c.want)
		}
	}
	// The default meta-data counts towards the bound.
	edge := Seed{UserData: append([]byte("#!"), bytes.Repeat([]byte("a"), MaxTotal-2)...)}
	if err := edge.Validate(testUUID, testName); err == nil {
		t.Error("a seed over the bound only with the default meta-data was accepted")
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	s := Seed{UserData: []byte("#cloud-config\na: 1\n"), NetworkConfig: []byte("version: 2\n")}
	b := s.Marshal()
	got, err := Unmarshal(b)
	if err != nil || !bytes.Equal(got.UserData, s.UserData) || !bytes.Equal(got.NetworkConfig, s.NetworkConfig) || got.MetaData != nil {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	for i := range b {
		if _, err := Unmarshal(b[:i]); err == nil {
			t.Fatalf("truncated to %d bytes: no error", i)
		}
	}
	if _, err := Unmarshal(append(b, 0)); err == nil {
		t.Fatal("trailing byte: no error")
	}
}

// TestBuildRoundTrip builds a seed with xorriso and reads it back with
// the test guest's own ISO reader and with xorriso.
func TestBuildRoundTrip(t *testing.T) {
	if _, err := exec.LookPath("xorriso"); err != nil {
		t.Skip("xorriso not installed")
	}
	user := []byte("#cloud-config\ntandem_test_value: r0und-trip\npassword: s3cret\n")
	net := []byte("version: 2\nethernets:\n  eth0: {dhcp4: true}\n")
	p := filepath.Join(t.TempDir(), "seed.iso")
	if err := Build(context.Background(), p, Seed{UserData: user, NetworkConfig: net}, testUUID, testName); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("seed file: %v %v", fi, err)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(p), ".cidata-*")); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if l, err := guest.ISOLabel(f); err != nil || l != Label {
		t.Fatalf("label %q, %v", l, err)
	}
	for name, want := range map[string][]byte{UserData: user, NetworkConfig: net, MetaData: DefaultMetaData(testUUID, testName)} {
		got, err := guest.ReadISOFile(f, name, MaxTotal)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: %q, %v; want %q", name, got, err, want)
		}
	}
	if v := guest.CloudInitTestValue(mustRead(t, f)); v != "r0und-trip" {
		t.Errorf("test value %q", v)
	}
	if _, err := guest.ReadISOFile(f, "vendor-data", MaxTotal); err == nil {
		t.Error("a file not in the seed was found")
	}
	// An independent reader sees the same names.
	out, err := exec.Command("xorriso", "-indev", p, "-find", "/", "-type", "f").CombinedOutput()
	if err != nil {
		t.Fatalf("xorriso -find: %v\n%s", err, out)
	}
	for _, n := range []string{"'/user-data'", "'/meta-data'", "'/network-config'"} {
		if !strings.Contains(string(out), n) {
			t.Errorf("xorriso does not list %s:\n%s", n, out)
		}
	}
	// Without network-config the file is left out.
	if err := Build(context.Background(), p, Seed{UserData: user}, testUUID, testName); err != nil {
		t.Fatal(err)
	}
	g, _ := os.Open(p)
	defer g.Close()
	if _, err := guest.ReadISOFile(g, NetworkConfig, MaxTotal); err == nil {
		t.Error("network-config in a seed without one")
	}
}

func mustRead(t *testing.T, f *os.File) []byte {
	t.Helper()
	b, err := guest.ReadISOFile(f, UserData, MaxTotal)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
