package nbd

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestHandshakeOptions(t *testing.T) {
	vol := newMemVolume(1 << 20)
	h := startServer(t, map[string]*Export{
		"rw":  {Name: "rw", Description: "volume rw", Volume: vol, MultiConn: true},
		"bad": {Volume: vol, MinBlock: 3},
	})
	c := dial(t, "unix", h.sock)
	c.greet(flagCFixedNewstyle | flagCNoZeroes)

	t.Run("unknown export", func(t *testing.T) {
		reps, final := c.info(optGo, "nope", infoBlockSize)
		if len(reps) != 0 || final.Type != repErrUnknown || !strings.Contains(string(final.Data), `unknown export "nope"`) {
			t.Fatalf("got %d infos, final %#x %q", len(reps), final.Type, final.Data)
		}
	})
	t.Run("lookup error text", func(t *testing.T) {
		_, final := c.info(optInfo, notPrimary)
		if final.Type != repErrUnknown || string(final.Data) != "this node is not the primary of volume notprimary" {
			t.Fatalf("final %#x %q", final.Type, final.Data)
		}
	})
	t.Run("lookup shutdown", func(t *testing.T) {
		_, final := c.info(optGo, draining)
		if final.Type != repErrShutdown || !strings.Contains(string(final.Data), "draining") {
			t.Fatalf("final %#x %q", final.Type, final.Data)
		}
	})
	t.Run("misconfigured export", func(t *testing.T) {
		_, final := c.info(optGo, "bad")
		if final.Type != repErrUnknown || !strings.Contains(string(final.Data), "minimum block size 3") {
			t.Fatalf("final %#x %q", final.Type, final.Data)
		}
	})
	t.Run("info", func(t *testing.T) {
		reps, final := c.info(optInfo, "rw", infoName, infoDescription, infoBlockSize)
		if final.Type != repAck {
			t.Fatalf("final %#x %q", final.Type, final.Data)
		}
		got := map[uint16][]byte{}
		for _, r := range reps {
			got[be.Uint16(r.Data)] = r.Data[2:]
		}
		if e := got[infoExport]; len(e) != 10 || be.Uint64(e) != 1<<20 ||
			be.Uint16(e[8:]) != flagHasFlags|flagSendFlush|flagSendFUA|flagSendTrim|flagSendWriteZeroes|flagCanMultiConn {
			t.Errorf("NBD_INFO_EXPORT % x", e)
		}
		if b := got[infoBlockSize]; len(b) != 12 || be.Uint32(b) != 512 || be.Uint32(b[4:]) != 4096 || be.Uint32(b[8:]) != 32<<20 {
			t.Errorf("NBD_INFO_BLOCK_SIZE % x", b)
		}
		if string(got[infoName]) != "rw" || string(got[infoDescription]) != "volume rw" {
			t.Errorf("name %q description %q", got[infoName], got[infoDescription])
		}
	})
	t.Run("info without requests still sends block size", func(t *testing.T) {
		reps, final := c.info(optInfo, "rw")
		if final.Type != repAck || len(reps) != 2 {
			t.Fatalf("final %#x, %d infos", final.Type, len(reps))
		}
	})
	t.Run("malformed info", func(t *testing.T) {
		for _, data := range [][]byte{
			{0, 0, 0},                   // shorter than 6
			{0, 0, 0, 9, 'a', 0, 0},     // name longer than the data
			{0, 0, 0, 0, 0, 2, 0, 3},    // two requests, one present
			{0, 0, 0, 0, 0, 0, 0, 3, 4}, // trailing junk
		} {
			c.sendOption(optGo, data)
			if r := c.optReply(); r.Type != repErrInvalid {
				t.Errorf("% x: reply %#x", data, r.Type)
			}
		}
	})
	for _, tc := range []struct {
		name string
		opt  uint32
		data []byte
		want uint32
	}{
		{"structured reply", optStructuredReply, nil, repErrUnsup},
		{"starttls", optStartTLS, nil, repErrUnsup},
		{"set meta context", optSetMetaContext, make([]byte, 8), repErrUnsup},
		{"unknown option", 0x4242, []byte("xyz"), repErrUnsup},
		{"list disabled", optList, nil, repErrPolicy},
		{"too big", 0x4242, make([]byte, maxOptionLen+1), repErrTooBig},
		{"too big info", optInfo, make([]byte, maxOptionLen+100), repErrTooBig},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c.sendOption(tc.opt, tc.data)
			if r := c.optReply(); r.Option != tc.opt || r.Type != tc.want {
				t.Fatalf("reply to %d: %#x %q, want %#x", r.Option, r.Type, r.Data, tc.want)
			}
		})
	}
	t.Run("go after errors", func(t *testing.T) {
		_, final := c.info(optGo, "rw")
		if final.Type != repAck || c.size != 1<<20 {
			t.Fatalf("final %#x size %d", final.Type, c.size)
		}
		if e, _ := c.do(cmdWrite, 0, 0, 3, []byte("abc")); e != 0 {
			t.Fatalf("write errno %d", e)
		}
		if e, d := c.do(cmdRead, 0, 0, 3, nil); e != 0 || string(d) != "abc" {
			t.Fatalf("read errno %d %q", e, d)
		}
	})
}

