package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tandemhci/tandem/internal/nbdclient"
	"github.com/tandemhci/tandem/internal/pki"
	"github.com/tandemhci/tandem/internal/testcluster"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// TestRejoinAfterCertificateExpired: n3, holding a replica of a volume, is
// killed; while it is down its one-minute certificate expires, the other
// nodes renew theirs, and the CA is rotated without it (rotate-ca --force).
// n3 then starts STOPPED: it keeps its data, status and node show say what
// happened and the exact command, its log says so at ERROR, and the members
// refuse its expired certificate. 'tandem cluster rejoin' with a fresh
// token brings it back in the same process as an online voter with the
// same replica ID, Raft directory and replica file; the volume's replica
// on n3 catches up with an incremental resync (bytes sent about the bytes
// written while it was down, far below the volume's size) and holds the
// same bytes as the primary's.
func TestRejoinAfterCertificateExpired(t *testing.T) {
	c, td, ctx := volCluster(t)
	n1, n3 := c.Nodes[0], c.Nodes[2]
	const size = 256 << 20
	volumeCmd(t, ctx, td, n1, "create", "rj", "--size", "256M", "--replicas", "2", "--nodes", "n1,n3")
	client, err := nbdclient.Dial(ctx, "unix", nbdSocket(td, n1), "rj")
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if acked, _ := writeBlocks(ctx, client, 0, 512, nil); len(acked) != 512 {
		t.Fatalf("warm-up writes: %d acked", len(acked))
	}
	waitVolume(t, ctx, td, n1, "rj", 60*time.Second, func(v *tandemv1.VolumeInfo) bool {
		return replicaState(v, "n3").State == tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE
	})

	// Every certificate follows a one-minute lifetime.
	if _, _, err := td.CLI(ctx, n1, "cluster", "config", "set", "pki.cert_lifetime=1m"); err != nil {
		t.Fatal(err)
	}
	certFile := func(n *testcluster.Node) string { return filepath.Join(td.DataDir(n), "tls", "node.crt") }
	notAfter := func(n *testcluster.Node) time.Time {
		b, err := os.ReadFile(certFile(n))
		if err != nil {
			t.Fatal(err)
		}
		_, na, err := pki.RenewAt(b)
		if err != nil {
			t.Fatal(err)
		}
		return na
	}
	deadline := time.Now().Add(2 * time.Minute)
	for time.Until(notAfter(n3)) > 2*time.Minute {
		if time.Now().After(deadline) {
			t.Fatalf("n3 did not take a one-minute certificate:\n%s", c.LogTail(n3, "tandemd", 30))
		}
		time.Sleep(time.Second)
	}
	before := identityOf(t, td, n3)
	volIno, raftIno := inode(t, filepath.Join(td.DataDir(n3), "volumes", "rj.vol")), inode(t, filepath.Join(td.DataDir(n3), "raft"))
	oldSerial := serialOf(t, certFile(n3))

	// n3 goes down; writes go on (n3 falls Outdated); the CA is rotated
	// without it.
	c.Kill(n3)
	var acked int
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := uint64(0); i < 1024; i++ {
			b := 4096 + i // 4 MiB from 16 MiB on, past the warm-up
			if err := client.WriteAt(ctx, pattern(b+3), b*4096, 0); err != nil {
				t.Errorf("write while n3 is down: %v", err)
				return
			}
			acked++
		}
	}()
	waitVolume(t, ctx, td, n1, "rj", 90*time.Second, func(v *tandemv1.VolumeInfo) bool {
		return replicaState(v, "n3").State == tandemv1.ReplicaState_REPLICA_STATE_OUTDATED
	})
	<-done
	if err := client.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	dirty := replicaState(volumeCmd(t, ctx, td, n1, "show", "rj"), "n3").DirtyBytes
	if dirty == 0 || dirty >= size/16 {
		t.Fatalf("n3's dirty bytes while down: %d", dirty)
	}
	if out, stderr, err := td.CLI(ctx, n1, "cluster", "rotate-ca", "--force"); err != nil {
		t.Fatalf("rotate-ca without n3: %v\n%s%s", err, out, stderr)
	}
	// Wait out n3's certificate (a precondition, not a timed assertion).
	if wait := time.Until(notAfter(n3)) + 2*time.Second; wait > 0 {
		t.Logf("waiting %s for n3's certificate to expire", wait.Round(time.Second))
		time.Sleep(wait)
	}

	// n3 starts stopped, and says so.
	if _, err := td.StartDaemon(ctx, n3); err != nil {
		t.Fatal(err)
	}
	st, err := td.Status(ctx, n3)
	if err != nil {
		t.Fatal(err)
	}
	warn := strings.Join(st.Warnings, "\n")
	if st.Initialized || st.ClusterName != "vols" || !strings.Contains(warn, "certificate expired") || !strings.Contains(warn, "tandem cluster rejoin") || !strings.Contains(warn, "tandem cluster token") {
		t.Fatalf("status of the stopped n3: initialized=%v cluster=%q warnings:\n%s", st.Initialized, st.ClusterName, warn)
	}
	out, _, err := td.CLI(ctx, n3, "cluster", "status")
	if err != nil || !strings.Contains(out, `n3 belongs to cluster "vols"`) || !strings.Contains(out, "DOES NOT RUN IN IT") {
		t.Fatalf("cluster status on the stopped n3: %v\n%s", err, out)
	}
	t.Logf("cluster status on the stopped n3:\n%s", out)
	_, stderr, err := td.CLI(ctx, n3, "node", "show", "n3")
	if err == nil || !strings.Contains(stderr, "certificate expired") || !strings.Contains(stderr, "tandem cluster rejoin") {
		t.Fatalf("node show on the stopped n3: %v\n%s", err, stderr)
	}
	if log := c.LogTail(n3, "tandemd", 200); strings.Count(log, "tandemd started STOPPED") != 1 || !strings.Contains(log, "ERROR") {
		t.Fatalf("n3's log does not say once at ERROR that it is stopped:\n%s", log)
	}
	// Its data is kept, and nothing of the cluster runs there.
	if inode(t, filepath.Join(td.DataDir(n3), "raft")) != raftIno {
		t.Fatal("the stopped n3 replaced its Raft directory")
	}
	if err := tlsAnswer(c, n3, fmt.Sprintf("%s:7401", n3.IP), filepath.Join(td.DataDir(n1), "tls", "node.crt"), filepath.Join(td.DataDir(n1), "tls", "node.key"), time.Second); err == nil {
		t.Fatal("the stopped n3 serves Raft")
	}
	// The members refuse its expired certificate on every port.
	for port, addr := range map[string]string{
		"backend": td.BackendAddr(n1), "raft": fmt.Sprintf("%s:7401", n1.IP), "replication": fmt.Sprintf("%s:7402", n1.IP),
	} {
		err := tlsAnswer(c, n3, addr, certFile(n3), filepath.Join(td.DataDir(n3), "tls", "node.key"), 15*time.Second)
		if err == nil || !(strings.Contains(err.Error(), "expired certificate") || strings.Contains(err.Error(), "bad certificate") || strings.Contains(err.Error(), "unknown certificate authority")) {
			t.Errorf("%s port %s accepted n3's expired certificate (err=%v)", port, addr, err)
		}
	}
	if st, err := td.Status(ctx, n1); err != nil || st.VotesOnline != 2 {
		t.Fatalf("n1 sees n3 online before its rejoin: %v %v", err, st)
	}

	// A fresh token from a member brings it back, in the same process.
	tok, err := td.Token(ctx, n1)
	if err != nil {
		t.Fatal(err)
	}
	out, stderr, err = td.CLI(ctx, n3, "cluster", "rejoin", td.BackendAddr(n1), "--token", tok)
	if err != nil {
		t.Fatalf("rejoin: %v\n%s%s\n%s", err, out, stderr, c.LogTail(n3, "tandemd", 40))
	}
	t.Logf("rejoin: %s", strings.TrimSpace(out))
	if _, err := td.WaitStatus(ctx, n1, 60*time.Second, func(s *tandemv1.ClusterStatus) bool { return s.Quorate && s.VotesOnline == 3 }); err != nil {
		t.Fatalf("n3 not back as an online voter: %v\n%s", err, c.LogTail(n3, "tandemd", 40))
	}
	// n3's own quorum check may need a moment more: its Raft replays what
	// it missed before a linearizable read completes there.
	for deadline := time.Now().Add(30 * time.Second); ; {
		st, err := td.Status(ctx, n3)
		if err == nil && st.Initialized && st.Quorate {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status on n3 after the rejoin: %v %v", err, st)
		}
		time.Sleep(500 * time.Millisecond)
	}
	after := identityOf(t, td, n3)
	if after != before {
		t.Fatalf("identity changed by the rejoin: %+v, was %+v", after, before)
	}
	if inode(t, filepath.Join(td.DataDir(n3), "raft")) != raftIno || inode(t, filepath.Join(td.DataDir(n3), "volumes", "rj.vol")) != volIno {
		t.Fatal("the rejoin replaced n3's Raft directory or its replica file")
	}
	if s := serialOf(t, certFile(n3)); s == oldSerial {
		t.Fatal("n3 still holds its expired certificate")
	}
	caN1, _ := os.ReadFile(filepath.Join(td.DataDir(n1), "tls", "ca.crt"))
	caN3, _ := os.ReadFile(filepath.Join(td.DataDir(n3), "tls", "ca.crt"))
	if string(caN1) != string(caN3) {
		t.Fatal("n3 did not take the rotated CA bundle")
	}

	// The replica catches up incrementally and holds the primary's bytes.
	info := waitVolume(t, ctx, td, n1, "rj", 120*time.Second, func(v *tandemv1.VolumeInfo) bool {
		r := replicaState(v, "n3")
		return r.State == tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE && r.Link == "in-sync"
	})
	sent := replicaState(info, "n3").ResyncSentBytes
	t.Logf("%d writes while n3 was down; %d bytes dirty; resync after the rejoin sent %d bytes (volume %d)", acked, dirty, sent, int64(size))
	if sent == 0 || sent > dirty*3/2 {
		t.Fatalf("resync sent %d bytes for %d dirty: not incremental", sent, dirty)
	}
	if _, stderr, err := td.CLI(ctx, n1, "volume", "verify", "rj"); err != nil {
		t.Fatalf("verify after the rejoin: %v %s", err, stderr)
	}
	if replicaSum(t, td, n1, "rj", size) != replicaSum(t, td, n3, "rj", size) {
		t.Fatal("replicas differ after the resync")
	}
	// A running node that reaches a quorum refuses a rejoin.
	if _, stderr, err := td.CLI(ctx, n3, "cluster", "rejoin", td.BackendAddr(n1), "--token", tok); err == nil || !strings.Contains(stderr, "reaches a quorum") {
		t.Fatalf("second rejoin: %v %s", err, stderr)
	}
}

