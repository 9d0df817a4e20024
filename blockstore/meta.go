package blockstore

// On-disk format, version 2 (version 1 is still read and written).
//
// A volume is a file or block device of D bytes (D a multiple of 4096):
//
//	[0, Size)                      data area, what the Volume exposes
//	[Size, BitmapOff)              unused (devices only, when Create was given
//	                               a size smaller than the device allows)
//	[BitmapOff, D-8192)            bitmap area: MaxPeers × BlocksPerPeer blocks
//	                               of 4096 bytes; peer p's block i is at
//	                               BitmapOff + (p×BlocksPerPeer + i)×4096
//	[D-8192, D-4096)               superblock copy 1 (odd sequence numbers)
//	[D-4096, D)                    superblock copy 0 (even sequence numbers)
//
// The superblocks are at the END rather than the start of the metadata
// area, so Open finds them from the file or device size alone (DRBD does
// the same for the same reason); the area before them depends on values
// stored in them. Files are exactly Size + metadata bytes long.
//
// Two copies, written alternately: each metadata change writes the copy
// its new sequence number selects, so a write torn by a crash or power
// loss damages only that copy and the other still holds the state before
// the change, which the torn write had not yet made true (callers rely on
// a change only after its write and fdatasync returned). Open takes the
// valid copy with the higher sequence number; the next change rewrites the
// damaged one. Version 1 volumes have a single superblock at [D-4096, D)
// and the bitmap area ends there; they open and work as before, without
// the second copy.
//
// Superblock (all integers little-endian):
//
//	off   size  field
//	0     8     magic "TANDEMV1"
//	8     4     format version (2; 1 for single-superblock volumes)
//	12    4     block size (4096)
//	16    16    volume UUID
//	32    8     data size in bytes (> 0, multiple of 4096, ≤ BitmapOff)
//	40    8     BitmapOff: byte offset of the bitmap area
//	48    8     D: file/device size the layout was made for (must equal the
//	            actual size; superblock is at D-4096)
//	56    8     bitmap granularity in bytes (power of two, 4 KiB … 1 GiB)
//	64    4     MaxPeers (1 … 7)
//	68    4     BlocksPerPeer = ceil(ceil(Size/granularity) / 32704)
//	72    1     local disk state (1 Inconsistent, 2 Outdated, 3 Consistent,
//	            4 UpToDate; 0 and others are invalid)
//	73    7     reserved, zero
//	80    8     generation Current
//	88    8     generation Bitmap
//	96    8     generation History[0]
//	104   8     generation History[1]
//	112   8     last epoch seen
//	120   8     write sequence number (+1 on every superblock write; in
//	            version 2 its parity names the copy it belongs in, and
//	            Open takes the valid copy with the higher number)
//	128   7×128 peer slots 0…6 (slots ≥ MaxPeers are zero):
//	            +0   1   name length (0 = slot unassigned, ≤ 63)
//	            +1   63  name bytes, zero padded
//	            +64  8   peer flags (PeerFlags)
//	            +72  56  reserved, zero
//	1024  3068  reserved, zero
//	4092  4     CRC32C (Castagnoli) of bytes [0, 4092)
//
// Bitmap block (4096 bytes):
//
//	0     4     CRC32C of (volume UUID ‖ bytes [4, 4096)); seeding with the
//	            UUID rejects blocks left over from an earlier format
//	4     4     block number within the bitmap area (p×BlocksPerPeer + i),
//	            which catches misdirected writes
//	8     4088  32704 bits, one per granularity-sized region of the data
//	            area: region r of peer p is bit (r mod 32704) of block
//	            r / 32704, stored as 511 little-endian uint64 words (bit k of
//	            word w = byte 8+8w+k/8, bit k%8, LSB first). Bits past the
//	            last region must be zero. A set bit means "this region may
//	            differ on that peer".
//
// Every metadata write is one aligned 4 KiB O_DIRECT write followed by
// fdatasync before it is relied upon. A torn superblock write fails its
// CRC and Open uses the other copy (version 2); a torn bitmap block, or no
// valid superblock copy at all, makes Open refuse the volume
// (ErrCorruptMetadata) instead of guessing.

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/bits"
	"unicode/utf8"
)

