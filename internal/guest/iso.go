package guest

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"strings"
	"unicode/utf16"
)

// The test guest reads its cloud-init seed from the raw block device: its
// kernel has no isofs module, and a read-only ISO 9660 root directory is a
// few records to parse. Only the root directory is searched (a NoCloud
// seed has no subdirectories), in the Joliet tree when there is one (the
// long names), else the primary one.

const isoSector = 2048

// ISOLabel is the volume identifier of the ISO 9660 image r holds.
func ISOLabel(r io.ReaderAt) (string, error) {
	pvd, err := isoDescriptor(r, 1)
	if err != nil {
		return "", err
	}
	return strings.TrimRight(string(pvd[40:72]), " "), nil
}

// ReadISOFile returns the file name from the root directory of the ISO
// 9660 image r holds, at most max bytes of it.
func ReadISOFile(r io.ReaderAt, name string, max int) ([]byte, error) {
	vd, err := isoDescriptor(r, 2) // Joliet
	joliet := err == nil && isJoliet(vd)
	if !joliet {
		if vd, err = isoDescriptor(r, 1); err != nil {
			return nil, err
		}
	}
	root := vd[156 : 156+34]
	extent, size := binary.LittleEndian.Uint32(root[2:]), binary.LittleEndian.Uint32(root[10:])
	if size > 1<<20 {
		return nil, fmt.Errorf("iso: root directory of %d bytes", size)
	}
	dir := make([]byte, size)
	if _, err := r.ReadAt(dir, int64(extent)*isoSector); err != nil {
		return nil, fmt.Errorf("iso: root directory: %w", err)
	}
	for off := 0; off < len(dir); {
		n := int(dir[off])
		if n == 0 { // records do not cross sectors: go to the next one
			off = (off/isoSector + 1) * isoSector
			continue
		}
		if off+n > len(dir) || n < 34 || 33+int(dir[off+32]) > n {
			return nil, fmt.Errorf("iso: malformed directory record at %d", off)
		}
		rec := dir[off : off+n]
		id := rec[33 : 33+int(rec[32])]
		if isoName(id, joliet) == name {
			fext, fsize := binary.LittleEndian.Uint32(rec[2:]), binary.LittleEndian.Uint32(rec[10:])
			if int(fsize) > max {
				return nil, fmt.Errorf("iso: %s is %d bytes, more than %d", name, fsize, max)
			}
			b := make([]byte, fsize)
			if _, err := r.ReadAt(b, int64(fext)*isoSector); err != nil {
				return nil, fmt.Errorf("iso: %s: %w", name, err)
			}
			return b, nil
		}
		off += n
	}
	return nil, fmt.Errorf("iso: no file %s in the root directory", name)
}

// isoDescriptor is the first volume descriptor of type typ (1 primary, 2
// supplementary), from sector 16 up to the set terminator (255).
func isoDescriptor(r io.ReaderAt, typ byte) ([]byte, error) {
	for sec := int64(16); sec < 16+32; sec++ {
		b := make([]byte, isoSector)
		if _, err := r.ReadAt(b, sec*isoSector); err != nil {
			return nil, fmt.Errorf("iso: volume descriptor %d: %w", sec, err)
		}
		if string(b[1:6]) != "CD001" {
			return nil, fmt.Errorf("iso: no ISO 9660 volume descriptor at sector %d", sec)
		}
		switch b[0] {
		case typ:
			return b, nil
		case 255:
			return nil, fmt.Errorf("iso: no volume descriptor of type %d", typ)
		}
	}
	return nil, fmt.Errorf("iso: no volume descriptor of type %d", typ)
}

// isJoliet: a supplementary descriptor with a UCS-2 escape sequence.
func isJoliet(vd []byte) bool {
	esc := vd[88:91]
	return esc[0] == '%' && esc[1] == '/' && bytes.IndexByte([]byte("@CE"), esc[2]) >= 0
}

// isoName is a directory record's file identifier as a name: UCS-2 for
// Joliet, without the ";1" version and a trailing dot.
func isoName(id []byte, joliet bool) string {
	s := string(id)
	if joliet {
		u := make([]uint16, len(id)/2)
		for i := range u {
			u[i] = binary.BigEndian.Uint16(id[2*i:])
		}
		s = string(utf16.Decode(u))
	}
	s, _, _ = strings.Cut(s, ";")
	return strings.TrimSuffix(s, ".")
}
