package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tandemhci/tandem/internal/adminclient"
	"github.com/tandemhci/tandem/internal/validate"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// ISO images (issue 18): 'tandem image upload|list|delete'. The CLI
// checks the file (a regular file, ISO 9660) before it sends a byte, and
// hashes it as it sends; tandemd checks both again.

// uploadTimeout bounds an upload and its copies to the other nodes.
const uploadTimeout = 4 * time.Hour

// ISO 9660's standard identifier, in the primary volume descriptor.
const (
	isoMagicOffset = 0x8001
	isoMagic       = "CD001"
	uploadChunk    = 1 << 20
)

func newImageCmd(a *app) *cobra.Command {
	return newNounCmd("image", "Manage ISO images for VMs' CD-ROM drives",
		newImageUploadCmd(a),
		newImageListCmd(a),
		newImageDeleteCmd(a),
	)
}

// imageNameOf is the default name of an uploaded file: its base name
// without .iso, lower-cased, with every other character made '-'.
func imageNameOf(path string) string {
	base := strings.TrimSuffix(strings.ToLower(filepath.Base(path)), ".iso")
	b := []byte(base)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			b[i] = '-'
		}
	}
	return strings.Trim(string(b), "-_")
}

// checkISO opens path if it is a regular ISO 9660 file.
func checkISO(path string) (*os.File, int64, error) {
	if err := validate.RegularFile("FILE", path); err != nil {
		if errors.Is(err, validate.ErrInvalid) {
			return nil, 0, usageErrorf("%s", validate.Message(err))
		}
		return nil, 0, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	sig := make([]byte, len(isoMagic))
	if _, err := f.ReadAt(sig, isoMagicOffset); err != nil || string(sig) != isoMagic {
		f.Close()
		return nil, 0, usageErrorf("%s is not an ISO 9660 image (no %q signature at byte %d); only ISO images can be uploaded", path, isoMagic, isoMagicOffset)
	}
	return f, fi.Size(), nil
}

// progress reports an upload on w: percentage and rate, every second on
// a terminal (one line rewritten), every 10% otherwise.
type progress struct {
	w         io.Writer
	tty       bool
	name      string
	total     int64
	start     time.Time
	last      time.Time
	lastTenth int64
}

func (p *progress) update(done int64, final bool) {
	now := time.Now()
	tenth := done * 10 / max(p.total, 1)
	if !final && (p.tty && now.Sub(p.last) < time.Second || !p.tty && tenth == p.lastTenth) {
		return
	}
	p.last, p.lastTenth = now, tenth
	secs := now.Sub(p.start).Seconds()
	rate := 0.0
	if secs > 0 {
		rate = float64(done) / secs
	}
	line := fmt.Sprintf("uploading %s: %3d%% %s of %s, %s/s", p.name, done*100/max(p.total, 1), formatBytes(done), formatBytes(p.total), formatBytes(int64(rate)))
	switch {
	case p.tty && final:
		fmt.Fprintf(p.w, "\r%s\n", line)
	case p.tty:
		fmt.Fprintf(p.w, "\r%s", line)
	default:
		fmt.Fprintln(p.w, line)
	}
}

// uploadImage streams f (size bytes) as image name and returns what
// tandemd recorded.
func uploadImage(ctx context.Context, c *adminclient.Client, stderr io.Writer, f io.Reader, name string, size int64) (*tandemv1.ImageInfo, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.Image.Upload(ctx)
	if err != nil {
		return nil, err
	}
	p := &progress{w: stderr, tty: isTerminalWriter(stderr), name: name, total: size, start: time.Now(), lastTenth: -1}
	h := sha256.New()
	buf := make([]byte, uploadChunk)
	var sent int64
	first := true
	for {
		n, rerr := io.ReadFull(f, buf)
		if n > 0 {
			h.Write(buf[:n])
			msg := &tandemv1.UploadImageRequest{Data: buf[:n]}
			if first {
				msg.Name, msg.SizeBytes, first = name, size, false
			}
			if err := stream.Send(msg); err != nil {
				// The server's answer says why it stopped taking bytes.
				_, rerr := stream.CloseAndRecv()
				if rerr != nil {
					return nil, rerr
				}
				return nil, err
			}
			sent += int64(n)
			p.update(sent, false)
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			break
		}
		if rerr != nil {
			return nil, fmt.Errorf("reading the image: %w", rerr)
		}
	}
	if sent != size {
		return nil, fmt.Errorf("the file changed while it was read: %d bytes sent, %d expected; nothing was stored", sent, size)
	}
	p.update(sent, true)
	if err := stream.Send(&tandemv1.UploadImageRequest{Sha256: hex.EncodeToString(h.Sum(nil))}); err != nil {
		_, rerr := stream.CloseAndRecv()
		if rerr != nil {
			return nil, rerr
		}
		return nil, err
	}
	fmt.Fprintf(stderr, "verifying and copying %s to the other nodes...\n", name)
	return stream.CloseAndRecv()
}

func newImageUploadCmd(a *app) *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "upload FILE [--name NAME]",
		Short: "Store an ISO image in the cluster, for VMs' CD-ROM drives",
		Long: `Upload an ISO 9660 image (an installer CD or DVD) from this machine. tandemd
checks the ISO signature, the size and the SHA-256 the CLI computes while it
sends, keeps a copy on every data node (each verified against the SHA-256
before it counts), and records the image; nothing is kept when a check fails.
Progress (percentage and rate) goes to stderr.

NAME defaults to FILE's base name without .iso, lower-cased, other characters
than letters, digits, '-' and '_' made '-'. A VM gets the image with
'tandem vm create --cdrom NAME' or 'tandem vm cdrom VM insert NAME'.`,
		Example: `  tandem image upload debian-12.8.0-amd64-netinst.iso
  tandem image upload ./install.iso --name win2022`,
		Args: argsNamed("FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if name == "" {
				name = imageNameOf(args[0])
			}
			if err := validate.ImageName(name); err != nil {
				return usageErrorf("%s; choose one with --name", validate.Message(err))
			}
			f, size, err := checkISO(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			return a.withClient(cmd, uploadTimeout, func(ctx context.Context, c *adminclient.Client) error {
				info, err := uploadImage(ctx, c, a.stderr, f, name, size)
				if err != nil {
					return err
				}
				return a.print(info, func(w io.Writer) error { return writeImage(w, info) })
			})
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "image name (default: from FILE)")
	return cmd
}

