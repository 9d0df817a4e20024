package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tandemhci/tandem/internal/adminclient"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// fakeDaemon serves Cluster and Node on a unix socket and records what it got.
type fakeDaemon struct {
	tandemv1.UnimplementedClusterServer
	tandemv1.UnimplementedNodeServer

	status *tandemv1.ClusterStatus

	mu    sync.Mutex
	calls []call
}

type call struct {
	method string
	auth   []string // "authorization" metadata
	req    proto.Message
	budget time.Duration // time left until the call's deadline
}

func (f *fakeDaemon) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	var budget time.Duration
	if d, ok := ctx.Deadline(); ok {
		budget = time.Until(d)
	}
	f.mu.Lock()
	f.calls = append(f.calls, call{method: info.FullMethod, auth: md.Get("authorization"), req: req.(proto.Message), budget: budget})
	f.mu.Unlock()
	return handler(ctx, req)
}

func (f *fakeDaemon) recorded() []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]call(nil), f.calls...)
}

// only returns the single recorded call, failing the test otherwise.
func (f *fakeDaemon) only(t *testing.T) call {
	t.Helper()
	calls := f.recorded()
	if len(calls) != 1 {
		t.Fatalf("want 1 call to the daemon, got %d: %v", len(calls), calls)
	}
	return calls[0]
}

func (f *fakeDaemon) Status(context.Context, *tandemv1.StatusRequest) (*tandemv1.ClusterStatus, error) {
	return f.status, nil
}

func (f *fakeDaemon) Create(_ context.Context, r *tandemv1.CreateClusterRequest) (*tandemv1.CreateClusterResponse, error) {
	st := proto.Clone(f.status).(*tandemv1.ClusterStatus)
	st.ClusterName = r.GetName()
	return &tandemv1.CreateClusterResponse{Status: st, CredentialsDir: "/var/lib/tandem/admin"}, nil
}

func (f *fakeDaemon) Join(_ context.Context, r *tandemv1.JoinClusterRequest) (*tandemv1.JoinClusterResponse, error) {
	return &tandemv1.JoinClusterResponse{ClusterName: "prod", NodeName: "node-d", ReplicaId: 4, CredentialsDir: "/var/lib/tandem/admin"}, nil
}

func (f *fakeDaemon) CreateToken(_ context.Context, r *tandemv1.CreateTokenRequest) (*tandemv1.CreateTokenResponse, error) {
	ttl := time.Duration(r.GetTtlSeconds()) * time.Second
	if ttl == 0 {
		ttl = time.Hour
	}
	return &tandemv1.CreateTokenResponse{Token: "join-abc", TokenId: "t1", ExpiresAt: timestamppb.New(time.Now().Add(ttl))}, nil
}

func (f *fakeDaemon) SetExpectedVotes(_ context.Context, r *tandemv1.SetExpectedVotesRequest) (*tandemv1.SetExpectedVotesResponse, error) {
	return &tandemv1.SetExpectedVotesResponse{Status: f.status, Removed: []string{"node-c"}, Warning: "node-c must not come back"}, nil
}

func (f *fakeDaemon) List(context.Context, *tandemv1.ListNodesRequest) (*tandemv1.ListNodesResponse, error) {
	return &tandemv1.ListNodesResponse{Nodes: f.status.GetNodes(), Quorate: f.status.GetQuorate()}, nil
}

// Remove refuses node-b unless forced, as tandemd refuses a node that is
// online and the primary of a volume.
func (f *fakeDaemon) Remove(_ context.Context, r *tandemv1.RemoveNodeRequest) (*tandemv1.RemoveNodeResponse, error) {
	resp := &tandemv1.RemoveNodeResponse{Node: &tandemv1.NodeInfo{Name: r.GetName(), ReplicaId: 3, State: "removed"}}
	if r.GetName() == "node-b" {
		risks := []string{"node node-b is online (it answers at 10.0.0.2:7000); stop tandemd on it first", "node node-b is the primary of volume db; promote another replica first"}
		if !r.GetForce() {
			return nil, status.Errorf(codes.FailedPrecondition, "refusing to remove node node-b:\n  - %s\n(--force overrides these checks)", strings.Join(risks, "\n  - "))
		}
		resp.Overridden = risks
	}
	return resp, nil
}

