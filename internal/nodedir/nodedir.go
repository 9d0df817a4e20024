package nodedir

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Dir is a node's data directory.
type Dir string

func (d Dir) path(elem ...string) string {
	return filepath.Join(append([]string{string(d)}, elem...)...)
}

// Identity is node.json: what a node remembers about its cluster.
func (d Dir) Identity() string { return d.path("node.json") }

// Socket is the admin API's unix socket.
func (d Dir) Socket() string { return d.path("tandemd.sock") }

// NBDSocket is the local NBD server's unix socket.
func (d Dir) NBDSocket() string { return d.path("nbd.sock") }

// VolumesFile is the list of volumes this node holds replicas of.
func (d Dir) VolumesFile() string { return d.path("volumes.json") }

// RaftDir is the Raft host's directory (logs and snapshots).
func (d Dir) RaftDir() string { return d.path("raft") }

// TLSDir holds the node's certificate material.
func (d Dir) TLSDir() string { return d.path("tls") }

// CACert is the cluster CA's certificate.
func (d Dir) CACert() string { return d.path("tls", "ca.crt") }

// CAKey is the cluster CA's private key.
func (d Dir) CAKey() string { return d.path("tls", "ca.key") }

// NodeCert is this node's certificate.
func (d Dir) NodeCert() string { return d.path("tls", "node.crt") }

// NodeKey is this node's private key.
func (d Dir) NodeKey() string { return d.path("tls", "node.key") }

// ClusterSecret is the cluster secret that seals the secrets stored in
// the metadata shard (package sealed).
func (d Dir) ClusterSecret() string { return d.path("cluster.secret") }

// AdminDir holds the admin credentials the CLI reads.
func (d Dir) AdminDir() string { return d.path("admin") }

// AdminFile is the file name in the admin directory.
func (d Dir) AdminFile(name string) string { return d.path("admin", name) }

// Check creates the directory if needed and proves it writable, so a
// read-only or misowned directory fails at startup, not at the first write.
func (d Dir) Check() error {
	if err := os.MkdirAll(string(d), 0o700); err != nil {
		return fmt.Errorf("data dir %s: %w", d, errors.Unwrap(err))
	}
	probe := d.path(".write-test")
	if err := os.WriteFile(probe, []byte("ok"), 0o600); err != nil {
		return fmt.Errorf("data dir %s is not writable: %w", d, errors.Unwrap(err))
	}
	return os.Remove(probe)
}

// WriteFileAtomic writes via a temporary file, fsync and rename, so a crash
// leaves either the old or the new content, never a torn file. It creates
// the parent directory (0700) if needed.
func WriteFileAtomic(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(path), err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("sync %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	// The rename is durable only once the directory is synced; a failure
	// here leaves a correct file that a crash may roll back, as before.
	dir, err := os.Open(filepath.Dir(path))
	if err == nil {
		_ = dir.Sync()
		dir.Close()
	}
	return nil
}

// Identity is what a node remembers about its cluster (node.json). Its
// fields match membership.Identity, which converts to and from it.
type Identity struct {
	ClusterName string `json:"cluster_name"`
	ClusterID   string `json:"cluster_id"`
	NodeName    string `json:"node_name"`
	ReplicaID   uint64 `json:"replica_id"`
	Role        string `json:"role"`
}

// LoadIdentity reads node.json: nil and no error when there is none (the
// node is in no cluster), an error naming the way out when it is corrupt
// or incomplete.
func (d Dir) LoadIdentity() (*Identity, error) {
	b, err := os.ReadFile(d.Identity())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read node identity: %w", err)
	}
	var id Identity
	if err := json.Unmarshal(b, &id); err != nil {
		return nil, fmt.Errorf("node identity %s is corrupt (%w); restore it from a backup or remove the node's data directory and rejoin", d.Identity(), err)
	}
	if id.ClusterID == "" || id.ReplicaID == 0 || id.NodeName == "" {
		return nil, fmt.Errorf("node identity %s is incomplete; restore it or remove the data directory and rejoin", d.Identity())
	}
	return &id, nil
}

