package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"

	"github.com/tandemhci/tandem/internal/validate"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// Images are converted by qemu-img, which reads every format QEMU knows and
// writes straight to the volume's NBD export on its primary; the volume's
// replication sends each block to the other replicas as usual.

type imageInfo struct {
	Path        string
	Format      string `json:"format"`
	VirtualSize int64  `json:"virtual-size"`
}

// roundedSize is the image size rounded up to a volume's 4 KiB granularity.
func (i *imageInfo) roundedSize() int64 { return (i.VirtualSize + 4095) &^ 4095 }

func probeImage(ctx context.Context, path string) (*imageInfo, error) {
	// qemu-img would read a device or wait on a FIFO; only a file (or a
	// link to one) is an image.
	if err := validate.RegularFile("--image", path); err != nil {
		if errors.Is(err, validate.ErrInvalid) {
			return nil, usageErrorf("%s", validate.Message(err))
		}
		return nil, err
	}
	if _, err := exec.LookPath("qemu-img"); err != nil {
		return nil, errors.New("--image needs qemu-img (Debian package qemu-utils) on this machine")
	}
	out, err := exec.CommandContext(ctx, "qemu-img", "info", "--output", "json", path).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return nil, fmt.Errorf("--image %s: qemu-img info: %s", path, strings.TrimSpace(string(ee.Stderr)))
		}
		return nil, fmt.Errorf("--image %s: qemu-img info: %w", path, err)
	}
	info := &imageInfo{Path: path}
	if err := json.Unmarshal(out, info); err != nil || info.VirtualSize <= 0 {
		return nil, fmt.Errorf("--image %s: cannot read its size from qemu-img info: %v", path, err)
	}
	return info, nil
}

// importTarget is the volume's unix socket export when the CLI runs on
// the primary.
func importTarget(vol *tandemv1.VolumeInfo) (string, error) {
	if u := vol.NbdUnix; u != "" {
		if _, sock, ok := strings.Cut(u, "?socket="); ok {
			if _, err := os.Stat(sock); err == nil {
				return u, nil
			}
		}
	}
	// The TCP export needs an export certificate (TLS); the CLI's admin
	// credentials are not one, so the copy runs where the unix socket is.
	return "", fmt.Errorf("volume %s was created but the image can only be copied on its primary %s (through its NBD unix socket); run the command there, or copy it with an export certificate ('tandem volume export-cert') and %s", vol.Name, orDash(vol.Primary), orDash(vol.NbdTcp))
}

// importImage copies img into vol with qemu-img convert, showing its progress.
func importImage(ctx context.Context, stderr io.Writer, img *imageInfo, vol *tandemv1.VolumeInfo) error {
	target, err := importTarget(vol)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "qemu-img", "convert", "-p", "-n", "-f", img.Format, "-O", "raw", "-t", "none", img.Path, target)
	pr, pw := io.Pipe()
	cmd.Stdout = pw
	var errBuf strings.Builder
	cmd.Stderr = &errBuf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("qemu-img convert: %w", err)
	}
	out := newProgressOutput(stderr, isTerminalWriter(stderr))
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		sc.Split(scanCR)
		last := ""
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			pct, ok := strings.CutSuffix(strings.TrimPrefix(line, "("), "/100%)")
			if !ok || pct == last {
				continue
			}
			last = pct
			out.draw(fmt.Sprintf("copying %s (%s, %d MiB) into %s: %s%%", img.Path, img.Format, img.VirtualSize>>20, vol.Name, pct))
		}
	}()
	err = cmd.Wait()
	pw.Close()
	<-done
	out.finish()
	if err != nil {
		return fmt.Errorf("qemu-img convert: %v: %s", err, strings.TrimSpace(errBuf.String()))
	}
	fmt.Fprintf(stderr, "image %s copied into %s\n", img.Path, vol.Name)
	return nil
}

// scanCR splits on \r or \n: qemu-img redraws its progress with \r.
func scanCR(data []byte, atEOF bool) (int, []byte, error) {
	for i, b := range data {
		if b == '\r' || b == '\n' {
			return i + 1, data[:i], nil
		}
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}
