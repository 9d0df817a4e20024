package e2e

import (
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

	stop := make(chan struct{})
	done := writeUntilStopped(ctx, client, 256<<20, stop)

	if _, _, err := td.CLI(ctx, n1, "cluster", "config", "set", "pki.cert_lifetime=1m"); err != nil {
		t.Fatal(err)
	}
	// Each node: the reissue under the shorter setting, then at least one
	// renewal two thirds into its minute.
	deadline := time.Now().Add(4 * time.Minute)
	for {
		renewedAll := true
		for _, n := range c.Nodes {
			seen[n.Name][serial(n)] = true
			if len(seen[n.Name]) < 3 {
				renewedAll = false
			}
		}
		if renewedAll {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("certificates seen per node after 4 minutes: %v\n%s", seen, c.LogTail(n1, "tandemd", 30))
		}
		time.Sleep(time.Second)
	}
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
