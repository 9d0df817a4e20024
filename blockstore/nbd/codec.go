package nbd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// The codec: pure encoders and decoders for every message the server reads
// or writes. No state and no I/O beyond the io.Reader/io.Writer handed in,
// so it can be fuzzed on its own.

var (
	errBadMagic   = errors.New("bad magic")
	errBadOption  = errors.New("malformed option data")
	errShortFrame = errors.New("truncated frame")
)

var be = binary.BigEndian

// writeGreeting sends the fixed-newstyle server greeting.
func writeGreeting(w io.Writer) error {
	var b [18]byte
	be.PutUint64(b[0:], magicNBD)
	be.PutUint64(b[8:], magicIHaveOpt)
	be.PutUint16(b[16:], flagFixedNewstyle|flagNoZeroes)
	_, err := w.Write(b[:])
	return err
}

// readClientFlags reads the client's 32-bit flags that answer the greeting.
func readClientFlags(r io.Reader) (uint32, error) {
	var b [4]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return 0, err
	}
	return be.Uint32(b[:]), nil
}

// optionHeader is the fixed part of a client option.
type optionHeader struct {
	Option uint32
	Length uint32
}

func decodeOptionHeader(b []byte) (optionHeader, error) {
	if len(b) < optionHeaderLen {
		return optionHeader{}, errShortFrame
	}
	if m := be.Uint64(b); m != magicIHaveOpt {
		return optionHeader{}, fmt.Errorf("%w: option magic %#x", errBadMagic, m)
	}
	return optionHeader{Option: be.Uint32(b[8:]), Length: be.Uint32(b[12:])}, nil
}

func readOptionHeader(r io.Reader) (optionHeader, error) {
	var b [optionHeaderLen]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return optionHeader{}, err
	}
	return decodeOptionHeader(b[:])
}

