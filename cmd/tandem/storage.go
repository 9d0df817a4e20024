package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tandemhci/tandem/internal/adminclient"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// storageTimeout bounds storage add and show: tandemd connects to Ceph
// with its own bound (about 40 s at most) and says why it failed.
const storageTimeout = time.Minute

func newStorageCmd(a *app) *cobra.Command {
	return newNounCmd("storage", "Configure external storage (Ceph RBD) for volumes",
		newStorageAddCmd(a),
		newStorageListCmd(a),
		newStorageShowCmd(a),
		newStorageRemoveCmd(a),
	)
}

func newStorageAddCmd(a *app) *cobra.Command {
	var pool, mons, client, keyFile string
	cmd := &cobra.Command{
		Use:   "add rbd NAME --pool POOL --mon ADDR[,ADDR] --client USER --key-file FILE",
		Short: "Add a Ceph RBD storage for volumes",
		Long: `Add a Ceph cluster's pool as storage NAME for RBD volumes
('tandem volume create --backend rbd').

tandemd first connects with the key (bounded: a monitor that does not answer
fails within seconds), checks that the key works and that POOL exists and can
be listed; if anything fails nothing is stored and the error says which.

--mon lists the monitors in Ceph's mon_host syntax (10.0.0.5,10.0.0.6:6789 or
[v2:10.0.0.5:3300,v1:10.0.0.5:6789]). --client is the cephx user without
"client." (it needs 'profile rbd' on the pool, and on the monitors 'profile
rbd' to blocklist an old owner plus 'allow command "osd blocklist"' so that
a node can remove its own old entry; without it the entries expire after a
month). --key-file holds its key:
a keyring file ("key = ..." line) or the bare base64 key. The key is sealed
with the cluster secret before it is stored and is never shown again.`,
		Example: `  ceph auth get-or-create client.tandem mon 'profile rbd, allow command "osd blocklist"' osd 'profile rbd pool=vms' > tandem.keyring
  tandem storage add rbd ceph1 --pool vms --mon 10.0.0.5,10.0.0.6 --client tandem --key-file tandem.keyring`,
		Args: argsNamed("TYPE", "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if args[0] != "rbd" {
				return usageErrorf("storage type %q: only rbd is supported", args[0])
			}
			for flag, v := range map[string]string{"--pool": pool, "--mon": mons, "--client": client, "--key-file": keyFile} {
				if strings.TrimSpace(v) == "" {
					return usageErrorf("%s is required", flag)
				}
			}
			key, err := readCephKey(keyFile)
			if err != nil {
				return err
			}
			req := &tandemv1.AddStorageRequest{Name: args[1], Type: args[0], Pool: pool, MonHost: mons, Client: strings.TrimPrefix(client, "client."), Key: key}
			return callAdmin(a, cmd, storageTimeout, func(ctx context.Context, c *adminclient.Client) (*tandemv1.StorageInfo, error) {
				return c.Storage.Add(ctx, req)
			}, func(w io.Writer, st *tandemv1.StorageInfo) error {
				fmt.Fprintf(w, "added storage %q\n\n", st.GetName())
				return writeStorage(w, st)
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&pool, "pool", "", "the Ceph pool for volumes (required)")
	f.StringVar(&mons, "mon", "", "monitor addresses, comma-separated (required)")
	f.StringVar(&client, "client", "", "cephx user, without \"client.\" (required)")
	f.StringVar(&keyFile, "key-file", "", "file with the user's cephx key: a keyring or the bare key (required)")
	return cmd
}

// readCephKey reads a cephx key from a keyring ("key = ...") or a file
// holding only the key.
func readCephKey(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", usageErrorf("--key-file: %v", err)
	}
	lines := strings.Split(string(b), "\n")
	for _, l := range lines {
		k, v, ok := strings.Cut(strings.TrimSpace(l), "=")
		if ok && strings.TrimSpace(k) == "key" {
			return strings.TrimSpace(v), nil
		}
	}
	var fields []string
	for _, l := range lines {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") && !strings.HasPrefix(l, "[") {
			fields = append(fields, l)
		}
	}
	if len(fields) != 1 {
		return "", usageErrorf("--key-file %s: no key found (want a keyring with a \"key = ...\" line, or only the key)", path)
	}
	return fields[0], nil
}

func newStorageListCmd(a *app) *cobra.Command {
	return listCmd(a, &cobra.Command{
		Use:   "list",
		Short: "List the storages and the volumes on each",
	}, func(ctx context.Context, c *adminclient.Client) (*tandemv1.ListStorageResponse, error) {
		return c.Storage.List(ctx, &tandemv1.ListStorageRequest{})
	}, func(w io.Writer, resp *tandemv1.ListStorageResponse, lf *listFlags) error {
		t := &table{header: []string{"NAME", "TYPE", "POOL", "MONITORS", "CLIENT", "VOLUMES"}, empty: "(no storage)"}
		for _, s := range resp.GetStorage() {
			t.add(s.GetName(), s.GetType(), s.GetPool(), s.GetMonHost(), "client."+s.GetClient(), fmt.Sprint(len(s.GetVolumes())))
		}
		return lf.write(w, t)
	})
}

func newStorageShowCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "show NAME",
		Short: "Show a storage and whether this node reaches it now",
		Args:  argsNamed("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return callAdmin(a, cmd, storageTimeout, func(ctx context.Context, c *adminclient.Client) (*tandemv1.StorageInfo, error) {
				return c.Storage.Show(ctx, &tandemv1.StorageRequest{Name: args[0]})
			}, writeStorage)
		},
	}
}

func newStorageRemoveCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "remove NAME",
		Short: "Forget a storage that holds no volumes",
		Long:  "Forget a storage. tandemd refuses while volumes are on it; nothing in Ceph is touched.",
		Args:  argsNamed("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return callAdmin(a, cmd, 0, func(ctx context.Context, c *adminclient.Client) (*tandemv1.RemoveStorageResponse, error) {
				return c.Storage.Remove(ctx, &tandemv1.StorageRequest{Name: args[0]})
			}, func(w io.Writer, _ *tandemv1.RemoveStorageResponse) error {
				_, err := fmt.Fprintf(w, "removed storage %q\n", args[0])
				return err
			})
		},
	}
}

func writeStorage(w io.Writer, s *tandemv1.StorageInfo) error {
	tw := newTabWriter(w)
	fmt.Fprintf(tw, "name:\t%s\n", orDash(s.GetName()))
	fmt.Fprintf(tw, "type:\t%s\n", orDash(s.GetType()))
	fmt.Fprintf(tw, "pool:\t%s\n", orDash(s.GetPool()))
	fmt.Fprintf(tw, "monitors:\t%s\n", orDash(s.GetMonHost()))
	fmt.Fprintf(tw, "client:\tclient.%s\n", s.GetClient())
	fmt.Fprintf(tw, "key:\t(sealed; never shown)\n")
	fmt.Fprintf(tw, "created:\t%s\n", formatTime(s.GetCreated()))
	if h := s.GetHealth(); h != "" {
		fmt.Fprintf(tw, "health:\t%s\n", h)
	}
	if s.GetAvailableBytes() > 0 {
		fmt.Fprintf(tw, "available:\t%s\n", formatBytes(s.GetAvailableBytes()))
	}
	fmt.Fprintf(tw, "volumes:\t%s\n", orDash(strings.Join(s.GetVolumes(), ", ")))
	if err := tw.Flush(); err != nil {
		return err
	}
	if bl := s.GetBlocklisted(); len(bl) > 0 {
		fmt.Fprintf(w, "\nblocklisted clients (each removed once its node proved it gone; Ceph expires it anyway):\n")
		t := &table{header: []string{"ADDRESS", "NODE", "VOLUME", "SINCE", "EXPIRES"}}
		for _, b := range bl {
			t.add(b.GetAddr(), orDash(b.GetNode()), orDash(b.GetVolume()), formatTime(b.GetSince()), formatTime(b.GetExpires()))
		}
		if err := (&listFlags{}).write(w, t); err != nil {
			return err
		}
	}
	if m := s.GetWarning(); m != "" {
		fmt.Fprintf(w, "WARNING: %s\n", m)
	}
	return nil
}

// writeRBDVolume prints the rest of show for an RBD volume: where the
// image is, who owns it, and Ceph's own view (watchers, lock owner).
func writeRBDVolume(w io.Writer, tw interface {
	io.Writer
	Flush() error
}, v *tandemv1.VolumeInfo) error {
	fmt.Fprintf(tw, "backend:\trbd\n")
	fmt.Fprintf(tw, "owner:\t%s\n", orDash(v.GetPrimary()))
	fmt.Fprintf(tw, "storage:\t%s\n", orDash(v.GetStorage()))
	fmt.Fprintf(tw, "image:\t%s/%s\n", v.GetPool(), v.GetImage())
	lock := "-"
	if l := v.GetLockOwner(); l != nil {
		lock = rbdClient(l)
	}
	fmt.Fprintf(tw, "lock owner:\t%s\n", lock)
	var ws []string
	for _, c := range v.GetWatchers() {
		ws = append(ws, rbdClient(c))
	}
	fmt.Fprintf(tw, "watchers:\t%s\n", orDash(strings.Join(ws, "; ")))
	fmt.Fprintf(tw, "state:\t%s\n", orDash(v.GetState()))
	fmt.Fprintf(tw, "used by:\t%s\n", usedBy(v.GetUsedBy()))
	fmt.Fprintf(tw, "created:\t%s\n", formatTime(v.GetCreated()))
	fmt.Fprintf(tw, "nbd unix:\t%s\n", orDash(v.GetNbdUnix()))
	fmt.Fprintf(tw, "nbd tcp:\t%s\n", orDash(v.GetNbdTcp()))
	fmt.Fprintf(tw, "nbd clients:\t%d\n", v.GetNbdConnections())
	if err := tw.Flush(); err != nil {
		return err
	}
	if m := v.GetWarning(); m != "" {
		fmt.Fprintf(w, "WARNING: %s\n", m)
	}
	return nil
}

func rbdClient(c *tandemv1.RBDClient) string {
	s := c.GetClient() + " " + c.GetAddr()
	if n := c.GetNode(); n != "" {
		s += " (" + n + ")"
	}
	return s
}
