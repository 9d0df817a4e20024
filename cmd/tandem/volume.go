package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tandemhci/tandem/internal/adminclient"
	"github.com/tandemhci/tandem/internal/apinames"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// Creating, deleting and promoting a volume touch disks and Raft shards on
// several nodes; give them more than the default per-call timeout.
const volumeSetupTimeout = time.Minute

// verifyTimeout bounds a verify call, which reads the whole volume on every
// replica. --timeout still overrides it; Ctrl-C cancels it.
const verifyTimeout = time.Hour

// maxMismatchRows keeps the verify table readable; JSON has them all.
const maxMismatchRows = 100

func newVolumeCmd(a *app) *cobra.Command {
	return newNounCmd("volume", "Create, inspect and repair volumes (replicated or Ceph RBD)",
		newVolumeCreateCmd(a),
		newVolumeListCmd(a),
		newVolumeShowCmd(a),
		newVolumeDeleteCmd(a),
		newVolumePromoteCmd(a),
		newVolumeSetCmd(a),
		newVolumeResyncCmd(a),
		newVolumeVerifyCmd(a),
		newVolumeExportCertCmd(a),
		newVolumeResizeCmd(a),
	)
}

func newVolumeResizeCmd(a *app) *cobra.Command {
	var size string
	cmd := &cobra.Command{
		Use:   "resize NAME --size SIZE",
		Short: "Grow a volume (replicated or RBD), online",
		Long: `Grow a volume to SIZE, online (a larger size only, a multiple of 4 KiB;
shrinking would discard data and is refused, and nothing changes).

Replicated volumes: every secondary grows its replica, then the primary,
and only then does the catalog record the new size; an in-sync replica
that cannot grow stops the resize with the size unchanged (run it again to
finish). A replica that is down or out of sync grows when it next
connects to the primary, before its resync.
RBD volumes are resized through their owner's client, which holds the
image's exclusive lock.

NBD clients see the new size when they (re)connect; for a VM's disk use
'tandem vm disk resize', which also tells the running guest.`,
		Args: argsNamed("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			sizeBytes, err := requiredSize(size)
			if err != nil {
				return err
			}
			return callAdmin(a, cmd, volumeSetupTimeout, func(ctx context.Context, c *adminclient.Client) (*tandemv1.VolumeInfo, error) {
				return c.Volume.Resize(ctx, &tandemv1.ResizeVolumeRequest{Name: args[0], SizeBytes: sizeBytes})
			}, func(w io.Writer, info *tandemv1.VolumeInfo) error {
				_, err := fmt.Fprintf(w, "volume %q is %s (%d bytes)\n", info.GetName(), formatBytes(info.GetSizeBytes()), info.GetSizeBytes())
				return err
			})
		},
	}
	cmd.Flags().StringVar(&size, "size", "", "new size, e.g. 40G (required; 1024-based units)")
	return cmd
}

