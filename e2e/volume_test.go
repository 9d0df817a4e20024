package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tandemhci/tandem/blockstore"
	"github.com/tandemhci/tandem/internal/adminclient"
	"github.com/tandemhci/tandem/internal/nbdclient"
	"github.com/tandemhci/tandem/internal/pki"
	"github.com/tandemhci/tandem/internal/testcluster"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
	"github.com/tandemhci/tandem/replication"
)

// volCluster starts and forms a 3-node cluster.
func volCluster(t *testing.T) (*testcluster.Cluster, *testcluster.Tandem, context.Context) {
	t.Helper()
	testcluster.Require(t)
	bin := binDir(t)
	c := testcluster.New(t, testcluster.Options{Nodes: 3})
	td := testcluster.NewTandem(c, bin)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	t.Cleanup(cancel)
	for _, n := range c.Nodes {
		if _, err := td.StartDaemon(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	if err := td.Form(ctx, "vols"); err != nil {
		t.Fatal(err)
	}
	if _, err := td.WaitStatus(ctx, c.Nodes[0], 15*time.Second, func(s *tandemv1.ClusterStatus) bool { return s.Quorate && s.VotesOnline == 3 }); err != nil {
		t.Fatal(err)
	}
	return c, td, ctx
}

func volumeCmd(t *testing.T, ctx context.Context, td *testcluster.Tandem, n *testcluster.Node, args ...string) *tandemv1.VolumeInfo {
	t.Helper()
	out, _, err := td.CLI(ctx, n, append(append([]string{"volume"}, args...), "--output", "json")...)
	if err != nil {
		t.Fatal(err)
	}
	var info tandemv1.VolumeInfo
	if err := adminclient.UnmarshalJSON([]byte(out), &info); err != nil {
		t.Fatalf("volume %v: %v\n%s", args, err, out)
	}
	return &info
}

func replicaState(info *tandemv1.VolumeInfo, node string) *tandemv1.VolumeReplica {
	for _, r := range info.Replicas {
		if r.Node == node {
			return r
		}
	}
	return &tandemv1.VolumeReplica{}
}

func waitVolume(t *testing.T, ctx context.Context, td *testcluster.Tandem, n *testcluster.Node, name string, timeout time.Duration, ok func(*tandemv1.VolumeInfo) bool) *tandemv1.VolumeInfo {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last *tandemv1.VolumeInfo
	for time.Now().Before(deadline) {
		out, _, err := td.CLI(ctx, n, "volume", "show", name, "--output", "json")
		if err == nil {
			var info tandemv1.VolumeInfo
			if adminclient.UnmarshalJSON([]byte(out), &info) == nil {
				last = &info
				if ok(&info) {
					return &info
				}
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("volume %s: condition not met within %s; last: %v", name, timeout, last)
	return nil
}

func nbdSocket(td *testcluster.Tandem, n *testcluster.Node) string {
	return filepath.Join(td.DataDir(n), "nbd.sock")
}

func nbdURI(td *testcluster.Tandem, n *testcluster.Node, vol string) string {
	return fmt.Sprintf("nbd+unix:///%s?socket=%s", vol, nbdSocket(td, n))
}

// replicaSum hashes the data area of a node's replica file.
func replicaSum(t *testing.T, td *testcluster.Tandem, n *testcluster.Node, vol string, size int64) [32]byte {
	t.Helper()
	f, err := os.Open(filepath.Join(td.DataDir(n), "volumes", vol+".vol"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyN(h, f, size); err != nil {
		t.Fatal(err)
	}
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s
}

func runTool(t *testing.T, ctx context.Context, name string, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(ctx, "timeout", append([]string{"-s", "KILL", "180", name}, args...)...)
	cmd.Dir = t.TempDir() // fio writes verify state files into its working directory
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestVolumeExportWithRealClients: qemu-img, qemu-io, nbdinfo and fio's nbd
// engine with crc32c verify against 2- and 3-replica volumes; every replica
// ends with the same bytes.
func TestVolumeExportWithRealClients(t *testing.T) {
	c, td, ctx := volCluster(t)
	n1, n2, n3 := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	const size = 64 << 20
	// Every node reports the disk its volumes go to.
	out, _, err := td.CLI(ctx, n3, "node", "list", "--output", "json")
	if err != nil {
		t.Fatal(err)
	}
	var nodes tandemv1.ListNodesResponse
	if err := adminclient.UnmarshalJSON([]byte(out), &nodes); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes.Nodes {
		if len(n.Disks) == 0 || n.Disks[0].FreeBytes <= 0 || n.Disks[0].CapacityBytes < n.Disks[0].FreeBytes {
			t.Fatalf("node %s disks: %v", n.Name, n.Disks)
		}
	}
	v2 := volumeCmd(t, ctx, td, n1, "create", "v2", "--size", "64M", "--replicas", "2", "--nodes", "n1,n2")
	if v2.Primary != "n1" || v2.Witness != "n3" || len(v2.Replicas) != 2 {
		t.Fatalf("v2: %v", v2)
	}
	v3 := volumeCmd(t, ctx, td, n2, "create", "v3", "--size", "64M", "--replicas", "3", "--nodes", "n2,n3,n1")
	if v3.Primary != "n2" || len(v3.Replicas) != 3 || v3.Witness != "" {
		t.Fatalf("v3: %v", v3)
	}

	var info struct {
		Size  int64 `json:"export-size"`
		FUA   bool  `json:"can_fua"`
		Flush bool  `json:"can_flush"`
		Trim  bool  `json:"can_trim"`
		Zero  bool  `json:"can_zero"`
		Multi bool  `json:"can_multi_conn"`
	}
	out = runTool(t, ctx, "nbdinfo", "--json", nbdURI(td, n1, "v2"))
	var wrapped struct {
		Exports []json.RawMessage `json:"exports"`
	}
	if err := json.Unmarshal([]byte(out), &wrapped); err != nil || len(wrapped.Exports) != 1 {
		t.Fatalf("nbdinfo: %v\n%s", err, out)
	}
	if err := json.Unmarshal(wrapped.Exports[0], &info); err != nil {
		t.Fatal(err)
	}
	if info.Size != size || !info.FUA || !info.Flush || !info.Trim || !info.Zero || !info.Multi {
		t.Fatalf("nbdinfo: %+v", info)
	}
	if out := runTool(t, ctx, "qemu-img", "info", "--output=json", nbdURI(td, n1, "v2")); !strings.Contains(out, fmt.Sprintf(`"virtual-size": %d`, size)) {
		t.Fatalf("qemu-img info:\n%s", out)
	}
	runTool(t, ctx, "qemu-io", "-f", "raw", "-c", "write -P 0xab 4096 1M", "-c", "write -z 2M 64k", "-c", "flush",
		"-c", "read -P 0xab 4096 1M", "-c", "read -P 0 2M 64k", nbdURI(td, n1, "v2"))
	// A non-primary refuses the export, and says why in the reply text
	// (nbdinfo shows only the code, so read the text with our client).
	cmd := exec.CommandContext(ctx, "nbdinfo", nbdURI(td, n2, "v2"))
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Fatalf("nbdinfo on a secondary succeeded:\n%s", out)
	}
	if _, err := nbdclient.Dial(ctx, "unix", nbdSocket(td, n2), "v2"); err == nil || !strings.Contains(err.Error(), "not the primary of volume v2: n1 is") {
		t.Fatalf("export on a secondary: %v", err)
	}

	for _, tc := range []struct {
		vol     string
		primary *testcluster.Node
	}{{"v2", n1}, {"v3", n2}} {
		runTool(t, ctx, "fio", "--name=verify", "--ioengine=nbd", "--uri="+nbdURI(td, tc.primary, tc.vol), "--rw=randwrite", "--bs=4k",
			"--size=32m", "--iodepth=16", "--verify=crc32c", "--do_verify=1", "--verify_fatal=1", "--verify_state_save=0", "--randrepeat=0")
	}
	// The same bytes everywhere once flushed.
	runTool(t, ctx, "qemu-io", "-f", "raw", "-c", "flush", nbdURI(td, n1, "v2"))
	runTool(t, ctx, "qemu-io", "-f", "raw", "-c", "flush", nbdURI(td, n2, "v3"))
	if a, b := replicaSum(t, td, n1, "v2", size), replicaSum(t, td, n2, "v2", size); a != b {
		t.Fatal("v2 replicas differ")
	}
	a := replicaSum(t, td, n1, "v3", size)
	for _, n := range []*testcluster.Node{n2, n3} {
		if replicaSum(t, td, n, "v3", size) != a {
			t.Fatalf("v3 replica on %s differs", n.Name)
		}
	}
	// Delete refuses while attached, works after.
	client, err := nbdclient.Dial(ctx, "unix", nbdSocket(td, n1), "v2")
	if err != nil {
		t.Fatal(err)
	}
	if _, stderr, err := td.CLI(ctx, n3, "volume", "delete", "v2"); err == nil || !strings.Contains(stderr, "attached") {
		t.Fatalf("delete while attached: %v %s", err, stderr)
	}
	client.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, stderr, err := td.CLI(ctx, n3, "volume", "delete", "v2")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("delete after detach: %v %s", err, stderr)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if _, err := os.Stat(filepath.Join(td.DataDir(n1), "volumes", "v2.vol")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("replica file left after delete: %v", err)
	}
}

// pattern fills a block with its index so that any block can be checked.
func pattern(block uint64) []byte {
	b := make([]byte, 4096)
	for i := 0; i < len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], block*0x9e3779b97f4a7c15+uint64(i))
	}
	return b
}

// writeBlocks writes distinct blocks concurrently until stop, recording
// which the server acknowledged.
func writeBlocks(ctx context.Context, c *nbdclient.Client, first, count uint64, stop <-chan struct{}) (acked []uint64, failed int) {
	var mu sync.Mutex
	var next atomic.Uint64
	next.Store(first)
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				b := next.Add(1) - 1
				if b >= first+count {
					return
				}
				err := c.WriteAt(ctx, pattern(b), b*4096, nbdclient.FlagFUA)
				mu.Lock()
				if err == nil {
					acked = append(acked, b)
				} else {
					failed++
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	return acked, failed
}

// TestPrimaryCrashLosesNoAcknowledgedWrite: SIGKILL the primary in the middle
// of a write run, promote the secondary, and read back every write that was
// acknowledged. The crash phase uses a client that records acknowledgements
// (fio cannot once its server dies).
func TestPrimaryCrashLosesNoAcknowledgedWrite(t *testing.T) {
	c, td, ctx := volCluster(t)
	n1, n2 := c.Nodes[0], c.Nodes[1]
	volumeCmd(t, ctx, td, n1, "create", "crash", "--size", "128M", "--replicas", "2", "--nodes", "n1,n2")
	client, err := nbdclient.Dial(ctx, "unix", nbdSocket(td, n1), "crash")
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	stop := make(chan struct{})
	go func() {
		time.Sleep(2 * time.Second)
		c.Kill(n1)
		close(stop)
	}()
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	acked, failed := writeBlocks(wctx, client, 0, 30000, nil)
	cancel()
	<-stop
	if len(acked) < 50 {
		t.Fatalf("only %d writes acknowledged before the crash", len(acked))
	}
	t.Logf("%d writes acknowledged, %d failed at the crash", len(acked), failed)

	info := volumeCmd(t, ctx, td, n2, "promote", "crash", "--node", "n2")
	if info.Primary != "n2" || info.Epoch != 2 {
		t.Fatalf("after promote: primary %s epoch %d", info.Primary, info.Epoch)
	}
	nc, err := nbdclient.Dial(ctx, "unix", nbdSocket(td, n2), "crash")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	buf := make([]byte, 4096)
	for _, b := range acked {
		if err := nc.ReadAt(ctx, buf, b*4096); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf, pattern(b)) {
			t.Fatalf("acknowledged block %d lost on the new primary", b)
		}
	}
	// fio verify on the new primary: the volume is fully usable.
	runTool(t, ctx, "fio", "--name=after", "--ioengine=nbd", "--uri="+nbdURI(td, n2, "crash"), "--rw=randwrite", "--bs=4k", "--offset=64m",
		"--size=16m", "--iodepth=8", "--verify=crc32c", "--do_verify=1", "--verify_fatal=1", "--verify_state_save=0")
}

// TestStalePrimaryRefusedAfterEpochBump: cut the primary off, promote the
// secondary, heal. The old primary never gets a write acknowledged, and the
// replica refuses its epoch with a typed error (checked over real mTLS from
// inside the old primary's host).
func TestStalePrimaryRefusedAfterEpochBump(t *testing.T) {
	c, td, ctx := volCluster(t)
	n1, n2 := c.Nodes[0], c.Nodes[1]
	volumeCmd(t, ctx, td, n1, "create", "stale", "--size", "64M", "--replicas", "2", "--nodes", "n1,n2")
	client, err := nbdclient.Dial(ctx, "unix", nbdSocket(td, n1), "stale")
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if err := client.WriteAt(ctx, pattern(1), 4096, nbdclient.FlagFUA); err != nil {
		t.Fatal(err)
	}
	c.Isolate(n1)
	// The isolated primary cannot acknowledge: n2 is unreachable and it
	// cannot commit "n2 Outdated" without quorum.
	done := make(chan error, 1)
	go func() {
		wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		done <- client.WriteAt(wctx, pattern(2), 8192, nbdclient.FlagFUA)
	}()
	info := volumeCmd(t, ctx, td, n2, "promote", "stale", "--node", "n2")
	if info.Primary != "n2" || info.Epoch != 2 {
		t.Fatalf("promote while the old primary is cut off: %v", info)
	}
	// Before healing the write may still hang, or have failed: once the
	// cut-off node's lease ran out it fenced itself and froze the volume
	// (ESHUTDOWN), which with slow elections can come before the promotion
	// returns. It must never succeed.
	answered := false
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("the cut-off primary acknowledged a write before healing")
		}
		t.Logf("the cut-off primary failed the write before healing: %v", err)
		answered = true
	case <-time.After(2 * time.Second):
	}
	c.Heal(n1)
	if !answered {
		select {
		case err := <-done:
			if err == nil {
				t.Fatal("the deposed primary acknowledged a write")
			}
		case <-time.After(45 * time.Second):
			t.Fatal("the deposed primary's write neither failed nor finished")
		}
	}
	// The replica refuses the old primary's epoch and a non-primary sender.
	for _, tc := range []struct {
		epoch uint64
		want  replication.Status
	}{{1, replication.StatusStaleEpoch}, {2, replication.StatusNotPrimary}} {
		cmd := exec.CommandContext(ctx, "ip", "netns", "exec", n1.NS, os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "TANDEM_TEST_HELPER=hello",
			"HELLO_DIR="+td.DataDir(n1), "HELLO_ADDR="+n2.IP+":7402", "HELLO_VOLUME=stale", "HELLO_EPOCH="+fmt.Sprint(tc.epoch))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("hello helper: %v\n%s", err, out)
		}
		if got := strings.TrimSpace(string(out)); got != fmt.Sprint(uint16(tc.want)) {
			t.Fatalf("hello at epoch %d from n1: status %q, want %d (%s)", tc.epoch, got, tc.want, tc.want)
		}
	}
	// The new primary still holds the old data and takes writes.
	nc, err := nbdclient.Dial(ctx, "unix", nbdSocket(td, n2), "stale")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	buf := make([]byte, 4096)
	if err := nc.ReadAt(ctx, buf, 4096); err != nil || !bytes.Equal(buf, pattern(1)) {
		t.Fatalf("acknowledged block lost: %v", err)
	}
	if err := nc.WriteAt(ctx, pattern(3), 12288, nbdclient.FlagFUA); err != nil {
		t.Fatal(err)
	}
}

// helloHelper runs inside a node's namespace: it dials a replica with the
// node's certificate, says Hello at an epoch and prints the status code.
func helloHelper() int {
	dir := os.Getenv("HELLO_DIR")
	read := func(n string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, "tls", n))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		return b
	}
	cfg, err := pki.ClientTLS(read("node.crt"), read("node.key"), read("ca.crt"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	// Right after a heal the neighbour entry may still be failed for a few
	// seconds ("no route to host"): retry the dial for a while.
	var conn *tls.Conn
	for deadline := time.Now().Add(15 * time.Second); ; {
		d := &net.Dialer{Timeout: 5 * time.Second}
		if conn, err = tls.DialWithDialer(d, "tcp", os.Getenv("HELLO_ADDR"), cfg); err == nil {
			break
		}
		if time.Now().After(deadline) {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		time.Sleep(200 * time.Millisecond)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	var epoch uint64
	fmt.Sscan(os.Getenv("HELLO_EPOCH"), &epoch)
	b, _ := json.Marshal(replication.Hello{Volume: os.Getenv("HELLO_VOLUME"), From: "n1", Epoch: epoch, Size: 64 << 20})
	if _, err := conn.Write(replication.AppendFrame(nil, replication.Header{Type: replication.FrameHello, Epoch: epoch}, b)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	hdr := make([]byte, 64)
	_, p, err := replication.ReadFrame(conn, hdr, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	var ack replication.HelloAck
	if err := json.Unmarshal(p, &ack); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	fmt.Println(uint16(ack.Status))
	return 0
}

// TestIsolatedSecondaryIsOutdatedThenResynced: under write load the primary
// fences a cut-off secondary and goes on; after healing, only about the dirty
// set is resent and the replicas end identical.
func TestIsolatedSecondaryIsOutdatedThenResynced(t *testing.T) {
	c, td, ctx := volCluster(t)
	n1, n2 := c.Nodes[0], c.Nodes[1]
	const size = 256 << 20
	volumeCmd(t, ctx, td, n1, "create", "iso", "--size", "256M", "--replicas", "2", "--nodes", "n1,n2")
	client, err := nbdclient.Dial(ctx, "unix", nbdSocket(td, n1), "iso")
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if acked, _ := writeBlocks(ctx, client, 0, 512, nil); len(acked) != 512 {
		t.Fatalf("warm-up writes: %d acked", len(acked))
	}
	c.Isolate(n2)
	stop := make(chan struct{})
	var acked []uint64
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Spread over the volume: every 16th 4K block of the first 64 MiB.
		for i := uint64(0); i < 1024; i++ {
			select {
			case <-stop:
				return
			default:
			}
			b := i * 16
			if err := client.WriteAt(ctx, pattern(b+7), b*4096, 0); err != nil {
				t.Errorf("write while a secondary is cut off: %v", err)
				return
			}
			acked = append(acked, b)
		}
	}()
	waitVolume(t, ctx, td, n1, "iso", 60*time.Second, func(v *tandemv1.VolumeInfo) bool {
		return replicaState(v, "n2").State == tandemv1.ReplicaState_REPLICA_STATE_OUTDATED
	})
	<-done
	close(stop)
	if err := client.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	info := volumeCmd(t, ctx, td, n1, "show", "iso")
	dirty := replicaState(info, "n2").DirtyBytes
	if dirty == 0 || dirty >= size {
		t.Fatalf("dirty bytes for n2: %d", dirty)
	}
	t.Logf("%d writes while n2 was cut off; %d bytes dirty", len(acked), dirty)
	c.Heal(n2)
	info = waitVolume(t, ctx, td, n1, "iso", 60*time.Second, func(v *tandemv1.VolumeInfo) bool {
		r := replicaState(v, "n2")
		return r.State == tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE && r.Link == "in-sync"
	})
	sent := replicaState(info, "n2").ResyncSentBytes
	t.Logf("resync sent %d bytes for %d bytes dirtied (volume %d)", sent, dirty, int64(size))
	if sent == 0 || sent > dirty*3/2 {
		t.Fatalf("resync sent %d bytes for %d dirty", sent, dirty)
	}
	if err := client.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if replicaSum(t, td, n1, "iso", size) != replicaSum(t, td, n2, "iso", size) {
		t.Fatal("replicas differ after resync")
	}
}

// TestIsolatedPrimaryNeverAcknowledges: a primary cut off from everyone
// freezes; not one write is acknowledged.
func TestIsolatedPrimaryNeverAcknowledges(t *testing.T) {
	c, td, ctx := volCluster(t)
	n1 := c.Nodes[0]
	volumeCmd(t, ctx, td, n1, "create", "alone", "--size", "64M", "--replicas", "2", "--nodes", "n1,n2")
	client, err := nbdclient.Dial(ctx, "unix", nbdSocket(td, n1), "alone")
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	c.Isolate(n1)
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	var okCount atomic.Int32
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if client.WriteAt(wctx, pattern(uint64(i)), uint64(i)*4096, 0) == nil {
				okCount.Add(1)
			}
		}()
	}
	wg.Wait()
	if n := okCount.Load(); n != 0 {
		t.Fatalf("%d writes acknowledged by a primary cut off from everyone", n)
	}
}

// TestCorruptReplicaMetadataRefused: a replica with one superblock copy
// damaged (a torn write) opens from the other; with both damaged it is not
// opened, with a clear message, and is left as it was until the operator
// follows the message's hint, which rebuilds it from the primary.
func TestCorruptReplicaMetadataRefused(t *testing.T) {
	c, td, ctx := volCluster(t)
	n1, n2 := c.Nodes[0], c.Nodes[1]
	const size = 64 << 20
	volumeCmd(t, ctx, td, n1, "create", "meta", "--size", "64M", "--replicas", "2", "--nodes", "n1,n2")
	runTool(t, ctx, "qemu-io", "-f", "raw", "-c", "write -P 0x5a 0 8M", "-c", "flush", nbdURI(td, n1, "meta"))
	path := filepath.Join(td.DataDir(n2), "volumes", "meta.vol")
	// flip damages one byte inside each superblock copy named: 0 is the
	// last 4 KiB, 1 the 4 KiB before it.
	flip := func(copies ...int64) {
		t.Helper()
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		fi, _ := f.Stat()
		for _, cp := range copies {
			var b [1]byte
			off := fi.Size() - 4096*(cp+1) + 100
			if _, err := f.ReadAt(b[:], off); err != nil {
				t.Fatal(err)
			}
			b[0] ^= 0xff
			if _, err := f.WriteAt(b[:], off); err != nil {
				t.Fatal(err)
			}
		}
	}
	synced := func(v *tandemv1.VolumeInfo) bool {
		r := replicaState(v, "n2")
		return r != nil && r.State == tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE && r.Link == "in-sync"
	}
	restart := func() {
		t.Helper()
		if _, err := td.StartDaemon(ctx, n2); err != nil {
			t.Fatal(err)
		}
	}

	c.Kill(n2)
	flip(0)
	restart()
	waitVolume(t, ctx, td, n1, "meta", 60*time.Second, synced)
	if !strings.Contains(c.LogTail(n2, "tandemd", 400), "one superblock copy is damaged") {
		t.Errorf("opening from the other superblock copy was not logged:\n%s", c.LogTail(n2, "tandemd", 20))
	}

	c.Kill(n2)
	flip(0, 1)
	before, _ := os.ReadFile(path)
	restart()
	deadline := time.Now().Add(15 * time.Second)
	var logs string
	for logs = c.LogTail(n2, "tandemd", 200); !strings.Contains(logs, "volume metadata is corrupt"); logs = c.LogTail(n2, "tandemd", 200) {
		if time.Now().After(deadline) {
			t.Fatalf("no clear corruption message in n2's log:\n%s", c.LogTail(n2, "tandemd", 20))
		}
		time.Sleep(200 * time.Millisecond)
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(before, after) {
		t.Fatal("the corrupt replica was modified")
	}
	const hint = "tandem volume resync VOLUME --discard NODE"
	if !strings.Contains(logs, hint) {
		t.Fatalf("the corruption message does not give the way out %q:\n%s", hint, logs)
	}
	// The hint works.
	volumeCmd(t, ctx, td, n1, "resync", "meta", "--discard", "n2")
	waitVolume(t, ctx, td, n1, "meta", 120*time.Second, synced)
	if replicaSum(t, td, n1, "meta", size) != replicaSum(t, td, n2, "meta", size) {
		t.Fatal("replicas differ after rebuilding the corrupt one")
	}
}

// TestOnlineVerifyFindsAndRepairs: a block silently changed on a secondary's
// disk is found by verify while the volume stays online, and repaired.
func TestOnlineVerifyFindsAndRepairs(t *testing.T) {
	c, td, ctx := volCluster(t)
	n1, n2 := c.Nodes[0], c.Nodes[1]
	volumeCmd(t, ctx, td, n1, "create", "ver", "--size", "64M", "--replicas", "2", "--nodes", "n1,n2")
	runTool(t, ctx, "qemu-io", "-f", "raw", "-c", "write -P 0x5a 0 4M", "-c", "flush", nbdURI(td, n1, "ver"))
	if out, _, err := td.CLI(ctx, n3(c), "volume", "verify", "ver"); err != nil {
		t.Fatalf("verify of identical replicas: %v\n%s", err, out)
	}
	// Bit rot on n2: change one byte in its data area behind tandemd's back.
	path := filepath.Join(td.DataDir(n2), "volumes", "ver.vol")
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{0x00}, 1<<20+17); err != nil {
		t.Fatal(err)
	}
	f.Close()
	// Keep writing elsewhere while verifying: verify runs online.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			cmd := exec.CommandContext(ctx, "qemu-io", "-f", "raw", "-c", fmt.Sprintf("write -P %d 32M 64k", i%200), nbdURI(td, n1, "ver"))
			_ = cmd.Run()
		}
	}()
	out, _, err := td.CLI(ctx, n1, "volume", "verify", "ver", "--output", "json")
	var res tandemv1.VerifyVolumeResponse
	if uerr := adminclient.UnmarshalJSON([]byte(out), &res); uerr != nil {
		t.Fatalf("verify output: %v %v\n%s", err, uerr, out)
	}
	if err == nil || len(res.Mismatches) != 1 || res.Mismatches[0].Node != "n2" || res.Mismatches[0].Offset != 1<<20 || res.CheckedBytes != 64<<20 {
		t.Fatalf("verify after bit rot: err=%v result=%v", err, &res)
	}
	if _, stderr, err := td.CLI(ctx, n1, "volume", "verify", "ver", "--repair"); err != nil {
		t.Fatalf("verify --repair: %v %s", err, stderr)
	}
	if _, stderr, err := td.CLI(ctx, n1, "volume", "verify", "ver"); err != nil {
		t.Fatalf("verify after repair: %v %s", err, stderr)
	}
}

