package membership

import (
	"context"
	"fmt"
	"time"

	"github.com/tandemhci/tandem/internal/ctxtime"
	"github.com/tandemhci/tandem/internal/pki"
	"github.com/tandemhci/tandem/internal/settings"
	"github.com/tandemhci/tandem/internal/state"
)

// RenewConfig is what certificate renewal needs; every field is required.
type RenewConfig struct {
	State *state.State
	// Material is the node's current TLS material, false while it is in no
	// cluster.
	Material func() (Material, bool)
	// Admin is the admin credentials saved on this node, false if none.
	Admin func() (AdminCredentials, bool)
	// Record commits a renewed node certificate's serial to the metadata
	// shard (consensus.Meta.RecordNodeCert).
	Record func(ctx context.Context, node, serial string, notAfter time.Time) error
	// Install persists renewed material and makes the running servers and
	// clients use it from their next handshake on.
	Install      func(Material) error
	InstallAdmin func(AdminCredentials) error
	// Lifetime is the cluster's certificate lifetime (pki.cert_lifetime).
	Lifetime func() time.Duration
}

// Renewer renews this node's certificates before they expire: the node
// certificate, which every listener and dial presents, and the admin
// certificate the local CLI uses over TCP. The node holds the cluster CA
// key (every member does; see docs/design.md §7), so it signs its own new
// certificate from a key that never leaves it. The new serial is committed
// to the node's record before the certificate is used, so no member refuses
// it; connections already open keep their session.
type Renewer struct{ c RenewConfig }

// NewRenewer returns a Renewer.
func NewRenewer(c RenewConfig) *Renewer { return &Renewer{c: c} }

// Interval is how often Run checks: a twentieth of the lifetime, between a
// second and a minute, so a short test lifetime is watched closely and a
// change of the setting is noticed soon; a check parses two certificates.
func Interval(lifetime time.Duration) time.Duration {
	return min(max(lifetime/20, time.Second), time.Minute)
}

// Run checks the certificates until ctx ends. A failed renewal (no quorum,
// say) is logged and retried at the next check; the old certificate stays
// in use meanwhile.
func (r *Renewer) Run(ctx context.Context) {
	for {
		if _, err := r.Check(ctx); err != nil && ctx.Err() == nil {
			r.c.State.Log.Warn("certificate renewal failed; retrying", "err", err)
		}
		if ctxtime.Sleep(ctx, Interval(r.c.Lifetime())) != nil {
			return
		}
	}
}

// Check renews what is due and reports what it renewed.
func (r *Renewer) Check(ctx context.Context) (renewed []string, _ error) {
	mat, ok := r.c.Material()
	if !ok {
		return nil, nil
	}
	now := r.c.State.Now()
	lifetime := r.c.Lifetime()
	due, err := isDue(mat.Cert, now, lifetime)
	if err != nil {
		return nil, fmt.Errorf("node certificate: %w", err)
	}
	ca, err := pki.LoadCA(mat.CACert, mat.CAKey)
	if err != nil {
		return nil, fmt.Errorf("cluster CA: %w", err)
	}
	if due {
		if err := r.renewNode(ctx, ca, mat, now, lifetime); err != nil {
			return renewed, err
		}
		renewed = append(renewed, "node")
	}
	adm, ok := r.c.Admin()
	if !ok {
		return renewed, nil
	}
	if due, err := isDue(adm.Cert, now, lifetime); err != nil || !due {
		return renewed, err
	}
	name := "admin@" + r.c.State.Node.Name
	cert, key, err := ca.IssueAdminFor(name, now, lifetime)
	if err != nil {
		return renewed, fmt.Errorf("admin certificate: %w", err)
	}
	adm.Cert, adm.Key, adm.CACert = cert, key, mat.CACert
	if err := r.c.InstallAdmin(adm); err != nil {
		return renewed, fmt.Errorf("save admin certificate: %w", err)
	}
	r.c.State.Log.Info("renewed the admin certificate", "name", name)
	return append(renewed, "admin"), nil
}

func (r *Renewer) renewNode(ctx context.Context, ca *pki.CA, mat Material, now time.Time, lifetime time.Duration) error {
	node := r.c.State.Node
	key, err := pki.NewKey()
	if err != nil {
		return err
	}
	csr, err := pki.NewCSR(key, node.Name)
	if err != nil {
		return err
	}
	cert, err := ca.SignNodeFor(csr, node.Name, nodeIPs(node), now, lifetime)
	if err != nil {
		return err
	}
	serial, err := pki.CertSerial(cert)
	if err != nil {
		return err
	}
	_, notAfter, err := pki.RenewAt(cert)
	if err != nil {
		return err
	}
	if err := r.c.Record(ctx, node.Name, serial, notAfter); err != nil {
		return fmt.Errorf("record the renewed certificate: %w", err)
	}
	if err := r.c.Install(Material{CACert: mat.CACert, CAKey: mat.CAKey, Cert: cert, Key: key}); err != nil {
		return fmt.Errorf("install the renewed certificate: %w", err)
	}
	r.c.State.Log.Info("renewed the node certificate", "serial", serial, "not_after", notAfter.UTC().Format(time.RFC3339))
	return nil
}

// lifetimeSlack is how much longer than the setting a certificate may
// live before it is reissued under a shortened setting.
const lifetimeSlack = time.Minute

// isDue reports whether a certificate has passed two thirds of its
// lifetime, or outlives the configured lifetime: an operator who shortens
// pki.cert_lifetime gets certificates that follow it.
func isDue(certPEM []byte, now time.Time, lifetime time.Duration) (bool, error) {
	at, notAfter, err := pki.RenewAt(certPEM)
	if err != nil {
		return false, err
	}
	return !now.Before(at) || notAfter.Sub(now) > lifetime+lifetimeSlack, nil
}

// CertLifetime is the lifetime of the certificates this node issues, from
// the cluster setting pki.cert_lifetime (its default when unreadable).
func CertLifetime(st *state.State) time.Duration {
	cfg := map[string]string{}
	if meta := st.Meta(); meta != nil {
		if ms, err := meta.LocalState(); err == nil {
			cfg = ms.Config
		}
	}
	if st.Settings != nil {
		cfg = st.Settings.Of(cfg)
	}
	d, err := settings.Duration(cfg, settings.KeyCertLifetime)
	if err != nil {
		return pki.NodeValidity
	}
	return d
}
