package blockstore

// Growing a file volume online (LocalVolume.Grow) and finishing or undoing
// an interrupted grow when the volume is opened (recoverGrow).
//
// The superblocks sit at the end of the file, so a grow moves them. The
// steps, each durable before the next:
//
//  1. quiesce: no I/O is in flight (the life lock, held to the end), the
//     lazy bitmap blocks and the data are synced;
//  2. write the grow record <path>.grow (old and new file size, old and new
//     data size) and sync it and the directory;
//  3. extend the file with fallocate (the new bytes read as zeroes);
//  4. write the bitmap area of the new layout after max(new size, old file
//     size), so it never overlaps the old metadata: every peer's existing
//     bits at the same positions, the new regions clean (every replica
//     holds zeroes there, or gets them marked when it is written);
//  5. write both superblock copies of the new layout at the new end of the
//     file: the commit point;
//  6. zero the old metadata area where it is now inside the data area, so
//     no byte past the old size reads anything but zeroes;
//  7. remove the grow record and sync the directory.
//
// Open finds a grow record left by a crash and resolves it before reading
// the superblock: when the file has the new size and a valid superblock of
// the new layout is at its end (step 5 completed), it redoes step 6 and
// removes the record (the grow happened); otherwise it truncates the file
// back to the old size, where the old superblocks and bitmaps are
// untouched, and removes the record (the grow did not happen). So a crash
// at any point leaves either the old volume or the new one, never a data
// area reaching over metadata, a superblock whose bitmaps are too short, or
// stale metadata bytes inside the data area.
//
// Devices are not grown: their size is fixed, and the metadata at their end
// would have to move inside the same device.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// growSuffix names the grow record next to a volume file.
const growSuffix = ".grow"

// MaxSize is the largest data area a volume may have: 64 TiB (the volume
// API's limit).
const MaxSize = 64 << 40

// ErrShrink: Grow was asked for a size smaller than the volume's.
var ErrShrink = errors.New("shrinking a volume is not supported")

// growRecord is the grow record's content (JSON).
type growRecord struct {
	OldDev  int64 `json:"old_dev"`
	OldSize int64 `json:"old_size"`
	NewDev  int64 `json:"new_dev"`
	NewSize int64 `json:"new_size"`
}

// growLayout is the layout of a file volume grown from lay to size: the
// bitmap area starts at max(size, old file size), so it never overlaps the
// old metadata.
func growLayout(lay layout, size int64) layout {
	meta := metadataBytes(size, lay.granularity, lay.maxPeers)
	return newLayout(formatVersion, max(size, lay.devSize)+meta, size, lay.granularity, lay.maxPeers)
}

// CheckGrow validates a grow from cur to size bytes without doing it: size
// must be a multiple of 4096, at most MaxSize and not smaller than cur
// (ErrShrink). Equal sizes are valid (nothing to do).
func CheckGrow(cur, size int64) error {
	switch {
	case size <= 0 || size%blockSize != 0:
		return fmt.Errorf("size %d is not a positive multiple of %d bytes", size, blockSize)
	case size > MaxSize:
		return fmt.Errorf("size %d is over the maximum of %d bytes (64 TiB)", size, int64(MaxSize))
	case size < cur:
		return fmt.Errorf("%w: the volume is %d bytes and %d was asked for", ErrShrink, cur, size)
	}
	return nil
}

// growHook, when set (tests only), runs after each numbered step of Grow;
// an error from it stops Grow there, as a crash would (the caller then
// abandons the volume without Close).
type growHook func(step int) error

// Grow enlarges the data area to size bytes, online: I/O waits while it
// runs (a few syncs) and then continues at the new size. The bytes past the
// old size read as zeroes. Every peer bitmap keeps its bits; the new regions
// start clean. It is crash-safe (see above). Growing to the current size
// does nothing; a smaller size fails with ErrShrink and changes nothing.
func (v *LocalVolume) Grow(ctx context.Context, size int64) error {
	return v.grow(ctx, size, nil)
}

