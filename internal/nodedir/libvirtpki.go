package nodedir

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
)

// LibvirtPKIDir holds the node's TLS material under the names libvirt and
// QEMU expect: libvirtd's key_file, cert_file and ca_file point here (see
// deploy/libvirtd-tls.conf), and migration URIs name it as pkipath, which
// reads cacert.pem, clientcert.pem and clientkey.pem. The dashed names are
// QEMU's x509 dir layout (migrate_tls_x509_cert_dir in qemu.conf).
func (d Dir) LibvirtPKIDir() string { return d.path("libvirt-pki") }

// libvirtPKIFiles maps each file of LibvirtPKIDir to its content and mode.
// The node certificate serves as both server and client certificate: it
// carries EKU serverAuth and clientAuth.
func libvirtPKIFiles(m *TLS) []struct {
	name string
	data []byte
	mode os.FileMode
} {
	return []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{"cacert.pem", m.CACert, 0o644},
		{"servercert.pem", m.Cert, 0o644},
		{"serverkey.pem", m.Key, 0o600},
		{"clientcert.pem", m.Cert, 0o644},
		{"clientkey.pem", m.Key, 0o600},
		{"ca-cert.pem", m.CACert, 0o644},
		{"server-cert.pem", m.Cert, 0o644},
		{"server-key.pem", m.Key, 0o600},
		{"client-cert.pem", m.Cert, 0o644},
		{"client-key.pem", m.Key, 0o600},
	}
}

// SaveLibvirtPKI writes the node's certificate, key and CA certificate into
// LibvirtPKIDir (keys 0600) and reports whether any file changed, so that
// the caller asks libvirtd to reload only then. It is the one place that
// derives libvirt's files from the node identity; whoever changes the
// identity (create, join, renewal) calls it after SaveTLS.
func (d Dir) SaveLibvirtPKI(m *TLS) (changed bool, err error) {
	if err := os.MkdirAll(d.LibvirtPKIDir(), 0o700); err != nil {
		return false, err
	}
	for _, f := range libvirtPKIFiles(m) {
		path := d.path("libvirt-pki", f.name)
		old, err := os.ReadFile(path)
		if err == nil && bytes.Equal(old, f.data) {
			if st, err := os.Stat(path); err == nil && st.Mode().Perm() == f.mode {
				continue
			}
		} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return changed, err
		}
		if err := WriteFileAtomic(path, f.data, f.mode); err != nil {
			return changed, err
		}
		changed = true
	}
	return changed, nil
}
