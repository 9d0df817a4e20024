package testcluster

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"time"

	"github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/socket/dialers"
	"golang.org/x/sys/unix"

	"github.com/tandemhci/tandem/compute"
	"github.com/tandemhci/tandem/internal/nodedir"
	"github.com/tandemhci/tandem/internal/pki"
)

// LibvirtAllowedDN is the tls_allowed_dn_list pattern of the harness's
// libvirtds, as in deploy/libvirtd-tls.conf: any node certificate (OU
// "node") signed by the trusted CA; admin and export certificates have
// another OU. The DN is as virt-pki-query-dn prints it: in certificate
// order, which for certificates from internal/pki is OU, then CN.
const LibvirtAllowedDN = "OU=" + pki.OUNode + ",CN=*"

// LibvirtdName is the process name StartLibvirtd runs libvirtd under (its
// log is Node.Dir/libvirtd.log).
const LibvirtdName = "libvirtd"

const (
	libvirtQEMUUser = "libvirt-qemu"
	// libvirtdPoll is how often StartLibvirtd retries its readiness probe.
	libvirtdPoll = 20 * time.Millisecond
)

// Libvirtd is a libvirtd running on one simulated host.
type Libvirtd struct {
	Proc *Proc
	Node *Node
	// Socket is the read-write unix socket. It lives under Node.Dir, so
	// processes in the root mount namespace (tests, tandemd) reach it.
	Socket string
	// URI is how other hosts' libvirtds reach this one over the backend
	// network, e.g. the destination of a peer-to-peer migration:
	// qemu+tls://<IP>/system, or qemu+tcp with LibvirtdOptions.InsecureTCP.
	// A source libvirtd needs its client certificate too: see MigrateURI.
	URI string
	// Dir is the host's libvirt state (etc, lib, log, cache, run).
	Dir string
	// PKIDir holds the TLS files libvirtd serves with and, as pkipath,
	// connects to other hosts with: the node's tandemd data dir's
	// libvirt-pki/ (nodedir.Dir.LibvirtPKIDir), which tandemd rewrites
	// from its node certificate when it creates or joins a cluster.
	PKIDir string
	// InsecureTCP is set when libvirtd listens on plain TCP instead of TLS.
	InsecureTCP bool
	// StreamTLS is set when QEMU's migration stream must be TLS.
	StreamTLS bool
}

// LibvirtdOptions tune StartLibvirtdWith. The zero value is the default:
// TLS only.
type LibvirtdOptions struct {
	// InsecureTCP makes libvirtd listen on TCP without authentication
	// (auth_tcp "none") instead of TLS, for tests that need it; tandemd
	// then needs --libvirt-insecure-tcp (StartComputeDaemon adds it).
	InsecureTCP bool
	// StreamTLS makes QEMU's migration stream TLS-only too: qemu.conf
	// with migrate_tls_force, and StartComputeDaemon passes
	// --migration-stream-tls. Without it the stream may be TLS (the
	// certificate directory is set) but need not.
	StreamTLS bool
}

// MigrateURI is the URI a migration from src to l uses: l.URI with src's
// client certificate directory as pkipath (compute.WithPKIPath).
func (l *Libvirtd) MigrateURI(src *Libvirtd) string {
	return compute.WithPKIPath(l.URI, src.PKIDir)
}

// QEMULog is the path of the QEMU log of a domain on this host, for
// failure messages.
func (l *Libvirtd) QEMULog(domain string) string {
	return filepath.Join(l.Dir, "log", "qemu", domain+".log")
}

// LibvirtdAvailable reports whether the binaries StartLibvirtd needs are
// installed, naming the packages when not.
func LibvirtdAvailable() error {
	if _, err := libvirtdBinary(); err != nil {
		return err
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		return fmt.Errorf("testcluster: qemu-system-x86_64 not found (apt-get install --no-install-recommends qemu-system-x86): %w", err)
	}
	if _, err := qemuDriver(); err != nil {
		return err
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		return fmt.Errorf("testcluster: unshare (util-linux) not found: %w", err)
	}
	return nil
}

// RequireLibvirtd is Require plus LibvirtdAvailable: it skips only when
// not root and fails when libvirtd or QEMU are missing.
func RequireLibvirtd(t interface {
	Helper()
	Skipf(string, ...any)
	Fatalf(string, ...any)
}) {
	t.Helper()
	requireNetns(t)
	if err := LibvirtdAvailable(); err != nil {
		t.Fatalf("%v", err)
	}
}