func (v *LocalVolume) grow(ctx context.Context, size int64, hook growHook) (err error) {
	if err := ctx.Err(); err != nil {
		return err
	}
	v.life.Lock()
	defer v.life.Unlock()
	switch {
	case v.closed:
		return fmt.Errorf("blockstore: %s: grow: %w", v.path, ErrClosed)
	case v.readOnly:
		return fmt.Errorf("blockstore: %s: grow: %w", v.path, ErrReadOnly)
	}
	if err := CheckGrow(v.lay.size, size); err != nil {
		return fmt.Errorf("blockstore: %s: grow: %w", v.path, err)
	}
	if size == v.lay.size {
		return nil
	}
	if v.device {
		return fmt.Errorf("blockstore: %s: grow: volumes on block devices cannot grow (the device's size is fixed)", v.path)
	}
	if v.lay.version == formatV1 {
		return fmt.Errorf("blockstore: %s: grow: format version 1 volumes cannot grow (recreate the replica with 'tandem volume resync --discard')", v.path)
	}
	if err := v.stickyErr(); err != nil {
		return fmt.Errorf("blockstore: %s: grow: %w", v.path, err)
	}
	step := func(n int) error {
		if hook != nil {
			return hook(n)
		}
		return nil
	}
	fail := func(what string, err error) error {
		return fmt.Errorf("blockstore: %s: grow to %d bytes: %s: %w", v.path, size, what, err)
	}

	// 1. Quiesce: nothing else runs (life is held); make the bitmaps and
	// the data durable, so the copy below starts from the disk's state.
	if err := v.persistLazy(ctx); err != nil {
		return fail("persist bitmaps", err)
	}
	if err := v.datasync(); err != nil {
		return fail("sync", err)
	}
	old := v.lay
	lay := growLayout(old, size)
	if err := step(1); err != nil {
		return err
	}

	// 2. The grow record.
	rec := growRecord{OldDev: old.devSize, OldSize: old.size, NewDev: lay.devSize, NewSize: lay.size}
	if err := writeGrowRecord(v.path, rec); err != nil {
		return fail("write grow record", err)
	}
	if err := step(2); err != nil {
		return err
	}
	undo := func(cause error) error {
		// Nothing is committed before step 5: put the file back.
		if terr := truncateFile(v.path, old.devSize); terr != nil {
			return errors.Join(cause, fmt.Errorf("undo: %w (the grow record stays; the next open finishes the undo)", terr))
		}
		if rerr := removeGrowRecord(v.path); rerr != nil {
			return errors.Join(cause, fmt.Errorf("undo: %w", rerr))
		}
		return cause
	}

	// 3. Extend.
	if err := v.f.Fallocate(0, old.devSize, lay.devSize-old.devSize); err != nil {
		return undo(fail("extend the file", err))
	}
	v.ss.modified()
	if err := step(3); err != nil {
		return err
	}

	// 4. The new bitmap area: the same bits at the same positions.
	v.bm.mu.Lock()
	words := make([][]uint64, len(v.bm.peers))
	for p := range v.bm.peers {
		words[p] = make([]uint64, lay.blocksPerPeer*wordsPerBlock)
		copy(words[p], v.bm.peers[p].words)
	}
	v.bm.mu.Unlock()
	buf := alignedBuf(blockSize)
	for p := range words {
		for i := range lay.blocksPerPeer {
			encodeBitmapBlock(buf, v.uuid, uint32(int64(p)*lay.blocksPerPeer+i), words[p][i*wordsPerBlock:(i+1)*wordsPerBlock])
			if _, err := v.f.WriteAt(buf, lay.bitmapBlockOff(p, i)); err != nil {
				return undo(fail("write bitmap block", err))
			}
		}
	}
	v.ss.modified()
	if err := v.datasync(); err != nil {
		return undo(fail("sync bitmaps", err))
	}
	if err := step(4); err != nil {
		return err
	}

	// 5. Both superblock copies of the new layout: the commit point.
	v.mdMu.Lock()
	next := *v.sb
	next.meta = v.sb.meta.clone()
	next.meta.Size = lay.size
	next.lay = lay
	var werr error
	for range 2 {
		next.seq++
		encodeSuperblock(&next, v.sbBuf)
		if _, err := v.f.WriteAt(v.sbBuf, lay.sbOff(next.seq)); err != nil {
			werr = err
			break
		}
	}
	v.ss.modified()
	if werr == nil {
		werr = v.datasync()
	}
	if werr != nil {
		v.mdMu.Unlock()
		// Whether the superblocks reached the disk is unknown: leave the
		// record for Open, which checks, and close.
		v.abandon()
		return fail("write superblocks (the volume is closed; reopening it finishes or undoes the grow)", werr)
	}
	*v.sb = next
	v.mdMu.Unlock()
	if err := step(5); err != nil {
		return err
	}

	// From here the new layout is the volume: switch the in-memory state.
	v.bm.mu.Lock()
	for p := range v.bm.peers {
		pb := &v.bm.peers[p]
		pb.words = words[p]
		blocks := make([]bmBlock, lay.blocksPerPeer)
		copy(blocks, pb.blocks)
		pb.blocks = blocks
	}
	v.lay = lay
	v.size.Store(lay.size)
	v.bm.mu.Unlock()

	// 6. Zero the old metadata inside the new data area.
	if err := v.zeroOldMeta(rec); err != nil {
		v.abandon()
		return fail("zero the old metadata (the volume is closed; reopening it finishes the grow)", err)
	}
	if err := step(6); err != nil {
		return err
	}

	// 7. Done.
	if err := removeGrowRecord(v.path); err != nil {
		return fail("remove grow record", err)
	}
	v.log.Info("volume grown", "old_size", old.size, "size", lay.size, "file_size", lay.devSize)
	return nil
}

