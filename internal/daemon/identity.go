package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/tandemhci/tandem/internal/membership"
)

// identity is what a node remembers about its cluster (node.json).
type identity = membership.Identity

// layout names the files in the data directory.
type layout struct{ dir string }

func (l layout) identity() string          { return filepath.Join(l.dir, "node.json") }
func (l layout) socket() string            { return filepath.Join(l.dir, "tandemd.sock") }
func (l layout) nbdSocket() string         { return filepath.Join(l.dir, "nbd.sock") }
func (l layout) volumesFile() string       { return filepath.Join(l.dir, "volumes.json") }
func (l layout) raftDir() string           { return filepath.Join(l.dir, "raft") }
func (l layout) tlsDir() string            { return filepath.Join(l.dir, "tls") }
func (l layout) caCert() string            { return filepath.Join(l.tlsDir(), "ca.crt") }
func (l layout) caKey() string             { return filepath.Join(l.tlsDir(), "ca.key") }
func (l layout) nodeCert() string          { return filepath.Join(l.tlsDir(), "node.crt") }
func (l layout) nodeKey() string           { return filepath.Join(l.tlsDir(), "node.key") }
func (l layout) adminDir() string          { return filepath.Join(l.dir, "admin") }
func (l layout) adminFile(n string) string { return filepath.Join(l.adminDir(), n) }

// writeFileAtomic writes via a temporary file, fsync and rename, so a crash
// leaves either the old or the new content, never a torn file.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
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
	d, err := os.Open(filepath.Dir(path))
	if err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

func loadIdentity(l layout) (*identity, error) {
	b, err := os.ReadFile(l.identity())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read node identity: %w", err)
	}
	var id identity
	if err := json.Unmarshal(b, &id); err != nil {
		return nil, fmt.Errorf("node identity %s is corrupt (%v); restore it from a backup or remove the node's data directory and rejoin", l.identity(), err)
	}
	if id.ClusterID == "" || id.ReplicaID == 0 || id.NodeName == "" {
		return nil, fmt.Errorf("node identity %s is incomplete; restore it or remove the data directory and rejoin", l.identity())
	}
	return &id, nil
}

func saveIdentity(l layout, id *identity) error {
	b, err := json.MarshalIndent(id, "", "  ")
	if err != nil {
		return fmt.Errorf("encode identity: %w", err)
	}
	return writeFileAtomic(l.identity(), append(b, '\n'), 0o600)
}

// tlsMaterial is the node's PEM material.
type tlsMaterial struct {
	caCert, caKey, cert, key []byte
}

func (l layout) loadTLS() (*tlsMaterial, error) {
	var m tlsMaterial
	for _, f := range []struct {
		path string
		dst  *[]byte
	}{{l.caCert(), &m.caCert}, {l.caKey(), &m.caKey}, {l.nodeCert(), &m.cert}, {l.nodeKey(), &m.key}} {
		b, err := os.ReadFile(f.path)
		if err != nil {
			return nil, fmt.Errorf("node certificate material: %w", err)
		}
		*f.dst = b
	}
	return &m, nil
}

func (l layout) saveTLS(m *tlsMaterial) error {
	for _, f := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{{l.caCert(), m.caCert, 0o644}, {l.caKey(), m.caKey, 0o600}, {l.nodeCert(), m.cert, 0o644}, {l.nodeKey(), m.key, 0o600}} {
		if err := writeFileAtomic(f.path, f.data, f.mode); err != nil {
			return err
		}
	}
	return nil
}

// adminCredentials are what the CLI needs to reach the admin API.
type adminCredentials struct {
	caCert, cert, key []byte
	token, endpoint   string
}

func (l layout) saveAdmin(c adminCredentials) error {
	for _, f := range []struct {
		name string
		data []byte
	}{{"ca.crt", c.caCert}, {"admin.crt", c.cert}, {"admin.key", c.key}, {"token", []byte(c.token + "\n")}, {"endpoint", []byte(c.endpoint + "\n")}} {
		if err := writeFileAtomic(l.adminFile(f.name), f.data, 0o600); err != nil {
			return err
		}
	}
	return os.Chmod(l.adminDir(), 0o700)
}
