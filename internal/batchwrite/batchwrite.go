package batchwrite

import (
	"io"
	"net"
	"sync"
)

// Writer coalesces messages onto w. The first write error is sticky: every
// later Write returns it and nothing more is written.
type Writer struct {
	w io.Writer

	mu      sync.Mutex
	pending []byte // queued while a write is in progress
	spare   []byte
	writing bool
	err     error
}

// New returns a Writer on w.
func New(w io.Writer) *Writer { return &Writer{w: w} }

// Write sends the concatenation of parts, or queues a copy of it behind a
// write in progress. With flush false the message is only queued: the
// caller knows another message follows soon and will flush it. The error
// is the stream's sticky error, or that of the write this call performed.
func (b *Writer) Write(flush bool, parts ...[]byte) error {
	b.mu.Lock()
	if b.err != nil {
		err := b.err
		b.mu.Unlock()
		return err
	}
	if b.writing || !flush || len(b.pending) > 0 {
		for _, p := range parts {
			b.pending = append(b.pending, p...)
		}
		if b.writing || !flush {
			b.mu.Unlock()
			return nil
		}
		parts = nil
	}
	b.writing = true
	b.mu.Unlock()

	var err error
	if parts != nil {
		// Idle stream: write the caller's buffers directly, no copy.
		bufs := net.Buffers(parts)
		_, err = bufs.WriteTo(b.w)
	}
	b.mu.Lock()
	for err == nil && len(b.pending) > 0 {
		out := b.pending
		b.pending = b.spare[:0]
		b.mu.Unlock()
		_, err = b.w.Write(out)
		b.mu.Lock()
		b.spare = out[:0]
	}
	if err != nil && b.err == nil {
		b.err = err
	}
	b.writing = false
	b.mu.Unlock()
	return err
}

// Flush writes whatever is queued, unless a write in progress will.
func (b *Writer) Flush() error { return b.Write(true) }

// Err returns the sticky error, if any.
func (b *Writer) Err() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}
