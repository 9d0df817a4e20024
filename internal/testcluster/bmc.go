package testcluster

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tandemhci/tandem/fencing"
)

const (
	// BMCPort is the IPMI-over-LAN port every simulated BMC listens on;
	// each BMC has its own address, so they can all use the standard port.
	BMCPort = 623
	// BMCUser is the administrator account of every simulated BMC.
	BMCUser = "admin"

	bmcOffset = 100 // the BMC of node i is <subnet>.(100+i) on the switch's br0
	// bmcReadyTimeout bounds StartBMC's wait for an authenticated status read.
	bmcReadyTimeout = 15 * time.Second
	// bmcCallTimeout bounds one chassis_control callback: the script waits
	// this long for the harness, the harness this long for the script.
	bmcCallTimeout = 60 * time.Second
	// bmcBootStopTimeout bounds how long a power-off waits for a running
	// On hook to notice its cancelled context.
	bmcBootStopTimeout = 10 * time.Second
)

// PowerHooks tells a BMC how to "boot" its host. Powering off is always
// Cluster.Kill plus both switch ports down; only the harness's caller knows
// which daemons, with which flags, make up a running host.
type PowerHooks struct {
	// On starts the host's software (typically libvirtd, then tandemd). It
	// runs in its own goroutine after the power is already on, as the OS
	// of a real machine boots after the BMC reports power on, and its ctx
	// is cancelled by a power-off or Cluster.Close. A nil On leaves the
	// powered-on host without any process.
	On func(ctx context.Context, n *Node) error
}

// BMC is a simulated baseboard management controller for one host: a real
// ipmi_sim (OpenIPMI) serving IPMI v2.0 lanplus at Addr. It runs in the
// switch namespace with its own address on the backend bridge, so like a
// real out-of-band BMC it stays reachable while its host is isolated or
// powered off, and can be reached from every host's namespace.
type BMC struct {
	Node *Node
	// Addr is "ip:port" of the BMC on the backend network.
	Addr     string
	Host     string
	Port     int
	User     string
	Password string // random per BMC; never logged by the harness
	// PasswordFile holds Password (mode 0600), for
	// `tandem node fence-config --ipmi host:port,user,pass-file`.
	PasswordFile string
	// Proc is the ipmi_sim process (in the switch namespace).
	Proc *Proc

	c     *Cluster
	hooks PowerHooks
	token string // authenticates the chassis_control script to the harness
	ln    net.Listener
	ctx   context.Context // ends when the BMC is closed
	stop  context.CancelFunc
	conns sync.WaitGroup

	// opMu serialises power operations, which ipmi_sim may request while a
	// previous one is still running (client retransmits).
	opMu sync.Mutex

	mu         sync.Mutex // guards the fields below
	on         bool
	bootCancel context.CancelFunc
	bootDone   chan struct{} // closed when the current On hook returned
	bootErr    error
}

// IPMIConfig returns the fencing agent configuration for this BMC.
func (b *BMC) IPMIConfig() fencing.IPMIConfig {
	return fencing.IPMIConfig{Host: b.Host, Port: b.Port, User: b.User, Password: b.Password}
}

// PoweredOn reports the power state the harness believes in: it flips to
// off only after every process of the host has been killed and reaped and
// its ports are down, and that is also what the BMC reports over IPMI.
func (b *BMC) PoweredOn() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.on
}

// WaitBoot waits until the On hook started by the last power-on returned
// and returns its error; it returns nil at once if no boot ran.
func (b *BMC) WaitBoot(ctx context.Context) error {
	b.mu.Lock()
	done := b.bootDone
	b.mu.Unlock()
	if done == nil {
		return nil
	}
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("testcluster: wait for %s to boot: %w", b.Node.Name, ctx.Err())
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.bootErr
}

// Unreachable simulates a BMC that has stopped answering (true) or is back
// (false). It SIGSTOPs ipmi_sim rather than removing its address: a hung
// BMC or a black-holed management network gives clients silence and
// timeouts, never a quick ICMP error, and silence is what a fencing agent
// must not mistake for "off". The host's power is unaffected.
func (b *BMC) Unreachable(down bool) {
	if down {
		b.Proc.signal(unix.SIGSTOP)
	} else {
		b.Proc.signal(unix.SIGCONT)
	}
}

