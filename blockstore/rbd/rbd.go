//go:build ceph

package rbd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ceph/go-ceph/rados"
	librbd "github.com/ceph/go-ceph/rbd"

	"github.com/tandemhci/tandem/blockstore"
	"github.com/tandemhci/tandem/blockstore/rangelock"
)

// Built reports whether this binary has Ceph support (the "ceph" tag).
const Built = true

// DefaultFeatures are Ceph's default image features: layering,
// exclusive-lock, object-map, fast-diff and deep-flatten. They are set
// explicitly so that no client configuration changes them.
const DefaultFeatures = librbd.FeatureLayering | librbd.FeatureExclusiveLock |
	librbd.FeatureObjectMap | librbd.FeatureFastDiff | librbd.FeatureDeepFlatten

// withDefaults fills in the default timeouts.
func (c Config) withDefaults() Config {
	if c.MonTimeout == 0 {
		c.MonTimeout = DefaultMonTimeout
	}
	if c.OSDTimeout == 0 {
		c.OSDTimeout = DefaultOSDTimeout
	}
	c.Key = strings.TrimSpace(c.Key)
	return c
}

// connect opens a rados connection for cfg, bounded by its timeouts.
func connect(ctx context.Context, cfg Config) (*rados.Conn, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	conn, err := rados.NewConnWithUser(cfg.Client)
	if err != nil {
		return nil, fmt.Errorf("ceph client %s: %w", cfg, err)
	}
	secs := func(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) }
	opts := [][2]string{
		{"mon_host", cfg.MonHost},
		{"key", cfg.Key},
		// No keyring search: the key above is the only credential, and
		// a stray /etc/ceph keyring must not stand in for it.
		{"keyring", "/dev/null"},
		{"client_mount_timeout", secs(cfg.MonTimeout)},
		{"rados_mon_op_timeout", secs(cfg.MonTimeout)},
		{"rados_osd_op_timeout", secs(cfg.OSDTimeout)},
		// A write is durable when acknowledged: the NBD export's
		// FLUSH/FUA map onto it without a client-side cache in between.
		{"rbd_cache", "false"},
		// A discard must make the range read as zeroes, as Trim promises;
		// by default librbd skips the parts of a discard that do not
		// cover whole objects.
		{"rbd_skip_partial_discard", "false"},
		// Takeover blocklists the old owner itself, with its own expiry,
		// before breaking the lock; librbd's break must not add (and so
		// shorten) an entry of its own.
		{"rbd_blocklist_on_break_lock", "false"},
		{"log_to_stderr", "false"},
		{"err_to_stderr", "false"},
	}
	for _, o := range opts {
		if err := conn.SetConfigOption(o[0], o[1]); err != nil {
			conn.Shutdown()
			if o[0] == "key" {
				return nil, fmt.Errorf("ceph client %s: %w: the cephx key is not a valid Ceph key", cfg, ErrInvalid)
			}
			return nil, fmt.Errorf("ceph client %s: option %s=%q: %w: %w", cfg, o[0], o[1], ErrInvalid, err)
		}
	}
	if err := conn.Connect(); err != nil {
		conn.Shutdown()
		return nil, fmt.Errorf("connecting to the Ceph monitors %s as client.%s: %w", cfg.MonHost, cfg.Client, classifyConnect(err, cfg.MonTimeout))
	}
	return conn, nil
}

// openPool opens the pool's I/O context on conn.
func openPool(conn *rados.Conn, cfg Config) (*rados.IOContext, error) {
	ioctx, err := conn.OpenIOContext(cfg.Pool)
	if err != nil {
		if errno(err) == syscall.ENOENT {
			return nil, fmt.Errorf("ceph pool %q: %w (create it with 'ceph osd pool create %s' and 'rbd pool init %s')", cfg.Pool, ErrNoPool, cfg.Pool, cfg.Pool)
		}
		return nil, fmt.Errorf("ceph pool %q: %w", cfg.Pool, classify(err))
	}
	return ioctx, nil
}

// Pool is an administrative connection to one pool: it creates, lists,
// resizes and removes images and manages the OSD blocklist. It is safe
// for concurrent use.
type Pool struct {
	cfg   Config
	conn  *rados.Conn
	ioctx *rados.IOContext

	mu     sync.RWMutex // held for reading by calls, for writing by Close
	closed bool
}