func TestHandshakeEndings(t *testing.T) {
	h := startServer(t, map[string]*Export{"rw": {Volume: newMemVolume(1 << 20)}, "other": {Volume: newMemVolume(4096)}},
		WithList(func(context.Context) ([]ListEntry, error) {
			return []ListEntry{{Name: "rw", Description: "first"}, {Name: "other"}}, nil
		}))

	t.Run("abort", func(t *testing.T) {
		c := dial(t, "unix", h.sock)
		c.greet(flagCFixedNewstyle)
		c.abort()
	})
	t.Run("list", func(t *testing.T) {
		c := dial(t, "tcp", h.tcp)
		c.greet(flagCFixedNewstyle)
		c.sendOption(optList, nil)
		var names []string
		for {
			r := c.optReply()
			if r.Type == repAck {
				break
			}
			if r.Type != repServer || len(r.Data) < 4 {
				t.Fatalf("list reply %#x % x", r.Type, r.Data)
			}
			n := be.Uint32(r.Data)
			names = append(names, string(r.Data[4:4+n])+"|"+string(r.Data[4+n:]))
		}
		if strings.Join(names, ",") != "rw|first,other|" {
			t.Fatalf("listed %q", names)
		}
		c.sendOption(optList, []byte("x"))
		if r := c.optReply(); r.Type != repErrInvalid {
			t.Fatalf("list with data: %#x", r.Type)
		}
	})
	for _, noZeroes := range []bool{false, true} {
		t.Run("export name", func(t *testing.T) {
			c := dial(t, "unix", h.sock)
			cflags := flagCFixedNewstyle
			if noZeroes {
				cflags |= flagCNoZeroes
			}
			c.greet(cflags)
			c.sendOption(optExportName, []byte("rw"))
			want := 10
			if !noZeroes {
				want += 124
			}
			b := make([]byte, want)
			if _, err := io.ReadFull(c.br, b); err != nil {
				t.Fatal(err)
			}
			if be.Uint64(b) != 1<<20 || be.Uint16(b[8:])&flagHasFlags == 0 || !bytes.Equal(b[10:], make([]byte, want-10)) {
				t.Fatalf("export name reply % x", b[:10])
			}
			if e, _ := c.do(cmdFlush, 0, 0, 0, nil); e != 0 {
				t.Fatalf("flush errno %d", e)
			}
			c.send(cmdDisc, 0, 0, 0, nil)
			c.expectClosed()
		})
	}
	t.Run("export name unknown closes", func(t *testing.T) {
		c := dial(t, "unix", h.sock)
		c.greet(flagCFixedNewstyle)
		c.sendOption(optExportName, []byte("nope"))
		c.expectClosed()
	})
	t.Run("plain newstyle", func(t *testing.T) {
		c := dial(t, "unix", h.sock)
		c.greet(0)
		c.sendOption(optGo, encodeInfoRequest(infoRequest{Name: "rw"}))
		c.expectClosed()

		c = dial(t, "unix", h.sock)
		c.greet(0)
		c.sendOption(optExportName, []byte("rw"))
		b := make([]byte, 134)
		if _, err := io.ReadFull(c.br, b); err != nil || be.Uint64(b) != 1<<20 {
			t.Fatalf("plain newstyle export name: %v % x", err, b[:10])
		}
	})
	t.Run("unknown client flags", func(t *testing.T) {
		c := dial(t, "unix", h.sock)
		c.greet(flagCFixedNewstyle | 1<<7)
		c.expectClosed()
	})
	t.Run("bad option magic", func(t *testing.T) {
		c := dial(t, "unix", h.sock)
		c.greet(flagCFixedNewstyle)
		c.write(make([]byte, 16))
		c.expectClosed()
	})
	t.Run("nbdinfo list", func(t *testing.T) {
		out := run(t, 30*time.Second, "nbdinfo", "--list", "--json", h.uri(""))
		if !strings.Contains(out, `"export-name": "rw"`) || !strings.Contains(out, `"export-name": "other"`) {
			t.Fatalf("nbdinfo --list: %s", out)
		}
	})
}

