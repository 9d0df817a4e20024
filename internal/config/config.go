package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Defaults and limits.
const (
	DefaultDataDir = "/var/lib/tandem"
	// DefaultPath is the configuration file tandemd reads when not given
	// --config (the Debian package's systemd unit relies on it).
	DefaultPath        = "/etc/tandem/tandem.yaml"
	DefaultBackendPort = 7400
	DefaultRaftPort    = 7401
	DefaultAdminPort   = 7300
	DefaultMetricsPort = 9300
	// DefaultReplicationPort carries the data path between replicas.
	DefaultReplicationPort = 7402
	// DefaultNBDPort is IANA's port for NBD.
	DefaultNBDPort = 10809

	DefaultRTTMillisecond = 100
	// DefaultVolumeRTTMillisecond is the volume shards' tick (their own
	// Raft host), or raft.rtt_ms if slower.
	DefaultVolumeRTTMillisecond = 250
	DefaultElectionRTT          = 5
	DefaultHeartbeatRTT         = 1
	DefaultSnapshotEntries      = 1000

	// MaxFileSize bounds what Parse and Load accept: a config file is a few
	// hundred bytes, and anything near this is a mistake (wrong file).
	MaxFileSize = 1 << 20

	// MetricsOff as metrics_addr disables the metrics listener.
	MetricsOff = "off"

	RoleData    = "data"
	RoleWitness = "witness"
)

// Config is tandemd's configuration.
type Config struct {
	// NodeName names this node in the cluster and in its certificate.
	// Required; [a-z0-9][a-z0-9-]{0,62}.
	NodeName string `yaml:"node_name"`
	// DataDir holds the node's state. Default /var/lib/tandem.
	DataDir string `yaml:"data_dir"`
	// BackendAddr is the host:port of node-to-node gRPC, and the address
	// other nodes reach this node at, so it must be a real IP or host name.
	// Required; the port defaults to 7400.
	BackendAddr string `yaml:"backend_addr"`
	// RaftAddr is the Raft transport's host:port. Default: the backend host
	// with port 7401.
	RaftAddr string `yaml:"raft_addr"`
	// AdminAddr is the admin API's TCP host:port. Default: the backend host
	// with port 7300. An empty host (":7300") listens on all addresses.
	AdminAddr string `yaml:"admin_addr"`
	// MetricsAddr is the Prometheus endpoint's host:port. Default: the
	// backend host with port 9300. "off" disables it; so does an explicit
	// empty string in the file.
	MetricsAddr string `yaml:"metrics_addr"`
	// MetricsAllowWildcard lets metrics_addr listen on all addresses
	// (0.0.0.0, [::] or an empty host). Off by default: metrics, and
	// pprof when on, belong on the backend network or localhost.
	MetricsAllowWildcard bool `yaml:"metrics_allow_wildcard"`
	// Pprof serves Go's /debug/pprof profiles on the metrics listener, for
	// profiling the data path in the field. Off by default: profiles expose
	// internals to whoever reaches the metrics port.
	Pprof bool `yaml:"pprof"`
	// ReplicationAddr is the host:port replicas receive writes on (mTLS).
	// Default: the backend host with port 7402.
	ReplicationAddr string `yaml:"replication_addr"`
	// NBDAddr is the TCP NBD export of the volumes this node is primary
	// of, TLS only (client certificates from the cluster CA: export
	// certificates, see 'tandem volume export-cert'). Empty (the default)
	// turns it off; the unix socket <data_dir>/nbd.sock, which the VMs
	// use, always exists. A host without a port gets 10809.
	NBDAddr string `yaml:"nbd_addr"`
	// Role is "data" (default) or "witness" (votes in Raft, stores no data).
	Role string     `yaml:"role"`
	Log  LogConfig  `yaml:"log"`
	Raft RaftConfig `yaml:"raft"`
	// Disks lists the block devices or files this node serves. Absolute
	// paths.
	Disks []string `yaml:"disks"`
	// Compute runs the node's VMs through libvirt.
	Compute ComputeConfig `yaml:"compute"`
	// Watchdog is the watchdog device petted while the self-fence lease
	// holds. Default /dev/watchdog when it exists; "off" disables it.
	Watchdog string `yaml:"watchdog"`
}