// Connect connects to cfg's monitors and opens its pool. Errors wrap
// ErrInvalid, ErrUnavailable, ErrAuth or ErrNoPool.
func Connect(ctx context.Context, cfg Config) (*Pool, error) {
	conn, err := connect(ctx, cfg)
	if err != nil {
		return nil, err
	}
	ioctx, err := openPool(conn, cfg)
	if err != nil {
		conn.Shutdown()
		return nil, err
	}
	return &Pool{cfg: cfg.withDefaults(), conn: conn, ioctx: ioctx}, nil
}

// Close closes the connection. It is idempotent.
func (p *Pool) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	p.ioctx.Destroy()
	p.conn.Shutdown()
	return nil
}

// use runs f unless the pool is closed or ctx has ended. The Ceph calls
// themselves cannot be cancelled: the configured timeouts bound them.
func (p *Pool) use(ctx context.Context, f func() error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return blockstore.ErrClosed
	}
	return f()
}

// Create makes an image of size bytes with DefaultFeatures. It first
// checks that the pool could hold it (ErrNoSpace otherwise); if a step
// after the image exists fails, the image is removed again, so a failed
// Create leaves no half-made image.
func (p *Pool) Create(ctx context.Context, name string, size int64) error {
	if err := ImageName(name); err != nil {
		return err
	}
	if err := ImageSize(size); err != nil {
		return err
	}
	return p.use(ctx, func() error {
		avail, err := p.maxAvail()
		if err != nil {
			return fmt.Errorf("create RBD image %s/%s: %w", p.cfg.Pool, name, err)
		}
		if size > avail {
			return fmt.Errorf("create RBD image %s/%s of %d bytes: %w: the pool can hold %d more bytes at its replication", p.cfg.Pool, name, size, ErrNoSpace, avail)
		}
		opts := librbd.NewRbdImageOptions()
		defer opts.Destroy()
		if err := opts.SetUint64(librbd.ImageOptionFeatures, DefaultFeatures); err != nil {
			return fmt.Errorf("create RBD image %s/%s: features: %w", p.cfg.Pool, name, err)
		}
		if err := librbd.CreateImage(p.ioctx, name, uint64(size), opts); err != nil {
			if errno(err) == syscall.EEXIST {
				return fmt.Errorf("create RBD image %s/%s: %w", p.cfg.Pool, name, ErrExists)
			}
			return fmt.Errorf("create RBD image %s/%s: %w", p.cfg.Pool, name, classify(err))
		}
		// Check what was made: an image without the exclusive lock would
		// let two writers in, so it must not stay behind.
		if err := p.checkImage(name, size); err != nil {
			if rerr := librbd.RemoveImage(p.ioctx, name); rerr != nil {
				err = errors.Join(err, fmt.Errorf("removing the half-made image: %w", classify(rerr)))
			}
			return fmt.Errorf("create RBD image %s/%s: %w", p.cfg.Pool, name, err)
		}
		return nil
	})
}

// checkImage verifies a fresh image's size and features.
func (p *Pool) checkImage(name string, size int64) error {
	img, err := librbd.OpenImageReadOnly(p.ioctx, name, librbd.NoSnapshot)
	if err != nil {
		return classify(err)
	}
	defer img.Close()
	got, err := img.GetSize()
	if err != nil {
		return classify(err)
	}
	feat, err := img.GetFeatures()
	if err != nil {
		return classify(err)
	}
	if int64(got) != size || feat&DefaultFeatures != DefaultFeatures {
		return fmt.Errorf("made an image of %d bytes with features %#x, want %d bytes and %#x", got, feat, size, DefaultFeatures)
	}
	return nil
}

// maxAvail is the pool's MAX AVAIL from `ceph df`: what it can still hold
// at its replication, before the full ratio.
func (p *Pool) maxAvail() (int64, error) {
	// A monitor command: with the monitors down it fails (within
	// MonTimeout) like every other administrative call.
	out, err := command(p.conn, []byte(`{"prefix":"df","format":"json"}`))
	if err != nil {
		return 0, fmt.Errorf("pool capacity: %w", err)
	}
	var df struct {
		Pools []struct {
			Name  string `json:"name"`
			Stats struct {
				MaxAvail int64 `json:"max_avail"`
			} `json:"stats"`
		} `json:"pools"`
	}
	if err := json.Unmarshal(out, &df); err != nil {
		return 0, fmt.Errorf("pool capacity: decoding ceph df: %w", err)
	}
	for _, pl := range df.Pools {
		if pl.Name == p.cfg.Pool {
			return pl.Stats.MaxAvail, nil
		}
	}
	return 0, fmt.Errorf("pool capacity: %w: %q is not in ceph df", ErrNoPool, p.cfg.Pool)
}