func libvirtdBinary() (string, error) {
	if p, err := exec.LookPath("libvirtd"); err == nil {
		return p, nil
	}
	if _, err := os.Stat("/usr/sbin/libvirtd"); err == nil {
		return "/usr/sbin/libvirtd", nil
	}
	return "", errors.New("testcluster: libvirtd not found (apt-get install --no-install-recommends libvirt-daemon libvirt-daemon-driver-qemu)")
}

// qemuDriver finds libvirt's QEMU driver module, which StartLibvirtd loads
// alone: the network and nwfilter drivers would touch the firewall.
func qemuDriver() (string, error) {
	m, _ := filepath.Glob("/usr/lib/*/libvirt/connection-driver/libvirt_driver_qemu.so")
	if len(m) == 0 {
		m, _ = filepath.Glob("/usr/lib*/libvirt/connection-driver/libvirt_driver_qemu.so")
	}
	if len(m) == 0 {
		return "", errors.New("testcluster: libvirt's QEMU driver not found (apt-get install --no-install-recommends libvirt-daemon-driver-qemu)")
	}
	return m[0], nil
}

// ensureLibvirtQEMUUser creates the user libvirtd's QEMU driver insists on
// (even with user = "root" in qemu.conf), as `make deps` does.
func ensureLibvirtQEMUUser(ctx context.Context) error {
	if _, err := user.Lookup(libvirtQEMUUser); err == nil {
		return nil
	}
	out, err := exec.CommandContext(ctx, "useradd", "--system", libvirtQEMUUser).CombinedOutput()
	if err != nil {
		if _, lerr := user.Lookup(libvirtQEMUUser); lerr == nil {
			return nil // created concurrently
		}
		return fmt.Errorf("testcluster: libvirtd needs the %s user and useradd failed (run `make deps`): %w: %s", libvirtQEMUUser, err, out)
	}
	return nil
}

// libvirtdWrapper runs as `sh -c` inside `unshare -m -u --propagation
// private` and finally execs libvirtd, so the harness's PID is libvirtd's.
// $1 is the node's libvirt dir, $2 the hostname, $3 libvirtd, $4 its conf.
//
// The mounts give the host its own /run, /var/{lib,log,cache}/libvirt,
// /etc/libvirt and /etc/pki (libvirt's TLS files), and a /dev without
// kvm: with /dev/kvm visible libvirtd re-probes QEMU for seconds on every
// start, and KVM does not work here anyway. /work, /tmp and Node.Dir stay visible, so QEMU can open NBD
// sockets and kernels there.
const libvirtdWrapper = `set -e
b=$1
mkdir -p /var/lib/libvirt /var/log/libvirt /var/cache/libvirt /etc/libvirt
mount --bind "$b/run" /run
mount --bind "$b/lib" /var/lib/libvirt
mount --bind "$b/log" /var/log/libvirt
mount --bind "$b/cache" /var/cache/libvirt
mount --bind "$b/etc" /etc/libvirt
mkdir -p /etc/pki
mount --bind "$b/pki" /etc/pki
d=$b/dev
mount -t tmpfs -o mode=0755,nosuid tmpfs "$d"
for f in null zero full random urandom tty; do
	touch "$d/$f"
	mount --bind "/dev/$f" "$d/$f"
done
mkdir "$d/net" "$d/pts" "$d/shm"
touch "$d/net/tun"
mount --bind /dev/net/tun "$d/net/tun"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$d/pts"
ln -s pts/ptmx "$d/ptmx"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$d/shm"
ln -s /proc/self/fd "$d/fd"
ln -s /proc/self/fd/0 "$d/stdin"
ln -s /proc/self/fd/1 "$d/stdout"
ln -s /proc/self/fd/2 "$d/stderr"
mount --move "$d" /dev
hostname "$2"
exec "$3" --listen -f "$4"
`

// StartLibvirtd starts libvirtd on host n through Start (so Kill, Close
// and Proc.Stop handle it; QEMUs it starts live in n's namespace, so Kill
// takes them down too) and waits, bounded by ctx, until it answers RPCs.
//
// Its state lives under n.Dir/libvirt and survives restarts, like a real
// host's disk: persistent domains (e.g. migrated in with PersistDest) are
// still defined after a crash. /run is a per-node directory too, so a
// libvirtd restarted while its QEMUs survived reattaches to them; it is
// wiped when nothing runs in n's namespace any more (the host "rebooted").
//
// libvirtd listens on TLS only (port 16514), with the files in PKIDir, and
// accepts only client certificates with OU "node" signed by the CA there.
// When PKIDir has no files yet (tandemd has not joined a cluster), the
// harness writes placeholders signed by a CA of its own, shared by the
// cluster's hosts so that libvirtd-only tests can migrate; tandemd
// replaces them with its node certificate and makes libvirtd reload them.
func (c *Cluster) StartLibvirtd(ctx context.Context, n *Node) (*Libvirtd, error) {
	return c.StartLibvirtdWith(ctx, n, LibvirtdOptions{})
}

