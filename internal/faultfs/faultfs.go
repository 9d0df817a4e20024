package faultfs

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// DefaultMaxDirtyBytes is the unsynced data a mount keeps before it
// writes a file's back early (Options.MaxDirtyBytes).
const DefaultMaxDirtyBytes = 1 << 30

// Options tune Mount. The zero value gives the defaults.
type Options struct {
	// MaxDirtyBytes bounds the unsynced data held in memory; past it, the
	// writing file's unsynced data is written to the backing file (still
	// unsynced, so it may or may not survive a PowerLoss, as on a real
	// disk). 0 means DefaultMaxDirtyBytes; negative means no bound.
	MaxDirtyBytes int64
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// Debug logs every FUSE request.
	Debug bool
}

// FS is a mounted fault-injecting filesystem. Its methods are safe for
// concurrent use.
type FS struct {
	backing, mountpoint string
	log                 *slog.Logger
	maxDirty            int64
	faults              faults
	root                *node
	server              *fuse.Server

	mu         sync.Mutex
	files      map[uint64]*dirtyFile // by backing inode number
	total      atomic.Int64
	unmounted  bool
	unmountErr error
}

// Mount mounts a passthrough of the directory backing at mountpoint (an
// existing directory) and serves it until Unmount. It needs root: it
// calls mount(2) itself, so no fusermount is needed. The mount is visible
// to processes in the caller's mount namespace, and to namespaces created
// after it from that one (ip netns exec copies the mount table): start
// the processes that use it after Mount.
func Mount(ctx context.Context, backing, mountpoint string, opts Options) (*FS, error) {
	backing, err := filepath.Abs(backing)
	if err != nil {
		return nil, fmt.Errorf("faultfs: backing directory: %w", err)
	}
	mountpoint, err = filepath.Abs(mountpoint)
	if err != nil {
		return nil, fmt.Errorf("faultfs: mount point: %w", err)
	}
	for _, d := range []string{backing, mountpoint} {
		st, err := os.Stat(d)
		if err != nil {
			return nil, fmt.Errorf("faultfs: %w", err)
		}
		if !st.IsDir() {
			return nil, fmt.Errorf("faultfs: %s is not a directory", d)
		}
	}
	if backing == mountpoint {
		return nil, fmt.Errorf("faultfs: backing directory and mount point are both %s", backing)
	}
	var st unix.Stat_t
	if err := unix.Stat(backing, &st); err != nil {
		return nil, fmt.Errorf("faultfs: %w", err)
	}
	f := &FS{
		backing:    backing,
		mountpoint: mountpoint,
		log:        opts.Logger,
		maxDirty:   opts.MaxDirtyBytes,
		files:      map[uint64]*dirtyFile{},
	}
	if f.log == nil {
		f.log = slog.Default()
	}
	if f.maxDirty == 0 {
		f.maxDirty = DefaultMaxDirtyBytes
	}
	lr := &fs.LoopbackRoot{Path: backing, Dev: st.Dev}
	f.root = &node{LoopbackNode: &fs.LoopbackNode{RootData: lr}, ffs: f}
	lr.RootNode = f.root

	// Attributes are never cached: a power loss changes file sizes
	// behind the kernel's back. Entries are not cached either, so a test
	// that changes the backing directory directly is seen at once.
	zero := time.Duration(0)
	fo := &fs.Options{
		EntryTimeout:    &zero,
		AttrTimeout:     &zero,
		NegativeTimeout: &zero,
		MountOptions: fuse.MountOptions{
			AllowOther:        true,
			DirectMountStrict: true,
			FsName:            "faultfs:" + backing,
			Name:              "faultfs",
			MaxWrite:          1 << 20,
			Debug:             opts.Debug,
			Logger:            log.New(&slogWriter{f.log}, "", 0),
			// Shared mmap of a direct-I/O file works only with this.
			ExtraCapabilities: fuse.CAP_DIRECT_IO_ALLOW_MMAP,
			// Passthrough would let the kernel bypass the cache model.
			DisabledCapabilities: fuse.CAP_PASSTHROUGH,
		},
	}
	raw := &rawFS{RawFileSystem: fs.NewNodeFS(f.root, fo)}
	srv, err := fuse.NewServer(raw, mountpoint, &fo.MountOptions)
	if err != nil {
		return nil, fmt.Errorf("faultfs: mount %s on %s: %w", backing, mountpoint, err)
	}
	f.server = srv
	go srv.Serve()
	if err := srv.WaitMount(); err != nil {
		_ = unix.Unmount(mountpoint, unix.MNT_DETACH)
		return nil, fmt.Errorf("faultfs: mount %s on %s: %w", backing, mountpoint, err)
	}
	f.log.Info("faultfs mounted", "backing", backing, "mountpoint", mountpoint)
	return f, nil
}

// Mountpoint is where the filesystem is mounted.
func (f *FS) Mountpoint() string { return f.mountpoint }