func (f *fakeDaemon) GetConfig(_ context.Context, r *tandemv1.GetConfigRequest) (*tandemv1.ClusterConfig, error) {
	out := &tandemv1.ClusterConfig{Values: map[string]string{"resync.rate": "100MiB/s", "ha.dead_timeout": "bogus", "site": "lab"}}
	if r.GetDefaults() {
		out.Settings = []*tandemv1.ConfigSetting{
			{Key: "ha.dead_timeout", Value: "3s", DefaultValue: "3s", Unit: "duration", Description: "no answer for this long: dead"},
			{Key: "resync.rate", Value: "100MiB/s", DefaultValue: "0", Set: true, Unit: "rate", Description: "resync limit (0: unlimited)"},
		}
	}
	return out, nil
}

func (f *fakeDaemon) SetConfig(_ context.Context, r *tandemv1.SetConfigRequest) (*tandemv1.ClusterConfig, error) {
	if _, ok := r.GetValues()["nosuch.key"]; ok {
		return nil, status.Error(codes.InvalidArgument, `unknown setting "nosuch.key"; the settings are: resync.rate`)
	}
	return &tandemv1.ClusterConfig{Values: r.GetValues()}, nil
}

func sampleStatus() *tandemv1.ClusterStatus {
	at := timestamppb.New(time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC))
	return &tandemv1.ClusterStatus{
		Initialized: true, ClusterName: "prod", ClusterId: "c-123", Quorate: true,
		Leader: "node-a", Term: 7, Voters: 3, VotesOnline: 2, Quorum: 2, AnsweredBy: "node-a", Version: "v0.3.0-2-gabc1234",
		Nodes: []*tandemv1.NodeInfo{
			{Name: "node-a", ReplicaId: 1, Role: tandemv1.NodeRole_NODE_ROLE_DATA, Vote: tandemv1.Vote_VOTE_VOTER,
				BackendAddr: "10.0.0.1:7000", State: "member", Health: tandemv1.Health_HEALTH_ONLINE, Leader: true, RttUs: 420, Version: "v0.3.0-2-gabc1234", Protocol: 2},
			{Name: "node-b", ReplicaId: 2, Role: tandemv1.NodeRole_NODE_ROLE_WITNESS, Vote: tandemv1.Vote_VOTE_NON_VOTING,
				BackendAddr: "10.0.0.2:7000", State: "member", Health: tandemv1.Health_HEALTH_ONLINE, RttUs: 1500, Version: "v0.3.0", Protocol: 1},
			{Name: "node-c", ReplicaId: 3, Role: tandemv1.NodeRole_NODE_ROLE_DATA, Vote: tandemv1.Vote_VOTE_VOTER,
				BackendAddr: "10.0.0.3:7000", State: "member", Health: tandemv1.Health_HEALTH_OFFLINE, HealthDetail: "connection refused"},
		},
		Warnings: []string{"node-c has been offline for 5m"},
		Audit:    []*tandemv1.AuditEntry{{At: at, Node: "node-a", Action: "create", Detail: "cluster prod"}},
	}
}

// startDaemon serves a fake daemon in a fresh data dir and returns the dir.
func startDaemon(t *testing.T) (string, *fakeDaemon) {
	t.Helper()
	return startDaemonWith(t, nil)
}

// startDaemonWith is startDaemon with more services registered by register.
func startDaemonWith(t *testing.T, register func(*grpc.Server)) (string, *fakeDaemon) {
	t.Helper()
	clearEnv(t)
	dir := t.TempDir()
	lis, err := net.Listen("unix", filepath.Join(dir, "tandemd.sock"))
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeDaemon{status: sampleStatus()}
	srv := grpc.NewServer(grpc.UnaryInterceptor(f.intercept))
	tandemv1.RegisterClusterServer(srv, f)
	tandemv1.RegisterNodeServer(srv, f)
	if register != nil {
		register(srv)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return dir, f
}

// clearEnv keeps the caller's TANDEM_* settings out of the tests.
func clearEnv(t *testing.T) {
	for _, k := range []string{"TANDEM_DATA_DIR", "TANDEM_CREDENTIALS", "TANDEM_TOKEN"} {
		t.Setenv(k, "")
	}
}

func writeToken(t *testing.T, dataDir, token string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dataDir, "admin"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dataDir, "admin", "token"), []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

type result struct {
	stdout, stderr string
	code           int
}

func runCLI(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := execute(context.Background(), args, strings.NewReader(stdin), &out, &errb)
	return result{stdout: out.String(), stderr: errb.String(), code: code}
}

func (r result) wantCode(t *testing.T, code int) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit code %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, code, r.stdout, r.stderr)
	}
}