// ComputeConfig is the compute section.
type ComputeConfig struct {
	// LibvirtSocket is libvirtd's unix socket. Default
	// /run/libvirt/libvirt-sock; "off" runs no VMs on this node.
	LibvirtSocket string `yaml:"libvirt_socket"`
	// LibvirtURI is opened on that socket. Default qemu:///system.
	LibvirtURI string `yaml:"libvirt_uri"`
	// MigrationURI is where other nodes' libvirtd reach this one for live
	// migration. Default qemu+tls://<backend host>/system: libvirtd
	// listens on TLS with this node's certificate (files in
	// <data_dir>/libvirt-pki, see deploy/libvirtd-tls.conf), and the
	// source adds its own client certificate directory as pkipath.
	MigrationURI string `yaml:"migration_uri"`
	// LibvirtInsecureTCP allows a qemu+tcp MigrationURI, i.e. a libvirtd
	// listening without TLS: anyone on the backend network can then run
	// and read this node's VMs. Off by default; Validate refuses
	// qemu+tcp without it.
	LibvirtInsecureTCP bool `yaml:"libvirt_insecure_tcp"`
	// MigrationStreamTLS encrypts QEMU's migration stream (guest memory)
	// too when MigrationURI is qemu+tls (VIR_MIGRATE_TLS; qemu.conf as in
	// deploy/qemu-migrate-tls.conf). Off by default: libvirt's connection
	// is TLS, the stream is plain TCP on the backend network, until the
	// stream's TLS is measured on a quiet machine (docs/design.md §7).
	MigrationStreamTLS bool `yaml:"migration_stream_tls"`
	// Bridge is the default bridge of VM network interfaces. Default vmbr0.
	Bridge string `yaml:"bridge"`
	// MemoryMiB is the memory VMs may use here. Default: what libvirt
	// reports for the host minus DefaultHostReserveMiB.
	MemoryMiB uint64 `yaml:"memory_mib"`
	// DomainType is "auto" (the default: KVM if a probe guest's kernel
	// boots under it, else TCG), "qemu" (TCG) or "kvm".
	DomainType string `yaml:"domain_type"`
	// KVMProbeKernel is the kernel the KVM probe boots (default: the
	// newest /boot/vmlinuz-*; with none, the probe says TCG).
	KVMProbeKernel string `yaml:"kvm_probe_kernel"`
}

// Compute defaults.
const (
	DefaultLibvirtSocket  = "/run/libvirt/libvirt-sock"
	DefaultLibvirtURI     = "qemu:///system"
	DefaultVMBridge       = "vmbr0"
	DefaultHostReserveMiB = 1024
	ComputeOff            = "off"
)

// ComputeEnabled reports whether this node runs VMs.
func (c Config) ComputeEnabled() bool {
	return c.Role != RoleWitness && c.Compute.LibvirtSocket != ComputeOff
}

// LogConfig is the log section.
type LogConfig struct {
	Format string `yaml:"format"` // text (default) or json
	Level  string `yaml:"level"`  // debug, info (default), warn or error
}

// RaftConfig is the raft section; see dragonboat's config.Config.
type RaftConfig struct {
	RTTMillisecond uint64 `yaml:"rtt_ms"` // default 100
	// VolumeRTTMillisecond is the tick of the volume shards, which run on
	// a Raft host of their own when it is above rtt_ms: dragonboat ticks
	// every shard of a host, idle or not, so this sets what an idle
	// volume costs. Default 250, or rtt_ms if larger; rtt_ms runs every
	// shard on one host.
	VolumeRTTMillisecond uint64 `yaml:"volume_rtt_ms"`
	ElectionRTT          uint64 `yaml:"election_rtt"`     // default 5
	HeartbeatRTT         uint64 `yaml:"heartbeat_rtt"`    // default 1
	SnapshotEntries      uint64 `yaml:"snapshot_entries"` // default 1000
}

// Default returns the defaults. The addresses are empty because they derive
// from BackendAddr, which has no default.
func Default() Config {
	var c Config
	c.ApplyDefaults()
	return c
}

// Parse parses a config file's contents, applies defaults and validates the
// result. An empty file is an empty config (and so fails validation for
// the required settings).
func Parse(data []byte) (Config, error) {
	c, err := Decode(data)
	if err != nil {
		return Config{}, err
	}
	c.ApplyDefaults()
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Decode is the strict YAML half of Parse, without defaults or validation.
// It is for a caller that overrides settings before the derived defaults
// are computed (a --backend-addr flag must move the derived raft_addr with
// it): Decode, set fields, ApplyDefaults, Validate.
func Decode(data []byte) (Config, error) {
	if len(data) > MaxFileSize {
		return Config{}, fmt.Errorf("config is %d bytes, over the %d byte limit; is this the right file?", len(data), MaxFileSize)
	}
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	switch err := dec.Decode(&c); {
	case errors.Is(err, io.EOF):
		return c, nil // empty, or only comments
	case err != nil:
		return Config{}, yamlError(err)
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case err == nil:
		return Config{}, errors.New("config has more than one YAML document (a second '---'); put all settings in one document")
	case !errors.Is(err, io.EOF):
		return Config{}, yamlError(err)
	}

	// Second look at the syntax tree, for what decoding into Config hides.
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return Config{}, yamlError(err) // not reached: decoded fine above
	}
	if err := checkWholeNumbers(&doc); err != nil {
		return Config{}, err
	}
	// Once decoded into a string, "metrics_addr: ''" cannot be told from a
	// missing setting; the first disables metrics, the second means the
	// default.
	if v := mappingValue(documentRoot(&doc), "metrics_addr"); v != nil && v.Kind == yaml.ScalarNode && v.ShortTag() == "!!str" && v.Value == "" {
		c.MetricsAddr = MetricsOff
	}
	return c, nil
}

