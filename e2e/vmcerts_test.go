package e2e

import (
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tandemhci/tandem/internal/guest"
	"github.com/tandemhci/tandem/internal/pki"
)

// TestVMThroughRenewalAndRotation: a VM on a 3-replica disk keeps running
// in the same boot, its disk writes acknowledged, while every node renews
// its certificate (1-minute lifetime) and then while the cluster CA is
// rotated; afterwards every libvirtd took the re-issued certificates and
// the new CA, and accepts the other nodes over qemu+tls.
func TestVMThroughRenewalAndRotation(t *testing.T) {
	vc := newVMCluster(t)
	c, td, ctx := vc.c, vc.td, vc.ctx
	n1 := c.Nodes[0]
	vip := strings.TrimSuffix(c.ReceiverIP, ".1") + ".52"
	vc.vm(t, n1, "create", "cg", "--memory", "192M", "--disk", "64M,replicas=3", "--node", n1.Name,
		"--kernel", vc.img.Kernel, "--initrd", vc.img.Initrd, "--cmdline", vc.cmdline(vip), "--nic", c.VMBridge, "--start")
	mark := vc.guestProgress(t, guest.Datagram{}, 3*time.Minute)

	waitRenewedTwice(ctx, t, c, td, n1)
	mark = vc.guestProgress(t, mark, 2*time.Minute)
	t.Logf("after two renewals on every node: guest seq %d, %d disk writes acknowledged, same boot", mark.Seq, mark.Acked)

	// Back to a long lifetime, so renewals do not overlap the rotation.
	if _, _, err := td.CLI(ctx, n1, "cluster", "config", "set", "pki.cert_lifetime=8760h"); err != nil {
		t.Fatal(err)
	}
	out, stderr, err := td.CLI(ctx, n1, "cluster", "rotate-ca")
	if err != nil {
		t.Fatalf("rotate-ca: %v\n%s%s", err, out, stderr)
	}
	mark = vc.guestProgress(t, mark, 2*time.Minute)
	t.Logf("after rotate-ca: guest seq %d, %d disk writes acknowledged, same boot", mark.Seq, mark.Acked)

	// libvirtd follows: every node's libvirt files hold the new CA alone,
	// and each libvirtd accepts the others' re-issued client certificates
	// over qemu+tls (what a live migration's connection does; the
	// migration itself is in the VM tests, where a TCG guest may crash at
	// the switchover).
	fp := strings.TrimSpace(out[strings.LastIndex(out, " ")+1:])
	for _, n := range c.Nodes {
		b, err := os.ReadFile(filepath.Join(td.DataDir(n), "libvirt-pki", "cacert.pem"))
		if err != nil {
			t.Fatal(err)
		}
		got, err := pki.CAFingerprint(b)
		if err != nil || hex.EncodeToString(got[:]) != fp || strings.Count(string(b), "BEGIN CERTIFICATE") != 1 {
			t.Fatalf("%s's libvirt CA is not the new CA %s alone (%v)", n.Name, fp, err)
		}
	}
	for i, src := range c.Nodes {
		dst := c.Nodes[(i+1)%len(c.Nodes)]
		uri := "qemu+tls://" + dst.IP + "/system?pkipath=" + filepath.Join(td.DataDir(src), "libvirt-pki")
		if out, err := c.Exec(ctx, src, "virsh", "-c", uri, "list", "--name"); err != nil {
			t.Errorf("%s -> %s over qemu+tls after the rotation: %v\n%s", src.Name, dst.Name, err, out)
		}
	}
}
