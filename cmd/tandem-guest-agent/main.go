package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/tandemhci/tandem/internal/guest"
	"golang.org/x/sys/unix"
)

type config struct {
	ip, gw, iface string
	udp           string
	rate          int
	disk          string
	// diskOffset is where on disk the counter block is (tandem.disk_offset,
	// a multiple of 4096; default 0), so that a bootable image can hold
	// the disk's start.
	diskOffset int64
	writeEvery time.Duration
	// noQGA (tandem.qga=off) leaves the guest agent port unanswered.
	noQGA bool
	// cidata is the cloud-init seed's device, "auto" to look for it
	// (cidata.go); "" reads none.
	cidata string
	// efivar (tandem.efivar=on) keeps a UEFI variable (efivar.go).
	efivar bool
}

// agent is the state shared by the loops: what the disk loop has made
// durable and what the heartbeat loop reports.
type agent struct {
	cfg   config
	log   *slog.Logger
	boot  atomic.Uint64
	acked atomic.Uint64
	seq   atomic.Uint64
	// diskReady is closed once boot is known, so no datagram carries a boot
	// count the disk loop is about to change.
	diskReady chan struct{}
	sendErrs  atomic.Uint64
	writeErrs atomic.Uint64
	// cloudValue is the seed's tandem_test_value once read (cidata.go).
	cloudValue atomic.Pointer[string]
	// efiValue is the UEFI variable's value once read or made (efivar.go).
	efiValue  atomic.Pointer[string]
	seedTries atomic.Uint64
}

func main() {
	ctx := context.Background()
	pid1 := os.Getpid() == 1
	if pid1 {
		setupPID1()
	}
	log := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{Level: slog.LevelInfo})).With("agent", "tandem-guest")
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		log.Error("reading kernel command line", "err", err)
	}
	cfg := parseCmdline(string(cmdline), log)
	log.Info("starting", "pid1", pid1, "ip", cfg.ip, "udp", cfg.udp, "rate", cfg.rate, "disk", cfg.disk, "write_every", cfg.writeEvery)
	if pid1 {
		loadModules(log)
	}

	a := &agent{cfg: cfg, log: log, diskReady: make(chan struct{})}
	go forever(ctx, log, "network", a.network)
	if cfg.disk != "" {
		go forever(ctx, log, "disk", a.diskLoop)
	} else {
		close(a.diskReady)
	}
	if cfg.cidata != "" {
		go forever(ctx, log, "cloud-init", a.cloudInit)
	}
	if cfg.efivar {
		go forever(ctx, log, "efivar", a.efiVar)
	}
	go forever(ctx, log, "heartbeat", a.heartbeat)
	go forever(ctx, log, "serial-echo", a.serialEcho)
	if !cfg.noQGA {
		go forever(ctx, log, "guest agent", a.qga)
	}
	a.status(ctx)
}

// setupPID1 gives the process the file systems and console a normal init has.
func setupPID1() {
	mounts := []struct{ src, dst, fstype string }{
		{"proc", "/proc", "proc"},
		{"sysfs", "/sys", "sysfs"},
		{"devtmpfs", "/dev", "devtmpfs"},
	}
	for _, m := range mounts {
		_ = os.MkdirAll(m.dst, 0o755)
		if err := unix.Mount(m.src, m.dst, m.fstype, 0, ""); err != nil && err != unix.EBUSY {
			fmt.Fprintf(os.Stderr, "mount %s: %v\n", m.dst, err)
		}
	}
	// Without a /dev/console in the initramfs the kernel starts init with no
	// stdio; take the console from devtmpfs.
	if f, err := os.OpenFile("/dev/console", os.O_RDWR, 0); err == nil {
		for _, fd := range []int{0, 1, 2} {
			_ = unix.Dup2(int(f.Fd()), fd)
		}
		_ = f.Close()
	}
}

