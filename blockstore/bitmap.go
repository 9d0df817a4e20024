package blockstore

// Persistent per-peer dirty bitmaps (format: see meta.go).
//
// The bitmaps live in memory as []uint64 words laid out exactly like the
// on-disk bit area (511 words per 4 KiB block), so a block is written by
// copying its 511 words. Each 4 KiB block carries three versions:
//
//	ver     bumped on every change to the block's bits
//	setVer  the ver of the latest 0→1 change
//	durVer  the newest ver known to be on disk and synced
//
// MarkDirty must not return before every bit it relies on is durable. When
// it flips bits it writes the block; when the bits were already set it
// returns at once unless a 0→1 change to that block is still on its way to
// disk (setVer > durVer), in which case it waits for (or redoes) that write.
// So the already-dirty hot path costs a mutex and a few word tests, no I/O.
// ClearDirty only bumps ver; Flush and Close write blocks with durVer < ver.
// At most one goroutine writes a given block at a time (writing), so blocks
// reach the disk in version order.

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math/bits"
	"sync"
)

type bitmaps struct {
	mu    sync.Mutex
	peers []peerBits
	lazy  bool // some block may hold clears not yet on disk
}

type peerBits struct {
	words  []uint64 // blocksPerPeer × wordsPerBlock
	count  int64    // set bits
	blocks []bmBlock
}

type bmBlock struct {
	ver, setVer, durVer uint64
	writing             bool
	done                chan struct{} // closed when the current write ends
}

type blockTarget struct {
	blk int64
	ver uint64 // durVer must reach this
}

func bitmapCRC(uuid [16]byte, b []byte) uint32 {
	tab := crc32.MakeTable(crc32.Castagnoli)
	return crc32.Update(crc32.Update(0, tab, uuid[:]), tab, b[4:blockSize])
}

func encodeBitmapBlock(b []byte, uuid [16]byte, blockNo uint32, words []uint64) {
	le := binary.LittleEndian
	le.PutUint32(b[4:], blockNo)
	for i, w := range words {
		le.PutUint64(b[8+8*i:], w)
	}
	le.PutUint32(b[0:], bitmapCRC(uuid, b))
}

// decodeBitmapBlock validates one block and fills words. validBits is how
// many of its bits map to regions of the data area.
func decodeBitmapBlock(b []byte, uuid [16]byte, blockNo uint32, validBits int64, words []uint64) string {
	le := binary.LittleEndian
	if stored, got := le.Uint32(b[0:]), bitmapCRC(uuid, b); stored != got {
		if allZero(b) {
			return "block is all zeroes (never written, or overwritten)"
		}
		return fmt.Sprintf("CRC32C mismatch (stored %#08x, computed %#08x): torn or corrupted write, "+
			"or a block from another volume", stored, got)
	}
	if n := le.Uint32(b[4:]); n != blockNo {
		return fmt.Sprintf("block number %d where %d belongs (misdirected write)", n, blockNo)
	}
	for i := range words {
		words[i] = le.Uint64(b[8+8*i:])
	}
	for bit := validBits; bit < bitsPerBlock; bit++ {
		if words[bit/64]&(1<<(bit%64)) != 0 {
			return fmt.Sprintf("bit %d is set but the data area has only %d regions in this block", bit, validBits)
		}
	}
	return ""
}