func wantMatch(t *testing.T, what, text string, patterns ...string) {
	t.Helper()
	for _, p := range patterns {
		if !regexp.MustCompile(p).MatchString(text) {
			t.Errorf("%s does not match %q:\n%s", what, p, text)
		}
	}
}

func TestStatusTable(t *testing.T) {
	dir, f := startDaemon(t)
	writeToken(t, dir, "s3cret")

	r := runCLI(t, "", "--data-dir", dir, "cluster", "status")
	r.wantCode(t, 0)
	wantMatch(t, "stdout", r.stdout,
		`cluster:\s+prod \(id c-123\)`,
		`quorate:\s+yes\n`,
		`leader:\s+node-a\n`,
		`term:\s+7\n`,
		`votes:\s+2 online / 3 voters`,
		`quorum:\s+2 votes needed`,
		`answered by:\s+node-a`,
		`NAME\s+ROLE\s+VOTE\s+STATE\s+HEALTH\s+LEADER\s+BACKEND\s+RTT\n`,
		`node-a\s+data\s+voter\s+member\s+online\s+\*\s+10\.0\.0\.1:7000\s+0\.42ms\n`,
		`node-b\s+witness\s+non-voting\s+member\s+online\s+-\s+10\.0\.0\.2:7000\s+1\.50ms\n`,
		`node-c\s+data\s+voter\s+member\s+offline\s+-\s+10\.0\.0\.3:7000\s+-\n`,
		`node-c is offline: connection refused`,
		`WARNING: node-c has been offline for 5m`,
		`recent audit:\nTIME\s+NODE\s+ACTION\s+DETAIL\n.*node-a\s+create\s+cluster prod`,
	)
	if r.stderr != "" {
		t.Errorf("stderr: %q", r.stderr)
	}
	c := f.only(t)
	if c.method != tandemv1.Cluster_Status_FullMethodName {
		t.Errorf("method %s", c.method)
	}
	if len(c.auth) != 0 {
		t.Errorf("authorization metadata %q: the token file is not sent over the local socket (the node's local admin)", c.auth)
	}
	if c.budget <= 0 || c.budget > 10*time.Second {
		t.Errorf("call deadline in %s, want the 10s default", c.budget)
	}
}

// TestStatusCheck: --check exits 1 while there is any warning, 0 when
// there is none; advisories never fail it.
func TestStatusCheck(t *testing.T) {
	dir, f := startDaemon(t)
	f.status.Advisories = []string{"no BMC fencing configured for node-a"}
	r := runCLI(t, "", "--data-dir", dir, "cluster", "status", "--check")
	r.wantCode(t, 1)
	wantMatch(t, "stdout", r.stdout, `warnings \(1\):\nWARNING: node-c has been offline for 5m`, `note: no BMC fencing configured for node-a`)
	wantMatch(t, "stderr", r.stderr, `check failed: 1 warning\(s\): node-c has been offline for 5m`)

	r = runCLI(t, "", "--data-dir", dir, "cluster", "status")
	r.wantCode(t, 0)

	f.status.Warnings = nil
	r = runCLI(t, "", "--data-dir", dir, "cluster", "status", "--check")
	r.wantCode(t, 0)
	if strings.Contains(r.stdout, "WARNING") {
		t.Errorf("warning printed for a healthy cluster:\n%s", r.stdout)
	}
}

func TestStatusNotQuorateStillSucceeds(t *testing.T) {
	dir, f := startDaemon(t)
	f.status.Quorate = false
	f.status.Leader = ""
	f.status.AnsweredBy = "node-b"

	r := runCLI(t, "", "--data-dir", dir, "cluster", "status")
	r.wantCode(t, 0)
	wantMatch(t, "stdout", r.stdout, `quorate:\s+NOT QUORATE \(this is node-b's local view\)`, `leader:\s+-\n`)
}

