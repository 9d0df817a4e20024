package adminclient

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// Defaults and environment variables consulted when an Options field is empty.
const (
	DefaultDataDir = "/var/lib/tandem"
	DefaultTimeout = 10 * time.Second

	EnvDataDir     = "TANDEM_DATA_DIR"
	EnvCredentials = "TANDEM_CREDENTIALS"
	EnvToken       = "TANDEM_TOKEN"

	// SocketName is the daemon's admin socket inside its data dir.
	SocketName = "tandemd.sock"
	// CredentialsDirName is where a node writes the admin credentials inside its data dir.
	CredentialsDirName = "admin"

	CAFile    = "ca.crt"
	CertFile  = "admin.crt"
	KeyFile   = "admin.key"
	TokenFile = "token"
)

// Options says where and how to reach the admin API. Empty fields take the
// defaults described on each field.
type Options struct {
	// DataDir is the daemon data dir on this machine; default /var/lib/tandem (env TANDEM_DATA_DIR).
	DataDir string
	// Server is host:port of a remote admin API; empty means the local unix socket <DataDir>/tandemd.sock.
	Server string
	// Credentials is the dir with ca.crt, admin.crt, admin.key and token;
	// default <DataDir>/admin (env TANDEM_CREDENTIALS).
	Credentials string
	// Token is the API credential's bearer secret (env TANDEM_TOKEN).
	// Remotely it defaults to the contents of <Credentials>/token. On the
	// local socket none is sent unless given here: the daemon treats such
	// calls as the node's local admin.
	Token string
	// Timeout applies to every call whose context has no deadline; default 10s.
	Timeout time.Duration
}

// Resolved returns o with every default filled in (environment first, then
// built-in defaults). It does not read the token file.
func (o Options) Resolved() Options {
	if o.DataDir == "" {
		o.DataDir = os.Getenv(EnvDataDir)
	}
	if o.DataDir == "" {
		o.DataDir = DefaultDataDir
	}
	if o.Credentials == "" {
		o.Credentials = os.Getenv(EnvCredentials)
	}
	if o.Credentials == "" {
		o.Credentials = filepath.Join(o.DataDir, CredentialsDirName)
	}
	if o.Token == "" {
		o.Token = os.Getenv(EnvToken)
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	return o
}

// SocketPath is the local admin socket for these options.
func (o Options) SocketPath() string {
	return filepath.Join(o.Resolved().DataDir, SocketName)
}

// Client holds one connection and a stub per admin service.
type Client struct {
	Cluster tandemv1.ClusterClient
	Node    tandemv1.NodeClient
	Volume  tandemv1.VolumeClient
	VM      tandemv1.VMClient
	HA      tandemv1.HAClient
	// Credential manages named API credentials.
	Credential tandemv1.CredentialClient
	// Storage manages external storage (Ceph RBD).
	Storage tandemv1.StorageClient
	// Image manages ISO images (issue 18).
	Image tandemv1.ImageClient
	// Console opens VMs' serial and VNC consoles (issue 18).
	Console tandemv1.ConsoleClient
	// GuestAgent freezes and thaws guests' file systems (issue 18).
	GuestAgent tandemv1.GuestAgentClient

	// Target is what the client talks to: the socket path or host:port.
	Target string

	conn *grpc.ClientConn
}

// Dial prepares a client. Like grpc.NewClient it does not wait for the
// daemon: an unreachable daemon shows up as Unavailable on the first call
// (see Explain), so callers such as tests can dial before tandemd is up.
func Dial(ctx context.Context, o Options) (*Client, error) {
	o = o.Resolved()
	local := o.Server == ""

	var (
		target string // grpc target
		shown  string // what users see in errors
		creds  credentials.TransportCredentials
	)
	if local {
		sock, err := filepath.Abs(filepath.Join(o.DataDir, SocketName))
		if err != nil {
			return nil, fmt.Errorf("admin socket path: %w", err)
		}
		target, shown = "unix://"+sock, sock
		// The socket is root-only (0600, and the daemon checks the peer's
		// uid), so the file mode is the transport security; a call without
		// a token is the node's local admin.
		creds = insecure.NewCredentials()
	} else {
		if _, _, err := net.SplitHostPort(o.Server); err != nil {
			return nil, fmt.Errorf("server address %q is not host:port: %w", o.Server, err)
		}
		target, shown = o.Server, o.Server
		tc, err := remoteTLS(o.Credentials)
		if err != nil {
			return nil, err
		}
		creds = credentials.NewTLS(tc)
	}

	token := o.Token
	if token == "" && !local {
		t, err := readToken(o.Credentials)
		if err != nil {
			return nil, err
		}
		token = t
	}

	dopts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithUnaryInterceptor(callInterceptor(shown, local, o.Timeout)),
	}
	if token != "" {
		dopts = append(dopts, grpc.WithPerRPCCredentials(bearer{token: token, secure: !local}))
	}
	conn, err := grpc.NewClient(target, dopts...)
	if err != nil {
		return nil, fmt.Errorf("admin API at %s: %w", shown, err)
	}
	return &Client{
		Cluster:    tandemv1.NewClusterClient(conn),
		Node:       tandemv1.NewNodeClient(conn),
		Volume:     tandemv1.NewVolumeClient(conn),
		VM:         tandemv1.NewVMClient(conn),
		HA:         tandemv1.NewHAClient(conn),
		Credential: tandemv1.NewCredentialClient(conn), Storage: tandemv1.NewStorageClient(conn),
		Image:      tandemv1.NewImageClient(conn),
		Console:    tandemv1.NewConsoleClient(conn),
		GuestAgent: tandemv1.NewGuestAgentClient(conn),
		Target:     shown,
		conn:       conn,
	}, nil
}