const (
	formatVersion   = 2 // what Create writes
	formatV1        = 1 // single superblock; still opened and written
	maxPeersLimit   = 7
	peerNameMax     = 63
	bitsPerBlock    = (blockSize - 8) * 8 // 32704
	wordsPerBlock   = bitsPerBlock / 64   // 511
	defaultGran     = 64 << 10
	maxGranularity  = 1 << 30
	defaultMaxPeers = 2
	sbMagic         = "TANDEMV1"
	peerSlotOff     = 128
	peerSlotSize    = 128
	sbCRCOff        = blockSize - 4
)

// DiskState is the local replica's disk state as recorded in the superblock.
type DiskState uint8

const (
	// DiskInconsistent: the data is not usable as a whole (fresh volume, or
	// a resync target part-way through). The zero value of CreateOptions
	// gives this, as DRBD's create-md does.
	DiskInconsistent DiskState = 1
	// DiskOutdated: consistent, but known to miss writes that a peer has.
	DiskOutdated DiskState = 2
	// DiskConsistent: consistent; whether it is the newest is not known.
	DiskConsistent DiskState = 3
	// DiskUpToDate: consistent and the newest data.
	DiskUpToDate DiskState = 4
)

func (s DiskState) String() string {
	switch s {
	case DiskInconsistent:
		return "Inconsistent"
	case DiskOutdated:
		return "Outdated"
	case DiskConsistent:
		return "Consistent"
	case DiskUpToDate:
		return "UpToDate"
	}
	return fmt.Sprintf("DiskState(%d)", uint8(s))
}

func (s DiskState) valid() bool { return s >= DiskInconsistent && s <= DiskUpToDate }

// PeerFlags are per-peer-slot flags persisted with the slot. The bits below
// are named after DRBD's MDF_PEER_* flags; replication owns their meaning,
// this package only stores them. Unknown bits are preserved.
type PeerFlags uint64

const (
	// PeerConnected: the peer was connected when the flags were written.
	PeerConnected PeerFlags = 1 << iota
	// PeerOutdated: the peer is known to be Outdated.
	PeerOutdated
	// PeerFullSync: the next resync with this peer must be a full one.
	PeerFullSync
)

// Generations are DRBD-style generation identifiers ("data generation
// UUIDs"): Current names the data's present generation, Bitmap the
// generation at which the dirty bitmap started to record, History the
// generations before that. Replication compares them to choose the resync
// direction and to detect unrelated data.
type Generations struct {
	Current, Bitmap uint64
	History         [2]uint64
}

// PeerSlot is one peer's record in the superblock. An empty Name means the
// slot is unassigned.
type PeerSlot struct {
	Name  string
	Flags PeerFlags
}

// Meta is a snapshot of a volume's superblock.
type Meta struct {
	VolumeID    [16]byte
	Size        int64 // data area, bytes
	Granularity int64 // bytes per dirty-bitmap bit
	MaxPeers    int
	Generations Generations
	Epoch       uint64 // last epoch seen
	DiskState   DiskState
	Peers       []PeerSlot // len(Peers) == MaxPeers
}

func (m Meta) clone() Meta {
	m.Peers = append([]PeerSlot(nil), m.Peers...)
	return m
}

// ErrStaleEpoch: SetEpoch was asked to record an epoch older than the one
// already recorded.
var ErrStaleEpoch = errors.New("epoch is older than the last epoch seen")

// MetadataError describes metadata that failed validation. It unwraps to
// ErrCorruptMetadata.
type MetadataError struct {
	Path    string
	Block   string // "superblock", "bitmap block 3 of peer slot 1", ...
	Offset  int64  // byte offset of that block in the file or device
	Problem string
}

func (e *MetadataError) Error() string {
	return fmt.Sprintf("blockstore: %s: %s at byte offset %d: %s: %v; the volume was NOT reinitialised "+
		"(hint: if another replica is UpToDate, rebuild this one from it with 'tandem volume resync VOLUME --discard NODE', naming this node)",
		e.Path, e.Block, e.Offset, e.Problem, ErrCorruptMetadata)
}

func (e *MetadataError) Unwrap() error { return ErrCorruptMetadata }

// layout is where everything lives, derived from the superblock's sizes.
type layout struct {
	version       int   // formatVersion or formatV1
	devSize       int64 // D
	size          int64 // data area
	granularity   int64
	maxPeers      int
	regions       int64 // bits per peer
	blocksPerPeer int64
	bitmapOff     int64
}

