package nodedir

import (
	"os"
	"path/filepath"
	"testing"
)

func TestSaveLibvirtPKI(t *testing.T) {
	d := Dir(t.TempDir())
	m := &TLS{CACert: []byte("ca"), CAKey: []byte("cakey"), Cert: []byte("cert"), Key: []byte("key")}
	changed, err := d.SaveLibvirtPKI(m)
	if err != nil || !changed {
		t.Fatalf("first save: changed %v, %v", changed, err)
	}
	want := map[string]struct {
		data string
		mode os.FileMode
	}{
		"cacert.pem": {"ca", 0o644}, "servercert.pem": {"cert", 0o644}, "serverkey.pem": {"key", 0o600},
		"clientcert.pem": {"cert", 0o644}, "clientkey.pem": {"key", 0o600},
		"ca-cert.pem": {"ca", 0o644}, "server-cert.pem": {"cert", 0o644}, "server-key.pem": {"key", 0o600},
		"client-cert.pem": {"cert", 0o644}, "client-key.pem": {"key", 0o600},
	}
	ents, err := os.ReadDir(d.LibvirtPKIDir())
	if err != nil || len(ents) != len(want) {
		t.Fatalf("%s holds %d files (%v), want %d", d.LibvirtPKIDir(), len(ents), err, len(want))
	}
	for name, w := range want {
		p := filepath.Join(d.LibvirtPKIDir(), name)
		b, err := os.ReadFile(p)
		st, serr := os.Stat(p)
		if err != nil || serr != nil || string(b) != w.data || st.Mode().Perm() != w.mode {
			t.Errorf("%s: %q %v, mode %v %v; want %q %v", name, b, err, st.Mode().Perm(), serr, w.data, w.mode)
		}
	}
	if st, err := os.Stat(d.LibvirtPKIDir()); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("dir mode %v, %v", st.Mode().Perm(), err)
	}
	// The same identity again: nothing to reload.
	if changed, err := d.SaveLibvirtPKI(m); err != nil || changed {
		t.Fatalf("same identity: changed %v, %v", changed, err)
	}
	// A loosened key mode is repaired and counts as a change.
	if err := os.Chmod(filepath.Join(d.LibvirtPKIDir(), "serverkey.pem"), 0o644); err != nil {
		t.Fatal(err)
	}
	if changed, err := d.SaveLibvirtPKI(m); err != nil || !changed {
		t.Fatalf("loosened mode: changed %v, %v", changed, err)
	}
	// A renewed certificate is a change.
	m.Cert = []byte("cert2")
	if changed, err := d.SaveLibvirtPKI(m); err != nil || !changed {
		t.Fatalf("new certificate: changed %v, %v", changed, err)
	}
	if b, _ := os.ReadFile(filepath.Join(d.LibvirtPKIDir(), "clientcert.pem")); string(b) != "cert2" {
		t.Errorf("clientcert.pem = %q after renewal", b)
	}
	// The CA key never goes there.
	for _, e := range ents {
		if b, _ := os.ReadFile(filepath.Join(d.LibvirtPKIDir(), e.Name())); string(b) == "cakey" {
			t.Errorf("%s holds the CA key", e.Name())
		}
	}
}
