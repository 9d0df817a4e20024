package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tandemhci/tandem/internal/adminclient"
	"github.com/tandemhci/tandem/internal/pki"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// Export certificate files, named as QEMU's tls-creds-x509 (dir=) and
// libnbd's tls-certificates= expect them.
const (
	exportCAFile   = "ca-cert.pem"
	exportCertFile = "client-cert.pem"
	exportKeyFile  = "client-key.pem"
)

func newVolumeExportCertCmd(a *app) *cobra.Command {
	var (
		volumes []string
		out     string
		days    uint32
	)
	cmd := &cobra.Command{
		Use:   "export-cert NAME --volume V [--volume V2...] [--out DIR] [--days N]",
		Short: "Issue a TLS client certificate that opens only the named volumes over TCP NBD",
		Long: `Issue an export certificate for one consumer (a backup host, a tool, a
QEMU outside the cluster): a client certificate from the cluster CA that
opens only the named volumes on the TCP NBD export (nbd_addr, TLS only, off
by default). The key is generated here and never leaves this machine: the
cluster signs a CSR. The files are written to DIR (default ./NAME) in the
layout QEMU's tls-creds-x509 and libnbd expect: ca-cert.pem,
client-cert.pem and client-key.pem (mode 0600).

NAME is unique in the cluster; 'tandem volume export-cert list' lists what
was issued. A volume is served by its primary only: 'tandem volume show V'
gives its nbds:// URI.`,
		Example: `  tandem volume export-cert backup --volume db --volume web --out /etc/backup/nbd
  nbdinfo 'nbds://10.0.0.1:10809/db?tls-certificates=/etc/backup/nbd'
  qemu-io --object tls-creds-x509,id=tls0,dir=/etc/backup/nbd,endpoint=client \
    --image-opts driver=nbd,host=10.0.0.1,port=10809,export=db,tls-creds=tls0 -c 'read 0 4k'`,
		Args: argsNamed("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if len(volumes) == 0 {
				return usageErrorf("--volume is required: the volumes the certificate may open (repeatable)")
			}
			if out == "" {
				out = name
			}
			if err := checkExportDir(out); err != nil {
				return err
			}
			keyPEM, err := pki.NewKey()
			if err != nil {
				return err
			}
			csr, err := pki.NewCSR(keyPEM, name)
			if err != nil {
				return err
			}
			return a.withClient(cmd, 0, func(ctx context.Context, c *adminclient.Client) error {
				resp, err := c.Volume.IssueExportCert(ctx, &tandemv1.IssueExportCertRequest{Name: name, Volumes: volumes, CsrPem: csr, Days: days})
				if err != nil {
					return err
				}
				if err := writeExportDir(out, resp.GetCaPem(), resp.GetCertPem(), keyPEM); err != nil {
					return fmt.Errorf("the certificate %q was issued but cannot be saved: %w; issue another under a new name", name, err)
				}
				return a.print(resp, func(w io.Writer) error { return writeExportCertUsage(w, out, resp) })
			})
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&volumes, "volume", nil, "a volume the certificate may open (repeatable, required)")
	f.StringVar(&out, "out", "", "directory to write the certificate files to (default ./NAME; must not hold them already)")
	f.Uint32Var(&days, "days", 0, "validity in days (default 365)")
	cmd.AddCommand(newVolumeExportCertListCmd(a), newVolumeExportCertRevokeCmd(a))
	return cmd
}

func newVolumeExportCertListCmd(a *app) *cobra.Command {
	return listCmd(a, &cobra.Command{
		Use:   "list",
		Short: "List the export certificates the cluster issued",
		Example: `  tandem volume export-cert list
  tandem volume export-cert list --filter volumes='*db*' --output json`,
	}, func(ctx context.Context, c *adminclient.Client) (*tandemv1.ListExportCertsResponse, error) {
		return c.Volume.ListExportCerts(ctx, &tandemv1.ListExportCertsRequest{})
	}, func(w io.Writer, resp *tandemv1.ListExportCertsResponse, lf *listFlags) error {
		t := &table{header: []string{"NAME", "VOLUMES", "EXPIRES", "STATE", "SERIAL", "ISSUED-BY"}, empty: "(no export certificates)"}
		for _, c := range resp.GetCerts() {
			state := "valid"
			switch {
			case c.GetRevoked():
				state = "revoked"
			case c.GetNotAfter() != nil && c.GetNotAfter().AsTime().Before(time.Now()):
				state = "expired"
			}
			t.add(c.GetName(), strings.Join(c.GetVolumes(), ","), formatTime(c.GetNotAfter()), state, c.GetSerial(), orDash(c.GetIssuedBy()))
		}
		return lf.write(w, t)
	})
}

func newVolumeExportCertRevokeCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke NAME",
		Short: "Revoke an export certificate on every node",
		Long: `Put export certificate NAME on the cluster's revocation list: every node's
TCP NBD export refuses it in the TLS handshake as soon as it applied the
entry, and new connections with it fail. Connections open at that moment are
not cut. Revoking twice is harmless.`,
		Example: `  tandem volume export-cert revoke backup`,
		Args:    argsNamed("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return callAdmin(a, cmd, 0, func(ctx context.Context, c *adminclient.Client) (*tandemv1.ExportCert, error) {
				return c.Volume.RevokeExportCert(ctx, &tandemv1.RevokeExportCertRequest{Name: args[0]})
			}, func(w io.Writer, c *tandemv1.ExportCert) error {
				_, err := fmt.Fprintf(w, "export certificate %q (serial %s, volumes %s) revoked\n", c.GetName(), c.GetSerial(), strings.Join(c.GetVolumes(), ","))
				return err
			})
		},
	}
}

// checkExportDir refuses a directory that already holds certificate
// files, before anything is issued: a key is never overwritten.
func checkExportDir(dir string) error {
	for _, f := range []string{exportCAFile, exportCertFile, exportKeyFile} {
		if _, err := os.Lstat(filepath.Join(dir, f)); err == nil {
			return usageErrorf("--out %s already holds %s; choose another directory", dir, f)
		} else if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("--out %s: %w", dir, err)
		}
	}
	return nil
}

func writeExportDir(dir string, caPEM, certPEM, keyPEM []byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{{exportKeyFile, keyPEM, 0o600}, {exportCertFile, certPEM, 0o644}, {exportCAFile, caPEM, 0o644}} {
		// O_EXCL: never replace a file someone put there meanwhile.
		fh, err := os.OpenFile(filepath.Join(dir, f.name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, f.mode)
		if err != nil {
			return err
		}
		_, err = fh.Write(f.data)
		if cerr := fh.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func writeExportCertUsage(w io.Writer, dir string, resp *tandemv1.IssueExportCertResponse) error {
	c := resp.GetCert()
	abs, err := filepath.Abs(dir)
	if err != nil {
		abs = dir
	}
	fmt.Fprintf(w, "export certificate %q (serial %s, expires %s) for %s\n", c.GetName(), c.GetSerial(), formatTime(c.GetNotAfter()), strings.Join(c.GetVolumes(), ", "))
	fmt.Fprintf(w, "written to %s: %s, %s, %s (secret, mode 0600)\n", abs, exportCAFile, exportCertFile, exportKeyFile)
	addr := "PRIMARY:10809"
	if a := resp.GetNbdAddrs(); len(a) > 0 {
		fmt.Fprintf(w, "TCP NBD exports (TLS) of the members: %s\n", strings.Join(a, " "))
		addr = a[0]
	} else {
		fmt.Fprintln(w, "warning: no member serves the TCP NBD export; set nbd_addr in tandem.yaml and restart tandemd")
	}
	vol := c.GetVolumes()[0]
	host, port := addr, "10809"
	if i := strings.LastIndex(addr, ":"); i > 0 {
		host, port = addr[:i], addr[i+1:]
	}
	fmt.Fprintf(w, "connect to the volume's primary ('tandem volume show %s' gives its nbds:// URI), e.g.:\n", vol)
	fmt.Fprintf(w, "  nbdinfo 'nbds://%s/%s?tls-certificates=%s'\n", addr, vol, abs)
	fmt.Fprintf(w, "  qemu-io --object tls-creds-x509,id=tls0,dir=%s,endpoint=client \\\n    --image-opts driver=nbd,host=%s,port=%s,export=%s,tls-creds=tls0 -c 'read 0 4k'\n", abs, host, port, vol)
	fmt.Fprintf(w, "  qemu-img convert -p --object tls-creds-x509,id=tls0,dir=%s,endpoint=client \\\n    --image-opts driver=nbd,host=%s,port=%s,export=%s,tls-creds=tls0 -O qcow2 %s.qcow2\n", abs, host, port, vol, vol)
	return nil
}