func newLayout(version int, devSize, size, gran int64, maxPeers int) layout {
	l := layout{version: version, devSize: devSize, size: size, granularity: gran, maxPeers: maxPeers}
	l.regions = (size + gran - 1) / gran
	l.blocksPerPeer = (l.regions + bitsPerBlock - 1) / bitsPerBlock
	l.bitmapOff = devSize - int64(superblockCopies(version)+maxPeers*int(l.blocksPerPeer))*blockSize
	return l
}

func superblockCopies(version int) int {
	if version == formatV1 {
		return 1
	}
	return 2
}

// sbOff is where the superblock with sequence number seq is written: in
// version 2, even numbers go to the last block and odd ones to the block
// before it.
func (l layout) sbOff(seq uint64) int64 {
	if l.version == formatV1 {
		return l.devSize - blockSize
	}
	return l.devSize - blockSize*int64(1+seq%2)
}

// metadataBytes is the size of the metadata area for a data size, in the
// format Create writes.
func metadataBytes(size, gran int64, maxPeers int) int64 {
	regions := (size + gran - 1) / gran
	bpp := (regions + bitsPerBlock - 1) / bitsPerBlock
	return (int64(maxPeers)*bpp + int64(superblockCopies(formatVersion))) * blockSize
}

func (l layout) bitmapBlockOff(peer int, i int64) int64 {
	return l.bitmapOff + (int64(peer)*l.blocksPerPeer+i)*blockSize
}

func validGranularity(g int64) bool {
	return g >= blockSize && g <= maxGranularity && bits.OnesCount64(uint64(g)) == 1
}

// superblock is the decoded superblock plus the fields Meta does not expose.
type superblock struct {
	meta Meta
	lay  layout
	seq  uint64
}

func encodeSuperblock(sb *superblock, b []byte) {
	clear(b[:blockSize])
	le := binary.LittleEndian
	copy(b[0:8], sbMagic)
	le.PutUint32(b[8:], uint32(sb.lay.version))
	le.PutUint32(b[12:], blockSize)
	copy(b[16:32], sb.meta.VolumeID[:])
	le.PutUint64(b[32:], uint64(sb.lay.size))
	le.PutUint64(b[40:], uint64(sb.lay.bitmapOff))
	le.PutUint64(b[48:], uint64(sb.lay.devSize))
	le.PutUint64(b[56:], uint64(sb.lay.granularity))
	le.PutUint32(b[64:], uint32(sb.lay.maxPeers))
	le.PutUint32(b[68:], uint32(sb.lay.blocksPerPeer))
	b[72] = byte(sb.meta.DiskState)
	g := sb.meta.Generations
	le.PutUint64(b[80:], g.Current)
	le.PutUint64(b[88:], g.Bitmap)
	le.PutUint64(b[96:], g.History[0])
	le.PutUint64(b[104:], g.History[1])
	le.PutUint64(b[112:], sb.meta.Epoch)
	le.PutUint64(b[120:], sb.seq)
	for i, p := range sb.meta.Peers {
		s := b[peerSlotOff+i*peerSlotSize:]
		s[0] = byte(len(p.Name))
		copy(s[1:1+peerNameMax], p.Name)
		le.PutUint64(s[64:], uint64(p.Flags))
	}
	le.PutUint32(b[sbCRCOff:], crc32.Checksum(b[:sbCRCOff], crc32.MakeTable(crc32.Castagnoli)))
}

