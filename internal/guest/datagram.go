package guest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"
)

// DatagramMagic opens every heartbeat datagram; it also versions the layout.
const DatagramMagic = "TDMBEAT1"

// DatagramSize is the encoded size of a Datagram.
//
// Layout, all integers big-endian:
//
//	off len field
//	  0   8 magic "TDMBEAT1"
//	  8   8 boot   (boot count read from the disk; 0 without a disk)
//	 16   8 seq    (per agent process, from 1; survives live migration)
//	 24   8 acked  (last disk counter whose O_SYNC write returned; 0: none)
//	 32   8 mono   (guest CLOCK_MONOTONIC, nanoseconds)
//	 40   4 crc32  (IEEE, of bytes 0..39)
const DatagramSize = 44

// Datagram is one heartbeat of the guest agent.
type Datagram struct {
	Boot  uint64
	Seq   uint64
	Acked uint64
	Mono  time.Duration
}

// ErrMalformed is wrapped by every Decode and DecodeDiskState error.
var ErrMalformed = errors.New("malformed")

// Encode returns the wire form of d.
func (d Datagram) Encode() []byte {
	b := make([]byte, DatagramSize)
	copy(b, DatagramMagic)
	binary.BigEndian.PutUint64(b[8:], d.Boot)
	binary.BigEndian.PutUint64(b[16:], d.Seq)
	binary.BigEndian.PutUint64(b[24:], d.Acked)
	binary.BigEndian.PutUint64(b[32:], uint64(d.Mono))
	binary.BigEndian.PutUint32(b[40:], crc32.ChecksumIEEE(b[:40]))
	return b
}

// DecodeDatagram parses b, which must be exactly one encoded Datagram.
func DecodeDatagram(b []byte) (Datagram, error) {
	if len(b) != DatagramSize {
		return Datagram{}, fmt.Errorf("datagram: %d bytes, want %d: %w", len(b), DatagramSize, ErrMalformed)
	}
	if string(b[:8]) != DatagramMagic {
		return Datagram{}, fmt.Errorf("datagram: bad magic %q: %w", b[:8], ErrMalformed)
	}
	if got, want := binary.BigEndian.Uint32(b[40:]), crc32.ChecksumIEEE(b[:40]); got != want {
		return Datagram{}, fmt.Errorf("datagram: crc %08x, want %08x: %w", got, want, ErrMalformed)
	}
	return Datagram{
		Boot:  binary.BigEndian.Uint64(b[8:]),
		Seq:   binary.BigEndian.Uint64(b[16:]),
		Acked: binary.BigEndian.Uint64(b[24:]),
		Mono:  time.Duration(binary.BigEndian.Uint64(b[32:])),
	}, nil
}

// DiskMagic opens the agent's counter block (block 0 of its disk).
const DiskMagic = "TDMGUEST"

// DiskBlockSize is the size of the agent's aligned O_DIRECT write; the state
// is at its start and the rest is zero.
//
// Layout, all integers big-endian:
//
//	off len field
//	  0   8 magic "TDMGUEST"
//	  8   8 counter
//	 16   8 boot
//	 24   4 crc32 (IEEE, of bytes 0..23)
const DiskBlockSize = 4096

const diskStateSize = 28

// DiskState is the agent's durable counter.
type DiskState struct {
	Counter uint64
	Boot    uint64
}

// EncodeTo writes s into the start of b, which must hold at least 28 bytes.
func (s DiskState) EncodeTo(b []byte) {
	copy(b, DiskMagic)
	binary.BigEndian.PutUint64(b[8:], s.Counter)
	binary.BigEndian.PutUint64(b[16:], s.Boot)
	binary.BigEndian.PutUint32(b[24:], crc32.ChecksumIEEE(b[:24]))
}

// DecodeDiskState parses the start of a counter block. A block that never
// held a state (a fresh disk) fails with ErrMalformed too.
func DecodeDiskState(b []byte) (DiskState, error) {
	if len(b) < diskStateSize {
		return DiskState{}, fmt.Errorf("disk state: %d bytes, want at least %d: %w", len(b), diskStateSize, ErrMalformed)
	}
	if string(b[:8]) != DiskMagic {
		return DiskState{}, fmt.Errorf("disk state: bad magic %q: %w", b[:8], ErrMalformed)
	}
	if got, want := binary.BigEndian.Uint32(b[24:]), crc32.ChecksumIEEE(b[:24]); got != want {
		return DiskState{}, fmt.Errorf("disk state: crc %08x, want %08x: %w", got, want, ErrMalformed)
	}
	return DiskState{Counter: binary.BigEndian.Uint64(b[8:]), Boot: binary.BigEndian.Uint64(b[16:])}, nil
}