func n3(c *testcluster.Cluster) *testcluster.Node { return c.Nodes[2] }

// TestUnrelatedReplicaRefusedThenDiscarded: a replica holding another
// volume's data is refused (explicit diverged state), never overwritten
// silently; 'tandem volume resync --discard' resolves it with a full resync.
func TestUnrelatedReplicaRefusedThenDiscarded(t *testing.T) {
	c, td, ctx := volCluster(t)
	n1, n2 := c.Nodes[0], c.Nodes[1]
	const size = 32 << 20
	volumeCmd(t, ctx, td, n1, "create", "div", "--size", "32M", "--replicas", "2", "--nodes", "n1,n2")
	runTool(t, ctx, "qemu-io", "-f", "raw", "-c", "write -P 0x42 0 2M", "-c", "flush", nbdURI(td, n1, "div"))
	c.Kill(n2)
	path := filepath.Join(td.DataDir(n2), "volumes", "div.vol")
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := blockstore.Create(path, size, blockstore.CreateOptions{MaxPeers: 2}); err != nil { // a random volume ID
		t.Fatal(err)
	}
	if _, err := td.StartDaemon(ctx, n2); err != nil {
		t.Fatal(err)
	}
	waitVolume(t, ctx, td, n1, "div", 30*time.Second, func(v *tandemv1.VolumeInfo) bool {
		return replicaState(v, "n2").Link == "diverged"
	})
	if _, stderr, err := td.CLI(ctx, n3(c), "volume", "resync", "div", "--discard", "n1"); err == nil || !strings.Contains(stderr, "is the primary") {
		t.Fatalf("discarding the primary: %v %s", err, stderr)
	}
	if _, stderr, err := td.CLI(ctx, n3(c), "volume", "resync", "div", "--discard", "n2", "--wait", "--timeout-wait", "60s"); err != nil {
		t.Fatalf("resync --discard: %v %s", err, stderr)
	}
	info := volumeCmd(t, ctx, td, n1, "show", "div")
	if r := replicaState(info, "n2"); r.State != tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE || r.Link != "in-sync" {
		t.Fatalf("n2 after discard: %v", r)
	}
	runTool(t, ctx, "qemu-io", "-f", "raw", "-c", "flush", nbdURI(td, n1, "div"))
	if replicaSum(t, td, n1, "div", size) != replicaSum(t, td, n2, "div", size) {
		t.Fatal("replicas differ after the full resync")
	}
}