func newVolumeCreateCmd(a *app) *cobra.Command {
	var (
		size     string
		replicas int
		nodes    []string
		haMode   string
		backend  string
		storage  string
		pool     string
		image    string
	)
	cmd := &cobra.Command{
		Use:   "create NAME --size SIZE [--backend rbd [--storage NAME] [--pool P]] [--image FILE]",
		Short: "Create a replicated or Ceph RBD volume",
		Long: `Create a volume of SIZE bytes replicated on 1, 2 or 3 data nodes, or with
--backend rbd an RBD image in a Ceph pool ('tandem storage add').

An RBD volume is owned by one node (--nodes NODE, default the node answering):
it holds the image's exclusive lock and serves the volume's NBD export. The
image gets Ceph's default features. --storage names the storage (optional
when there is one), --pool overrides its pool. A create that fails leaves no
image and no volume behind.

--image FILE copies a disk image (any format qemu-img reads) into the new
volume through its NBD export; without --size the volume gets the image's
size. Run it on the volume's primary (or owner).

SIZE is a number of bytes, optionally with a binary (1024-based) unit: K, M,
G, T or KiB, MiB, GiB, TiB, e.g. 20G or 1.5TiB. A 2-replica volume also needs
a third node as witness. --nodes picks the nodes; the first one becomes the
initial primary.

--ha says what HA does when the primary's node is lost and no VM of the
volume is recovered (a volume exported over NBD to another consumer): auto
(the default) promotes its best UpToDate replica once the node is fenced;
manual leaves it to 'tandem volume promote'. Change it later with
'tandem volume set NAME --ha ...'.

NAME is 1-63 lowercase letters, digits, '-' or '_', starting with a letter or
digit. SIZE is a multiple of 4 KiB, at most 64 TiB.`,
		Args: argsNamed("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var img *imageInfo
			if image != "" {
				var err error
				if img, err = probeImage(cmd.Context(), image); err != nil {
					return err
				}
				if size == "" {
					size = fmt.Sprint(img.roundedSize())
				}
			}
			if size == "" {
				return usageErrorf("--size is required (e.g. --size 20G)")
			}
			sizeBytes, err := parseSize(size)
			if err != nil {
				return usageErrorf("--size: %v", err)
			}
			if img != nil && sizeBytes < img.VirtualSize {
				return usageErrorf("--size %s is smaller than the image (%s)", formatBytes(sizeBytes), formatBytes(img.VirtualSize))
			}
			if backend == "rbd" && cmd.Flags().Changed("replicas") {
				return usageErrorf("--replicas does not apply to --backend rbd: Ceph's pool replicates the image")
			}
			if backend != "rbd" && (storage != "" || pool != "") {
				return usageErrorf("--storage and --pool apply to --backend rbd only")
			}
			if replicas < 1 || replicas > 3 {
				return usageErrorf("--replicas must be 1, 2 or 3, not %d", replicas)
			}
			// Without --replicas, --nodes says how many.
			want := uint32(replicas)
			if len(nodes) > 0 && !cmd.Flags().Changed("replicas") {
				want = 0
			}
			for i, n := range nodes {
				switch {
				case strings.TrimSpace(n) == "":
					return usageErrorf("--nodes: empty node name in %q", strings.Join(nodes, ","))
				case slices.Contains(nodes[:i], n):
					return usageErrorf("--nodes: %s is listed twice", n)
				}
			}
			if haMode != "auto" && haMode != "manual" {
				return usageErrorf("--ha must be auto or manual, not %q", haMode)
			}
			req := &tandemv1.CreateVolumeRequest{Name: args[0], SizeBytes: sizeBytes, Replicas: want, Nodes: nodes, Ha: haMode}
			switch backend {
			case "replicated":
			case "rbd":
				req.Replicas, req.Backend, req.Storage, req.Pool = 0, backend, storage, pool
			default:
				return usageErrorf("--backend %q: use replicated or rbd", backend)
			}
			return callAdmin(a, cmd, volumeSetupTimeout, func(ctx context.Context, c *adminclient.Client) (*tandemv1.VolumeInfo, error) {
				info, err := c.Volume.Create(ctx, req)
				if err != nil || img == nil {
					return info, err
				}
				if err := importImage(ctx, a.stderr, img, info); err != nil {
					return nil, fmt.Errorf("volume %s was created, but copying the image failed (delete it or copy again): %w", info.GetName(), err)
				}
				return info, nil
			}, func(w io.Writer, info *tandemv1.VolumeInfo) error {
				fmt.Fprintf(w, "created volume %q\n\n", info.GetName())
				return writeVolume(w, info)
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&size, "size", "", "volume size, e.g. 20G or 1.5TiB (required; units are 1024-based)")
	// An int, not a uint: "-1" is then refused by our check in words, not
	// by strconv's.
	f.IntVar(&replicas, "replicas", 2, "number of data replicas: 1, 2 or 3 (default: 2, or as many as --nodes)")
	f.StringSliceVar(&nodes, "nodes", nil, "nodes to place the replicas on, comma-separated; the first is the initial primary (default: the daemon picks); for rbd, the owner")
	f.StringVar(&backend, "backend", "replicated", "replicated or rbd (Ceph RBD, see 'tandem storage add')")
	f.StringVar(&storage, "storage", "", "the RBD storage (default: the only one)")
	f.StringVar(&pool, "pool", "", "the Ceph pool (default: the storage's)")
	f.StringVar(&image, "image", "", "disk image to copy into the new volume (qemu-img formats)")
	f.StringVar(&haMode, "ha", "auto", "after the primary's node is lost and fenced: auto promotes the best UpToDate replica, manual waits for an operator")
	return cmd
}

func newVolumeSetCmd(a *app) *cobra.Command {
	var haMode string
	cmd := &cobra.Command{
		Use:   "set NAME --ha auto|manual",
		Short: "Change a volume's settings (its HA policy)",
		Long: `Change a volume's settings. --ha auto promotes the volume's best UpToDate
replica once its primary's node is lost and fenced, when no VM of it is
recovered (which promotes it anyway); --ha manual leaves that to an operator
('tandem volume promote').`,
		Example: `  tandem volume set backups --ha manual`,
		Args:    argsNamed("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if haMode != "auto" && haMode != "manual" {
				return usageErrorf("--ha is required: auto or manual")
			}
			return callAdmin(a, cmd, 0, func(ctx context.Context, c *adminclient.Client) (*tandemv1.VolumeInfo, error) {
				return c.Volume.Set(ctx, &tandemv1.SetVolumeRequest{Name: args[0], Ha: haMode})
			}, func(w io.Writer, info *tandemv1.VolumeInfo) error {
				_, err := fmt.Fprintf(w, "volume %q: HA %s\n", info.GetName(), orDash(info.GetHa()))
				return err
			})
		},
	}
	cmd.Flags().StringVar(&haMode, "ha", "", "auto or manual")
	return cmd
}

func newVolumeListCmd(a *app) *cobra.Command {
	return listCmd(a, &cobra.Command{
		Use:   "list",
		Short: "List volumes with their replicas' states",
		Long: `List volumes. STATE is the catalog state (creating, ready, deleting), with a
ready volume shown as syncing while a replica is resyncing (SyncTarget) and as
degraded while a replica is Outdated, Inconsistent or unreachable.`,
		Example: `  tandem volume list
  tandem volume list --filter state=degraded
  tandem volume list --columns name,primary --no-headers`,
	}, func(ctx context.Context, c *adminclient.Client) (*tandemv1.ListVolumesResponse, error) {
		return c.Volume.List(ctx, &tandemv1.ListVolumesRequest{})
	}, func(w io.Writer, resp *tandemv1.ListVolumesResponse, lf *listFlags) error {
		return writeVolumeList(w, resp.GetVolumes(), lf)
	})
}

func newVolumeShowCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "show NAME",
		Short: "Show a volume's replicas, NBD export and recent history",
		Args:  argsNamed("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return callAdmin(a, cmd, 0, func(ctx context.Context, c *adminclient.Client) (*tandemv1.VolumeInfo, error) {
				return c.Volume.Show(ctx, &tandemv1.ShowVolumeRequest{Name: args[0]})
			}, writeVolume)
		},
	}
}

func newVolumeDeleteCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a volume and its data on every node",
		Long:  "Delete a volume and its data on every node. tandemd refuses while the volume is attached.",
		Args:  argsNamed("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return callAdmin(a, cmd, volumeSetupTimeout, func(ctx context.Context, c *adminclient.Client) (*tandemv1.DeleteVolumeResponse, error) {
				return c.Volume.Delete(ctx, &tandemv1.DeleteVolumeRequest{Name: args[0]})
			}, func(w io.Writer, _ *tandemv1.DeleteVolumeResponse) error {
				_, err := fmt.Fprintf(w, "deleted volume %q\n", args[0])
				return err
			})
		},
	}
}

func newVolumePromoteCmd(a *app) *cobra.Command {
	var (
		node  string
		force bool
	)
	cmd := &cobra.Command{
		Use:   "promote NAME --node NODE",
		Short: "Make NODE's replica the volume's primary",
		Long: `Make NODE's replica the primary of the volume. The replica must be UpToDate;
the change is committed as a new epoch, which fences off the old primary.
A disk of a started VM is promoted only on the VM's node (a VM runs where
its disks' primary is); move the VM instead with 'tandem vm migrate', or
use --force when the VM's node is down for good.`,
		Args: argsNamed("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if node == "" {
				return usageErrorf("--node is required: the node whose replica becomes primary")
			}
			return callAdmin(a, cmd, volumeSetupTimeout, func(ctx context.Context, c *adminclient.Client) (*tandemv1.VolumeInfo, error) {
				return c.Volume.Promote(ctx, &tandemv1.PromoteVolumeRequest{Name: args[0], Node: node, Force: force})
			}, func(w io.Writer, info *tandemv1.VolumeInfo) error {
				fmt.Fprintf(w, "volume %q: primary %s, epoch %d\n", info.GetName(), orDash(info.GetPrimary()), info.GetEpoch())
				return writeVolumeSummary(w, info)
			})
		},
	}
	cmd.Flags().StringVar(&node, "node", "", "node whose replica becomes primary (required)")
	cmd.Flags().BoolVar(&force, "force", false, "promote a disk of a started VM away from the VM's node (the VM pauses until it is moved or restarted)")
	return cmd
}