// StartLibvirtdWith is StartLibvirtd with options.
func (c *Cluster) StartLibvirtdWith(ctx context.Context, n *Node, o LibvirtdOptions) (*Libvirtd, error) {
	if !c.owns(n) || n == c.sw {
		return nil, fmt.Errorf("testcluster: start libvirtd: node %v is not a host of this cluster", n)
	}
	if err := LibvirtdAvailable(); err != nil {
		return nil, err
	}
	if err := ensureLibvirtQEMUUser(ctx); err != nil {
		return nil, err
	}
	bin, _ := libvirtdBinary()
	drv, _ := qemuDriver()
	lv := &Libvirtd{
		Node:        n,
		Dir:         filepath.Join(n.Dir, "libvirt"),
		URI:         "qemu+tls://" + n.IP + "/system",
		Socket:      filepath.Join(n.Dir, "libvirt", "sock", "libvirt-sock"),
		PKIDir:      nodedir.Dir(dataDir(n)).LibvirtPKIDir(),
		InsecureTCP: o.InsecureTCP,
		StreamTLS:   o.StreamTLS && !o.InsecureTCP,
	}
	if o.InsecureTCP {
		lv.URI = "qemu+tcp://" + n.IP + "/system"
	} else if err := c.ensureLibvirtPKI(n, lv.PKIDir); err != nil {
		return nil, fmt.Errorf("testcluster: start libvirtd on %s: %w", n.Name, err)
	}
	if err := c.prepareLibvirtDir(lv, drv); err != nil {
		return nil, fmt.Errorf("testcluster: start libvirtd on %s: %w", n.Name, err)
	}
	start := time.Now()
	p, err := c.Start(n, LibvirtdName,
		[]string{"unshare", "-m", "-u", "--propagation", "private", "sh", "-c", libvirtdWrapper, "sh",
			lv.Dir, n.Name, bin, filepath.Join(lv.Dir, "etc", "libvirtd.conf")},
		[]string{"LIBVIRT_DRIVER_DIR=" + filepath.Join(lv.Dir, "drivers")})
	if err != nil {
		return nil, err
	}
	lv.Proc = p
	if err := waitLibvirtd(ctx, p, lv.Socket); err != nil {
		p.kill()
		return nil, fmt.Errorf("testcluster: libvirtd on %s: %w\n%s", n.Name, err, c.LogTail(n, LibvirtdName, 20))
	}
	c.t.Logf("testcluster: libvirtd on %s ready in %v (pid %d, %s)", n.Name, time.Since(start).Round(time.Millisecond), p.PID(), lv.Socket)
	return lv, nil
}