// StartBMC starts a simulated BMC for host n: ipmi_sim in the switch
// namespace at <subnet>.(100+n.Index):623 on br0 (the address is added to
// the switch namespace). Its chassis_control script calls back into this
// process over a loopback TCP socket in the switch namespace:
//
//   - "set power 0": cancels a running On hook, Cluster.PowerCut(n) (kills
//     every process in n's namespace, QEMU included, and drops what its
//     fault disks hold unsynced) and takes n's backend and VM switch ports
//     down, and only then answers, so "off" over IPMI implies the host is
//     dead;
//   - "set power 1": ports up, power on, then power.On in the background;
//   - "set reset 1": off, then on;
//   - "get power": the state above.
//
// The host starts powered on. ipmi_sim is killed by Cluster.Close.
func (c *Cluster) StartBMC(ctx context.Context, n *Node, power PowerHooks) (*BMC, error) {
	if !c.owns(n) || n == c.sw {
		return nil, fmt.Errorf("testcluster: StartBMC: node %v is not a host of this cluster", n)
	}
	bin, err := exec.LookPath("ipmi_sim")
	if err != nil {
		return nil, fmt.Errorf("testcluster: StartBMC: ipmi_sim not found (apt-get install openipmi): %w", err)
	}
	host, err := c.bmcIP(n)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(c.sw.Dir, "bmc-"+n.Name)
	if err := os.MkdirAll(filepath.Join(dir, "state"), 0o700); err != nil {
		return nil, fmt.Errorf("testcluster: StartBMC: %w", err)
	}
	b := &BMC{
		Node:         n,
		Host:         host,
		Port:         BMCPort,
		Addr:         net.JoinHostPort(host, strconv.Itoa(BMCPort)),
		User:         BMCUser,
		Password:     randomHex(8), // 16 characters: the IPMI v1.5 limit
		PasswordFile: filepath.Join(dir, "password"),
		c:            c,
		hooks:        power,
		token:        randomHex(16),
		on:           true,
	}
	b.ctx, b.stop = context.WithCancel(context.Background())
	if err := os.WriteFile(b.PasswordFile, []byte(b.Password+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("testcluster: StartBMC: %w", err)
	}

	// The callback listener must be in the switch namespace, where the
	// script runs; a socket keeps the namespace it was created in.
	err = runInNetns(c.swNS, func() error {
		var lerr error
		b.ln, lerr = net.Listen("tcp", "127.0.0.1:0")
		return lerr
	})
	if err != nil {
		return nil, fmt.Errorf("testcluster: StartBMC %s: callback listener: %w", n.Name, err)
	}
	ok := false
	defer func() {
		if !ok {
			b.close()
		}
	}()
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, fmt.Errorf("testcluster: StartBMC %s: cluster closed", n.Name)
	}
	c.closers = append(c.closers, b.close)
	c.mu.Unlock()
	b.conns.Add(1)
	go b.serve()

	script := filepath.Join(dir, "chassis_control")
	port := b.ln.Addr().(*net.TCPAddr).Port
	if err := os.WriteFile(script, fmt.Appendf(nil, chassisScript, n.Name, port, b.token, int(bmcCallTimeout.Seconds())), 0o700); err != nil {
		return nil, fmt.Errorf("testcluster: StartBMC: %w", err)
	}
	lanConf := fmt.Sprintf(`name "tandem-%s"
set_working_mc 0x20
  startlan 1
    addr %s %d
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid %s
  endlan
  chassis_control "%s 0x20"
  user 2 true "%s" "%s" admin 10 none md2 md5 straight
`, n.Name, host, BMCPort, randomHex(16), script, b.User, b.Password)
	const bmcEmu = "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\nmc_enable 0x20\n"
	lanPath, emuPath := filepath.Join(dir, "lan.conf"), filepath.Join(dir, "bmc.emu")
	if err := os.WriteFile(lanPath, []byte(lanConf), 0o600); err != nil {
		return nil, fmt.Errorf("testcluster: StartBMC: %w", err)
	}
	if err := os.WriteFile(emuPath, []byte(bmcEmu), 0o600); err != nil {
		return nil, fmt.Errorf("testcluster: StartBMC: %w", err)
	}

	if _, err := c.run("-n", c.swNS, "addr", "add", host+"/24", "dev", bridgeName); err != nil {
		return nil, fmt.Errorf("testcluster: StartBMC %s: %w", n.Name, err)
	}
	addrAdded := true
	defer func() {
		if !ok && addrAdded {
			_, _ = c.run("-n", c.swNS, "addr", "del", host+"/24", "dev", bridgeName)
		}
	}()
	b.Proc, err = c.StartOnSwitch("bmc-"+n.Name, []string{bin, "-c", lanPath, "-f", emuPath, "-s", filepath.Join(dir, "state"), "-n"}, nil)
	if err != nil {
		return nil, err
	}
	if err := b.waitReady(ctx); err != nil {
		b.Proc.kill()
		return nil, err
	}
	ok = true
	c.t.Logf("testcluster: BMC of %s at %s (ipmi_sim pid %d)", n.Name, b.Addr, b.Proc.PID())
	return b, nil
}