func newVolumeResyncCmd(a *app) *cobra.Command {
	var (
		wait     bool
		interval time.Duration
		limit    time.Duration
		discard  string
	)
	cmd := &cobra.Command{
		Use:   "resync NAME [--wait] [--discard NODE]",
		Short: "Resync Outdated replicas from the primary now",
		Long: `Ask the volume's primary to resync its Outdated replicas now.

With --wait the command follows the resync until every replica is UpToDate,
with a progress bar on stderr when it is a terminal (periodic lines
otherwise). Ctrl-C stops waiting; the resync itself goes on in the cluster.
A diverged replica (one holding unrelated data) is an error: resync does not
overwrite it unless told to with --discard NODE, which throws that replica's
data away and resyncs it in full from the primary (never the primary's own).

When the primary's own disk was detached after I/O errors (its replica
Failed, serving diskless through its peers), resync re-attaches it: every
block is copied back from an UpToDate peer while the guests keep writing,
then the primary's replica is UpToDate again. Run it once the disk works.`,
		Args: argsNamed("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !wait && (cmd.Flags().Changed("interval") || cmd.Flags().Changed("timeout-wait")) {
				return usageErrorf("--interval and --timeout-wait only apply with --wait")
			}
			if interval <= 0 {
				return usageErrorf("--interval must be positive")
			}
			if limit <= 0 {
				return usageErrorf("--timeout-wait must be positive")
			}
			return a.withClient(cmd, 0, func(ctx context.Context, c *adminclient.Client) error {
				info, err := c.Volume.Resync(ctx, &tandemv1.ResyncVolumeRequest{Name: args[0], DiscardNode: discard})
				if err != nil {
					return err
				}
				if !wait {
					return a.print(info, func(w io.Writer) error {
						fmt.Fprintf(w, "resync requested for volume %q\n", info.GetName())
						return writeVolumeSummary(w, info)
					})
				}
				w := resyncWaiter{
					client:   c.Volume,
					name:     args[0],
					interval: interval,
					limit:    limit,
					progress: newProgressOutput(a.stderr, isTerminalWriter(a.stderr)),
				}
				final, sum, err := w.wait(ctx)
				if err != nil {
					return err
				}
				return a.print(final, func(w io.Writer) error {
					_, err := fmt.Fprintf(w, "volume %q: all %d replicas UpToDate (%s sent in %s)\n",
						final.GetName(), len(final.GetReplicas()), formatBytes(sum.sent), sum.took.Round(time.Second))
					return err
				})
			})
		},
	}
	f := cmd.Flags()
	f.BoolVar(&wait, "wait", false, "wait until every replica is UpToDate")
	f.StringVar(&discard, "discard", "", "discard this replica's data and resync it in full from the primary")
	f.DurationVar(&interval, "interval", 500*time.Millisecond, "with --wait: how often to poll the volume")
	f.DurationVar(&limit, "timeout-wait", time.Hour, "with --wait: give up waiting after this long (the resync goes on)")
	return cmd
}

