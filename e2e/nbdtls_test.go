package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tandemhci/tandem/internal/adminclient"
	"github.com/tandemhci/tandem/internal/guest"
	"github.com/tandemhci/tandem/internal/testcluster"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// Issue 13, NBD: the TCP export is TLS only, with certificates from the
// cluster CA; an export certificate opens only its volumes; a non-member
// (the switch namespace) without one reaches nothing.

// nbdAddr is a node's TCP NBD export in these tests.
func nbdAddr(n *testcluster.Node) string { return n.IP + ":10809" }

// nbdsURI is a libnbd URI of export on n's TCP export with the client
// files in dir.
func nbdsURI(n *testcluster.Node, export, dir string) string {
	return fmt.Sprintf("nbds://%s/%s?tls-certificates=%s", nbdAddr(n), export, dir)
}

// qemuTLS opens export on n's TCP export with QEMU's tls-creds-x509.
func qemuTLS(n *testcluster.Node, export, dir string) []string {
	return []string{
		"--object", "tls-creds-x509,id=tls0,dir=" + dir + ",endpoint=client",
		"--image-opts", fmt.Sprintf("driver=nbd,host=%s,port=10809,export=%s,tls-creds=tls0", n.IP, export),
	}
}

// issueExportCert runs 'tandem volume export-cert' on n and returns the
// directory it wrote.
func issueExportCert(t *testing.T, ctx context.Context, td *testcluster.Tandem, n *testcluster.Node, name string, vols ...string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	args := []string{"volume", "export-cert", name, "--out", dir}
	for _, v := range vols {
		args = append(args, "--volume", v)
	}
	out, stderr, err := td.CLI(ctx, n, args...)
	if err != nil {
		t.Fatalf("export-cert: %v\n%s", err, stderr)
	}
	t.Logf("export-cert %s:\n%s", name, out)
	if fi, err := os.Stat(filepath.Join(dir, "client-key.pem")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("client-key.pem: %v %v", err, fi)
	}
	return dir
}