// command sends a monitor command and returns its output; errors carry
// Ceph's message.
func command(conn *rados.Conn, cmd []byte) ([]byte, error) {
	out, info, err := conn.MonCommand(cmd)
	if err != nil {
		if info = strings.TrimSpace(info); info != "" {
			return nil, fmt.Errorf("%w (%s)", classify(err), info)
		}
		return nil, classify(err)
	}
	return out, nil
}

// Remove deletes an image. An image still open somewhere fails with
// ErrBusy; a missing one with ErrNotFound.
func (p *Pool) Remove(ctx context.Context, name string) error {
	if err := ImageName(name); err != nil {
		return err
	}
	return p.use(ctx, func() error {
		if err := librbd.RemoveImage(p.ioctx, name); err != nil {
			return fmt.Errorf("remove RBD image %s/%s: %w", p.cfg.Pool, name, imageErr(err))
		}
		return nil
	})
}

// List returns the pool's image names.
func (p *Pool) List(ctx context.Context) ([]string, error) {
	var names []string
	err := p.use(ctx, func() error {
		n, err := librbd.GetImageNames(p.ioctx)
		if err != nil {
			return fmt.Errorf("list RBD images in %s: %w", p.cfg.Pool, classify(err))
		}
		names = n
		return nil
	})
	return names, err
}

// Resize sets an image's size; shrinking discards the data past the new
// end.
func (p *Pool) Resize(ctx context.Context, name string, size int64) error {
	if err := ImageName(name); err != nil {
		return err
	}
	if err := ImageSize(size); err != nil {
		return err
	}
	return p.use(ctx, func() error {
		img, err := librbd.OpenImage(p.ioctx, name, librbd.NoSnapshot)
		if err != nil {
			return fmt.Errorf("resize RBD image %s/%s: %w", p.cfg.Pool, name, imageErr(err))
		}
		defer img.Close()
		if err := img.Resize(uint64(size)); err != nil {
			return fmt.Errorf("resize RBD image %s/%s: %w", p.cfg.Pool, name, classify(err))
		}
		return nil
	})
}

// Stat describes an image: size, features, watchers and lock owner.
func (p *Pool) Stat(ctx context.Context, name string) (Info, error) {
	if err := ImageName(name); err != nil {
		return Info{}, err
	}
	var info Info
	err := p.use(ctx, func() error {
		img, err := librbd.OpenImageReadOnly(p.ioctx, name, librbd.NoSnapshot)
		if err != nil {
			return fmt.Errorf("stat RBD image %s/%s: %w", p.cfg.Pool, name, imageErr(err))
		}
		defer img.Close()
		info, err = describe(p.ioctx, img, name)
		if err != nil {
			return fmt.Errorf("stat RBD image %s/%s: %w", p.cfg.Pool, name, err)
		}
		return nil
	})
	return info, err
}

func describe(io *rados.IOContext, img *librbd.Image, name string) (Info, error) {
	info := Info{Name: name}
	size, err := img.GetSize()
	if err != nil {
		return info, classify(err)
	}
	info.Size = int64(size)
	if info.Features, err = img.GetFeatures(); err != nil {
		return info, classify(err)
	}
	ws, err := img.ListWatchers()
	if err != nil {
		return info, fmt.Errorf("watchers: %w", classify(err))
	}
	for _, w := range ws {
		info.Watchers = append(info.Watchers, Watcher{Addr: w.Addr, ID: w.Id, Cookie: w.Cookie})
	}
	if info.LockOwners, err = lockers(io, img); err != nil {
		return info, err
	}
	return info, nil
}