func TestHandshakeTimeout(t *testing.T) {
	h := startServer(t, map[string]*Export{}, WithHandshakeTimeout(200*time.Millisecond))
	c := dial(t, "unix", h.sock)
	c.greet(flagCFixedNewstyle)
	start := time.Now()
	c.expectClosed()
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("idle handshake closed after %v", d)
	}
	waitFor(t, "handshake failure counted", func() bool { return h.srv.Stats().HandshakeFailures == 1 })
}

func TestRequestErrors(t *testing.T) {
	const size = 1 << 20
	rw := newMemVolume(size)
	ro := newMemVolume(size)
	small := newMemVolume(size)
	h := startServer(t, map[string]*Export{
		"rw":    {Volume: rw},
		"ro":    {Volume: ro, ReadOnly: true},
		"small": {Volume: small, MaxBlock: 64 << 10},
	})
	c := open(t, "unix", h.sock, "rw")
	cases := []struct {
		name    string
		typ     uint16
		flags   uint16
		off     uint64
		length  uint32
		payload bool
		want    uint32
	}{
		{"read past end", cmdRead, 0, size - 512, 1024, false, errInval},
		{"read at huge offset", cmdRead, 0, 1 << 63, 512, false, errInval},
		{"read offset+length wraps", cmdRead, 0, ^uint64(0) - 10, 512, false, errInval},
		{"write past end", cmdWrite, 0, size - 512, 1024, true, errNoSpc},
		{"write beyond end", cmdWrite, 0, size + 4096, 512, true, errNoSpc},
		{"write zeroes past end", cmdWriteZeroes, 0, size, 512, false, errNoSpc},
		{"trim past end", cmdTrim, 0, size - 512, 1024, false, errInval},
		{"cache past end", cmdCache, 0, size, 1, false, errInval},
		{"zero-length read", cmdRead, 0, 0, 0, false, errInval},
		{"zero-length write", cmdWrite, 0, 4096, 0, true, 0},
		{"zero-length trim", cmdTrim, 0, 4096, 0, false, 0},
		{"zero-length write zeroes", cmdWriteZeroes, 0, size, 0, false, 0},
		{"read over max block", cmdRead, 0, 0, 32<<20 + 512, false, errInval},
		{"unknown command", 42, 0, 0, 512, false, errInval},
		{"block status", cmdBlockStatus, 0, 0, 512, false, errInval},
		{"DF on read", cmdRead, cmdFlagDF, 0, 512, false, errInval},
		{"unknown flag on write", cmdWrite, 1 << 9, 0, 512, true, errInval},
		{"no-hole on write", cmdWrite, cmdFlagNoHole, 0, 512, true, errInval},
		{"fast zero (not advertised)", cmdWriteZeroes, cmdFlagFastZero, 0, 512, false, errInval},
		{"cache", cmdCache, 0, 0, 4096, false, 0},
		{"FUA on read is ignored", cmdRead, cmdFlagFUA, 0, 512, false, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var payload []byte
			if tc.payload {
				payload = bytesOf(int(tc.length), 1)
			}
			e, _ := c.do(tc.typ, tc.flags, tc.off, tc.length, payload)
			if e != tc.want {
				t.Fatalf("errno %d, want %d", e, tc.want)
			}
		})
	}
	if n := rw.mutations(); n != 0 {
		t.Fatalf("rejected requests reached the volume: %d mutations", n)
	}

	t.Run("read-only export", func(t *testing.T) {
		c := open(t, "tcp", h.tcp, "ro")
		if c.flags&flagReadOnly == 0 || c.flags&(flagSendTrim|flagSendWriteZeroes|flagSendFUA) != 0 {
			t.Fatalf("flags %#x", c.flags)
		}
		for _, r := range []struct {
			typ     uint16
			payload []byte
		}{{cmdWrite, bytesOf(512, 2)}, {cmdTrim, nil}, {cmdWriteZeroes, nil}} {
			if e, _ := c.do(r.typ, 0, 0, 512, r.payload); e != errPerm {
				t.Errorf("%s on read-only export: errno %d, want EPERM", cmdName(r.typ), e)
			}
		}
		if e, _ := c.do(cmdFlush, 0, 0, 0, nil); e != 0 {
			t.Errorf("flush on read-only export: errno %d", e)
		}
		if e, _ := c.do(cmdRead, 0, 0, 512, nil); e != 0 {
			t.Errorf("read on read-only export: errno %d", e)
		}
		if n := ro.mutations(); n != 0 {
			t.Fatalf("read-only volume saw %d mutations", n)
		}
	})

	t.Run("oversized write is drained", func(t *testing.T) {
		c := open(t, "unix", h.sock, "small")
		// The payload looks like a request: if the server parsed it as one,
		// the volume would be written.
		payload := appendRequest(nil, request{Type: cmdWrite, Handle: 99, Length: 4})
		payload = append(payload, "evil"...)
		payload = append(payload, make([]byte, 128<<10-len(payload))...)
		if e, _ := c.do(cmdWrite, 0, 0, 128<<10, payload); e != errInval {
			t.Fatalf("errno %d, want EINVAL", e)
		}
		if e, d := c.do(cmdRead, 0, 0, 4, nil); e != 0 || !bytes.Equal(d, make([]byte, 4)) {
			t.Fatalf("stream out of step: errno %d data %q", e, d)
		}
		if n := small.mutations(); n != 0 {
			t.Fatalf("volume saw %d mutations", n)
		}
	})

	t.Run("volume errors", func(t *testing.T) {
		c := open(t, "unix", h.sock, "rw")
		if e, _ := c.do(cmdWrite, cmdFlagFUA, 0, 4, []byte("good")); e != 0 {
			t.Fatalf("write errno %d", e)
		}
		rw.frozen.Store(true)
		for _, r := range []struct {
			typ     uint16
			payload []byte
		}{{cmdWrite, []byte("bad!")}, {cmdRead, nil}, {cmdFlush, nil}, {cmdTrim, nil}, {cmdWriteZeroes, nil}} {
			length := uint32(len(r.payload))
			if r.typ != cmdFlush && length == 0 {
				length = 4
			}
			if e, _ := c.do(r.typ, 0, 0, length, r.payload); e != errIO {
				t.Errorf("%s on frozen volume: errno %d, want EIO", cmdName(r.typ), e)
			}
		}
		rw.frozen.Store(false)
		if e, d := c.do(cmdRead, 0, 0, 4, nil); e != 0 || string(d) != "good" {
			t.Fatalf("after thaw: errno %d data %q", e, d)
		}
		rw.readOnly.Store(true)
		if e, _ := c.do(cmdWrite, 0, 0, 4, []byte("nope")); e != errPerm {
			t.Errorf("volume ErrReadOnly: errno %d, want EPERM", e)
		}
		rw.readOnly.Store(false)
		rw.closed.Store(true)
		if e, _ := c.do(cmdRead, 0, 0, 4, nil); e != errShutdown {
			t.Errorf("closed volume: errno %d, want ESHUTDOWN", e)
		}
		rw.closed.Store(false)
	})
}

