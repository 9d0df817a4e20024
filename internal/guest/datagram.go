package guest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"strings"
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
	// DiskBytes is the size of the counter disk as the guest kernel sees it
	// (/sys/block/DEV/size × 512); 0 means not reported, and then the
	// datagram has no disk-size trailer.
	DiskBytes uint64
	// CloudInit is the value of the line "tandem_test_value: V" in the
	// user-data of the guest's cloud-init seed (tandem.cidata), at most
	// MaxCloudInitValue bytes; "" means not reported, and then the datagram
	// has no cloud-init trailer.
	CloudInit string
	// EFIVar is the value of the UEFI variable the agent keeps in the
	// firmware's store (tandem.efivar=on): made once, random, then only
	// read, so a value that survives a restart shows that the variable
	// store followed the VM. At most MaxCloudInitValue bytes; "" means not
	// reported, and then the datagram has no EFI trailer.
	EFIVar string
}

// The disk-size trailer, appended after the DatagramSize bytes when
// DiskBytes is set (so an agent that does not report it sends what older
// receivers expect):
//
//	off len field
//	  0   4 tag "DSZ1"
//	  4   8 disk bytes
//	 12   4 crc32 (IEEE, of trailer bytes 0..11)
const (
	diskTrailerTag  = "DSZ1"
	diskTrailerSize = 16
)

// The cloud-init trailer, after the disk-size trailer if there is one,
// when CloudInit is set:
//
//	off   len field
//	  0     4 tag "CIV1"
//	  4     1 n, the value's length (1..MaxCloudInitValue)
//	  5     n value
//	  5+n   4 crc32 (IEEE, of trailer bytes 0..4+n)
//
// The EFI trailer, last, when EFIVar is set, has the same layout with the
// tag "EFV1".
const (
	cloudTrailerTag = "CIV1"
	efiTrailerTag   = "EFV1"
	// MaxCloudInitValue bounds Datagram.CloudInit and Datagram.EFIVar.
	MaxCloudInitValue = 64
)

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
	if d.DiskBytes != 0 {
		t := make([]byte, diskTrailerSize)
		copy(t, diskTrailerTag)
		binary.BigEndian.PutUint64(t[4:], d.DiskBytes)
		binary.BigEndian.PutUint32(t[12:], crc32.ChecksumIEEE(t[:12]))
		b = append(b, t...)
	}
	b = appendValueTrailer(b, cloudTrailerTag, d.CloudInit)
	return appendValueTrailer(b, efiTrailerTag, d.EFIVar)
}

// appendValueTrailer appends a tagged string trailer (see the cloud-init
// trailer) when v is set.
func appendValueTrailer(b []byte, tag, v string) []byte {
	if v == "" {
		return b
	}
	if len(v) > MaxCloudInitValue {
		v = v[:MaxCloudInitValue]
	}
	t := append([]byte(tag), byte(len(v)))
	t = append(t, v...)
	return binary.BigEndian.AppendUint32(append(b, t...), crc32.ChecksumIEEE(t))
}

// valueTrailer reads a tagged string trailer at the start of t, if there
// is one, and returns its value and what follows it.
func valueTrailer(t []byte, tag, what string) (string, []byte, error) {
	if len(t) < 4 || string(t[:4]) != tag {
		return "", t, nil
	}
	if len(t) < 5 || len(t) < 5+int(t[4])+4 {
		return "", nil, fmt.Errorf("datagram: short %s trailer: %w", what, ErrMalformed)
	}
	n := int(t[4])
	if n == 0 || n > MaxCloudInitValue {
		return "", nil, fmt.Errorf("datagram: %s value of %d bytes: %w", what, n, ErrMalformed)
	}
	if got, want := binary.BigEndian.Uint32(t[5+n:]), crc32.ChecksumIEEE(t[:5+n]); got != want {
		return "", nil, fmt.Errorf("datagram: %s trailer crc %08x, want %08x: %w", what, got, want, ErrMalformed)
	}
	return string(t[5 : 5+n]), t[5+n+4:], nil
}

// DecodeDatagram parses b, which must be exactly one encoded Datagram:
// the fixed part, then the optional trailers in their order.
func DecodeDatagram(b []byte) (Datagram, error) {
	if len(b) < DatagramSize {
		return Datagram{}, fmt.Errorf("datagram: %d bytes, want at least %d: %w", len(b), DatagramSize, ErrMalformed)
	}
	if string(b[:8]) != DatagramMagic {
		return Datagram{}, fmt.Errorf("datagram: bad magic %q: %w", b[:8], ErrMalformed)
	}
	if got, want := binary.BigEndian.Uint32(b[40:]), crc32.ChecksumIEEE(b[:40]); got != want {
		return Datagram{}, fmt.Errorf("datagram: crc %08x, want %08x: %w", got, want, ErrMalformed)
	}
	d := Datagram{
		Boot:  binary.BigEndian.Uint64(b[8:]),
		Seq:   binary.BigEndian.Uint64(b[16:]),
		Acked: binary.BigEndian.Uint64(b[24:]),
		Mono:  time.Duration(binary.BigEndian.Uint64(b[32:])),
	}
	t := b[DatagramSize:]
	if len(t) >= 4 && string(t[:4]) == diskTrailerTag {
		if len(t) < diskTrailerSize {
			return Datagram{}, fmt.Errorf("datagram: short disk-size trailer: %w", ErrMalformed)
		}
		if got, want := binary.BigEndian.Uint32(t[12:]), crc32.ChecksumIEEE(t[:12]); got != want {
			return Datagram{}, fmt.Errorf("datagram: disk-size trailer crc %08x, want %08x: %w", got, want, ErrMalformed)
		}
		if d.DiskBytes = binary.BigEndian.Uint64(t[4:]); d.DiskBytes == 0 {
			return Datagram{}, fmt.Errorf("datagram: disk-size trailer with size 0: %w", ErrMalformed)
		}
		t = t[diskTrailerSize:]
	}
	var err error
	if d.CloudInit, t, err = valueTrailer(t, cloudTrailerTag, "cloud-init"); err != nil {
		return Datagram{}, err
	}
	if d.EFIVar, t, err = valueTrailer(t, efiTrailerTag, "EFI"); err != nil {
		return Datagram{}, err
	}
	if len(t) > 0 {
		return Datagram{}, fmt.Errorf("datagram: %d bytes of unknown trailer: %w", len(t), ErrMalformed)
	}
	return d, nil
}

// CloudInitTestValue is the value of the first line
// "tandem_test_value: V" of a user-data (quotes around V dropped), "" if
// there is none: what the test guest reports from its seed.
func CloudInitTestValue(userData []byte) string {
	for line := range strings.Lines(string(userData)) {
		v, ok := strings.CutPrefix(strings.TrimSpace(line), "tandem_test_value:")
		if !ok {
			continue
		}
		v = strings.Trim(strings.TrimSpace(v), `"'`)
		if len(v) > MaxCloudInitValue {
			v = v[:MaxCloudInitValue]
		}
		return v
	}
	return ""
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