// Backing is the directory that holds the durable data.
func (f *FS) Backing() string { return f.backing }

// SetFault adds a rule, or replaces the rule with the same Ops and Path.
// Rules are tried in the order they were first set; the first that
// matches an operation applies.
func (f *FS) SetFault(flt Fault) error { return f.faults.set(flt) }

// Faults returns the rules in force.
func (f *FS) Faults() []Fault { return f.faults.list() }

// Clear removes every rule; unsynced data is kept.
func (f *FS) Clear() { f.faults.clear() }

// Counters returns what was injected so far.
func (f *FS) Counters() Counters { return f.faults.snapshot() }

// DirtyBytes is the unsynced data held now (whole pages).
func (f *FS) DirtyBytes() int64 { return f.total.Load() }

// PowerLoss drops every write no sync has made durable, as a power cut
// does to a disk's volatile cache: afterwards the mount (and the backing
// directory) holds only synced data. Processes should be stopped first,
// as a power cut stops them; descriptors still open keep working on the
// synced data.
func (f *FS) PowerLoss() {
	f.mu.Lock()
	files := make([]*dirtyFile, 0, len(f.files))
	for _, d := range f.files {
		files = append(files, d)
	}
	f.mu.Unlock()
	var dropped int64
	for _, d := range files {
		d.mu.Lock()
		dropped += d.drop()
		d.mu.Unlock()
	}
	f.faults.add(func(c *Counters) {
		c.PowerLosses++
		c.DroppedBytes += uint64(dropped)
	})
	f.log.Info("faultfs power loss", "mountpoint", f.mountpoint, "dropped_bytes", dropped)
}

// Sync makes every file's unsynced data durable, as a clean shutdown does.
func (f *FS) Sync() error {
	f.mu.Lock()
	files := make([]*dirtyFile, 0, len(f.files))
	for _, d := range f.files {
		files = append(files, d)
	}
	f.mu.Unlock()
	var errs []error
	for _, d := range files {
		if err := f.syncByIno(d); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// syncByIno syncs d through a descriptor found by inode number: the file
// may have no open descriptor left.
func (f *FS) syncByIno(d *dirtyFile) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.pages) == 0 {
		return nil
	}
	p, err := findIno(f.backing, d.ino)
	if err != nil {
		return fmt.Errorf("faultfs: sync inode %d: %w", d.ino, err)
	}
	fd, err := unix.Open(p, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("faultfs: sync %s: %w", p, err)
	}
	defer unix.Close(fd)
	if err := d.sync(fd); err != nil {
		return fmt.Errorf("faultfs: sync %s: %w", p, err)
	}
	return nil
}

// findIno finds a path of the file with inode ino under dir.
func findIno(dir string, ino uint64) (string, error) {
	var found string
	errFound := errors.New("found")
	err := filepath.WalkDir(dir, func(p string, de os.DirEntry, err error) error {
		if err != nil || !de.Type().IsRegular() {
			return nil
		}
		info, err := de.Info()
		if err != nil {
			return nil
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok && st.Ino == ino {
			found = p
			return errFound
		}
		return nil
	})
	if found != "" {
		return found, nil
	}
	if err != nil {
		return "", err
	}
	return "", os.ErrNotExist
}

// Unmount writes the unsynced data back (a clean shutdown; call
// PowerLoss first to lose it) and unmounts, lazily if the mount is busy,
// then waits for the server to stop: until every mount namespace that
// copied the mount has let go of it, or ctx ends. It is idempotent.
func (f *FS) Unmount(ctx context.Context) error {
	f.mu.Lock()
	if f.unmounted {
		err := f.unmountErr
		f.mu.Unlock()
		return err
	}
	f.unmounted = true
	f.mu.Unlock()
	var errs []error
	if err := f.Sync(); err != nil {
		errs = append(errs, err)
	}
	if err := unix.Unmount(f.mountpoint, 0); err != nil && err != unix.EINVAL {
		// Busy (an open file, a cwd): detach it now; the kernel
		// finishes when the last user lets go.
		if err2 := unix.Unmount(f.mountpoint, unix.MNT_DETACH); err2 != nil && err2 != unix.EINVAL {
			errs = append(errs, fmt.Errorf("faultfs: unmount %s: %w (lazy unmount: %v)", f.mountpoint, err, err2))
		}
	}
	done := make(chan struct{})
	go func() { f.server.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("faultfs: %s unmounted here, but the FUSE connection is still in use (another mount namespace holds a copy of the mount?): %w", f.mountpoint, ctx.Err()))
	}
	err := errors.Join(errs...)
	f.mu.Lock()
	f.unmountErr = err
	f.mu.Unlock()
	if err == nil {
		f.log.Info("faultfs unmounted", "mountpoint", f.mountpoint)
	}
	return err
}

func (f *FS) rootInode() *fs.Inode { return f.root.EmbeddedInode() }