func TestMalformedRequests(t *testing.T) {
	vol := newMemVolume(1 << 20)
	h := startServer(t, map[string]*Export{"rw": {Volume: vol}})

	t.Run("bad magic", func(t *testing.T) {
		c := open(t, "unix", h.sock, "rw")
		b := appendRequest(nil, request{Type: cmdWrite, Length: 4})
		b[0] ^= 0xff
		c.write(append(b, "evil"...))
		// The server may already have hung up: the second write may fail.
		_, _ = c.nc.Write(append(appendRequest(nil, request{Type: cmdWrite, Length: 4}), "evil"...))
		c.expectClosed()
	})
	t.Run("truncated write payload", func(t *testing.T) {
		c := open(t, "unix", h.sock, "rw")
		c.write(append(appendRequest(nil, request{Type: cmdWrite, Length: 4096}), bytesOf(100, 3)...))
		c.nc.(*net.UnixConn).CloseWrite()
		c.expectClosed()
	})
	t.Run("truncated header", func(t *testing.T) {
		c := open(t, "unix", h.sock, "rw")
		c.write(appendRequest(nil, request{Type: cmdRead, Length: 4})[:20])
		c.nc.(*net.UnixConn).CloseWrite()
		c.expectClosed()
	})
	if n := vol.mutations(); n != 0 {
		t.Fatalf("malformed requests reached the volume: %d mutations", n)
	}
	waitFor(t, "protocol errors counted", func() bool { return h.srv.Stats().ProtocolErrors >= 3 })
}