// decodeSuperblock parses and validates a superblock copy read from a file
// or device of devSize bytes. It returns a human-readable
// problem, or "" if the block is valid.
func decodeSuperblock(b []byte, devSize int64) (*superblock, string) {
	le := binary.LittleEndian
	if string(b[0:8]) != sbMagic {
		if allZero(b) {
			return nil, fmt.Sprintf("no superblock: the last 4 KiB are all zeroes (size %d bytes); "+
				"the file or device was truncated or extended, or never formatted", devSize)
		}
		return nil, fmt.Sprintf("bad magic %q (want %q): the file or device (size %d bytes) was truncated "+
			"or extended, the superblock was overwritten, or this is not a Tandem volume", b[0:8], sbMagic, devSize)
	}
	if stored, got := le.Uint32(b[sbCRCOff:]), crc32.Checksum(b[:sbCRCOff], crc32.MakeTable(crc32.Castagnoli)); stored != got {
		return nil, fmt.Sprintf("CRC32C mismatch (stored %#08x, computed %#08x): torn or corrupted write", stored, got)
	}
	version := int(le.Uint32(b[8:]))
	if version != formatVersion && version != formatV1 {
		return nil, fmt.Sprintf("unsupported format version %d (this build reads versions %d and %d)", version, formatV1, formatVersion)
	}
	if bs := le.Uint32(b[12:]); bs != blockSize {
		return nil, fmt.Sprintf("impossible block size %d (want %d)", bs, blockSize)
	}
	sb := &superblock{}
	copy(sb.meta.VolumeID[:], b[16:32])
	size := int64(le.Uint64(b[32:]))
	bitmapOff := int64(le.Uint64(b[40:]))
	recDev := int64(le.Uint64(b[48:]))
	gran := int64(le.Uint64(b[56:]))
	maxPeers := int(le.Uint32(b[64:]))
	bpp := int64(le.Uint32(b[68:]))
	switch {
	case recDev != devSize:
		return nil, fmt.Sprintf("recorded file/device size %d does not match the actual size %d", recDev, devSize)
	case !validGranularity(gran):
		return nil, fmt.Sprintf("impossible bitmap granularity %d (must be a power of two from %d to %d)", gran, blockSize, maxGranularity)
	case maxPeers < 1 || maxPeers > maxPeersLimit:
		return nil, fmt.Sprintf("impossible max peers %d (must be 1 to %d)", maxPeers, maxPeersLimit)
	case size <= 0 || size%blockSize != 0:
		return nil, fmt.Sprintf("impossible data size %d (must be a positive multiple of %d)", size, blockSize)
	case size > devSize:
		return nil, fmt.Sprintf("data size %d is beyond the end of the file/device (%d bytes)", size, devSize)
	}
	lay := newLayout(version, devSize, size, gran, maxPeers)
	switch {
	case bpp != lay.blocksPerPeer:
		return nil, fmt.Sprintf("recorded %d bitmap blocks per peer, but size %d at granularity %d needs %d", bpp, size, gran, lay.blocksPerPeer)
	case bitmapOff != lay.bitmapOff:
		return nil, fmt.Sprintf("recorded bitmap offset %d, but the layout puts it at %d", bitmapOff, lay.bitmapOff)
	case size > bitmapOff:
		return nil, fmt.Sprintf("data size %d overlaps the metadata area at %d (the data area reaches beyond the device)", size, bitmapOff)
	}
	sb.lay = lay
	sb.meta.Size = size
	sb.meta.Granularity = gran
	sb.meta.MaxPeers = maxPeers
	sb.meta.DiskState = DiskState(b[72])
	if !sb.meta.DiskState.valid() {
		return nil, fmt.Sprintf("impossible disk state %d", b[72])
	}
	sb.meta.Generations = Generations{
		Current: le.Uint64(b[80:]),
		Bitmap:  le.Uint64(b[88:]),
		History: [2]uint64{le.Uint64(b[96:]), le.Uint64(b[104:])},
	}
	sb.meta.Epoch = le.Uint64(b[112:])
	sb.seq = le.Uint64(b[120:])
	sb.meta.Peers = make([]PeerSlot, maxPeers)
	seen := map[string]int{}
	for i := range maxPeersLimit {
		s := b[peerSlotOff+i*peerSlotSize : peerSlotOff+(i+1)*peerSlotSize]
		n := int(s[0])
		if i >= maxPeers {
			if !allZero(s) {
				return nil, fmt.Sprintf("peer slot %d is beyond max peers %d but not empty", i, maxPeers)
			}
			continue
		}
		if n > peerNameMax {
			return nil, fmt.Sprintf("peer slot %d: impossible name length %d", i, n)
		}
		name := string(s[1 : 1+n])
		if err := checkPeerName(name); err != nil {
			return nil, fmt.Sprintf("peer slot %d: %v", i, err)
		}
		if n > 0 {
			if j, dup := seen[name]; dup {
				return nil, fmt.Sprintf("peer slots %d and %d both hold %q", j, i, name)
			}
			seen[name] = i
		}
		sb.meta.Peers[i] = PeerSlot{Name: name, Flags: PeerFlags(le.Uint64(s[64:]))}
	}
	return sb, ""
}