// chassisScript is ipmi_sim's chassis_control program (bash, which Debian
// always has: /dev/tcp needs no nc or socat). It forwards its arguments to
// the harness over a loopback TCP socket of the switch namespace, prints
// the answer for ipmi_sim and exits with the harness's status. The harness
// answers "<rc>\n" then output lines; the token keeps anything else in the
// switch namespace from powering hosts.
const chassisScript = `#!/bin/bash
# chassis_control of the simulated BMC of %s: "<mc> get power" | "<mc> set power 0|1" | "<mc> set reset 1".
exec 3<>/dev/tcp/127.0.0.1/%d || exit 1
printf '%%s %%s\n' %q "$*" >&3
IFS= read -r -t %[4]d rc <&3 || { echo "chassis_control: no answer from the test harness" >&2; exit 1; }
while IFS= read -r -t %[4]d line <&3; do
	if [ "$rc" = 0 ]; then printf '%%s\n' "$line"; else printf '%%s\n' "$line" >&2; fi
done
exit "$rc"
`

// bmcIP picks the BMC's address on br0, outside the hosts' range.
func (c *Cluster) bmcIP(n *Node) (string, error) {
	i := strings.LastIndexByte(n.IP, '.')
	last := bmcOffset + n.Index
	if i < 0 || last > 254 || last <= hostOffset+len(c.Nodes) {
		return "", fmt.Errorf("testcluster: StartBMC: no BMC address for %s (node %d of %d)", n.Name, n.Index, len(c.Nodes))
	}
	return n.IP[:i+1] + strconv.Itoa(last), nil
}