// lockers lists the holders of the exclusive lock, read live from the
// image header: librbd's managed lock is the cls lock "rbd_lock" on
// rbd_header.<id>. (librbd's own rbd_list_lockers answers from the
// handle's cached header, which is stale once the lock changed hands.)
func lockers(io *rados.IOContext, img *librbd.Image) ([]Locker, error) {
	id, err := img.GetId()
	if err != nil {
		return nil, fmt.Errorf("lock owners: image id: %w", classify(err))
	}
	li, err := io.ListLockers("rbd_header."+id, "rbd_lock")
	if err != nil {
		if errno(err) == syscall.ENOENT {
			return nil, nil
		}
		return nil, fmt.Errorf("lock owners: %w", classify(err))
	}
	n := min(li.NumLockers, len(li.Clients), len(li.Cookies), len(li.Addrs))
	out := make([]Locker, 0, n)
	for i := range n {
		out = append(out, Locker{Client: li.Clients[i], Cookie: li.Cookies[i], Addr: plainAddr(li.Addrs[i])})
	}
	return out, nil
}

// plainAddr drops the messenger type ("v1:127.0.0.1:0/123") that the
// lockers carry, so an address reads as the watchers, the blocklist and
// the client itself show it ("127.0.0.1:0/123").
func plainAddr(a string) string {
	for _, p := range []string{"v1:", "v2:", "any:"} {
		if r, ok := strings.CutPrefix(a, p); ok {
			return r
		}
	}
	return a
}

// Available is the pool's MAX AVAIL: how many bytes it can still hold.
func (p *Pool) Available(ctx context.Context) (int64, error) {
	var n int64
	err := p.use(ctx, func() error {
		var err error
		n, err = p.maxAvail()
		return err
	})
	return n, err
}

// BlocklistAdd blocklists a client address ("10.0.0.5:0/3710147553") on
// every OSD for expiry (DefaultBlocklistExpiry when 0), through a monitor
// command, and returns once this client has the OSD map that holds it:
// from then on no OSD applies a request of that client after one of this
// connection's (Volume.Takeover uses the volume's own connection).
func (p *Pool) BlocklistAdd(ctx context.Context, addr string, expiry time.Duration) error {
	return p.use(ctx, func() error { return blocklistAdd(p.conn, addr, expiry) })
}

// BlocklistRemove removes a client address from the blocklist. Removing
// an address that is not listed is not an error.
func (p *Pool) BlocklistRemove(ctx context.Context, addr string) error {
	if err := checkAddr(addr); err != nil {
		return err
	}
	return p.use(ctx, func() error {
		cmd, _ := json.Marshal(map[string]any{"prefix": "osd blocklist", "blocklistop": "rm", "addr": addr})
		if _, err := command(p.conn, cmd); err != nil {
			return fmt.Errorf("remove %s from the Ceph blocklist: %w", addr, err)
		}
		return nil
	})
}

// Blocklist lists the blocklisted addresses.
func (p *Pool) Blocklist(ctx context.Context) ([]string, error) {
	var addrs []string
	err := p.use(ctx, func() error {
		out, err := command(p.conn, []byte(`{"prefix":"osd blocklist ls","format":"json"}`))
		if err != nil {
			return fmt.Errorf("list the Ceph blocklist: %w", err)
		}
		var ls []struct {
			Addr string `json:"addr"`
		}
		// Pacific prints the address entries, then the range entries
		// as a second array: read the first.
		if err := json.NewDecoder(bytes.NewReader(out)).Decode(&ls); err != nil {
			return fmt.Errorf("list the Ceph blocklist: decoding %q: %w", out, err)
		}
		for _, l := range ls {
			addrs = append(addrs, l.Addr)
		}
		return nil
	})
	return addrs, err
}

func checkAddr(addr string) error {
	if addr == "" || strings.ContainsAny(addr, " \t\n\"") || !strings.Contains(addr, ":") {
		return fmt.Errorf("%w: %q is not a Ceph client address (IP:port/nonce)", ErrInvalid, addr)
	}
	return nil
}

func blocklistAdd(conn *rados.Conn, addr string, expiry time.Duration) error {
	if err := checkAddr(addr); err != nil {
		return err
	}
	if expiry <= 0 {
		expiry = DefaultBlocklistExpiry
	}
	// The monitor wants expire as a JSON real: 3600 (an integer) is
	// refused, 3600.0 is taken.
	secs := json.Number(strconv.FormatFloat(expiry.Seconds(), 'f', 1, 64))
	cmd, _ := json.Marshal(map[string]any{"prefix": "osd blocklist", "blocklistop": "add", "addr": addr, "expire": secs})
	if _, err := command(conn, cmd); err != nil {
		return fmt.Errorf("blocklist %s in Ceph: %w", addr, err)
	}
	// The OSDs refuse the address once they have this OSD map epoch; a
	// request of ours carries our epoch, so after this wait none of our
	// later requests can reach an OSD that still accepts the old client.
	if err := conn.WaitForLatestOSDMap(); err != nil {
		return fmt.Errorf("blocklist %s in Ceph: waiting for the OSD map: %w", addr, classify(err))
	}
	return nil
}

