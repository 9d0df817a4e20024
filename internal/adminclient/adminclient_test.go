package adminclient

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"

	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// fakeCluster answers Status and records the authorization metadata.
type fakeCluster struct {
	tandemv1.UnimplementedClusterServer
	block bool // Status waits until the caller gives up

	mu   sync.Mutex
	auth [][]string
}

func (f *fakeCluster) Status(ctx context.Context, _ *tandemv1.StatusRequest) (*tandemv1.ClusterStatus, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	f.mu.Lock()
	f.auth = append(f.auth, md.Get("authorization"))
	f.mu.Unlock()
	if f.block {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return &tandemv1.ClusterStatus{Initialized: true, ClusterName: "prod"}, nil
}

func (f *fakeCluster) lastAuth(t *testing.T) []string {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.auth) == 0 {
		t.Fatal("no call reached the server")
	}
	return f.auth[len(f.auth)-1]
}

func clearEnv(t *testing.T) {
	for _, k := range []string{EnvDataDir, EnvCredentials, EnvToken} {
		t.Setenv(k, "")
	}
}

// serveUnix serves f on <dir>/tandemd.sock.
func serveUnix(t *testing.T, dir string, f *fakeCluster) {
	t.Helper()
	lis, err := net.Listen("unix", filepath.Join(dir, SocketName))
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	tandemv1.RegisterClusterServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
}

func TestResolvedDefaults(t *testing.T) {
	clearEnv(t)
	o := Options{}.Resolved()
	if o.DataDir != DefaultDataDir || o.Credentials != "/var/lib/tandem/admin" || o.Timeout != DefaultTimeout || o.Token != "" {
		t.Errorf("defaults: %+v", o)
	}
	t.Setenv(EnvDataDir, "/srv/t")
	t.Setenv(EnvToken, "envtok")
	o = Options{}.Resolved()
	if o.DataDir != "/srv/t" || o.Credentials != "/srv/t/admin" || o.Token != "envtok" {
		t.Errorf("env: %+v", o)
	}
	t.Setenv(EnvCredentials, "/etc/creds")
	o = Options{DataDir: "/d", Token: "flag"}.Resolved()
	if o.DataDir != "/d" || o.Credentials != "/etc/creds" || o.Token != "flag" {
		t.Errorf("explicit over env: %+v", o)
	}
}

