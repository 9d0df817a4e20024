package guest

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Image is a bootable test guest: a kernel, an initramfs whose /init is the
// guest agent, and how to tell the agent what to do.
type Image struct {
	Kernel string // path of vmlinuz
	Initrd string // path of initrd.img
	// Cmdline renders the kernel command line for a Config.
	Cmdline func(Config) string
}

// Config is what the guest agent is told on the kernel command line. Zero
// fields are left out, so the agent's defaults apply.
type Config struct {
	IP      string // tandem.ip, address/prefix of eth0, e.g. 10.0.2.15/24
	Gateway string // tandem.gw
	UDP     string // tandem.udp, host:port of the Receiver, e.g. 10.0.2.2:9999
	Rate    int    // tandem.rate, datagrams per second (agent default 100)
	Disk    string // tandem.disk, counter disk, e.g. /dev/vda
	// DiskOffset is where on Disk the counter block is
	// (tandem.disk_offset, a multiple of 4096), so that a bootable image
	// can hold the disk's start.
	DiskOffset int64
	// WriteInterval is the pause between counter writes (tandem.write_ms,
	// agent default 10 ms); rounded down to milliseconds.
	WriteInterval time.Duration
	// CloudInit is the cloud-init seed's device (tandem.cidata), or
	// "auto" to find the virtio disk holding it; the agent reports the
	// user-data's tandem_test_value in Datagram.CloudInit.
	CloudInit string
	// EFIVar (tandem.efivar=on) has the agent keep a UEFI variable and
	// report its value in Datagram.EFIVar (UEFI guests only).
	EFIVar bool
	// Console is the kernel console (default ttyS0); the agent logs there.
	Console string
	// Extra is appended verbatim.
	Extra string
}

// Cmdline renders the kernel command line for c. panic=-1 reboots on a
// kernel panic, which with QEMU's -no-reboot ends the VM instead of hanging
// it; quiet keeps the slow emulated serial line for the agent's lines.
func Cmdline(c Config) string {
	console := c.Console
	if console == "" {
		console = "ttyS0"
	}
	parts := []string{"console=" + console, "panic=-1", "quiet"}
	add := func(k, v string) {
		if v != "" {
			parts = append(parts, "tandem."+k+"="+v)
		}
	}
	add("ip", c.IP)
	add("gw", c.Gateway)
	add("udp", c.UDP)
	if c.Rate > 0 {
		add("rate", strconv.Itoa(c.Rate))
	}
	add("disk", c.Disk)
	if c.DiskOffset > 0 {
		add("disk_offset", strconv.FormatInt(c.DiskOffset, 10))
	}
	add("cidata", c.CloudInit)
	if c.EFIVar {
		add("efivar", "on")
	}
	if c.WriteInterval > 0 {
		add("write_ms", strconv.FormatInt(c.WriteInterval.Milliseconds(), 10))
	}
	if c.Extra != "" {
		parts = append(parts, c.Extra)
	}
	return strings.Join(parts, " ")
}

// EnsureImage builds the guest image under repoRoot/.cache/guest with
// scripts/build-guest-image.sh unless it is up to date (the script decides,
// quickly, and serialises concurrent callers), and returns it. The first
// build downloads a kernel package and needs a few tens of seconds.
func EnsureImage(ctx context.Context, repoRoot string) (Image, error) {
	dir := filepath.Join(repoRoot, ".cache", "guest")
	img := Image{
		Kernel:  filepath.Join(dir, "vmlinuz"),
		Initrd:  filepath.Join(dir, "initrd.img"),
		Cmdline: Cmdline,
	}
	script := filepath.Join(repoRoot, "scripts", "build-guest-image.sh")
	cmd := exec.CommandContext(ctx, "bash", script)
	cmd.Dir = repoRoot
	cmd.Env = os.Environ()
	// Prefer the toolchain running this code (go test) for the agent.
	if _, ok := os.LookupEnv("GO"); !ok {
		if goBin, err := exec.LookPath("go"); err == nil {
			cmd.Env = append(cmd.Env, "GO="+goBin)
		}
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return Image{}, fmt.Errorf("building guest image (%s): %w: %s", script, err, strings.TrimSpace(string(out)))
	}
	for _, p := range []string{img.Kernel, img.Initrd} {
		if _, err := os.Stat(p); err != nil {
			return Image{}, fmt.Errorf("guest image: %w", err)
		}
	}
	return img, nil
}

// ReadDiskState reads the agent's counter block from the start of a raw
// disk image (or any file or device holding it).
func ReadDiskState(path string) (DiskState, error) {
	f, err := os.Open(path)
	if err != nil {
		return DiskState{}, fmt.Errorf("disk state: %w", err)
	}
	defer f.Close()
	b := make([]byte, diskStateSize)
	if _, err := io.ReadFull(f, b); err != nil {
		return DiskState{}, fmt.Errorf("disk state of %s: %w", path, err)
	}
	st, err := DecodeDiskState(b)
	if err != nil {
		return DiskState{}, fmt.Errorf("%s: %w", path, err)
	}
	return st, nil
}
