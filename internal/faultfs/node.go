package faultfs

import (
	"context"
	"os"
	"path/filepath"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// node is a loopback node whose file data goes through the mount's
// volatile cache (dirtyFile) and whose operations meet the fault rules.
// Namespace operations are the loopback's, after the fault check.
type node struct {
	*fs.LoopbackNode
	ffs *FS
}

var (
	_ fs.NodeWrapChilder    = (*node)(nil)
	_ fs.NodeOpener         = (*node)(nil)
	_ fs.NodeCreater        = (*node)(nil)
	_ fs.NodeGetattrer      = (*node)(nil)
	_ fs.NodeSetattrer      = (*node)(nil)
	_ fs.NodeLookuper       = (*node)(nil)
	_ fs.NodeStatxer        = (*node)(nil)
	_ fs.NodeCopyFileRanger = (*node)(nil)
	_ fs.NodeTmpfiler       = (*node)(nil)
	_ fs.NodeUnlinker       = (*node)(nil)
	_ fs.NodeRenamer        = (*node)(nil)
)

func (n *node) WrapChild(ctx context.Context, ops fs.InodeEmbedder) fs.InodeEmbedder {
	return &node{LoopbackNode: ops.(*fs.LoopbackNode), ffs: n.ffs}
}

// rel is the node's path relative to the mount root.
func (n *node) rel() string { return n.Path(n.ffs.rootInode()) }

func (n *node) child(name string) func() string {
	return func() string { return filepath.Join(n.rel(), name) }
}

func (n *node) backingPath() string { return filepath.Join(n.ffs.backing, n.rel()) }

func (n *node) check(ctx context.Context, op Op, rel func() string) syscall.Errno {
	return n.ffs.faults.check(ctx, op, rel)
}

// fixAttr reports the size readers see, unsynced writes included.
func (n *node) fixAttr(a *fuse.Attr) {
	if a.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return
	}
	if end := n.ffs.dirtyEnd(a.Ino); end > int64(a.Size) {
		a.Size = uint64(end)
		a.Blocks = (a.Size + 511) / 512
	}
}

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	ch, errno := n.LoopbackNode.Lookup(ctx, name, out)
	if errno == 0 {
		n.fixAttr(&out.Attr)
	}
	return ch, errno
}

// openFlags are the flags the backing file is opened with: the mount
// does the caching, syncing and appending itself, and it reads and writes
// the backing file whatever the descriptor's mode (to fill partly written
// pages, and to sync through any descriptor of the file).
func openFlags(flags uint32) int {
	f := int(flags) &^ (unix.O_APPEND | unix.O_DIRECT | unix.O_SYNC | unix.O_DSYNC | fuse.FMODE_EXEC)
	return f&^unix.O_ACCMODE | unix.O_RDWR
}

// fopenFlags: FOPEN_DIRECT_IO keeps the kernel's page cache out, so every
// read and write reaches the mount and a power loss cannot leave dropped
// data in the cache; parallel direct writes keep concurrent writers
// concurrent as on a real disk.
const fopenFlags = fuse.FOPEN_DIRECT_IO | fuse.FOPEN_PARALLEL_DIRECT_WRITES

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	p := n.backingPath()
	fd, err := unix.Open(p, openFlags(flags)|unix.O_CLOEXEC, 0)
	if err != nil && flags&unix.O_ACCMODE == unix.O_RDONLY {
		// Read-write refused (a running executable, a read-only
		// file without root): a reader does without.
		fd, err = unix.Open(p, openFlags(flags)&^unix.O_ACCMODE|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return nil, 0, fs.ToErrno(err)
	}
	h, errno := n.ffs.newHandle(n, fd, flags&unix.O_TRUNC != 0)
	if errno != 0 {
		return nil, 0, errno
	}
	return h, fopenFlags, 0
}

func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	if errno := n.check(ctx, OpMeta, n.child(name)); errno != 0 {
		return nil, nil, 0, errno
	}
	ch, lfh, _, errno := n.LoopbackNode.Create(ctx, name, uint32(openFlags(flags)), mode, out)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	// Take over the loopback's descriptor (a dup of it, then release it).
	lf := lfh.(*fs.LoopbackFile)
	raw, _ := lf.PassthroughFd()
	fd, err := unix.FcntlInt(uintptr(raw), unix.F_DUPFD_CLOEXEC, 0)
	lf.Release(ctx)
	if err != nil {
		return nil, nil, 0, fs.ToErrno(err)
	}
	h, errno := n.ffs.newHandle(ch.Operations().(*node), fd, flags&unix.O_TRUNC != 0)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	n.fixAttr(&out.Attr)
	return ch, h, fopenFlags, 0
}

