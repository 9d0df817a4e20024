package blockstore

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// DiskKind says how a configured disk holds volumes.
type DiskKind string

const (
	// DiskDir is a directory on a local filesystem; volumes are files in it.
	DiskDir DiskKind = "dir"
	// DiskDevice is a raw block device; it holds one volume.
	DiskDevice DiskKind = "device"
)

// ErrNotDisk: a configured disk path is neither a directory nor a block
// device.
var ErrNotDisk = errors.New("not a directory or a block device")

// DiskInfo describes one entry of tandemd's `disks:` list.
type DiskInfo struct {
	Path     string
	Kind     DiskKind
	Capacity int64 // bytes: filesystem size, or device size
	Free     int64 // bytes available: statfs f_bavail, or the device size
	// FSType names the filesystem of a DiskDir ("ext4", "xfs", "tmpfs", …,
	// or "0x…" for others). Empty for devices.
	FSType string
}

// ProbeDisk inspects a configured disk path (following symlinks such as
// /dev/disk/by-id/…).
func ProbeDisk(path string) (DiskInfo, error) {
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return DiskInfo{}, fmt.Errorf("blockstore: disk %s does not exist: %w", path, err)
		}
		return DiskInfo{}, fmt.Errorf("blockstore: probe disk: %w", err)
	}
	switch {
	case fi.IsDir():
		var st unix.Statfs_t
		if err := unix.Statfs(path, &st); err != nil {
			return DiskInfo{}, fmt.Errorf("blockstore: disk %s: statfs: %w", path, err)
		}
		bsize := st.Frsize
		if bsize == 0 {
			bsize = st.Bsize
		}
		return DiskInfo{
			Path:     path,
			Kind:     DiskDir,
			Capacity: int64(st.Blocks) * bsize,
			Free:     int64(st.Bavail) * bsize,
			FSType:   fsTypeName(int64(st.Type)),
		}, nil
	case isBlockDevice(fi):
		f, err := os.OpenFile(path, os.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return DiskInfo{}, fmt.Errorf("blockstore: disk %s: %w", path, err)
		}
		defer f.Close()
		size, err := deviceSize(f)
		if err != nil {
			return DiskInfo{}, fmt.Errorf("blockstore: disk %s: %w", path, err)
		}
		return DiskInfo{Path: path, Kind: DiskDevice, Capacity: size, Free: size}, nil
	}
	return DiskInfo{}, fmt.Errorf("blockstore: disk %s is a %s: %w", path, describeMode(fi.Mode()), ErrNotDisk)
}

func describeMode(m os.FileMode) string {
	switch {
	case m.IsRegular():
		return "regular file"
	case m&os.ModeCharDevice != 0:
		return "character device"
	case m&os.ModeSocket != 0:
		return "socket"
	case m&os.ModeNamedPipe != 0:
		return "named pipe"
	}
	return "file of mode " + m.String()
}

func fsTypeName(magic int64) string {
	switch magic {
	case unix.EXT4_SUPER_MAGIC:
		return "ext4"
	case unix.XFS_SUPER_MAGIC:
		return "xfs"
	case unix.BTRFS_SUPER_MAGIC:
		return "btrfs"
	case unix.TMPFS_MAGIC:
		return "tmpfs"
	case unix.F2FS_SUPER_MAGIC:
		return "f2fs"
	case unix.NFS_SUPER_MAGIC:
		return "nfs"
	case unix.OVERLAYFS_SUPER_MAGIC:
		return "overlayfs"
	case 0x2fc12fc1:
		return "zfs"
	}
	return fmt.Sprintf("%#x", magic)
}