// Close releases the connection.
func (c *Client) Close() error {
	if c == nil || c.conn == nil {
		return nil
	}
	return c.conn.Close()
}

// readToken reads <dir>/token, which every remote call needs. Only the
// node that created the cluster has one (the bootstrap credential).
func readToken(dir string) (string, error) {
	p := filepath.Join(dir, TokenFile)
	b, err := os.ReadFile(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", &CredentialsError{Path: p, Hint: howToGetToken(), Err: err}
	case err != nil:
		return "", credentialError(p, err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("admin token file %s is empty: %s", p, howToGetToken())
	}
	return tok, nil
}

func howToGetToken() string {
	return fmt.Sprintf("make an API credential on a node ('tandem credential create NAME --role admin|operator|readonly') and put its secret in that file, --token or %s", EnvToken)
}

// credentialError names the file and says how to fix the common causes.
func credentialError(path string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return &CredentialsError{Path: path, Hint: howToGetCredentials(filepath.Dir(path)), Err: err}
	case errors.Is(err, fs.ErrPermission):
		return &CredentialsError{Path: path, Hint: "they are root-only; run as root", Err: err}
	default:
		return fmt.Errorf("admin credentials: %s: %w", path, err)
	}
}

func howToGetCredentials(dir string) string {
	return fmt.Sprintf("copy <data_dir>/%s (usually %s) from a cluster node to %s, or point --credentials (%s) at a copy",
		CredentialsDirName, filepath.Join(DefaultDataDir, CredentialsDirName), dir, EnvCredentials)
}

// CredentialsError is a missing or unreadable admin credential file.
type CredentialsError struct {
	Path string
	Hint string
	Err  error
}

// Error leaves out the wrapped os error: it would only repeat the path.
func (e *CredentialsError) Error() string {
	what := "cannot read"
	if errors.Is(e.Err, fs.ErrNotExist) {
		what = "missing"
	}
	return fmt.Sprintf("admin credentials: %s %s: %s", what, e.Path, e.Hint)
}

func (e *CredentialsError) Unwrap() error { return e.Err }

// bearer attaches the admin token to every call.
type bearer struct {
	token  string
	secure bool
}

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

// RequireTransportSecurity is false on the unix socket: it carries no TLS,
// and gRPC would otherwise refuse to send the token over it.
func (b bearer) RequireTransportSecurity() bool { return b.secure }

// callInterceptor applies the default timeout and tags errors with where the
// call went, so Explain can say which socket or server was unreachable.
func callInterceptor(target string, local bool, timeout time.Duration) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, timeout)
			defer cancel()
		}
		if err := invoker(ctx, method, req, reply, cc, opts...); err != nil {
			return &CallError{Method: method, Target: target, Local: local, Timeout: timeout, Err: err}
		}
		return nil
	}
}