func TestStatusUninitialized(t *testing.T) {
	dir, f := startDaemon(t)
	f.status = &tandemv1.ClusterStatus{AnsweredBy: "node-x"}
	r := runCLI(t, "", "--data-dir", dir, "cluster", "status")
	r.wantCode(t, 0)
	wantMatch(t, "stdout", r.stdout, `node-x is not part of a cluster yet`, `tandem cluster create NAME`)
}

func TestStatusJSON(t *testing.T) {
	dir, f := startDaemon(t)
	r := runCLI(t, "", "--data-dir", dir, "--output", "json", "cluster", "status")
	r.wantCode(t, 0)
	if r.stderr != "" {
		t.Errorf("stderr: %q", r.stderr)
	}
	var got tandemv1.ClusterStatus
	if err := adminclient.UnmarshalJSON([]byte(r.stdout), &got); err != nil {
		t.Fatalf("stdout is not one ClusterStatus JSON document: %v\n%s", err, r.stdout)
	}
	if !proto.Equal(&got, f.status) {
		t.Errorf("round trip differs:\ngot  %v\nwant %v", &got, f.status)
	}
	// Proto field names, and zero values present rather than omitted.
	var raw map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"votes_online", "answered_by", "applied_index", "initialized"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("JSON lacks %q", k)
		}
	}
}

func TestTokenSources(t *testing.T) {
	tests := []struct {
		name      string
		file, env string
		args      []string
		want      []string
	}{
		{name: "file not sent on the local socket", file: "from-file", want: nil},
		{name: "env over file", file: "from-file", env: "from-env", want: []string{"Bearer from-env"}},
		{name: "flag over env", file: "from-file", env: "from-env", args: []string{"--token", "from-flag"}, want: []string{"Bearer from-flag"}},
		{name: "none", want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, f := startDaemon(t)
			if tt.file != "" {
				writeToken(t, dir, tt.file)
			}
			t.Setenv("TANDEM_TOKEN", tt.env)
			args := append([]string{"--data-dir", dir}, tt.args...)
			runCLI(t, "", append(args, "node", "list")...).wantCode(t, 0)
			if got := f.only(t).auth; strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Errorf("authorization %q, want %q", got, tt.want)
			}
		})
	}
}

func TestDataDirFromEnv(t *testing.T) {
	dir, f := startDaemon(t)
	t.Setenv("TANDEM_DATA_DIR", dir)
	runCLI(t, "", "cluster", "status").wantCode(t, 0)
	f.only(t)
}

func TestMissingSocket(t *testing.T) {
	clearEnv(t)
	dir := t.TempDir()
	r := runCLI(t, "", "--data-dir", dir, "cluster", "status")
	r.wantCode(t, 1)
	sock := filepath.Join(dir, "tandemd.sock")
	want := "tandem: cannot reach tandemd at " + sock + ": is it running? ("
	if !strings.HasPrefix(r.stderr, want) || strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("stderr %q, want one line starting %q", r.stderr, want)
	}
	if r.stdout != "" {
		t.Errorf("stdout %q", r.stdout)
	}
}

func TestExpectedVotesRefusesWithoutTTY(t *testing.T) {
	dir, f := startDaemon(t)
	// A piped "yes" must not count as confirmation.
	r := runCLI(t, "yes\n", "--data-dir", dir, "cluster", "expected-votes", "2")
	r.wantCode(t, 1)
	wantMatch(t, "stderr", r.stderr, `WARNING`, `SPLIT BRAIN`, `tandem: refusing .*not a terminal.*--yes-i-understand-split-brain`)
	if calls := f.recorded(); len(calls) != 0 {
		t.Errorf("daemon was called: %v", calls)
	}
}

func TestExpectedVotesWithFlag(t *testing.T) {
	dir, f := startDaemon(t)
	r := runCLI(t, "", "--data-dir", dir, "cluster", "expected-votes", "2", "--yes-i-understand-split-brain")
	r.wantCode(t, 0)
	wantMatch(t, "stderr", r.stderr, `WARNING: SETTING EXPECTED VOTES TO 2`, `WARNING: node-c must not come back`)
	wantMatch(t, "stdout", r.stdout, `removed from the membership: node-c`, `quorate:\s+yes`)
	req := f.only(t).req.(*tandemv1.SetExpectedVotesRequest)
	if req.GetVotes() != 2 || !req.GetConfirm() {
		t.Errorf("request %v, want votes 2 confirm true", req)
	}
}

