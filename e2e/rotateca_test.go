package e2e

import (
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tandemhci/tandem/internal/nbdclient"
	"github.com/tandemhci/tandem/internal/pki"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// TestRotateCA: `tandem cluster rotate-ca` replaces the CA while writes go
// to a replicated volume, none failing; afterwards every member trusts the
// new CA alone, a certificate for CN=n1 signed with the old CA key is
// refused on every port, and a restarted member is accepted on its
// re-issued certificate.
func TestRotateCA(t *testing.T) {
	c, td, ctx := volCluster(t)
	n1, n2, n3 := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	volumeCmd(t, ctx, td, n1, "create", "rot", "--size", "128M", "--replicas", "2", "--nodes", "n1,n2")
	client, err := nbdclient.Dial(ctx, "unix", nbdSocket(td, n1), "rot")
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	read := func(parts ...string) []byte {
		b, err := os.ReadFile(filepath.Join(parts...))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	oldCA, oldKey := read(td.DataDir(n1), "tls", "ca.crt"), read(td.DataDir(n1), "tls", "ca.key")

	stop := make(chan struct{})
	done := writeUntilStopped(ctx, client, 128<<20, stop)
	time.Sleep(2 * time.Second) // writes under way
	out, stderr, err := td.CLI(ctx, n1, "cluster", "rotate-ca")
	close(stop)
	r := <-done
	if err != nil {
		t.Fatalf("rotate-ca: %v\n%s%s", err, out, stderr)
	}
	if r[1] > 0 || r[0] == 0 {
		t.Fatalf("writes during the rotation: %d acknowledged, %d failed", r[0], r[1])
	}
	t.Logf("rotate-ca:\n%s%s\n%d writes acknowledged during it, none failed", stderr, out, r[0])
	fp := strings.TrimSpace(out[strings.LastIndex(out, " ")+1:])
	for _, n := range c.Nodes {
		got, err := pki.CAFingerprint(read(td.DataDir(n), "tls", "ca.crt"))
		if err != nil {
			t.Fatal(err)
		}
		if hex.EncodeToString(got[:]) != fp || strings.Count(string(read(td.DataDir(n), "tls", "ca.crt")), "BEGIN CERTIFICATE") != 1 {
			t.Fatalf("%s does not trust the new CA %s alone", n.Name, fp)
		}
	}
	waitVolume(t, ctx, td, n1, "rot", 60*time.Second, func(v *tandemv1.VolumeInfo) bool {
		return replicaState(v, "n2").State == tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE
	})

	// A certificate for n1 signed with the old CA key: refused everywhere.
	old, err := pki.LoadCA(oldCA, oldKey)
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.NewCSR(key, "n1")
	if err != nil {
		t.Fatal(err)
	}
	forged, err := old.SignNode(csr, "n1", []net.IP{net.ParseIP(n1.IP)}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "n1.crt"), filepath.Join(dir, "n1.key")
	if err := os.WriteFile(certFile, forged, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, key, 0o600); err != nil {
		t.Fatal(err)
	}
	for port, addr := range map[string]string{
		"backend": td.BackendAddr(n2), "raft": fmt.Sprintf("%s:7401", n2.IP),
		"replication": fmt.Sprintf("%s:7402", n2.IP), "admin": td.AdminAddr(n2),
	} {
		err := tlsAnswer(c, n3, addr, certFile, keyFile, 15*time.Second)
		if err == nil || !(strings.Contains(err.Error(), "bad certificate") || strings.Contains(err.Error(), "unknown certificate authority")) {
			t.Errorf("%s port %s accepted a certificate from the old CA (err=%v)", port, addr, err)
		}
		if err := tlsAnswer(c, n3, addr, filepath.Join(td.DataDir(n3), "tls", "node.crt"), filepath.Join(td.DataDir(n3), "tls", "node.key"), time.Second); err != nil {
			t.Errorf("%s port %s refused n3's re-issued certificate: %v", port, addr, err)
		}
	}

	// n3 restarts on its re-issued certificate.
	c.Kill(n3)
	if _, err := td.StartDaemon(ctx, n3); err != nil {
		t.Fatal(err)
	}
	if _, err := td.WaitStatus(ctx, n1, 60*time.Second, func(s *tandemv1.ClusterStatus) bool { return s.Quorate && s.VotesOnline == 3 }); err != nil {
		t.Fatalf("n3 not back after the rotation: %v", err)
	}
}
