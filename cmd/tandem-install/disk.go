package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// ErrNoDisk: the answers name a disk that does not exist. Nothing is
// touched.
var ErrNoDisk = errors.New("no such disk")

// ErrDiskInUse: the disk holds a partition table or a file system and the
// answers do not say to wipe it. Nothing is touched.
var ErrDiskInUse = errors.New("the disk holds data")

// ErrDiskBusy: the disk is mounted, holds the installer or the answer file,
// or is too small. Refused even with wipe.
var ErrDiskBusy = errors.New("the disk cannot be installed to")

// diskInfo describes a candidate disk for the interactive list.
type diskInfo struct {
	Path      string
	Size      uint64
	Model     string
	Removable bool
}

// listDisks returns the whole disks under sysBlock (/sys/block): no
// partitions, loop, RAM, optical or device-mapper devices.
func listDisks(sysBlock string) ([]diskInfo, error) {
	ents, err := os.ReadDir(sysBlock)
	if err != nil {
		return nil, fmt.Errorf("list disks: %w", err)
	}
	var out []diskInfo
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, "loop") || strings.HasPrefix(name, "ram") || strings.HasPrefix(name, "sr") ||
			strings.HasPrefix(name, "dm-") || strings.HasPrefix(name, "zram") || strings.HasPrefix(name, "md") {
			continue
		}
		dir := filepath.Join(sysBlock, name)
		sectors, _ := readUint(filepath.Join(dir, "size"))
		if sectors == 0 {
			continue
		}
		model, _ := os.ReadFile(filepath.Join(dir, "device", "model"))
		rem, _ := readUint(filepath.Join(dir, "removable"))
		out = append(out, diskInfo{Path: "/dev/" + name, Size: sectors * 512, Model: strings.TrimSpace(string(model)), Removable: rem == 1})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

func readUint(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
}

// diskSize is the size in bytes of a block device or file.
func diskSize(f *os.File) (uint64, error) {
	n, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, err
	}
	return uint64(n), nil
}

// inspectDisk opens path read-only and lists what it holds: partition
// tables and file systems found by its own checks of the MBR and GPT
// headers and by blkid's probe, and, for a block device, its partitions.
// An empty list means the disk is blank. It never writes.
func inspectDisk(ctx context.Context, path string) (size uint64, found []string, err error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil, fmt.Errorf("%s: %w", path, ErrNoDisk)
	}
	if err != nil {
		return 0, nil, fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, nil, err
	}
	if fi.IsDir() {
		return 0, nil, fmt.Errorf("%s is a directory: %w", path, ErrNoDisk)
	}
	if size, err = diskSize(f); err != nil {
		return 0, nil, fmt.Errorf("size of %s: %w", path, err)
	}
	head := make([]byte, 8192)
	n, _ := f.ReadAt(head, 0)
	head = head[:n]
	if len(head) >= 512 && head[510] == 0x55 && head[511] == 0xaa {
		found = append(found, "an MBR partition table or boot sector")
	}
	for _, off := range []int{512, 4096} {
		if len(head) >= off+8 && string(head[off:off+8]) == "EFI PART" {
			found = append(found, "a GPT partition table")
			break
		}
	}
	for _, back := range []uint64{512, 4096} {
		if size >= back+8192 {
			tail := make([]byte, 8)
			if _, err := f.ReadAt(tail, int64(size-back)); err == nil && string(tail) == "EFI PART" {
				found = append(found, "a backup GPT header at the end of the disk")
				break
			}
		}
	}
	probed, err := blkidProbe(ctx, path)
	if err != nil {
		return size, nil, err
	}
	found = append(found, probed...)
	if fi.Mode()&os.ModeDevice != 0 {
		parts, _ := filepath.Glob(filepath.Join("/sys/class/block", filepath.Base(resolve(path)), filepath.Base(resolve(path))+"*"))
		for _, p := range parts {
			found = append(found, "partition "+filepath.Base(p))
		}
	}
	return size, dedupe(found), nil
}

// resolve follows symlinks such as /dev/disk/by-id/...
func resolve(path string) string {
	if r, err := filepath.EvalSymlinks(path); err == nil {
		return r
	}
	return path
}