// Load reads and parses the config file at path. Every error line names the
// file.
func Load(path string) (Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return Config{}, fmt.Errorf("reading config file: %w", err)
	}
	defer f.Close()
	// Read at most one byte more than the limit, so an enormous file (or
	// /dev/zero) is refused without reading all of it.
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return Config{}, fmt.Errorf("reading config file: %w", err)
	}
	c, err := Parse(data)
	if err != nil {
		return Config{}, prefixLines(path, err)
	}
	return c, nil
}

// ApplyDefaults fills every unset (zero) setting with its default: fixed
// ones, default ports for addresses given without one, and the listener
// addresses derived from the backend host. Values already set are kept,
// except that "off" in any letter case for MetricsAddr becomes "off".
func (c *Config) ApplyDefaults() {
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	}
	if c.Role == "" {
		c.Role = RoleData
	}
	if c.Log.Format == "" {
		c.Log.Format = "text"
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Raft.RTTMillisecond == 0 {
		c.Raft.RTTMillisecond = DefaultRTTMillisecond
	}
	if c.Raft.ElectionRTT == 0 {
		c.Raft.ElectionRTT = DefaultElectionRTT
	}
	if c.Raft.VolumeRTTMillisecond == 0 {
		c.Raft.VolumeRTTMillisecond = max(DefaultVolumeRTTMillisecond, c.Raft.RTTMillisecond)
	}
	if c.Raft.HeartbeatRTT == 0 {
		c.Raft.HeartbeatRTT = DefaultHeartbeatRTT
	}
	if c.Raft.SnapshotEntries == 0 {
		c.Raft.SnapshotEntries = DefaultSnapshotEntries
	}

	c.BackendAddr = withDefaultPort(c.BackendAddr, DefaultBackendPort)
	// Derive the other listeners only from a usable backend host; otherwise
	// Validate reports the backend address alone instead of four errors.
	host, _, err := net.SplitHostPort(c.BackendAddr)
	derive := err == nil && host != ""
	fill := func(addr *string, port int) {
		if *addr == "" && derive {
			*addr = net.JoinHostPort(host, strconv.Itoa(port))
		} else {
			*addr = withDefaultPort(*addr, port)
		}
	}
	fill(&c.RaftAddr, DefaultRaftPort)
	fill(&c.AdminAddr, DefaultAdminPort)
	fill(&c.ReplicationAddr, DefaultReplicationPort)
	if c.NBDAddr != "" {
		c.NBDAddr = withDefaultPort(c.NBDAddr, DefaultNBDPort)
	}
	if strings.EqualFold(c.MetricsAddr, MetricsOff) {
		c.MetricsAddr = MetricsOff
	} else {
		fill(&c.MetricsAddr, DefaultMetricsPort)
	}
	if c.Compute.LibvirtSocket == "" {
		c.Compute.LibvirtSocket = DefaultLibvirtSocket
	}
	if c.Compute.LibvirtURI == "" {
		c.Compute.LibvirtURI = DefaultLibvirtURI
	}
	if c.Compute.Bridge == "" {
		c.Compute.Bridge = DefaultVMBridge
	}
	if c.Compute.DomainType == "" {
		c.Compute.DomainType = "auto"
	}
	if c.Compute.MigrationURI == "" && derive {
		h := host
		if ip := net.ParseIP(host); ip != nil && ip.To4() == nil {
			h = "[" + host + "]"
		}
		c.Compute.MigrationURI = "qemu+tls://" + h + "/system"
	}
}

// MetricsEnabled reports whether the metrics listener is on.
func (c Config) MetricsEnabled() bool {
	return c.MetricsAddr != "" && !strings.EqualFold(c.MetricsAddr, MetricsOff)
}

