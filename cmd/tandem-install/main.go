package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/tandemhci/tandem/internal/adminclient"
	"github.com/tandemhci/tandem/internal/version"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

const usage = `tandem-install installs the Tandem appliance from its ISO, and creates or
joins the cluster on the installed system's first boot.

Usage:
  tandem-install install [--answers FILE] [--interactive]
      Run by tandem-install.service on the installer ISO. Unattended
      (tandem.install=auto on the kernel command line), the answers come from
      the file answer.yaml (or tandem.answer=NAME) on a drive labelled TANDEM,
      overridden by tandem.KEY=VALUE keys on the kernel command line; see
      'tandem-install answers'. Interactive, it asks.
  tandem-install check FILE
      Check an answer file without installing: prints every problem.
  tandem-install answers
      Print an example answer file with every key.
  tandem-install firstboot
      Run by tandem-firstboot.service on the installed system: create or
      join the cluster named in /etc/tandem/firstboot.yaml, retrying with
      backoff, then remove the file.
  tandem-install version

Exit codes of install: 0 installed, 1 a step failed, 2 invalid answers,
3 no such disk, 4 the disk holds data and wipe is not set, 5 the disk cannot
be used (mounted, too small, the installer's own, not a block device),
6 cancelled at the interactive summary.
Only 0 and 1 may have written to the disk.
`

