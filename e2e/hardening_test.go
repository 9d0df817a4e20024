package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/internal/adminclient"
	"github.com/tandemhci/tandem/internal/pki"
	"github.com/tandemhci/tandem/internal/testcluster"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// floodResult is what joinFloodHelper reports: the answers by gRPC code,
// and the node's refusal counter after the flood.
type floodResult struct {
	Codes   map[string]int `json:"codes"`
	Took    time.Duration  `json:"took"`
	Metrics []string       `json:"metrics"`
}

// joinFloodHelper runs inside a non-member host's namespace: it sends
// FLOOD_N bogus joins to FLOOD_ADDR from each address in FLOOD_SOURCES
// (one connection each, several calls in flight), over the pinned TLS a
// joiner uses, and prints a floodResult. Tokens are well-formed with this
// cluster's CA fingerprint (unknown ID), well-formed for another cluster,
// and malformed.
func joinFloodHelper() int {
	fail := func(err error) int { fmt.Fprintln(os.Stderr, err); return 2 }
	fpBytes, err := hex.DecodeString(os.Getenv("FLOOD_FP"))
	if err != nil || len(fpBytes) != 32 {
		return fail(fmt.Errorf("FLOOD_FP: %v", err))
	}
	fp := [32]byte(fpBytes)
	n, _ := strconv.Atoi(os.Getenv("FLOOD_N"))
	sources := strings.Split(os.Getenv("FLOOD_SOURCES"), ",")
	var other [32]byte
	_, _ = rand.Read(other[:])
	var tokens []string
	for i := range 64 {
		switch i % 4 {
		case 0, 1:
			t, _ := pki.NewJoinToken(fp)
			tokens = append(tokens, t.String())
		case 2:
			t, _ := pki.NewJoinToken(other)
			tokens = append(tokens, t.String())
		default:
			tokens = append(tokens, fmt.Sprintf("tdmj1.not-a-token-%d", i))
		}
	}
	csr := func() []byte {
		k, _ := pki.NewKey()
		c, _ := pki.NewCSR(k, "intruder")
		return c
	}()
	var (
		mu    sync.Mutex
		codes = map[string]int{}
		wg    sync.WaitGroup
	)
	start := time.Now()
	for si, src := range sources {
		local := &net.TCPAddr{IP: net.ParseIP(src)}
		conn, err := grpc.NewClient(os.Getenv("FLOOD_ADDR"),
			grpc.WithTransportCredentials(credentials.NewTLS(pki.PinnedTLS(fp))),
			grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
				return (&net.Dialer{LocalAddr: local}).DialContext(ctx, "tcp", addr)
			}))
		if err != nil {
			return fail(err)
		}
		defer conn.Close()
		peer := tandemv1.NewPeerClient(conn)
		share := n / len(sources)
		if si == 0 {
			share += n % len(sources)
		}
		const inFlight = 8
		for w := range inFlight {
			wg.Go(func() {
				for i := w; i < share; i += inFlight {
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					_, err := peer.Join(ctx, &tandemv1.PeerJoinRequest{Token: tokens[i%len(tokens)], NodeName: "intruder", CsrPem: csr,
						BackendAddr: src + ":7400", RaftAddr: src + ":7401", AdminAddr: src + ":7300", ReplicationAddr: src + ":7402"}, grpc.WaitForReady(true))
					cancel()
					mu.Lock()
					codes[status.Code(err).String()]++
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	res := floodResult{Codes: codes, Took: time.Since(start)}
	if u := os.Getenv("FLOOD_METRICS"); u != "" {
		resp, err := http.Get(u)
		if err != nil {
			return fail(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, l := range strings.Split(string(body), "\n") {
			if strings.HasPrefix(l, "tandem_join_refused_total{") {
				res.Metrics = append(res.Metrics, l)
			}
		}
	}
	out, _ := json.Marshal(res)
	fmt.Println(string(out))
	return 0
}

// p99 is the 99th percentile of ds.
func p99(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s)*99+99)/100 - 1
	return s[max(0, i)]
}

// TestJoinFloodCostsNoRaftEntry: 10,000 bogus joins from a host that is
// not a member (from three of its addresses) leave the metadata shard's
// applied index unchanged on every node: they are refused by the rate
// limit or by the token check, which reads and never proposes. The
// refusals are counted by reason in tandem_join_refused_total. The test
// also measures 'config set' (Cluster/SetConfig) p99 over 200 calls
// without and with the flood running, and logs both: figures, not
// assertions.
func TestJoinFloodCostsNoRaftEntry(t *testing.T) {
	testcluster.Require(t)
	bin := binDir(t)
	c := testcluster.New(t, testcluster.Options{Nodes: 4})
	td := testcluster.NewTandem(c, bin)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	members, outsider := c.Nodes[:3], c.Nodes[3]
	n1 := members[0]
	for _, n := range members {
		if _, err := td.StartDaemon(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	if err := td.Form(ctx, "flood", members...); err != nil {
		t.Fatal(err)
	}
	if _, err := td.WaitStatus(ctx, n1, 15*time.Second, func(s *tandemv1.ClusterStatus) bool { return s.Quorate && s.VotesOnline == 3 }); err != nil {
		t.Fatal(err)
	}
	// The CA fingerprint is public (every TLS client sees the CA); an
	// attacker can put it in a token of its own making.
	tok, err := td.Token(ctx, n1)
	if err != nil {
		t.Fatal(err)
	}
	jt, err := pki.ParseJoinToken(tok)
	if err != nil {
		t.Fatal(err)
	}
	prefix := outsider.IP[:strings.LastIndex(outsider.IP, ".")]
	sources := []string{outsider.IP, prefix + ".201", prefix + ".202"}
	for _, ip := range sources[1:] {
		if _, err := c.Exec(ctx, outsider, "ip", "addr", "add", ip+"/24", "dev", "eth0"); err != nil {
			t.Fatal(err)
		}
	}
	flood := func(n int) (floodResult, error) {
		cmd := exec.CommandContext(ctx, "ip", "netns", "exec", outsider.NS, os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "TANDEM_TEST_HELPER=joinflood", "FLOOD_ADDR="+td.BackendAddr(n1), "FLOOD_FP="+hex.EncodeToString(jt.CAFingerprint[:]),
			"FLOOD_N="+strconv.Itoa(n), "FLOOD_SOURCES="+strings.Join(sources, ","),
			fmt.Sprintf("FLOOD_METRICS=http://%s:%d/metrics", n1.IP, testcluster.MetricsPort))
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return floodResult{}, fmt.Errorf("join flood: %w\n%s", err, stderr.String())
		}
		var r floodResult
		if err := json.Unmarshal(out, &r); err != nil {
			return floodResult{}, fmt.Errorf("join flood output: %w\n%s", err, out)
		}
		return r, nil
	}

	admin, err := adminclient.Dial(ctx, adminclient.Options{DataDir: td.DataDir(n1)})
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	applied := func() []uint64 {
		var out []uint64
		for _, n := range members {
			st, err := td.Status(ctx, n)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, st.AppliedIndex)
		}
		return out
	}
	configSet := func(calls int) []time.Duration {
		var ds []time.Duration
		for i := range calls {
			start := time.Now()
			if _, err := admin.Cluster.SetConfig(ctx, &tandemv1.SetConfigRequest{Values: map[string]string{"resync.rate": strconv.Itoa((100 + i%2) << 20)}}); err != nil {
				t.Fatalf("config set %d: %v", i, err)
			}
			ds = append(ds, time.Since(start))
		}
		return ds
	}

	// Without the flood.
	quiet := configSet(200)
	// The flood alone: every node's applied index stays where it was.
	time.Sleep(time.Second) // let every replica apply the last config entry
	before := applied()
	const bogus = 10000
	r, err := flood(bogus)
	if err != nil {
		t.Fatal(err)
	}
	after := applied()
	t.Logf("%d bogus joins from %s in %s: answers %v; node n1 counted %s", bogus, strings.Join(sources, ", "), r.Took.Round(time.Millisecond), r.Codes, strings.Join(r.Metrics, ", "))
	if !slices.Equal(before, after) {
		t.Errorf("applied index of n1, n2, n3 went from %v to %v during the join flood", before, after)
	}
	total := 0
	for code, k := range r.Codes {
		total += k
		if code != "ResourceExhausted" && code != "PermissionDenied" && code != "InvalidArgument" {
			t.Errorf("%d bogus joins answered %s", k, code)
		}
	}
	if total != bogus || r.Codes["ResourceExhausted"] == 0 {
		t.Errorf("answers %v: want %d, most of them rate limited", r.Codes, bogus)
	}
	counted := map[string]bool{}
	for _, l := range r.Metrics {
		counted[l[strings.Index(l, `reason="`)+8:strings.LastIndex(l, `"`)]] = true
	}
	for _, reason := range []string{"rate_limited", "bad_token", "wrong_cluster", "malformed_token"} {
		if !counted[reason] {
			t.Errorf("no refusal counted as %s: %v", reason, r.Metrics)
		}
	}

	// config set while the flood runs (the flood starts first).
	var (
		wg       sync.WaitGroup
		floodErr error
		floods   int
	)
	stop := make(chan struct{})
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, floodErr = flood(bogus); floodErr != nil {
				return
			}
			floods++
		}
	})
	time.Sleep(time.Second)
	loaded := configSet(200)
	close(stop)
	wg.Wait()
	if floodErr != nil {
		t.Fatal(floodErr)
	}
	t.Logf("config set p99 over 200 calls: %s without the join flood, %s with it (median %s, %s; %d floods of %d joins ran alongside)",
		p99(quiet).Round(10*time.Microsecond), p99(loaded).Round(10*time.Microsecond),
		median(quiet).Round(10*time.Microsecond), median(loaded).Round(10*time.Microsecond), floods+1, bogus)
	st, err := td.Status(ctx, n1)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range st.Nodes {
		if n.Name == "intruder" {
			t.Errorf("a bogus join was recorded: %+v", n)
		}
	}
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// TestBadInputRefusedOnARealNode: on a running cluster, names with '/',
// '..', NUL or 300 characters, negative and huge sizes, a checksum request
// with block 1 and a replica deletion named "../volumes" each get
// InvalidArgument naming the rule, through the admin API (grpcurl with the
// admin credentials, and the CLI) and the peer API (grpcurl with another
// node's certificate), and leave the cluster as it was.
func TestBadInputRefusedOnARealNode(t *testing.T) {
	c, td, ctx := volCluster(t)
	grpcurl := grpcurlPath(t)
	n1, n2 := c.Nodes[0], c.Nodes[1]
	volumeCmd(t, ctx, td, n1, "create", "ok-vol", "--size", "16M", "--nodes", "n1,n2")
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatal(err)
	}
	protoDir := filepath.Join(filepath.Dir(strings.TrimSpace(string(gomod))), "proto")
	cred := td.Credentials(n1)
	token, err := os.ReadFile(filepath.Join(cred, "token"))
	if err != nil {
		t.Fatal(err)
	}
	admin := []string{"-cacert", filepath.Join(cred, "ca.crt"), "-cert", filepath.Join(cred, "admin.crt"), "-key", filepath.Join(cred, "admin.key"),
		"-H", "authorization: Bearer " + strings.TrimSpace(string(token))}
	nodeTLS := filepath.Join(td.DataDir(n2), "tls")
	peer := []string{"-cacert", filepath.Join(nodeTLS, "ca.crt"), "-cert", filepath.Join(nodeTLS, "node.crt"), "-key", filepath.Join(nodeTLS, "node.key"),
		"-import-path", protoDir, "-proto", "tandem/v1/tandem.proto"}
	long := strings.Repeat("x", 300)
	before := snapshot(t, ctx, td, n1)
	for _, tc := range []struct {
		peer   bool
		method string
		body   string
		msg    string
	}{
		{false, "tandem.v1.Volume/Create", `{"name":"a/b","size_bytes":"16777216"}`, `volume name "a/b" contains '/'`},
		{false, "tandem.v1.Volume/Create", `{"name":"..","size_bytes":"16777216"}`, `volume name ".." contains '..'`},
		{false, "tandem.v1.Volume/Create", `{"name":"a\u0000b","size_bytes":"16777216"}`, `volume name "a\x00b" contains a NUL byte`},
		{false, "tandem.v1.Volume/Create", `{"name":"` + long + `","size_bytes":"16777216"}`, `is 300 characters; at most 63`},
		{false, "tandem.v1.Volume/Create", `{"name":"x","size_bytes":"-4096"}`, `size -4 KiB (-4096 bytes): must be a positive multiple of 4 KiB`},
		{false, "tandem.v1.Volume/Create", `{"name":"x","size_bytes":"4611686018427387904"}`, `size 4 EiB is over the 64 TiB limit`},
		{false, "tandem.v1.Volume/Delete", `{"name":"../ok-vol"}`, `volume name "../ok-vol" contains '/'`},
		{false, "tandem.v1.VM/Create", `{"name":"../etc","vcpus":1,"memory_mib":128,"kernel":"/boot/vmlinuz"}`, `VM name "../etc" contains '/'`},
		{false, "tandem.v1.VM/Console", `{"name":"../../etc/passwd"}`, `VM name "../../etc/passwd" contains '/'`},
		{true, "tandem.v1.Peer/VolumeChecksum", `{"name":"ok-vol","length":"67108864","block":"1"}`, `checksum block 1 bytes: must be a power of two from 4 KiB to 64 MiB`},
		{true, "tandem.v1.Peer/VolumeClose", `{"name":"../volumes","destroy":true}`, `volume name "../volumes" contains '/'`},
		{true, "tandem.v1.Peer/VolumeOpen", `{"create":true,"volume":{"name":"../../x","shard_id":"5000","size_bytes":"4096","replicas":["n1"]}}`, `volume name "../../x" contains '/'`},
	} {
		args, addr := admin, td.AdminAddr(n1)
		if tc.peer {
			args, addr = peer, td.BackendAddr(n1)
		}
		out, err := c.Exec(ctx, n2, append(append([]string{grpcurl}, args...), "-d", tc.body, addr, tc.method)...)
		if err == nil || !strings.Contains(string(out), "Code: InvalidArgument") || !strings.Contains(string(out), tc.msg) {
			t.Errorf("%s %s: %v\n%s\nwant InvalidArgument %q", tc.method, clip(tc.body, 80), err, out, tc.msg)
		}
	}
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"volume", "create", "a..b", "--size", "16M"}, `volume name "a..b" contains '..'`},
		{[]string{"volume", "create", long, "--size", "16M"}, `is 300 characters; at most 63`},
		{[]string{"volume", "create", "x", "--size", "65T"}, `size 65 TiB is over the 64 TiB limit`},
		{[]string{"vm", "create", "x", "--memory", "128M", "--disk", "16M", "--kernel", "vmlinuz"}, `kernel path "vmlinuz" must be absolute`},
		{[]string{"vm", "create", "x", "--memory", "128M", "--disk-volume", "../ok-vol"}, `volume name "../ok-vol" contains '/'`},
	} {
		code, out, errOut := cliRun(ctx, td, n1, tc.args...)
		if code != 2 || !strings.Contains(errOut, tc.msg) {
			t.Errorf("tandem %s: exit %d, want 2 and %q\n%s%s", clip(strings.Join(tc.args, " "), 80), code, tc.msg, out, errOut)
		}
	}
	if after := snapshot(t, ctx, td, n1); after != before {
		t.Errorf("bad input changed the cluster:\nbefore %+v\nafter  %+v", before, after)
	}
}
