package replication

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// Frame layout (big-endian), 40 bytes of header then Length bytes of payload
// for frames that carry data (Write, Resync, Hello, HelloAck, Ack text,
// ReadData):
//
//	0  magic   u32 "TDMR"
//	4  version u8
//	5  type    u8
//	6  flags   u16  (write flags on requests; status code on Ack)
//	8  seq     u64  (per connection, assigned by the primary)
//	16 epoch   u64  (the sender's epoch: I1 is checked on every frame)
//	24 offset  u64
//	32 length  u32  (payload bytes, or range length for Trim/Zero)
//	36 crc     u32  (CRC32C of the payload; 0 when there is none)
const (
	frameMagic   uint32 = 0x54444d52
	frameVersion uint8  = 1
	headerSize          = 40
	// MaxPayload bounds one frame's payload: NBD's largest request plus room.
	MaxPayload = 32 << 20
	// maxControlPayload bounds Hello/HelloAck/Ack texts.
	maxControlPayload = 64 << 10
)

// FrameType is the kind of a frame.
type FrameType uint8

// Frame types.
const (
	FrameHello    FrameType = 1 // primary -> secondary: JSON Hello
	FrameHelloAck FrameType = 2 // secondary -> primary: JSON HelloAck
	FrameWrite    FrameType = 3 // data in payload
	FrameFlush    FrameType = 4
	FrameTrim     FrameType = 5 // range in offset/length, no payload
	FrameZero     FrameType = 6 // range in offset/length, no payload
	FrameResync   FrameType = 7 // resync data in payload
	FrameAck      FrameType = 8 // status in flags, optional text payload
	FramePing     FrameType = 9 // keepalive; acked like a request
	// FrameSynced (secondary -> primary, only to a primary whose Hello
	// offered it): every write up to and including Seq is durable here. A
	// flush then needs no round trip to this replica.
	FrameSynced FrameType = 10
	// FrameRead (primary -> secondary, only to a secondary whose HelloAck
	// offered it): read offset/length; ordered in the stream like a write.
	// A primary whose own disk is detached serves reads through it.
	FrameRead FrameType = 11
	// FrameReadData (secondary -> primary) answers a FrameRead of the same
	// Seq with the data; a failed read is answered with an Ack instead.
	FrameReadData FrameType = 12
)

func (t FrameType) String() string {
	switch t {
	case FrameHello:
		return "hello"
	case FrameHelloAck:
		return "hello-ack"
	case FrameWrite:
		return "write"
	case FrameFlush:
		return "flush"
	case FrameTrim:
		return "trim"
	case FrameZero:
		return "zero"
	case FrameResync:
		return "resync"
	case FrameAck:
		return "ack"
	case FramePing:
		return "ping"
	case FrameSynced:
		return "synced"
	case FrameRead:
		return "read"
	case FrameReadData:
		return "read-data"
	}
	return fmt.Sprintf("frame(%d)", uint8(t))
}

// hasPayload reports whether Length counts payload bytes for this type.
func (t FrameType) hasPayload() bool {
	switch t {
	case FrameHello, FrameHelloAck, FrameWrite, FrameResync, FrameAck, FrameReadData:
		return true
	}
	return false
}

// Write flags carried in Header.Flags on requests.
const (
	FlagFUA    uint16 = 1 << 0
	FlagNoHole uint16 = 1 << 1
)

// Status is an Ack's result.
type Status uint16

// Status codes.
const (
	StatusOK Status = iota
	// StatusStaleEpoch: the frame's epoch is not the replica's current one.
	StatusStaleEpoch
	// StatusNotPrimary: the sender is not the primary of that epoch.
	StatusNotPrimary
	StatusOutOfRange
	StatusIO
	StatusBadFrame
	StatusUnknownVolume
	StatusFrozen
	StatusDiverged
	// StatusSuperseded: a newer connection of the sender's own epoch
	// replaced this one on the replica. Not a deposition: the primary
	// fences the peer and resyncs it. (An older primary, not knowing it,
	// fences the peer as for any other refusal.)
	StatusSuperseded
)