// TestPipelined keeps many requests in flight on one connection and checks
// every one is answered exactly once, then that DISC waits for them.
func TestPipelined(t *testing.T) {
	vol := newMemVolume(4 << 20)
	vol.delay.Store(int64(2 * time.Millisecond))
	h := startServer(t, map[string]*Export{"rw": {Volume: vol}}, WithMaxInflight(8), WithMaxInflightBytes(64<<10))
	c := open(t, "unix", h.sock, "rw")

	const n = 300
	replies := make(chan simpleReply, n+1)
	readErr := make(chan error, 1)
	go func() {
		for range n + 1 {
			r, _, err := c.recv(func(h uint64) int {
				if h == n+1 {
					return 4096
				}
				return 0
			})
			if err != nil {
				readErr <- err
				return
			}
			replies <- r
		}
		readErr <- nil
	}()
	for i := range n {
		c.send(cmdWrite, 0, uint64(i)*4096, 4096, bytesOf(4096, byte(i)))
	}
	c.send(cmdRead, 0, 7*4096, 4096, nil)
	if err := <-readErr; err != nil {
		t.Fatalf("reading replies: %v", err)
	}
	seen := map[uint64]bool{}
	for range n + 1 {
		r := <-replies
		if r.Error != 0 || seen[r.Handle] {
			t.Fatalf("reply %+v (seen before: %v)", r, seen[r.Handle])
		}
		seen[r.Handle] = true
	}
	// The burst was buffered: writes with another request behind them
	// carry the hint that more follow.
	if vol.more.Load() == 0 {
		t.Fatal("no pipelined write was hinted blockstore.More")
	}
	// A lone write is not.
	vol.delay.Store(0)
	before := vol.more.Load()
	c.send(cmdWrite, 0, 0, 4096, bytesOf(4096, 9))
	if r, _, err := c.recv(func(uint64) int { return 0 }); err != nil || r.Error != 0 {
		t.Fatalf("lone write: %+v %v", r, err)
	}
	if vol.more.Load() != before {
		t.Fatal("a lone write was hinted blockstore.More")
	}

	// DISC right behind a burst: every write must still be answered.
	vol.delay.Store(int64(20 * time.Millisecond))
	for i := range 20 {
		c.send(cmdWrite, cmdFlagFUA, uint64(i)*4096, 4096, bytesOf(4096, byte(100+i)))
	}
	c.send(cmdDisc, 0, 0, 0, nil)
	for i := range 20 {
		r, _, err := c.recv(func(uint64) int { return 0 })
		if err != nil || r.Error != 0 {
			t.Fatalf("reply %d after DISC: %+v %v", i, r, err)
		}
	}
	c.expectClosed()
	data, _, fua, _, _, _, _ := vol.snapshot()
	for i := range 20 {
		if !bytes.Equal(data[i*4096:(i+1)*4096], bytesOf(4096, byte(100+i))) {
			t.Fatalf("write %d before DISC not applied", i)
		}
	}
	if fua != 20 {
		t.Fatalf("FUA writes %d, want 20", fua)
	}
}