// SaveIdentity writes node.json (0600).
func (d Dir) SaveIdentity(id *Identity) error {
	b, err := json.MarshalIndent(id, "", "  ")
	if err != nil {
		return fmt.Errorf("encode identity: %w", err)
	}
	return WriteFileAtomic(d.Identity(), append(b, '\n'), 0o600)
}

// TLS is the node's PEM material. Its fields match membership.Material.
type TLS struct {
	CACert, CAKey, Cert, Key []byte
}

// LoadTLS reads the node's certificate material; every file must exist.
// A renewal that a crash interrupted is completed first (see
// SaveNodeCert).
func (d Dir) LoadTLS() (*TLS, error) {
	if err := d.finishNodeCert(); err != nil {
		return nil, fmt.Errorf("node certificate material: completing a renewal: %w", err)
	}
	var m TLS
	for _, f := range []struct {
		path string
		dst  *[]byte
	}{{d.CACert(), &m.CACert}, {d.CAKey(), &m.CAKey}, {d.NodeCert(), &m.Cert}, {d.NodeKey(), &m.Key}} {
		b, err := os.ReadFile(f.path)
		if err != nil {
			return nil, fmt.Errorf("node certificate material: %w", err)
		}
		*f.dst = b
	}
	return &m, nil
}

// SaveTLS writes the node's certificate material: keys 0600, certificates
// 0644.
func (d Dir) SaveTLS(m *TLS) error {
	for _, f := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{{d.CACert(), m.CACert, 0o644}, {d.CAKey(), m.CAKey, 0o600}, {d.NodeCert(), m.Cert, 0o644}, {d.NodeKey(), m.Key, 0o600}} {
		if err := WriteFileAtomic(f.path, f.data, f.mode); err != nil {
			return err
		}
	}
	return nil
}

// Admin are what the CLI needs to reach the admin API. Its fields match
// membership.AdminCredentials.
type Admin struct {
	CACert, Cert, Key []byte
	Token, Endpoint   string
}

// SaveAdmin writes the admin credentials, every file 0600 and the
// directory 0700.
func (d Dir) SaveAdmin(c Admin) error {
	for _, f := range []struct {
		name string
		data []byte
	}{{"ca.crt", c.CACert}, {"admin.crt", c.Cert}, {"admin.key", c.Key}, {"token", []byte(c.Token + "\n")}, {"endpoint", []byte(c.Endpoint + "\n")}} {
		if f.name == "token" && c.Token == "" {
			continue // a joined node is handed no API credential
		}
		if err := WriteFileAtomic(d.AdminFile(f.name), f.data, 0o600); err != nil {
			return err
		}
	}
	return os.Chmod(d.AdminDir(), 0o700)
}

// AdminToken reads the admin token back, without its trailing newline.
// The error names the file.
func (d Dir) AdminToken() (string, error) {
	b, err := os.ReadFile(d.AdminFile("token"))
	if err != nil {
		return "", err
	}
	return strings.TrimRight(string(b), "\r\n "), nil
}

// ErrNoClusterSecret is LoadClusterSecret's error when the node has none
// (it joined, or its cluster was created, before the secret existed).
var ErrNoClusterSecret = errors.New("this node has no cluster secret")

// clusterSecretSize is the secret's length (sealed.SecretSize; nodedir
// imports nothing of the module).
const clusterSecretSize = 32

// SaveClusterSecret writes the cluster secret (0600).
func (d Dir) SaveClusterSecret(secret []byte) error {
	if len(secret) != clusterSecretSize {
		return fmt.Errorf("cluster secret is %d bytes, want %d", len(secret), clusterSecretSize)
	}
	return WriteFileAtomic(d.ClusterSecret(), secret, 0o600)
}

