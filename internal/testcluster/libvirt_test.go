package testcluster

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tandemhci/tandem/compute"
	"github.com/tandemhci/tandem/internal/pki"
)

func dialLibvirtd(t *testing.T, ctx context.Context, lv *Libvirtd) *compute.Driver {
	t.Helper()
	log := slog.New(slog.NewTextHandler(t.Output(), nil)).With("node", lv.Node.Name)
	d, err := compute.Dial(ctx, lv.Socket, compute.DefaultURI, compute.WithLogger(log))
	if err != nil {
		t.Fatalf("Dial libvirtd on %s: %v", lv.Node.Name, err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

func startLibvirtd(t *testing.T, ctx context.Context, c *Cluster, n *Node) *Libvirtd {
	t.Helper()
	lv, err := c.StartLibvirtd(ctx, n)
	if err != nil {
		t.Fatal(err)
	}
	return lv
}

// libvirtdPair starts a two-node cluster (parallel to other tests) with
// libvirtd running and dialled on both nodes; ctx ends with the test.
func libvirtdPair(t *testing.T) (ctx context.Context, c *Cluster, lv1, lv2 *Libvirtd, d1, d2 *compute.Driver) {
	t.Helper()
	return libvirtdPairWith(t, LibvirtdOptions{})
}

// libvirtdPairWith is libvirtdPair with options for both libvirtds.
func libvirtdPairWith(t *testing.T, o LibvirtdOptions) (ctx context.Context, c *Cluster, lv1, lv2 *Libvirtd, d1, d2 *compute.Driver) {
	t.Helper()
	RequireLibvirtd(t)
	t.Parallel()
	c = New(t, Options{Nodes: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	start := func(n *Node) *Libvirtd {
		lv, err := c.StartLibvirtdWith(ctx, n, o)
		if err != nil {
			t.Fatal(err)
		}
		return lv
	}
	lv1, lv2 = start(c.Node("n1")), start(c.Node("n2"))
	d1, d2 = dialLibvirtd(t, ctx, lv1), dialLibvirtd(t, ctx, lv2)
	return ctx, c, lv1, lv2, d1, d2
}

func qemuLogTail(lv *Libvirtd, dom string) string {
	return logTail(lv.QEMULog(dom), 20)
}

// TestLibvirtdMigrate migrates with QEMU's stream over TLS too, which
// StreamTLS makes mandatory (migrate_tls_force).
func TestLibvirtdMigrate(t *testing.T) {
	ctx, c, lv1, lv2, d1, d2 := libvirtdPairWith(t, LibvirtdOptions{StreamTLS: true})
	n1, n2 := lv1.Node, lv2.Node

	total, free, err := d1.NodeMemory(ctx)
	if err != nil || total == 0 || free == 0 || free > total {
		t.Fatalf("NodeMemory = %d, %d MiB, %v", total, free, err)
	}
	t.Logf("n1 memory: %d MiB total, %d MiB free", total, free)

	const name = "mig1"
	spec := compute.VMSpec{
		Name:      name,
		VCPUs:     1,
		MemoryMiB: 64,
		Diskless:  true,
		NICs:      []compute.NICSpec{{Bridge: c.VMBridge, MAC: "52:54:00:00:00:01"}},
		SerialLog: filepath.Join(n1.Dir, "mig1-serial.log"),
	}
	// The destination runs it with host-side paths of its own.
	destSpec := spec
	destSpec.SerialLog = filepath.Join(n2.Dir, "mig1-serial.log")
	if err := d1.Define(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if err := d1.Start(ctx, name); err != nil {
		t.Fatalf("Start: %v\n%s", err, qemuLogTail(lv1, name))
	}
	if running, err := d1.Running(ctx); err != nil || !slices.Contains(running, name) {
		t.Fatalf("Running on n1 = %v, %v", running, err)
	}

	// migrate_tls_force: QEMU's stream never goes in clear.
	if _, err := d1.Migrate(ctx, name, lv2.MigrateURI(lv1), compute.MigrateOptions{}); err == nil || !strings.Contains(err.Error(), "TLS") {
		t.Fatalf("Migrate without TLS for the stream: %v, want a refusal naming TLS", err)
	} else {
		t.Logf("without TLS for the stream: %v", err)
	}
	var samples int
	res, err := d1.Migrate(ctx, name, lv2.MigrateURI(lv1), compute.MigrateOptions{
		TLS:         true,
		MaxDowntime: 300 * time.Millisecond,
		Dest:        d2,
		DestSpec:    &destSpec,
		Progress: func(p compute.MigrateProgress) {
			samples++
			t.Logf("progress: %v elapsed, memory %d/%d bytes, %d remaining", p.Elapsed, p.MemoryProcessed, p.MemoryTotal, p.MemoryRemaining)
		},
	})
	if err != nil {
		t.Fatalf("Migrate: %v\nQEMU on n1:\n%s\nQEMU on n2:\n%s", err, qemuLogTail(lv1, name), qemuLogTail(lv2, name))
	}
	t.Logf("migration: total %v, downtime %v, %d bytes (stats from %s), %d progress samples",
		res.Total, res.Downtime, res.DataTransferred, res.StatsFrom, samples)
	if res.Total <= 0 {
		t.Errorf("MigrateResult.Total = %v", res.Total)
	}

	if st, err := d2.State(ctx, name); err != nil || st != compute.StateRunning {
		t.Fatalf("on n2: state %v, %v", st, err)
	}
	// QEMU on n2 opened the serial log DestSpec named.
	if _, err := os.Stat(destSpec.SerialLog); err != nil {
		t.Errorf("destination serial log: %v", err)
	}
	if running, err := d1.Running(ctx); err != nil || slices.Contains(running, name) {
		t.Fatalf("Running on n1 after migration = %v, %v", running, err)
	}
	// MigrateUndefineSource: n1 forgets the domain; n2 keeps it defined.
	if _, err := d1.State(ctx, name); !compute.IsNotFoundErr(err) {
		t.Fatalf("n1 still knows %s after migration: %v", name, err)
	}
	list, err := d2.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if i := slices.IndexFunc(list, func(di compute.DomainInfo) bool { return di.Name == name }); i < 0 {
		t.Fatalf("n2 list %+v lacks %s", list, name)
	}
	// And back, without a destination Driver: the numbers then come from
	// the source if it still has them, else from Migrate's own clock.
	back, err := d2.Migrate(ctx, name, lv1.MigrateURI(lv2), compute.MigrateOptions{TLS: true})
	if err != nil {
		t.Fatalf("Migrate back: %v\nQEMU on n2:\n%s\nQEMU on n1:\n%s", err, qemuLogTail(lv2, name), qemuLogTail(lv1, name))
	}
	t.Logf("migration back: total %v, downtime %v, %d bytes (stats from %s)", back.Total, back.Downtime, back.DataTransferred, back.StatsFrom)
	if st, err := d1.State(ctx, name); err != nil || st != compute.StateRunning {
		t.Fatalf("on n1 after migrating back: state %v, %v", st, err)
	}
	if _, err := d2.State(ctx, name); !compute.IsNotFoundErr(err) {
		t.Fatalf("n2 still knows %s after migrating back: %v", name, err)
	}
	if _, err := d2.Migrate(ctx, name, lv1.MigrateURI(lv2), compute.MigrateOptions{TLS: true}); !compute.IsNotFoundErr(err) {
		t.Errorf("Migrate of a domain n2 no longer has: %v, want not found", err)
	}

	// n2's QEMU is gone: only libvirtd is left in its namespace.
	for {
		pids, err := c.nsPids(n2.NS)
		if err != nil {
			t.Fatal(err)
		}
		if len(pids) == 1 && pids[0] == lv2.Proc.PID() {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("processes on n2 after migration: %v, want only libvirtd %d", pids, lv2.Proc.PID())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func TestLibvirtdKillRestart(t *testing.T) {
	RequireLibvirtd(t)
	t.Parallel()
	c := New(t, Options{Nodes: 1})
	n1 := c.Node("n1")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	lv := startLibvirtd(t, ctx, c, n1)
	d := dialLibvirtd(t, ctx, lv)
	const name = "vm1"
	spec := compute.VMSpec{Name: name, VCPUs: 1, MemoryMiB: 64, Diskless: true,
		NICs: []compute.NICSpec{{Bridge: c.VMBridge}}}
	if err := d.Define(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if err := d.Start(ctx, name); err != nil {
		t.Fatalf("Start: %v\n%s", err, qemuLogTail(lv, name))
	}
	_ = d.Close()

	// A daemon restart alone leaves the guest running, and the new
	// libvirtd reattaches to it (its /run survives, as on a real host).
	if err := lv.Proc.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	lv = startLibvirtd(t, ctx, c, n1)
	d = dialLibvirtd(t, ctx, lv)
	if st, err := d.State(ctx, name); err != nil || st != compute.StateRunning {
		t.Fatalf("after a libvirtd restart: state %v, %v\n%s", st, err, c.LogTail(n1, LibvirtdName, 20))
	}
	_ = d.Close()

	// A host crash takes libvirtd and its QEMU down.
	c.Kill(n1)
	if lv.Proc.Alive() {
		t.Fatal("libvirtd alive after Kill")
	}
	if pids, err := c.nsPids(n1.NS); err != nil || len(pids) != 0 {
		t.Fatalf("processes left on n1 after Kill: %v %v", pids, err)
	}

	lv2 := startLibvirtd(t, ctx, c, n1)
	if lv2.Proc.PID() == lv.Proc.PID() {
		t.Fatal("same pid after restart")
	}
	d2 := dialLibvirtd(t, ctx, lv2)
	// The persistent definition survived the "reboot"; the guest did not.
	if st, err := d2.State(ctx, name); err != nil || st != compute.StateShutOff {
		t.Fatalf("after restart: state %v, %v", st, err)
	}
	if err := d2.Start(ctx, name); err != nil {
		t.Fatalf("Start after restart: %v\n%s", err, qemuLogTail(lv2, name))
	}
	if err := d2.Destroy(ctx, name); err != nil {
		t.Fatal(err)
	}
	// A clean stop works too.
	if err := lv2.Proc.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if _, err := os.Stat(lv2.Socket); err == nil {
		t.Logf("socket %s left behind after stop (harmless: removed on start)", lv2.Socket)
	}
}

// TestLibvirtdMigrateCancel cancels a bandwidth-capped migration once data
// flows: the job is aborted and the guest keeps running on the source.
func TestLibvirtdMigrateCancel(t *testing.T) {
	ctx, _, lv1, lv2, d1, d2 := libvirtdPair(t)
	const name = "cancel1"
	spec := compute.VMSpec{Name: name, VCPUs: 1, MemoryMiB: 64, Diskless: true}
	if err := d1.Define(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if err := d1.Start(ctx, name); err != nil {
		t.Fatalf("Start: %v\n%s", err, qemuLogTail(lv1, name))
	}

	// Cancelled from the progress callback, i.e. relative to the
	// migration's own progress, not to the clock: at 1 MiB/s the guest's
	// state (over 1 MiB) is still in flight when the first bytes show.
	mctx, mcancel := context.WithCancel(ctx)
	defer mcancel()
	_, err := d1.Migrate(mctx, name, lv2.MigrateURI(lv1), compute.MigrateOptions{
		TLS:            true,
		BandwidthMiBps: 1,
		Progress: func(p compute.MigrateProgress) {
			if p.DataProcessed > 0 {
				mcancel()
			}
		},
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Migrate: %v, want context.Canceled", err)
	}
	t.Logf("cancelled migration: %v", err)
	if st, err := d1.State(ctx, name); err != nil || st != compute.StateRunning {
		t.Fatalf("on n1 after cancel: state %v, %v", st, err)
	}
	// The destination cleans up its half asynchronously once the source
	// aborts, so wait for the domain to disappear there.
	for {
		running, err := d2.Running(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(running, name) {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("n2 still runs %s after the aborted migration", name)
		case <-time.After(50 * time.Millisecond):
		}
	}
	// The guest can still migrate afterwards.
	if _, err := d1.Migrate(ctx, name, lv2.MigrateURI(lv1), compute.MigrateOptions{TLS: true}); err != nil {
		t.Fatalf("Migrate after an aborted one: %v", err)
	}
	if st, err := d2.State(ctx, name); err != nil || st != compute.StateRunning {
		t.Fatalf("on n2: state %v, %v", st, err)
	}
}

// TestVMNetwork checks the VM network end to end without guests: an
// address on a host's vmbr0 stands in for a guest.
func TestVMNetwork(t *testing.T) {
	c := newParallel(t, Options{Nodes: 2})
	n1, n2 := c.Node("n1"), c.Node("n2")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if c.VMBridge != "vmbr0" || c.ReceiverIP != "10.98.0.1" || c.VMSubnet != "10.98.0.0/24" {
		t.Fatalf("VM network = %s %s %s", c.VMBridge, c.ReceiverIP, c.VMSubnet)
	}
	out, err := c.ExecSwitch(ctx, "ip", "-4", "-o", "addr", "show", "dev", "br1")
	if err != nil || !strings.Contains(string(out), "inet 10.98.0.1/24") {
		t.Fatalf("switch br1: %s %v", out, err)
	}
	for _, n := range c.Nodes {
		out, err := c.Exec(ctx, n, "ip", "-o", "link", "show", "master", c.VMBridge)
		if err != nil || !strings.Contains(string(out), "vmup@") {
			t.Fatalf("%s: vmbr0 ports: %s %v", n.Name, out, err)
		}
	}

	conn, err := c.ListenUDPOnSwitch(c.ReceiverIP + ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	port := conn.LocalAddr().(*net.UDPAddr).Port
	send := func(n *Node, msg string) {
		t.Helper()
		// bash's /dev/udp: no helper binary needed.
		cmd := fmt.Sprintf("echo %s >/dev/udp/%s/%d", msg, c.ReceiverIP, port)
		if _, err := c.Exec(ctx, n, "bash", "-c", cmd); err != nil {
			t.Fatal(err)
		}
	}
	recv := func() string {
		t.Helper()
		buf := make([]byte, 100)
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		k, _, err := conn.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("receive on switch: %v", err)
		}
		return strings.TrimSpace(string(buf[:k]))
	}
	// The same "guest" address on n1, then on n2: what migration does.
	for _, n := range []*Node{n1, n2} {
		if _, err := c.Exec(ctx, n, "ip", "addr", "add", "10.98.0.50/24", "dev", c.VMBridge); err != nil {
			t.Fatal(err)
		}
		send(n, "from-"+n.Name)
		if got := recv(); got != "from-"+n.Name {
			t.Fatalf("received %q, want from-%s", got, n.Name)
		}
		if _, err := c.Exec(ctx, n, "ip", "addr", "del", "10.98.0.50/24", "dev", c.VMBridge); err != nil {
			t.Fatal(err)
		}
	}

	// IsolateVM cuts only the VM uplink: what is sent meanwhile is lost,
	// and the first datagram after HealVM is the next one to arrive.
	if _, err := c.Exec(ctx, n1, "ip", "addr", "add", "10.98.0.51/24", "dev", c.VMBridge); err != nil {
		t.Fatal(err)
	}
	// Resolve the receiver's MAC first, or the kernel would queue "lost"
	// for ARP and deliver it after HealVM.
	send(n1, "warm")
	if got := recv(); got != "warm" {
		t.Fatalf("received %q, want warm", got)
	}
	c.IsolateVM(n1)
	send(n1, "lost")
	c.HealVM(n1)
	// The healed link may need a moment to carry frames again: resend
	// until one arrives; "lost" must never be what arrives.
	got := ""
	buf := make([]byte, 100)
	for i := 0; i < 20 && got == ""; i++ {
		send(n1, "after")
		_ = conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		if k, _, err := conn.ReadFromUDP(buf); err == nil {
			got = strings.TrimSpace(string(buf[:k]))
		}
	}
	if got != "after" {
		t.Fatalf("received %q after HealVM, want \"after\"", got)
	}

	// A process on the switch receives too.
	p, err := c.StartOnSwitch("sleeper", []string{"sleep", "300"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.Node.NS != c.swNS {
		t.Errorf("StartOnSwitch ran in %s", p.Node.NS)
	}
}

// TestLibvirtdTLS: from the switch (not a member), plain TCP finds no
// listener and TLS without a certificate signed by the cluster CA is
// refused; a host with its node certificate gets in; a certificate from
// the right CA without OU "node" is refused by tls_allowed_dn_list; after
// new files and a reload (what tandemd does on create, join and renewal),
// the old CA's certificates are refused.
func TestLibvirtdTLS(t *testing.T) {
	ctx, c, lv1, lv2, _, _ := libvirtdPair(t)
	n1 := lv1.Node
	virsh := func(run func(context.Context, ...string) ([]byte, error), uri string) (string, error) {
		out, err := run(ctx, "virsh", "-c", uri, "list", "--name")
		return string(out), err
	}
	if _, err := c.SwitchOnBackend(); err != nil {
		t.Fatal(err)
	}
	onSwitch := func(ctx context.Context, argv ...string) ([]byte, error) { return c.ExecSwitch(ctx, argv...) }
	onN2 := func(ctx context.Context, argv ...string) ([]byte, error) { return c.Exec(ctx, lv2.Node, argv...) }

	// Plain TCP: libvirtd does not listen there.
	if out, err := virsh(onSwitch, "qemu+tcp://"+n1.IP+"/system"); err == nil || !strings.Contains(out, "Connection refused") {
		t.Fatalf("qemu+tcp from the switch: err %v\n%s", err, out)
	}
	// TLS without a client certificate: an empty pkipath with only the CA.
	dir := t.TempDir()
	ca, err := os.ReadFile(filepath.Join(lv1.PKIDir, "cacert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	noCert := filepath.Join(dir, "nocert")
	if err := os.MkdirAll(noCert, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(noCert, "cacert.pem"), ca, 0o644); err != nil {
		t.Fatal(err)
	}
	uri := func(pkipath string) string { return compute.WithPKIPath(lv1.URI, pkipath) }
	if out, err := virsh(onSwitch, uri(noCert)); err == nil {
		t.Fatalf("qemu+tls without a client certificate was accepted:\n%s", out)
	} else {
		t.Logf("no client certificate: %v: %s", err, strings.TrimSpace(out))
	}
	// A self-signed "node" certificate: another CA, same names.
	selfSigned := filepath.Join(dir, "self")
	writePKI(t, selfSigned, n1.Name, "node", n1.IP, ca)
	if out, err := virsh(onSwitch, uri(selfSigned)); err == nil {
		t.Fatalf("qemu+tls with a self-signed client certificate was accepted:\n%s", out)
	} else {
		t.Logf("self-signed client certificate: %v: %s", err, strings.TrimSpace(out))
	}
	// n2 with its node certificate (same CA) gets in.
	if out, err := virsh(onN2, lv1.MigrateURI(lv2)); err != nil {
		t.Fatalf("qemu+tls from n2 with its node certificate: %v\n%s", err, out)
	}
	// A certificate from the cluster CA that is not a node's (OU admin,
	// with the key usage libvirt wants, unlike pki.IssueAdmin's).
	ca2, err := c.harnessCA()
	if err != nil {
		t.Fatal(err)
	}
	adm := filepath.Join(dir, "admin")
	writeSigned(t, ca2, adm, &x509.Certificate{
		Subject:     pkix.Name{CommonName: n1.Name, OrganizationalUnit: []string{"admin"}},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if out, err := virsh(onSwitch, uri(adm)); err == nil {
		t.Fatalf("qemu+tls with an admin certificate of the cluster CA was accepted:\n%s", out)
	} else {
		t.Logf("admin certificate: %v: %s", err, strings.TrimSpace(out))
	}
	if log, err := os.ReadFile(logPath(n1, LibvirtdName)); err != nil || !strings.Contains(string(log), "tls_allowed_dn_list") {
		t.Fatalf("libvirtd's log does not say the admin certificate's DN was refused (%v):\n%s", err, c.LogTail(n1, LibvirtdName, 20))
	}

	// New identity for n1 from another CA, reloaded without a restart: the
	// old CA's certificates (n2's) are refused, the new ones accepted.
	pid := lv1.Proc.PID()
	writePKI(t, lv1.PKIDir, n1.Name, "node", n1.IP, nil)
	if err := compute.ReloadTLS(ctx, lv1.Socket); err != nil {
		t.Fatal(err)
	}
	if lv1.Proc.PID() != pid || !lv1.Proc.Alive() {
		t.Fatal("libvirtd restarted")
	}
	if out, err := virsh(onN2, lv1.MigrateURI(lv2)); err == nil {
		t.Fatalf("after the reload, n2's certificate of the old CA was accepted:\n%s", out)
	}
	if out, err := virsh(onN2, uri(lv1.PKIDir)); err != nil {
		t.Fatalf("after the reload, the new certificate was refused: %v\n%s", err, out)
	}
}

// writePKI writes a client/server file set for CN cn, OU ou and IP SAN ip
// into dir, signed by a fresh CA; caExtra, if set, is trusted too (a
// client that trusts the server it talks to; libvirt's client also checks
// its own certificate against cacert.pem).
func writePKI(t *testing.T, dir, cn, ou, ip string, caExtra []byte) {
	t.Helper()
	ca, err := pki.NewCA("other", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.NewCSR(key, cn)
	if err != nil {
		t.Fatal(err)
	}
	if ou != pki.OUNode {
		t.Fatalf("writePKI: only node certificates, not OU %q", ou)
	}
	cert, err := ca.SignNode(csr, cn, []net.IP{net.ParseIP(ip)}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	trust := append(ca.CertPEM(), caExtra...)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"cacert.pem": trust, "servercert.pem": cert, "serverkey.pem": key, "clientcert.pem": cert, "clientkey.pem": key} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// writeSigned writes cacert.pem, clientcert.pem and clientkey.pem into dir:
// tmpl signed by ca for a fresh key.
func writeSigned(t *testing.T, ca *pki.CA, dir string, tmpl *x509.Certificate) {
	t.Helper()
	caCert, err := x509.ParseCertificate(mustPEM(t, ca.CertPEM()))
	if err != nil {
		t.Fatal(err)
	}
	caKeyPEM, err := ca.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	caKey, err := x509.ParsePKCS8PrivateKey(mustPEM(t, caKeyPEM))
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = big.NewInt(time.Now().UnixNano())
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{
		"cacert.pem":     ca.CertPEM(),
		"clientcert.pem": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		"clientkey.pem":  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func mustPEM(t *testing.T, b []byte) []byte {
	t.Helper()
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatal("no PEM block")
	}
	return blk.Bytes
}