func parseCmdline(s string, log *slog.Logger) config {
	cfg := config{iface: "eth0", rate: 100, writeEvery: 10 * time.Millisecond}
	for _, f := range strings.Fields(s) {
		k, v, ok := strings.Cut(f, "=")
		if !ok || !strings.HasPrefix(k, "tandem.") {
			continue
		}
		switch strings.TrimPrefix(k, "tandem.") {
		case "ip":
			cfg.ip = v
		case "gw":
			cfg.gw = v
		case "iface":
			cfg.iface = v
		case "udp":
			cfg.udp = v
		case "disk":
			cfg.disk = v
		case "disk_offset":
			if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 && n%4096 == 0 {
				cfg.diskOffset = n
			} else {
				log.Error("bad tandem.disk_offset (bytes, a multiple of 4096); keeping 0", "value", v)
			}
		case "qga":
			cfg.noQGA = v == "off"
		case "cidata":
			cfg.cidata = v
		case "efivar":
			cfg.efivar = v == "on"
		case "rate":
			if n, err := strconv.Atoi(v); err == nil && n > 0 {
				cfg.rate = n
			} else {
				log.Error("bad tandem.rate; keeping default", "value", v, "default", cfg.rate)
			}
		case "write_ms":
			if n, err := strconv.Atoi(v); err == nil && n >= 0 {
				cfg.writeEvery = time.Duration(n) * time.Millisecond
			} else {
				log.Error("bad tandem.write_ms; keeping default", "value", v, "default", cfg.writeEvery)
			}
		default:
			log.Warn("unknown parameter", "param", k)
		}
	}
	return cfg
}

// loadModules loads, in order, the modules the image builder listed.
func loadModules(log *slog.Logger) {
	list, err := os.ReadFile("/etc/tandem-modules")
	if err != nil {
		log.Error("no module list", "err", err)
		return
	}
	for _, path := range strings.Fields(string(list)) {
		if err := loadModule(path); err != nil {
			log.Error("loading module", "module", filepath.Base(path), "err", err)
		}
	}
}

func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil && err != unix.EEXIST {
		return fmt.Errorf("finit_module: %w", err)
	}
	return nil
}

// forever runs fn until it returns nil, restarting it after errors and
// panics: the agent must never die.
func forever(ctx context.Context, log *slog.Logger, name string, fn func(context.Context) error) {
	for {
		err := func() (err error) {
			defer func() {
				if r := recover(); r != nil {
					err = fmt.Errorf("panic: %v", r)
				}
			}()
			return fn(ctx)
		}()
		if err == nil {
			return
		}
		log.Error("loop failed; retrying", "loop", name, "err", err)
		time.Sleep(time.Second)
	}
}