func newVolumeVerifyCmd(a *app) *cobra.Command {
	var repair, inSyncOnly bool
	cmd := &cobra.Command{
		Use:   "verify NAME [--repair] [--in-sync-only]",
		Short: "Compare every replica with the primary",
		Long: `Compare every replica's data with the primary's and list the ranges that
differ. Only replicas in sync with the primary can be compared; the report
names every replica, compared or skipped, and why.

Exits 1 when mismatches were found and not repaired, or when a replica could
not be compared (unless --in-sync-only); with --repair the primary resyncs the
ranges that differ.`,
		Example: `  tandem volume verify web-disk
  tandem volume verify web-disk --repair
  tandem volume verify web-disk --in-sync-only   # a resyncing replica is fine`,
		Args: argsNamed("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd, verifyTimeout, func(ctx context.Context, c *adminclient.Client) error {
				resp, err := c.Volume.Verify(ctx, &tandemv1.VerifyVolumeRequest{Name: args[0], Repair: repair})
				if err != nil {
					return err
				}
				if err := a.print(resp, func(w io.Writer) error { return writeVerify(w, resp, repair) }); err != nil {
					return err
				}
				if err := verifyOutcome(args[0], resp, repair); err != nil {
					return err
				}
				return verifySkipped(args[0], resp, inSyncOnly)
			})
		},
	}
	cmd.Flags().BoolVar(&repair, "repair", false, "resync the ranges found different from the primary")
	cmd.Flags().BoolVar(&inSyncOnly, "in-sync-only", false, "succeed even if some replicas could not be compared (not in sync)")
	return cmd
}

// verifyOutcome is the error that makes verify exit 1: data that differs
// and was left as it is.
func verifyOutcome(name string, resp *tandemv1.VerifyVolumeResponse, repair bool) error {
	mm := resp.GetMismatches()
	if len(mm) == 0 {
		return nil
	}
	var bad int64
	var nodes []string
	for _, m := range mm {
		bad += m.GetLength()
		if !slices.Contains(nodes, m.GetNode()) {
			nodes = append(nodes, m.GetNode())
		}
	}
	what := fmt.Sprintf("volume %q: %d mismatched range(s), %s, on %s", name, len(mm), formatBytes(bad), strings.Join(nodes, ", "))
	switch {
	case !repair:
		return fmt.Errorf("%s differ from the primary; run 'tandem volume verify %s --repair' to resync them", what, name)
	case resp.GetRepairedBytes() < bad:
		return fmt.Errorf("%s, but only %s repaired; run verify again", what, formatBytes(resp.GetRepairedBytes()))
	}
	return nil
}

// verifySkipped is the error that makes verify exit 1 when a replica was
// never compared: "no mismatches" must not read as an all-clear for it.
func verifySkipped(name string, resp *tandemv1.VerifyVolumeResponse, inSyncOnly bool) error {
	var skipped []string
	for _, r := range resp.GetReplicas() {
		if !r.GetCompared() {
			skipped = append(skipped, r.GetNode())
		}
	}
	if len(skipped) == 0 || inSyncOnly {
		return nil
	}
	return fmt.Errorf("volume %q: replica(s) on %s not compared (not in sync with the primary); verify again once they are UpToDate, or pass --in-sync-only to accept that", name, strings.Join(skipped, ", "))
}

// replicaStateName uses DRBD's disk state names, which admins already know.
func replicaStateName(s tandemv1.ReplicaState) string {
	if name, ok := apinames.ReplicaState(s); ok {
		return name
	}
	if s == tandemv1.ReplicaState_REPLICA_STATE_UNSPECIFIED {
		return "Unknown"
	}
	// A state newer than this CLI: show its number rather than guess.
	return s.String()
}

// replicaStates is the compact "n1:UpToDate* n2:Outdated" form; * marks the primary.
func replicaStates(info *tandemv1.VolumeInfo) string {
	var b strings.Builder
	for i, r := range info.GetReplicas() {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s:%s", orDash(r.GetNode()), replicaStateName(r.GetState()))
		if r.GetPrimary() {
			b.WriteByte('*')
		}
	}
	if b.Len() == 0 {
		return "-"
	}
	return b.String()
}

