package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tandemhci/tandem/internal/testcluster"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// TestVolumeGrowOnline grows a 3-replica volume from 64 MiB to 128 MiB
// while a client writes, with one replica's node down during the grow: the
// export announces the new size to new connections, a write past the old
// end lands on every replica (the one that was down grows and resyncs when
// it is back), and online verify passes over the whole new size. Shrinking
// and a size that is not a multiple of 4 KiB are refused and change
// nothing.
func TestVolumeGrowOnline(t *testing.T) {
	testcluster.Require(t)
	bin := binDir(t)
	c := testcluster.New(t, testcluster.Options{Nodes: 3})
	td := testcluster.NewTandem(c, bin)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	procs := map[string]*testcluster.Proc{}
	for _, n := range c.Nodes {
		p, err := td.StartDaemon(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		procs[n.Name] = p
	}
	if err := td.Form(ctx, "grow"); err != nil {
		t.Fatal(err)
	}
	if _, err := td.WaitStatus(ctx, c.Nodes[0], 15*time.Second, func(s *tandemv1.ClusterStatus) bool { return s.Quorate && s.VotesOnline == 3 }); err != nil {
		t.Fatal(err)
	}
	n1, n2, n3node := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	const newSize = 128 << 20
	volumeCmd(t, ctx, td, n1, "create", "g", "--size", "64M", "--replicas", "3", "--nodes", "n1,n2,n3")
	runTool(t, ctx, "qemu-io", "-f", "raw", "-c", "write -P 0x5a 60M 4M", "-c", "flush", nbdURI(td, n1, "g"))

	// n3 goes down; a client keeps writing below the old end throughout.
	if err := procs["n3"].Stop(ctx); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	writerDone := make(chan int)
	go func() {
		n := 0
		defer func() { writerDone <- n }()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			cmd := exec.CommandContext(ctx, "qemu-io", "-f", "raw", "-c", fmt.Sprintf("write -P %d %dM 64k", i%200, 8+i%40), "-c", "flush", nbdURI(td, n1, "g"))
			if cmd.Run() == nil {
				n++
			}
		}
	}()
	waitVolume(t, ctx, td, n1, "g", time.Minute, func(info *tandemv1.VolumeInfo) bool {
		return replicaState(info, "n3").State != tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE
	})

	info := volumeCmd(t, ctx, td, n2, "resize", "g", "--size", "128M")
	if info.SizeBytes != newSize {
		t.Fatalf("after resize: %d bytes, want %d (%v)", info.SizeBytes, newSize, info)
	}
	if out := strings.TrimSpace(runTool(t, ctx, "nbdinfo", "--size", nbdURI(td, n1, "g"))); out != strconv.Itoa(newSize) {
		t.Fatalf("nbdinfo --size after the grow: %q, want %d", out, newSize)
	}
	// Past the old end, through a new connection.
	runTool(t, ctx, "qemu-io", "-f", "raw", "-c", "write -P 0x77 100M 1M", "-c", "write -P 0x78 127M 1M", "-c", "flush", nbdURI(td, n1, "g"))
	close(stop)
	if n := <-writerDone; n == 0 {
		t.Fatal("no write succeeded while the volume grew")
	}

	// n3 comes back: it grows and resyncs.
	if _, err := td.StartDaemon(ctx, n3node); err != nil {
		t.Fatal(err)
	}
	waitVolume(t, ctx, td, n1, "g", 2*time.Minute, func(info *tandemv1.VolumeInfo) bool {
		return replicaState(info, "n3").State == tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE
	})
	out, stderr, err := td.CLI(ctx, n1, "volume", "verify", "g", "--output", "json")
	if err != nil || !strings.Contains(out, strconv.Itoa(newSize)) {
		t.Fatalf("verify after the grow: %v %s\n%s", err, stderr, out)
	}
	for _, n := range c.Nodes {
		f, err := os.Open(filepath.Join(td.DataDir(n), "volumes", "g.vol"))
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 1<<20)
		for _, w := range []struct {
			off int64
			b   byte
		}{{100 << 20, 0x77}, {127 << 20, 0x78}} {
			if _, err := f.ReadAt(got, w.off); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, bytes.Repeat([]byte{w.b}, len(got))) {
				t.Fatalf("replica on %s: the write at %d past the old end is not there", n.Name, w.off)
			}
		}
		f.Close()
	}

	// Refusals change nothing.
	for _, c := range []struct{ size, want string }{
		{"32M", "shrinking"},
		{"134217729", "multiple of 4 KiB"},
	} {
		_, stderr, err := td.CLI(ctx, n1, "volume", "resize", "g", "--size", c.size)
		if err == nil || !strings.Contains(stderr, c.want) {
			t.Fatalf("resize to %s: err %v, stderr %q; want a refusal containing %q", c.size, err, stderr, c.want)
		}
	}
	if info := volumeCmd(t, ctx, td, n2, "show", "g"); info.SizeBytes != newSize {
		t.Fatalf("a refused resize changed the size to %d", info.SizeBytes)
	}
}
