package nodedir

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func mode(t *testing.T, path string) fs.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// leftovers lists the temporary files WriteFileAtomic left in dir.
func leftovers(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var tmp []string
	for _, e := range es {
		if strings.HasPrefix(e.Name(), ".tmp-") {
			tmp = append(tmp, e.Name())
		}
	}
	return tmp
}

func TestWriteFileAtomicReplaces(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "sub", "f.json")
	if err := WriteFileAtomic(p, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	if m := mode(t, filepath.Dir(p)); m != 0o700 {
		t.Errorf("created parent mode %v, want 0700", m)
	}
	if err := WriteFileAtomic(p, []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(p); err != nil || string(b) != "new" {
		t.Fatalf("after rewrite: %q %v", b, err)
	}
	if m := mode(t, p); m != 0o644 {
		t.Errorf("mode %v, want 0644", m)
	}
	if tmp := leftovers(t, filepath.Dir(p)); len(tmp) != 0 {
		t.Errorf("temporary files left: %v", tmp)
	}
}

// TestWriteFileAtomicFailureKeepsOld makes the final rename fail (the
// target is a non-empty directory): the old content must stay whole and no
// temporary file may be left behind.
func TestWriteFileAtomicFailureKeepsOld(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	if err := os.MkdirAll(filepath.Join(p, "keep"), 0o700); err != nil {
		t.Fatal(err)
	}
	err := WriteFileAtomic(p, []byte("new"), 0o600)
	if err == nil || !strings.Contains(err.Error(), p) {
		t.Fatalf("rename over a directory: %v, want an error naming %s", err, p)
	}
	if _, err := os.Stat(filepath.Join(p, "keep")); err != nil {
		t.Errorf("old content lost: %v", err)
	}
	if tmp := leftovers(t, dir); len(tmp) != 0 {
		t.Errorf("temporary files left: %v", tmp)
	}

	// A file whose parent cannot be created is refused before anything
	// is written.
	blocker := filepath.Join(dir, "plain")
	if err := os.WriteFile(blocker, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(filepath.Join(blocker, "f"), []byte("new"), 0o600); err == nil {
		t.Fatal("write under a regular file succeeded")
	}
	if b, _ := os.ReadFile(blocker); string(b) != "x" {
		t.Errorf("blocker changed: %q", b)
	}
}

func TestIdentityRoundTripAndMissing(t *testing.T) {
	d := Dir(t.TempDir())
	if id, err := d.LoadIdentity(); id != nil || err != nil {
		t.Fatalf("no node.json: %v %v, want nil nil", id, err)
	}
	want := Identity{ClusterName: "c", ClusterID: "cid", NodeName: "n1", ReplicaID: 3, Role: "witness"}
	if err := d.SaveIdentity(&want); err != nil {
		t.Fatal(err)
	}
	if m := mode(t, d.Identity()); m != 0o600 {
		t.Errorf("node.json mode %v, want 0600", m)
	}
	got, err := d.LoadIdentity()
	if err != nil || got == nil || *got != want {
		t.Fatalf("round trip: %+v %v, want %+v", got, err, want)
	}
	// The file format is the contract with older nodes: snake_case keys.
	b, _ := os.ReadFile(d.Identity())
	for _, k := range []string{`"cluster_name": "c"`, `"cluster_id": "cid"`, `"node_name": "n1"`, `"replica_id": 3`, `"role": "witness"`} {
		if !bytes.Contains(b, []byte(k)) {
			t.Errorf("node.json lacks %s:\n%s", k, b)
		}
	}
}

func TestIdentityCorruptOrIncomplete(t *testing.T) {
	for _, c := range []struct{ name, content, want string }{
		{"torn", `{"cluster_name": "c", "clus`, "is corrupt"},
		{"not json", "\x00\x00\x00", "is corrupt"},
		{"empty", "", "is corrupt"},
		{"no cluster id", `{"node_name": "n1", "replica_id": 1}`, "is incomplete"},
		{"no replica", `{"cluster_id": "x", "node_name": "n1"}`, "is incomplete"},
		{"no node name", `{"cluster_id": "x", "replica_id": 1}`, "is incomplete"},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := Dir(t.TempDir())
			if err := os.WriteFile(d.Identity(), []byte(c.content), 0o600); err != nil {
				t.Fatal(err)
			}
			id, err := d.LoadIdentity()
			if id != nil || err == nil {
				t.Fatalf("got %+v %v, want an error", id, err)
			}
			for _, s := range []string{c.want, d.Identity(), "rejoin"} {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q lacks %q", err, s)
				}
			}
		})
	}
}