// network brings up lo and the interface with busybox ip, once.
func (a *agent) network(ctx context.Context) error {
	if a.cfg.ip == "" {
		a.log.Warn("no tandem.ip; leaving the network unconfigured")
		return nil
	}
	// virtio_net probes asynchronously after its module loads.
	for {
		if _, err := os.Stat("/sys/class/net/" + a.cfg.iface); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	steps := [][]string{
		{"link", "set", "lo", "up"},
		// flush+add rather than replace, which busybox ip lacks; a retry
		// after a later step failed must not trip over the address.
		{"addr", "flush", "dev", a.cfg.iface},
		{"addr", "add", a.cfg.ip, "dev", a.cfg.iface},
		{"link", "set", a.cfg.iface, "up"},
	}
	if a.cfg.gw != "" {
		steps = append(steps, []string{"route", "replace", "default", "via", a.cfg.gw})
	}
	for _, s := range steps {
		out, err := exec.CommandContext(ctx, "/bin/busybox", append([]string{"ip"}, s...)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ip %s: %w: %s", strings.Join(s, " "), err, strings.TrimSpace(string(out)))
		}
	}
	a.log.Info("network up", "iface", a.cfg.iface, "ip", a.cfg.ip, "gw", a.cfg.gw)
	return nil
}

// diskLoop owns the counter block: it reads it once, then rewrites it with
// counter+1 forever, publishing a counter only after its write returned.
func (a *agent) diskLoop(ctx context.Context) error {
	for {
		if _, err := os.Stat(a.cfg.disk); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	fd, err := unix.Open(a.cfg.disk, unix.O_RDWR|unix.O_DIRECT|unix.O_SYNC|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", a.cfg.disk, err)
	}
	defer unix.Close(fd)
	buf := alignedBlock()

	select {
	case <-a.diskReady:
		// Restarted after an error: boot and acked are already known.
	default:
		if _, err := unix.Pread(fd, buf, a.cfg.diskOffset); err != nil {
			return fmt.Errorf("read the counter block at %d: %w", a.cfg.diskOffset, err)
		}
		st, err := guest.DecodeDiskState(buf)
		if err != nil {
			a.log.Info("no counter on disk; starting at 0", "reason", err)
			st = guest.DiskState{}
		} else {
			st.Boot++
		}
		a.boot.Store(st.Boot)
		a.acked.Store(st.Counter)
		a.log.Info("disk counter", "disk", a.cfg.disk, "offset", a.cfg.diskOffset, "counter", st.Counter, "boot", st.Boot)
		close(a.diskReady)
	}

	clear(buf)
	for {
		next := guest.DiskState{Counter: a.acked.Load() + 1, Boot: a.boot.Load()}
		next.EncodeTo(buf)
		if _, err := unix.Pwrite(fd, buf, a.cfg.diskOffset); err != nil {
			a.writeErrs.Add(1)
			return fmt.Errorf("write counter %d: %w", next.Counter, err)
		}
		a.acked.Store(next.Counter)
		if a.cfg.writeEvery > 0 {
			time.Sleep(a.cfg.writeEvery)
		}
	}
}

// alignedBlock returns a DiskBlockSize buffer aligned for O_DIRECT.
func alignedBlock() []byte {
	const align = 4096
	raw := make([]byte, guest.DiskBlockSize+align)
	off := int(align - uintptr(unsafe.Pointer(&raw[0]))%align)
	if off == align {
		off = 0
	}
	return raw[off : off+guest.DiskBlockSize : off+guest.DiskBlockSize]
}

// heartbeat sends a datagram every 1/rate seconds.
func (a *agent) heartbeat(ctx context.Context) error {
	if a.cfg.udp == "" {
		a.log.Warn("no tandem.udp; sending no heartbeats")
		return nil
	}
	<-a.diskReady
	raddr, err := net.ResolveUDPAddr("udp4", a.cfg.udp)
	if err != nil {
		return fmt.Errorf("receiver %q: %w", a.cfg.udp, err)
	}
	// An unconnected socket: sends before the network is up fail and are
	// retried on the next tick instead of killing the loop.
	conn, err := net.ListenUDP("udp4", nil)
	if err != nil {
		return fmt.Errorf("udp socket: %w", err)
	}
	defer conn.Close()
	tick := time.NewTicker(time.Second / time.Duration(a.cfg.rate))
	defer tick.Stop()
	for range tick.C {
		d := guest.Datagram{Boot: a.boot.Load(), Seq: a.seq.Add(1), Acked: a.acked.Load(), Mono: monotonic(), DiskBytes: diskBytes(a.cfg.disk)}
		if v := a.cloudValue.Load(); v != nil {
			d.CloudInit = *v
		}
		if v := a.efiValue.Load(); v != nil {
			d.EFIVar = *v
		}
		if _, err := conn.WriteToUDP(d.Encode(), raddr); err != nil {
			if a.sendErrs.Add(1)%uint64(10*a.cfg.rate) == 1 {
				a.log.Warn("send failed", "err", err, "failures", a.sendErrs.Load())
			}
		}
	}
	return nil
}

func monotonic() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// status logs progress every 5 s so the serial log shows the agent alive;
// it is the main goroutine and never returns.
func (a *agent) status(ctx context.Context) {
	for {
		time.Sleep(5 * time.Second)
		select {
		case <-a.diskReady:
			a.log.InfoContext(ctx, "status", "boot", a.boot.Load(), "acked", a.acked.Load(), "seq", a.seq.Load(),
				"send_errors", a.sendErrs.Load(), "write_errors", a.writeErrs.Load())
		default:
			a.log.InfoContext(ctx, "waiting for disk", "disk", a.cfg.disk)
		}
	}
}

// diskBytes is the size of the counter disk as the kernel sees it now
// (/sys/block/DEV/size counts 512-byte sectors and follows an online
// resize), 0 when unknown.
func diskBytes(dev string) uint64 {
	if dev == "" {
		return 0
	}
	b, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "size"))
	if err != nil {
		return 0
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0
	}
	return n * 512
}
