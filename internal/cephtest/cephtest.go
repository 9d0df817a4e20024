package cephtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Binaries the cluster needs, and the Debian packages that ship them.
var binaries = []struct{ bin, pkg string }{
	{"ceph-mon", "ceph-mon"},
	{"ceph-mgr", "ceph-mgr"},
	{"ceph-osd", "ceph-osd"},
	{"ceph", "ceph-common"},
	{"monmaptool", "ceph-mon"},
}

// Available reports whether the Ceph binaries are installed, naming the
// packages when not.
func Available() error {
	var missing []string
	for _, b := range binaries {
		if _, err := exec.LookPath(b.bin); err != nil {
			missing = append(missing, b.pkg)
		}
	}
	if _, err := os.Stat(filepath.Join(mgrModuleDir, "mgr_module.py")); err != nil {
		missing = append(missing, "ceph-mgr")
	}
	if len(missing) > 0 {
		return fmt.Errorf("cephtest: Ceph binaries missing (make deps, or apt-get install --no-install-recommends %s)", strings.Join(missing, " "))
	}
	return nil
}

// Defaults of Options.
const (
	DefaultOSDs     = 3
	DefaultPoolSize = 2
	DefaultPool     = "tandem"
	DefaultOSDBytes = 4 << 30 // sparse: only what is written takes space
	defaultPGs      = 16

	monID = "a"
	mgrID = "x"

	// cliTimeout bounds one call of the ceph CLI that reaches the monitor.
	cliTimeout = 20 * time.Second
	// reapTimeout bounds the wait for a SIGKILLed daemon to be reaped.
	reapTimeout = 10 * time.Second
)

// Options configures Start. The zero value (with Dir set) is three OSDs
// and a pool of size 2.
type Options struct {
	// Dir holds the cluster's configuration, keys, stores and logs. It
	// must be empty or absent; Close removes it.
	Dir string
	// Addr is the IPv4 address the daemons bind to; default a random
	// free one in 127.0.0.0/8.
	Addr     string
	OSDs     int    // default DefaultOSDs
	PoolSize int    // replicas per object, default DefaultPoolSize
	Pool     string // the RBD pool, default DefaultPool
	OSDBytes int64  // each OSD's sparse block file, default DefaultOSDBytes
	// Wrap is prepended to the command line of every daemon and CLI call,
	// e.g. {"ip", "netns", "exec", NS} to run the cluster in a namespace.
	// It must exec the command, so that the recorded PID is the daemon's.
	Wrap []string
	// Logf receives progress lines; nil discards them.
	Logf func(format string, args ...any)
}

// Cluster is a running micro Ceph cluster. Its methods are safe for
// concurrent use.
type Cluster struct {
	Dir      string
	Addr     string // the daemons' address
	FSID     string
	Pool     string
	PoolSize int
	// MonHost is the monitor address in mon_host syntax,
	// "[v2:IP:3300,v1:IP:6789]".
	MonHost string
	// AdminKey is client.admin's cephx key (base64).
	AdminKey string
	// Conf is the cluster's ceph.conf; with it the ceph CLI, rbd, rados
	// and fio's rbd engine act as client.admin (see Env).
	Conf string
	// Started is how long Start took until the pool was active.
	Started time.Duration

	opts Options
	logf func(string, ...any)

	mu     sync.Mutex
	procs  map[string]*daemon
	closed bool
}

// daemon is one started Ceph process, the leader of its process group.
type daemon struct {
	name string
	argv []string
	cmd  *exec.Cmd
	done chan struct{}
}

