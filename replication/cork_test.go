package replication

import (
	"bytes"
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
