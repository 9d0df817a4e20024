package chaos

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"hash/fnv"
)

// BlockSize is the unit the workload writes and checks.
const BlockSize = 4096

// stampMagic opens every block the workload writes.
var stampMagic = [4]byte{'T', 'D', 'C', 'S'}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Stamp identifies one write: which volume and block it was for and which
// generation of that block it is. The rest of the block is a pattern
// derived from the stamp, covered by a CRC, so a torn or misdirected block
// is told apart from an old one.
type Stamp struct {
	Volume string
	Block  uint64
	Gen    uint64
	Client uint32
}

// Layout of a stamped block (little endian):
//
//	0:4   magic "TDCS"
//	4:8   CRC-32C of bytes 8:4096
//	8:16  block   16:24 gen   24:28 client
//	28    volume name length (≤ 32)   29:61 volume name
//	64:   pattern seeded from (volume, block, gen)
const stampHeader = 64

// Encode returns the 4 KiB block for s.
func (s Stamp) Encode() []byte {
	b := make([]byte, BlockSize)
	copy(b[0:4], stampMagic[:])
	binary.LittleEndian.PutUint64(b[8:], s.Block)
	binary.LittleEndian.PutUint64(b[16:], s.Gen)
	binary.LittleEndian.PutUint32(b[24:], s.Client)
	name := s.Volume
	if len(name) > 32 {
		name = name[:32]
	}
	b[28] = byte(len(name))
	copy(b[29:], name)
	h := fnv.New64a()
	fmt.Fprintf(h, "%s/%d/%d", s.Volume, s.Block, s.Gen)
	x := h.Sum64() | 1
	for i := stampHeader; i < BlockSize; i += 8 {
		// xorshift64: cheap, and every word differs.
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		binary.LittleEndian.PutUint64(b[i:], x)
	}
	binary.LittleEndian.PutUint32(b[4:], crc32.Checksum(b[8:], castagnoli))
	return b
}

// BlockState classifies what a block holds.
type BlockState string

const (
	BlockZero    BlockState = "zero"    // never written (all zeroes)
	BlockStamped BlockState = "stamped" // a whole, valid stamp
	BlockTorn    BlockState = "torn"    // anything else: a torn or foreign write
)

// Decode reads a block back. A block that is neither all zeroes nor a valid
// stamp is BlockTorn.
func Decode(b []byte) (Stamp, BlockState) {
	if len(b) != BlockSize {
		return Stamp{}, BlockTorn
	}
	if !bytes.Equal(b[0:4], stampMagic[:]) {
		for _, c := range b {
			if c != 0 {
				return Stamp{}, BlockTorn
			}
		}
		return Stamp{}, BlockZero
	}
	if binary.LittleEndian.Uint32(b[4:]) != crc32.Checksum(b[8:], castagnoli) || b[28] > 32 {
		return Stamp{}, BlockTorn
	}
	s := Stamp{
		Block:  binary.LittleEndian.Uint64(b[8:]),
		Gen:    binary.LittleEndian.Uint64(b[16:]),
		Client: binary.LittleEndian.Uint32(b[24:]),
		Volume: string(b[29 : 29+int(b[28])]),
	}
	// The CRC covers the pattern, but a block written whole for another
	// stamp also has a valid CRC: the checker compares the stamp's volume
	// and block with where it was read.
	return s, BlockStamped
}