func TestIdentityUnreadable(t *testing.T) {
	d := Dir(t.TempDir())
	// A directory where node.json should be: it exists but cannot be read.
	if err := os.Mkdir(d.Identity(), 0o700); err != nil {
		t.Fatal(err)
	}
	if id, err := d.LoadIdentity(); id != nil || err == nil || !strings.Contains(err.Error(), "read node identity") {
		t.Fatalf("unreadable node.json: %+v %v", id, err)
	}
}

func TestTLSRoundTripAndModes(t *testing.T) {
	d := Dir(t.TempDir())
	if _, err := d.LoadTLS(); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("no material: %v, want not exist", err)
	}
	want := TLS{CACert: []byte("ca cert"), CAKey: []byte("ca key"), Cert: []byte("node cert"), Key: []byte("node key")}
	if err := d.SaveTLS(&want); err != nil {
		t.Fatal(err)
	}
	got, err := d.LoadTLS()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.CACert, want.CACert) || !bytes.Equal(got.CAKey, want.CAKey) || !bytes.Equal(got.Cert, want.Cert) || !bytes.Equal(got.Key, want.Key) {
		t.Fatalf("round trip: %+v, want %+v", got, want)
	}
	for p, m := range map[string]fs.FileMode{d.CACert(): 0o644, d.CAKey(): 0o600, d.NodeCert(): 0o644, d.NodeKey(): 0o600, d.TLSDir(): 0o700} {
		if got := mode(t, p); got != m {
			t.Errorf("%s mode %v, want %v", p, got, m)
		}
	}
	// One missing file is an error, not empty material.
	if err := os.Remove(d.NodeKey()); err != nil {
		t.Fatal(err)
	}
	if m, err := d.LoadTLS(); m != nil || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing node.key: %v %v", m, err)
	}
}

func TestAdminAndToken(t *testing.T) {
	d := Dir(t.TempDir())
	if _, err := d.AdminToken(); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("no token: %v", err)
	}
	c := Admin{CACert: []byte("ca"), Cert: []byte("crt"), Key: []byte("key"), Token: "tdma1.secret", Endpoint: "10.0.0.1:7443"}
	if err := d.SaveAdmin(c); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"ca.crt": "ca", "admin.crt": "crt", "admin.key": "key", "token": "tdma1.secret\n", "endpoint": "10.0.0.1:7443\n"} {
		b, err := os.ReadFile(d.AdminFile(name))
		if err != nil || string(b) != want {
			t.Errorf("admin/%s: %q %v, want %q", name, b, err, want)
		}
		if m := mode(t, d.AdminFile(name)); m != 0o600 {
			t.Errorf("admin/%s mode %v, want 0600", name, m)
		}
	}
	if m := mode(t, d.AdminDir()); m != 0o700 {
		t.Errorf("admin mode %v, want 0700", m)
	}
	if tok, err := d.AdminToken(); err != nil || tok != "tdma1.secret" {
		t.Fatalf("token: %q %v", tok, err)
	}
	// A token edited by hand (CRLF, trailing blank) still reads back.
	if err := os.WriteFile(d.AdminFile("token"), []byte("tdma1.x \r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if tok, err := d.AdminToken(); err != nil || tok != "tdma1.x" {
		t.Fatalf("hand-edited token: %q %v", tok, err)
	}
}