// appendOptionReply appends one fixed-newstyle option reply.
func appendOptionReply(b []byte, opt, typ uint32, data []byte) []byte {
	b = be.AppendUint64(b, magicOptReply)
	b = be.AppendUint32(b, opt)
	b = be.AppendUint32(b, typ)
	b = be.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

// infoRequest is the payload of NBD_OPT_INFO and NBD_OPT_GO.
type infoRequest struct {
	Name  string
	Infos []uint16
}

// has reports whether the client asked for an information type.
func (r infoRequest) has(t uint16) bool {
	for _, i := range r.Infos {
		if i == t {
			return true
		}
	}
	return false
}

func decodeInfoRequest(data []byte) (infoRequest, error) {
	if len(data) < 6 {
		return infoRequest{}, fmt.Errorf("%w: %d bytes is shorter than 6", errBadOption, len(data))
	}
	nameLen := uint64(be.Uint32(data))
	if nameLen > uint64(len(data)-6) {
		return infoRequest{}, fmt.Errorf("%w: name length %d exceeds option data", errBadOption, nameLen)
	}
	if nameLen > maxStringLen {
		return infoRequest{}, fmt.Errorf("%w: name longer than %d bytes", errBadOption, maxStringLen)
	}
	rest := data[4+nameLen:]
	n := int(be.Uint16(rest))
	rest = rest[2:]
	if len(rest) != 2*n {
		return infoRequest{}, fmt.Errorf("%w: %d info requests need %d bytes, have %d", errBadOption, n, 2*n, len(rest))
	}
	req := infoRequest{Name: string(data[4 : 4+nameLen]), Infos: make([]uint16, n)}
	for i := range req.Infos {
		req.Infos[i] = be.Uint16(rest[2*i:])
	}
	return req, nil
}

func encodeInfoRequest(r infoRequest) []byte {
	b := be.AppendUint32(nil, uint32(len(r.Name)))
	b = append(b, r.Name...)
	b = be.AppendUint16(b, uint16(len(r.Infos)))
	for _, i := range r.Infos {
		b = be.AppendUint16(b, i)
	}
	return b
}

func appendInfoExport(b []byte, size uint64, flags uint16) []byte {
	b = be.AppendUint16(b, infoExport)
	b = be.AppendUint64(b, size)
	return be.AppendUint16(b, flags)
}

func appendInfoBlockSize(b []byte, minB, prefB, maxB uint32) []byte {
	b = be.AppendUint16(b, infoBlockSize)
	b = be.AppendUint32(b, minB)
	b = be.AppendUint32(b, prefB)
	return be.AppendUint32(b, maxB)
}

func appendInfoString(b []byte, typ uint16, s string) []byte {
	b = be.AppendUint16(b, typ)
	return append(b, s...)
}

// appendServerEntry builds the payload of one NBD_REP_SERVER reply.
func appendServerEntry(b []byte, name, desc string) []byte {
	b = be.AppendUint32(b, uint32(len(name)))
	b = append(b, name...)
	return append(b, desc...)
}

// appendExportNameReply builds the reply that ends NBD_OPT_EXPORT_NAME.
func appendExportNameReply(b []byte, size uint64, flags uint16, noZeroes bool) []byte {
	b = be.AppendUint64(b, size)
	b = be.AppendUint16(b, flags)
	if !noZeroes {
		b = append(b, make([]byte, 124)...)
	}
	return b
}

// request is a transmission-phase request header.
type request struct {
	Flags  uint16
	Type   uint16
	Handle uint64
	Offset uint64
	Length uint32
}

// checkFrame32 checks that b holds at least a whole frame of n bytes and
// that the frame starts with the 32-bit magic; what names it in errors.
func checkFrame32(b []byte, n int, magic uint32, what string) error {
	if len(b) < n {
		return errShortFrame
	}
	if m := be.Uint32(b); m != magic {
		return fmt.Errorf("%w: %s magic %#x", errBadMagic, what, m)
	}
	return nil
}

func decodeRequest(b []byte) (request, error) {
	if err := checkFrame32(b, requestHeaderLen, magicRequest, "request"); err != nil {
		return request{}, err
	}
	return request{
		Flags:  be.Uint16(b[4:]),
		Type:   be.Uint16(b[6:]),
		Handle: be.Uint64(b[8:]),
		Offset: be.Uint64(b[16:]),
		Length: be.Uint32(b[24:]),
	}, nil
}

func appendRequest(b []byte, r request) []byte {
	b = be.AppendUint32(b, magicRequest)
	b = be.AppendUint16(b, r.Flags)
	b = be.AppendUint16(b, r.Type)
	b = be.AppendUint64(b, r.Handle)
	b = be.AppendUint64(b, r.Offset)
	return be.AppendUint32(b, r.Length)
}

// readRequest reads one request header; buf avoids an allocation per call.
func readRequest(r io.Reader, buf *[requestHeaderLen]byte) (request, error) {
	if _, err := io.ReadFull(r, buf[:]); err != nil {
		return request{}, err
	}
	return decodeRequest(buf[:])
}

// putSimpleReply encodes a simple reply header into b (16 bytes).
func putSimpleReply(b []byte, errno uint32, handle uint64) {
	be.PutUint32(b, magicSimpleReply)
	be.PutUint32(b[4:], errno)
	be.PutUint64(b[8:], handle)
}

// simpleReply is a decoded simple reply header (used by test clients).
type simpleReply struct {
	Error  uint32
	Handle uint64
}

func decodeSimpleReply(b []byte) (simpleReply, error) {
	if err := checkFrame32(b, simpleReplyLen, magicSimpleReply, "reply"); err != nil {
		return simpleReply{}, err
	}
	return simpleReply{Error: be.Uint32(b[4:]), Handle: be.Uint64(b[8:])}, nil
}

// optionReply is a decoded fixed-newstyle option reply (used by test clients).
type optionReply struct {
	Option uint32
	Type   uint32
	Data   []byte
}

func readOptionReply(r io.Reader, maxData uint32) (optionReply, error) {
	var b [20]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return optionReply{}, err
	}
	if m := be.Uint64(b[:]); m != magicOptReply {
		return optionReply{}, fmt.Errorf("%w: option reply magic %#x", errBadMagic, m)
	}
	rep := optionReply{Option: be.Uint32(b[8:]), Type: be.Uint32(b[12:])}
	n := be.Uint32(b[16:])
	if n > maxData {
		return optionReply{}, fmt.Errorf("option reply of %d bytes is too big", n)
	}
	rep.Data = make([]byte, n)
	if _, err := io.ReadFull(r, rep.Data); err != nil {
		return optionReply{}, err
	}
	return rep, nil
}

// cmdName names a command for logs.
func cmdName(t uint16) string {
	switch t {
	case cmdRead:
		return "read"
	case cmdWrite:
		return "write"
	case cmdDisc:
		return "disc"
	case cmdFlush:
		return "flush"
	case cmdTrim:
		return "trim"
	case cmdCache:
		return "cache"
	case cmdWriteZeroes:
		return "write_zeroes"
	case cmdBlockStatus:
		return "block_status"
	}
	return fmt.Sprintf("cmd(%d)", t)
}

// optName names an option for logs.
func optName(o uint32) string {
	switch o {
	case optExportName:
		return "export_name"
	case optAbort:
		return "abort"
	case optList:
		return "list"
	case optPeekExport:
		return "peek_export"
	case optStartTLS:
		return "starttls"
	case optInfo:
		return "info"
	case optGo:
		return "go"
	case optStructuredReply:
		return "structured_reply"
	case optListMetaContext:
		return "list_meta_context"
	case optSetMetaContext:
		return "set_meta_context"
	case optExtendedHeaders:
		return "extended_headers"
	}
	return fmt.Sprintf("opt(%d)", o)
}