func writeVolumeList(w io.Writer, vols []*tandemv1.VolumeInfo, lf *listFlags) error {
	t := &table{header: []string{"NAME", "SIZE", "REPLICAS", "PRIMARY", "EPOCH", "STATE", "USED-BY", "REPLICA-STATES"}, empty: "(no volumes)"}
	var warnings []string
	for _, v := range vols {
		replicas := fmt.Sprint(len(v.GetReplicas()))
		if v.GetBackend() == "rbd" {
			replicas = "rbd" // Ceph's pool holds the copies
		}
		t.add(orDash(v.GetName()), formatBytes(v.GetSizeBytes()), replicas, orDash(v.GetPrimary()),
			fmt.Sprint(v.GetEpoch()), orDash(v.GetState()), orDash(v.GetUsedBy()), replicaStates(v))
		if m := v.GetWarning(); m != "" {
			warnings = append(warnings, v.GetName()+": "+m)
		}
	}
	if err := lf.write(w, t); err != nil {
		return err
	}
	if !lf.noHeaders {
		writeWarnings(w, warnings)
	}
	return nil
}

// writeVolume prints everything show knows about a volume.
func writeVolume(w io.Writer, v *tandemv1.VolumeInfo) error {
	tw := newTabWriter(w)
	fmt.Fprintf(tw, "name:\t%s\n", orDash(v.GetName()))
	fmt.Fprintf(tw, "size:\t%s (%d bytes)\n", formatBytes(v.GetSizeBytes()), v.GetSizeBytes())
	fmt.Fprintf(tw, "epoch:\t%d\n", v.GetEpoch())
	if v.GetBackend() == "rbd" {
		return writeRBDVolume(w, tw, v)
	}
	fmt.Fprintf(tw, "primary:\t%s\n", orDash(v.GetPrimary()))
	fmt.Fprintf(tw, "witness:\t%s\n", orDash(v.GetWitness()))
	fmt.Fprintf(tw, "shard:\t%d\n", v.GetShardId())
	fmt.Fprintf(tw, "state:\t%s\n", orDash(v.GetState()))
	fmt.Fprintf(tw, "used by:\t%s\n", usedBy(v.GetUsedBy()))
	fmt.Fprintf(tw, "ha:\t%s\n", orDash(v.GetHa()))
	fmt.Fprintf(tw, "created:\t%s\n", formatTime(v.GetCreated()))
	fmt.Fprintf(tw, "nbd unix:\t%s\n", orDash(v.GetNbdUnix()))
	fmt.Fprintf(tw, "nbd tcp:\t%s\n", orDash(v.GetNbdTcp()))
	fmt.Fprintf(tw, "answered by:\t%s\n", orDash(v.GetAnsweredBy()))
	if err := tw.Flush(); err != nil {
		return err
	}
	if m := v.GetWarning(); m != "" {
		fmt.Fprintf(w, "WARNING: %s\n", m)
	}

	fmt.Fprintln(w)
	if err := writeReplicas(w, v); err != nil {
		return err
	}

	if hist := v.GetHistory(); len(hist) > 0 {
		fmt.Fprintln(w, "\nrecent history:")
		tw := newTabWriter(w)
		fmt.Fprintln(tw, "TIME\tBY\tEPOCH\tWHAT\tREASON")
		for _, e := range hist {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", formatTime(e.GetAt()), orDash(e.GetBy()), e.GetEpoch(), orDash(e.GetWhat()), e.GetReason())
		}
		return tw.Flush()
	}
	return nil
}

// dataStreamPlain is a replica's data_stream when its replication link
// carries frames unencrypted (replication.StreamPlain).
const dataStreamPlain = "plain"

