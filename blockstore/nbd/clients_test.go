package nbd

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tandemhci/tandem/blockstore"
)

// command runs a real client with a deadline; the process is killed if it
// overstays, and its output is returned with its error.
func command(t *testing.T, timeout time.Duration, name string, args ...string) (string, error) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Skipf("%s not installed (make deps installs it)", name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// run is command that fails the test on error.
func run(t *testing.T, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	out, err := command(t, timeout, name, args...)
	if err != nil {
		t.Fatalf("%s %q: %v\n%s", name, args, err, out)
	}
	return out
}

func TestNBDInfo(t *testing.T) {
	h := startServer(t, map[string]*Export{
		"rw": {Name: "rw", Description: "a test volume", Volume: newMemVolume(8 << 20), MultiConn: true},
		"ro": {Name: "ro", Volume: newMemVolume(1 << 20), ReadOnly: true, MinBlock: 4096, PreferredBlock: 65536, MaxBlock: 1 << 20},
	})
	for _, tc := range []struct {
		uri  string
		want map[string]any
	}{
		{h.uri("rw"), map[string]any{
			"export-name": "rw", "description": "a test volume", "export-size": 8 << 20,
			"block_size_minimum": 512, "block_size_preferred": 4096, "block_size_maximum": 32 << 20,
			"can_flush": true, "can_fua": true, "can_trim": true, "can_zero": true, "can_multi_conn": true,
			"is_read_only": false, "can_fast_zero": false, "can_df": false,
		}},
		{h.tcpURI("ro"), map[string]any{
			"export-name": "ro", "export-size": 1 << 20,
			"block_size_minimum": 4096, "block_size_preferred": 65536, "block_size_maximum": 1 << 20,
			"can_flush": true, "can_fua": false, "can_trim": false, "can_zero": false, "can_multi_conn": false,
			"is_read_only": true,
		}},
	} {
		out := run(t, 30*time.Second, "nbdinfo", "--json", tc.uri)
		var info struct {
			Protocol   string           `json:"protocol"`
			Structured bool             `json:"structured"`
			Exports    []map[string]any `json:"exports"`
		}
		if err := json.Unmarshal([]byte(out), &info); err != nil || len(info.Exports) != 1 {
			t.Fatalf("nbdinfo output: %v\n%s", err, out)
		}
		if info.Protocol != "newstyle-fixed" || info.Structured {
			t.Errorf("protocol %q structured %v", info.Protocol, info.Structured)
		}
		for k, want := range tc.want {
			got := info.Exports[0][k]
			if n, ok := want.(int); ok {
				want = float64(n)
			}
			if got != want {
				t.Errorf("%s: %s = %v, want %v", tc.uri, k, got, want)
			}
		}
	}
}

// TestQemuIO drives QEMU's NBD client and checks what reached the volume:
// FUA only when asked for, flushes, trims and NO_HOLE zeroing.
func TestQemuIO(t *testing.T) {
	vol := newMemVolume(16 << 20)
	h := startServer(t, map[string]*Export{"vm": {Volume: vol, MultiConn: true}})
	// Writeback caching: plain writes must arrive without FUA.
	out := run(t, 60*time.Second, "qemu-io", "-f", "raw", "-t", "writeback",
		"-c", "write -P 0xab 4096 65536",
		"-c", "read -P 0xab 4096 65536",
		"-c", "flush",
		"-c", "discard 0 4096",
		"-c", "write -P 0xcd 1M 64k",
		"-c", "write -z 1M 64k",
		"-c", "read -P 0 1M 64k",
		"-c", "write -P 0xcd 2M 64k",
		"-c", "write -z -u 2M 64k",
		"-c", "read -P 0 2M 64k",
		h.uri("vm"))
	if strings.Contains(out, "Pattern verification failed") || strings.Count(out, "read 65536/65536") != 3 {
		t.Fatalf("qemu-io:\n%s", out)
	}
	data, writes, fua, flushes, trims, zeroes, noHoles := vol.snapshot()
	if writes != 3 || fua != 0 || flushes < 1 || trims != 1 || zeroes != 2 || noHoles != 1 {
		t.Fatalf("volume saw writes %d (FUA %d), flushes %d, trims %d, zeroes %d (NO_HOLE %d)",
			writes, fua, flushes, trims, zeroes, noHoles)
	}
	if !bytes.Equal(data[4096:4096+65536], bytes.Repeat([]byte{0xab}, 65536)) ||
		!bytes.Equal(data[0:4096], make([]byte, 4096)) ||
		!bytes.Equal(data[1<<20:2<<20+65536], make([]byte, 1<<20+65536)) {
		t.Fatal("volume contents differ from what qemu-io wrote")
	}

	// write -f asks for FUA explicitly; writethrough caching (qemu-io's
	// default) puts FUA on every write. Both over TCP this time.
	run(t, 60*time.Second, "qemu-io", "-f", "raw", "-t", "writeback", "-c", "write -f -P 0x11 8M 4k", h.tcpURI("vm"))
	if _, w, f, _, _, _, _ := vol.snapshot(); w != 4 || f != 1 {
		t.Fatalf("after write -f: writes %d, FUA %d", w, f)
	}
	out = run(t, 60*time.Second, "qemu-io", "-f", "raw", "-c", "write -P 0x22 9M 4k", "-c", "read -P 0x11 8M 4k", h.tcpURI("vm"))
	if strings.Contains(out, "Pattern verification failed") {
		t.Fatalf("qemu-io:\n%s", out)
	}
	if _, w, f, _, _, _, _ := vol.snapshot(); w != 5 || f != 2 {
		t.Fatalf("after writethrough write: writes %d, FUA %d", w, f)
	}
}

// randomFile writes size bytes: random data with an aligned zero hole and
// an unaligned random tail, to exercise zero detection and partial blocks.
func randomFile(t *testing.T, path string, size int) []byte {
	t.Helper()
	b := make([]byte, size)
	rand.Read(b[:size/4])
	rand.Read(b[size/2 : size/2+3000])
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestQemuImg(t *testing.T) {
	const size = 24 << 20
	vol := newMemVolume(size)
	for i := range vol.data {
		vol.data[i] = 0xff // stale contents: zero regions must really be zeroed
	}
	h := startServer(t, map[string]*Export{"vm": {Volume: vol}})
	dir := t.TempDir()
	src := filepath.Join(dir, "src.raw")
	want := randomFile(t, src, size)

	run(t, 120*time.Second, "qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", src, h.uri("vm"))
	if d, _, _, _, _, _, _ := vol.snapshot(); !bytes.Equal(d, want) {
		t.Fatal("volume differs from the source after qemu-img convert")
	}
	run(t, 60*time.Second, "qemu-img", "compare", "-f", "raw", "-F", "raw", src, h.uri("vm"))
	run(t, 60*time.Second, "qemu-img", "compare", "-f", "raw", "-F", "raw", h.tcpURI("vm"), src)

	out := run(t, 30*time.Second, "qemu-img", "info", "--output=json", h.uri("vm"))
	var info struct {
		VirtualSize int64  `json:"virtual-size"`
		Format      string `json:"format"`
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil || info.VirtualSize != size || info.Format != "raw" {
		t.Fatalf("qemu-img info: %v\n%s", err, out)
	}

	dst := filepath.Join(dir, "dst.raw")
	run(t, 120*time.Second, "qemu-img", "convert", "-f", "raw", "-O", "raw", h.tcpURI("vm"), dst)
	if got, err := os.ReadFile(dst); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("copy out of the export differs (%v)", err)
	}

	vol.mu.Lock()
	vol.data[size-1] ^= 1
	vol.mu.Unlock()
	if out, err := command(t, 60*time.Second, "qemu-img", "compare", "-f", "raw", "-F", "raw", src, h.uri("vm")); err == nil {
		t.Fatalf("qemu-img compare missed a changed byte:\n%s", out)
	}
}

// TestNbdcopy copies through libnbd, which opens several connections when
// the export advertises CAN_MULTI_CONN.
func TestNbdcopy(t *testing.T) {
	const size = 16 << 20
	vol := newMemVolume(size)
	h := startServer(t, map[string]*Export{"vm": {Volume: vol, MultiConn: true}})
	dir := t.TempDir()
	src := filepath.Join(dir, "src.raw")
	want := randomFile(t, src, size)

	run(t, 120*time.Second, "nbdcopy", "--flush", src, h.uri("vm"))
	data, _, _, flushes, _, _, _ := vol.snapshot()
	if !bytes.Equal(data, want) {
		t.Fatal("volume differs from the source after nbdcopy")
	}
	if flushes < 1 {
		t.Fatal("nbdcopy --flush did not reach the volume")
	}
	if n := h.srv.Stats().Connections; n < 2 {
		t.Fatalf("nbdcopy used %d connection(s); CAN_MULTI_CONN should give several", n)
	}
	dst := filepath.Join(dir, "dst.raw")
	run(t, 120*time.Second, "nbdcopy", h.tcpURI("vm"), dst)
	if got, err := os.ReadFile(dst); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("copy out of the export differs (%v)", err)
	}
}

// TestFio runs fio's nbd engine with verification against a file-backed
// volume: two jobs, so two connections, each writing then verifying its
// half.
func TestFio(t *testing.T) {
	if _, err := exec.LookPath("timeout"); err != nil {
		t.Skip("timeout(1) not installed")
	}
	vol, err := newFileVolume(filepath.Join(t.TempDir(), "vol.img"), 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vol.Close() })
	h := startServer(t, map[string]*Export{"vm": {Volume: vol, MultiConn: true}})
	for _, uri := range []string{h.uri("vm"), h.tcpURI("vm")} {
		// fio can spin if its server dies, so it runs under SIGKILL timeout.
		out := run(t, 200*time.Second, "timeout", "-s", "KILL", "180", "fio",
			"--name=v", "--ioengine=nbd", "--uri="+uri,
			"--rw=randwrite", "--bs=4k", "--size=32m", "--iodepth=16",
			"--numjobs=2", "--offset_increment=32m",
			"--verify=crc32c", "--do_verify=1", "--verify_fatal=1", "--verify_state_save=0",
			"--runtime=150", "--output-format=terse")
		t.Logf("fio %s: %d bytes of terse output", uri, len(out))
	}
	if s := h.srv.Stats(); s.Errors != 0 || s.Writes == 0 || s.Reads == 0 {
		t.Fatalf("stats after fio: %+v", s)
	}
}