// waitReady polls an authenticated power status read over IPMI, from the
// switch namespace, which exercises ipmi_sim, the script and the callback.
func (b *BMC) waitReady(ctx context.Context) error {
	cfg := b.IPMIConfig()
	cfg.Timeout = time.Second
	agent := fencing.NewIPMI(cfg)
	deadline := time.Now().Add(bmcReadyTimeout)
	for {
		var err error
		rerr := runInNetns(b.c.swNS, func() error {
			_, err = agent.Status(ctx)
			return nil
		})
		if rerr != nil {
			return fmt.Errorf("testcluster: BMC of %s: %w", b.Node.Name, rerr)
		}
		if err == nil {
			return nil
		}
		if !b.Proc.Alive() {
			return fmt.Errorf("testcluster: ipmi_sim for %s exited during startup:\n%s", b.Node.Name, logTail(b.Proc.Log, 20))
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("testcluster: BMC of %s not ready at %s: %w\n%s", b.Node.Name, b.Addr, err, logTail(b.Proc.Log, 20))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// close stops the callback server and any running boot; Cluster.Close
// kills ipmi_sim itself with the other processes.
func (b *BMC) close() {
	b.stop()
	_ = b.ln.Close()
	b.mu.Lock()
	done := b.bootDone
	b.mu.Unlock()
	if done != nil {
		waitBounded(done, bmcBootStopTimeout)
	}
	// A script blocked in ipmi_sim gets EOF and fails; handlers in the
	// middle of a Kill finish it.
	waited := make(chan struct{})
	go func() { b.conns.Wait(); close(waited) }()
	if !waitBounded(waited, reapTimeout) {
		b.c.t.Errorf("testcluster: BMC of %s: callbacks still running at close", b.Node.Name)
	}
}

func waitBounded(ch <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-t.C:
		return false
	}
}

func (b *BMC) serve() {
	defer b.conns.Done()
	for {
		conn, err := b.ln.Accept()
		if err != nil {
			return // closed
		}
		b.conns.Add(1)
		go func() {
			defer b.conns.Done()
			defer conn.Close()
			b.handle(conn)
		}()
	}
}

// handle runs one chassis_control invocation: "<token> <mc> <op> <args...>".
func (b *BMC) handle(conn net.Conn) {
	_ = conn.SetDeadline(time.Now().Add(bmcCallTimeout))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return
	}
	f := strings.Fields(line)
	if len(f) < 3 || f[0] != b.token {
		fmt.Fprintf(conn, "1\nbad request\n")
		return
	}
	out, err := b.chassis(f[2], f[3:])
	if err != nil {
		b.c.t.Logf("testcluster: BMC of %s: chassis_control %q: %v", b.Node.Name, f[1:], err)
		fmt.Fprintf(conn, "1\n%s\n", strings.ReplaceAll(err.Error(), "\n", " "))
		return
	}
	fmt.Fprintf(conn, "0\n")
	for _, l := range out {
		fmt.Fprintf(conn, "%s\n", l)
	}
}

// chassis executes one ipmi_sim request and returns the lines to print.
func (b *BMC) chassis(op string, args []string) ([]string, error) {
	switch op {
	case "get":
		var out []string
		for _, p := range args {
			if p == "power" {
				out = append(out, "power:"+boolDigit(b.PoweredOn()))
			}
			// Other items (boot, identify) are not simulated; ipmi_sim
			// treats a missing answer as an error for that item only.
		}
		return out, nil
	case "set":
		if len(args)%2 != 0 {
			return nil, fmt.Errorf("odd set arguments %q", args)
		}
		for i := 0; i < len(args); i += 2 {
			item, val := args[i], args[i+1]
			switch {
			case item == "power" && val == "0":
				b.powerOff("IPMI power off")
			case item == "power":
				b.powerOn("IPMI power on")
			case item == "reset" && val != "0":
				b.powerOff("IPMI reset")
				b.powerOn("IPMI reset")
			case item == "reset":
			default:
				return nil, fmt.Errorf("unsupported chassis control %s=%s", item, val)
			}
		}
		return nil, nil
	default:
		return nil, fmt.Errorf("unknown chassis_control operation %q", op)
	}
}

func boolDigit(v bool) string {
	if v {
		return "1"
	}
	return "0"
}

// powerOff kills the host like a pulled plug and returns once it is dead.
// ipmi_sim runs chassis_control synchronously in its event loop, so the
// BMC is mute meanwhile (normally well under a second; a client that
// retransmits gets the same, idempotent power-off).
func (b *BMC) powerOff(why string) {
	b.opMu.Lock()
	defer b.opMu.Unlock()
	b.mu.Lock()
	cancel, done := b.bootCancel, b.bootDone
	b.mu.Unlock()
	if cancel != nil {
		cancel()
		if !waitBounded(done, bmcBootStopTimeout) {
			b.c.t.Logf("testcluster: BMC of %s: On hook ignores its cancelled context; killing anyway", b.Node.Name)
		}
	}
	b.c.PowerCut(b.Node) // Kill, and the fault disks lose what was not synced
	b.c.setPort(b.Node, false, "down")
	b.c.setPort(b.Node, true, "down")
	b.mu.Lock()
	was := b.on
	b.on = false
	b.mu.Unlock()
	if was {
		b.c.t.Logf("testcluster: %s powered off (%s)", b.Node.Name, why)
	}
}

// powerOn reports power on at once and boots the host in the background,
// as a real machine's BMC says "on" long before the OS is up.
func (b *BMC) powerOn(why string) {
	b.opMu.Lock()
	defer b.opMu.Unlock()
	b.mu.Lock()
	if b.on {
		b.mu.Unlock()
		return
	}
	b.mu.Unlock()
	b.c.setPort(b.Node, false, "up")
	b.c.setPort(b.Node, true, "up")
	ctx, cancel := context.WithCancel(b.ctx)
	done := make(chan struct{})
	b.mu.Lock()
	b.on = true
	b.bootCancel, b.bootDone, b.bootErr = cancel, done, nil
	b.mu.Unlock()
	b.c.t.Logf("testcluster: %s powered on (%s)", b.Node.Name, why)
	go func() {
		defer close(done)
		defer cancel()
		var err error
		if b.hooks.On != nil {
			err = b.hooks.On(ctx, b.Node)
		}
		if err != nil && ctx.Err() == nil {
			b.c.t.Logf("testcluster: %s: power-on hook: %v", b.Node.Name, err)
		}
		b.mu.Lock()
		b.bootErr = err
		b.mu.Unlock()
	}()
}

// InNetns runs f on an OS thread switched into n's network namespace (n may
// be a host or the switch pseudo-node), e.g. to run a fencing agent "from"
// a host. Sockets f creates belong to that namespace for their lifetime;
// goroutines f starts do not run in it.
func (c *Cluster) InNetns(n *Node, f func() error) error {
	if !c.owns(n) {
		return fmt.Errorf("testcluster: InNetns: node %v is not part of this cluster", n)
	}
	return runInNetns(n.NS, f)
}

// Switch is the pseudo-node of the switch namespace (br0, br1 and the VM
// network's receiver address), for InNetns and StartOnSwitch users.
func (c *Cluster) Switch() *Node { return c.sw }

// runInNetns runs f on a fresh goroutine locked to a thread in namespace ns.
// If switching back fails the goroutine exits still locked and the runtime
// discards the thread instead of reusing it.
func runInNetns(ns string, f func() error) error {
	ch := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			ch <- err
			return
		}
		defer orig.Close()
		target, err := os.Open(filepath.Join(netnsDir, ns))
		if err != nil {
			runtime.UnlockOSThread()
			ch <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		ferr := f()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- errors.Join(ferr, fmt.Errorf("setns back from %s: %w", ns, err))
			return
		}
		runtime.UnlockOSThread()
		ch <- ferr
	}()
	return <-ch
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails on Linux
	return hex.EncodeToString(b)
}
