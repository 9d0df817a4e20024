package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tandemhci/tandem/internal/adminclient"
	"github.com/tandemhci/tandem/internal/guest"
	"github.com/tandemhci/tandem/internal/testcluster"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// TestVMConsoles (issue 18, consoles): the interactive serial console and
// the VNC tunnel, each opened on a node that does not run the VM (so the
// stream is forwarded over the peer API). Through `tandem vm vnc`, a small
// RFB client gets a framebuffer the size `virsh screenshot` reports, not
// blank; a readonly credential and no credential are refused, as is a
// stopped VM; after a live migration the same tunnel reaches the VM on its
// new node. Through `tandem vm console` (pipes), a line sent to the test
// guest's serial echo comes back, and Ctrl-] ends the session.
func TestVMConsoles(t *testing.T) {
	vc := newVMCluster(t)
	c, td, ctx := vc.c, vc.td, vc.ctx
	n1, n2, n3 := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	vip := strings.TrimSuffix(c.ReceiverIP, ".1") + ".51"
	vc.vm(t, n1, "create", "g1", "--memory", "192M", "--disk", "64M,replicas=3", "--node", n1.Name,
		"--kernel", vc.img.Kernel, "--initrd", vc.img.Initrd, "--cmdline", vc.cmdline(vip), "--nic", c.VMBridge, "--start")
	vc.guestProgress(t, guest.Datagram{}, 3*time.Minute)
	// A stopped VM: consoles refused, nothing opened.
	vc.vm(t, n1, "create", "off1", "--memory", "128M", "--kernel", vc.img.Kernel, "--initrd", vc.img.Initrd)

	// Serial, from n3: a line to the guest, its echo back, Ctrl-] ends.
	t.Run("serial", func(t *testing.T) {
		p := startCLI(t, ctx, td, n3, "vm", "console", "g1")
		p.waitStderr(t, "Escape character is ^]")
		line := fmt.Sprintf("hello-console-%d", time.Now().UnixNano())
		if _, err := io.WriteString(p.stdin, line+"\n"); err != nil {
			t.Fatal(err)
		}
		p.waitStdout(t, "echo: "+line)
		if _, err := p.stdin.Write([]byte{0x1d}); err != nil {
			t.Fatal(err)
		}
		if err := p.wait(); err != nil {
			t.Fatalf("vm console after Ctrl-]: %v\n%s", err, p.stderr())
		}
		if !strings.Contains(p.stderr(), "Disconnected from VM g1") {
			t.Fatalf("vm console stderr: %s", p.stderr())
		}
		// The log view is unchanged, and holds the exchange (QEMU logs
		// each byte just after the socket got it: ask until it is there).
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(time.Second) {
			out, stderr, err := td.CLI(ctx, n2, "vm", "console", "g1", "--log", "--tail", "65536")
			// The guest's tty writes "\r\n" as "\r\r\n"; "\r" shows the
			// whole line is there.
			if err == nil && strings.Contains(out, "echo: "+line+"\r") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("vm console --log: %v\n%s\n%s", err, stderr, clipTail(out, 2000))
			}
		}
	})

	refusals := func(t *testing.T, run func(args ...string) (string, string, error), want string) {
		t.Helper()
		for _, args := range [][]string{{"vm", "vnc", "g1", "--listen", "127.0.0.1:0"}, {"vm", "console", "g1"}} {
			out, stderr, err := run(args...)
			if err == nil || !strings.Contains(stderr, want) || strings.Contains(out, "Listening") {
				t.Fatalf("%v: err=%v want %q\nstdout: %s\nstderr: %s", args, err, want, out, stderr)
			}
		}
	}
	t.Run("refused", func(t *testing.T) {
		for _, args := range [][]string{{"vm", "vnc", "off1", "--listen", "127.0.0.1:0"}, {"vm", "console", "off1"}} {
			out, stderr, err := td.CLI(ctx, n2, args...)
			if err == nil || !strings.Contains(stderr, "VM off1 is stopped") || strings.Contains(out, "Listening") {
				t.Fatalf("%v on a stopped VM: err=%v\nstdout: %s\nstderr: %s", args, err, out, stderr)
			}
		}
		out, _, err := td.CLI(ctx, n1, "credential", "create", "viewer", "--role", "readonly", "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		var r tandemv1.CreateCredentialResponse
		if err := adminclient.UnmarshalJSON([]byte(out), &r); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		cred := td.Credentials(n1)
		refusals(t, func(args ...string) (string, string, error) {
			return td.RawCLI(ctx, n2, append([]string{"--server", td.AdminAddr(n1), "--credentials", cred, "--token", r.Secret}, args...)...)
		}, "credential viewer has role readonly; /tandem.v1.Console/")
		// The client certificate without any token.
		bare := t.TempDir()
		for _, f := range []string{adminclient.CAFile, adminclient.CertFile, adminclient.KeyFile} {
			if b, err := os.ReadFile(filepath.Join(cred, f)); err != nil {
				t.Fatal(err)
			} else {
				if err := os.WriteFile(filepath.Join(bare, f), b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
		}
		refusals(t, func(args ...string) (string, string, error) {
			return td.RawCLI(ctx, n2, append([]string{"--server", td.AdminAddr(n1), "--credentials", bare}, args...)...)
		}, "token")
	})

	// VNC, from n2 (g1 runs on n1), then after g1 migrates to n2.
	p := startCLI(t, ctx, td, n2, "vm", "vnc", "g1", "--listen", "127.0.0.1:0")
	m := p.waitStdoutMatch(t, regexp.MustCompile(`Listening on (\S+) for VNC viewers`))
	addr := m[1]
	check := func(t *testing.T, on *testcluster.Node) {
		t.Helper()
		fb := rfbFrame(t, ctx, n2, addr)
		w, h := screenshotSize(t, vc, on, "g1")
		if fb.w != w || fb.h != h {
			t.Fatalf("RFB framebuffer %dx%d, virsh screenshot on %s %dx%d", fb.w, fb.h, on.Name, w, h)
		}
		if fb.distinct < 2 {
			t.Fatalf("RFB framebuffer %dx%d is blank (%d distinct pixel values)", fb.w, fb.h, fb.distinct)
		}
		t.Logf("VNC through the tunnel (VM on %s): %dx%d, %d bpp, %d distinct pixel values; virsh screenshot %dx%d", on.Name, fb.w, fb.h, fb.bpp, fb.distinct, w, h)
	}
	check(t, n1)
	// The tunnel follows the VM: only where QEMU now runs matters here,
	// not the guest's health after the switchover (QEMU TCG sometimes
	// crashes the guest kernel there; see vmCluster.migrateLive, which
	// the migration tests use). The display is QEMU's either way.
	if out, stderr, err := td.CLI(ctx, n1, "vm", "migrate", "g1", "--to", n2.Name, "--output", "json"); err != nil {
		t.Fatalf("migrate: %v\n%s\n%s", err, stderr, out)
	}
	if v := vc.vm(t, n3, "show", "g1"); v.Node != n2.Name || v.State != "running" {
		t.Fatalf("g1 after migration: %+v", v)
	}
	check(t, n2)
	p.stop(t)
}

// cliProc is a tandem CLI running in a node's namespace, its stdin a pipe.
type cliProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *syncBuf
	errb  *syncBuf
	done  chan error
}

// syncBuf is a process's output as it comes; ch ticks on each write.
type syncBuf struct {
	ch  chan struct{}
	mu  sync.Mutex
	buf bytes.Buffer
}

func newSyncBuf() *syncBuf { return &syncBuf{ch: make(chan struct{}, 1)} }

func (b *syncBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	b.buf.Write(p)
	b.mu.Unlock()
	select {
	case b.ch <- struct{}{}:
	default:
	}
	return len(p), nil
}

func (b *syncBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func startCLI(t *testing.T, ctx context.Context, td *testcluster.Tandem, n *testcluster.Node, args ...string) *cliProc {
	t.Helper()
	argv := append([]string{"netns", "exec", n.NS, filepath.Join(td.Bin, "tandem"), "--data-dir", td.DataDir(n)}, args...)
	cmd := exec.CommandContext(ctx, "ip", argv...)
	cmd.Env = append(os.Environ(), "TANDEM_TOKEN=", "TANDEM_CREDENTIALS=", "TANDEM_DATA_DIR=")
	p := &cliProc{cmd: cmd, out: newSyncBuf(), errb: newSyncBuf(), done: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = p.out, p.errb
	var err error
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

func (p *cliProc) stderr() string { return p.errb.String() }

// waitFor waits until b matches, the process exits or 2 minutes pass.
func (p *cliProc) waitFor(t *testing.T, b *syncBuf, what string, match func(string) bool) {
	t.Helper()
	deadline := time.After(2 * time.Minute)
	for !match(b.String()) {
		select {
		case <-b.ch:
		case err := <-p.done:
			p.done <- err
			if match(b.String()) {
				return
			}
			t.Fatalf("tandem %v exited (%v) before printing %s:\nstdout: %s\nstderr: %s", p.cmd.Args[4:], err, what, clip(p.out.String(), 3000), p.stderr())
		case <-deadline:
			t.Fatalf("tandem %v did not print %s:\nstdout: %s\nstderr: %s", p.cmd.Args[4:], what, clip(p.out.String(), 3000), p.stderr())
		}
	}
}

func (p *cliProc) waitStdout(t *testing.T, s string) {
	t.Helper()
	p.waitFor(t, p.out, fmt.Sprintf("%q", s), func(o string) bool { return strings.Contains(o, s) })
}

func (p *cliProc) waitStderr(t *testing.T, s string) {
	t.Helper()
	p.waitFor(t, p.errb, fmt.Sprintf("%q", s), func(o string) bool { return strings.Contains(o, s) })
}

func (p *cliProc) waitStdoutMatch(t *testing.T, re *regexp.Regexp) []string {
	t.Helper()
	p.waitFor(t, p.out, re.String(), re.MatchString)
	return re.FindStringSubmatch(p.out.String())
}

// wait waits for the process to exit on its own (2 minutes at most).
func (p *cliProc) wait() error {
	select {
	case err := <-p.done:
		p.done <- err
		return err
	case <-time.After(2 * time.Minute):
		return fmt.Errorf("still running after 2 minutes")
	}
}

// stop interrupts the process (Ctrl-C) and waits for it.
func (p *cliProc) stop(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Signal(os.Interrupt)
	if err := p.wait(); err != nil && !strings.Contains(err.Error(), "signal") && !strings.Contains(err.Error(), "exit status") {
		t.Logf("tandem %v: %v", p.cmd.Args[4:], err)
	}
}

// dialIn connects to addr from network namespace ns.
func dialIn(ctx context.Context, ns, addr string) (net.Conn, error) {
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	defer orig.Close()
	target, err := os.Open(filepath.Join("/run/netns", ns))
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("setns %s: %w", ns, err)
	}
	var d net.Dialer
	conn, derr := d.DialContext(ctx, "tcp", addr)
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		if conn != nil {
			conn.Close()
		}
		return nil, fmt.Errorf("setns back from %s: %w", ns, err) // the thread stays locked
	}
	runtime.UnlockOSThread()
	return conn, derr
}

// rfbResult is what rfbFrame saw.
type rfbResult struct {
	w, h, bpp int
	distinct  int
}

// rfbFrame is a minimal RFB 3.8 client (RFC 6143): version, security
// type None, ClientInit, ServerInit, one full FramebufferUpdateRequest,
// the raw-encoded answer read whole.
func rfbFrame(t *testing.T, ctx context.Context, n *testcluster.Node, addr string) rfbResult {
	t.Helper()
	conn, err := dialIn(ctx, n.NS, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(3 * time.Minute))
	r := bufio.NewReader(conn)
	fail := func(what string, err error) {
		t.Helper()
		t.Fatalf("RFB through %s: %s: %v", addr, what, err)
	}
	ver := make([]byte, 12)
	if _, err := io.ReadFull(r, ver); err != nil {
		fail("protocol version", err)
	}
	if !strings.HasPrefix(string(ver), "RFB 003.") {
		fail("protocol version", fmt.Errorf("%q", ver))
	}
	if _, err := conn.Write([]byte("RFB 003.008\n")); err != nil {
		fail("version", err)
	}
	nTypes, err := r.ReadByte()
	if err != nil || nTypes == 0 {
		fail("security types", err)
	}
	types := make([]byte, nTypes)
	if _, err := io.ReadFull(r, types); err != nil {
		fail("security types", err)
	}
	if !bytes.Contains(types, []byte{1}) {
		fail("security types", fmt.Errorf("no None among %v", types))
	}
	if _, err := conn.Write([]byte{1}); err != nil {
		fail("security type", err)
	}
	var result uint32
	if err := binary.Read(r, binary.BigEndian, &result); err != nil || result != 0 {
		fail("security result", fmt.Errorf("%d %v", result, err))
	}
	if _, err := conn.Write([]byte{1}); err != nil { // ClientInit, shared
		fail("ClientInit", err)
	}
	var init struct {
		W, H       uint16
		BPP, Depth uint8
		BigEndian  uint8
		TrueColour uint8
		Max        [3]uint16
		Shift      [3]uint8
		Pad        [3]uint8
		NameLen    uint32
	}
	if err := binary.Read(r, binary.BigEndian, &init); err != nil {
		fail("ServerInit", err)
	}
	if _, err := io.CopyN(io.Discard, r, int64(init.NameLen)); err != nil {
		fail("ServerInit name", err)
	}
	req := []byte{3, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint16(req[6:], init.W)
	binary.BigEndian.PutUint16(req[8:], init.H)
	if _, err := conn.Write(req); err != nil {
		fail("FramebufferUpdateRequest", err)
	}
	pixel := int(init.BPP) / 8
	seen := map[string]bool{}
	covered := 0
	for covered < int(init.W)*int(init.H) {
		typ, err := r.ReadByte()
		if err != nil {
			fail("server message", err)
		}
		if typ != 0 {
			fail("server message", fmt.Errorf("type %d before the framebuffer update", typ))
		}
		var hdr struct {
			Pad   uint8
			Rects uint16
		}
		if err := binary.Read(r, binary.BigEndian, &hdr); err != nil {
			fail("FramebufferUpdate", err)
		}
		for range hdr.Rects {
			var rect struct {
				X, Y, W, H uint16
				Encoding   int32
			}
			if err := binary.Read(r, binary.BigEndian, &rect); err != nil {
				fail("rectangle", err)
			}
			if rect.Encoding != 0 {
				fail("rectangle", fmt.Errorf("encoding %d, asked for raw only", rect.Encoding))
			}
			data := make([]byte, int(rect.W)*int(rect.H)*pixel)
			if _, err := io.ReadFull(r, data); err != nil {
				fail("rectangle pixels", err)
			}
			for i := 0; i+pixel <= len(data) && len(seen) < 64; i += pixel {
				seen[string(data[i:i+pixel])] = true
			}
			covered += int(rect.W) * int(rect.H)
		}
	}
	return rfbResult{w: int(init.W), h: int(init.H), bpp: int(init.BPP), distinct: len(seen)}
}

// screenshotSize is the size of `virsh screenshot` of name on n (a PPM).
func screenshotSize(t *testing.T, vc *vmCluster, n *testcluster.Node, name string) (int, int) {
	t.Helper()
	vc.mu.Lock()
	lv := vc.lv[n.Name]
	vc.mu.Unlock()
	file := filepath.Join(t.TempDir(), "screen.ppm")
	out, err := exec.CommandContext(vc.ctx, "virsh", "-c", "qemu+unix:///system?socket="+lv.Socket, "screenshot", name, file).CombinedOutput()
	if err != nil {
		t.Fatalf("virsh screenshot %s on %s: %v\n%s", name, n.Name, err, out)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	// QEMU writes PNG where it can (7.2 and later), PPM before.
	var w, h int
	if len(b) >= 24 && bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")) {
		w, h = int(binary.BigEndian.Uint32(b[16:])), int(binary.BigEndian.Uint32(b[20:]))
	} else if _, err := fmt.Sscanf(string(b), "P6 %d %d", &w, &h); err != nil {
		t.Fatalf("virsh screenshot is neither PNG nor PPM (%v): %q", err, clip(string(b), 40))
	}
	return w, h
}

// clipTail is the last n bytes of s.
func clipTail(s string, n int) string {
	if len(s) > n {
		return "...\n" + s[len(s)-n:]
	}
	return s
}
