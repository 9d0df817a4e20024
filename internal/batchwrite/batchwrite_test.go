package batchwrite

import (
	"bytes"
	"encoding/binary"
	"errors"
	"sync"
	"testing"
	"time"
)

// slowWriter records every write call; each takes a little time so that
// concurrent senders pile up behind it.
type slowWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	calls int
	fail  error
}

func (w *slowWriter) Write(p []byte) (int, error) {
	time.Sleep(50 * time.Microsecond)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.calls++
	if w.fail != nil {
		return 0, w.fail
	}
	return w.buf.Write(p)
}

func TestConcurrentMessagesArriveWholeAndInOrder(t *testing.T) {
	sw := &slowWriter{}
	b := New(sw)
	const senders, each = 8, 500
	var wg sync.WaitGroup
	for s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				var hdr, body [4]byte
				binary.BigEndian.PutUint32(hdr[:], uint32(s))
				binary.BigEndian.PutUint32(body[:], uint32(i))
				if err := b.Write(true, hdr[:], body[:]); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	data := sw.buf.Bytes()
	if len(data) != senders*each*8 {
		t.Fatalf("got %d bytes, want %d", len(data), senders*each*8)
	}
	next := make([]uint32, senders)
	for off := 0; off < len(data); off += 8 {
		s := binary.BigEndian.Uint32(data[off:])
		i := binary.BigEndian.Uint32(data[off+4:])
		if s >= senders || i != next[s] {
			t.Fatalf("message at %d: sender %d seq %d, want seq %d", off, s, i, next[s])
		}
		next[s]++
	}
	if sw.calls >= senders*each {
		t.Errorf("%d write calls for %d messages: nothing was batched", sw.calls, senders*each)
	}
	t.Logf("%d messages in %d writes", senders*each, sw.calls)
}

func TestUnflushedMessagesWaitForTheNextFlush(t *testing.T) {
	sw := &slowWriter{}
	b := New(sw)
	if err := b.Write(false, []byte("a")); err != nil {
		t.Fatal(err)
	}
	if err := b.Write(false, []byte("b")); err != nil {
		t.Fatal(err)
	}
	if sw.calls != 0 {
		t.Fatalf("queued messages were written: %d calls", sw.calls)
	}
	if err := b.Write(true, []byte("c")); err != nil {
		t.Fatal(err)
	}
	if got := sw.buf.String(); got != "abc" || sw.calls != 1 {
		t.Fatalf("got %q in %d calls, want \"abc\" in 1", got, sw.calls)
	}
}

func TestErrorIsSticky(t *testing.T) {
	boom := errors.New("broken pipe")
	sw := &slowWriter{fail: boom}
	b := New(sw)
	if err := b.Write(true, []byte("x")); !errors.Is(err, boom) {
		t.Fatalf("first write: %v, want %v", err, boom)
	}
	sw.mu.Lock()
	sw.fail = nil
	sw.mu.Unlock()
	if err := b.Write(true, []byte("y")); !errors.Is(err, boom) {
		t.Fatalf("write after failure: %v, want the sticky %v", err, boom)
	}
	if !errors.Is(b.Err(), boom) || sw.buf.Len() != 0 {
		t.Fatalf("Err %v, %d bytes written after the failure", b.Err(), sw.buf.Len())
	}
}