// Volume is an open RBD image, a blockstore.Volume. It has its own rados
// connection, so a blocklist entry for its address fences exactly this
// opener. Safe for concurrent use.
type Volume struct {
	cfg  Config
	name string
	conn *rados.Conn
	io   *rados.IOContext
	img  *librbd.Image
	ro   bool
	addr string // the connection's address and global id, kept for
	id   uint64 // after Close (librados must not be asked then)

	// locks orders overlapping writes in the order their calls began
	// (the Volume contract); librbd alone does not promise it for
	// concurrent synchronous calls.
	locks rangelock.Lock[struct{}]

	mu     sync.RWMutex // read: I/O and queries; write: Close and Resize
	size   int64
	closed bool
}

var _ blockstore.Volume = (*Volume)(nil)

// Open opens an image with a connection of its own. Errors wrap
// ErrInvalid, ErrUnavailable, ErrAuth, ErrNoPool, ErrNotFound or, with
// Exclusive, ErrLockHeld.
func Open(ctx context.Context, cfg Config, name string, o OpenOptions) (_ *Volume, err error) {
	if err := ImageName(name); err != nil {
		return nil, err
	}
	conn, err := connect(ctx, cfg)
	if err != nil {
		return nil, err
	}
	v := &Volume{cfg: cfg.withDefaults(), name: name, conn: conn, ro: o.ReadOnly}
	defer func() {
		if err != nil {
			v.release()
		}
	}()
	if v.io, err = openPool(conn, cfg); err != nil {
		return nil, err
	}
	if o.ReadOnly {
		v.img, err = librbd.OpenImageReadOnly(v.io, name, librbd.NoSnapshot)
	} else {
		v.img, err = librbd.OpenImage(v.io, name, librbd.NoSnapshot)
	}
	if err != nil {
		return nil, fmt.Errorf("open RBD image %s/%s: %w", cfg.Pool, name, imageErr(err))
	}
	size, err := v.img.GetSize()
	if err != nil {
		return nil, fmt.Errorf("open RBD image %s/%s: size: %w", cfg.Pool, name, classify(err))
	}
	v.size = int64(size)
	if v.addr, err = conn.GetAddrs(); err != nil {
		return nil, fmt.Errorf("open RBD image %s/%s: client address: %w", cfg.Pool, name, classify(err))
	}
	v.id = conn.GetInstanceID()
	if o.Exclusive && !o.ReadOnly {
		if err := v.acquire(); err != nil {
			return nil, err
		}
	}
	return v, nil
}

// release frees what Open made so far.
func (v *Volume) release() {
	if v.img != nil {
		_ = v.img.Close()
	}
	if v.io != nil {
		v.io.Destroy()
	}
	v.conn.Shutdown()
}

// Name is the image's name.
func (v *Volume) Name() string { return v.name }

// ClientAddr is this opener's entity address, as blocklists and lockers
// show it ("127.0.0.1:0/3710147553").
func (v *Volume) ClientAddr() string { return v.addr }

// ClientID is this opener's global id ("client.ID").
func (v *Volume) ClientID() uint64 { return v.id }

// use runs f under the read lock unless the volume is closed or ctx ended.
func (v *Volume) use(ctx context.Context, f func() error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	v.mu.RLock()
	defer v.mu.RUnlock()
	if v.closed {
		return blockstore.ErrClosed
	}
	return f()
}

// Size is the image's size as last seen by this opener.
func (v *Volume) Size() int64 {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.size
}

// ReadAt reads len(p) bytes at off.
func (v *Volume) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	var n int
	err := v.use(ctx, func() error {
		if err := blockstore.CheckRange(v.size, off, int64(len(p))); err != nil {
			return err
		}
		for n < len(p) {
			m, err := v.img.ReadAt(p[n:], off+int64(n))
			n += m
			if err != nil {
				return fmt.Errorf("read RBD image %s/%s at %d: %w", v.cfg.Pool, v.name, off+int64(n), classify(err))
			}
			if m == 0 {
				return fmt.Errorf("read RBD image %s/%s at %d: short read", v.cfg.Pool, v.name, off+int64(n))
			}
		}
		return nil
	})
	return n, err
}

