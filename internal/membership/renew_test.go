package membership

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"testing"
	"time"

	"github.com/tandemhci/tandem/internal/pki"
	"github.com/tandemhci/tandem/internal/state"
	"github.com/tandemhci/tandem/internal/state/statetest"
)

type renewFake struct {
	mat Material
	adm AdminCredentials
	// order is what happened, in order: "record <serial>", "install <serial>".
	order     []string
	recordErr error
}

func leaf(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(certPEM)
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newRenewFixture(t *testing.T, issued time.Time, lifetime time.Duration) (*renewFake, *Renewer, *time.Time) {
	t.Helper()
	ca, err := pki.NewCA("c", issued)
	if err != nil {
		t.Fatal(err)
	}
	node := state.Node{Name: "n1", BackendAddr: "10.0.0.1:7400"}
	mat, err := issueNodeMaterial(ca, node, issued)
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := ca.IssueAdmin("admin@n1", issued)
	if err != nil {
		t.Fatal(err)
	}
	f := &renewFake{mat: mat, adm: AdminCredentials{CACert: mat.CACert, Cert: cert, Key: key, Token: "tok", Endpoint: "10.0.0.1:7300"}}
	now := issued
	st := statetest.NewState(node)
	st.Now = func() time.Time { return now }
	r := NewRenewer(RenewConfig{
		State:    st,
		Material: func() (Material, bool) { return f.mat, true },
		Admin:    func() (AdminCredentials, bool) { return f.adm, true },
		Record: func(_ context.Context, node, serial string, _ time.Time) error {
			if node != "n1" {
				t.Errorf("recorded for %q", node)
			}
			if f.recordErr != nil {
				return f.recordErr
			}
			f.order = append(f.order, "record "+serial)
			return nil
		},
		Install: func(m Material) error {
			s, _ := pki.CertSerial(m.Cert)
			f.order = append(f.order, "install "+s)
			f.mat = m
			return nil
		},
		InstallAdmin: func(c AdminCredentials) error { f.adm = c; return nil },
		Lifetime:     func() time.Duration { return lifetime },
	})
	return f, r, &now
}

func TestRenewerRenewsTwoThirdsIn(t *testing.T) {
	issued := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	f, r, now := newRenewFixture(t, issued, 5*365*24*time.Hour)
	ctx := context.Background()
	if got, err := r.Check(ctx); err != nil || len(got) != 0 {
		t.Fatalf("fresh certificates renewed: %v %v", got, err)
	}
	oldKey := string(f.mat.Key)
	*now = issued.Add(4 * 365 * 24 * time.Hour) // past two thirds of five years
	got, err := r.Check(ctx)
	if err != nil || len(got) != 2 {
		t.Fatalf("due certificates: renewed %v, %v", got, err)
	}
	serial, _ := pki.CertSerial(f.mat.Cert)
	if len(f.order) != 2 || f.order[0] != "record "+serial || f.order[1] != "install "+serial {
		t.Fatalf("the serial must be committed before the certificate is used: %v", f.order)
	}
	if string(f.mat.Key) == oldKey {
		t.Error("the renewed certificate reuses the old key")
	}
	c := leaf(t, f.mat.Cert)
	if c.Subject.CommonName != "n1" || !c.NotBefore.Before(*now) || c.NotAfter.Sub(*now) < 4*365*24*time.Hour {
		t.Errorf("renewed certificate: CN %s, %v to %v", c.Subject.CommonName, c.NotBefore, c.NotAfter)
	}
	if a := leaf(t, f.adm.Cert); a.Subject.CommonName != "admin@n1" || a.NotAfter.Before(now.Add(365*24*time.Hour)) || f.adm.Token != "tok" {
		t.Errorf("renewed admin credentials: %s until %v, token %q", a.Subject.CommonName, a.NotAfter, f.adm.Token)
	}
	if got, err := r.Check(ctx); err != nil || len(got) != 0 {
		t.Fatalf("renewed again at once: %v %v", got, err)
	}
}

// A renewal whose serial cannot be committed (no quorum) changes nothing:
// the node keeps its certificate, which every member accepts.
func TestRenewerKeepsOldWhenRecordFails(t *testing.T) {
	issued := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	f, r, now := newRenewFixture(t, issued, time.Hour)
	before := string(f.mat.Cert)
	*now = issued.Add(time.Minute) // a five-year certificate outlives a one-hour setting
	f.recordErr = errors.New("no quorum")
	if _, err := r.Check(context.Background()); err == nil || string(f.mat.Cert) != before || len(f.order) != 0 {
		t.Fatalf("err %v, installed %v", err, f.order)
	}
	f.recordErr = nil
	if got, err := r.Check(context.Background()); err != nil || len(got) != 2 {
		t.Fatalf("after quorum returns: %v %v", got, err)
	}
	if c := leaf(t, f.mat.Cert); c.NotAfter.After(now.Add(time.Hour)) {
		t.Errorf("reissued under the shortened setting until %v", c.NotAfter)
	}
}

func TestRenewInterval(t *testing.T) {
	for _, tc := range []struct{ lifetime, want time.Duration }{
		{time.Minute, 3 * time.Second}, {time.Second, time.Second}, {5 * 365 * 24 * time.Hour, time.Minute},
	} {
		if got := Interval(tc.lifetime); got != tc.want {
			t.Errorf("Interval(%v) = %v, want %v", tc.lifetime, got, tc.want)
		}
	}
}