func TestMultiConnRaw(t *testing.T) {
	vol := newMemVolume(4 << 20)
	h := startServer(t, map[string]*Export{"rw": {Volume: vol, MultiConn: true}})
	a := open(t, "unix", h.sock, "rw")
	b := open(t, "tcp", h.tcp, "rw")
	if a.flags&flagCanMultiConn == 0 {
		t.Fatalf("CAN_MULTI_CONN not advertised: %#x", a.flags)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for i, c := range []*client{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 64 {
				off := uint64(i)<<21 + uint64(j)*4096
				h := c.send(cmdWrite, 0, off, 4096, bytesOf(4096, byte(i*64+j)))
				r, _, err := c.recv(func(uint64) int { return 0 })
				if err != nil || r.Error != 0 || r.Handle != h {
					errs <- errors.Join(err, errors.New("bad write reply"))
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if e, _ := a.do(cmdFlush, 0, 0, 0, nil); e != 0 {
		t.Fatalf("flush errno %d", e)
	}
	for _, c := range []*client{a, b} {
		for i := range 2 {
			for _, j := range []int{0, 31, 63} {
				off := uint64(i)<<21 + uint64(j)*4096
				e, d := c.do(cmdRead, 0, off, 4096, nil)
				if e != 0 || !bytes.Equal(d, bytesOf(4096, byte(i*64+j))) {
					t.Fatalf("read region %d block %d: errno %d, wrong data", i, j, e)
				}
			}
		}
	}
	_, _, _, flushes, _, _, _ := vol.snapshot()
	if flushes != 1 {
		t.Fatalf("flushes %d, want 1", flushes)
	}
}

func TestShutdown(t *testing.T) {
	t.Run("in-flight request finishes", func(t *testing.T) {
		vol := newMemVolume(1 << 20)
		h := startServer(t, map[string]*Export{"rw": {Volume: vol}})
		c := open(t, "unix", h.sock, "rw")
		vol.delay.Store(int64(300 * time.Millisecond))
		c.send(cmdWrite, 0, 0, 4, []byte("last"))
		waitFor(t, "request in flight", func() bool { return h.srv.Stats().Writes == 1 })
		h.stop(t)
		r, _, err := c.recv(func(uint64) int { return 0 })
		if err != nil || r.Error != 0 {
			t.Fatalf("in-flight write: %+v %v", r, err)
		}
		c.expectClosed()
		if d, _, _, _, _, _, _ := vol.snapshot(); string(d[:4]) != "last" {
			t.Fatalf("in-flight write lost")
		}
	})
	t.Run("grace expires", func(t *testing.T) {
		vol := newMemVolume(1 << 20)
		h := startServer(t, map[string]*Export{"rw": {Volume: vol}}, WithShutdownGrace(100*time.Millisecond))
		c := open(t, "unix", h.sock, "rw")
		vol.delay.Store(int64(time.Hour))
		c.send(cmdRead, 0, 0, 4, nil)
		waitFor(t, "request in flight", func() bool { return h.srv.Stats().Reads == 1 })
		start := time.Now()
		h.stop(t)
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("shutdown took %v", d)
		}
		r, _, err := c.recv(func(uint64) int { return 4 })
		if err != nil || r.Error != errShutdown {
			t.Fatalf("cancelled read: %+v %v, want ESHUTDOWN", r, err)
		}
	})
	t.Run("close", func(t *testing.T) {
		srv, ln, done := serveEmpty(t)
		c := dial(t, "tcp", ln.Addr().String())
		c.greet(flagCFixedNewstyle)
		srv.Close()
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Fatalf("Serve after Close: %v", err)
		}
		c.expectClosed()
		ln2, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.Serve(context.Background(), ln2); !errors.Is(err, ErrServerClosed) {
			t.Fatalf("Serve on a closed server: %v", err)
		}
	})
	t.Run("listener closed", func(t *testing.T) {
		_, ln, done := serveEmpty(t)
		time.Sleep(20 * time.Millisecond)
		ln.Close()
		if err := <-done; !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Serve after its listener closed: %v", err)
		}
	})
}

// serveEmpty runs a server with no exports on a fresh TCP listener; done
// receives what Serve returns.
func serveEmpty(t *testing.T) (*Server, net.Listener, <-chan error) {
	t.Helper()
	srv := NewServer(testLogger(t), mapLookup(nil))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(context.Background(), ln) }()
	return srv, ln, done
}