// prepareLibvirtDir creates the node's libvirt tree and writes the configs.
func (c *Cluster) prepareLibvirtDir(lv *Libvirtd, qemuDriver string) error {
	n := lv.Node
	run := filepath.Join(lv.Dir, "run")
	if pids, err := c.nsPids(n.NS); err == nil && len(pids) == 0 {
		// Nothing survived on this host: start from an empty /run, as
		// after a reboot, rather than have libvirtd chase dead QEMUs.
		if err := os.RemoveAll(run); err != nil {
			return err
		}
	}
	for _, d := range []string{"run", "lib", "log", "cache", "etc/qemu", "sock", "dev", "drivers", "pki/CA", "pki/libvirt/private"} {
		if err := os.MkdirAll(filepath.Join(lv.Dir, d), 0o755); err != nil {
			return err
		}
	}
	// A stale socket would answer nothing; libvirtd replaces it anyway,
	// but removing it keeps the readiness probe from racing that.
	for _, s := range []string{"libvirt-sock", "libvirt-sock-ro", "libvirt-admin-sock"} {
		if err := os.Remove(filepath.Join(lv.Dir, "sock", s)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	// libvirtd's default TLS paths (the host's /etc/pki inside its mount
	// namespace) link to PKIDir, as deploy/debian/postinst links a real
	// host's: virt-admin server-update-tls re-reads only the default
	// paths, whatever key_file and friends say.
	for link, target := range map[string]string{
		"pki/CA/cacert.pem":                 "cacert.pem",
		"pki/libvirt/servercert.pem":        "servercert.pem",
		"pki/libvirt/private/serverkey.pem": "serverkey.pem",
	} {
		l := filepath.Join(lv.Dir, link)
		if err := os.Remove(l); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		if err := os.Symlink(filepath.Join(lv.PKIDir, target), l); err != nil {
			return err
		}
	}
	link := filepath.Join(lv.Dir, "drivers", filepath.Base(qemuDriver))
	if err := os.Remove(link); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := os.Symlink(qemuDriver, link); err != nil {
		return err
	}
	// The secret driver, when installed, holds the cephx keys of VMs on
	// RBD (ephemeral secrets, in memory only); it touches no firewall.
	if sec := filepath.Join(filepath.Dir(qemuDriver), "libvirt_driver_secret.so"); fileExists(sec) {
		link := filepath.Join(lv.Dir, "drivers", filepath.Base(sec))
		if err := os.Remove(link); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		if err := os.Symlink(sec, link); err != nil {
			return err
		}
	}
	// Without distinct host UUIDs libvirt refuses migration as "same
	// host"; derived from the namespace so restarts keep it.
	sum := sha256.Sum256([]byte(n.NS))
	uuid := fmt.Sprintf("%x-%x-%x-%x-%x", sum[0:4], sum[4:6], sum[6:8], sum[8:10], sum[10:16])
	// As deploy/libvirtd-tls.conf: TLS with client certificates of the
	// cluster's nodes only. Plain TCP only when a test asks for it.
	listen := fmt.Sprintf(`listen_tcp = 0
listen_tls = 1
tls_no_verify_certificate = 0
tls_allowed_dn_list = [%q]
`, LibvirtAllowedDN)
	if lv.InsecureTCP {
		listen = "listen_tcp = 1\nlisten_tls = 0\nauth_tcp = \"none\"\n"
	}
	conf := listen + fmt.Sprintf(`listen_addr = %q
host_uuid = %q
unix_sock_dir = %q
unix_sock_rw_perms = "0700"
unix_sock_ro_perms = "0700"
unix_sock_admin_perms = "0700"
auth_unix_rw = "none"
auth_unix_ro = "none"
log_outputs = "3:stderr"
`, n.IP, uuid, filepath.Dir(lv.Socket))
	qemu := fmt.Sprintf(`stdio_handler = "file"
migration_address = %q
migration_host = %q
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
dynamic_ownership = 0
remember_owner = 0
user = "root"
group = "root"
`, n.IP, n.IP)
	if !lv.InsecureTCP {
		// As deploy/qemu-migrate-tls.conf: QEMU's migration stream can go
		// over TLS, both ends verified; with StreamTLS never without it.
		qemu += fmt.Sprintf("migrate_tls_x509_cert_dir = %q\nmigrate_tls_x509_verify = 1\n", lv.PKIDir)
		if lv.StreamTLS {
			qemu += "migrate_tls_force = 1\n"
		}
	}
	if err := os.WriteFile(filepath.Join(lv.Dir, "etc", "libvirtd.conf"), []byte(conf), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(lv.Dir, "etc", "qemu.conf"), []byte(qemu), 0o644)
}

// waitLibvirtd polls until libvirtd opens qemu:///system over sock. A
// successful dial alone is not enough: the socket accepts connections
// before the drivers have initialised.
func waitLibvirtd(ctx context.Context, p *Proc, sock string) error {
	tick := time.NewTicker(libvirtdPoll)
	defer tick.Stop()
	var last error
	for {
		if last = probeLibvirtd(ctx, sock); last == nil {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("exited before answering: %w (last probe: %v)", p.err, last)
		case <-ctx.Done():
			return fmt.Errorf("not ready: %w (last probe: %v)", ctx.Err(), last)
		case <-tick.C:
		}
	}
}

func probeLibvirtd(ctx context.Context, sock string) error {
	conn, err := (&net.Dialer{}).DialContext(ctx, "unix", sock)
	if err != nil {
		return err
	}
	l := libvirt.NewWithDialer(dialers.NewAlreadyConnected(conn))
	done := make(chan error, 1)
	go func() {
		err := l.ConnectToURI(libvirt.QEMUSystem)
		if err == nil {
			_, err = l.ConnectGetLibVersion()
		}
		done <- err
	}()
	select {
	case err = <-done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err == nil {
		err = l.Disconnect()
	}
	// Closing the conn also unblocks an RPC still waiting for its reply.
	conn.Close()
	return err
}

// StartOnSwitch runs a long-lived process in the switch namespace, like
// Start does on a host. It is on the VM network at ReceiverIP (and on the
// backend bridge, which has no address there). Its log is
// BaseDir/sw/<name>.log.
func (c *Cluster) StartOnSwitch(name string, argv, env []string) (*Proc, error) {
	return c.Start(c.sw, name, argv, env)
}

// SwitchOnBackend gives the switch namespace an address on the backend
// network (<subnet>.254) and returns it, so that commands run there with
// ExecSwitch act as a host that is on the backend network but not a
// cluster member. Idempotent.
func (c *Cluster) SwitchOnBackend() (string, error) {
	if len(c.Nodes) == 0 {
		return "", errors.New("testcluster: switch on backend: no hosts")
	}
	ip := net.ParseIP(c.Nodes[0].IP).To4()
	if ip == nil {
		return "", fmt.Errorf("testcluster: switch on backend: host address %q is not IPv4", c.Nodes[0].IP)
	}
	ip[3] = 254
	if _, err := c.run("-n", c.swNS, "addr", "replace", ip.String()+"/24", "dev", bridgeName); err != nil {
		return "", fmt.Errorf("testcluster: switch on backend: %w", err)
	}
	return ip.String(), nil
}

// ExecSwitch runs a short command in the switch namespace, like Exec.
func (c *Cluster) ExecSwitch(ctx context.Context, argv ...string) ([]byte, error) {
	return c.Exec(ctx, c.sw, argv...)
}

// ListenUDPOnSwitch opens a UDP socket inside the switch namespace, e.g. on
// ReceiverIP to receive guests' datagrams in the test process itself. A
// socket stays in the namespace it was created in, so only the creation
// runs on a thread switched into it.
func (c *Cluster) ListenUDPOnSwitch(addr string) (*net.UDPConn, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("testcluster: listen udp %s on switch: %w", addr, err)
	}
	type result struct {
		conn *net.UDPConn
		err  error
	}
	ch := make(chan result, 1)
	// A fresh goroutine: if switching back fails it exits still locked,
	// and the runtime then discards the thread instead of reusing it.
	go func() {
		conn, err := c.inNetns(c.swNS, func() (*net.UDPConn, error) { return net.ListenUDP("udp", ua) })
		ch <- result{conn, err}
	}()
	r := <-ch
	if r.err != nil {
		return nil, fmt.Errorf("testcluster: listen udp %s on switch: %w", addr, r.err)
	}
	return r.conn, nil
}

// inNetns runs f on a thread in network namespace ns. The calling
// goroutine stays locked to its thread if the original namespace cannot
// be restored.
func (c *Cluster) inNetns(ns string, f func() (*net.UDPConn, error)) (*net.UDPConn, error) {
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	defer orig.Close()
	target, err := os.Open(filepath.Join(netnsDir, ns))
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("setns %s: %w", ns, err)
	}
	conn, ferr := f()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		if conn != nil {
			conn.Close()
		}
		return nil, fmt.Errorf("setns back from %s: %w", ns, err) // thread stays locked
	}
	runtime.UnlockOSThread()
	return conn, ferr
}