// Start makes and starts a cluster and returns once its pool's placement
// groups are all active. On error everything it started is gone.
func Start(ctx context.Context, o Options) (_ *Cluster, err error) {
	t0 := time.Now()
	if err := Available(); err != nil {
		return nil, err
	}
	if o.Dir == "" {
		return nil, errors.New("cephtest: Options.Dir is required")
	}
	if o.OSDs == 0 {
		o.OSDs = DefaultOSDs
	}
	if o.PoolSize == 0 {
		o.PoolSize = DefaultPoolSize
	}
	if o.Pool == "" {
		o.Pool = DefaultPool
	}
	if o.OSDBytes == 0 {
		o.OSDBytes = DefaultOSDBytes
	}
	if o.OSDs < 1 || o.PoolSize < 1 || o.PoolSize > o.OSDs {
		return nil, fmt.Errorf("cephtest: %d OSDs cannot hold a pool of size %d", o.OSDs, o.PoolSize)
	}
	if o.Addr == "" {
		a, err := freeLoopback()
		if err != nil {
			return nil, err
		}
		o.Addr = a
	}
	if ip := net.ParseIP(o.Addr); ip == nil || ip.To4() == nil {
		return nil, fmt.Errorf("cephtest: Options.Addr %q is not an IPv4 address", o.Addr)
	}
	c := &Cluster{
		Dir:      o.Dir,
		Addr:     o.Addr,
		Pool:     o.Pool,
		PoolSize: o.PoolSize,
		MonHost:  fmt.Sprintf("[v2:%s:3300,v1:%s:6789]", o.Addr, o.Addr),
		Conf:     filepath.Join(o.Dir, "ceph.conf"),
		opts:     o,
		logf:     o.Logf,
		procs:    map[string]*daemon{},
	}
	if c.logf == nil {
		c.logf = func(string, ...any) {}
	}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	if err := c.prepare(); err != nil {
		return nil, err
	}
	if err := c.bootstrap(ctx); err != nil {
		return nil, err
	}
	c.Started = time.Since(t0)
	c.logf("cephtest: cluster %s at %s ready in %v (%d OSDs, pool %s size %d)", c.FSID, c.Addr, c.Started.Round(time.Millisecond), o.OSDs, o.Pool, o.PoolSize)
	return c, nil
}

// tempPrefix starts the name of every directory TempDir makes; the
// creator's PID follows, so orphans can be told apart.
const tempPrefix = "tandem-ceph-"

// TempDir makes a directory for a cluster under the system's temporary
// directory, named after this process, and first removes those of
// processes that are gone (a test binary that crashed leaves its
// directory behind; its daemons died with it by PR_SET_PDEATHSIG).
func TempDir() (string, error) {
	base := os.TempDir()
	if ents, err := os.ReadDir(base); err == nil {
		for _, e := range ents {
			rest, ok := strings.CutPrefix(e.Name(), tempPrefix)
			if !ok || !e.IsDir() {
				continue
			}
			pid, err := strconv.Atoi(strings.SplitN(rest, "-", 2)[0])
			if err != nil || pid <= 0 || pid == os.Getpid() {
				continue
			}
			if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
				os.RemoveAll(filepath.Join(base, e.Name()))
			}
		}
	}
	d, err := os.MkdirTemp(base, fmt.Sprintf("%s%d-", tempPrefix, os.Getpid()))
	if err != nil {
		return "", fmt.Errorf("cephtest: %w", err)
	}
	return d, nil
}

// freeLoopback picks a random address in 127.0.0.0/8 on which the
// monitor's ports are free.
func freeLoopback() (string, error) {
	for range 20 {
		var b [3]byte
		for i := range b {
			n, err := rand.Int(rand.Reader, big.NewInt(254))
			if err != nil {
				return "", fmt.Errorf("cephtest: random address: %w", err)
			}
			b[i] = byte(n.Int64() + 1)
		}
		addr := fmt.Sprintf("127.%d.%d.%d", b[0], b[1], b[2])
		if portsFree(addr, 3300, 6789) {
			return addr, nil
		}
	}
	return "", errors.New("cephtest: no free loopback address for the monitor")
}

func portsFree(addr string, ports ...int) bool {
	for _, p := range ports {
		l, err := net.Listen("tcp", net.JoinHostPort(addr, strconv.Itoa(p)))
		if err != nil {
			return false
		}
		l.Close()
	}
	return true
}

// newKey makes a cephx key: the base64 of Ceph's CryptoKey encoding, a
// little-endian type (1, AES), creation time (seconds, nanoseconds),
// length (16) and the secret.
func newKey() (string, error) {
	secret := make([]byte, 16)
	if _, err := rand.Read(secret); err != nil {
		return "", fmt.Errorf("cephtest: key: %w", err)
	}
	now := time.Now()
	b := binary.LittleEndian.AppendUint16(nil, 1)
	b = binary.LittleEndian.AppendUint32(b, uint32(now.Unix()))
	b = binary.LittleEndian.AppendUint32(b, uint32(now.Nanosecond()))
	b = binary.LittleEndian.AppendUint16(b, uint16(len(secret)))
	b = append(b, secret...)
	return base64.StdEncoding.EncodeToString(b), nil
}

