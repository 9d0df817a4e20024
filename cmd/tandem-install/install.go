package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Exit codes of 'tandem-install install', also written to the log.
const (
	exitOK         = 0
	exitFailed     = 1 // a step of the installation failed
	exitBadAnswers = 2 // the answers are missing or invalid: nothing touched
	exitNoDisk     = 3 // the target disk does not exist: nothing touched
	exitDiskInUse  = 4 // the disk holds data and wipe is not set: nothing touched
	exitDiskBusy   = 5 // the disk is mounted, the installer's, too small, not a disk: nothing touched
	exitCancelled  = 6 // the person said no at the interactive summary: nothing touched
)

// badAnswersError marks answers that fail validation.
type badAnswersError struct{ err error }

func (e *badAnswersError) Error() string {
	return "the answers are not valid:\n" + indent(e.err.Error())
}
func (e *badAnswersError) Unwrap() error { return e.err }

func indent(s string) string { return "  " + strings.ReplaceAll(s, "\n", "\n  ") }

// exitCode maps an install error to the installer's exit code.
func exitCode(err error) int {
	var bad *badAnswersError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, errAborted):
		return exitCancelled
	case errors.As(err, &bad):
		return exitBadAnswers
	case errors.Is(err, ErrNoDisk):
		return exitNoDisk
	case errors.Is(err, ErrDiskInUse):
		return exitDiskInUse
	case errors.Is(err, ErrDiskBusy):
		return exitDiskBusy
	default:
		return exitFailed
	}
}

// installer installs the live image onto a disk.
type installer struct {
	con      *console
	squashfs string   // the image to copy: the live system's squashfs
	work     string   // where target file systems are mounted
	mounts   string   // mount table, /proc/self/mounts
	busy     []string // disks never to touch: the installer medium, the answer drive
	kvm      bool     // /dev/kvm exists: VMs run with KVM
	logPath  string   // copied into the installed system
}

// run runs a command, logging it and its output to the log file only; its
// error carries the output's last lines.
func (in *installer) run(ctx context.Context, stdin string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	if in.con.file != nil {
		in.con.mu.Lock()
		fmt.Fprintf(in.con.file, "$ %s %s (%s, %v)\n%s", name, strings.Join(args, " "), time.Since(start).Round(time.Millisecond), errOr(err), out.String())
		in.con.mu.Unlock()
	}
	if err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, lastLines(out.String(), 5))
	}
	return out.String(), nil
}