func (n *node) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if h, ok := f.(*handle); ok {
		return h.Getattr(ctx, out)
	}
	if errno := n.LoopbackNode.Getattr(ctx, nil, out); errno != 0 {
		return errno
	}
	n.fixAttr(&out.Attr)
	return 0
}

func (n *node) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	sz, truncating := in.GetSize()
	if !truncating {
		if errno := n.LoopbackNode.Setattr(ctx, nil, in, out); errno != 0 {
			return errno
		}
		n.fixAttr(&out.Attr)
		return 0
	}
	if errno := n.check(ctx, OpWrite, n.rel); errno != 0 {
		return errno
	}
	// A truncate is applied to the backing file at once (metadata is
	// durable when it returns, see doc.go); the unsynced data beyond the
	// new size goes with it.
	var st unix.Stat_t
	if err := unix.Stat(n.backingPath(), &st); err != nil {
		return fs.ToErrno(err)
	}
	d := n.ffs.dirty(st.Ino)
	defer n.ffs.release(d)
	d.mu.Lock()
	defer d.mu.Unlock()
	if errno := n.LoopbackNode.Setattr(ctx, nil, in, out); errno != 0 {
		return errno
	}
	d.truncate(int64(sz))
	n.fixAttrLocked(d, &out.Attr)
	return 0
}

// fixAttrLocked is fixAttr for a caller that holds d.mu.
func (n *node) fixAttrLocked(d *dirtyFile, a *fuse.Attr) {
	if d.end > int64(a.Size) {
		a.Size = uint64(d.end)
		a.Blocks = (a.Size + 511) / 512
	}
}

// Statx is refused so the kernel falls back to Getattr, which knows the
// unsynced size.
func (n *node) Statx(ctx context.Context, f fs.FileHandle, flags uint32, mask uint32, out *fuse.StatxOut) syscall.Errno {
	return syscall.ENOSYS
}

// CopyFileRange is refused: the kernel then copies through Read and
// Write, which see the unsynced data.
func (n *node) CopyFileRange(ctx context.Context, fhIn fs.FileHandle, offIn uint64, out *fs.Inode, fhOut fs.FileHandle, offOut uint64, length uint64, flags uint64) (uint32, syscall.Errno) {
	return 0, syscall.ENOSYS
}

// Tmpfile (O_TMPFILE) is not supported by the model.
func (n *node) Tmpfile(ctx context.Context, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, syscall.EOPNOTSUPP
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if errno := n.check(ctx, OpMeta, n.child(name)); errno != 0 {
		return nil, errno
	}
	return n.LoopbackNode.Mkdir(ctx, name, mode, out)
}

func (n *node) Mknod(ctx context.Context, name string, mode, rdev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if errno := n.check(ctx, OpMeta, n.child(name)); errno != 0 {
		return nil, errno
	}
	return n.LoopbackNode.Mknod(ctx, name, mode, rdev, out)
}

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if errno := n.check(ctx, OpMeta, n.child(name)); errno != 0 {
		return nil, errno
	}
	return n.LoopbackNode.Symlink(ctx, target, name, out)
}

func (n *node) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if errno := n.check(ctx, OpMeta, n.child(name)); errno != 0 {
		return nil, errno
	}
	ch, errno := n.LoopbackNode.Link(ctx, target, name, out)
	if errno == 0 {
		n.fixAttr(&out.Attr)
	}
	return ch, errno
}

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	if errno := n.check(ctx, OpMeta, n.child(name)); errno != 0 {
		return errno
	}
	return n.LoopbackNode.Rmdir(ctx, name)
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	if errno := n.check(ctx, OpMeta, n.child(name)); errno != 0 {
		return errno
	}
	var st unix.Stat_t
	statErr := unix.Lstat(filepath.Join(n.backingPath(), name), &st)
	if errno := n.LoopbackNode.Unlink(ctx, name); errno != 0 {
		return errno
	}
	if statErr == nil && st.Nlink == 1 {
		// The inode number may be reused by the next file created.
		n.ffs.forget(st.Ino)
	}
	return 0
}