func newUUID() (string, error) {
	var u [16]byte
	if _, err := rand.Read(u[:]); err != nil {
		return "", fmt.Errorf("cephtest: uuid: %w", err)
	}
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16]), nil
}

// mgrModules are the manager's Python modules the cluster loads: the
// framework, and iostat as its one enabled module. Pools, placement group
// states and "ceph df" are the manager's C++ core; loading the 25 modules
// Debian ships takes ceph-mgr half a minute on a loaded machine.
var mgrModules = []string{"mgr_module.py", "mgr_util.py", "iostat"}

// mgrModuleDir is where Debian's ceph-mgr keeps its modules.
const mgrModuleDir = "/usr/share/ceph/mgr"

func linkMgrModules(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("cephtest: %w", err)
	}
	for _, m := range mgrModules {
		if err := os.Symlink(filepath.Join(mgrModuleDir, m), filepath.Join(dir, m)); err != nil {
			return fmt.Errorf("cephtest: manager modules: %w", err)
		}
	}
	return nil
}

// entity is one cephx identity with its capabilities.
type entity struct {
	name, key string
	caps      [][2]string
}

func (e entity) keyring() string {
	var b strings.Builder
	fmt.Fprintf(&b, "[%s]\n\tkey = %s\n", e.name, e.key)
	for _, c := range e.caps {
		fmt.Fprintf(&b, "\tcaps %s = %q\n", c[0], c[1])
	}
	return b.String()
}

// prepare writes ceph.conf and the keyrings.
func (c *Cluster) prepare() error {
	if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		return fmt.Errorf("cephtest: %w", err)
	}
	if ents, err := os.ReadDir(c.Dir); err != nil {
		return fmt.Errorf("cephtest: %w", err)
	} else if len(ents) > 0 {
		return fmt.Errorf("cephtest: %s is not empty", c.Dir)
	}
	for _, d := range []string{"run", "log", "crash", "mon-" + monID, "mgr-" + mgrID} {
		if err := os.MkdirAll(filepath.Join(c.Dir, d), 0o700); err != nil {
			return fmt.Errorf("cephtest: %w", err)
		}
	}
	if err := linkMgrModules(filepath.Join(c.Dir, "mgr-modules")); err != nil {
		return err
	}
	fsid, err := newUUID()
	if err != nil {
		return err
	}
	c.FSID = fsid

	ents := []entity{
		{name: "mon.", caps: [][2]string{{"mon", "allow *"}}},
		{name: "client.admin", caps: [][2]string{{"mon", "allow *"}, {"osd", "allow *"}, {"mds", "allow *"}, {"mgr", "allow *"}}},
		{name: "mgr." + mgrID, caps: [][2]string{{"mon", "allow profile mgr"}, {"osd", "allow *"}, {"mds", "allow *"}}},
	}
	for i := range c.opts.OSDs {
		ents = append(ents, entity{name: fmt.Sprintf("osd.%d", i), caps: [][2]string{{"mon", "allow profile osd"}, {"mgr", "allow profile osd"}, {"osd", "allow *"}}})
	}
	var all strings.Builder
	for i := range ents {
		if ents[i].key, err = newKey(); err != nil {
			return err
		}
		all.WriteString(ents[i].keyring())
	}
	// The monitor's keyring holds every entity: mkfs imports them all into
	// the auth database, so no "auth add" is needed later.
	files := map[string]string{
		"mon.keyring":                          all.String(),
		"admin.keyring":                        ents[1].keyring(),
		filepath.Join("mgr-"+mgrID, "keyring"): ents[2].keyring(),
	}
	c.AdminKey = ents[1].key
	for i := range c.opts.OSDs {
		d := filepath.Join(c.Dir, fmt.Sprintf("osd-%d", i))
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("cephtest: %w", err)
		}
		// Written before ceph-osd --mkfs, which otherwise makes a key of
		// its own that the monitor does not know.
		files[filepath.Join(fmt.Sprintf("osd-%d", i), "keyring")] = ents[3+i].keyring()
	}
	files["ceph.conf"] = c.confText()
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(c.Dir, name), []byte(text), 0o600); err != nil {
			return fmt.Errorf("cephtest: %w", err)
		}
	}
	return nil
}