func TestMaxConns(t *testing.T) {
	h := startServer(t, map[string]*Export{"rw": {Volume: newMemVolume(1 << 20)}}, WithMaxConns(1))
	open(t, "unix", h.sock, "rw")
	c := dial(t, "unix", h.sock)
	c.expectClosed()
	if s := h.srv.Stats(); s.RejectedConnections != 1 || s.ActiveConnections != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestStats(t *testing.T) {
	vol := newMemVolume(1 << 20)
	h := startServer(t, map[string]*Export{"rw": {Volume: vol}})
	c := open(t, "unix", h.sock, "rw")
	c.do(cmdWrite, 0, 0, 4096, bytesOf(4096, 1))
	c.do(cmdRead, 0, 0, 1024, nil)
	c.do(cmdRead, 0, 1<<20, 1024, nil) // EINVAL
	c.do(cmdFlush, 0, 0, 0, nil)
	c.do(cmdTrim, 0, 0, 512, nil)
	c.do(cmdWriteZeroes, 0, 0, 512, nil)
	c.do(cmdCache, 0, 0, 512, nil)
	c.send(cmdDisc, 0, 0, 0, nil)
	c.expectClosed()
	waitFor(t, "disconnect", func() bool { return h.srv.Stats().ActiveConnections == 0 })
	s := h.srv.Stats()
	want := Stats{Connections: 1, Reads: 2, Writes: 1, Flushes: 1, Trims: 1, WriteZeroes: 1, Caches: 1,
		Disconnects: 1, BytesRead: 1024, BytesWritten: 4096, Errors: 1}
	if s != want {
		t.Fatalf("stats\n got %+v\nwant %+v", s, want)
	}
}

// TestExportDoneClosesConnections: when an export's Done closes (the
// volume behind it stopped serving for good, as a retired primary), its
// connections end, so that a client with reconnect (QEMU) finds what
// serves the volume now instead of getting errors from the old one for
// good; other exports' connections stay.
func TestExportDoneClosesConnections(t *testing.T) {
	done := make(chan struct{})
	h := startServer(t, map[string]*Export{
		"ends":  {Name: "ends", Volume: newMemVolume(1 << 20), Done: done},
		"stays": {Name: "stays", Volume: newMemVolume(1 << 20)},
	})
	ends := open(t, "unix", h.sock, "ends")
	stays := open(t, "unix", h.sock, "stays")
	if errno, _ := ends.do(cmdWrite, 0, 0, 4096, make([]byte, 4096)); errno != 0 {
		t.Fatalf("write before Done: errno %d", errno)
	}
	close(done)
	ends.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(ends.br); err != nil {
		t.Fatalf("the connection did not end with EOF: %v", err)
	}
	if errno, _ := stays.do(cmdRead, 0, 0, 4096, nil); errno != 0 {
		t.Fatalf("another export's connection after Done: errno %d", errno)
	}
}