// ensureLibvirtPKI writes placeholder TLS files into dir unless they
// exist: a node certificate for n (CN n.Name, IP SAN n.IP) signed by the
// cluster's harness CA, in the layout tandemd writes (SaveLibvirtPKI).
func (c *Cluster) ensureLibvirtPKI(n *Node, dir string) error {
	if _, err := os.Stat(filepath.Join(dir, "servercert.pem")); err == nil {
		return nil
	}
	ca, err := c.harnessCA()
	if err != nil {
		return err
	}
	key, err := pki.NewKey()
	if err != nil {
		return err
	}
	csr, err := pki.NewCSR(key, n.Name)
	if err != nil {
		return err
	}
	cert, err := ca.SignNode(csr, n.Name, []net.IP{net.ParseIP(n.IP)}, time.Now())
	if err != nil {
		return err
	}
	d := nodedir.Dir(filepath.Dir(dir))
	if filepath.Clean(d.LibvirtPKIDir()) != filepath.Clean(dir) {
		return fmt.Errorf("libvirt PKI dir %s is not a data dir's libvirt-pki", dir)
	}
	_, err = d.SaveLibvirtPKI(&nodedir.TLS{CACert: ca.CertPEM(), Cert: cert, Key: key})
	return err
}

// harnessCA is the cluster's placeholder CA, made on first use.
func (c *Cluster) harnessCA() (*pki.CA, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ca == nil {
		ca, err := pki.NewCA("testcluster-"+c.prefix, time.Now())
		if err != nil {
			return nil, err
		}
		c.ca = ca
	}
	return c.ca, nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