const exampleAnswers = `# Tandem installer answer file: answer.yaml on a drive (or partition)
# labelled TANDEM, e.g. mkfs.vfat -n TANDEM /dev/sdX1, or a FAT image made
# with mkfs.vfat -C answers.img 1440 -n TANDEM; mcopy -i answers.img answer.yaml ::
# Kernel command line keys tandem.KEY=VALUE override it (tandem.disk=/dev/sda,
# tandem.nic=, tandem.address=, tandem.join=, tandem.token=, tandem.ssh_key=...).

# The target disk. A disk holding a partition table or a file system is
# refused unless wipe is true, which destroys everything on it.
disk: /dev/sda
wipe: false
# The host name, also the node's name in the cluster.
hostname: node1
# The root partition; the rest of the disk holds tandemd's data (volumes).
root_size_gib: 16
network:
  # The backend NIC (node-to-node traffic), by name or MAC address.
  nic: eno1
  address: 10.0.0.11/24     # or address: 10.0.0.11 with netmask: 255.255.255.0
  gateway: 10.0.0.1
  dns: [10.0.0.1]
  # The VM bridge's uplink (name or MAC); may be the backend NIC. Empty: no uplink.
  vm_nic: eno2
  vm_bridge: vmbr0
cluster:
  # Either create a new cluster ...
  create: prod
  # ... or join one through a member's backend address, with a token made
  # there by 'tandem cluster token':
  # join: 10.0.0.10:7400
  # token: ...
# At least one way to log in as root:
root_password_hash: "$6$examplesalt$..."   # openssl passwd -6, or mkpasswd -m sha-512
ssh_authorized_keys:
  - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleExampleExampleExampleExampleExample admin@laptop
# Reboot into the installed system when done.
reboot: true
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	cmd := "install"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(stderr, nil))
	switch cmd {
	case "install":
		return runInstall(ctx, args, stdin, stdout, log)
	case "firstboot":
		return runFirstboot(ctx, args, stdout, log)
	case "check":
		if len(args) != 1 {
			fmt.Fprint(stderr, usage)
			return exitBadAnswers
		}
		return runCheck(args[0], stdout, stderr)
	case "answers":
		fmt.Fprint(stdout, exampleAnswers)
		return 0
	case "version":
		fmt.Fprintln(stdout, "tandem-install", version.Version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "tandem-install: unknown command %q\n\n%s", cmd, usage)
		return exitBadAnswers
	}
}

func runCheck(path string, stdout, stderr io.Writer) int {
	b, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintln(stderr, "tandem-install:", err)
		return exitBadAnswers
	}
	a, err := parseAnswerFile(b)
	if err == nil {
		_, err = a.plan()
	}
	if err != nil {
		fmt.Fprintf(stderr, "tandem-install: %s:\n%s\n", path, indent(err.Error()))
		return exitBadAnswers
	}
	fmt.Fprintf(stdout, "%s: the answers are valid\n", path)
	return 0
}

// Paths on the live system.
const (
	liveMedium   = "/run/live/medium"
	liveSquashfs = liveMedium + "/live/filesystem.squashfs"
	workDir      = "/run/tandem-install"
	installLog   = "/run/tandem-install.log"
)

func runInstall(ctx context.Context, args []string, stdin io.Reader, stdout io.Writer, log *slog.Logger) int {
	fs := flag.NewFlagSet("install", flag.ContinueOnError)
	answers := fs.String("answers", "", "answer file (default: from a drive labelled TANDEM, or the prompts)")
	interactive := fs.Bool("interactive", false, "ask (default: tandem.install=interactive on the kernel command line)")
	cmdlinePath := fs.String("cmdline", "/proc/cmdline", "kernel command line")
	squashfs := fs.String("image", liveSquashfs, "the system image to install")
	logPath := fs.String("log", installLog, "the installer's log")
	consoles := fs.String("consoles", "/sys/class/tty/console/active", "the list of the kernel's consoles, which every message also goes to")
	if err := fs.Parse(args); err != nil {
		return exitBadAnswers
	}
	cl, _ := os.ReadFile(*cmdlinePath)
	kargs := cmdlineArgs(string(cl))
	mode := "auto"
	if v := kargs["install"]; len(v) > 0 && v[len(v)-1] == "interactive" || *interactive {
		mode = "interactive"
	}

	// The terminal: tty1 from the unit, or the serial console named by
	// tandem.tty for an interactive install over IPMI SOL.
	in, out := stdin, stdout
	if t := kargs["tty"]; mode == "interactive" && len(t) > 0 {
		f, err := os.OpenFile(filepath.Join("/dev", filepath.Base(t[len(t)-1])), os.O_RDWR|syscall.O_NOCTTY, 0)
		if err == nil {
			defer f.Close()
			in, out = f, f
		}
	}
	con := &console{w: out, extra: openConsoles(*consoles, true), log: log}
	if f, err := os.OpenFile(*logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600); err == nil {
		defer f.Close()
		con.file = f
	}
	mounts, _ := os.ReadFile("/proc/self/mounts")
	_, kvmErr := os.Stat("/dev/kvm")
	inst := &installer{con: con, squashfs: *squashfs, work: workDir, mounts: string(mounts), kvm: kvmErr == nil, logPath: *logPath}
	if dev := mountSource(string(mounts), liveMedium); dev != "" {
		inst.busy = append(inst.busy, dev, parentDisk(dev))
	}
	con.Infof("Tandem %s installer (%s)", version.Version, mode)

	fail := func(err error) int {
		code := exitCode(err)
		con.Errorf("%v", err)
		con.Errorf("installation failed (exit code %d); the log is %s", code, *logPath)
		if code != exitFailed {
			con.Errorf("no disk was written to")
		}
		return code
	}

	var a Answers
	switch {
	case *answers != "":
		b, err := os.ReadFile(*answers)
		if err != nil {
			return fail(&badAnswersError{err})
		}
		if a, err = parseAnswerFile(b); err != nil {
			return fail(&badAnswersError{err})
		}
	case mode == "auto":
		name := defaultAnswer
		if v := kargs["answer"]; len(v) > 0 {
			name = v[len(v)-1]
		}
		b, dev, err := inst.readAnswerDrive(ctx, name)
		switch {
		case err != nil:
			return fail(&badAnswersError{err})
		case b == nil:
			con.Infof("no drive labelled %s: the answers come from the kernel command line only", answerLabel)
		default:
			con.Infof("answers: %s on %s", name, dev)
			inst.busy = append(inst.busy, dev, parentDisk(dev))
			if a, err = parseAnswerFile(b); err != nil {
				return fail(&badAnswersError{err})
			}
		}
	}
	if mode == "interactive" {
		disks, _ := listDisks("/sys/block")
		pr := &prompter{in: bufio.NewReader(in), out: out, ctx: ctx, secret: readSecret(in)}
		var err error
		if a, err = pr.interactive(disks, listNICs("/sys/class/net"), inst); err != nil {
			return fail(err)
		}
	} else if err := applyCmdline(&a, kargs); err != nil {
		return fail(&badAnswersError{err})
	}

	start := time.Now()
	if err := inst.Install(ctx, a); err != nil {
		return fail(err)
	}
	con.Infof("installed in %s (exit code 0)", time.Since(start).Round(time.Second))
	if a.Reboot != nil && !*a.Reboot {
		con.Infof("reboot: false in the answers: not rebooting")
		return exitOK
	}
	con.Infof("rebooting into the installed system")
	for _, d := range inst.busy {
		if strings.HasPrefix(d, "/dev/sr") {
			_ = exec.CommandContext(ctx, "eject", d).Run() // best effort: a tray that stays shut is fine
		}
	}
	if err := exec.CommandContext(ctx, "systemctl", "reboot").Run(); err != nil {
		con.Errorf("could not reboot (%v): reboot by hand", err)
	}
	return exitOK
}

// readAnswerDrive looks for a file system labelled TANDEM (waiting a little
// for USB drives to show up), mounts it read-only and reads name from it.
// No such drive is not an error (nil, "", nil).
func (in *installer) readAnswerDrive(ctx context.Context, name string) ([]byte, string, error) {
	var dev string
	for i := 0; i < 20 && dev == ""; i++ {
		if p, err := filepath.EvalSymlinks("/dev/disk/by-label/" + answerLabel); err == nil {
			dev = p
			break
		}
		if out, err := exec.CommandContext(ctx, "blkid", "-L", answerLabel).Output(); err == nil {
			dev = strings.TrimSpace(string(out))
			break
		}
		if err := sleepCtx(ctx, 500*time.Millisecond); err != nil {
			return nil, "", err
		}
	}
	if dev == "" {
		return nil, "", nil
	}
	dir := filepath.Join(in.work, "answers")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, "", err
	}
	if _, err := in.run(ctx, "", "mount", "-o", "ro", dev, dir); err != nil {
		return nil, dev, fmt.Errorf("mount the answer drive %s: %w", dev, err)
	}
	defer func() { _, _ = in.run(context.WithoutCancel(ctx), "", "umount", dir) }()
	p := filepath.Join(dir, filepath.Clean("/"+name))
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, dev, fmt.Errorf("the drive labelled %s (%s) has no %s", answerLabel, dev, name)
	}
	if err != nil {
		return nil, dev, err
	}
	return b, dev, nil
}

// mountSource is the device mounted on dir in a /proc/mounts table.
func mountSource(mounts, dir string) string {
	for _, l := range strings.Split(mounts, "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[1] == dir {
			return f[0]
		}
	}
	return ""
}

// parentDisk is the whole disk a partition belongs to (itself for a disk).
func parentDisk(dev string) string {
	name := filepath.Base(resolve(dev))
	sys, err := filepath.EvalSymlinks("/sys/class/block/" + name)
	if err != nil {
		return dev
	}
	if _, err := os.Stat(filepath.Join(sys, "partition")); err == nil {
		return "/dev/" + filepath.Base(filepath.Dir(sys))
	}
	return "/dev/" + name
}

func runFirstboot(ctx context.Context, args []string, stdout io.Writer, log *slog.Logger) int {
	fs := flag.NewFlagSet("firstboot", flag.ContinueOnError)
	path := fs.String("file", firstbootPath, "what to do: create: NAME, or join: ADDR with token: TOKEN")
	dataDir := fs.String("data-dir", adminclient.DefaultDataDir, "tandemd's data directory (its admin socket)")
	if err := fs.Parse(args); err != nil {
		return exitBadAnswers
	}
	con := &console{w: stdout, extra: openConsoles("/sys/class/tty/console/active", false), log: log}
	c, err := adminclient.Dial(ctx, adminclient.Options{DataDir: *dataDir, Timeout: 2 * time.Minute})
	if err != nil {
		con.Errorf("%v", err)
		return exitFailed
	}
	defer c.Close()
	if err := firstboot(ctx, con, *path, localAPI{c}, sleepCtx, enableLibvirtTLS(con)); err != nil {
		con.Errorf("%v", err)
		return exitFailed
	}
	return exitOK
}

// enableLibvirtTLS turns on libvirtd's TLS listener once tandemd has written
// the node certificate (at create or join), so other nodes can live-migrate
// to this one (see /usr/share/doc/tandem/examples/libvirtd-tls.conf).
func enableLibvirtTLS(con *console) func(context.Context, *tandemv1.ClusterStatus) {
	return func(ctx context.Context, _ *tandemv1.ClusterStatus) {
		// systemd refuses to start a socket whose service runs: stop
		// libvirtd and its sockets (running VMs are not affected), then
		// start them with the TLS socket.
		socks := []string{"libvirtd.socket", "libvirtd-ro.socket", "libvirtd-admin.socket"}
		for _, args := range [][]string{
			append([]string{"stop", "libvirtd.service"}, socks...),
			{"enable", "libvirtd-tls.socket"},
			append(append([]string{"start"}, socks...), "libvirtd-tls.socket", "libvirtd.service"),
		} {
			if out, err := exec.CommandContext(ctx, "systemctl", args...).CombinedOutput(); err != nil {
				con.Errorf("systemctl %s: %v: %s; live migration to this node needs libvirtd on TLS: see /usr/share/doc/tandem/examples/libvirtd-tls.conf",
					strings.Join(args, " "), err, strings.TrimSpace(string(out)))
				return
			}
		}
		con.Infof("libvirtd listens on TLS with the node certificate")
	}
}