// WriteAt writes p at off; with FUA it is flushed before returning.
func (v *Volume) WriteAt(ctx context.Context, p []byte, off int64, flags blockstore.WriteFlags) (int, error) {
	var n int
	err := v.write(ctx, off, int64(len(p)), flags, func() error {
		for n < len(p) {
			m, err := v.img.WriteAt(p[n:], off+int64(n))
			n += m
			if err != nil {
				return fmt.Errorf("write RBD image %s/%s at %d: %w", v.cfg.Pool, v.name, off+int64(n), classify(err))
			}
			if m == 0 {
				return fmt.Errorf("write RBD image %s/%s at %d: short write", v.cfg.Pool, v.name, off+int64(n))
			}
		}
		return nil
	})
	return n, err
}

// write runs a modifying request under the range lock and flushes it for
// FUA.
func (v *Volume) write(ctx context.Context, off, length int64, flags blockstore.WriteFlags, f func() error) error {
	return v.use(ctx, func() error {
		if v.ro {
			return blockstore.ErrReadOnly
		}
		if err := blockstore.CheckRange(v.size, off, length); err != nil {
			return err
		}
		lk, err := v.locks.Acquire(ctx, off, off+length, 0, struct{}{})
		if err != nil {
			return err
		}
		defer v.locks.Release(lk)
		if err := f(); err != nil {
			return err
		}
		if flags&blockstore.FUA != 0 {
			if err := v.img.Flush(); err != nil {
				return fmt.Errorf("flush RBD image %s/%s: %w", v.cfg.Pool, v.name, classify(err))
			}
		}
		return nil
	})
}

// Flush makes every completed write durable. librbd's cache is off, so
// writes are already on every replica when acknowledged; the flush still
// reaches librbd, which also reports a client blocklisted since.
func (v *Volume) Flush(ctx context.Context) error {
	return v.use(ctx, func() error {
		if err := v.img.Flush(); err != nil {
			return fmt.Errorf("flush RBD image %s/%s: %w", v.cfg.Pool, v.name, classify(err))
		}
		return nil
	})
}

// Trim discards a range; it reads back as zeroes.
func (v *Volume) Trim(ctx context.Context, off, length int64) error {
	return v.write(ctx, off, length, 0, func() error {
		if length == 0 {
			return nil
		}
		if _, err := v.img.Discard(uint64(off), uint64(length)); err != nil {
			return fmt.Errorf("discard RBD image %s/%s at %d+%d: %w", v.cfg.Pool, v.name, off, length, classify(err))
		}
		return nil
	})
}

// zeroChunk bounds one write of zeroes for WriteZeroes with NoHole.
const zeroChunk = 1 << 20

// WriteZeroes zeroes a range: a discard (which RBD turns into holes or
// zeroed extents) unless NoHole asks for allocated zeroes.
func (v *Volume) WriteZeroes(ctx context.Context, off, length int64, flags blockstore.WriteFlags) error {
	return v.write(ctx, off, length, flags, func() error {
		if length == 0 {
			return nil
		}
		if flags&blockstore.NoHole == 0 {
			if _, err := v.img.Discard(uint64(off), uint64(length)); err != nil {
				return fmt.Errorf("zero RBD image %s/%s at %d+%d: %w", v.cfg.Pool, v.name, off, length, classify(err))
			}
			return nil
		}
		zero := make([]byte, min(length, zeroChunk))
		for done := int64(0); done < length; {
			n := min(length-done, zeroChunk)
			if _, err := v.img.WriteAt(zero[:n], off+done); err != nil {
				return fmt.Errorf("zero RBD image %s/%s at %d: %w", v.cfg.Pool, v.name, off+done, classify(err))
			}
			done += n
		}
		return nil
	})
}

