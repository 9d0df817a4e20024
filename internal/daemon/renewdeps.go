package daemon

import (
	"context"
	"errors"
	"time"

	"github.com/tandemhci/tandem/internal/membership"
	"github.com/tandemhci/tandem/internal/nodedir"
)

// recordCertTimeout bounds committing a renewed certificate's serial.
const recordCertTimeout = 10 * time.Second

// newRenewer wires certificate renewal (membership.Renewer) to the data
// directory and the running TLS configuration.
func (d *Daemon) newRenewer() *membership.Renewer {
	return membership.NewRenewer(membership.RenewConfig{
		State: d.st,
		Material: func() (membership.Material, bool) {
			m := d.hs.tls.Load()
			if m == nil || d.hs.meta.Load() == nil {
				return membership.Material{}, false
			}
			return membership.Material(*m), true
		},
		Admin: func() (membership.AdminCredentials, bool) {
			c, ok, err := d.dir.LoadAdmin()
			if err != nil {
				d.log.Warn("admin credentials unreadable; not renewing them", "err", err)
			}
			return membership.AdminCredentials(c), ok && err == nil
		},
		Record: func(ctx context.Context, node, serial string, notAfter time.Time) error {
			meta := d.hs.meta.Load()
			if meta == nil {
				return errors.New("the metadata replica is not running")
			}
			rctx, cancel := context.WithTimeout(ctx, recordCertTimeout)
			defer cancel()
			return meta.RecordNodeCert(rctx, node, serial, notAfter)
		},
		Install: func(m membership.Material) error {
			if err := d.dir.SaveNodeCert(m.Cert, m.Key); err != nil {
				return err
			}
			d.useTLS(context.Background(), m)
			return nil
		},
		InstallTLS: func(m membership.Material) error {
			// A CA rotation changes the CA files and maybe the certificate:
			// all at once, crash-safely (a crash leaves the old set or the
			// new one, never a CA bundle next to a key it does not match).
			t := nodedir.TLS(m)
			if err := d.dir.ReplaceTLS(&t); err != nil {
				return err
			}
			d.useTLS(context.Background(), m)
			return nil
		},
		InstallAdmin: func(c membership.AdminCredentials) error { return d.dir.SaveAdmin(nodedir.Admin(c)) },
		Lifetime:     func() time.Duration { return membership.CertLifetime(d.st) },
	})
}

// useTLS makes m the material of the next handshakes, of the identity
// subsystems read, and of libvirtd's TLS (so migrations follow a renewal
// or a CA rotation).
func (d *Daemon) useTLS(ctx context.Context, m membership.Material) {
	t := nodedir.TLS(m)
	d.mu.Lock()
	d.tls = &t
	d.mu.Unlock()
	d.hs.tls.Store(&t)
	if err := d.syncLibvirtPKI(ctx, &t); err != nil {
		d.log.Warn("libvirt TLS files not updated; live migrations may fail until tandemd restarts", "err", err)
	}
}