// TestPromotionReconcilesOtherSecondaries: with 3 replicas, a secondary may
// hold a write the dead primary never got acknowledged. After promotion the
// new primary finds and overwrites it, then clears the Reconcile flag.
func TestPromotionReconcilesOtherSecondaries(t *testing.T) {
	c, td, ctx := volCluster(t)
	n1, n2, n3node := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	const size = 32 << 20
	volumeCmd(t, ctx, td, n1, "create", "rec", "--size", "32M", "--replicas", "3", "--nodes", "n1,n2,n3")
	runTool(t, ctx, "qemu-io", "-f", "raw", "-c", "write -P 0x33 0 4M", "-c", "flush", nbdURI(td, n1, "rec"))
	c.Kill(n1)
	// n3 got a write from n1 that n2 never saw and nobody acknowledged.
	f, err := os.OpenFile(filepath.Join(td.DataDir(n3node), "volumes", "rec.vol"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(bytes.Repeat([]byte{0x77}, 4096), 2<<20); err != nil {
		t.Fatal(err)
	}
	f.Sync()
	f.Close()
	info := volumeCmd(t, ctx, td, n2, "promote", "rec", "--node", "n2")
	if info.Primary != "n2" {
		t.Fatalf("promote: %v", info)
	}
	waitVolume(t, ctx, td, n2, "rec", 60*time.Second, func(v *tandemv1.VolumeInfo) bool {
		r := replicaState(v, "n3")
		return r.State == tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE && !r.Reconcile && r.Link == "in-sync"
	})
	runTool(t, ctx, "qemu-io", "-f", "raw", "-c", "flush", nbdURI(td, n2, "rec"))
	if replicaSum(t, td, n2, "rec", size) != replicaSum(t, td, n3node, "rec", size) {
		t.Fatal("n3 still differs from the new primary after reconcile")
	}
}

// writeUntilStopped writes 4 KiB blocks over the first volumeBytes of c,
// 256 at a time, until stop closes or a write fails, and then sends how
// many were acknowledged and how many failed.
func writeUntilStopped(ctx context.Context, c *nbdclient.Client, volumeBytes uint64, stop <-chan struct{}) <-chan [2]int {
	done := make(chan [2]int, 1)
	go func() {
		var acked, failed int
		for block := uint64(0); ; block = (block + 256) % (volumeBytes / 4096) {
			select {
			case <-stop:
				done <- [2]int{acked, failed}
				return
			default:
			}
			a, f := writeBlocks(ctx, c, block, 256, stop)
			acked, failed = acked+len(a), failed+f
			if f > 0 {
				done <- [2]int{acked, failed}
				return
			}
		}
	}()
	return done
}
