package cloudinit

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"
)

// MaxTotal bounds the seed's files together: the seed lives in the VM's
// record in the replicated metadata, which is not a blob store.
const MaxTotal = 64 << 10

// Volume label and file names of a NoCloud seed.
const (
	Label         = "cidata"
	UserData      = "user-data"
	MetaData      = "meta-data"
	NetworkConfig = "network-config"
)

// ErrInvalid is wrapped by every Validate error.
var ErrInvalid = errors.New("invalid cloud-init seed")

// Seed is the content of a NoCloud seed. An empty MetaData means the
// default (DefaultMetaData); an empty NetworkConfig leaves the file out.
type Seed struct {
	UserData      []byte
	MetaData      []byte
	NetworkConfig []byte
}

// DefaultMetaData is the meta-data of a VM that gives none: its UUID as
// the instance id (a new id makes cloud-init run its per-instance steps
// again) and its name as the host name.
func DefaultMetaData(uuid, name string) []byte {
	return fmt.Appendf(nil, "instance-id: %s\nlocal-hostname: %s\n", uuid, name)
}

// Size is the bytes the seed's files take, with the default meta-data for
// a VM named name when it has none.
func (s Seed) Size(uuid, name string) int {
	n := len(s.UserData) + len(s.NetworkConfig)
	if len(s.MetaData) == 0 {
		return n + len(DefaultMetaData(uuid, name))
	}
	return n + len(s.MetaData)
}

// user-data headers cloud-init acts on other than #cloud-config (whose
// body Validate parses as YAML).
var otherHeaders = []string{"#!", "#include", "#cloud-boothook", "#cloud-config-archive", "#part-handler", "#cloud-config-jsonp", "Content-Type:"}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// Validate checks a seed for a VM (its UUID and name make the default
// meta-data): sizes, and that each file is something cloud-init reads.
func (s Seed) Validate(uuid, name string) error {
	if len(s.UserData) == 0 {
		return invalid("user-data is empty")
	}
	if n := s.Size(uuid, name); n > MaxTotal {
		return invalid("user-data, meta-data and network-config are %d bytes together, at most %d (64 KiB): the seed is kept in the cluster's metadata", n, MaxTotal)
	}
	if err := checkUserData(s.UserData); err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		b    []byte
	}{{MetaData, s.MetaData}, {NetworkConfig, s.NetworkConfig}} {
		if len(f.b) == 0 {
			continue
		}
		if err := yamlMapping(f.b); err != nil {
			return invalid("%s: %v", f.name, err)
		}
	}
	return nil
}

// checkUserData accepts a #cloud-config document that is a YAML mapping,
// or user-data of another kind cloud-init runs (a script, an include
// list, MIME multipart ...), recognised by its first line.
func checkUserData(b []byte) error {
	first, _, _ := bytes.Cut(b, []byte("\n"))
	first = bytes.TrimRight(first, "\r \t")
	switch {
	case string(first) == "#cloud-config":
		if err := yamlMapping(b); err != nil {
			return invalid("user-data: #cloud-config but not valid YAML: %v", err)
		}
		return nil
	case strings.HasPrefix(string(first), "#cloud-config") && !strings.HasPrefix(string(first), "#cloud-config-"):
		return invalid("user-data: the first line must be exactly #cloud-config, not %q", first)
	}
	for _, h := range otherHeaders {
		if bytes.HasPrefix(first, []byte(h)) {
			return nil
		}
	}
	if yamlMapping(b) == nil {
		return invalid("user-data: YAML without the first line #cloud-config, which cloud-init would ignore: add that line")
	}
	return invalid("user-data must be #cloud-config YAML (first line #cloud-config) or a script (first line #!), not %q...", clip(first, 40))
}

// yamlMapping checks that b is one YAML document holding a mapping (or
// nothing but comments).
func yamlMapping(b []byte) error {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // comments only
		}
		return err
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return errors.New("more than one YAML document")
	}
	if len(doc.Content) == 1 && doc.Content[0].Kind != yaml.MappingNode {
		return fmt.Errorf("a YAML mapping (key: value lines) is needed, line %d holds something else", doc.Content[0].Line)
	}
	return nil
}

func clip(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n])
	}
	return string(b)
}

// Marshal is the seed's plain form, which the VM record keeps sealed:
// each file as a uvarint length and its bytes, in the order user-data,
// meta-data, network-config (no base64 inside the sealed blob's own).
func (s Seed) Marshal() []byte {
	var b []byte
	for _, f := range [][]byte{s.UserData, s.MetaData, s.NetworkConfig} {
		b = binary.AppendUvarint(b, uint64(len(f)))
		b = append(b, f...)
	}
	return b
}

// Unmarshal reads what Marshal wrote.
func Unmarshal(b []byte) (Seed, error) {
	var files [3][]byte
	for i := range files {
		n, k := binary.Uvarint(b)
		if k <= 0 || n > uint64(len(b)-k) {
			return Seed{}, errors.New("cloud-init seed: malformed")
		}
		if n > 0 {
			files[i] = bytes.Clone(b[k : k+int(n)])
		}
		b = b[k+int(n):]
	}
	if len(b) != 0 {
		return Seed{}, errors.New("cloud-init seed: malformed (trailing bytes)")
	}
	return Seed{UserData: files[0], MetaData: files[1], NetworkConfig: files[2]}, nil
}

// Files are the seed's files by name, the default meta-data filled in.
func (s Seed) Files(uuid, name string) map[string][]byte {
	out := map[string][]byte{UserData: s.UserData, MetaData: s.MetaData}
	if len(out[MetaData]) == 0 {
		out[MetaData] = DefaultMetaData(uuid, name)
	}
	if len(s.NetworkConfig) > 0 {
		out[NetworkConfig] = s.NetworkConfig
	}
	return out
}

// Build writes the seed of the VM (uuid, name) as an ISO 9660 file at
// path (mode 0600), through a temporary file renamed into place.
func Build(ctx context.Context, path string, s Seed, uuid, name string) error {
	dir, err := os.MkdirTemp(filepath.Dir(path), ".cidata-")
	if err != nil {
		return fmt.Errorf("cloud-init seed: %w", err)
	}
	defer os.RemoveAll(dir)
	src := filepath.Join(dir, "files")
	if err := os.Mkdir(src, 0o700); err != nil {
		return fmt.Errorf("cloud-init seed: %w", err)
	}
	for n, b := range s.Files(uuid, name) {
		if err := os.WriteFile(filepath.Join(src, n), b, 0o600); err != nil {
			return fmt.Errorf("cloud-init seed: %w", err)
		}
	}
	tmp := filepath.Join(dir, "seed.iso")
	// -J -r: Joliet and Rock Ridge names ("user-data"); the plain ISO 9660
	// names would be 8.3 upper case.
	cmd := exec.CommandContext(ctx, "xorriso", "-as", "mkisofs", "-quiet", "-V", Label, "-J", "-r", "-o", tmp, src)
	if out, err := cmd.CombinedOutput(); err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return fmt.Errorf("cloud-init seed: xorriso (Debian package xorriso) is needed to build it: %w", err)
		}
		return fmt.Errorf("cloud-init seed: xorriso: %w: %s", err, strings.TrimSpace(string(out)))
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return fmt.Errorf("cloud-init seed: %w", err)
	}
	if f, err := os.Open(tmp); err == nil {
		_ = f.Sync()
		f.Close()
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("cloud-init seed: %w", err)
	}
	return nil
}