// loadBitmaps reads and validates every bitmap block.
func loadBitmaps(path string, f diskFile, lay layout, uuid [16]byte) (*bitmaps, error) {
	bm := &bitmaps{peers: make([]peerBits, lay.maxPeers)}
	total := int64(lay.maxPeers) * lay.blocksPerPeer
	chunk := alignedBuf(bounceChunk)
	for p := range bm.peers {
		bm.peers[p] = peerBits{
			words:  make([]uint64, lay.blocksPerPeer*wordsPerBlock),
			blocks: make([]bmBlock, lay.blocksPerPeer),
		}
	}
	for first := int64(0); first < total; {
		n := min(total-first, bounceChunk/blockSize)
		buf := chunk[:n*blockSize]
		off := lay.bitmapOff + first*blockSize
		if _, err := f.ReadAt(buf, off); err != nil {
			return nil, fmt.Errorf("blockstore: %s: read bitmap area at offset %d: %w", path, off, err)
		}
		for k := range n {
			g := first + k
			peer, i := int(g/lay.blocksPerPeer), g%lay.blocksPerPeer
			validBits := min(lay.regions-i*bitsPerBlock, bitsPerBlock)
			pb := &bm.peers[peer]
			words := pb.words[i*wordsPerBlock : (i+1)*wordsPerBlock]
			if problem := decodeBitmapBlock(buf[k*blockSize:(k+1)*blockSize], uuid, uint32(g), validBits, words); problem != "" {
				return nil, &MetadataError{Path: path, Block: fmt.Sprintf("bitmap block %d of peer slot %d", i, peer),
					Offset: off + k*blockSize, Problem: problem}
			}
			for _, w := range words {
				pb.count += int64(bits.OnesCount64(w))
			}
		}
		first += n
	}
	return bm, nil
}

// checkBitmapArgs validates a peer slot and a byte range.
func (v *LocalVolume) checkBitmapArgs(peer int, off, length int64) error {
	if peer < 0 || peer >= v.lay.maxPeers {
		return fmt.Errorf("peer slot %d out of range [0, %d)", peer, v.lay.maxPeers)
	}
	if err := CheckRange(v.lay.size, off, length); err != nil {
		return fmt.Errorf("[%d, +%d) on a %d-byte volume: %w", off, length, v.lay.size, err)
	}
	return nil
}

// MarkDirty sets the bits of every region that [off, off+length) touches
// in peer's bitmap. Every bitmap block whose bits went 0→1 is on disk and
// synced before it returns, so replication may call it before acknowledging
// a write the peer missed. Bits that are already set (and durable) cost no
// I/O.
func (v *LocalVolume) MarkDirty(ctx context.Context, peer int, off, length int64) error {
	if err := v.begin(ctx, true); err != nil {
		return fmt.Errorf("blockstore: mark dirty: %w", err)
	}
	defer v.end()
	if err := v.checkBitmapArgs(peer, off, length); err != nil {
		return fmt.Errorf("blockstore: mark dirty: %w", err)
	}
	if length == 0 {
		return nil
	}
	g := v.lay.granularity
	var buf [4]blockTarget
	v.bm.mu.Lock()
	ts := v.bm.setRange(peer, off/g, (off+length-1)/g+1, buf[:0])
	v.bm.mu.Unlock()
	if len(ts) == 0 {
		return nil
	}
	if err := v.persistBlocks(ctx, peer, ts); err != nil {
		return fmt.Errorf("blockstore: mark dirty [%d, +%d) for peer slot %d: %w", off, length, peer, err)
	}
	return nil
}

// SetAllDirty marks the whole data area dirty for peer (full resync),
// durably.
func (v *LocalVolume) SetAllDirty(ctx context.Context, peer int) error {
	if err := v.begin(ctx, true); err != nil {
		return fmt.Errorf("blockstore: set all dirty: %w", err)
	}
	defer v.end()
	if err := v.checkBitmapArgs(peer, 0, 0); err != nil {
		return fmt.Errorf("blockstore: set all dirty: %w", err)
	}
	v.bm.mu.Lock()
	ts := v.bm.setRange(peer, 0, v.lay.regions, nil)
	v.bm.mu.Unlock()
	if err := v.persistBlocks(ctx, peer, ts); err != nil {
		return fmt.Errorf("blockstore: set all dirty for peer slot %d: %w", peer, err)
	}
	return nil
}

// ClearDirty clears the bits of regions lying entirely inside
// [off, off+length) (the last region counts as entire if the range reaches
// the end of the volume). The change reaches the disk lazily: at the latest
// on Flush or Close. A crash before that only brings bits back, which costs
// resync work, never data.
func (v *LocalVolume) ClearDirty(ctx context.Context, peer int, off, length int64) error {
	if err := v.begin(ctx, true); err != nil {
		return fmt.Errorf("blockstore: clear dirty: %w", err)
	}
	defer v.end()
	if err := v.checkBitmapArgs(peer, off, length); err != nil {
		return fmt.Errorf("blockstore: clear dirty: %w", err)
	}
	g := v.lay.granularity
	first := (off + g - 1) / g
	end := (off + length) / g
	if off+length == v.lay.size {
		end = v.lay.regions
	}
	if first >= end {
		return nil
	}
	v.bm.mu.Lock()
	v.bm.clearRange(peer, first, end)
	v.bm.mu.Unlock()
	return nil
}