func (s Status) String() string {
	switch s {
	case StatusOK:
		return "ok"
	case StatusStaleEpoch:
		return "stale epoch"
	case StatusNotPrimary:
		return "sender is not the primary"
	case StatusOutOfRange:
		return "out of range"
	case StatusIO:
		return "I/O error"
	case StatusBadFrame:
		return "malformed frame"
	case StatusUnknownVolume:
		return "unknown volume"
	case StatusFrozen:
		return "replica frozen"
	case StatusDiverged:
		return "data diverged"
	case StatusSuperseded:
		return "connection superseded"
	}
	return fmt.Sprintf("status(%d)", uint16(s))
}

// Header is a decoded frame header.
type Header struct {
	Type   FrameType
	Flags  uint16
	Seq    uint64
	Epoch  uint64
	Offset uint64
	Length uint32
	CRC    uint32
}

// Decoding errors.
var (
	ErrBadMagic   = errors.New("replication: bad frame magic")
	ErrBadVersion = errors.New("replication: unsupported protocol version")
	ErrBadFrame   = errors.New("replication: malformed frame")
	ErrBadCRC     = errors.New("replication: payload checksum mismatch")
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Checksum is the payload checksum used in frames.
func Checksum(p []byte) uint32 { return crc32.Checksum(p, castagnoli) }

// EncodeHeader writes h into b[:headerSize].
func EncodeHeader(b []byte, h Header) {
	_ = b[headerSize-1]
	binary.BigEndian.PutUint32(b[0:], frameMagic)
	b[4] = frameVersion
	b[5] = byte(h.Type)
	binary.BigEndian.PutUint16(b[6:], h.Flags)
	binary.BigEndian.PutUint64(b[8:], h.Seq)
	binary.BigEndian.PutUint64(b[16:], h.Epoch)
	binary.BigEndian.PutUint64(b[24:], h.Offset)
	binary.BigEndian.PutUint32(b[32:], h.Length)
	binary.BigEndian.PutUint32(b[36:], h.CRC)
}

// DecodeHeader parses and validates a header. It never trusts Length beyond
// MaxPayload, so a corrupt frame cannot make the reader allocate gigabytes.
func DecodeHeader(b []byte) (Header, error) {
	if len(b) < headerSize {
		return Header{}, fmt.Errorf("%w: short header (%d bytes)", ErrBadFrame, len(b))
	}
	if m := binary.BigEndian.Uint32(b[0:]); m != frameMagic {
		return Header{}, fmt.Errorf("%w: %#08x", ErrBadMagic, m)
	}
	if v := b[4]; v != frameVersion {
		return Header{}, fmt.Errorf("%w: %d", ErrBadVersion, v)
	}
	h := Header{
		Type:   FrameType(b[5]),
		Flags:  binary.BigEndian.Uint16(b[6:]),
		Seq:    binary.BigEndian.Uint64(b[8:]),
		Epoch:  binary.BigEndian.Uint64(b[16:]),
		Offset: binary.BigEndian.Uint64(b[24:]),
		Length: binary.BigEndian.Uint32(b[32:]),
		CRC:    binary.BigEndian.Uint32(b[36:]),
	}
	if h.Type < FrameHello || h.Type > FrameReadData {
		return Header{}, fmt.Errorf("%w: unknown type %d", ErrBadFrame, uint8(h.Type))
	}
	if h.Offset > 1<<62 {
		return Header{}, fmt.Errorf("%w: offset %d", ErrBadFrame, h.Offset)
	}
	limit := uint32(MaxPayload)
	switch h.Type {
	case FrameHello, FrameHelloAck, FrameAck:
		limit = maxControlPayload
	}
	if h.Type.hasPayload() && h.Length > limit {
		return Header{}, fmt.Errorf("%w: %s payload of %d bytes exceeds %d", ErrBadFrame, h.Type, h.Length, limit)
	}
	if (!h.Type.hasPayload() || h.Length == 0) && h.CRC != 0 {
		return Header{}, fmt.Errorf("%w: %s frame with a payload checksum", ErrBadFrame, h.Type)
	}
	return h, nil
}

// ReadFrame reads one frame. buf is reused for the payload when large
// enough; the returned payload aliases it.
func ReadFrame(r io.Reader, hdr []byte, buf []byte) (Header, []byte, error) {
	if _, err := io.ReadFull(r, hdr[:headerSize]); err != nil {
		return Header{}, nil, err
	}
	h, err := DecodeHeader(hdr)
	if err != nil {
		return Header{}, nil, err
	}
	if !h.Type.hasPayload() || h.Length == 0 {
		return h, nil, nil
	}
	n := int(h.Length)
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	p := buf[:n]
	if _, err := io.ReadFull(r, p); err != nil {
		return Header{}, nil, fmt.Errorf("%w: payload: %w", ErrBadFrame, err)
	}
	if Checksum(p) != h.CRC {
		return Header{}, nil, ErrBadCRC
	}
	return h, p, nil
}

// AppendFrame appends a complete frame (header and payload) to dst.
func AppendFrame(dst []byte, h Header, payload []byte) []byte {
	if h.Type.hasPayload() {
		h.Length = uint32(len(payload))
		h.CRC = 0
		if len(payload) > 0 {
			h.CRC = Checksum(payload)
		}
	}
	var hb [headerSize]byte
	EncodeHeader(hb[:], h)
	dst = append(dst, hb[:]...)
	if h.Type.hasPayload() {
		dst = append(dst, payload...)
	}
	return dst
}

// Hello opens a replication connection for one volume.
type Hello struct {
	Volume string `json:"volume"`
	// From is the sender's node name; the secondary also checks it against
	// the TLS identity.
	From  string `json:"from"`
	Epoch uint64 `json:"epoch"`
	// Size guards against attaching a replica of another size.
	Size int64 `json:"size"`
	// VolumeID is the primary's on-disk volume UUID (hex); unrelated data
	// is refused.
	VolumeID string `json:"volume_id"`
	// Synced says the primary understands FrameSynced.
	Synced bool `json:"synced,omitempty"`
	// Plain asks to carry the frames after the HelloAck unencrypted, on
	// the connection under TLS (see leaveTLS); older primaries leave it
	// unset and stay in TLS.
	Plain bool `json:"plain,omitempty"`
}

// HelloAck answers a Hello.
type HelloAck struct {
	Status   Status `json:"status"`
	Message  string `json:"message,omitempty"`
	Epoch    uint64 `json:"epoch"`
	VolumeID string `json:"volume_id"`
	// Activity lists regions this replica may have written as a primary
	// without acknowledgement; the primary resyncs them too. ActivityFull
	// means too many to list: resync everything.
	Activity     [][2]int64 `json:"activity,omitempty"`
	ActivityFull bool       `json:"activity_full,omitempty"`
	// Reads says the secondary serves FrameRead (a diskless primary's
	// reads); older secondaries leave it unset and are never sent one.
	Reads bool `json:"reads,omitempty"`
	// Plain agrees to a Hello's Plain: both sides leave TLS right after
	// this frame. Only ever set in answer to a Hello that asked, with
	// StatusOK; older secondaries leave it unset and stay in TLS.
	Plain bool `json:"plain,omitempty"`
}

// Data streams of a replication connection after its handshake
// (PeerStatus.Stream).
const (
	// StreamTLS: the frames stay in the TLS session.
	StreamTLS = "tls"
	// StreamPlain: both sides asked for it in the Hello and HelloAck,
	// which still went through the mutually authenticated TLS session;
	// the frames after them are unencrypted on the same TCP connection.
	StreamPlain = "plain"
)
