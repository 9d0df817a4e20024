package e2e

import (
	"context"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tandemhci/tandem/internal/adminclient"
	"github.com/tandemhci/tandem/internal/cephtest"
	"github.com/tandemhci/tandem/internal/nbdclient"
	"github.com/tandemhci/tandem/internal/testcluster"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// rbdCluster is a 3-node cluster and a micro Ceph cluster it reaches: the
// Ceph daemons run in the switch namespace on its backend address, so
// every node reaches the monitor and the OSDs over br0 like a storage
// network (cephtest's Wrap, with `ip netns exec`).
func rbdCluster(t *testing.T) (*testcluster.Cluster, *testcluster.Tandem, context.Context, *cephtest.Cluster) {
	t.Helper()
	if err := cephtest.Available(); err != nil {
		t.Skipf("no Ceph binaries: %v", err)
	}
	testcluster.Require(t)
	bin := binDir(t)
	c := testcluster.New(t, testcluster.Options{Nodes: 3})
	td := testcluster.NewTandem(c, bin)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	for _, n := range c.Nodes {
		if _, err := td.StartDaemon(ctx, n, "--nbd-addr", nbdAddr(n)); err != nil {
			t.Fatal(err)
		}
	}
	if err := td.Form(ctx, "rbd"); err != nil {
		t.Fatal(err)
	}
	if _, err := td.WaitStatus(ctx, c.Nodes[0], 15*time.Second, func(s *tandemv1.ClusterStatus) bool { return s.Quorate && s.VotesOnline == 3 }); err != nil {
		t.Fatal(err)
	}
	return c, td, ctx, startCeph(t, ctx, c)
}

// startCeph starts the micro Ceph in c's switch namespace, on its backend
// address, stopped (by PID) when the test ends.
func startCeph(t *testing.T, ctx context.Context, c *testcluster.Cluster) *cephtest.Cluster {
	t.Helper()
	addr, err := c.SwitchOnBackend()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := cephtest.TempDir()
	if err != nil {
		t.Fatal(err)
	}
	ceph, err := cephtest.Start(ctx, cephtest.Options{Dir: dir, Addr: addr, Wrap: []string{"ip", "netns", "exec", c.Switch().NS}, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ceph.Close() })
	return ceph
}

// tandemClient adds client.tandem with the capabilities the docs give
// it and returns its key. As the docs say: 'profile rbd' adds blocklist
// entries; removing its own old entry takes the blocklist command.
func tandemClient(t *testing.T, ctx context.Context, ceph *cephtest.Cluster) string {
	t.Helper()
	key, err := ceph.AddClient(ctx, "tandem")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := ceph.Ceph(ctx, "auth", "caps", "client.tandem", "mon", `profile rbd, allow command "osd blocklist"`,
		"osd", "profile rbd pool="+ceph.Pool, "mgr", "profile rbd pool="+ceph.Pool); err != nil {
		t.Fatalf("ceph auth caps: %v\n%s", err, out)
	}
	return key
}

// rbdImages lists the pool's images with the rbd CLI, from the switch
// namespace.
func rbdImages(t *testing.T, ctx context.Context, c *testcluster.Cluster, ceph *cephtest.Cluster) string {
	t.Helper()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", c.Switch().NS, "rbd", "-c", ceph.Conf, "ls", ceph.Pool)
	cmd.Env = append(os.Environ(), ceph.Env()...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("rbd ls: %v\n%s", err, out)
	}
	return " " + strings.Join(strings.Fields(string(out)), " ") + " "
}

// TestRBDVolumes covers issue 15's daemon slice on one 3-node cluster and
// a real micro Ceph: storage add (refused with a wrong key, a missing pool
// or no monitor, storing nothing), RBD volumes through Tandem's NBD export
// (qemu-img info, fio verify, --image import), show (backend, pool, image,
// watchers, lock owner), resize, refused creates leaving nothing, promote
// to another node (blocklist before the owner commit, asserted from the
// events; the old owner's writes never land), the monitor killed (a clear
// error within a bound, nothing lost once it is back), delete, and the key
// never at rest in plain text.
func TestRBDVolumes(t *testing.T) {
	c, td, ctx, ceph := rbdCluster(t)
	n1, n2, n3 := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	cli := func(n *testcluster.Node, args ...string) (string, string, error) { return td.CLI(ctx, n, args...) }
	must := func(t *testing.T, n *testcluster.Node, args ...string) string {
		t.Helper()
		out, stderr, err := cli(n, args...)
		if err != nil {
			t.Fatalf("tandem %s: %v\n%s", strings.Join(args, " "), err, stderr)
		}
		return out
	}
	key := tandemClient(t, ctx, ceph)
	other, err := ceph.AddClient(ctx, "other")
	if err != nil {
		t.Fatal(err)
	}
	keyDir := t.TempDir()
	keyring := func(name, k string) string {
		p := filepath.Join(keyDir, name)
		if err := os.WriteFile(p, []byte("[client.tandem]\n\tkey = "+k+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good, wrong := keyring("good.keyring", key), keyring("wrong.keyring", other)
	add := func(args ...string) (string, string, error) {
		return cli(n1, append([]string{"storage", "add", "rbd", "ceph1"}, args...)...)
	}

	t.Run("StorageAddRefusals", func(t *testing.T) {
		for _, tc := range []struct {
			what string
			args []string
			want string
		}{
			{"wrong key", []string{"--pool", ceph.Pool, "--mon", ceph.MonHost, "--client", "tandem", "--key-file", wrong}, "refused the client's credentials"},
			{"missing pool", []string{"--pool", "nope", "--mon", ceph.MonHost, "--client", "tandem", "--key-file", good}, "no such Ceph pool"},
			{"no monitor", []string{"--pool", ceph.Pool, "--mon", "10.99.0.253", "--client", "tandem", "--key-file", good}, "unavailable"},
		} {
			t0 := time.Now()
			_, stderr, err := add(tc.args...)
			if err == nil || !strings.Contains(stderr, tc.want) || strings.Contains(stderr, key) {
				t.Fatalf("%s: %v\n%s", tc.what, err, stderr)
			}
			t.Logf("%s refused in %v: %s", tc.what, time.Since(t0).Round(time.Millisecond), strings.TrimSpace(stderr))
		}
		if out := must(t, n2, "storage", "list"); !strings.Contains(out, "no storage") {
			t.Fatalf("something was stored:\n%s", out)
		}
	})

	t.Run("StorageAdd", func(t *testing.T) {
		out := must(t, n1, append([]string{"storage", "add", "rbd", "ceph1"}, "--pool", ceph.Pool, "--mon", ceph.MonHost, "--client", "tandem", "--key-file", good)...)
		if strings.Contains(out, key) {
			t.Fatalf("the key is printed:\n%s", out)
		}
		out = must(t, n3, "storage", "show", "ceph1", "--output", "json")
		var st tandemv1.StorageInfo
		if err := adminclient.UnmarshalJSON([]byte(out), &st); err != nil {
			t.Fatal(err)
		}
		if st.Health != "ok" || st.Pool != ceph.Pool || st.AvailableBytes <= 0 || strings.Contains(out, key) {
			t.Fatalf("storage show:\n%s", out)
		}
		t.Logf("storage show:\n%s", must(t, n3, "storage", "show", "ceph1"))
	})

	const size = 64 << 20
	uri := func(n *testcluster.Node, vol string) string { return nbdURI(td, n, vol) }
	var created *tandemv1.VolumeInfo
	t.Run("CreateAndServe", func(t *testing.T) {
		created = volumeCmd(t, ctx, td, n1, "create", "r1", "--size", "64M", "--backend", "rbd")
		info := volumeCmd(t, ctx, td, n3, "show", "r1")
		if info.Backend != "rbd" || info.Pool != ceph.Pool || info.Image != "r1" || info.Primary != "n1" || info.SizeBytes != size {
			t.Fatalf("show: %+v", info)
		}
		if info.LockOwner == nil || info.LockOwner.Node != "n1" || len(info.Watchers) != 1 || info.Watchers[0].Node != "n1" {
			t.Fatalf("lock owner %+v, watchers %+v", info.LockOwner, info.Watchers)
		}
		if !strings.Contains(rbdImages(t, ctx, c, ceph), " r1 ") {
			t.Fatal("no image r1 in the pool")
		}
		out := runTool(t, ctx, "qemu-img", "info", uri(n1, "r1"))
		if !strings.Contains(out, "virtual size: 64 MiB") {
			t.Fatalf("qemu-img info:\n%s", out)
		}
		runTool(t, ctx, "fio", "--name=verify", "--ioengine=nbd", "--uri="+uri(n1, "r1"), "--rw=randwrite", "--bs=4k",
			"--size=32m", "--iodepth=16", "--verify=crc32c", "--do_verify=1", "--verify_fatal=1", "--verify_state_save=0", "--randrepeat=0")
		runTool(t, ctx, "qemu-io", "-f", "raw", "-c", "write -P 0x5a 0 1M", "-c", "write -P 0x11 40M 1M", "-c", "flush", uri(n1, "r1"))
		// Only the owner serves it.
		if _, err := nbdclient.Dial(ctx, "unix", nbdSocket(td, n2), "r1"); err == nil || !strings.Contains(err.Error(), "not the owner of RBD volume r1: n1 is") {
			t.Fatalf("export on another node: %v", err)
		}
	})
	if created == nil {
		t.FailNow()
	}

	// The TLS TCP export serves it too, to a client outside the cluster
	// (the switch namespace) with an export certificate.
	t.Run("TLSExport", func(t *testing.T) {
		if info := volumeCmd(t, ctx, td, n2, "show", "r1"); info.NbdTcp != "nbds://"+nbdAddr(n1)+"/r1" {
			t.Fatalf("TCP export URI %q", info.NbdTcp)
		}
		dir := issueExportCert(t, ctx, td, n1, "rbd-consumer", "r1")
		write := append([]string{"qemu-io"}, append(qemuTLS(n1, "r1", dir), "-c", "write -P 0x77 48M 1M", "-c", "flush")...)
		if out, err := c.ExecSwitch(ctx, write...); err != nil || strings.Contains(string(out), "failed") {
			t.Fatalf("qemu-io over TLS: %v\n%s", err, out)
		}
		runTool(t, ctx, "qemu-io", "-f", "raw", "-c", "read -P 0x77 48M 1M", uri(n1, "r1"))
		if out, err := c.ExecSwitch(ctx, "nbdinfo", nbdsURI(n1, "r1", dir)); err != nil || !strings.Contains(string(out), "67108864") {
			t.Fatalf("nbdinfo over TLS: %v\n%s", err, out)
		}
	})

	t.Run("Resize", func(t *testing.T) {
		info := volumeCmd(t, ctx, td, n2, "resize", "r1", "--size", "128M")
		if info.SizeBytes != 128<<20 {
			t.Fatalf("resize: %+v", info)
		}
		if out, err := runNBDInfo(ctx, uri(n1, "r1")); err != nil || !strings.Contains(out, "134217728") {
			t.Fatalf("nbdinfo after resize: %v\n%s", err, out)
		}
		if _, stderr, err := cli(n2, "volume", "resize", "r1", "--size", "64M"); err == nil || !strings.Contains(stderr, "shrinking") {
			t.Fatalf("shrink: %v %s", err, stderr)
		}
	})

	t.Run("ImportImage", func(t *testing.T) {
		img := filepath.Join(t.TempDir(), "src.qcow2")
		runTool(t, ctx, "qemu-img", "create", "-f", "qcow2", img, "8M")
		runTool(t, ctx, "qemu-io", "-f", "qcow2", "-c", "write -P 0x33 0 1M", img)
		must(t, n1, "volume", "create", "imp", "--backend", "rbd", "--image", img)
		runTool(t, ctx, "qemu-io", "-f", "raw", "-c", "read -P 0x33 0 1M", uri(n1, "imp"))
		must(t, n1, "volume", "delete", "imp")
	})

	t.Run("RefusedCreatesLeaveNothing", func(t *testing.T) {
		before := rbdImages(t, ctx, c, ceph)
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"--size", "64M", "--pool", "nope"}, "no such Ceph pool"},
			{[]string{"--size", "60T"}, "not enough space"},
			{[]string{"--size", "64M", "--storage", "ceph9"}, "no storage named"},
		} {
			_, stderr, err := cli(n1, append([]string{"volume", "create", "bad1", "--backend", "rbd"}, tc.args...)...)
			if err == nil || !strings.Contains(stderr, tc.want) {
				t.Fatalf("create %v: %v\n%s", tc.args, err, stderr)
			}
			if _, stderr, err := cli(n2, "volume", "show", "bad1"); err == nil || !strings.Contains(stderr, "no volume named") {
				t.Fatalf("a record is left after %v: %v %s", tc.args, err, stderr)
			}
		}
		if after := rbdImages(t, ctx, c, ceph); after != before {
			t.Fatalf("images before %q, after %q", before, after)
		}
	})

	t.Run("PromoteFencesTheOldOwner", func(t *testing.T) {
		info := volumeCmd(t, ctx, td, n3, "promote", "r1", "--node", "n2")
		if info.Primary != "n2" || info.Epoch != created.Epoch+1 {
			t.Fatalf("promote: %+v", info)
		}
		// The old owner's writes never land: its client is blocklisted
		// (or, once it noticed, its export refuses).
		stale := exec.CommandContext(ctx, "qemu-io", "-f", "raw", "-c", "write -P 0xee 40M 1M", "-c", "flush", uri(n1, "r1"))
		if out, err := stale.CombinedOutput(); err == nil && !strings.Contains(string(out), "error") {
			t.Fatalf("the old owner accepted a write:\n%s", out)
		} else {
			t.Logf("the old owner's write: %v %s", err, strings.TrimSpace(string(out)))
		}
		runTool(t, ctx, "qemu-io", "-f", "raw", "-c", "read -P 0x5a 0 1M", "-c", "read -P 0x11 40M 1M", uri(n2, "r1"))

		vc := &vmCluster{c: c, td: td, ctx: ctx}
		evs := vc.events(t, n3)
		takeover := firstEvent(evs, func(e *tandemv1.Event) bool {
			return e.Kind == "volume-rbd-takeover" && strings.Contains(e.Detail, "volume r1:")
		})
		owner := firstEvent(evs, func(e *tandemv1.Event) bool {
			return e.Kind == "volume-owner" && strings.Contains(e.Detail, "volume r1:")
		})
		if takeover < 0 || owner < 0 || takeover > owner || !strings.Contains(evs[takeover].Detail, "blocklisted "+n1.IP+":") {
			t.Fatalf("events: takeover %d, owner %d\n%v", takeover, owner, evs)
		}
		t.Logf("%s\n%s", evs[takeover].Detail, evs[owner].Detail)
		// The old owner closes its client, proves no process of it can
		// hold it, and its entry leaves the blocklist; Ceph then sees one
		// watcher, the new owner.
		waitEvent(t, vc, n3, time.Minute, func(e *tandemv1.Event) bool {
			return e.Kind == "rbd-unblocklist" && strings.Contains(e.Detail, ": n1 dropped its old client(s) "+n1.IP+":")
		})
		info = volumeCmd(t, ctx, td, n1, "show", "r1")
		if info.LockOwner == nil || info.LockOwner.Node != "n2" || len(info.Watchers) != 1 || info.Watchers[0].Node != "n2" {
			t.Fatalf("after promote: lock owner %+v, watchers %+v", info.LockOwner, info.Watchers)
		}
		if _, err := nbdclient.Dial(ctx, "unix", nbdSocket(td, n1), "r1"); err == nil || !strings.Contains(err.Error(), "not the owner of RBD volume r1: n2 is") {
			t.Fatalf("export on the old owner: %v", err)
		}
	})

	t.Run("MonitorKilled", func(t *testing.T) {
		if err := ceph.KillMon(); err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		_, stderr, err := cli(n1, "volume", "create", "m1", "--size", "64M", "--backend", "rbd")
		took := time.Since(t0)
		if err == nil || !strings.Contains(stderr, "unavailable") {
			t.Fatalf("create without a monitor: %v\n%s", err, stderr)
		}
		t.Logf("create without a monitor refused in %v: %s", took.Round(time.Millisecond), strings.TrimSpace(stderr))
		// The cluster status has a line for the storage, degraded.
		statusOut, statusErr, _ := cli(n3, "cluster", "status", "--timeout", "30s")
		if !strings.Contains(statusOut, "storage ceph1 (rbd, pool "+ceph.Pool) || !strings.Contains(statusOut, "is degraded") {
			_ = ceph.StartMon() // the later steps need it
			t.Fatalf("cluster status without a monitor has no degraded storage line:\n%s\n%s", statusOut, statusErr)
		}
		for _, l := range strings.Split(statusOut, "\n") {
			if strings.Contains(l, "storage ceph1 (rbd, pool") {
				t.Logf("cluster status: %s", strings.TrimSpace(l))
			}
		}
		if err := ceph.StartMon(); err != nil {
			t.Fatal(err)
		}
		if err := ceph.WaitActive(ctx); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(time.Minute); ; {
			statusOut, _, _ = cli(n3, "cluster", "status", "--timeout", "30s")
			if !strings.Contains(statusOut, "storage ceph1 (rbd, pool") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the storage line stays once the monitor is back:\n%s", statusOut)
			}
			time.Sleep(time.Second)
		}
		if _, stderr, err := cli(n2, "volume", "show", "m1"); err == nil || !strings.Contains(stderr, "no volume named") {
			t.Fatalf("m1 left behind: %v %s", err, stderr)
		}
		if strings.Contains(rbdImages(t, ctx, c, ceph), " m1 ") {
			t.Fatal("image m1 left behind")
		}
		runTool(t, ctx, "qemu-io", "-f", "raw", "-c", "read -P 0x5a 0 1M", uri(n2, "r1"))
	})

	// The owner's tandemd dies (SIGKILL: its Ceph client is not closed,
	// its lock and watch linger until Ceph expires them) and starts
	// again: it reopens the volume with the lock, and nothing is lost.
	t.Run("OwnerRestart", func(t *testing.T) {
		c.Kill(n2)
		t0 := time.Now()
		if _, err := td.StartDaemon(ctx, n2, "--nbd-addr", nbdAddr(n2)); err != nil {
			t.Fatal(err)
		}
		var last error
		for time.Since(t0) < 3*time.Minute {
			cl, err := nbdclient.Dial(ctx, "unix", nbdSocket(td, n2), "r1")
			if err == nil {
				cl.Close()
				last = nil
				break
			}
			last = err
			time.Sleep(time.Second)
		}
		if last != nil {
			t.Fatalf("the restarted owner does not serve r1: %v", last)
		}
		t.Logf("the restarted owner serves r1 %v after its start", time.Since(t0).Round(time.Second))
		runTool(t, ctx, "qemu-io", "-f", "raw", "-c", "read -P 0x5a 0 1M", "-c", "read -P 0x11 40M 1M", uri(n2, "r1"))
		info := volumeCmd(t, ctx, td, n1, "show", "r1")
		if info.LockOwner == nil || info.LockOwner.Node != "n2" || info.Primary != "n2" {
			t.Fatalf("after the restart: owner %s, lock owner %+v", info.Primary, info.LockOwner)
		}
	})

	t.Run("Delete", func(t *testing.T) {
		if _, stderr, err := cli(n1, "storage", "remove", "ceph1"); err == nil || !strings.Contains(stderr, "holds volumes r1") {
			t.Fatalf("remove a used storage: %v %s", err, stderr)
		}
		must(t, n1, "volume", "delete", "r1")
		if strings.Contains(rbdImages(t, ctx, c, ceph), " r1 ") {
			t.Fatal("image r1 left behind")
		}
		must(t, n1, "storage", "remove", "ceph1")
	})

	t.Run("KeyNotAtRest", func(t *testing.T) {
		forms := secretForms(key)
		for _, n := range c.Nodes {
			_ = filepath.WalkDir(n.Dir, func(path string, d fs.DirEntry, err error) error {
				if err != nil || d.IsDir() {
					return nil
				}
				data, err := os.ReadFile(path)
				if err != nil {
					return nil
				}
				for _, f := range forms {
					if strings.Contains(string(data), f) {
						t.Errorf("%s holds the cephx key (as %q)", path, f)
					}
				}
				return nil
			})
		}
	})
}