// DirtyBytes is how many bytes of the data area are dirty for peer (0 for
// an invalid slot).
func (v *LocalVolume) DirtyBytes(peer int) int64 {
	if peer < 0 || peer >= v.lay.maxPeers {
		return 0
	}
	g := v.lay.granularity
	v.bm.mu.Lock()
	defer v.bm.mu.Unlock()
	last := v.lay.regions - 1 // under bm.mu: Grow changes the layout
	pb := &v.bm.peers[peer]
	n := pb.count * g
	if pb.words[last/64]&(1<<(last%64)) != 0 {
		n -= last*g + g - v.lay.size // the last region may be partial
	}
	return n
}

// DirtyRanges calls fn for each run of dirty bytes for peer, coalesced and
// in ascending order, until fn returns false. The bitmap lock is not held
// while fn runs, so fn may call MarkDirty or ClearDirty; runs reflect the
// bitmap as it is when each is found.
func (v *LocalVolume) DirtyRanges(peer int, fn func(off, length int64) bool) {
	if peer < 0 || peer >= v.lay.maxPeers {
		return
	}
	g := v.lay.granularity
	for r := int64(0); ; {
		v.bm.mu.Lock()
		start, end, ok := nextRun(v.bm.peers[peer].words, r, v.lay.regions)
		size := v.lay.size // under bm.mu: Grow changes the layout
		v.bm.mu.Unlock()
		if !ok {
			return
		}
		if !fn(start*g, min(end*g, size)-start*g) {
			return
		}
		r = end
	}
}

// nextRun finds the first run of set bits at or after bit from.
func nextRun(words []uint64, from, limit int64) (start, end int64, ok bool) {
	start, ok = scanBits(words, from, limit, false)
	if !ok {
		return 0, 0, false
	}
	end, found := scanBits(words, start, limit, true)
	if !found {
		end = limit
	}
	return start, end, true
}

// scanBits returns the index of the first bit ≥ from that is set (or clear,
// if inverted) and < limit.
func scanBits(words []uint64, from, limit int64, inverted bool) (int64, bool) {
	if from >= limit {
		return 0, false
	}
	mask := ^uint64(0) << (from % 64)
	for w := from / 64; w < int64(len(words)); w++ {
		x := words[w]
		if inverted {
			x = ^x
		}
		if x &= mask; x != 0 {
			i := w*64 + int64(bits.TrailingZeros64(x))
			return i, i < limit
		}
		mask = ^uint64(0)
	}
	return 0, false
}

// wordMask is the mask of bits [a, b) within word w (a < b, and the range
// intersects w).
func wordMask(w, a, b int64) uint64 {
	m := ^uint64(0)
	if w == a/64 {
		m &= ^uint64(0) << (a % 64)
	}
	if w == (b-1)/64 {
		m &= ^uint64(0) >> (63 - (b-1)%64)
	}
	return m
}

// setRange sets bits [a, b) and appends, per touched block, the version that
// must be durable before the caller may rely on the bits. Caller holds mu.
func (bm *bitmaps) setRange(peer int, a, b int64, ts []blockTarget) []blockTarget {
	pb := &bm.peers[peer]
	for blk := a / bitsPerBlock; blk <= (b-1)/bitsPerBlock; blk++ {
		flipped := false
		wFirst := max(a/64, blk*wordsPerBlock)
		wLast := min((b-1)/64, (blk+1)*wordsPerBlock-1)
		for w := wFirst; w <= wLast; w++ {
			m := wordMask(w, a, b)
			if nb := m &^ pb.words[w]; nb != 0 {
				pb.words[w] |= nb
				pb.count += int64(bits.OnesCount64(nb))
				flipped = true
			}
		}
		st := &pb.blocks[blk]
		if flipped {
			st.ver++
			st.setVer = st.ver
		}
		if st.setVer > st.durVer {
			ts = append(ts, blockTarget{blk: blk, ver: st.setVer})
		}
	}
	return ts
}