func checkPeerName(name string) error {
	if len(name) > peerNameMax {
		return fmt.Errorf("peer name %q is longer than %d bytes", name, peerNameMax)
	}
	if !utf8.ValidString(name) || bytes.IndexByte([]byte(name), 0) >= 0 {
		return fmt.Errorf("peer name %q is not valid UTF-8 without NUL bytes", name)
	}
	return nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// Meta returns a snapshot of the volume's metadata.
func (v *LocalVolume) Meta() Meta {
	v.mdMu.Lock()
	defer v.mdMu.Unlock()
	return v.sb.meta.clone()
}

// updateMeta applies change to a copy of the metadata, writes it durably and
// only then makes it the in-memory state, so readers of Meta never see a
// value that is not on disk. change may return errNoChange to skip the
// write.
func (v *LocalVolume) updateMeta(ctx context.Context, op string, change func(m *Meta) error) error {
	if err := v.begin(ctx, true); err != nil {
		return fmt.Errorf("blockstore: %s: %w", op, err)
	}
	defer v.end()
	v.mdMu.Lock()
	defer v.mdMu.Unlock()
	next := *v.sb
	next.meta = v.sb.meta.clone()
	if err := change(&next.meta); err != nil {
		if err == errNoChange {
			return nil
		}
		return fmt.Errorf("blockstore: %s: %w", op, err)
	}
	next.seq++
	if err := v.writeSuperblock(&next); err != nil {
		return fmt.Errorf("blockstore: %s: %w", op, err)
	}
	*v.sb = next
	return nil
}

var errNoChange = errors.New("no change")

// writeSuperblock writes sb and makes it durable. Caller holds mdMu.
func (v *LocalVolume) writeSuperblock(sb *superblock) error {
	encodeSuperblock(sb, v.sbBuf)
	off := sb.lay.sbOff(sb.seq)
	_, err := v.f.WriteAt(v.sbBuf, off)
	v.ss.modified()
	if err != nil {
		return fmt.Errorf("write superblock at offset %d: %w", off, err)
	}
	if err := v.datasync(); err != nil {
		return fmt.Errorf("superblock: %w", err)
	}
	return nil
}

// SetEpoch records the last epoch seen, durably before it returns. It
// refuses to go backwards (ErrStaleEpoch); recording the same epoch again
// costs no I/O.
func (v *LocalVolume) SetEpoch(ctx context.Context, e uint64) error {
	return v.updateMeta(ctx, "set epoch", func(m *Meta) error {
		switch {
		case e < m.Epoch:
			return fmt.Errorf("epoch %d < recorded epoch %d: %w", e, m.Epoch, ErrStaleEpoch)
		case e == m.Epoch:
			return errNoChange
		}
		m.Epoch = e
		return nil
	})
}

// SetGenerations records the generation identifiers durably.
func (v *LocalVolume) SetGenerations(ctx context.Context, g Generations) error {
	return v.updateMeta(ctx, "set generations", func(m *Meta) error {
		if m.Generations == g {
			return errNoChange
		}
		m.Generations = g
		return nil
	})
}

// SetDiskState records the local disk state durably.
func (v *LocalVolume) SetDiskState(ctx context.Context, s DiskState) error {
	return v.updateMeta(ctx, "set disk state", func(m *Meta) error {
		if !s.valid() {
			return fmt.Errorf("invalid disk state %d", s)
		}
		if m.DiskState == s {
			return errNoChange
		}
		m.DiskState = s
		return nil
	})
}

// SetPeerFlags records a peer slot's flags durably.
func (v *LocalVolume) SetPeerFlags(ctx context.Context, slot int, f PeerFlags) error {
	return v.updateMeta(ctx, "set peer flags", func(m *Meta) error {
		if slot < 0 || slot >= m.MaxPeers {
			return fmt.Errorf("peer slot %d out of range [0, %d)", slot, m.MaxPeers)
		}
		if m.Peers[slot].Flags == f {
			return errNoChange
		}
		m.Peers[slot].Flags = f
		return nil
	})
}

// AssignPeer names the peer that owns a bitmap slot; "" frees the slot.
// Giving a slot to a different peer resets its flags and marks its whole
// bitmap dirty first (durably): a peer we know nothing about must get a full
// resync unless replication, comparing generations, clears the bitmap.
// Assigning the name the slot already holds is a no-op.
func (v *LocalVolume) AssignPeer(ctx context.Context, slot int, name string) error {
	if err := checkPeerName(name); err != nil {
		return fmt.Errorf("blockstore: assign peer: %w", err)
	}
	m := v.Meta()
	if slot < 0 || slot >= m.MaxPeers {
		return fmt.Errorf("blockstore: assign peer: slot %d out of range [0, %d)", slot, m.MaxPeers)
	}
	if m.Peers[slot].Name == name {
		return nil
	}
	for i, p := range m.Peers {
		if name != "" && p.Name == name {
			return fmt.Errorf("blockstore: assign peer: peer %q already holds slot %d", name, i)
		}
	}
	if name != "" {
		// Write-ahead: the bitmap is all-dirty before the slot names the
		// peer, so a crash in between leaves a safe state.
		if err := v.SetAllDirty(ctx, slot); err != nil {
			return fmt.Errorf("blockstore: assign peer %q to slot %d: %w", name, slot, err)
		}
	}
	return v.updateMeta(ctx, "assign peer", func(m *Meta) error {
		for i, p := range m.Peers {
			if i != slot && name != "" && p.Name == name {
				return fmt.Errorf("peer %q already holds slot %d", name, i)
			}
		}
		m.Peers[slot] = PeerSlot{Name: name}
		return nil
	})
}

// readSuperblock finds the superblock of a file or device of devSize bytes
// (see the format above). damaged describes a version 2 copy that is not
// valid while the other one is, which Open logs; the next metadata change
// rewrites it. When no valid copy exists the error names what is wrong
// with each.
func readSuperblock(path string, d diskFile, buf []byte, devSize int64) (sb *superblock, damaged string, err error) {
	last := devSize - blockSize
	if _, err := d.ReadAt(buf, last); err != nil {
		return nil, "", fmt.Errorf("blockstore: open %s: read superblock at offset %d: %w", path, last, err)
	}
	sb0, problem0 := decodeSuperblock(buf, devSize)
	zero0 := allZero(buf)
	if string(buf[:8]) == sbMagic && binary.LittleEndian.Uint32(buf[8:]) == formatV1 {
		// Version 1: the block before it is a bitmap block.
		if problem0 != "" {
			return nil, "", &MetadataError{Path: path, Block: "superblock", Offset: last, Problem: problem0}
		}
		return sb0, "", nil
	}
	if problem0 == "" && sb0.seq%2 != 0 {
		sb0, problem0 = nil, fmt.Sprintf("sequence number %d is odd, which belongs in the other copy: a misdirected write", sb0.seq)
	}
	if devSize < 3*blockSize {
		return nil, "", &MetadataError{Path: path, Block: "superblock", Offset: last, Problem: problem0}
	}
	prev := devSize - 2*blockSize
	if _, err := d.ReadAt(buf, prev); err != nil {
		return nil, "", fmt.Errorf("blockstore: open %s: read superblock copy at offset %d: %w", path, prev, err)
	}
	sb1, problem1 := decodeSuperblock(buf, devSize)
	zero1 := allZero(buf)
	switch {
	case problem1 == "" && sb1.lay.version == formatV1:
		sb1, problem1 = nil, "a version 1 superblock where only a version 2 copy may be"
	case problem1 == "" && sb1.seq%2 != 1:
		sb1, problem1 = nil, fmt.Sprintf("sequence number %d is even, which belongs in the other copy: a misdirected write", sb1.seq)
	}
	switch {
	case sb0 != nil && sb1 != nil:
		if sb0.meta.VolumeID != sb1.meta.VolumeID || sb0.lay != sb1.lay {
			return nil, "", &MetadataError{Path: path, Block: "superblock", Offset: last,
				Problem: "the two superblock copies describe different volumes or layouts"}
		}
		if sb1.seq > sb0.seq {
			return sb1, "", nil
		}
		return sb0, "", nil
	case sb0 != nil && zero1 && sb0.seq <= 1, sb1 != nil && zero0 && sb1.seq <= 1:
		// Freshly formatted: only the first copy was written yet.
		return cmp.Or(sb0, sb1), "", nil
	case sb0 != nil:
		return sb0, fmt.Sprintf("superblock copy at offset %d: %s", prev, problem1), nil
	case sb1 != nil:
		return sb1, fmt.Sprintf("superblock copy at offset %d: %s", last, problem0), nil
	}
	return nil, "", &MetadataError{Path: path, Block: "superblock", Offset: last,
		Problem: fmt.Sprintf("%s; and the copy at offset %d: %s", problem0, prev, problem1)}
}