// writeReplicas prints the replica table. The primary has no link and sends
// rather than receives, so its transfer columns are dashes.
func writeReplicas(w io.Writer, v *tandemv1.VolumeInfo) error {
	tw := newTabWriter(w)
	fmt.Fprintln(tw, "NODE\tROLE\tSTATE\tLINK\tDIRTY\tRESYNC-SENT\tSINCE")
	var notes []string
	plain := false
	for _, r := range v.GetReplicas() {
		role, dirty, sent := "secondary", formatBytes(r.GetDirtyBytes()), formatBytes(r.GetResyncSentBytes())
		if r.GetPrimary() {
			role, dirty, sent = "primary", "-", "-"
		}
		link := orDash(r.GetLink())
		if r.GetDataStream() == dataStreamPlain {
			// Unencrypted on the wire: worth seeing at a glance (the
			// default, TLS, is not shown).
			link += " (plain)"
			plain = true
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", orDash(r.GetNode()), role, replicaStateName(r.GetState()),
			link, dirty, sent, formatTime(r.GetSince()))
		if r.GetReconcile() {
			notes = append(notes, fmt.Sprintf("%s: reconciling after the primary change (writes the old primary never acknowledged are being overwritten)", orDash(r.GetNode())))
		}
		if r.GetLink() == linkDiverged {
			notes = append(notes, divergedMessage(v, r))
		}
	}
	if len(v.GetReplicas()) == 0 {
		fmt.Fprintln(tw, "(no replicas)")
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(v.GetReplicas()) > 1 {
		fmt.Fprintln(w, "DIRTY is what the primary still has to send; RESYNC-SENT counts what the running or last resync sent (cumulative, not a rate).")
	}
	if plain {
		fmt.Fprintln(w, "(plain): the link carries its data unencrypted after a mutually authenticated TLS handshake (replication.data_stream=plain on both nodes).")
	}
	for _, n := range notes {
		fmt.Fprintln(w, n)
	}
	return nil
}

// writeVolumeSummary is the short form after a change: who is primary now
// and how the replicas stand.
func writeVolumeSummary(w io.Writer, v *tandemv1.VolumeInfo) error {
	fmt.Fprintf(w, "replicas: %s\n", replicaStates(v))
	for _, r := range v.GetReplicas() {
		if r.GetPrimary() {
			continue
		}
		if r.GetDirtyBytes() > 0 || (r.GetLink() != "" && r.GetLink() != "in-sync") {
			fmt.Fprintf(w, "  %s: link %s, %s dirty\n", orDash(r.GetNode()), orDash(r.GetLink()), formatBytes(r.GetDirtyBytes()))
		}
	}
	if m := v.GetWarning(); m != "" {
		fmt.Fprintf(w, "WARNING: %s\n", m)
	}
	return nil
}

func writeVerify(w io.Writer, resp *tandemv1.VerifyVolumeResponse, repair bool) error {
	fmt.Fprintf(w, "checked: %s (%d bytes)\n", formatBytes(resp.GetCheckedBytes()), resp.GetCheckedBytes())
	if repair {
		fmt.Fprintf(w, "repaired: %s (%d bytes)\n", formatBytes(resp.GetRepairedBytes()), resp.GetRepairedBytes())
	}
	if reps := resp.GetReplicas(); len(reps) > 0 {
		fmt.Fprintln(w)
		tw := newTabWriter(w)
		fmt.Fprintln(tw, "REPLICA\tSTATE\tCOMPARED\tMISMATCHED\tNOTE")
		fmt.Fprintf(tw, "%s\tprimary\t-\t-\treference\n", orDash(resp.GetPrimary()))
		for _, r := range reps {
			compared, mismatched := "yes", formatBytes(r.GetMismatchedBytes())
			if !r.GetCompared() {
				compared, mismatched = "no", "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", orDash(r.GetNode()), replicaStateName(r.GetState()), compared, mismatched, r.GetSkippedReason())
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	mm := resp.GetMismatches()
	if len(mm) == 0 {
		msg := "no mismatches: every replica matches the primary"
		for _, r := range resp.GetReplicas() {
			if !r.GetCompared() {
				msg = "no mismatches in the replicas compared; some were skipped (see above)"
			}
		}
		_, err := fmt.Fprintln(w, msg)
		return err
	}
	fmt.Fprintf(w, "\n%d mismatched range(s):\n", len(mm))
	tw := newTabWriter(w)
	fmt.Fprintln(tw, "NODE\tOFFSET\tLENGTH")
	for _, m := range mm[:min(len(mm), maxMismatchRows)] {
		fmt.Fprintf(tw, "%s\t%d\t%d\n", orDash(m.GetNode()), m.GetOffset(), m.GetLength())
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if n := len(mm) - maxMismatchRows; n > 0 {
		fmt.Fprintf(w, "... and %d more (all of them with --output json)\n", n)
	}
	return nil
}

func usedBy(vm string) string {
	if vm == "" {
		return "- (no VM)"
	}
	return "VM " + vm
}