func TestRemoveInitKeepsTheRest(t *testing.T) {
	d := Dir(t.TempDir())
	if err := d.SaveIdentity(&Identity{ClusterID: "c", NodeName: "n", ReplicaID: 1}); err != nil {
		t.Fatal(err)
	}
	if err := d.SaveTLS(&TLS{CACert: []byte("a"), CAKey: []byte("b"), Cert: []byte("c"), Key: []byte("d")}); err != nil {
		t.Fatal(err)
	}
	if err := d.SaveAdmin(Admin{Token: "t"}); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(filepath.Join(d.RaftDir(), "log"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(d.VolumesFile(), []byte("[]"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := d.RemoveInit(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{d.Identity(), d.TLSDir(), d.AdminDir(), d.RaftDir()} {
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s still there: %v", p, err)
		}
	}
	if _, err := os.Stat(d.VolumesFile()); err != nil {
		t.Errorf("volumes.json removed: %v", err)
	}
	if id, err := d.LoadIdentity(); id != nil || err != nil {
		t.Errorf("identity after reset: %v %v", id, err)
	}
	// Nothing to remove is not an error.
	if err := d.RemoveInit(); err != nil {
		t.Errorf("second reset: %v", err)
	}
}

func TestCheck(t *testing.T) {
	d := Dir(filepath.Join(t.TempDir(), "new", "data"))
	if err := d.Check(); err != nil {
		t.Fatal(err)
	}
	if m := mode(t, string(d)); m != 0o700 {
		t.Errorf("created data dir mode %v, want 0700", m)
	}
	es, _ := os.ReadDir(string(d))
	if len(es) != 0 {
		t.Errorf("check left files: %v", es)
	}
	// A path through a regular file cannot be a data directory.
	file := filepath.Join(string(d), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Dir(filepath.Join(file, "data")).Check(); err == nil || !strings.HasPrefix(err.Error(), "data dir "+file) {
		t.Fatalf("data dir under a file: %v", err)
	}
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		t.Skip("root writes to read-only directories")
	}
	ro := Dir(t.TempDir())
	if err := os.Chmod(string(ro), 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Chmod(string(ro), 0o700) })
	if err := ro.Check(); err == nil || !strings.Contains(err.Error(), "is not writable") || !errors.Is(err, fs.ErrPermission) {
		t.Fatalf("read-only data dir: %v", err)
	}
}

func TestLayout(t *testing.T) {
	d := Dir("/var/lib/tandem")
	for _, c := range [][2]string{
		{d.Identity(), "/var/lib/tandem/node.json"}, {d.Socket(), "/var/lib/tandem/tandemd.sock"},
		{d.NBDSocket(), "/var/lib/tandem/nbd.sock"}, {d.VolumesFile(), "/var/lib/tandem/volumes.json"},
		{d.RaftDir(), "/var/lib/tandem/raft"}, {d.TLSDir(), "/var/lib/tandem/tls"},
		{d.CACert(), "/var/lib/tandem/tls/ca.crt"}, {d.CAKey(), "/var/lib/tandem/tls/ca.key"},
		{d.NodeCert(), "/var/lib/tandem/tls/node.crt"}, {d.NodeKey(), "/var/lib/tandem/tls/node.key"},
		{d.AdminDir(), "/var/lib/tandem/admin"}, {d.AdminFile("token"), "/var/lib/tandem/admin/token"},
	} {
		if c[0] != c[1] {
			t.Errorf("%s, want %s", c[0], c[1])
		}
	}
}

func TestClusterSecret(t *testing.T) {
	d := Dir(t.TempDir())
	if _, err := d.LoadClusterSecret(); !errors.Is(err, ErrNoClusterSecret) || !strings.Contains(err.Error(), "copy") {
		t.Fatalf("missing secret: %v", err)
	}
	if err := d.SaveClusterSecret([]byte("short")); err == nil {
		t.Fatal("saved a 5-byte secret")
	}
	secret := bytes.Repeat([]byte{7}, 32)
	if err := d.SaveClusterSecret(secret); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(d.ClusterSecret())
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("secret file: %v %v", st, err)
	}
	got, err := d.LoadClusterSecret()
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("LoadClusterSecret = %x, %v", got, err)
	}
	if err := os.Chmod(d.ClusterSecret(), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := d.LoadClusterSecret(); err == nil || !strings.Contains(err.Error(), "chmod 0600") {
		t.Errorf("world-readable secret: %v", err)
	}
	if err := os.WriteFile(d.ClusterSecret(), append(secret, 1), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(d.ClusterSecret(), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := d.LoadClusterSecret(); err == nil || !strings.Contains(err.Error(), "exactly 32 bytes") {
		t.Errorf("33-byte secret: %v", err)
	}
	if err := d.RemoveInit(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(d.ClusterSecret()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("RemoveInit left the secret: %v", err)
	}
}

// A renewal interrupted at any step leaves a matching certificate and key
// once LoadTLS has run.
func TestSaveNodeCertCrashPoints(t *testing.T) {
	old := TLS{CACert: []byte("ca"), CAKey: []byte("cakey"), Cert: []byte("cert-1"), Key: []byte("key-1")}
	for _, tc := range []struct {
		name     string
		crash    func(d Dir) // leaves the state a crash at that point would
		wantCert string
	}{
		{"after the key's .next", func(d Dir) { mustWrite(t, d.NodeKey()+".next", "key-2") }, "cert-1"},
		{"after both .next", func(d Dir) {
			mustWrite(t, d.NodeKey()+".next", "key-2")
			mustWrite(t, d.NodeCert()+".next", "cert-2")
		}, "cert-2"},
		{"after the key's rename", func(d Dir) {
			mustWrite(t, d.NodeKey(), "key-2")
			mustWrite(t, d.NodeCert()+".next", "cert-2")
		}, "cert-2"},
		{"completed", func(d Dir) {
			if err := d.SaveNodeCert([]byte("cert-2"), []byte("key-2")); err != nil {
				t.Fatal(err)
			}
		}, "cert-2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := Dir(t.TempDir())
			if err := d.SaveTLS(&old); err != nil {
				t.Fatal(err)
			}
			tc.crash(d)
			m, err := d.LoadTLS()
			if err != nil {
				t.Fatal(err)
			}
			wantKey := strings.Replace(tc.wantCert, "cert", "key", 1)
			if string(m.Cert) != tc.wantCert || string(m.Key) != wantKey {
				t.Fatalf("loaded %s/%s, want %s/%s", m.Cert, m.Key, tc.wantCert, wantKey)
			}
			for _, f := range []string{d.NodeKey() + ".next", d.NodeCert() + ".next"} {
				if _, err := os.Stat(f); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s left behind", f)
				}
			}
		})
	}
}

// A rejoin's replacement of the whole material (CA included) interrupted
// at any step leaves the old set or the new one once LoadTLS has run,
// never a mix (a certificate next to another CA, or another key).
func TestReplaceTLSCrashPoints(t *testing.T) {
	old := TLS{CACert: []byte("ca-1"), CAKey: []byte("cakey-1"), Cert: []byte("cert-1"), Key: []byte("key-1")}
	next := func(d Dir, files ...string) {
		for _, f := range files {
			v := map[string]string{d.CACert(): "ca-2", d.CAKey(): "cakey-2", d.NodeKey(): "key-2", d.NodeCert(): "cert-2"}[f]
			mustWrite(t, f+".next", v)
		}
	}
	for _, tc := range []struct {
		name  string
		crash func(d Dir)
		want  string // "1" or "2"
	}{
		{"after the CA's .next", func(d Dir) { next(d, d.CACert()) }, "1"},
		{"after every .next but the certificate's", func(d Dir) { next(d, d.CACert(), d.CAKey(), d.NodeKey()) }, "1"},
		{"after every .next", func(d Dir) { next(d, d.CACert(), d.CAKey(), d.NodeKey(), d.NodeCert()) }, "2"},
		{"after the CA's renames", func(d Dir) {
			mustWrite(t, d.CACert(), "ca-2")
			mustWrite(t, d.CAKey(), "cakey-2")
			next(d, d.NodeKey(), d.NodeCert())
		}, "2"},
		{"completed", func(d Dir) {
			if err := d.ReplaceTLS(&TLS{CACert: []byte("ca-2"), CAKey: []byte("cakey-2"), Cert: []byte("cert-2"), Key: []byte("key-2")}); err != nil {
				t.Fatal(err)
			}
		}, "2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := Dir(t.TempDir())
			if err := d.SaveTLS(&old); err != nil {
				t.Fatal(err)
			}
			tc.crash(d)
			m, err := d.LoadTLS()
			if err != nil {
				t.Fatal(err)
			}
			got := fmt.Sprintf("%s %s %s %s", m.CACert, m.CAKey, m.Cert, m.Key)
			if want := fmt.Sprintf("ca-%[1]s cakey-%[1]s cert-%[1]s key-%[1]s", tc.want); got != want {
				t.Fatalf("loaded %q, want %q", got, want)
			}
			for _, f := range []string{d.CACert(), d.CAKey(), d.NodeKey(), d.NodeCert()} {
				if _, err := os.Stat(f + ".next"); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s.next left behind", f)
				}
			}
		})
	}
}

func mustWrite(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}