// TestLocalVolume runs real clients against the local backend (O_DIRECT
// file with on-disk metadata), the volume the daemon actually exports.
func TestLocalVolume(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vol")
	if err := blockstore.Create(path, 64<<20, blockstore.CreateOptions{}); err != nil {
		t.Skipf("local backend unavailable here: %v", err)
	}
	vol, err := blockstore.Open(path, blockstore.OpenOptions{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vol.Close() })
	h := startServer(t, map[string]*Export{"vm": {Volume: vol, MultiConn: true}})

	out := run(t, 200*time.Second, "timeout", "-s", "KILL", "180", "fio",
		"--name=v", "--ioengine=nbd", "--uri="+h.uri("vm"),
		"--rw=randrw", "--bs=4k,64k", "--size=32m", "--iodepth=16",
		"--verify=crc32c", "--do_verify=1", "--verify_fatal=1", "--verify_state_save=0", "--runtime=150", "--output-format=terse")
	t.Logf("fio: %d bytes of terse output", len(out))

	src := filepath.Join(t.TempDir(), "src.raw")
	randomFile(t, src, 64<<20)
	run(t, 120*time.Second, "qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", src, h.uri("vm"))
	run(t, 60*time.Second, "qemu-img", "compare", "-f", "raw", "-F", "raw", src, h.tcpURI("vm"))
	run(t, 60*time.Second, "qemu-io", "-f", "raw", "-c", "write -f -P 0x5a 1M 64k", "-c", "flush",
		"-c", "discard 2M 1M", "-c", "write -z 4M 1M", "-c", "read -P 0 4M 1M", "-c", "read -P 0x5a 1M 64k", h.uri("vm"))
	if s := h.srv.Stats(); s.Errors != 0 {
		t.Fatalf("stats: %+v", s)
	}
}
