package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// sparse makes a sparse file of size bytes: a disk without a loop device.
func sparse(t *testing.T, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	return p
}

func need(t *testing.T, cmds ...string) {
	t.Helper()
	for _, c := range cmds {
		if _, err := exec.LookPath(c); err != nil {
			for _, dir := range []string{"/usr/sbin", "/sbin"} {
				if _, err := os.Stat(filepath.Join(dir, c)); err == nil {
					t.Setenv("PATH", os.Getenv("PATH")+":"+dir)
					return
				}
			}
			t.Fatalf("%s not found: 'make deps' installs it (gdisk, e2fsprogs, util-linux)", c)
		}
	}
}

func sh(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

// digest hashes a sparse file's size and its data extents (SEEK_DATA and
// SEEK_HOLE), to prove it was not written without reading gigabytes of
// holes.
func digest(t *testing.T, p string) [32]byte {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	fmt.Fprintf(h, "size %d\n", fi.Size())
	fd := int(f.Fd())
	for off := int64(0); off < fi.Size(); {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			t.Fatal(err)
		}
		// Only non-zero blocks count: how the file system reports its
		// extents may change with writeback, the contents may not.
		buf := make([]byte, 4096)
		for b := data &^ 4095; b < hole; b += 4096 {
			n, err := f.ReadAt(buf, b)
			if err != nil && !errors.Is(err, io.EOF) {
				t.Fatal(err)
			}
			if !bytes.Equal(buf[:n], make([]byte, n)) {
				fmt.Fprintf(h, "block %d\n", b)
				h.Write(buf[:n])
			}
		}
		off = hole
	}
	var d [32]byte
	copy(d[:], h.Sum(nil))
	return d
}

const gib8 = 8 << 30

func TestCheckDisk(t *testing.T) {
	need(t, "blkid", "sgdisk", "mkfs.ext4")
	ctx := context.Background()

	blank := sparse(t, gib8)
	if size, err := checkDisk(ctx, blank, false, nil, ""); err != nil || size != gib8 {
		t.Errorf("blank disk: %d, %v", size, err)
	}

	gpt := sparse(t, gib8)
	sh(t, "sgdisk", "-n", "1:0:+100M", gpt)
	ext := sparse(t, gib8)
	sh(t, "mkfs.ext4", "-q", "-F", ext)
	mbr := sparse(t, gib8)
	if f, err := os.OpenFile(mbr, os.O_WRONLY, 0); err == nil {
		_, _ = f.WriteAt([]byte{0x55, 0xaa}, 510)
		f.Close()
	}
	backup := sparse(t, gib8)
	if f, err := os.OpenFile(backup, os.O_WRONLY, 0); err == nil {
		_, _ = f.WriteAt([]byte("EFI PART"), gib8-512)
		f.Close()
	}
	for name, tc := range map[string]struct {
		path string
		want string
	}{
		"gpt":    {gpt, "gpt partition table"},
		"ext4":   {ext, "ext4 file system"},
		"mbr":    {mbr, "MBR partition table"},
		"backup": {backup, "backup GPT header"},
	} {
		before := digest(t, tc.path)
		_, err := checkDisk(ctx, tc.path, false, nil, "")
		if !errors.Is(err, ErrDiskInUse) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "wipe: true") {
			t.Errorf("%s: want ErrDiskInUse naming %q and how to wipe, got %v", name, tc.want, err)
		}
		if exitCode(err) != exitDiskInUse {
			t.Errorf("%s: exit code %d", name, exitCode(err))
		}
		if _, err := checkDisk(ctx, tc.path, true, nil, ""); err != nil {
			t.Errorf("%s with wipe: %v", name, err)
		}
		if digest(t, tc.path) != before {
			t.Errorf("%s: the check wrote to the disk", name)
		}
	}

	missing := filepath.Join(t.TempDir(), "nope")
	if _, err := checkDisk(ctx, missing, true, nil, ""); !errors.Is(err, ErrNoDisk) || exitCode(err) != exitNoDisk {
		t.Errorf("missing disk: %v", err)
	}
	if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the check created the missing disk")
	}
	small := sparse(t, 1<<30)
	if _, err := checkDisk(ctx, small, true, nil, ""); !errors.Is(err, ErrDiskBusy) || !strings.Contains(err.Error(), "at least 8 GiB") {
		t.Errorf("small disk: %v", err)
	}
	if _, err := checkDisk(ctx, blank, true, []string{"/dev/sr0", blank}, ""); !errors.Is(err, ErrDiskBusy) || !strings.Contains(err.Error(), "installer") {
		t.Errorf("the installer's own disk: %v", err)
	}
	if _, err := checkDisk(ctx, blank, true, nil, blank+" /mnt ext4 rw 0 0\n"); !errors.Is(err, ErrDiskBusy) || !strings.Contains(err.Error(), "mounted on /mnt") {
		t.Errorf("a mounted disk: %v", err)
	}
}