func (f *FS) overDirty() bool { return f.maxDirty > 0 && f.total.Load() > f.maxDirty }

// dirty returns the volatile cache of backing inode ino, taking a
// reference that release gives back.
func (f *FS) dirty(ino uint64) *dirtyFile {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.files[ino]
	if !ok {
		d = &dirtyFile{ino: ino, total: &f.total}
		f.files[ino] = d
	}
	d.refs++
	return d
}

// release gives back a reference from dirty, forgetting a cache that
// holds nothing and is not in use.
func (f *FS) release(d *dirtyFile) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d.refs--
	if d.refs > 0 {
		return
	}
	if f.files[d.ino] != d {
		// Forgotten while open: the file is gone, and so is its data.
		d.mu.Lock()
		d.drop()
		d.mu.Unlock()
		return
	}
	d.mu.Lock()
	empty := len(d.pages) == 0 && d.end == 0
	d.mu.Unlock()
	if empty {
		delete(f.files, d.ino)
	}
}

// dirtyEnd is the end of the unsynced writes of inode ino, 0 if none.
func (f *FS) dirtyEnd(ino uint64) int64 {
	f.mu.Lock()
	d, ok := f.files[ino]
	f.mu.Unlock()
	if !ok {
		return 0
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.end
}

// forget unlinks the cache of an inode that was deleted: its number may
// be reused by a new file. Descriptors still open on the deleted file keep
// their cache (and read their own unsynced writes) until they close.
func (f *FS) forget(ino uint64) {
	f.mu.Lock()
	d, ok := f.files[ino]
	delete(f.files, ino)
	inUse := ok && d.refs > 0
	f.mu.Unlock()
	if ok && !inUse {
		d.mu.Lock()
		d.drop()
		d.mu.Unlock()
	}
}

// newHandle wraps an open backing descriptor; truncated says the open
// truncated the file (O_TRUNC), dropping its unsynced data.
func (f *FS) newHandle(n *node, fd int, truncated bool) (*handle, syscall.Errno) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fs.ToErrno(err)
	}
	d := f.dirty(st.Ino)
	if truncated {
		d.mu.Lock()
		d.truncate(0)
		d.mu.Unlock()
	}
	return &handle{n: n, f: os.NewFile(uintptr(fd), n.backingPath()), d: d}, 0
}

// rawFS sees what the node API hides: the flags of each write. A write on
// an O_SYNC/O_DSYNC descriptor or with RWF_DSYNC carries O_DSYNC (the
// kernel does not send a separate fsync for direct-I/O files), so it is
// followed by a sync of the file before it is answered.
type rawFS struct {
	fuse.RawFileSystem
}

func (r *rawFS) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	n, st := r.RawFileSystem.Write(cancel, in, data)
	return n, r.syncAfter(cancel, in, st)
}

func (r *rawFS) Writev(cancel <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	n, st := r.RawFileSystem.Writev(cancel, in, data)
	if st == fuse.ENOSYS {
		return n, st
	}
	return n, r.syncAfter(cancel, in, st)
}

func (r *rawFS) syncAfter(cancel <-chan struct{}, in *fuse.WriteIn, st fuse.Status) fuse.Status {
	if !st.Ok() || in.Flags&unix.O_DSYNC == 0 {
		return st
	}
	return r.RawFileSystem.Fsync(cancel, &fuse.FsyncIn{InHeader: in.InHeader, Fh: in.Fh, FsyncFlags: 1})
}

// slogWriter sends go-fuse's log lines to slog.
type slogWriter struct{ log *slog.Logger }

func (w *slogWriter) Write(p []byte) (int, error) {
	w.log.Debug("go-fuse: " + string(p))
	return len(p), nil
}

// UnmountStale lazily unmounts every faultfs mount of this mount
// namespace whose server is gone (a test process that died before its
// cleanup): such a mount answers ENOTCONN and would stay in the mount
// table. It returns the mount points it removed.
func UnmountStale() ([]string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("faultfs: %w", err)
	}
	var gone []string
	var errs []error
	for _, line := range strings.Split(string(b), "\n") {
		// "... mountpoint options ... - fstype source superopts"
		pre, post, ok := strings.Cut(line, " - ")
		fields, postFields := strings.Fields(pre), strings.Fields(post)
		if !ok || len(fields) < 5 || len(postFields) < 1 || postFields[0] != "fuse.faultfs" {
			continue
		}
		mnt := unescapeMountinfo(fields[4])
		var st unix.Stat_t
		if err := unix.Stat(mnt, &st); err != unix.ENOTCONN {
			continue
		}
		if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
			errs = append(errs, fmt.Errorf("faultfs: unmount stale %s: %w", mnt, err))
			continue
		}
		gone = append(gone, mnt)
	}
	return gone, errors.Join(errs...)
}

// unescapeMountinfo undoes mountinfo's octal escapes (\040 for a space).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%o", &v); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