func (c *Cluster) confText() string {
	d := c.Dir
	return fmt.Sprintf(`[global]
fsid = %[1]s
mon host = %[2]s
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
run dir = %[4]s/run
crash dir = %[4]s/crash
mon data = %[4]s/mon-$id
mgr data = %[4]s/mgr-$id
osd data = %[4]s/osd-$id
osd pool default size = %[5]d
osd pool default min size = 1
osd pool default pg num = %[6]d
osd pool default pgp num = %[6]d
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool delete = true
mon allow pool size one = true
mon warn on pool no redundancy = false
mon warn on insecure global id reclaim = false
mon warn on insecure global id reclaim allowed = false
mon data avail warn = 2
mon data avail crit = 1
paxos propose interval = 0.05
osd objectstore = bluestore
bluestore block create = true
bluestore block size = %[7]d
bluestore fsck on mkfs = false
osd memory target = 939524096
mgr initial modules = iostat

[mon]
public addr = %[3]s
keyring = %[4]s/mon.keyring
log file = %[4]s/log/$name.log
admin socket = %[4]s/run/$name.asok

[mgr]
mgr module path = %[4]s/mgr-modules
public addr = %[3]s
keyring = $mgr_data/keyring
log file = %[4]s/log/$name.log
admin socket = %[4]s/run/$name.asok

[osd]
public addr = %[3]s
keyring = $osd_data/keyring
log file = %[4]s/log/$name.log
admin socket = %[4]s/run/$name.asok

[client.admin]
keyring = %[4]s/admin.keyring
`, c.FSID, c.MonHost, c.Addr, d, c.PoolSize, defaultPGs, c.opts.OSDBytes)
}

// bootstrap makes the stores, starts the daemons and creates the pool.
func (c *Cluster) bootstrap(ctx context.Context) error {
	t0 := time.Now()
	monmap := filepath.Join(c.Dir, "monmap")
	if _, err := c.run(ctx, "monmaptool", "--create", "--clobber", "--enable-all-features", "--fsid", c.FSID,
		"--addv", monID, c.MonHost, monmap); err != nil {
		return err
	}
	if _, err := c.run(ctx, "ceph-mon", "-c", c.Conf, "--mkfs", "-i", monID, "--monmap", monmap,
		"--keyring", filepath.Join(c.Dir, "mon.keyring")); err != nil {
		return err
	}
	if err := c.StartMon(); err != nil {
		return err
	}
	// The manager's Python modules load slowly: start it first.
	if err := c.startDaemon("mgr."+mgrID, "ceph-mgr", "-f", "-c", c.Conf, "-i", mgrID); err != nil {
		return err
	}
	c.logf("cephtest: monitor and manager started at %v", time.Since(t0).Round(time.Millisecond))

	// Each OSD's store is made offline (--no-mon-config) while the
	// monitor starts, then the OSD is registered and started; the pool is
	// created meanwhile. The ceph CLI is slow to start, so all of it runs
	// in parallel.
	errs := make([]error, c.opts.OSDs+1)
	var wg sync.WaitGroup
	for i := range c.opts.OSDs {
		u, err := newUUID()
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := strconv.Itoa(i)
			if _, errs[i] = c.run(ctx, "ceph-osd", "-c", c.Conf, "-i", id, "--mkfs", "--osd-uuid", u, "--no-mon-config"); errs[i] != nil {
				return
			}
			if _, errs[i] = c.Ceph(ctx, "osd", "new", u, id); errs[i] != nil {
				return
			}
			errs[i] = c.StartOSD(i)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if _, errs[c.opts.OSDs] = c.Ceph(ctx, "osd", "pool", "create", c.Pool, strconv.Itoa(defaultPGs), strconv.Itoa(defaultPGs), "replicated"); errs[c.opts.OSDs] != nil {
			return
		}
		_, errs[c.opts.OSDs] = c.Ceph(ctx, "osd", "pool", "application", "enable", c.Pool, "rbd")
	}()
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	c.logf("cephtest: OSDs started and pool created at %v", time.Since(t0).Round(time.Millisecond))
	return c.WaitActive(ctx)
}

// StartMon starts the monitor (again, after KillMon) from its store.
func (c *Cluster) StartMon() error {
	return c.startDaemon("mon."+monID, "ceph-mon", "-f", "-c", c.Conf, "-i", monID)
}

// StartOSD starts OSD i (again, after KillOSD).
func (c *Cluster) StartOSD(i int) error {
	return c.startDaemon(fmt.Sprintf("osd.%d", i), "ceph-osd", "-f", "-c", c.Conf, "-i", strconv.Itoa(i))
}

