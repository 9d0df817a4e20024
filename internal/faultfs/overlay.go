package faultfs

import (
	"io"
	"slices"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// pageSize is the unit in which unsynced data is kept.
const pageSize = 4096

// dirtyFile is the unsynced data of one backing file (the "volatile
// cache"): whole pages holding the backing file's durable bytes with the
// unsynced writes applied on top. The backing file holds only what was
// synced. mu orders every access to the pages with the backing file's
// I/O, so a sync never interleaves with a write to the same file.
type dirtyFile struct {
	ino   uint64
	total *atomic.Int64 // the mount's unsynced bytes, all files
	refs  int           // open handles and operations using it; FS.mu

	// mu: readers share it, writers, syncs and drops hold it alone.
	mu    sync.RWMutex
	pages map[int64][]byte // page index → pageSize bytes
	// end is the end of the furthest unsynced write: the file's size is
	// max(backing size, end).
	end int64
}

// size returns the file's size as readers see it, fd being the backing file.
func (d *dirtyFile) size(fd int) (int64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, err
	}
	return max(st.Size, d.end), nil
}

func (d *dirtyFile) dirtyBytes() int64 { return int64(len(d.pages)) * pageSize }

// page returns page idx, loading it from the backing file (zeroes past
// its end) the first time unless the caller overwrites all of it. Caller
// holds mu.
func (d *dirtyFile) page(fd int, idx int64, whole bool) ([]byte, error) {
	if p, ok := d.pages[idx]; ok {
		return p, nil
	}
	p := make([]byte, pageSize)
	if !whole {
		if err := preadFull(fd, p, idx*pageSize); err != nil {
			return nil, err
		}
	}
	if d.pages == nil {
		d.pages = map[int64][]byte{}
	}
	d.pages[idx] = p
	d.total.Add(pageSize)
	return p, nil
}

// write applies data at off to the pages. Caller holds mu.
func (d *dirtyFile) write(fd int, data []byte, off int64) error {
	for done := 0; done < len(data); {
		pos := off + int64(done)
		whole := pos%pageSize == 0 && len(data)-done >= pageSize
		p, err := d.page(fd, pos/pageSize, whole)
		if err != nil {
			return err
		}
		done += copy(p[pos%pageSize:], data[done:])
	}
	d.end = max(d.end, off+int64(len(data)))
	return nil
}

// read fills dest from off: backing data with the pages on top, cut at
// the file's size. It returns the bytes read. Caller holds mu, shared
// is enough.
func (d *dirtyFile) read(fd int, dest []byte, off int64) (int, error) {
	size, err := d.size(fd)
	if err != nil {
		return 0, err
	}
	if off >= size {
		return 0, nil
	}
	dest = dest[:min(int64(len(dest)), size-off)]
	if err := preadFull(fd, dest, off); err != nil {
		return 0, err
	}
	for idx := off / pageSize; idx*pageSize < off+int64(len(dest)); idx++ {
		p, ok := d.pages[idx]
		if !ok {
			continue
		}
		start := idx * pageSize
		lo, hi := max(start, off), min(start+pageSize, off+int64(len(dest)))
		copy(dest[lo-off:hi-off], p[lo-start:hi-start])
	}
	return len(dest), nil
}

// sync writes the pages to the backing file, page by page in offset
// order, and forgets them. Caller holds mu. On error the pages not yet
// written stay unsynced.
func (d *dirtyFile) sync(fd int) error {
	if len(d.pages) == 0 {
		return nil
	}
	size, err := d.size(fd)
	if err != nil {
		return err
	}
	idxs := make([]int64, 0, len(d.pages))
	for idx := range d.pages {
		idxs = append(idxs, idx)
	}
	slices.Sort(idxs)
	for _, idx := range idxs {
		start := idx * pageSize
		n := min(pageSize, size-start)
		if n > 0 {
			if err := pwriteFull(fd, d.pages[idx][:n], start); err != nil {
				return err
			}
		}
		delete(d.pages, idx)
		d.total.Add(-pageSize)
	}
	// A write that only extended the file into a page already synced
	// still sets the size.
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Size < size {
		if err := unix.Ftruncate(fd, size); err != nil {
			return err
		}
	}
	d.end = 0
	return nil
}

// truncate drops unsynced data at and beyond size (the backing file was
// truncated to size, which is immediately durable). Caller holds mu.
func (d *dirtyFile) truncate(size int64) {
	for idx, p := range d.pages {
		start := idx * pageSize
		switch {
		case start >= size:
			delete(d.pages, idx)
			d.total.Add(-pageSize)
		case start+pageSize > size:
			clear(p[size-start:])
		}
	}
	d.end = min(d.end, size)
}

// zero makes [off, off+n) read as zeroes in the pages (the backing range
// was punched or zeroed, which is immediately durable). Caller holds mu.
func (d *dirtyFile) zero(off, n int64) {
	for idx, p := range d.pages {
		start := idx * pageSize
		lo, hi := max(start, off), min(start+pageSize, off+n)
		switch {
		case lo >= hi:
		case lo == start && hi == start+pageSize:
			delete(d.pages, idx)
			d.total.Add(-pageSize)
		default:
			clear(p[lo-start : hi-start])
		}
	}
}

// drop forgets every unsynced write (power loss) and returns the bytes
// dropped. Caller holds mu.
func (d *dirtyFile) drop() int64 {
	n := d.dirtyBytes()
	d.total.Add(-n)
	d.pages = nil
	d.end = 0
	return n
}

func preadFull(fd int, p []byte, off int64) error {
	for done := 0; done < len(p); {
		n, err := unix.Pread(fd, p[done:], off+int64(done))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			clear(p[done:]) // past the end: zeroes
			return nil
		}
		done += n
	}
	return nil
}

func pwriteFull(fd int, p []byte, off int64) error {
	for done := 0; done < len(p); {
		n, err := unix.Pwrite(fd, p[done:], off+int64(done))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return io.ErrShortWrite
		}
		done += n
	}
	return nil
}