func writeImage(w io.Writer, i *tandemv1.ImageInfo) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "Name:\t%s\n", i.Name)
	fmt.Fprintf(tw, "Size:\t%s (%d bytes)\n", formatBytes(i.SizeBytes), i.SizeBytes)
	fmt.Fprintf(tw, "SHA-256:\t%s\n", i.Sha256)
	fmt.Fprintf(tw, "Nodes:\t%s\n", dash(strings.Join(i.Nodes, ", ")))
	fmt.Fprintf(tw, "Used by:\t%s\n", dash(strings.Join(i.UsedBy, ", ")))
	if err := tw.Flush(); err != nil {
		return err
	}
	if i.Warning != "" {
		fmt.Fprintf(w, "warning: %s\n", i.Warning)
	}
	return nil
}

func newImageListCmd(a *app) *cobra.Command {
	return listCmd(a, &cobra.Command{
		Use:   "list",
		Short: "List ISO images, the nodes holding a verified copy and the VMs using them",
		Example: `  tandem image list
  tandem image list --columns name,used-by --no-headers`,
	}, func(ctx context.Context, c *adminclient.Client) (*tandemv1.ListImagesResponse, error) {
		return c.Image.List(ctx, &tandemv1.ListImagesRequest{})
	}, func(w io.Writer, resp *tandemv1.ListImagesResponse, lf *listFlags) error {
		t := &table{header: []string{"NAME", "SIZE", "SHA256", "NODES", "USED-BY"}, empty: "(no images)"}
		for _, i := range resp.Images {
			t.add(i.Name, formatBytes(i.SizeBytes), i.Sha256[:min(12, len(i.Sha256))], dash(strings.Join(i.Nodes, ",")), dash(strings.Join(i.UsedBy, ",")))
		}
		return lf.write(w, t)
	})
}

func newImageDeleteCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:     "delete NAME",
		Short:   "Delete an ISO image from every node",
		Long:    "Delete an ISO image and its copies on every node. tandemd refuses while a VM's CD-ROM holds it, naming the VM; eject it first (tandem vm cdrom VM eject).",
		Example: "  tandem image delete debian-12",
		Args:    argsNamed("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return callAdmin(a, cmd, 0, func(ctx context.Context, c *adminclient.Client) (*tandemv1.DeleteImageResponse, error) {
				return c.Image.Delete(ctx, &tandemv1.DeleteImageRequest{Name: args[0]})
			}, func(w io.Writer, _ *tandemv1.DeleteImageResponse) error {
				_, err := fmt.Fprintf(w, "deleted image %q\n", args[0])
				return err
			})
		},
	}
}

func newVMCDROMCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "cdrom VM (insert IMAGE | eject)",
		Short: "Insert an ISO image into a VM's CD-ROM drive, or eject it",
		Long: `Change the image in a VM's CD-ROM drive (a VM created with --cdrom has one).
A running VM sees the change at once (the node that runs it attaches its own
verified copy); a stopped VM gets it at its next start. The record follows,
so the change survives migration and failover.`,
		Example: `  tandem vm cdrom web insert debian-12
  tandem vm cdrom web eject`,
		Args: func(cmd *cobra.Command, args []string) error {
			switch {
			case len(args) == 3 && args[1] == "insert", len(args) == 2 && args[1] == "eject":
				return nil
			case len(args) == 2 && args[1] == "insert":
				return usageErrorf("insert needs an IMAGE: tandem vm cdrom %s insert IMAGE", args[0])
			}
			return usageErrorf("usage: tandem vm cdrom VM insert IMAGE | tandem vm cdrom VM eject")
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &tandemv1.ChangeMediaRequest{Name: args[0]}
			if args[1] == "insert" {
				req.Image = args[2]
			}
			return callAdmin(a, cmd, vmTimeout, func(ctx context.Context, c *adminclient.Client) (*tandemv1.VMInfo, error) {
				return c.Image.ChangeMedia(ctx, req)
			}, writeVM)
		},
	}
}