func errOr(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// Install checks the answers and the disk, then installs. Every refusal
// happens before the first write to any disk.
func (in *installer) Install(ctx context.Context, a Answers) error {
	p, err := a.plan()
	if err != nil {
		return &badAnswersError{err}
	}
	size, err := checkDisk(ctx, p.Disk, p.Wipe, in.busy, in.mounts)
	if err != nil {
		return err
	}
	lay, err := fitLayout(size, p.RootGiB)
	if err != nil {
		return err
	}
	fi, err := os.Stat(p.Disk)
	if err != nil {
		return fmt.Errorf("%s: %w", p.Disk, ErrNoDisk)
	}
	if fi.Mode()&os.ModeDevice == 0 || fi.Mode()&os.ModeCharDevice != 0 {
		return fmt.Errorf("%s is not a block device: %w", p.Disk, ErrDiskBusy)
	}
	if _, err := os.Stat(in.squashfs); err != nil {
		return fmt.Errorf("the system image %s is missing (is this the installer ISO?): %w", in.squashfs, err)
	}
	in.con.Infof("installing Tandem onto %s (%s): root %d GiB, the rest for data; node %s, backend %s",
		p.Disk, gib(size), lay.RootGiB, p.Hostname, p.Backend)
	return in.install(ctx, p, lay)
}

// install does the writing; each step names itself in its error.
func (in *installer) install(ctx context.Context, p Plan, lay layout) (err error) {
	disk := resolve(p.Disk)
	target := filepath.Join(in.work, "target")
	var mounted []string
	defer func() {
		for i := len(mounted) - 1; i >= 0; i-- {
			if _, uerr := in.run(context.WithoutCancel(ctx), "", "umount", mounted[i]); uerr != nil && err == nil {
				err = fmt.Errorf("unmount %s: %w", mounted[i], uerr)
			}
		}
	}()
	step := func(what string, f func() error) error {
		in.con.Infof("%s", what)
		if err := f(); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	}
	mount := func(args ...string) error {
		if _, err := in.run(ctx, "", "mount", args...); err != nil {
			return err
		}
		mounted = append(mounted, args[len(args)-1])
		return nil
	}
	rootUUID, dataUUID := newUUID(), newUUID()
	espID := strings.ToUpper(hex.EncodeToString(randBytes(4)))
	parts := map[int]string{}
	for _, n := range []int{partBIOS, partESP, partRoot, partData} {
		parts[n] = partitionPath(disk, n)
	}

	if err := step("partitioning "+disk+" (GPT: BIOS boot, EFI system, root, data)", func() error {
		if _, err := in.run(ctx, "", "wipefs", "--all", "--force", disk); err != nil {
			return err
		}
		if _, err := in.run(ctx, "", "sgdisk", "--zap-all", disk); err != nil {
			return err
		}
		if _, err := in.run(ctx, "", "sgdisk", lay.sgdiskArgs(disk)...); err != nil {
			return err
		}
		_, _ = in.run(ctx, "", "partprobe", disk)
		_, _ = in.run(ctx, "", "udevadm", "settle", "--timeout=30")
		for _, n := range []int{partBIOS, partESP, partRoot, partData} {
			if err := waitExists(ctx, parts[n], 30*time.Second); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return err
	}
	if err := step("making file systems", func() error {
		if _, err := in.run(ctx, "", "mkfs.vfat", "-F", "32", "-n", labelESP, "-i", espID, parts[partESP]); err != nil {
			return err
		}
		if _, err := in.run(ctx, "", "mkfs.ext4", "-F", "-q", "-L", labelRoot, "-U", rootUUID, parts[partRoot]); err != nil {
			return err
		}
		_, err := in.run(ctx, "", "mkfs.ext4", "-F", "-q", "-m", "0", "-L", labelData, "-U", dataUUID, parts[partData])
		return err
	}); err != nil {
		return err
	}
	if err := step("copying the system (this takes a few minutes)", func() error {
		if err := os.MkdirAll(target, 0o755); err != nil {
			return err
		}
		if err := mount(parts[partRoot], target); err != nil {
			return err
		}
		_, err := in.run(ctx, "", "unsquashfs", "-f", "-no-progress", "-d", target, in.squashfs)
		return err
	}); err != nil {
		return err
	}
	if err := step("configuring the node", func() error {
		if err := os.MkdirAll(filepath.Join(target, "boot/efi"), 0o755); err != nil {
			return err
		}
		if err := mount(parts[partESP], filepath.Join(target, "boot/efi")); err != nil {
			return err
		}
		return in.configure(ctx, p, target, fstab(rootUUID, espID[:4]+"-"+espID[4:], dataUUID))
	}); err != nil {
		return err
	}
	if err := step("installing the boot loader (BIOS and UEFI)", func() error {
		for _, d := range []string{"dev", "proc", "sys", "run"} {
			if err := mount("--bind", "/"+d, filepath.Join(target, d)); err != nil {
				return err
			}
		}
		if _, err := in.run(ctx, "", "chroot", target, "grub-install", "--target=i386-pc", disk); err != nil {
			return err
		}
		// The removable path (EFI/BOOT/BOOTX64.EFI) boots without an NVRAM
		// entry, so the disk also boots when moved or when the firmware
		// forgets its entries.
		if _, err := in.run(ctx, "", "chroot", target, "grub-install", "--target=x86_64-efi", "--efi-directory=/boot/efi",
			"--removable", "--no-nvram"); err != nil {
			return err
		}
		_, err := in.run(ctx, "", "chroot", target, "update-grub")
		return err
	}); err != nil {
		return err
	}
	in.copyLog(target)
	return nil
}

// configure writes the node's files and enables its services.
func (in *installer) configure(ctx context.Context, p Plan, target, fstabText string) error {
	files, err := configFiles(p, in.kvm, hex.EncodeToString(randBytes(16)))
	if err != nil {
		return err
	}
	files = append(files, targetFile{"/etc/fstab", 0o644, fstabText})
	for _, f := range files {
		path := filepath.Join(target, f.Path)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if strings.HasPrefix(f.Path, "/root/.ssh/") {
			if err := os.Chmod(filepath.Dir(path), 0o700); err != nil {
				return err
			}
		}
		if err := os.WriteFile(path, []byte(f.Data), os.FileMode(f.Mode)); err != nil {
			return err
		}
		if err := os.Chmod(path, os.FileMode(f.Mode)); err != nil {
			return err
		}
	}
	switch {
	case p.PasswordHash != "":
		if _, err := in.run(ctx, "root:"+p.PasswordHash+"\n", "chpasswd", "-e", "-R", target); err != nil {
			return fmt.Errorf("set the root password: %w", err)
		}
	case p.Password != "":
		if _, err := in.run(ctx, "root:"+p.Password+"\n", "chroot", target, "chpasswd"); err != nil {
			return fmt.Errorf("set the root password: %w", err)
		}
	}
	for _, k := range []struct{ typ, file string }{{"ed25519", "ssh_host_ed25519_key"}, {"ecdsa", "ssh_host_ecdsa_key"}} {
		if _, err := in.run(ctx, "", "ssh-keygen", "-q", "-t", k.typ, "-N", "", "-C", "root@"+p.Hostname,
			"-f", filepath.Join(target, "etc/ssh", k.file)); err != nil {
			return fmt.Errorf("make the SSH host keys: %w", err)
		}
	}
	if _, err := in.run(ctx, "", "systemctl", "--root="+target, "enable",
		"systemd-networkd.service", "ssh.service", "tandemd.service", "tandem-firstboot.service"); err != nil {
		return fmt.Errorf("enable the services: %w", err)
	}
	if _, err := in.run(ctx, "", "systemctl", "--root="+target, "disable", "tandem-install.service"); err != nil {
		return fmt.Errorf("disable the installer: %w", err)
	}
	// The live system's presets (installer on, sshd off) are not the
	// installed system's.
	if err := os.Remove(filepath.Join(target, "etc/systemd/system-preset/10-tandem.preset")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// copyLog leaves the installer's log in the installed system.
func (in *installer) copyLog(target string) {
	if in.logPath == "" {
		return
	}
	b, err := os.ReadFile(in.logPath)
	if err == nil {
		err = os.WriteFile(filepath.Join(target, "var/log/tandem-install.log"), b, 0o600)
	}
	if err != nil {
		in.con.Errorf("could not copy the log into the installed system: %v", err)
	}
}

func waitExists(ctx context.Context, path string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not appear after partitioning", path)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return b
}

// newUUID is a random (version 4) UUID.
func newUUID() string {
	b := randBytes(16)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
