package daemon

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"time"

	"github.com/tandemhci/tandem/compute"
	"github.com/tandemhci/tandem/internal/nodedir"
)

// libvirtReloadTimeout bounds asking libvirtd to reload its TLS files.
const libvirtReloadTimeout = 30 * time.Second

// syncLibvirtPKI writes libvirt's copy of the node identity m
// (<data_dir>/libvirt-pki) and, when it changed and this node runs VMs,
// asks the local libvirtd to reload it. It is the one step every change of
// identity (create, join, start, renewal) goes through. A libvirtd that
// cannot reload (down, too old, TLS not enabled yet) is only a warning:
// the files are right and a libvirtd (re)start reads them.
func (d *Daemon) syncLibvirtPKI(ctx context.Context, m *nodedir.TLS) error {
	changed, err := d.dir.SaveLibvirtPKI(m)
	if err != nil {
		return err
	}
	if changed && d.cfg.ComputeEnabled() {
		// Certificates issued before libvirt used them lack it.
		if b, _ := pem.Decode(m.Cert); b != nil {
			if c, err := x509.ParseCertificate(b.Bytes); err == nil && c.KeyUsage&x509.KeyUsageKeyEncipherment == 0 {
				d.log.Warn("this node's certificate lacks key usage keyEncipherment, which libvirtd requires of its TLS server certificate; live migration to this node fails until the certificate is renewed", "cert", d.dir.NodeCert())
			}
		}
	}
	if !changed || !d.cfg.ComputeEnabled() {
		return nil
	}
	rctx, cancel := context.WithTimeout(ctx, libvirtReloadTimeout)
	defer cancel()
	if err := compute.ReloadTLS(rctx, d.cfg.Compute.LibvirtSocket); err != nil {
		d.log.Warn("libvirt TLS files updated but libvirtd did not reload them; restart libvirtd", "dir", d.dir.LibvirtPKIDir(), "err", err)
		return nil
	}
	d.log.Info("libvirt TLS files updated and reloaded by libvirtd", "dir", d.dir.LibvirtPKIDir())
	return nil
}