// On the local socket the token file is not sent (the call is the node's
// local admin); a token given explicitly is.
func TestLocalSendsToken(t *testing.T) {
	clearEnv(t)
	dir := t.TempDir()
	f := &fakeCluster{}
	serveUnix(t, dir, f)
	writeFile(t, filepath.Join(dir, "admin", TokenFile), "file-token\n")

	c0, err := Dial(context.Background(), Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer c0.Close()
	if _, err := c0.Cluster.Status(context.Background(), &tandemv1.StatusRequest{}); err != nil {
		t.Fatalf("Status: %v", err)
	}
	if got := f.lastAuth(t); len(got) != 0 {
		t.Errorf("the token file was sent over the local socket: %q", got)
	}

	c, err := Dial(context.Background(), Options{DataDir: dir, Token: "file-token"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	st, err := c.Cluster.Status(context.Background(), &tandemv1.StatusRequest{})
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	if st.GetClusterName() != "prod" {
		t.Errorf("status %v", st)
	}
	if got := f.lastAuth(t); len(got) != 1 || got[0] != "Bearer file-token" {
		t.Errorf("authorization %q", got)
	}
	if c.Target != filepath.Join(dir, SocketName) {
		t.Errorf("Target %q", c.Target)
	}
}

func TestLocalWithoutTokenFile(t *testing.T) {
	clearEnv(t)
	dir := t.TempDir()
	f := &fakeCluster{}
	serveUnix(t, dir, f)
	// An uninitialized node has no credentials yet: no error, no header.
	c, err := Dial(context.Background(), Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Cluster.Status(context.Background(), &tandemv1.StatusRequest{}); err != nil {
		t.Fatal(err)
	}
	if got := f.lastAuth(t); len(got) != 0 {
		t.Errorf("authorization %q, want none", got)
	}
}

func TestLocalMissingSocket(t *testing.T) {
	clearEnv(t)
	dir := t.TempDir()
	c, err := Dial(context.Background(), Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Cluster.Status(context.Background(), &tandemv1.StatusRequest{})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("err %v, want Unavailable", err)
	}
	want := "cannot reach tandemd at " + filepath.Join(dir, SocketName) + ": is it running? (connect: no such file or directory)"
	if got := Explain(err); got != want {
		t.Errorf("Explain:\n got %q\nwant %q", got, want)
	}
	// Wrapping by callers keeps the explanation.
	if got := Explain(fmt.Errorf("status: %w", err)); got != want {
		t.Errorf("Explain(wrapped) = %q", got)
	}
}

func TestDefaultTimeout(t *testing.T) {
	clearEnv(t)
	dir := t.TempDir()
	serveUnix(t, dir, &fakeCluster{block: true})
	c, err := Dial(context.Background(), Options{DataDir: dir, Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	_, err = c.Cluster.Status(context.Background(), &tandemv1.StatusRequest{})
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("err %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %s", d)
	}
	if got := Explain(err); !strings.Contains(got, "no answer from tandemd at") || !strings.Contains(got, "within 200ms") {
		t.Errorf("Explain = %q", got)
	}
}

func TestExplain(t *testing.T) {
	wrap := func(code codes.Code, msg string, local bool) error {
		return &CallError{Method: "/tandem.v1.Volume/List", Target: "/d/tandemd.sock", Local: local, Timeout: time.Second, Err: status.Error(code, msg)}
	}
	tests := []struct {
		err  error
		want string
	}{
		{nil, ""},
		{errors.New("plain"), "plain"},
		{context.Canceled, "interrupted"},
		{wrap(codes.Canceled, "context canceled", true), "interrupted"},
		{wrap(codes.Unauthenticated, "bad token", true), "refused: bad token (check the API credential)"},
		{wrap(codes.FailedPrecondition, "cluster is not quorate", true), "cluster is not quorate"},
		{wrap(codes.NotFound, "no node named x", true), "no node named x"},
		{wrap(codes.PermissionDenied, "witness cannot do that", true), "permission denied: witness cannot do that"},
		{wrap(codes.Unimplemented, "method List not implemented", true), "tandemd at /d/tandemd.sock does not implement tandem.v1.Volume/List yet"},
		{wrap(codes.Internal, "boom", true), "tandemd error: boom"},
		{wrap(codes.Unavailable, "no leader elected", true), "unavailable: no leader elected"},
		{wrap(codes.Unavailable, "no quorum: cannot dial n2", true), "unavailable: no quorum: cannot dial n2"},
		{wrap(codes.Unavailable, `connection error: desc = "transport: Error while dialing: dial unix /d/tandemd.sock: connect: permission denied"`, true),
			"cannot reach tandemd at /d/tandemd.sock: permission denied (the socket is root-only; run as root)"},
		{&CallError{Target: "10.0.0.1:7443", Err: status.Error(codes.Unavailable, `connection error: desc = "transport: Error while dialing: dial tcp 10.0.0.1:7443: connect: connection refused"`)},
			"cannot reach tandemd at 10.0.0.1:7443 (connect: connection refused)"},
		{status.Error(codes.Unauthenticated, "no token"), "refused: no token (check the API credential)"},
		// A peer's transport failure relayed by the daemon is not a
		// failure to reach the daemon.
		{wrap(codes.Unavailable, `on n2: connection error: desc = "transport: Error while dialing: dial tcp 10.99.0.12:7400: connect: connection refused"`, true),
			"unavailable: node n2 does not answer (dial tcp 10.99.0.12:7400: connect: connection refused)"},
		{wrap(codes.Unavailable, "on n2: replica busy", true), "unavailable: on n2: replica busy"},
	}
	for _, tt := range tests {
		if got := Explain(tt.err); got != tt.want {
			t.Errorf("Explain(%v)\n got %q\nwant %q", tt.err, got, tt.want)
		}
	}
	// CallError keeps the gRPC status visible to callers.
	if c := status.Code(fmt.Errorf("x: %w", wrap(codes.NotFound, "m", true))); c != codes.NotFound {
		t.Errorf("status.Code = %v", c)
	}
}

// A call that timed out may still have changed something: the message
// says so for any method that is not read-only, so that nobody retries
// blindly.
func TestExplainTimeoutOfAChange(t *testing.T) {
	timedOut := func(method string) error {
		return &CallError{Method: method, Target: "/d/tandemd.sock", Local: true, Timeout: 10 * time.Second, Err: status.Error(codes.DeadlineExceeded, "context deadline exceeded")}
	}
	for method, mayComplete := range map[string]bool{
		"/tandem.v1.Volume/Promote": true,
		"/tandem.v1.VM/Migrate":     true,
		"/tandem.v1.Volume/Create":  true,
		"/tandem.v1.Volume/List":    false,
		"/tandem.v1.Cluster/Status": false,
		"/tandem.v1.Volume/Show":    false,
	} {
		got := Explain(timedOut(method))
		if !strings.Contains(got, "no answer from tandemd at /d/tandemd.sock within 10s") {
			t.Errorf("%s: %q", method, got)
		}
		if strings.Contains(got, "may still complete") != mayComplete {
			t.Errorf("%s: %q: says the request may still complete: %v, want %v", method, got, !mayComplete, mayComplete)
		}
	}
}

// TestReadOnlyMethodsExist: every method Explain takes for read-only is a
// method of the API (a renamed one would silently lose the warning's
// opposite).
func TestReadOnlyMethodsExist(t *testing.T) {
	have := map[string]bool{}
	for _, fd := range []protoreflect.FileDescriptor{tandemv1.File_tandem_v1_tandem_proto, tandemv1.File_tandem_v1_console_proto} {
		for i := range fd.Services().Len() {
			ms := fd.Services().Get(i).Methods()
			for j := range ms.Len() {
				have[string(ms.Get(j).Name())] = true
			}
		}
	}
	for _, m := range readOnlyMethods() {
		if !have[m] {
			t.Errorf("read-only method %s is not in the API", m)
		}
	}
}