// KillMon SIGKILLs the monitor and waits until it is gone.
func (c *Cluster) KillMon() error { return c.kill("mon." + monID) }

// KillOSD SIGKILLs OSD i and waits until it is gone.
func (c *Cluster) KillOSD(i int) error { return c.kill(fmt.Sprintf("osd.%d", i)) }

// PIDs returns the PID of each running daemon by Ceph name ("mon.a").
func (c *Cluster) PIDs() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := map[string]int{}
	for n, d := range c.procs {
		select {
		case <-d.done:
		default:
			m[n] = d.cmd.Process.Pid
		}
	}
	return m
}

// Env is the environment for Ceph's own clients (ceph, rbd, rados, fio's
// rbd engine) to act as client.admin on this cluster, with librbd's cache
// off so a write is durable when acknowledged.
func (c *Cluster) Env() []string {
	return []string{"CEPH_CONF=" + c.Conf, "CEPH_ARGS=--rbd_cache=false"}
}

// Ceph runs the ceph CLI as client.admin and returns its standard output.
// The call is bounded by ctx and a connect timeout.
func (c *Cluster) Ceph(ctx context.Context, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, cliTimeout)
	defer cancel()
	argv := append([]string{"ceph", "-c", c.Conf, "--connect-timeout", strconv.Itoa(int(cliTimeout / time.Second / 2))}, args...)
	return c.run(ctx, argv...)
}

// CephJSON runs the ceph CLI with --format json and decodes the result
// into v.
func (c *Cluster) CephJSON(ctx context.Context, v any, args ...string) error {
	out, err := c.Ceph(ctx, append(args, "--format", "json")...)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(out, v); err != nil {
		return fmt.Errorf("cephtest: ceph %s: decoding %q: %w", strings.Join(args, " "), truncate(out), err)
	}
	return nil
}

// AddClient creates a client entity with RBD caps on the cluster's pool and
// returns its key.
func (c *Cluster) AddClient(ctx context.Context, name string) (string, error) {
	var out []struct {
		Key string `json:"key"`
	}
	if err := c.CephJSON(ctx, &out, "auth", "get-or-create", "client."+name,
		"mon", "profile rbd", "osd", "profile rbd pool="+c.Pool, "mgr", "profile rbd pool="+c.Pool); err != nil {
		return "", err
	}
	if len(out) != 1 || out[0].Key == "" {
		return "", fmt.Errorf("cephtest: auth get-or-create client.%s returned no key", name)
	}
	return out[0].Key, nil
}

// WaitActive waits until the monitor answers, every OSD is up and every
// placement group of the pool is active, or ctx ends.
func (c *Cluster) WaitActive(ctx context.Context) error {
	t0 := time.Now()
	var last string
	for {
		ok, why := c.active(ctx)
		if ok {
			return nil
		}
		if why != last {
			c.logf("cephtest: waiting at %v: %s", time.Since(t0).Round(time.Millisecond), why)
			last = why
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cephtest: cluster not active (%s): %w\n%s", why, ctx.Err(), c.logTails())
		case <-time.After(200 * time.Millisecond):
		}
		if err := c.checkAlive(); err != nil {
			return err
		}
	}
}

// active reports whether the cluster is ready, and why not: one call of
// `ceph status` (a monitor command; the manager's digest supplies the
// placement groups), since every call of the Python CLI costs a second.
func (c *Cluster) active(ctx context.Context) (bool, string) {
	var st struct {
		OSDMap struct {
			NumUpOSDs int `json:"num_up_osds"`
		} `json:"osdmap"`
		PGMap struct {
			NumPGs     int `json:"num_pgs"`
			PGsByState []struct {
				State string `json:"state_name"`
				Count int    `json:"count"`
			} `json:"pgs_by_state"`
		} `json:"pgmap"`
		MgrMap struct {
			Available bool `json:"available"`
		} `json:"mgrmap"`
	}
	if err := c.CephJSON(ctx, &st, "status"); err != nil {
		return false, err.Error()
	}
	if st.OSDMap.NumUpOSDs < c.opts.OSDs {
		return false, fmt.Sprintf("%d of %d OSDs up", st.OSDMap.NumUpOSDs, c.opts.OSDs)
	}
	if !st.MgrMap.Available {
		return false, "no active manager"
	}
	active := 0
	for _, s := range st.PGMap.PGsByState {
		if strings.HasPrefix(s.State, "active") && !strings.Contains(s.State, "peering") {
			active += s.Count
		}
	}
	// The pool's placement groups are among them once num_pgs counts
	// them: no other pool has as many.
	if st.PGMap.NumPGs < defaultPGs || active < st.PGMap.NumPGs {
		return false, fmt.Sprintf("%d of %d placement groups active", active, st.PGMap.NumPGs)
	}
	return true, ""
}