func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if errno := n.check(ctx, OpMeta, n.child(name)); errno != 0 {
		return errno
	}
	target := filepath.Join(n.ffs.backing, newParent.EmbeddedInode().Path(n.ffs.rootInode()), newName)
	var st unix.Stat_t
	statErr := unix.Lstat(target, &st)
	if errno := n.LoopbackNode.Rename(ctx, name, newParent, newName, flags); errno != 0 {
		return errno
	}
	if statErr == nil && st.Nlink == 1 && flags&unix.RENAME_EXCHANGE == 0 {
		n.ffs.forget(st.Ino) // the replaced file is gone
	}
	return 0
}

// handle is an open file: the backing descriptor and the file's volatile
// cache.
type handle struct {
	n *node
	f *os.File
	d *dirtyFile
}

var (
	_ fs.FileReader    = (*handle)(nil)
	_ fs.FileWriter    = (*handle)(nil)
	_ fs.FileFsyncer   = (*handle)(nil)
	_ fs.FileFlusher   = (*handle)(nil)
	_ fs.FileReleaser  = (*handle)(nil)
	_ fs.FileGetattrer = (*handle)(nil)
	_ fs.FileAllocater = (*handle)(nil)
)

func (h *handle) fd() int { return int(h.f.Fd()) }

func (h *handle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if errno := h.n.check(ctx, OpRead, h.n.rel); errno != 0 {
		return nil, errno
	}
	h.d.mu.RLock()
	defer h.d.mu.RUnlock()
	n, err := h.d.read(h.fd(), dest, off)
	if err != nil {
		return nil, fs.ToErrno(err)
	}
	return fuse.ReadResultData(dest[:n]), 0
}

func (h *handle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	if errno := h.n.check(ctx, OpWrite, h.n.rel); errno != 0 {
		return 0, errno
	}
	h.d.mu.Lock()
	err := h.d.write(h.fd(), data, off)
	over := h.d.dirtyBytes() > 0 && h.n.ffs.overDirty()
	if err == nil && over {
		// Too much unsynced data: write this file's back, as a page
		// cache under memory pressure does. It was not synced, so it
		// may survive a power loss; that is allowed, only not promised.
		err = h.d.sync(h.fd())
		h.n.ffs.faults.add(func(c *Counters) { c.Writebacks++ })
	}
	h.d.mu.Unlock()
	if err != nil {
		return 0, fs.ToErrno(err)
	}
	return uint32(len(data)), 0
}

// Fsync makes the file's unsynced data durable (fsync and fdatasync
// alike: metadata is always durable). On an injected error nothing is
// written and the data stays unsynced.
func (h *handle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	if errno := h.n.check(ctx, OpSync, h.n.rel); errno != 0 {
		return errno
	}
	h.d.mu.Lock()
	err := h.d.sync(h.fd())
	h.d.mu.Unlock()
	if err != nil {
		return fs.ToErrno(err)
	}
	h.n.ffs.faults.add(func(c *Counters) { c.Syncs++ })
	return 0
}

// Flush (each close) makes nothing durable, as close(2) does not.
func (h *handle) Flush(ctx context.Context) syscall.Errno {
	return h.n.check(ctx, OpFlush, h.n.rel)
}

func (h *handle) Release(ctx context.Context) syscall.Errno {
	h.n.ffs.release(h.d)
	return fs.ToErrno(h.f.Close())
}

func (h *handle) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	var st syscall.Stat_t
	if err := syscall.Fstat(h.fd(), &st); err != nil {
		return fs.ToErrno(err)
	}
	out.FromStat(&st)
	h.d.mu.RLock()
	h.n.fixAttrLocked(h.d, &out.Attr)
	h.d.mu.RUnlock()
	return 0
}

// Allocate is applied to the backing file at once, like a truncate; a
// range it zeroes or punches drops the unsynced data in it.
func (h *handle) Allocate(ctx context.Context, off uint64, size uint64, mode uint32) syscall.Errno {
	if errno := h.n.check(ctx, OpWrite, h.n.rel); errno != 0 {
		return errno
	}
	h.d.mu.Lock()
	defer h.d.mu.Unlock()
	if err := unix.Fallocate(h.fd(), mode, int64(off), int64(size)); err != nil {
		return fs.ToErrno(err)
	}
	if mode&(unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_ZERO_RANGE) != 0 {
		h.d.zero(int64(off), int64(size))
	}
	return 0
}