// wantUsageErrors runs each command line against the daemon in dir: each
// must exit 2 with a usage message, and none may reach f.
func wantUsageErrors(t *testing.T, dir string, f *fakeDaemon, lines [][]string) {
	t.Helper()
	for _, args := range lines {
		r := runCLI(t, "", append([]string{"--data-dir", dir}, args...)...)
		if r.code != 2 {
			t.Errorf("%q: exit %d, want 2; stderr %q", args, r.code, r.stderr)
		}
		if !strings.HasPrefix(r.stderr, "tandem: ") || !strings.Contains(r.stderr, "--help' for usage") {
			t.Errorf("%q: stderr %q", args, r.stderr)
		}
	}
	if calls := f.recorded(); len(calls) != 0 {
		t.Errorf("usage errors reached the daemon: %v", calls)
	}
}

func TestUsageErrors(t *testing.T) {
	dir, f := startDaemon(t)
	wantUsageErrors(t, dir, f, [][]string{
		{"bogus"},
		{"cluster", "bogus"},
		{"--bogus", "cluster", "status"},
		{"cluster", "create"},
		{"cluster", "create", "a", "b"},
		{"cluster", "status", "extra"},
		{"node", "remove"},
		{"-o", "yaml", "cluster", "status"},
		{"--timeout", "0s", "cluster", "status"},
		{"cluster", "expected-votes", "0"},
		{"cluster", "expected-votes", "two", "--yes-i-understand-split-brain"},
		{"cluster", "join", "10.0.0.1:7000"},
		{"cluster", "join", "10.0.0.1:7000", "--token", "a", "--token-file", "b"},
		{"cluster", "token", "--ttl", "-1s"},
		{"cluster", "token", "--ttl", "200h"},
	})
}

func TestHelpIsNotAnError(t *testing.T) {
	clearEnv(t)
	for _, args := range [][]string{{}, {"cluster"}, {"--help"}, {"cluster", "join", "--help"}} {
		r := runCLI(t, "", args...)
		if r.code != 0 || !strings.Contains(r.stdout, "Usage:") {
			t.Errorf("%q: exit %d, stdout %q", args, r.code, r.stdout)
		}
	}
}

func TestCreate(t *testing.T) {
	dir, f := startDaemon(t)
	r := runCLI(t, "", "--data-dir", dir, "cluster", "create", "lab")
	r.wantCode(t, 0)
	wantMatch(t, "stdout", r.stdout, `created cluster "lab" \(id c-123\)`, `admin credentials: /var/lib/tandem/admin`, `NAME\s+ROLE`)
	if req := f.only(t).req.(*tandemv1.CreateClusterRequest); req.GetName() != "lab" {
		t.Errorf("request %v", req)
	}
}

func TestJoinTokenSources(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "join-token")
	if err := os.WriteFile(tokenFile, []byte("tok-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, stdin string
		args        []string
		want        string
	}{
		{name: "flag", args: []string{"--token", "tok-flag"}, want: "tok-flag"},
		{name: "file", args: []string{"--token-file", tokenFile}, want: "tok-file"},
		{name: "stdin", stdin: "tok-stdin\n", args: []string{"--token", "-"}, want: "tok-stdin"},
		{name: "file stdin", stdin: " tok-stdin2 \n", args: []string{"--token-file", "-"}, want: "tok-stdin2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, f := startDaemon(t)
			args := append([]string{"--data-dir", dir, "cluster", "join", "10.0.0.1:7000"}, tt.args...)
			r := runCLI(t, tt.stdin, args...)
			r.wantCode(t, 0)
			wantMatch(t, "stdout", r.stdout, `joined cluster "prod" as node "node-d" \(replica 4\)`)
			c := f.only(t)
			req := c.req.(*tandemv1.JoinClusterRequest)
			if req.GetAddress() != "10.0.0.1:7000" || req.GetToken() != tt.want {
				t.Errorf("request %v, want token %q", req, tt.want)
			}
			// The join token is a request field, never the admin bearer token.
			if len(c.auth) != 0 {
				t.Errorf("authorization sent: %q", c.auth)
			}
		})
	}
}