// clearRange clears bits [a, b). Caller holds mu.
func (bm *bitmaps) clearRange(peer int, a, b int64) {
	pb := &bm.peers[peer]
	for blk := a / bitsPerBlock; blk <= (b-1)/bitsPerBlock; blk++ {
		changed := false
		wFirst := max(a/64, blk*wordsPerBlock)
		wLast := min((b-1)/64, (blk+1)*wordsPerBlock-1)
		for w := wFirst; w <= wLast; w++ {
			if cb := wordMask(w, a, b) & pb.words[w]; cb != 0 {
				pb.words[w] &^= cb
				pb.count -= int64(bits.OnesCount64(cb))
				changed = true
			}
		}
		if changed {
			pb.blocks[blk].ver++
			bm.lazy = true
		}
	}
}

type bmClaim struct {
	blk int64
	ver uint64
	buf []byte
}

// persistBlocks makes each target block durable at least at its target
// version: it writes the blocks nobody else is writing (then one fdatasync)
// and waits for the others. It never waits while it has blocks claimed, so
// two callers with crossing block sets cannot deadlock.
func (v *LocalVolume) persistBlocks(ctx context.Context, peer int, ts []blockTarget) error {
	bm := v.bm
	pb := &bm.peers[peer]
	for len(ts) > 0 {
		var claims []bmClaim
		var busy []blockTarget
		var waits []chan struct{}
		bm.mu.Lock()
		for _, t := range ts {
			st := &pb.blocks[t.blk]
			switch {
			case st.durVer >= t.ver:
			case st.writing:
				busy = append(busy, t)
				waits = append(waits, st.done)
			default:
				st.writing = true
				st.done = make(chan struct{})
				buf := v.bufs.Get(blockSize)
				encodeBitmapBlock(buf, v.uuid, uint32(int64(peer)*v.lay.blocksPerPeer+t.blk),
					pb.words[t.blk*wordsPerBlock:(t.blk+1)*wordsPerBlock])
				claims = append(claims, bmClaim{blk: t.blk, ver: st.ver, buf: buf})
			}
		}
		bm.mu.Unlock()

		var err error
		for _, c := range claims {
			off := v.lay.bitmapBlockOff(peer, c.blk)
			_, werr := v.f.WriteAt(c.buf, off)
			v.ss.modified()
			if werr != nil {
				err = fmt.Errorf("write bitmap block %d of peer slot %d at offset %d: %w", c.blk, peer, off, werr)
				break
			}
		}
		if err == nil && len(claims) > 0 {
			err = v.datasync()
		}
		bm.mu.Lock()
		for _, c := range claims {
			st := &pb.blocks[c.blk]
			st.writing = false
			close(st.done)
			if err == nil && c.ver > st.durVer {
				st.durVer = c.ver
			}
			v.bufs.Put(c.buf)
		}
		bm.mu.Unlock()
		if err != nil {
			return err
		}
		for _, ch := range waits {
			select {
			case <-ch:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		ts = busy
	}
	return nil
}

// persistLazy writes every bitmap block holding changes not yet on disk
// (ClearDirty's). Flush and Close call it.
func (v *LocalVolume) persistLazy(ctx context.Context) error {
	bm := v.bm
	bm.mu.Lock()
	if !bm.lazy {
		bm.mu.Unlock()
		return nil
	}
	bm.lazy = false
	all := make([][]blockTarget, len(bm.peers))
	for p := range bm.peers {
		for i, st := range bm.peers[p].blocks {
			if st.durVer < st.ver {
				all[p] = append(all[p], blockTarget{blk: int64(i), ver: st.ver})
			}
		}
	}
	bm.mu.Unlock()
	for p, ts := range all {
		if len(ts) == 0 {
			continue
		}
		if err := v.persistBlocks(ctx, p, ts); err != nil {
			bm.mu.Lock()
			bm.lazy = true
			bm.mu.Unlock()
			return fmt.Errorf("persist bitmap of peer slot %d: %w", p, err)
		}
	}
	return nil
}
