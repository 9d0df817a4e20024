package netdelay

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/tandemhci/tandem/internal/testcluster"
)

// rtts measures n TCP round trips of one byte over conn.
func rtts(t *testing.T, conn net.Conn, n int) []time.Duration {
	t.Helper()
	out := make([]time.Duration, 0, n)
	b := []byte{0}
	for range n {
		began := time.Now()
		if _, err := conn.Write(b); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(conn, b); err != nil {
			t.Fatal(err)
		}
		out = append(out, time.Since(began))
	}
	slices.Sort(out)
	return out
}

// TestDelayIsAFloor: two namespaces of a test cluster, a TCP echo between
// them. With n1's packets to and from n2 queued to a Delayer of D, every
// round trip takes at least 2D (the request leaves n1 late, the answer
// reaches it late), on any machine since the delay is a floor; with the
// rules deleted and the Delayer closed, the fastest round trip is again
// below D. A burst of numbered datagrams arrives in order (FIFO), and the
// TCP connection carries on through it all.
func TestDelayIsAFloor(t *testing.T) {
	testcluster.Require(t)
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Fatalf("iptables (Debian package iptables) is needed: %v", err)
	}
	c := testcluster.New(t, testcluster.Options{Nodes: 2})
	n1, n2 := c.Nodes[0], c.Nodes[1]
	ctx := context.Background()

	var ln net.Listener
	if err := c.InNetns(n2, func() (err error) {
		ln, err = net.Listen("tcp", net.JoinHostPort(n2.IP, "0"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var udp *net.UDPConn
	if err := c.InNetns(n2, func() (err error) {
		udp, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(n2.IP)})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				_, _ = io.Copy(conn, conn)
			}()
		}
	}()
	var conn, uc net.Conn
	if err := c.InNetns(n1, func() (err error) {
		if conn, err = net.Dial("tcp", ln.Addr().String()); err != nil {
			return err
		}
		uc, err = net.Dial("udp", udp.LocalAddr().String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	defer uc.Close()

	const delay = 50 * time.Millisecond
	before := rtts(t, conn, 20)

	d, err := Start(Config{NetNS: filepath.Join("/run/netns", n1.NS), Queue: 7, Delay: delay})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, argv := range Rules("-I", []string{n2.IP}, 7) {
		if _, err := c.Exec(ctx, n1, argv...); err != nil {
			t.Fatal(err)
		}
	}
	with := rtts(t, conn, 10)

	// Order: 300 numbered datagrams sent back to back through the delay.
	const burst = 300
	for i := range burst {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], uint32(i))
		if _, err := uc.Write(b[:]); err != nil {
			t.Fatal(err)
		}
	}
	_ = udp.SetReadDeadline(time.Now().Add(10 * time.Second))
	var got []uint32
	buf := make([]byte, 16)
	for len(got) < burst {
		n, err := udp.Read(buf)
		if err != nil {
			break
		}
		got = append(got, binary.BigEndian.Uint32(buf[:n]))
	}
	if len(got) != burst || !slices.IsSorted(got) {
		t.Errorf("datagrams through the delay: %d of %d arrived, in order: %v", len(got), burst, slices.IsSorted(got))
	}

	d.Release()
	for _, argv := range Rules("-D", []string{n2.IP}, 7) {
		if _, err := c.Exec(ctx, n1, argv...); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
	queued, released, failed := d.Stats()
	after := rtts(t, conn, 20)

	t.Logf("TCP round trip n1<->n2, delay %s on n1 (both ways): without min %s median %s; with min %s median %s; after min %s median %s; packets queued %d released %d failed %d",
		delay, before[0], before[len(before)/2], with[0], with[len(with)/2], after[0], after[len(after)/2], queued, released, failed)
	if with[0] < 2*delay {
		t.Errorf("with the delay a round trip took %s, below the floor %s", with[0], 2*delay)
	}
	if after[0] >= delay {
		t.Errorf("after healing the fastest round trip still took %s (>= %s)", after[0], delay)
	}
	if queued == 0 || released != queued || failed != 0 {
		t.Errorf("stats: queued %d released %d failed %d", queued, released, failed)
	}
}