func TestJoinTimeout(t *testing.T) {
	dir, f := startDaemon(t)
	// Joining waits for Raft and certificates: a minute unless --timeout is given.
	runCLI(t, "", "--data-dir", dir, "cluster", "join", "10.0.0.1:7000", "--token", "t").wantCode(t, 0)
	runCLI(t, "", "--data-dir", dir, "--timeout", "3s", "cluster", "join", "10.0.0.1:7000", "--token", "t").wantCode(t, 0)
	calls := f.recorded()
	if b := calls[0].budget; b <= 50*time.Second || b > time.Minute {
		t.Errorf("default join deadline in %s, want about a minute", b)
	}
	if b := calls[1].budget; b <= 0 || b > 3*time.Second {
		t.Errorf("join with --timeout 3s: deadline in %s", b)
	}
}

func TestClusterToken(t *testing.T) {
	dir, f := startDaemon(t)
	r := runCLI(t, "", "--data-dir", dir, "cluster", "token", "--ttl", "2h")
	r.wantCode(t, 0)
	wantMatch(t, "stdout", r.stdout, `token:\s+join-abc\n`, `expires:\s+\S+ \(in 2h0m0s\)`)
	if req := f.only(t).req.(*tandemv1.CreateTokenRequest); req.GetTtlSeconds() != 7200 {
		t.Errorf("ttl_seconds %d", req.GetTtlSeconds())
	}

	r = runCLI(t, "", "--data-dir", dir, "-o", "json", "cluster", "token")
	r.wantCode(t, 0)
	var resp tandemv1.CreateTokenResponse
	if err := adminclient.UnmarshalJSON([]byte(r.stdout), &resp); err != nil || resp.GetToken() != "join-abc" {
		t.Errorf("json %q: %v", r.stdout, err)
	}
}

func TestNodeListAndRemove(t *testing.T) {
	dir, f := startDaemon(t)
	r := runCLI(t, "", "--data-dir", dir, "node", "list")
	r.wantCode(t, 0)
	wantMatch(t, "stdout", r.stdout, `NAME\s+ID\s+ROLE`, `node-b\s+2\s+witness\s+non-voting`)
	r = runCLI(t, "", "--data-dir", dir, "node", "list", "--filter", "health=offline", "--columns", "name,health", "--no-headers")
	r.wantCode(t, 0)
	if r.stdout != "node-c  offline\n" {
		t.Errorf("node list --filter health=offline: %q", r.stdout)
	}

	f.status.Quorate = false
	r = runCLI(t, "", "--data-dir", dir, "node", "list")
	r.wantCode(t, 0)
	wantMatch(t, "stderr", r.stderr, `NOT QUORATE`)

	r = runCLI(t, "", "--data-dir", dir, "node", "remove", "node-c")
	r.wantCode(t, 0)
	wantMatch(t, "stdout", r.stdout, `removed node "node-c" \(replica 3, state removed\)`)
	calls := f.recorded()
	if req := calls[len(calls)-1].req.(*tandemv1.RemoveNodeRequest); req.GetName() != "node-c" {
		t.Errorf("request %v", req)
	}
}

func TestStubServicesExplainUnimplemented(t *testing.T) {
	dir, _ := startDaemon(t)
	for _, args := range [][]string{{"volume", "list"}, {"vm", "list"}, {"ha", "status"}} {
		r := runCLI(t, "", append([]string{"--data-dir", dir}, args...)...)
		r.wantCode(t, 1)
		wantMatch(t, "stderr", r.stderr, `^tandem: tandemd at .* does not implement tandem\.v1\.\w+/\w+ yet\n$`)
	}
}

// TestVersion: with no daemon the CLI still prints its own version (a test
// binary is linked without -X, so "dev") and exits 0; with one it adds the
// daemon's.
func TestVersion(t *testing.T) {
	clearEnv(t)
	none := t.TempDir()
	r := runCLI(t, "", "--data-dir", none, "version")
	r.wantCode(t, 0)
	wantMatch(t, "stdout", r.stdout, `^tandem dev \(commit \S+, go\S+\)\n$`)
	wantMatch(t, "stderr", r.stderr, `^tandem: tandemd not reached: `)

	r = runCLI(t, "", "--data-dir", none, "-o", "json", "version")
	r.wantCode(t, 0)
	var v buildVersion
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil || v.Go == "" || v.Version != "dev" || v.Daemon != nil {
		t.Errorf("json %q: %v", r.stdout, err)
	}

	dir, _ := startDaemon(t)
	r = runCLI(t, "", "--data-dir", dir, "version")
	r.wantCode(t, 0)
	wantMatch(t, "stdout", r.stdout, `^tandem dev \(commit \S+, go\S+\)\ntandemd v0\.3\.0-2-gabc1234 \(node node-a\)\n$`)
	if r.stderr != "" {
		t.Errorf("stderr: %q", r.stderr)
	}
	r = runCLI(t, "", "--data-dir", dir, "-o", "json", "version")
	r.wantCode(t, 0)
	v = buildVersion{}
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil || v.Daemon == nil || *v.Daemon != (daemonVersion{Node: "node-a", Version: "v0.3.0-2-gabc1234"}) {
		t.Errorf("json %q: %v", r.stdout, err)
	}
}