// abandon closes a volume whose grow failed half-way, without writing
// anything more: Open resolves the grow record. Caller holds life.
func (v *LocalVolume) abandon() {
	v.closed = true
	if err := v.f.Close(); err != nil {
		v.log.Warn("close after a failed grow", "err", err)
	}
}

// zeroOldMeta zeroes [OldSize, min(OldDev, NewSize)) and syncs.
func (v *LocalVolume) zeroOldMeta(rec growRecord) error {
	return zeroOldMeta(v.f, rec)
}

func zeroOldMeta(d diskFile, rec growRecord) error {
	a, b := rec.OldSize, min(rec.OldDev, rec.NewSize)
	if a < b {
		if err := writeZeroes(d, alignedBuf(bounceChunk), a, b); err != nil {
			return err
		}
	}
	return d.Datasync()
}

func growRecordPath(path string) string { return path + growSuffix }

func writeGrowRecord(path string, rec growRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	tmp := growRecordPath(path) + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, growRecordPath(path))
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(path)
}

func removeGrowRecord(path string) error {
	if err := os.Remove(growRecordPath(path)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return syncDir(path)
}

func syncDir(path string) error {
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer dir.Close()
	if err := dir.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", filepath.Dir(path), err)
	}
	return nil
}

func truncateFile(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return err
	}
	return f.Sync()
}

// recoverGrow resolves a grow record left by an interrupted Grow (see the
// comment at the top of this file). f is the volume file, open read-write
// and locked. It returns whether a record was found.
func recoverGrow(path string, f *os.File, readOnly bool) (bool, error) {
	b, err := os.ReadFile(growRecordPath(path))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("blockstore: open %s: read grow record: %w", path, err)
	}
	var rec growRecord
	if err := json.Unmarshal(b, &rec); err != nil || rec.OldDev <= 0 || rec.NewDev <= rec.OldDev || rec.NewSize <= rec.OldSize {
		return false, &MetadataError{Path: path, Block: "grow record " + growRecordPath(path), Problem: fmt.Sprintf("unreadable or impossible grow record %q", b)}
	}
	if readOnly {
		return false, fmt.Errorf("blockstore: open %s: an interrupted grow (%d -> %d bytes) must be finished or undone first: open it read-write once", path, rec.OldSize, rec.NewSize)
	}
	fi, err := f.Stat()
	if err != nil {
		return false, fmt.Errorf("blockstore: open: %w", err)
	}
	d := &osDisk{f: f}
	committed := false
	if fi.Size() == rec.NewDev {
		sb, _, err := readSuperblock(path, d, alignedBuf(blockSize), rec.NewDev)
		committed = err == nil && sb != nil && sb.lay.size == rec.NewSize
	}
	if committed {
		if err := zeroOldMeta(d, rec); err != nil {
			return false, fmt.Errorf("blockstore: open %s: finish interrupted grow: zero old metadata: %w", path, err)
		}
	} else if fi.Size() != rec.OldDev {
		if err := f.Truncate(rec.OldDev); err != nil {
			return false, fmt.Errorf("blockstore: open %s: undo interrupted grow: %w", path, err)
		}
		if err := f.Sync(); err != nil {
			return false, fmt.Errorf("blockstore: open %s: undo interrupted grow: %w", path, err)
		}
	}
	if err := removeGrowRecord(path); err != nil {
		return false, fmt.Errorf("blockstore: open %s: remove grow record: %w", path, err)
	}
	return true, nil
}
