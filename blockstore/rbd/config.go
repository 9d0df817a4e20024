package rbd

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"

	"github.com/tandemhci/tandem/internal/validate"
)

// Defaults of Config.
const (
	// DefaultMonTimeout bounds connecting and every monitor command
	// (client_mount_timeout, rados_mon_op_timeout).
	DefaultMonTimeout = 10 * time.Second
	// DefaultOSDTimeout bounds every OSD operation, I/O included
	// (rados_osd_op_timeout): a request stuck on unreachable OSDs fails
	// with ErrUnavailable instead of hanging its caller for ever.
	DefaultOSDTimeout = 30 * time.Second
	// DefaultBlocklistExpiry is how long a blocklist entry added by
	// Takeover lasts unless removed: long enough that the fenced client
	// cannot come back by itself; the entry is removed by
	// BlocklistRemove once its node provably dropped the client.
	DefaultBlocklistExpiry = 30 * 24 * time.Hour
)

// Config says how a node reaches one Ceph pool. The key is a secret: it
// is never logged, and String leaves it out.
type Config struct {
	// MonHost lists the monitors in Ceph's mon_host syntax
	// ("10.0.0.5,10.0.0.6:6789" or "[v2:10.0.0.5:3300,v1:10.0.0.5:6789]").
	MonHost string
	// Client is the cephx user without "client." ("tandem").
	Client string
	// Key is the user's cephx key, base64 as in a keyring file.
	Key string
	// Pool holds the images.
	Pool string
	// MonTimeout and OSDTimeout default to DefaultMonTimeout and
	// DefaultOSDTimeout.
	MonTimeout time.Duration
	OSDTimeout time.Duration
}

// String describes the configuration without its key.
func (c Config) String() string {
	return fmt.Sprintf("client.%s@%s/%s", c.Client, c.MonHost, c.Pool)
}

// Validate checks the configuration's form (not whether Ceph accepts it).
// Errors wrap ErrInvalid.
func (c Config) Validate() error {
	if strings.TrimSpace(c.MonHost) == "" {
		return fmt.Errorf("%w: no Ceph monitor address", ErrInvalid)
	}
	if err := printable("monitor address", c.MonHost, 1024); err != nil {
		return err
	}
	if c.Client == "" {
		return fmt.Errorf("%w: no Ceph client name", ErrInvalid)
	}
	if strings.HasPrefix(c.Client, "client.") {
		return fmt.Errorf("%w: Ceph client name %s: give it without the \"client.\" prefix", ErrInvalid, validate.Show(c.Client))
	}
	if err := printable("Ceph client name", c.Client, 128); err != nil {
		return err
	}
	if err := PoolName(c.Pool); err != nil {
		return err
	}
	if c.Key == "" {
		return fmt.Errorf("%w: no cephx key for client.%s", ErrInvalid, c.Client)
	}
	// A cephx key is base64 of a 28-byte encoding (type, creation time,
	// length, 16-byte secret); checked here so a mangled key file gets a
	// clear error instead of a failed authentication.
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(c.Key))
	if err != nil || len(raw) < 12 {
		return fmt.Errorf("%w: the cephx key for client.%s is not a Ceph key (base64, as in a keyring's \"key = ...\" line)", ErrInvalid, c.Client)
	}
	if c.MonTimeout < 0 || c.OSDTimeout < 0 {
		return fmt.Errorf("%w: negative timeout", ErrInvalid)
	}
	return nil
}

// PoolName checks a Ceph pool name: 1-127 printable characters without
// spaces or '/'.
func PoolName(s string) error {
	if s == "" {
		return fmt.Errorf("%w: no Ceph pool name", ErrInvalid)
	}
	if err := printable("pool name", s, 127); err != nil {
		return err
	}
	if strings.ContainsAny(s, "/ @") {
		return fmt.Errorf("%w: pool name %s contains '/', '@' or a space", ErrInvalid, validate.Show(s))
	}
	return nil
}

// ImageName checks an image name: Tandem's volume name rule (1-63 of
// [a-z0-9_-]), which also keeps it free of RBD's separators '/' and '@'.
func ImageName(s string) error {
	if err := validate.VolumeName(s); err != nil {
		return fmt.Errorf("%w: %s", ErrInvalid, validate.Message(err))
	}
	return nil
}

// ImageSize checks an image's size: Tandem's volume size rule (a positive
// multiple of 4 KiB, at most 64 TiB).
func ImageSize(n int64) error {
	if err := validate.VolumeSize(n); err != nil {
		return fmt.Errorf("%w: %s", ErrInvalid, validate.Message(err))
	}
	return nil
}

func printable(what, s string, maxLen int) error {
	if len(s) > maxLen {
		return fmt.Errorf("%w: %s is %d characters; at most %d", ErrInvalid, what, len(s), maxLen)
	}
	for _, r := range s {
		if !unicode.IsPrint(r) || r > unicode.MaxASCII {
			return fmt.Errorf("%w: %s %s contains a control or non-ASCII character", ErrInvalid, what, validate.Show(s))
		}
	}
	return nil
}

// Errors of the package, wrapped with the operation and Ceph's own error.
// Each names one cause an operator can act on.
var (
	// ErrNotBuilt: this binary was built without Ceph (no "ceph" tag).
	ErrNotBuilt = errors.New("this binary was built without Ceph support (build with -tags ceph,pacific, as make build does)")
	// ErrInvalid: a name, size or configuration value is malformed;
	// nothing was changed.
	ErrInvalid = errors.New("invalid argument")
	// ErrUnavailable: no monitor (or no OSD, for I/O) answered within the
	// configured timeout.
	ErrUnavailable = errors.New("the Ceph cluster is unavailable")
	// ErrAuth: Ceph refused the client's name or key, or its capabilities
	// do not allow the operation.
	ErrAuth = errors.New("the Ceph cluster refused the client's credentials")
	// ErrNoPool: the pool does not exist.
	ErrNoPool = errors.New("no such Ceph pool")
	// ErrNotFound: the image does not exist.
	ErrNotFound = errors.New("no such RBD image")
	// ErrExists: an image of that name exists already.
	ErrExists = errors.New("the RBD image exists already")
	// ErrNoSpace: the pool cannot hold an image of that size (or is full).
	ErrNoSpace = errors.New("not enough space in the Ceph pool")
	// ErrBlocklisted: Ceph blocklisted this client (EBLOCKLISTED), as a
	// node that took the volume over does to its old owner; the request
	// was not applied, and none after it will be.
	ErrBlocklisted = errors.New("this client is blocklisted by Ceph (EBLOCKLISTED): another node took the volume over")
	// ErrLockHeld: another client holds the image's exclusive lock, so
	// this one may not write (Ceph's EROFS).
	ErrLockHeld = errors.New("another client holds the image's exclusive lock")
	// ErrBusy: the image is still open somewhere (it has watchers).
	ErrBusy = errors.New("the RBD image is in use")
)
