package nbdclient

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tandemhci/tandem/blockstore"
	"github.com/tandemhci/tandem/blockstore/nbd"
)

type mem struct {
	mu sync.Mutex
	b  []byte
}

func (m *mem) ReadAt(_ context.Context, p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := blockstore.CheckRange(int64(len(m.b)), off, int64(len(p))); err != nil {
		return 0, err
	}
	return copy(p, m.b[off:]), nil
}
func (m *mem) WriteAt(_ context.Context, p []byte, off int64, _ blockstore.WriteFlags) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := blockstore.CheckRange(int64(len(m.b)), off, int64(len(p))); err != nil {
		return 0, err
	}
	return copy(m.b[off:], p), nil
}
func (m *mem) Flush(context.Context) error                                            { return nil }
func (m *mem) Trim(context.Context, int64, int64) error                               { return nil }
func (m *mem) WriteZeroes(context.Context, int64, int64, blockstore.WriteFlags) error { return nil }
func (m *mem) Size() int64                                                            { return int64(len(m.b)) }
func (m *mem) Close() error                                                           { return nil }

func TestAgainstOurServer(t *testing.T) {
	vol := &mem{b: make([]byte, 1<<20)}
	srv := nbd.NewServer(slog.New(slog.NewTextHandler(io.Discard, nil)), func(_ context.Context, name string) (*nbd.Export, error) {
		if name != "v" {
			return nil, nbd.ErrUnknownExport
		}
		return &nbd.Export{Name: "v", Volume: vol}, nil
	})
	sock := filepath.Join(t.TempDir(), "s")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	go srv.Serve(ctx, ln)
	defer srv.Close()
	if _, err := Dial(ctx, "unix", sock, "nope"); err == nil {
		t.Fatal("unknown export accepted")
	}
	c, err := Dial(ctx, "unix", sock, "v")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Size() != 1<<20 {
		t.Fatalf("size %d", c.Size())
	}
	var wg sync.WaitGroup
	for i := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.WriteAt(ctx, bytes.Repeat([]byte{byte(i)}, 4096), uint64(i)*4096, FlagFUA); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	for i := range 32 {
		if err := c.ReadAt(ctx, buf, uint64(i)*4096); err != nil || buf[0] != byte(i) || buf[4095] != byte(i) {
			t.Fatalf("block %d: %v %d", i, err, buf[0])
		}
	}
	var se *ErrServer
	if err := c.ReadAt(ctx, buf, 1<<20); !errors.As(err, &se) {
		t.Fatalf("read past end: %v", err)
	}
}
