package e2e

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tandemhci/tandem/internal/nbdclient"
	"github.com/tandemhci/tandem/internal/pki"
	"github.com/tandemhci/tandem/internal/testcluster"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// TestCertificatesRenewUnderLoad: with pki.cert_lifetime at one minute,
// every node renews its certificate (first because it outlives the new
// setting, then two thirds into each minute) while writes go to a
// replicated volume without a single error; the replica stays UpToDate,
// and a node restarted on its renewed certificate is accepted again.
func TestCertificatesRenewUnderLoad(t *testing.T) {
	c, td, ctx := volCluster(t)
	n1, n3 := c.Nodes[0], c.Nodes[2]
	volumeCmd(t, ctx, td, n1, "create", "renew", "--size", "256M", "--replicas", "2", "--nodes", "n1,n2")
	client, err := nbdclient.Dial(ctx, "unix", nbdSocket(td, n1), "renew")
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	stop := make(chan struct{})
	done := writeUntilStopped(ctx, client, 256<<20, stop)

	waitRenewedTwice(ctx, t, c, td, n1)
	close(stop)
	r := <-done
	if r[1] > 0 || r[0] == 0 {
		t.Fatalf("writes during renewal: %d acknowledged, %d failed", r[0], r[1])
	}
	t.Logf("%d writes acknowledged while every node renewed its certificate twice", r[0])
	waitVolume(t, ctx, td, n1, "renew", 60*time.Second, func(v *tandemv1.VolumeInfo) bool {
		return replicaState(v, "n2").State == tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE
	})

	// n3 restarts on its renewed certificate, from disk: the others accept it.
	c.Kill(n3)
	if _, err := td.StartDaemon(ctx, n3); err != nil {
		t.Fatal(err)
	}
	if _, err := td.WaitStatus(ctx, n1, 60*time.Second, func(s *tandemv1.ClusterStatus) bool { return s.Quorate && s.VotesOnline == 3 }); err != nil {
		t.Fatalf("n3 not back on its renewed certificate: %v", err)
	}
}

// waitRenewedTwice sets pki.cert_lifetime to one minute through via and
// waits until every node has used three certificates: the one it had, the
// reissue under the shorter setting, and a renewal two thirds into its
// minute.
func waitRenewedTwice(ctx context.Context, t *testing.T, c *testcluster.Cluster, td *testcluster.Tandem, via *testcluster.Node) {
	t.Helper()
	serial := func(n *testcluster.Node) string {
		b, err := os.ReadFile(filepath.Join(td.DataDir(n), "tls", "node.crt"))
		if err != nil {
			t.Fatal(err)
		}
		s, err := pki.CertSerial(b)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	seen := map[string]map[string]bool{}
	for _, n := range c.Nodes {
		seen[n.Name] = map[string]bool{serial(n): true}
	}
	if _, _, err := td.CLI(ctx, via, "cluster", "config", "set", "pki.cert_lifetime=1m"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(4 * time.Minute)
	for {
		all := true
		for _, n := range c.Nodes {
			seen[n.Name][serial(n)] = true
			all = all && len(seen[n.Name]) >= 3
		}
		if all {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("certificates seen per node after 4 minutes: %v\n%s", seen, c.LogTail(via, "tandemd", 30))
		}
		time.Sleep(time.Second)
	}
}