// TestNodeListVersion: each node's tandemd version is a column; a node that
// did not answer shows "-".
func TestNodeListVersion(t *testing.T) {
	dir, _ := startDaemon(t)
	r := runCLI(t, "", "--data-dir", dir, "node", "list")
	r.wantCode(t, 0)
	wantMatch(t, "stdout", r.stdout, `(?m)^NAME .*\sVERSION\s+PROTOCOL$`, `(?m)^node-a .*\sv0\.3\.0-2-gabc1234\s+2$`, `(?m)^node-b .*\sv0\.3\.0\s+1$`, `(?m)^node-c .*\s-\s+-$`)
	r = runCLI(t, "", "--data-dir", dir, "node", "list", "--columns", "name,version", "--no-headers")
	r.wantCode(t, 0)
	if want := "node-a  v0.3.0-2-gabc1234\nnode-b  v0.3.0\nnode-c  -\n"; r.stdout != want {
		t.Errorf("node list --columns name,version:\n%q\nwant\n%q", r.stdout, want)
	}
	r = runCLI(t, "", "--data-dir", dir, "-o", "json", "node", "list")
	r.wantCode(t, 0)
	wantMatch(t, "stdout", r.stdout, `"version": "v0\.3\.0"`)
}

// A member that does not run in its cluster (its certificate expired):
// status names the cluster and shows the warning with the way out.
func TestStatusStopped(t *testing.T) {
	dir, f := startDaemon(t)
	f.status = &tandemv1.ClusterStatus{AnsweredBy: "node-x", ClusterName: "prod", ClusterId: "c1",
		Warnings: []string{"this node's certificate expired at 2026-01-01T00:00:00Z ... run 'tandem cluster rejoin ADDR --token-file FILE'"}}
	r := runCLI(t, "", "--data-dir", dir, "cluster", "status")
	r.wantCode(t, 0)
	wantMatch(t, "stdout", r.stdout, `node-x belongs to cluster "prod" \(id c1\) but DOES NOT RUN IN IT`, `WARNING: this node's certificate expired`, `tandem cluster rejoin ADDR`)
	if strings.Contains(r.stdout, "not part of a cluster") {
		t.Errorf("a stopped member called not in a cluster:\n%s", r.stdout)
	}
}

// rejoin sends a Join with the rejoin flag; the address comes as ADDR or
// --address, never both, and the token as for a join.
func TestRejoin(t *testing.T) {
	for _, args := range [][]string{
		{"10.0.0.1:7000", "--token", "tok"},
		{"--address", "10.0.0.1:7000", "--token", "tok"},
	} {
		dir, f := startDaemon(t)
		r := runCLI(t, "", append([]string{"--data-dir", dir, "cluster", "rejoin"}, args...)...)
		r.wantCode(t, 0)
		wantMatch(t, "stdout", r.stdout, `rejoined cluster "prod" as node "node-d" \(replica 4\)`)
		req := f.only(t).req.(*tandemv1.JoinClusterRequest)
		if !req.GetRejoin() || req.GetAddress() != "10.0.0.1:7000" || req.GetToken() != "tok" {
			t.Errorf("%v: request %v", args, req)
		}
	}
	dir, f := startDaemon(t)
	wantUsageErrors(t, dir, f, [][]string{
		{"cluster", "rejoin", "--token", "tok"},
		{"cluster", "rejoin", "10.0.0.1:7000"},
		{"cluster", "rejoin", "10.0.0.1:7000", "--address", "10.0.0.2:7000", "--token", "tok"},
		{"cluster", "rejoin", "a:1", "b:2", "--token", "tok"},
	})
}
