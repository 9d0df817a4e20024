package replication

import (
	"bytes"
	"errors"
	"testing"
)

func TestFrameRoundTrip(t *testing.T) {
	payload := bytes.Repeat([]byte{0xab}, 4096)
	h := Header{Type: FrameWrite, Flags: FlagFUA, Seq: 7, Epoch: 3, Offset: 8192}
	b := AppendFrame(nil, h, payload)
	var hdr [headerSize]byte
	got, p, err := ReadFrame(bytes.NewReader(b), hdr[:], nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.Type != FrameWrite || got.Flags != FlagFUA || got.Seq != 7 || got.Epoch != 3 || got.Offset != 8192 || int(got.Length) != len(payload) || !bytes.Equal(p, payload) {
		t.Fatalf("round trip: %+v", got)
	}
	// A flipped payload byte is caught by the checksum.
	b[headerSize+100] ^= 1
	if _, _, err := ReadFrame(bytes.NewReader(b), hdr[:], nil); !errors.Is(err, ErrBadCRC) {
		t.Fatalf("corrupt payload: %v", err)
	}
}

func TestDecodeHeaderRejects(t *testing.T) {
	good := AppendFrame(nil, Header{Type: FrameFlush, Seq: 1, Epoch: 1}, nil)
	cases := map[string]func(b []byte){
		"magic":   func(b []byte) { b[0] = 0 },
		"version": func(b []byte) { b[4] = 9 },
		"type":    func(b []byte) { b[5] = 200 },
		"crc":     func(b []byte) { b[39] = 1 },
		"offset":  func(b []byte) { b[24] = 0xff },
		"big hello": func(b []byte) {
			b[5] = byte(FrameHello)
			b[32], b[33] = 0x10, 0
		},
	}
	for name, mut := range cases {
		b := append([]byte(nil), good...)
		mut(b)
		if _, err := DecodeHeader(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := DecodeHeader(good[:10]); err == nil {
		t.Error("short header accepted")
	}
}

func FuzzReadFrame(f *testing.F) {
	f.Add(AppendFrame(nil, Header{Type: FrameWrite, Seq: 1, Epoch: 1, Offset: 4096}, []byte("data")))
	f.Add(AppendFrame(nil, Header{Type: FrameHello}, []byte(`{"volume":"v","from":"n1","epoch":1}`)))
	f.Add(AppendFrame(nil, Header{Type: FrameAck, Flags: uint16(StatusStaleEpoch)}, []byte("stale")))
	f.Add(AppendFrame(nil, Header{Type: FrameSynced, Seq: 9, Epoch: 1}, nil))
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, in []byte) {
		var hdr [headerSize]byte
		h, p, err := ReadFrame(bytes.NewReader(in), hdr[:], nil)
		if err != nil {
			return
		}
		if h.Type.hasPayload() && int(h.Length) != len(p) {
			t.Fatalf("payload length %d, header says %d", len(p), h.Length)
		}
		// What decodes must re-encode to the same bytes.
		out := AppendFrame(nil, h, p)
		if !bytes.Equal(out, in[:len(out)]) {
			t.Fatalf("re-encoding differs")
		}
	})
}