type nodeIdentity struct {
	ClusterID string `json:"cluster_id"`
	NodeName  string `json:"node_name"`
	ReplicaID uint64 `json:"replica_id"`
}

func identityOf(t *testing.T, td *testcluster.Tandem, n *testcluster.Node) nodeIdentity {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(td.DataDir(n), "node.json"))
	if err != nil {
		t.Fatal(err)
	}
	var id nodeIdentity
	if err := json.Unmarshal(b, &id); err != nil {
		t.Fatal(err)
	}
	return id
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

func serialOf(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := pki.CertSerial(b)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestRejoinLeftOutOfRotation: n3 is off while the CA is rotated without
// it (rotate-ca --force). Started again, it runs (its certificate is
// valid) but every member refuses its certificate of the retired CA, so it
// reaches no quorum. 'tandem cluster rejoin' with a fresh token, on the
// running node, installs a certificate of the new CA and the new CA
// bundle: n3 is an online voter again, with the same identity, without a
// restart. (Cut off by the network instead, its connections opened before
// the rotation would survive and hide the problem.)
func TestRejoinLeftOutOfRotation(t *testing.T) {
	c, td, ctx := volCluster(t)
	n1, n3 := c.Nodes[0], c.Nodes[2]
	before := identityOf(t, td, n3)
	c.Kill(n3)
	if out, stderr, err := td.CLI(ctx, n1, "cluster", "rotate-ca", "--force"); err != nil {
		t.Fatalf("rotate-ca without n3: %v\n%s%s", err, out, stderr)
	}
	if _, err := td.StartDaemon(ctx, n3); err != nil {
		t.Fatal(err)
	}
	if st, err := td.Status(ctx, n3); err != nil || !st.Initialized {
		t.Fatalf("n3 with a valid certificate does not run: %v %v", err, st)
	}
	// Refused by the members: it stays cut off (probed for a while).
	err := tlsAnswer(c, n3, td.BackendAddr(n1), filepath.Join(td.DataDir(n3), "tls", "node.crt"), filepath.Join(td.DataDir(n3), "tls", "node.key"), 15*time.Second)
	if err == nil || !(strings.Contains(err.Error(), "unknown certificate authority") || strings.Contains(err.Error(), "bad certificate")) {
		t.Fatalf("n1 accepted n3's certificate of the retired CA (err=%v)", err)
	}
	if st, err := td.Status(ctx, n1); err != nil || st.VotesOnline != 2 {
		t.Fatalf("n1 sees n3 online before its rejoin: %v %v", err, st)
	}
	tok, err := td.Token(ctx, n1)
	if err != nil {
		t.Fatal(err)
	}
	out, stderr, err := td.CLI(ctx, n3, "cluster", "rejoin", td.BackendAddr(n1), "--token", tok)
	if err != nil {
		t.Fatalf("rejoin: %v\n%s%s\n%s", err, out, stderr, c.LogTail(n3, "tandemd", 40))
	}
	if _, err := td.WaitStatus(ctx, n1, 60*time.Second, func(s *tandemv1.ClusterStatus) bool { return s.Quorate && s.VotesOnline == 3 }); err != nil {
		t.Fatalf("n3 not back as an online voter: %v\n%s", err, c.LogTail(n3, "tandemd", 40))
	}
	if _, err := td.WaitStatus(ctx, n3, 60*time.Second, func(s *tandemv1.ClusterStatus) bool { return s.Quorate }); err != nil {
		t.Fatalf("n3 does not reach a quorum after the rejoin: %v", err)
	}
	if after := identityOf(t, td, n3); after != before {
		t.Fatalf("identity changed by the rejoin: %+v, was %+v", after, before)
	}
	caN1, _ := os.ReadFile(filepath.Join(td.DataDir(n1), "tls", "ca.crt"))
	caN3, _ := os.ReadFile(filepath.Join(td.DataDir(n3), "tls", "ca.crt"))
	if string(caN1) != string(caN3) {
		t.Fatal("n3 did not take the rotated CA bundle")
	}
}
