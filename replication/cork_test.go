package replication

import (
	"bytes"
	"io"
	"net"
	"testing"
)

// recordConn records each Write it gets.
type recordConn struct {
	net.Conn
	writes [][]byte
}

func (r *recordConn) Write(p []byte) (int, error) {
	r.writes = append(r.writes, bytes.Clone(p))
	return len(p), nil
}

func TestCorkConnBatchesOnlyWhileCorked(t *testing.T) {
	rc := &recordConn{}
	c := NewCorkConn(rc)
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if len(rc.writes) != 1 {
		t.Fatalf("an uncorked write was held back: %d writes reached the conn", len(rc.writes))
	}

	var want []byte
	c.Cork()
	for i := range 10 {
		p := bytes.Repeat([]byte{byte(i)}, 16<<10)
		want = append(want, p...)
		if n, err := c.Write(p); err != nil || n != len(p) {
			t.Fatalf("corked write: %d, %v", n, err)
		}
	}
	if len(rc.writes) != 1 {
		t.Fatalf("%d writes reached the conn while corked under the limit", len(rc.writes)-1)
	}
	if err := c.Uncork(); err != nil {
		t.Fatal(err)
	}
	if len(rc.writes) != 2 || !bytes.Equal(rc.writes[1], want) {
		t.Fatalf("uncork sent %d writes; want one carrying the 10 records in order", len(rc.writes)-1)
	}

	// Past the limit the buffer goes out without waiting for Uncork, so a
	// corked batch never holds more than about corkLimit.
	rc.writes = nil
	c.Cork()
	big := bytes.Repeat([]byte{7}, corkLimit+1)
	if _, err := c.Write(big); err != nil {
		t.Fatal(err)
	}
	if len(rc.writes) != 1 || !bytes.Equal(rc.writes[0], big) {
		t.Fatalf("a write past the limit was held back")
	}
	if err := c.Uncork(); err != nil {
		t.Fatal(err)
	}
	if len(rc.writes) != 1 {
		t.Fatalf("uncork with nothing held sent %d writes", len(rc.writes)-1)
	}

	// Held bytes and a write that crosses the limit leave together, in
	// order, and nothing is held after.
	rc.writes = nil
	c.Cork()
	small := bytes.Repeat([]byte{1}, 1000)
	if _, err := c.Write(small); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Write(big); err != nil || n != len(big) {
		t.Fatalf("write past the limit: %d, %v", n, err)
	}
	if got := bytes.Join(rc.writes, nil); !bytes.Equal(got, append(bytes.Clone(small), big...)) {
		t.Fatalf("%d bytes out in %d writes, want the held bytes then the big write", len(got), len(rc.writes))
	}
	if err := c.Uncork(); err != nil {
		t.Fatal(err)
	}
	if got := len(bytes.Join(rc.writes, nil)); got != len(small)+len(big) {
		t.Fatalf("uncork sent %d more bytes", got-len(small)-len(big))
	}
}

// TestCorkConnWritevOnTCP: on a TCP connection the held bytes and a large
// write go out in order (one writev) and arrive intact.
func TestCorkConnWritevOnTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		s, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer s.Close()
		b, _ := io.ReadAll(s)
		got <- b
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := NewCorkConn(raw)
	var want []byte
	c.Cork()
	for i := range 5 {
		p := bytes.Repeat([]byte{byte(i + 1)}, []int{100, corkLimit, 7, 3 * corkLimit, 5}[i])
		want = append(want, p...)
		if n, err := c.Write(p); err != nil || n != len(p) {
			t.Fatalf("write %d: %d, %v", i, n, err)
		}
	}
	if err := c.Uncork(); err != nil {
		t.Fatal(err)
	}
	raw.Close()
	if b := <-got; !bytes.Equal(b, want) {
		t.Fatalf("received %d bytes, want %d in order", len(b), len(want))
	}
}

func TestCorkerFoundUnderTLSLayer(t *testing.T) {
	c := NewCorkConn(&recordConn{})
	if corkerOf(c) == nil {
		t.Fatal("a CorkConn is not found as a corker")
	}
	if corkerOf(wrapped{c}) == nil {
		t.Fatal("a CorkConn under a NetConn layer is not found")
	}
	if corkerOf(&recordConn{}) != nil {
		t.Fatal("a plain conn is taken for a corker")
	}
}

// wrapped is a layer exposing its inner conn as *tls.Conn does.
type wrapped struct{ net.Conn }

func (w wrapped) NetConn() net.Conn { return w.Conn }
