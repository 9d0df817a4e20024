package blockstore

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// patchFile overwrites bytes of a file in place (buffered I/O, then fsync).
func patchFile(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

func readFileAt(t *testing.T, path string, off int64, n int) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}

// makeClosedVolume creates a volume with some state and closes it.
func makeClosedVolume(t *testing.T, size int64, opts CreateOptions) (string, layout) {
	t.Helper()
	v, path := newVolume(t, size, opts)
	ctx := t.Context()
	if err := v.SetEpoch(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if err := v.MarkDirty(ctx, 1, 0, 1); err != nil {
		t.Fatal(err)
	}
	lay := v.lay
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	return path, lay
}

// expectCorrupt opens path, expects ErrCorruptMetadata naming block and
// containing want, and checks that the failed Open changed nothing.
func expectCorrupt(t *testing.T, path, block, want string) {
	t.Helper()
	before := fileHash(t, path)
	v, err := Open(path, OpenOptions{})
	if err == nil {
		v.Close()
		t.Fatalf("Open succeeded on corrupt metadata (%s)", want)
	}
	if !errors.Is(err, ErrCorruptMetadata) {
		t.Fatalf("Open: %v does not wrap ErrCorruptMetadata", err)
	}
	var me *MetadataError
	if !errors.As(err, &me) || me.Block != block {
		t.Fatalf("Open: %v: want a *MetadataError for %q", err, block)
	}
	msg := err.Error()
	for _, s := range []string{block, want, "NOT reinitialised", "tandem volume resync VOLUME --discard NODE", path} {
		if !strings.Contains(msg, s) {
			t.Errorf("error %q does not mention %q", msg, s)
		}
	}
	if fileHash(t, path) != before {
		t.Fatal("the failed Open modified the file")
	}
}

// both returns the offsets of the two superblock copies of a version 2
// layout: the current one (holding seq) first.
func both(lay layout, seq uint64) [2]int64 {
	return [2]int64{lay.sbOff(seq), lay.sbOff(seq + 1)}
}

func TestCorruptSuperblock(t *testing.T) {
	path, lay := makeClosedVolume(t, 1<<20, CreateOptions{}) // seq 2: epoch 3; seq 1: as formatted
	offs := both(lay, 2)
	for _, off := range []int64{0, 20, 112, 200, 4000, 4093} { // magic, UUID, epoch, peer, reserved, CRC
		want := "CRC32C mismatch"
		if off == 0 {
			want = "bad magic"
		}
		// Both copies damaged: refused, nothing changed.
		var saved [2][]byte
		for i, o := range offs {
			saved[i] = readFileAt(t, path, o+off, 1)
			patchFile(t, path, o+off, []byte{saved[i][0] ^ 0x40})
		}
		expectCorrupt(t, path, "superblock", want)
		// Only the older copy damaged: the current state opens.
		patchFile(t, path, offs[0]+off, saved[0])
		v := mustOpen(t, path)
		if e := v.Meta().Epoch; e != 3 {
			t.Fatalf("older copy damaged at +%d: epoch %d, want 3", off, e)
		}
		v.Close()
		patchFile(t, path, offs[1]+off, saved[1])
	}
	mustOpen(t, path).Close()
}

// TestTornSuperblockWrite: a superblock write torn by a crash (the first
// 512-byte sector of the new copy over the old one) falls back to the
// other copy, the state before the interrupted change, and the next change
// repairs it.
func TestTornSuperblockWrite(t *testing.T) {
	path, lay := makeClosedVolume(t, 1<<20, CreateOptions{}) // seq 2, epoch 3
	next := lay.sbOff(3)
	old := readFileAt(t, path, next, blockSize)
	v := mustOpen(t, path)
	if err := v.SetEpoch(t.Context(), 4); err != nil { // seq 3 goes to the other copy
		t.Fatal(err)
	}
	v.Close()
	newer := readFileAt(t, path, next, 512)
	patchFile(t, path, next, old)
	patchFile(t, path, next, newer)

	var logs strings.Builder
	v, err := Open(path, OpenOptions{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatalf("Open after a torn superblock write: %v", err)
	}
	if e := v.Meta().Epoch; e != 3 {
		t.Fatalf("after the torn write: epoch %d, want 3 (the state before it)", e)
	}
	if !strings.Contains(logs.String(), "CRC32C mismatch") || !strings.Contains(logs.String(), "opened from the other") {
		t.Errorf("the fallback was not logged with its reason: %s", logs.String())
	}
	if err := v.SetEpoch(t.Context(), 5); err != nil {
		t.Fatal(err)
	}
	v.Close()
	// Both copies valid again: damaging the older one changes nothing.
	v = mustOpen(t, path)
	if e := v.Meta().Epoch; e != 5 {
		t.Fatalf("after the repair: epoch %d, want 5", e)
	}
	v.Close()
	patchFile(t, path, lay.sbOff(2), make([]byte, 512))
	v = mustOpen(t, path)
	if e := v.Meta().Epoch; e != 5 {
		t.Fatalf("older copy damaged after the repair: epoch %d, want 5", e)
	}
	v.Close()
}

// TestVersion1Volume: a volume with the single superblock of format
// version 1 opens, changes and reopens, and keeps its layout.
func TestVersion1Volume(t *testing.T) {
	dir := directIODir(t)
	path := filepath.Join(dir, "v1.img")
	const size = 1 << 20
	opts := CreateOptions{MaxPeers: 2, Granularity: defaultGran, DiskState: DiskUpToDate}
	regions := int64(size / defaultGran)
	bpp := (regions + bitsPerBlock - 1) / bitsPerBlock
	devSize := size + (2*bpp+1)*blockSize
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL|unix.O_DIRECT, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	d := &osDisk{f: f}
	if err := d.Fallocate(0, 0, devSize); err != nil {
		t.Fatal(err)
	}
	lay := newLayout(formatV1, devSize, size, defaultGran, 2)
	if err := format(d, lay, opts); err != nil {
		t.Fatal(err)
	}
	d.Close()
	v := mustOpen(t, path)
	if v.lay != lay {
		t.Fatalf("layout %+v, want %+v", v.lay, lay)
	}
	if err := v.SetEpoch(t.Context(), 7); err != nil {
		t.Fatal(err)
	}
	if err := v.MarkDirty(t.Context(), 1, 0, 1); err != nil {
		t.Fatal(err)
	}
	v.Close()
	v = mustOpen(t, path)
	defer v.Close()
	if e := v.Meta().Epoch; e != 7 || v.DirtyBytes(1) != defaultGran {
		t.Fatalf("reopened version 1 volume: epoch %d, dirty %d", e, v.DirtyBytes(1))
	}
}

func TestCorruptBitmapBlock(t *testing.T) {
	path, lay := makeClosedVolume(t, 1<<20, CreateOptions{MaxPeers: 3})
	off := lay.bitmapBlockOff(1, 0)
	orig := readFileAt(t, path, off, blockSize)

	patchFile(t, path, off+100, []byte{orig[100] ^ 1})
	expectCorrupt(t, path, "bitmap block 0 of peer slot 1", "CRC32C mismatch")
	patchFile(t, path, off, orig)

	// A block swapped with another peer's: valid CRC, wrong place.
	other := readFileAt(t, path, lay.bitmapBlockOff(2, 0), blockSize)
	patchFile(t, path, off, other)
	expectCorrupt(t, path, "bitmap block 0 of peer slot 1", "misdirected")
	patchFile(t, path, off, orig)

	// A bit set past the last region (the volume has 16 regions).
	bad := append([]byte(nil), orig...)
	bad[8+3] |= 1 // bit 24
	binary.LittleEndian.PutUint32(bad, bitmapCRC(mustUUID(t, path), bad))
	patchFile(t, path, off, bad)
	expectCorrupt(t, path, "bitmap block 0 of peer slot 1", "bit 24 is set but the data area has only 16 regions")
	patchFile(t, path, off, orig)

	// A block from another volume (same layout, different UUID).
	p2, _ := makeClosedVolume(t, 1<<20, CreateOptions{MaxPeers: 3})
	patchFile(t, path, off, readFileAt(t, p2, off, blockSize))
	expectCorrupt(t, path, "bitmap block 0 of peer slot 1", "another volume")
	patchFile(t, path, off, orig)

	v := mustOpen(t, path)
	if v.DirtyBytes(1) != 64<<10 {
		t.Fatalf("restored volume: DirtyBytes = %d", v.DirtyBytes(1))
	}
}

func mustUUID(t *testing.T, path string) [16]byte {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	var id [16]byte
	copy(id[:], readFileAt(t, path, fi.Size()-blockSize+16, 16))
	return id
}

func TestTruncatedVolume(t *testing.T) {
	path, lay := makeClosedVolume(t, 1<<20, CreateOptions{})
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		size int64
		want string
	}{
		{lay.devSize - blockSize, "truncated"},
		{lay.devSize - 100, "not a multiple of 4096"},
		{lay.devSize / 2, "truncated"},
		{100, "too small"},
		{0, "too small"},
		{lay.devSize + blockSize, "truncated or extended"},
	} {
		if err := os.WriteFile(path, orig, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(path, c.size); err != nil {
			t.Fatal(err)
		}
		expectCorrupt(t, path, "superblock", c.want)
	}
}

// TestImpossibleSuperblockValues writes superblocks with a valid CRC but
// values that cannot be right.
func TestImpossibleSuperblockValues(t *testing.T) {
	path, lay := makeClosedVolume(t, 1<<20, CreateOptions{})
	offs := both(lay, 2)
	var orig [2][]byte
	for i, o := range offs {
		orig[i] = readFileAt(t, path, o, blockSize)
	}
	le := binary.LittleEndian
	for _, c := range []struct {
		name  string
		patch func(b []byte)
		want  string
	}{
		{"granularity", func(b []byte) { le.PutUint64(b[56:], 3<<12) }, "impossible bitmap granularity 12288"},
		{"size beyond device", func(b []byte) { le.PutUint64(b[32:], 1<<40) }, "beyond the end"},
		{"size overlapping metadata", func(b []byte) { le.PutUint64(b[32:], uint64(lay.bitmapOff+blockSize)) }, "overlaps the metadata area"},
		{"unaligned size", func(b []byte) { le.PutUint64(b[32:], 1<<20-1) }, "impossible data size"},
		{"max peers", func(b []byte) { le.PutUint32(b[64:], 9) }, "impossible max peers 9"},
		{"bitmap blocks", func(b []byte) { le.PutUint32(b[68:], 5) }, "recorded 5 bitmap blocks per peer"},
		{"bitmap offset", func(b []byte) { le.PutUint64(b[40:], 0) }, "recorded bitmap offset 0"},
		{"device size", func(b []byte) { le.PutUint64(b[48:], 1<<30) }, "does not match the actual size"},
		{"disk state", func(b []byte) { b[72] = 0 }, "impossible disk state 0"},
		{"version", func(b []byte) { le.PutUint32(b[8:], 3) }, "unsupported format version 3"},
		{"peer name length", func(b []byte) { b[peerSlotOff] = 64 }, "impossible name length 64"},
		{"peer beyond max", func(b []byte) { b[peerSlotOff+5*peerSlotSize] = 1 }, "beyond max peers"},
		{"duplicate peers", func(b []byte) {
			copy(b[peerSlotOff:], "\x01a")
			copy(b[peerSlotOff+peerSlotSize:], "\x01a")
		}, "both hold"},
		{"sequence in the wrong copy", func(b []byte) { le.PutUint64(b[120:], le.Uint64(b[120:])+2) }, ""},
	} {
		for i, o := range offs {
			b := append([]byte(nil), orig[i]...)
			c.patch(b)
			if c.want == "" { // swap parities: each copy holds the other's sequence numbers
				le.PutUint64(b[120:], le.Uint64(orig[1-i][120:]))
			}
			le.PutUint32(b[sbCRCOff:], crc32.Checksum(b[:sbCRCOff], crc32.MakeTable(crc32.Castagnoli)))
			patchFile(t, path, o, b)
		}
		want := c.want
		if want == "" {
			want = "a misdirected write"
		}
		t.Run(c.name, func(t *testing.T) { expectCorrupt(t, path, "superblock", want) })
		for i, o := range offs {
			patchFile(t, path, o, orig[i])
		}
	}
	mustOpen(t, path).Close()
}

func TestOpenErrors(t *testing.T) {
	dir := directIODir(t)
	if _, err := Open(filepath.Join(dir, "missing"), OpenOptions{}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	if _, err := Open(dir, OpenOptions{}); err == nil || !strings.Contains(err.Error(), "neither a regular file nor a block device") {
		t.Errorf("directory: %v", err)
	}
	if err := Create(dir, 4096, CreateOptions{}); !errors.Is(err, os.ErrExist) {
		t.Errorf("Create on a directory: %v", err)
	}
	// An all-zero file is not a volume and says so.
	p := filepath.Join(dir, "zero.img")
	if err := os.WriteFile(p, make([]byte, 64<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	expectCorrupt(t, p, "superblock", "all zeroes")
}