// withDefaultPort appends port to an address given as a bare host ("node1",
// "10.0.0.1", "fd00::1" or "[fd00::1]"). Anything else is returned unchanged
// for Validate to judge.
func withDefaultPort(addr string, port int) string {
	if addr == "" {
		return ""
	}
	if _, _, err := net.SplitHostPort(addr); err == nil {
		return addr
	}
	p := strconv.Itoa(port)
	if inner, ok := strings.CutPrefix(addr, "["); ok {
		if inner, ok := strings.CutSuffix(inner, "]"); ok {
			if _, err := netip.ParseAddr(inner); err == nil {
				return net.JoinHostPort(inner, p)
			}
		}
		return addr
	}
	if _, err := netip.ParseAddr(addr); err == nil || !strings.Contains(addr, ":") {
		return net.JoinHostPort(addr, p)
	}
	return addr
}

// checkWholeNumbers rejects non-integer values for the raft settings:
// yaml/v3 silently truncates a float into an unsigned field (1.5 becomes 1,
// -0.5 becomes 0 and so "use the default", 1e30 becomes garbage).
func checkWholeNumbers(doc *yaml.Node) error {
	raft := mappingValue(documentRoot(doc), "raft")
	var errs []error
	for _, key := range []string{"rtt_ms", "election_rtt", "heartbeat_rtt", "snapshot_entries"} {
		v := mappingValue(raft, key)
		if v == nil || v.Kind != yaml.ScalarNode {
			continue // absent, or already refused by the typed decoder
		}
		if tag := v.ShortTag(); tag != "!!int" && tag != "!!null" {
			errs = append(errs, fmt.Errorf("line %d: raft.%s: expected a whole number from 0 to %d, got %s", v.Line, key, uint64(math.MaxUint64), v.Value))
		}
	}
	return errors.Join(errs...)
}

// documentRoot returns the top-level node of a parsed document, or nil.
func documentRoot(doc *yaml.Node) *yaml.Node {
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		return doc.Content[0]
	}
	return nil
}

// mappingValue returns the value node for key in mapping node m, following
// aliases, or nil.
func mappingValue(m *yaml.Node, key string) *yaml.Node {
	for m != nil && m.Kind == yaml.AliasNode {
		m = m.Alias
	}
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Kind == yaml.ScalarNode && m.Content[i].Value == key {
			v := m.Content[i+1]
			for v != nil && v.Kind == yaml.AliasNode {
				v = v.Alias
			}
			return v
		}
	}
	return nil
}

// yamlError turns yaml/v3's errors into one line per problem, naming
// settings as they appear in the file rather than by Go type.
func yamlError(err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return fmt.Errorf("invalid YAML: %s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	errs := make([]error, 0, len(te.Errors))
	for _, e := range te.Errors {
		errs = append(errs, errors.New(rewriteTypeError(e)))
	}
	return errors.Join(errs...)
}

// rewriteTypeError rewrites one yaml/v3 TypeError line, such as
// "line 3: field rtt not found in type config.RaftConfig", into
// "line 3: unknown setting "raft.rtt"". Lines it does not recognise are
// returned as they are.
func rewriteTypeError(e string) string {
	line, msg, ok := strings.Cut(e, ": ")
	if !ok || !strings.HasPrefix(line, "line ") {
		return e
	}
	if rest, ok := strings.CutPrefix(msg, "field "); ok {
		if name, typ, ok := strings.Cut(rest, " not found in type "); ok {
			return fmt.Sprintf("%s: unknown setting %q", line, section(typ)+name)
		}
	}
	if rest, ok := strings.CutPrefix(msg, "cannot unmarshal "); ok {
		if got, typ, ok := strings.Cut(rest, " into "); ok {
			return fmt.Sprintf("%s: expected %s, got %s", line, describeType(typ), describeValue(got))
		}
	}
	return e
}

func section(goType string) string {
	switch goType {
	case "config.LogConfig":
		return "log."
	case "config.RaftConfig":
		return "raft."
	}
	return ""
}

func describeType(goType string) string {
	switch goType {
	case "uint64":
		return "a whole number (0 or more)"
	case "string":
		return "a single value"
	case "[]string":
		return "a list of values"
	case "config.Config", "config.LogConfig", "config.RaftConfig":
		return "a mapping of settings (name: value)"
	}
	return goType
}

// describeValue turns yaml's "!!seq" or "!!str `abc`" into plain words.
func describeValue(v string) string {
	tag, val, _ := strings.Cut(v, " ")
	switch tag {
	case "!!seq":
		return "a list"
	case "!!map":
		return "a mapping"
	}
	if val != "" {
		return val
	}
	return v
}

// prefixLines prefixes each line of a (possibly joined) error with prefix.
func prefixLines(prefix string, err error) error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs := j.Unwrap()
		out := make([]error, len(errs))
		for i, e := range errs {
			out[i] = fmt.Errorf("%s: %w", prefix, e)
		}
		return errors.Join(out...)
	}
	return fmt.Errorf("%s: %w", prefix, err)
}