// LoadClusterSecret reads the cluster secret. A missing file is
// ErrNoClusterSecret with the way out; a file of the wrong size or
// readable by others is refused.
func (d Dir) LoadClusterSecret() ([]byte, error) {
	p := d.ClusterSecret()
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w (%s is missing; it joined or its cluster was created before cluster secrets existed): copy %s from a member that has it (mode 0600), or, if no member has one, put the same %d random bytes in that file on every member", ErrNoClusterSecret, p, p, clusterSecretSize)
	}
	if err != nil {
		return nil, fmt.Errorf("cluster secret: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("cluster secret: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("cluster secret %s is mode %04o: others may read it; chmod 0600 it", p, st.Mode().Perm())
	}
	b := make([]byte, clusterSecretSize+1)
	n, err := io.ReadFull(f, b)
	if n != clusterSecretSize || !errors.Is(err, io.ErrUnexpectedEOF) {
		return nil, fmt.Errorf("cluster secret %s must be exactly %d bytes", p, clusterSecretSize)
	}
	return b[:n], nil
}

// RemoveInit removes what create or join wrote (the Raft directory, the
// TLS material, the cluster secret, the admin credentials and the
// identity), so a node whose
// initialisation failed can start again from scratch. It removes all it
// can and returns the failures.
func (d Dir) RemoveInit() error {
	var errs []error
	for _, p := range []string{d.RaftDir(), d.TLSDir(), d.ClusterSecret(), d.AdminDir(), d.Identity()} {
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// SaveNodeCert replaces the node certificate and its key (a renewal) so
// that a crash at any point leaves a matching pair: both are first written
// next to the old ones as *.next, then the key and then the certificate
// are renamed over them. LoadTLS finishes the renames a crash left undone.
func (d Dir) SaveNodeCert(cert, key []byte) error {
	if err := WriteFileAtomic(d.NodeKey()+".next", key, 0o600); err != nil {
		return err
	}
	if err := WriteFileAtomic(d.NodeCert()+".next", cert, 0o644); err != nil {
		return err
	}
	return d.finishNodeCert()
}

// ReplaceTLS replaces all of the node's certificate material at once (a
// rejoin: a new certificate from a CA that may have been rotated), so that
// a crash at any point leaves either the old set or the new one: every
// file is first written as *.next, the node certificate's last, then they
// are renamed over the old ones, the node certificate last. LoadTLS
// finishes the renames a crash left undone.
func (d Dir) ReplaceTLS(m *TLS) error {
	for _, f := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{{d.CACert(), m.CACert, 0o644}, {d.CAKey(), m.CAKey, 0o600}, {d.NodeKey(), m.Key, 0o600}, {d.NodeCert(), m.Cert, 0o644}} {
		if err := WriteFileAtomic(f.path+".next", f.data, f.mode); err != nil {
			return err
		}
	}
	return d.finishNodeCert()
}

// finishNodeCert completes SaveNodeCert and ReplaceTLS. The certificate's
// .next file is written last and renamed last, so its presence means the
// new set is complete and the renames are what remain; without it, the
// other .next files are an unfinished save and are dropped.
func (d Dir) finishNodeCert() error {
	others := []string{d.CACert(), d.CAKey(), d.NodeKey()}
	if _, err := os.Stat(d.NodeCert() + ".next"); errors.Is(err, os.ErrNotExist) {
		for _, p := range others {
			_ = os.Remove(p + ".next") // a save that died before the certificate
		}
		return nil
	}
	for _, p := range others {
		if err := os.Rename(p+".next", p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return os.Rename(d.NodeCert()+".next", d.NodeCert())
}

// LoadAdmin reads back what SaveAdmin wrote; ok is false when this node
// has no admin credentials.
func (d Dir) LoadAdmin() (c Admin, ok bool, err error) {
	if _, err := os.Stat(d.AdminFile("admin.crt")); errors.Is(err, os.ErrNotExist) {
		return Admin{}, false, nil
	}
	read := func(name string, optional bool) []byte {
		b, rerr := os.ReadFile(d.AdminFile(name))
		if rerr != nil && err == nil && !(optional && errors.Is(rerr, os.ErrNotExist)) {
			err = rerr
		}
		return b
	}
	c = Admin{CACert: read("ca.crt", false), Cert: read("admin.crt", false), Key: read("admin.key", false),
		Token: strings.TrimSpace(string(read("token", true))), Endpoint: strings.TrimSpace(string(read("endpoint", true)))}
	if err != nil {
		return Admin{}, false, fmt.Errorf("admin credentials: %w", err)
	}
	return c, true, nil
}