// checkAlive fails if a daemon the cluster started has exited.
func (c *Cluster) checkAlive() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for n, d := range c.procs {
		select {
		case <-d.done:
			return fmt.Errorf("cephtest: %s exited: %v\n%s", n, d.cmd.ProcessState, c.tail(n))
		default:
		}
	}
	return nil
}

// startDaemon starts a Ceph daemon in the foreground (-f) in its own
// process group, logging to its own file.
func (c *Cluster) startDaemon(name string, argv ...string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return fmt.Errorf("cephtest: start %s: cluster closed", name)
	}
	if d, ok := c.procs[name]; ok {
		select {
		case <-d.done:
		default:
			return fmt.Errorf("cephtest: start %s: already running as pid %d", name, d.cmd.Process.Pid)
		}
	}
	full := append(append([]string{}, c.opts.Wrap...), argv...)
	out, err := os.OpenFile(filepath.Join(c.Dir, "log", name+".out"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("cephtest: start %s: %w", name, err)
	}
	defer out.Close()
	cmd := exec.Command(full[0], full[1:]...)
	cmd.Dir = c.Dir
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("cephtest: start %s: %w", name, err)
	}
	d := &daemon{name: name, argv: full, cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(d.done)
	}()
	c.procs[name] = d
	return nil
}

// kill SIGKILLs a daemon's process group and waits for it to be reaped.
func (c *Cluster) kill(name string) error {
	c.mu.Lock()
	d, ok := c.procs[name]
	c.mu.Unlock()
	if !ok {
		return fmt.Errorf("cephtest: kill %s: not started", name)
	}
	return d.kill()
}

func (d *daemon) kill() error {
	select {
	case <-d.done:
		return nil
	default:
	}
	// The group's leader is not yet reaped (done is open), so its PID
	// cannot have been reused.
	_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-d.done:
		return nil
	case <-time.After(reapTimeout):
		return fmt.Errorf("cephtest: %s (pid %d) not reaped %v after SIGKILL", d.name, d.cmd.Process.Pid, reapTimeout)
	}
}

// Close kills every daemon by its PID and removes the cluster's directory.
// It is idempotent.
func (c *Cluster) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	procs := make([]*daemon, 0, len(c.procs))
	for _, d := range c.procs {
		procs = append(procs, d)
	}
	c.mu.Unlock()
	var errs []error
	for _, d := range procs {
		errs = append(errs, d.kill())
	}
	if err := errors.Join(errs...); err != nil {
		return err // keep the directory: a live daemon may still use it
	}
	if err := os.RemoveAll(c.Dir); err != nil {
		return fmt.Errorf("cephtest: %w", err)
	}
	return nil
}

// run runs a short command to completion and returns its standard output,
// or an error with its standard error.
func (c *Cluster) run(ctx context.Context, argv ...string) ([]byte, error) {
	full := append(append([]string{}, c.opts.Wrap...), argv...)
	cmd := exec.CommandContext(ctx, full[0], full[1:]...)
	cmd.Dir = c.Dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", err, ctx.Err())
		}
		return stdout.Bytes(), fmt.Errorf("cephtest: %s: %w: %s", strings.Join(argv, " "), err, truncate(stderr.Bytes()))
	}
	return stdout.Bytes(), nil
}

func truncate(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 2000 {
		s = s[:2000] + "..."
	}
	return s
}

// logTails returns the end of every daemon's log, for errors.
func (c *Cluster) logTails() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b strings.Builder
	for n := range c.procs {
		b.WriteString(c.tail(n))
	}
	return b.String()
}

func (c *Cluster) tail(name string) string {
	var b strings.Builder
	for _, f := range []string{name + ".out", name + ".log"} {
		data, err := os.ReadFile(filepath.Join(c.Dir, "log", f))
		if err != nil || len(data) == 0 {
			continue
		}
		if len(data) > 1500 {
			data = data[len(data)-1500:]
		}
		fmt.Fprintf(&b, "--- %s (end) ---\n%s\n", f, data)
	}
	return b.String()
}