// TestInstallRefusesBeforeWriting runs the installer's entry point on
// files: each refusal exits with its code and leaves every disk as it was.
func TestInstallRefusesBeforeWriting(t *testing.T) {
	need(t, "blkid", "sgdisk")
	ctx := context.Background()
	withData := sparse(t, gib8)
	sh(t, "sgdisk", "-n", "1:0:+100M", withData)
	blank := sparse(t, gib8)
	before := map[string][32]byte{withData: digest(t, withData), blank: digest(t, blank)}
	missing := filepath.Join(t.TempDir(), "sdz")

	for _, tc := range []struct {
		name, disk string
		wipe       bool
		code       int
		want       string
	}{
		{"missing disk", missing, true, exitNoDisk, "no such disk"},
		{"data without wipe", withData, false, exitDiskInUse, "left untouched"},
		// Past every check, a file is still not a disk to partition.
		{"not a block device", blank, false, exitDiskBusy, "not a block device"},
		{"data with wipe, not a block device", withData, true, exitDiskBusy, "not a block device"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := parseAnswerFile([]byte(goodJoin))
			if err != nil {
				t.Fatal(err)
			}
			a.Disk, a.Wipe = tc.disk, tc.wipe
			var screen, logf bytes.Buffer
			con := &console{w: &screen, file: &logf}
			in := &installer{con: con, squashfs: "/nonexistent", work: t.TempDir()}
			err = in.Install(ctx, a)
			if code := exitCode(err); code != tc.code || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("exit %d (%v), want %d naming %q", code, err, tc.code, tc.want)
			}
			if logf.Len() != 0 {
				t.Errorf("a command ran before the refusal:\n%s", logf.String())
			}
		})
	}
	for p, d := range before {
		if digest(t, p) != d {
			t.Errorf("%s was written to", p)
		}
	}
	if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the missing disk was created")
	}
	// Invalid answers: exit 2, before looking at any disk.
	var screen bytes.Buffer
	in := &installer{con: &console{w: &screen}, work: t.TempDir()}
	if err := in.Install(ctx, Answers{Disk: withData}); exitCode(err) != exitBadAnswers || !strings.Contains(err.Error(), "hostname") {
		t.Errorf("bad answers: %v", err)
	}
}

// TestPartitionLayout applies the installer's sgdisk arguments to a sparse
// file and reads the table back.
func TestPartitionLayout(t *testing.T) {
	need(t, "sgdisk")
	for _, tc := range []struct {
		disk    int64
		want    int
		rootGiB int
	}{{gib8, 16, 4}, {64 << 30, 16, 16}, {20 << 30, 16, 10}, {64 << 30, 8, 8}} {
		lay, err := fitLayout(uint64(tc.disk), tc.want)
		if err != nil {
			t.Fatal(err)
		}
		if lay.RootGiB != tc.rootGiB {
			t.Errorf("disk %d GiB, want %d: root %d, expected %d", tc.disk>>30, tc.want, lay.RootGiB, tc.rootGiB)
		}
	}
	if _, err := fitLayout(7<<30, 16); !errors.Is(err, ErrDiskBusy) {
		t.Errorf("7 GiB disk: %v", err)
	}
	disk := sparse(t, gib8)
	lay, _ := fitLayout(gib8, 16)
	sh(t, "sgdisk", lay.sgdiskArgs(disk)...)
	out, err := exec.Command("sgdisk", "-p", disk).CombinedOutput()
	if err != nil {
		t.Fatalf("sgdisk -p: %v\n%s", err, out)
	}
	rows := regexp.MustCompile(`(?m)^\s+(\d)\s+\d+\s+\d+\s+([\d.]+ [KMG]iB)\s+([0-9A-F]{4})\s+(\S+)`).FindAllStringSubmatch(string(out), -1)
	want := [][3]string{{"1", "EF02", "bios-boot"}, {"2", "EF00", "EFI"}, {"3", "8304", "tandem-root"}, {"4", "8300", "tandem-data"}}
	if len(rows) != len(want) {
		t.Fatalf("partitions:\n%s", out)
	}
	for i, w := range want {
		if rows[i][1] != w[0] || rows[i][3] != w[1] || rows[i][4] != w[2] {
			t.Errorf("partition %d: %v, want %v", i+1, rows[i][1:], w)
		}
	}
	if rows[2][2] != "4.0 GiB" {
		t.Errorf("root %s, want 4.0 GiB", rows[2][2])
	}
}

func TestPartitionPath(t *testing.T) {
	for disk, want := range map[string]string{"/dev/sda": "/dev/sda3", "/dev/vda": "/dev/vda3", "/dev/nvme0n1": "/dev/nvme0n1p3", "/dev/mmcblk0": "/dev/mmcblk0p3"} {
		if got := partitionPath(disk, 3); got != want {
			t.Errorf("%s: %s, want %s", disk, got, want)
		}
	}
	mounts := "/dev/nvme0n1p2 /boot ext4 rw 0 0\n/dev/sda1 / ext4 rw 0 0\nproc /proc proc rw 0 0\n"
	if mountedFrom(mounts, "/dev/nvme0n1") != "/dev/nvme0n1p2" || mountedFrom(mounts, "/dev/sdb") != "" || mountedFrom(mounts, "/dev/sd") != "" {
		t.Errorf("mountedFrom")
	}
}