// Resize sets the image's size; shrinking discards the data past the new
// end. It waits for in-flight requests of this opener.
func (v *Volume) Resize(ctx context.Context, size int64) error {
	if err := ImageSize(size); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		return blockstore.ErrClosed
	}
	if v.ro {
		return blockstore.ErrReadOnly
	}
	if err := v.img.Resize(uint64(size)); err != nil {
		return fmt.Errorf("resize RBD image %s/%s to %d bytes: %w", v.cfg.Pool, v.name, size, classify(err))
	}
	v.size = size
	return nil
}

// Info describes the image as Pool.Stat does.
func (v *Volume) Info(ctx context.Context) (Info, error) {
	var info Info
	err := v.use(ctx, func() error {
		var err error
		info, err = describe(v.io, v.img, v.name)
		if err != nil {
			return fmt.Errorf("stat RBD image %s/%s: %w", v.cfg.Pool, v.name, err)
		}
		return nil
	})
	return info, err
}

// Acquire takes the image's exclusive lock and keeps it until Close or
// Release. It fails with ErrLockHeld while another client holds it.
func (v *Volume) Acquire(ctx context.Context) error {
	return v.use(ctx, v.acquire)
}

func (v *Volume) acquire() error {
	if v.ro {
		return blockstore.ErrReadOnly
	}
	if err := v.img.LockAcquire(librbd.LockModeExclusive); err != nil {
		if errno(err) == syscall.EROFS || errno(err) == syscall.EBUSY {
			return fmt.Errorf("acquire the exclusive lock of RBD image %s/%s: %w", v.cfg.Pool, v.name, ErrLockHeld)
		}
		return fmt.Errorf("acquire the exclusive lock of RBD image %s/%s: %w", v.cfg.Pool, v.name, classify(err))
	}
	return nil
}

// Release gives the exclusive lock up.
func (v *Volume) Release(ctx context.Context) error {
	return v.use(ctx, func() error {
		if err := v.img.LockRelease(); err != nil {
			return fmt.Errorf("release the exclusive lock of RBD image %s/%s: %w", v.cfg.Pool, v.name, classify(err))
		}
		return nil
	})
}

// IsLockOwner reports whether this opener holds the exclusive lock.
func (v *Volume) IsLockOwner(ctx context.Context) (bool, error) {
	var own bool
	err := v.use(ctx, func() error {
		var err error
		if own, err = v.img.LockIsExclusiveOwner(); err != nil {
			return fmt.Errorf("lock owner of RBD image %s/%s: %w", v.cfg.Pool, v.name, classify(err))
		}
		return nil
	})
	return own, err
}

// Takeover makes this opener the image's single writer when another
// client holds the lock and may be alive (a node taking a volume over).
// The order is the fence: 1. every current lock owner's address is
// blocklisted (expiry as in BlocklistAdd) and this client waits for the
// OSD map holding it, so no request of the old owner is applied after
// one of this opener's (see the package doc); 2. the old owner's lock is
// broken; 3. this opener acquires
// the lock. record, when not nil, gets the addresses about to be
// blocklisted before any is, so the caller can keep them where they
// outlive this process; if it fails nothing is blocklisted. Takeover
// returns the blocklisted addresses, to be removed (BlocklistRemove)
// only once their node provably dropped the client. With no owner it
// just acquires.
func (v *Volume) Takeover(ctx context.Context, expiry time.Duration, record func([]string) error) ([]string, error) {
	return v.takeover(ctx, expiry, false, record)
}

// TakeoverAll is Takeover that also blocklists every other watcher of the
// image first, lock owner or not: a VM's QEMU (librbd's cooperative
// lock) that does not hold the lock right now could otherwise ask the new
// owner's QEMU for it later and write again.
func (v *Volume) TakeoverAll(ctx context.Context, expiry time.Duration, record func([]string) error) ([]string, error) {
	return v.takeover(ctx, expiry, true, record)
}

