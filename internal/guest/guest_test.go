package guest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// repoRoot walks up from the package directory to go.mod.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test directory")
		}
		dir = parent
	}
}

// qemu is one running guest.
type qemu struct {
	cmd     *exec.Cmd
	serial  string
	start   time.Time
	exited  chan struct{} // closed once cmd.Wait returned, into waitErr
	waitErr error
}

// bootGuest starts QEMU (TCG) on img with disk as virtio-blk and user-mode
// networking, in which the guest's 10.0.2.2 is the host's loopback. The
// process is killed by PID at cleanup, and its serial log is printed if the
// test failed.
func bootGuest(t *testing.T, img Image, disk string, cfg Config, name string) *qemu {
	t.Helper()
	bin, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Fatalf("qemu-system-x86_64 not installed (make deps installs qemu-system-x86): %v", err)
	}
	serial := filepath.Join(t.TempDir(), name+".serial.log")
	out, err := os.Create(serial)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	args := []string{
		"-machine", "q35", "-accel", "tcg", "-cpu", "qemu64", "-m", "192", "-smp", "1",
		"-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio", "-monitor", "none",
		"-kernel", img.Kernel, "-initrd", img.Initrd, "-append", img.Cmdline(cfg),
		"-drive", "file=" + disk + ",format=raw,if=virtio,cache=none",
		// romfile= skips iPXE's option ROM: nothing boots from the network.
		"-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0,romfile=",
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting qemu: %v", err)
	}
	q := &qemu{cmd: cmd, serial: serial, start: time.Now(), exited: make(chan struct{})}
	go func() {
		q.waitErr = cmd.Wait()
		close(q.exited)
	}()
	t.Logf("%s: qemu pid %d, serial log %s", name, cmd.Process.Pid, serial)
	t.Cleanup(func() {
		q.kill(t)
		if t.Failed() {
			if b, err := os.ReadFile(serial); err == nil {
				t.Logf("%s serial log:\n%s", name, tail(string(b), 60))
			}
		}
	})
	return q
}

// kill ends QEMU with SIGKILL (a power cut for the guest) and reaps it.
func (q *qemu) kill(t *testing.T) {
	t.Helper()
	select {
	case <-q.exited:
		return
	default:
	}
	if err := q.cmd.Process.Kill(); err != nil {
		t.Logf("killing qemu %d: %v", q.cmd.Process.Pid, err)
	}
	<-q.exited
}

func tail(s string, lines int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

// waitFor wraps Receiver.WaitFor with a description and QEMU's early exit.
func waitFor(ctx context.Context, t *testing.T, r *Receiver, q *qemu, what string, match func(Datagram) bool) Datagram {
	t.Helper()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		select {
		case <-q.exited:
			cancel(fmt.Errorf("qemu exited: %v", q.waitErr))
		case <-ctx.Done():
		}
	}()
	d, err := r.WaitFor(ctx, match)
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
	return d
}

// TestGuestCounterSurvivesPowerCut boots the real guest twice on one disk:
// the first boot's datagrams must show progress, the disk must hold at
// least every counter a datagram acknowledged when QEMU is killed, and the
// second boot must continue from there.
func TestGuestCounterSurvivesPowerCut(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMU guests")
	}
	// Generous: the first run builds the image (downloads a kernel package),
	// and TCG on a busy two-core machine is slow.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	img, err := EnsureImage(ctx, repoRoot(t))
	if err != nil {
		t.Fatal(err)
	}

	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	r := NewReceiver(conn, nil)
	stop := r.Start(ctx)
	t.Cleanup(func() { _ = stop() })
	port := conn.LocalAddr().(*net.UDPAddr).Port

	disk := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.WriteFile(disk, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(disk, 16<<20); err != nil {
		t.Fatal(err)
	}
	cfg := Config{IP: "10.0.2.15/24", UDP: fmt.Sprintf("10.0.2.2:%d", port), Disk: "/dev/vda"}

	// Boot 0: a fresh disk starts at counter 0.
	q := bootGuest(t, img, disk, cfg, "boot0")
	first := waitFor(ctx, t, r, q, "the first datagram", func(Datagram) bool { return true })
	if first.Boot != 0 {
		t.Fatalf("fresh disk: first datagram %+v, want boot 0", first)
	}
	t.Logf("boot 0: first datagram %v after QEMU started", r.Arrivals()[0].At.Sub(q.start).Round(100*time.Millisecond))
	waitFor(ctx, t, r, q, "100 datagrams with 50 acknowledged writes", func(d Datagram) bool {
		return d.Seq >= first.Seq+100 && d.Acked >= first.Acked+50
	})
	q.kill(t)
	boot0 := r.Arrivals()
	var lastAcked uint64
	for i, a := range boot0 {
		if a.Boot != 0 {
			t.Fatalf("datagram %d of boot 0: %+v", i, a.Datagram)
		}
		if i > 0 {
			prev := boot0[i-1]
			if a.Seq <= prev.Seq || a.Acked < prev.Acked || a.Mono < prev.Mono {
				t.Fatalf("datagram %d went backwards: %+v after %+v", i, a.Datagram, prev.Datagram)
			}
		}
		lastAcked = max(lastAcked, a.Acked)
	}
	st, err := ReadDiskState(disk)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("boot 0: %d datagrams, last acknowledged counter %d; disk after the power cut: %+v", len(boot0), lastAcked, st)
	if st.Boot != 0 || st.Counter < lastAcked {
		t.Fatalf("disk holds %+v after the power cut, but counter %d was acknowledged", st, lastAcked)
	}

	// Boot 1: the agent continues from the disk.
	q = bootGuest(t, img, disk, cfg, "boot1")
	resumed := waitFor(ctx, t, r, q, "a datagram of boot 1", func(d Datagram) bool { return d.Boot == 1 })
	if resumed.Acked < st.Counter {
		t.Fatalf("boot 1 starts at counter %d, below the %d on disk", resumed.Acked, st.Counter)
	}
	waitFor(ctx, t, r, q, "boot 1 writing past the stored counter", func(d Datagram) bool {
		return d.Boot == 1 && d.Acked > st.Counter+10
	})
	q.kill(t)
	st1, err := ReadDiskState(disk)
	if err != nil {
		t.Fatal(err)
	}
	if st1.Boot != 1 || st1.Counter <= st.Counter {
		t.Fatalf("disk after boot 1: %+v, want boot 1 and counter > %d", st1, st.Counter)
	}

	// The power cut and reboot is one interruption of the stream, and the
	// Receiver sees it as a reboot.
	var reboots []Outage
	for _, o := range r.Outages(0) {
		if o.Rebooted {
			reboots = append(reboots, o)
		}
	}
	if len(reboots) != 1 {
		t.Fatalf("%d reboots in the stream, want 1: %+v", len(reboots), reboots)
	}
	t.Logf("outage across the power cut and reboot: %v (%d sequence numbers lost at the start of boot 1)",
		reboots[0].Gap, reboots[0].LostSeqs)
}
