package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/adminclient"
	"github.com/tandemhci/tandem/internal/config"
	"github.com/tandemhci/tandem/internal/nodedir"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

func TestMain(m *testing.M) {
	consensus.QuietLogs()
	os.Exit(m.Run())
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func testConfig(t *testing.T, dir string) config.Config {
	t.Helper()
	c := config.Config{
		NodeName:        "solo",
		DataDir:         dir,
		BackendAddr:     fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		RaftAddr:        fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		AdminAddr:       fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		MetricsAddr:     config.MetricsOff,
		ReplicationAddr: fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		NBDAddr:         fmt.Sprintf("127.0.0.1:%d", freePort(t)),
	}
	c.ApplyDefaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	return c
}

// startDaemon runs a daemon until the returned stop function is called.
func startDaemon(t *testing.T, cfg config.Config) (stop func()) {
	t.Helper()
	d, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	return func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("daemon did not stop within 20s")
		}
	}
}

func dial(t *testing.T, dir, token string) *adminclient.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := adminclient.Dial(ctx, adminclient.Options{DataDir: dir, Token: token, Credentials: filepath.Join(dir, "admin")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestSingleNodeLifecycle exercises the daemon in process: create, refuse
// unauthenticated calls, commit config, restart from disk with state intact.
func TestSingleNodeLifecycle(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	stop := startDaemon(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	anon := dial(t, dir, "tdma1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	st, err := anon.Cluster.Status(ctx, &tandemv1.StatusRequest{})
	if err != nil || st.Initialized {
		t.Fatalf("status before create: %v %v", st, err)
	}
	if _, err := anon.Cluster.CreateToken(ctx, &tandemv1.CreateTokenRequest{}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("token before create: %v", err)
	}
	if _, err := anon.Cluster.Create(ctx, &tandemv1.CreateClusterRequest{Name: "Bad Name"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("bad cluster name: %v", err)
	}
	resp, err := anon.Cluster.Create(ctx, &tandemv1.CreateClusterRequest{Name: "solo"})
	if err != nil {
		t.Fatal(err)
	}
	if !resp.Status.Quorate || resp.Status.Leader != "solo" {
		t.Fatalf("after create: %+v", resp.Status)
	}
	if _, err := anon.Cluster.Create(ctx, &tandemv1.CreateClusterRequest{Name: "again"}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("second create with a wrong token: %v", err)
	}
	for _, f := range []string{"ca.crt", "admin.crt", "admin.key", "token"} {
		fi, err := os.Stat(filepath.Join(dir, "admin", f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("admin/%s: %v mode %v", f, err, fi.Mode())
		}
	}
	// The cluster secret that seals BMC passwords: 32 bytes, root only.
	if fi, err := os.Stat(filepath.Join(dir, "cluster.secret")); err != nil || fi.Mode().Perm() != 0o600 || fi.Size() != 32 {
		t.Fatalf("cluster.secret: %v %v", fi, err)
	}
	if _, err := anon.Cluster.SetConfig(ctx, &tandemv1.SetConfigRequest{Values: map[string]string{"a": "b"}}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("set config with a wrong token: %v", err)
	}
	admin := dial(t, dir, "")
	if _, err := admin.Cluster.Create(ctx, &tandemv1.CreateClusterRequest{Name: "again"}); status.Code(err) != codes.AlreadyExists {
		t.Fatalf("second create: %v", err)
	}
	if _, err := admin.Cluster.SetConfig(ctx, &tandemv1.SetConfigRequest{Values: map[string]string{"Bad Key": "x"}}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("bad config key: %v", err)
	}
	// Settings are checked against the registry and stored canonically;
	// a refused change changes nothing.
	set, err := admin.Cluster.SetConfig(ctx, &tandemv1.SetConfigRequest{Values: map[string]string{"resync.rate": "100M"}})
	if err != nil || set.Values["resync.rate"] != "100MiB/s" {
		t.Fatalf("set resync.rate=100M: %v %v", set, err)
	}
	for _, kv := range [][2]string{{"resync.rate", "abc"}, {"resync.rate", "-5"}, {"resync.rate", "100"}, {"nosuch.key", "1"}, {"zone", "a"}, {"ha.armed", "yes"}} {
		_, err := admin.Cluster.SetConfig(ctx, &tandemv1.SetConfigRequest{Values: map[string]string{kv[0]: kv[1]}})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), kv[0]) {
			t.Fatalf("set %s=%s: %v", kv[0], kv[1], err)
		}
	}
	if _, err := admin.Cluster.SetConfig(ctx, &tandemv1.SetConfigRequest{Values: map[string]string{"ha.dead_timeout": "1s"}}); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "HA timing") {
		t.Fatalf("incoherent HA timing: %v", err)
	}
	got, err := admin.Cluster.GetConfig(ctx, &tandemv1.GetConfigRequest{Defaults: true})
	if err != nil || len(got.Values) != 1 || got.Values["resync.rate"] != "100MiB/s" {
		t.Fatalf("config after refused changes: %v %v", got, err)
	}
	var rate *tandemv1.ConfigSetting
	for _, s := range got.Settings {
		if s.Key == "resync.rate" {
			rate = s
		}
	}
	if len(got.Settings) < 8 || rate == nil || rate.Value != "100MiB/s" || rate.DefaultValue != "0" || !rate.Set || rate.Unit != "rate" {
		t.Fatalf("settings with defaults: %v", got.Settings)
	}
	if _, err := admin.Cluster.CreateToken(ctx, &tandemv1.CreateTokenRequest{TtlSeconds: 8 * 24 * 3600}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("token ttl over a week: %v", err)
	}
	if _, err := admin.Node.Remove(ctx, &tandemv1.RemoveNodeRequest{Name: "solo"}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("removing the only node: %v", err)
	}
	stop()

	// Restart from the same data dir: identity, membership and config survive.
	stop = startDaemon(t, cfg)
	defer stop()
	admin = dial(t, dir, "")
	got, err = admin.Cluster.GetConfig(ctx, &tandemv1.GetConfigRequest{})
	if err != nil || got.Values["resync.rate"] != "100MiB/s" {
		t.Fatalf("config after restart: %v %v", got, err)
	}
	st, err = admin.Cluster.Status(ctx, &tandemv1.StatusRequest{})
	if err != nil || !st.Quorate || st.ClusterName != "solo" || len(st.Nodes) != 1 {
		t.Fatalf("status after restart: %+v %v", st, err)
	}
}

// TestSocketPermissions: the admin socket and the NBD socket (which
// serves every volume without authentication) are root only from the
// moment the daemon binds them, whatever the umask.
func TestSocketPermissions(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	old := syscall.Umask(0)
	d, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	syscall.Umask(old)
	if err != nil {
		t.Fatal(err)
	}
	defer d.closeListeners()
	for _, sock := range []string{"tandemd.sock", "nbd.sock"} {
		fi, err := os.Stat(filepath.Join(dir, sock))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want a socket with 0600", sock, fi.Mode())
		}
	}
}

func TestNewRefusesRenameAndCorruptIdentity(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	if err := nodedir.Dir(dir).SaveIdentity(&nodedir.Identity{ClusterName: "c", ClusterID: "id", NodeName: "other", ReplicaID: 1}); err != nil {
		t.Fatal(err)
	}
	_, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	var se *StartupError
	if !errors.As(err, &se) || !strings.Contains(err.Error(), "cannot be renamed") {
		t.Fatalf("renamed node: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "node.json"), []byte("{torn"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if !errors.As(err, &se) || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("corrupt identity: %v", err)
	}
}