func (v *Volume) takeover(ctx context.Context, expiry time.Duration, watchers bool, record func([]string) error) ([]string, error) {
	var fenced []string
	err := v.use(ctx, func() error {
		if v.ro {
			return blockstore.ErrReadOnly
		}
		owners, err := lockers(v.io, v.img)
		if err != nil {
			return fmt.Errorf("take RBD image %s/%s over: %w", v.cfg.Pool, v.name, err)
		}
		addrs := make([]string, 0, len(owners))
		for _, o := range owners {
			addrs = append(addrs, o.Addr)
		}
		if watchers {
			ws, err := v.img.ListWatchers()
			if err != nil {
				return fmt.Errorf("take RBD image %s/%s over: watchers: %w", v.cfg.Pool, v.name, classify(err))
			}
			for _, w := range ws {
				if a := plainAddr(w.Addr); !slices.Contains(addrs, a) {
					addrs = append(addrs, a)
				}
			}
		}
		addrs = slices.DeleteFunc(addrs, func(a string) bool { return a == v.addr || a == "" }) // ours already
		if record != nil && len(addrs) > 0 {
			if err := record(addrs); err != nil {
				return fmt.Errorf("take RBD image %s/%s over: record the clients to blocklist: %w", v.cfg.Pool, v.name, err)
			}
		}
		for _, a := range addrs {
			if err := blocklistAdd(v.conn, a, expiry); err != nil {
				return fmt.Errorf("take RBD image %s/%s over from %s: %w", v.cfg.Pool, v.name, a, err)
			}
			fenced = append(fenced, a)
		}
		// Only after every owner is fenced is its lock broken.
		lo, err := v.img.LockGetOwners()
		if err != nil && errno(err) != syscall.ENOENT {
			return fmt.Errorf("take RBD image %s/%s over: lock owners: %w", v.cfg.Pool, v.name, classify(err))
		}
		for _, o := range lo {
			if err := v.img.LockBreak(o.Mode, o.Owner); err != nil && errno(err) != syscall.ENOENT {
				return fmt.Errorf("take RBD image %s/%s over: break the lock of %s: %w", v.cfg.Pool, v.name, o.Owner, classify(err))
			}
		}
		return v.acquire()
	})
	return fenced, err
}

// Close releases the lock (if held), closes the image and the connection.
// It is idempotent.
func (v *Volume) Close() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		return nil
	}
	v.closed = true
	err := v.img.Close()
	v.img = nil
	v.release()
	if err != nil {
		return fmt.Errorf("close RBD image %s/%s: %w", v.cfg.Pool, v.name, classify(err))
	}
	return nil
}

// errno extracts Ceph's error number from a go-ceph error (0 if none).
func errno(err error) syscall.Errno {
	var ec interface{ ErrorCode() int }
	if errors.As(err, &ec) {
		c := ec.ErrorCode()
		if c < 0 {
			c = -c
		}
		return syscall.Errno(c)
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return 0
}

// eBlocklisted is Ceph's EBLOCKLISTED (ESHUTDOWN on Linux).
const eBlocklisted = syscall.ESHUTDOWN

// classify wraps a Ceph error with the package error for its cause, and
// keeps Ceph's own error (and errno) in the chain.
func classify(err error) error {
	switch errno(err) {
	case eBlocklisted:
		return fmt.Errorf("%w: %w", ErrBlocklisted, err)
	case syscall.ETIMEDOUT:
		return fmt.Errorf("%w: no answer within the configured timeout: %w", ErrUnavailable, err)
	case syscall.EACCES, syscall.EPERM:
		return fmt.Errorf("%w: %w", ErrAuth, err)
	case syscall.EROFS:
		return fmt.Errorf("%w: %w: %w", ErrLockHeld, blockstore.ErrReadOnly, err)
	case syscall.ENOSPC, syscall.EDQUOT:
		return fmt.Errorf("%w: %w", ErrNoSpace, err)
	}
	return err
}

// imageErr is classify plus the image-level meanings of ENOENT and EBUSY.
func imageErr(err error) error {
	switch errno(err) {
	case syscall.ENOENT:
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	case syscall.EBUSY:
		return fmt.Errorf("%w (it still has watchers: close it everywhere first): %w", ErrBusy, err)
	}
	return classify(err)
}

// classifyConnect explains a failed connect.
func classifyConnect(err error, timeout time.Duration) error {
	switch errno(err) {
	case syscall.ETIMEDOUT, syscall.ECONNREFUSED, syscall.EHOSTUNREACH, syscall.ENETUNREACH:
		return fmt.Errorf("%w: no monitor answered within %v: %w", ErrUnavailable, timeout, err)
	case syscall.EACCES, syscall.EPERM:
		return fmt.Errorf("%w (wrong cephx key or unknown client name): %w", ErrAuth, err)
	case syscall.ENOENT, syscall.EINVAL:
		return fmt.Errorf("%w: the monitor address cannot be parsed or resolved: %w", ErrInvalid, err)
	}
	return classify(err)
}
