package guest

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestDatagramRoundTrip(t *testing.T) {
	d := Datagram{Boot: 3, Seq: 1 << 40, Acked: 12345, Mono: 7 * time.Second}
	b := d.Encode()
	if len(b) != DatagramSize {
		t.Fatalf("encoded %d bytes, want %d", len(b), DatagramSize)
	}
	got, err := DecodeDatagram(b)
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	if got != d {
		t.Fatalf("round trip: got %+v, want %+v", got, d)
	}
}

func TestDecodeDatagramRejects(t *testing.T) {
	good := Datagram{Seq: 1}.Encode()
	flipped := bytes.Clone(good)
	flipped[20] ^= 1
	badMagic := bytes.Clone(good)
	badMagic[0] = 'X'
	for name, b := range map[string][]byte{
		"empty":     nil,
		"short":     good[:DatagramSize-1],
		"long":      append(bytes.Clone(good), 0),
		"bad magic": badMagic,
		"bad crc":   flipped,
		"disk":      diskBlock(DiskState{Counter: 1}),
	} {
		if _, err := DecodeDatagram(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err %v, want ErrMalformed", name, err)
		}
	}
}

func diskBlock(s DiskState) []byte {
	b := make([]byte, DiskBlockSize)
	s.EncodeTo(b)
	return b
}

func TestDiskStateRoundTrip(t *testing.T) {
	s := DiskState{Counter: 99, Boot: 2}
	got, err := DecodeDiskState(diskBlock(s))
	if err != nil || got != s {
		t.Fatalf("got %+v, %v; want %+v", got, err, s)
	}
	if _, err := DecodeDiskState(make([]byte, DiskBlockSize)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("zero block: err %v, want ErrMalformed", err)
	}
	b := diskBlock(s)
	b[9] ^= 0x80
	if _, err := DecodeDiskState(b); !errors.Is(err, ErrMalformed) {
		t.Fatalf("corrupt block: err %v, want ErrMalformed", err)
	}
}

func FuzzDecodeDatagram(f *testing.F) {
	f.Add(Datagram{Boot: 1, Seq: 2, Acked: 3, Mono: 4}.Encode())
	f.Add(Datagram{Boot: 1, Seq: 2, Acked: 3, Mono: 4, DiskBytes: 128 << 20}.Encode())
	f.Add(Datagram{Boot: 1, Seq: 2, Acked: 3, Mono: 4, CloudInit: "v-123"}.Encode())
	f.Add(Datagram{Boot: 1, Seq: 2, Acked: 3, Mono: 4, DiskBytes: 64 << 20, CloudInit: "x"}.Encode())
	f.Add(Datagram{Boot: 1, Seq: 2, Acked: 3, Mono: 4, CloudInit: "x", EFIVar: "y"}.Encode())
	f.Add([]byte(DatagramMagic))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := DecodeDatagram(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		// Whatever decodes must be exactly its own encoding.
		if !bytes.Equal(d.Encode(), b) {
			t.Fatalf("decoded %+v from %x, which encodes differently", d, b)
		}
	})
}

func TestDatagramDiskSizeTrailer(t *testing.T) {
	d := Datagram{Boot: 2, Seq: 9, Acked: 7, Mono: 5, DiskBytes: 128 << 20}
	b := d.Encode()
	if len(b) != DatagramSize+diskTrailerSize {
		t.Fatalf("encoded %d bytes", len(b))
	}
	got, err := DecodeDatagram(b)
	if err != nil || got != d {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	// Without the size, the datagram is exactly the old one.
	d.DiskBytes = 0
	if len(d.Encode()) != DatagramSize {
		t.Fatal("a datagram without a disk size grew")
	}
	bad := bytes.Clone(b)
	bad[DatagramSize+6] ^= 1
	if _, err := DecodeDatagram(bad); !errors.Is(err, ErrMalformed) {
		t.Fatalf("corrupt trailer: %v", err)
	}
	bad = bytes.Clone(b)
	copy(bad[DatagramSize:], "XXXX")
	if _, err := DecodeDatagram(bad); !errors.Is(err, ErrMalformed) {
		t.Fatalf("unknown trailer: %v", err)
	}
}

func TestDatagramCloudInitTrailer(t *testing.T) {
	for _, d := range []Datagram{
		{Boot: 2, Seq: 9, Acked: 7, Mono: 5, CloudInit: "ci-4f2a"},
		{Boot: 2, Seq: 9, Acked: 7, Mono: 5, DiskBytes: 128 << 20, CloudInit: strings.Repeat("z", MaxCloudInitValue)},
		{Boot: 3, Seq: 1, EFIVar: "0123456789abcdef"},
		{Boot: 3, Seq: 1, DiskBytes: 64 << 20, CloudInit: "ci", EFIVar: "e"},
	} {
		b := d.Encode()
		got, err := DecodeDatagram(b)
		if err != nil || got != d {
			t.Fatalf("round trip of %+v: %+v, %v", d, got, err)
		}
		// Every corrupted byte of the trailer is caught.
		start := DatagramSize
		if d.DiskBytes != 0 {
			start += diskTrailerSize
		}
		for i := start; i < len(b); i++ {
			bad := bytes.Clone(b)
			bad[i] ^= 0x40
			if _, err := DecodeDatagram(bad); !errors.Is(err, ErrMalformed) {
				t.Fatalf("byte %d corrupted: %v", i, err)
			}
		}
		if _, err := DecodeDatagram(b[:len(b)-1]); !errors.Is(err, ErrMalformed) {
			t.Fatalf("truncated: %v", err)
		}
	}
	// A too long value is cut, not sent as a datagram nobody decodes.
	long := Datagram{Seq: 1, CloudInit: strings.Repeat("y", 100)}
	if got, err := DecodeDatagram(long.Encode()); err != nil || len(got.CloudInit) != MaxCloudInitValue {
		t.Fatalf("long value: %q, %v", got.CloudInit, err)
	}
	// The EFI trailer comes last: before the cloud-init one it is refused.
	ci, efi := Datagram{Seq: 1, CloudInit: "c"}.Encode()[DatagramSize:], Datagram{Seq: 1, EFIVar: "e"}.Encode()[DatagramSize:]
	swapped := append(append(Datagram{Seq: 1}.Encode(), efi...), ci...)
	if _, err := DecodeDatagram(swapped); !errors.Is(err, ErrMalformed) {
		t.Fatalf("trailers out of order: %v", err)
	}
	// Without a value the datagram is the old one.
	if len(Datagram{Seq: 1}.Encode()) != DatagramSize {
		t.Fatal("a datagram without a cloud-init value grew")
	}
}

func TestCloudInitTestValue(t *testing.T) {
	for in, want := range map[string]string{
		"#cloud-config\ntandem_test_value: abc123\n":      "abc123",
		"#cloud-config\n  tandem_test_value: \"q v\"\r\n": "q v",
		"#cloud-config\nhostname: x\n":                    "",
		"":                                                "",
	} {
		if got := CloudInitTestValue([]byte(in)); got != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
}