// strangerDirs are client directories with certificates the cluster CA
// did not sign: selfSigned holds a self-signed client certificate (libnbd
// presents it as is); otherCA a client certificate of a self-signed CA
// that its ca-cert.pem lists next to the cluster's, so that QEMU, which
// checks its own certificate against ca-cert.pem first, presents it too.
func strangerDirs(t *testing.T, caPEM []byte) (selfSigned, otherCA string) {
	t.Helper()
	newKey := func() *ecdsa.PrivateKey {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return key
	}
	sign := func(tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, signer *ecdsa.PrivateKey) []byte {
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	}
	leaf := func(serial int64) *x509.Certificate {
		return &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "intruder", OrganizationalUnit: []string{"export"}},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, BasicConstraintsValid: true,
		}
	}
	write := func(caPEM, certPEM []byte, key *ecdsa.PrivateKey) string {
		kd, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		for name, b := range map[string][]byte{"ca-cert.pem": caPEM, "client-cert.pem": certPEM,
			"client-key.pem": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd})} {
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	k1 := newKey()
	self := leaf(7)
	selfSigned = write(caPEM, sign(self, self, &k1.PublicKey, k1), k1)

	caKey, k2 := newKey(), newKey()
	ca := &x509.Certificate{SerialNumber: big.NewInt(8), Subject: pkix.Name{CommonName: "tandem CA nbdtls"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	caCertPEM := sign(ca, ca, &caKey.PublicKey, caKey)
	caCert, err := x509.ParseCertificate(mustPEM(t, caCertPEM))
	if err != nil {
		t.Fatal(err)
	}
	otherCA = write(append(append([]byte{}, caPEM...), caCertPEM...), sign(leaf(9), caCert, &k2.PublicKey, caKey), k2)
	return selfSigned, otherCA
}

func mustPEM(t *testing.T, b []byte) []byte {
	t.Helper()
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatal("no PEM block")
	}
	return blk.Bytes
}

// refusedFromSwitch runs argv in the switch namespace and fails the test
// unless it fails; the refusal must not tell a stranger the primary or
// the epoch.
func refusedFromSwitch(t *testing.T, ctx context.Context, c *testcluster.Cluster, what string, argv ...string) {
	t.Helper()
	out, err := c.ExecSwitch(ctx, argv...)
	if err == nil {
		t.Errorf("%s was not refused:\n%s", what, out)
		return
	}
	if s := string(out); strings.Contains(s, "unreachable") || strings.Contains(s, "Connection refused") {
		t.Errorf("%s failed for want of a network, not by refusal:\n%s", what, s)
	} else if t.Logf("%s refused: %s", what, firstLine(s)); strings.Contains(s, "epoch") || strings.Contains(s, "is not the primary") || strings.Contains(s, "export-size") {
		t.Errorf("%s: the refusal says too much:\n%s", what, s)
	}
}

// TestNBDExportTLS is the first acceptance point of issue 13's NBD part,
// against every node of a 3-node cluster with the TCP export on.
func TestNBDExportTLS(t *testing.T) {
	c, td, ctx := nbdVolCluster(t, "nbdtls")
	stranger, err := c.SwitchOnBackend()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the switch namespace is %s on the backend network, not a member", stranger)
	n1, n2, n3 := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	// va's primary is n1, vb's n2.
	volumeCmd(t, ctx, td, n1, "create", "va", "--size", "16M", "--replicas", "2", "--nodes", n1.Name+","+n2.Name)
	volumeCmd(t, ctx, td, n1, "create", "vb", "--size", "16M", "--replicas", "2", "--nodes", n2.Name+","+n3.Name)
	if v := volumeCmd(t, ctx, td, n1, "show", "va"); v.NbdTcp != "nbds://"+nbdAddr(n1)+"/va" {
		t.Errorf("va's TCP export URI: %q", v.NbdTcp)
	}
	dirA := issueExportCert(t, ctx, td, n1, "consumer-a", "va")
	caPEM, err := os.ReadFile(filepath.Join(dirA, "ca-cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	dirSelf, dirOther := strangerDirs(t, caPEM)

	// Strangers: no TLS, or a certificate the cluster CA did not sign, on
	// every node, for every volume, and for the export list.
	for _, n := range c.Nodes {
		for _, vol := range []string{"va", "vb"} {
			refusedFromSwitch(t, ctx, c, "nbdinfo without TLS on "+n.Name, "nbdinfo", fmt.Sprintf("nbd://%s/%s", nbdAddr(n), vol))
			refusedFromSwitch(t, ctx, c, "qemu-io write without TLS on "+n.Name, "qemu-io", "-f", "raw", "-c", "write -P 0x66 0 4k", fmt.Sprintf("nbd://%s/%s", nbdAddr(n), vol))
			refusedFromSwitch(t, ctx, c, "nbdinfo with a self-signed certificate on "+n.Name, "nbdinfo", nbdsURI(n, vol, dirSelf))
			refusedFromSwitch(t, ctx, c, "nbdinfo with a certificate of a self-signed CA on "+n.Name, "nbdinfo", nbdsURI(n, vol, dirOther))
			refusedFromSwitch(t, ctx, c, "qemu-io with a certificate of a self-signed CA on "+n.Name,
				append([]string{"qemu-io"}, append(qemuTLS(n, vol, dirOther), "-c", "write -P 0x66 0 4k")...)...)
		}
		refusedFromSwitch(t, ctx, c, "nbdinfo --list without TLS on "+n.Name, "nbdinfo", "--list", "nbd://"+nbdAddr(n))
		refusedFromSwitch(t, ctx, c, "nbdinfo --list with a self-signed certificate on "+n.Name, "nbdinfo", "--list", nbdsURI(n, "", dirSelf))
	}

	// Consumer A: va is readable and writable, with qemu-io and nbdinfo.
	write := append([]string{"qemu-io"}, append(qemuTLS(n1, "va", dirA), "-c", "write -P 0x5a 64k 1M", "-c", "flush")...)
	if out, err := c.ExecSwitch(ctx, write...); err != nil {
		t.Fatalf("qemu-io write with consumer A's certificate: %v\n%s", err, out)
	}
	read := append([]string{"qemu-io"}, append(qemuTLS(n1, "va", dirA), "-c", "read -P 0x5a 64k 1M", "-c", "read -P 0 0 64k")...)
	if out, err := c.ExecSwitch(ctx, read...); err != nil || strings.Contains(string(out), "verification failed") {
		t.Fatalf("qemu-io read back: %v\n%s", err, out)
	}
	out, err := c.ExecSwitch(ctx, "nbdinfo", "--json", nbdsURI(n1, "va", dirA))
	if err != nil {
		t.Fatalf("nbdinfo with consumer A's certificate: %v\n%s", err, out)
	}
	var info struct {
		TLS     bool `json:"TLS"`
		Exports []struct {
			Name string `json:"export-name"`
			Size int64  `json:"export-size"`
		} `json:"exports"`
	}
	if err := json.Unmarshal(out, &info); err != nil || !info.TLS || len(info.Exports) != 1 || info.Exports[0].Size != 16<<20 {
		t.Fatalf("nbdinfo: %v\n%s", err, out)
	}
	// The write went through the replicated primary: the unix socket
	// (the VMs' path) reads it back.
	runTool(t, ctx, "qemu-io", "-f", "raw", "-c", "read -P 0x5a 64k 1M", nbdURI(td, n1, "va"))

	// The export list shows A only its volume, wherever it asks.
	out, err = c.ExecSwitch(ctx, "nbdinfo", "--list", "--json", nbdsURI(n1, "", dirA))
	if err != nil || !strings.Contains(string(out), `"va"`) || strings.Contains(string(out), `"vb"`) {
		t.Errorf("nbdinfo --list on %s with A's certificate: %v\n%s", n1.Name, err, out)
	}
	if out, err := c.ExecSwitch(ctx, "nbdinfo", "--list", "--json", nbdsURI(n2, "", dirA)); strings.Contains(string(out), `"vb"`) {
		t.Errorf("nbdinfo --list on %s lists vb to A: %v\n%s", n2.Name, err, out)
	}
	// Volume B is refused to A, on its primary and elsewhere.
	for _, n := range c.Nodes {
		if out, err := c.ExecSwitch(ctx, "nbdinfo", nbdsURI(n, "vb", dirA)); err == nil {
			t.Errorf("nbdinfo vb on %s with A's certificate:\n%s", n.Name, out)
		}
		refusedFromSwitch(t, ctx, c, "qemu-io write of vb on "+n.Name+" with A's certificate",
			append([]string{"qemu-io"}, append(qemuTLS(n, "vb", dirA), "-c", "write -P 0x66 0 4k")...)...)
	}
	runTool(t, ctx, "qemu-io", "-f", "raw", "-c", "read -P 0 0 16M", nbdURI(td, n2, "vb"))

	// Listed, then revoked: refused at the handshake by every node.
	out2, _, err := td.CLI(ctx, n2, "volume", "export-cert", "list", "--output", "json")
	var list tandemv1.ListExportCertsResponse
	if err != nil || adminclient.UnmarshalJSON([]byte(out2), &list) != nil || len(list.Certs) != 1 || list.Certs[0].Name != "consumer-a" || list.Certs[0].Volumes[0] != "va" {
		t.Fatalf("export-cert list: %v\n%s", err, out2)
	}
	if _, stderr, err := td.CLI(ctx, n2, "volume", "export-cert", "revoke", "consumer-a"); err != nil {
		t.Fatalf("revoke: %v\n%s", err, stderr)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := c.ExecSwitch(ctx, "nbdinfo", nbdsURI(n1, "va", dirA))
		if err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a revoked export certificate still opens va")
		}
		time.Sleep(200 * time.Millisecond)
	}
	out2, _, _ = td.CLI(ctx, n3, "volume", "export-cert", "list")
	if !strings.Contains(out2, "revoked") {
		t.Errorf("export-cert list after revoke:\n%s", out2)
	}
}

// TestNBDTLSClientNoHandover is the second acceptance point: during an
// open migration window, a write from an NBD client other than the
// target's own QEMU (here qemu-io over TLS with a valid export
// certificate, from a non-member) fails and does not hand the volume
// over; the migration itself then completes.
func TestNBDTLSClientNoHandover(t *testing.T) {
	vc := newVMClusterWith(t, vmClusterOpts{nbd: true})
	c, td, ctx := vc.c, vc.td, vc.ctx
	if _, err := c.SwitchOnBackend(); err != nil {
		t.Fatal(err)
	}
	n1, n2 := c.Nodes[0], c.Nodes[1]
	vip := strings.TrimSuffix(c.ReceiverIP, ".1") + ".52"
	volumeCmd(t, ctx, td, n1, "create", "hd", "--size", "64M", "--replicas", "2", "--nodes", n1.Name+","+n2.Name)
	dir := issueExportCert(t, ctx, td, n1, "mig-reader", "hd")
	vc.vm(t, n1, "create", "h1", "--memory", "192M", "--disk-volume", "hd", "--node", n1.Name,
		"--kernel", vc.img.Kernel, "--initrd", vc.img.Initrd, "--cmdline", vc.cmdline(vip), "--nic", c.VMBridge, "--start")
	mark := vc.guestProgress(t, guest.Datagram{}, 3*time.Minute)
	before := volumeCmd(t, ctx, td, n1, "show", "hd")

	logs := vc.consoleSizes()
	res := make(chan error, 1)
	go func() {
		// A slow stream keeps the window open while the stranger writes;
		// the CLI runs without td.CLI's 30 s bound, as the migration
		// must complete.
		out, err := c.Exec(ctx, n1, filepath.Join(td.Bin, "tandem"), "--data-dir", td.DataDir(n1), "vm", "migrate", "h1", "--to", n2.Name, "--bandwidth-mibps", "4")
		if err != nil {
			err = fmt.Errorf("%w: %s", err, out)
		}
		res <- err
	}()
	waitVolume(t, ctx, td, n1, "hd", time.Minute, func(v *tandemv1.VolumeInfo) bool { return v.MigrationTarget == n2.Name })

	// The target serves the window to a TLS client read-only: reads work,
	// a write is refused.
	out, err := c.ExecSwitch(ctx, append([]string{"qemu-io"}, append(qemuTLS(n2, "hd", dir), "-c", "write -P 0x77 1M 4k")...)...)
	if err == nil && !strings.Contains(string(out), "failed") {
		t.Fatalf("a TLS client wrote to the migration target:\n%s", out)
	}
	t.Logf("write during the window refused: %s", strings.TrimSpace(string(out)))
	if out, err := c.ExecSwitch(ctx, append([]string{"qemu-io", "-r"}, append(qemuTLS(n2, "hd", dir), "-c", "read 0 64k")...)...); err != nil {
		t.Errorf("read from the window: %v\n%s", err, out)
	}
	// Still the source's volume, at the same epoch, with the window open:
	// the stranger's write happened inside the window and handed nothing over.
	v := volumeCmd(t, ctx, td, n1, "show", "hd")
	if v.Primary != n1.Name || v.Epoch != before.Epoch || v.MigrationTarget != n2.Name {
		t.Fatalf("after the stranger's write: primary %s epoch %d (was %d) window %q", v.Primary, v.Epoch, before.Epoch, v.MigrationTarget)
	}
	if err := <-res; err != nil {
		t.Fatalf("migration: %v", err)
	}
	returned, _, _ := vc.rx.Last()
	// A guest kernel crash at the switchover (QEMU TCG, see migrateLive)
	// restarts it on n2; anything else must go on in the same boot.
	if after, restarted := vc.movedOn(t, logs, returned, "h1", n2.Name, "migration"); !restarted && after.Boot != mark.Boot {
		t.Fatal("guest rebooted")
	}
	if v := volumeCmd(t, ctx, td, n1, "show", "hd"); v.Primary != n2.Name || v.Epoch != before.Epoch+1 {
		t.Fatalf("after the migration: primary %s epoch %d", v.Primary, v.Epoch)
	}
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}