func dedupe(s []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, v := range s {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}

// blkidProbe runs blkid's low-level probe (it reads the device, not a
// cache) and names each partition table or file system signature.
func blkidProbe(ctx context.Context, path string) ([]string, error) {
	cmd := exec.CommandContext(ctx, "blkid", "-p", "-o", "export", path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 2 {
		return nil, nil // nothing found
	}
	if err != nil {
		return nil, fmt.Errorf("blkid -p %s (cannot tell whether the disk holds data, so it is not touched): %w: %s", path, err, strings.TrimSpace(stderr.String()))
	}
	var found []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		switch k {
		case "PTTYPE":
			found = append(found, "a "+v+" partition table")
		case "TYPE":
			found = append(found, "a "+v+" file system or signature")
		}
	}
	return found, nil
}

// checkDisk decides whether the installer may write to the disk: it must
// exist, be large enough, be neither mounted nor one of the disks it reads
// from (the installer medium, the answer drive), and be blank unless wipe
// is set. It never writes.
func checkDisk(ctx context.Context, path string, wipe bool, busy []string, mounts string) (uint64, error) {
	size, found, err := inspectDisk(ctx, path)
	if err != nil {
		return 0, err
	}
	dev := resolve(path)
	for _, b := range busy {
		if b != "" && resolve(b) == dev {
			return 0, fmt.Errorf("%s holds the installer or its answer file: %w", path, ErrDiskBusy)
		}
	}
	if m := mountedFrom(mounts, dev); m != "" {
		return 0, fmt.Errorf("%s is in use: %s is mounted on %s; %w", path, m, mountPoint(mounts, m), ErrDiskBusy)
	}
	if size < minDiskGiB<<30 {
		return 0, fmt.Errorf("%s has %s, the installer needs at least %d GiB: %w", path, gib(size), minDiskGiB, ErrDiskBusy)
	}
	if len(found) > 0 && !wipe {
		return 0, fmt.Errorf("%s holds %s; it was left untouched. To install over it, answer wipe: true (tandem.wipe=1 on the command line), which destroys everything on it: %w",
			path, strings.Join(found, ", "), ErrDiskInUse)
	}
	return size, nil
}

// mountedFrom returns the first device in the mount table (/proc/mounts
// format) that is disk or one of its partitions.
func mountedFrom(mounts, disk string) string {
	for _, l := range strings.Split(mounts, "\n") {
		f := strings.Fields(l)
		if len(f) < 2 || !strings.HasPrefix(f[0], "/") {
			continue
		}
		dev := resolve(f[0])
		if dev == disk || (strings.HasPrefix(dev, disk) && isPartitionSuffix(strings.TrimPrefix(dev, disk))) {
			return f[0]
		}
	}
	return ""
}

func mountPoint(mounts, dev string) string {
	for _, l := range strings.Split(mounts, "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == dev {
			return f[1]
		}
	}
	return "?"
}

// isPartitionSuffix: "1", "p1".
func isPartitionSuffix(s string) bool {
	s = strings.TrimPrefix(s, "p")
	_, err := strconv.Atoi(s)
	return s != "" && err == nil
}

// partitionPath is the device of partition n: sda → sda1, nvme0n1 →
// nvme0n1p1, mmcblk0 → mmcblk0p1.
func partitionPath(disk string, n int) string {
	d := resolve(disk)
	if last := d[len(d)-1]; last >= '0' && last <= '9' {
		return d + "p" + strconv.Itoa(n)
	}
	return d + strconv.Itoa(n)
}

func gib(b uint64) string { return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30)) }

// layout is the partitioning: BIOS boot (grub-pc on GPT), the ESP, the root
// file system and the data partition (tandemd's data_dir) with the rest.
type layout struct {
	RootGiB int
}

// Partition numbers and labels.
const (
	partBIOS = 1
	partESP  = 2
	partRoot = 3
	partData = 4

	labelRoot = "tandem-root"
	labelData = "tandem-data"
	labelESP  = "EFI"
)

// fitLayout sizes the root partition: the requested size, but at most half
// the disk, so the data partition always gets the larger part.
func fitLayout(diskBytes uint64, wantGiB int) (layout, error) {
	disk := int(diskBytes >> 30)
	root := wantGiB
	if root > disk/2 {
		root = disk / 2
	}
	if root < minRootGiB {
		return layout{}, fmt.Errorf("the disk (%s) is too small for a %d GiB root and a data partition: %w", gib(diskBytes), minRootGiB, ErrDiskBusy)
	}
	return layout{RootGiB: root}, nil
}

// sgdiskArgs creates the GPT. The whole-disk signatures are wiped before
// (zap-all; wipefs), so nothing of the old contents is recognised later.
func (l layout) sgdiskArgs(disk string) []string {
	return []string{
		"-n", fmt.Sprintf("%d:0:+1M", partBIOS), "-t", fmt.Sprintf("%d:EF02", partBIOS), "-c", fmt.Sprintf("%d:bios-boot", partBIOS),
		"-n", fmt.Sprintf("%d:0:+512M", partESP), "-t", fmt.Sprintf("%d:EF00", partESP), "-c", fmt.Sprintf("%d:%s", partESP, labelESP),
		"-n", fmt.Sprintf("%d:0:+%dG", partRoot, l.RootGiB), "-t", fmt.Sprintf("%d:8304", partRoot), "-c", fmt.Sprintf("%d:%s", partRoot, labelRoot),
		"-n", fmt.Sprintf("%d:0:0", partData), "-t", fmt.Sprintf("%d:8300", partData), "-c", fmt.Sprintf("%d:%s", partData, labelData),
		disk,
	}
}
