package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func mustParse(t *testing.T, s string) Config {
	t.Helper()
	c, err := Parse([]byte(s))
	if err != nil {
		t.Fatalf("Parse(%q): %v", s, err)
	}
	return c
}

// parseErr parses s, expects failure and returns the error's lines.
func parseErr(t *testing.T, s string) []string {
	t.Helper()
	_, err := Parse([]byte(s))
	if err == nil {
		t.Fatalf("Parse(%q) succeeded", s)
	}
	return strings.Split(err.Error(), "\n")
}

func wantLine(t *testing.T, lines []string, want string) {
	t.Helper()
	for _, l := range lines {
		if strings.Contains(l, want) {
			return
		}
	}
	t.Errorf("no error line contains %q; got:\n%s", want, strings.Join(lines, "\n"))
}

const minimal = "node_name: node-1\nbackend_addr: 10.0.0.1\n"

func TestDefault(t *testing.T) {
	c := Default()
	want := Config{
		DataDir: "/var/lib/tandem",
		Role:    "data",
		Log:     LogConfig{Format: "text", Level: "info"},
		Raft:    RaftConfig{RTTMillisecond: 100, VolumeRTTMillisecond: 250, ElectionRTT: 5, HeartbeatRTT: 1, SnapshotEntries: 1000},
		Compute: ComputeConfig{LibvirtSocket: DefaultLibvirtSocket, LibvirtURI: DefaultLibvirtURI, Bridge: DefaultVMBridge, DomainType: "auto"},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("Default() = %+v, want %+v", c, want)
	}
	// The defaults are valid once the required settings are given.
	c.NodeName = "n1"
	c.BackendAddr = "10.0.0.1"
	c.ApplyDefaults()
	if err := c.Validate(); err != nil {
		t.Errorf("defaults plus required settings: %v", err)
	}
}

func TestParseMinimal(t *testing.T) {
	c := mustParse(t, minimal)
	want := Config{
		NodeName:    "node-1",
		DataDir:     "/var/lib/tandem",
		BackendAddr: "10.0.0.1:7400",
		RaftAddr:    "10.0.0.1:7401",
		AdminAddr:   "10.0.0.1:7300",
		MetricsAddr: "10.0.0.1:9300", ReplicationAddr: "10.0.0.1:7402",
		Role: "data",
		Log:  LogConfig{Format: "text", Level: "info"},
		Raft: RaftConfig{RTTMillisecond: 100, VolumeRTTMillisecond: 250, ElectionRTT: 5, HeartbeatRTT: 1, SnapshotEntries: 1000},
		Compute: ComputeConfig{LibvirtSocket: DefaultLibvirtSocket, LibvirtURI: DefaultLibvirtURI, Bridge: DefaultVMBridge, DomainType: "auto",
			MigrationURI: "qemu+tls://10.0.0.1/system"},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("got  %+v\nwant %+v", c, want)
	}
	if !c.MetricsEnabled() {
		t.Error("metrics disabled by default")
	}
}

func TestParseFull(t *testing.T) {
	c := mustParse(t, `
# every setting
node_name: w1
data_dir: /srv/tandem
backend_addr: 10.0.0.5:8400
raft_addr: 10.0.1.5:8401
admin_addr: 127.0.0.1:8300
metrics_addr: 0.0.0.0:9100
metrics_allow_wildcard: true
role: witness
log:
  format: json
  level: debug
raft:
  rtt_ms: 5
  election_rtt: 20
  heartbeat_rtt: 2
  snapshot_entries: 50
compute:
  libvirt_socket: /run/lv/sock
  bridge: br9
  memory_mib: 4096
disks:
  - /dev/disk/by-id/nvme-a
  - /dev/sdb
`)
	want := Config{
		NodeName:    "w1",
		DataDir:     "/srv/tandem",
		BackendAddr: "10.0.0.5:8400",
		RaftAddr:    "10.0.1.5:8401",
		AdminAddr:   "127.0.0.1:8300",
		MetricsAddr: "0.0.0.0:9100", MetricsAllowWildcard: true, ReplicationAddr: "10.0.0.5:7402",
		Role:  "witness",
		Log:   LogConfig{Format: "json", Level: "debug"},
		Raft:  RaftConfig{RTTMillisecond: 5, VolumeRTTMillisecond: 250, ElectionRTT: 20, HeartbeatRTT: 2, SnapshotEntries: 50},
		Disks: []string{"/dev/disk/by-id/nvme-a", "/dev/sdb"},
		Compute: ComputeConfig{LibvirtSocket: "/run/lv/sock", LibvirtURI: DefaultLibvirtURI, Bridge: "br9", MemoryMiB: 4096, DomainType: "auto",
			MigrationURI: "qemu+tls://10.0.0.5/system"},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("got  %+v\nwant %+v", c, want)
	}
}

func TestDerivedAddresses(t *testing.T) {
	cases := []struct {
		backend                                 string
		wantBackend, wantRaft, wantAdmin, wantM string
	}{
		{"10.0.0.1", "10.0.0.1:7400", "10.0.0.1:7401", "10.0.0.1:7300", "10.0.0.1:9300"},
		{"10.0.0.1:9000", "10.0.0.1:9000", "10.0.0.1:7401", "10.0.0.1:7300", "10.0.0.1:9300"},
		{"fd00::1", "[fd00::1]:7400", "[fd00::1]:7401", "[fd00::1]:7300", "[fd00::1]:9300"},
		{"[fd00::1]", "[fd00::1]:7400", "[fd00::1]:7401", "[fd00::1]:7300", "[fd00::1]:9300"},
		{"[fd00::1]:7500", "[fd00::1]:7500", "[fd00::1]:7401", "[fd00::1]:7300", "[fd00::1]:9300"},
		{"node-1.example.com", "node-1.example.com:7400", "node-1.example.com:7401", "node-1.example.com:7300", "node-1.example.com:9300"},
	}
	for _, tc := range cases {
		c := mustParse(t, "node_name: n\nbackend_addr: \""+tc.backend+"\"\n")
		got := [4]string{c.BackendAddr, c.RaftAddr, c.AdminAddr, c.MetricsAddr}
		want := [4]string{tc.wantBackend, tc.wantRaft, tc.wantAdmin, tc.wantM}
		if got != want {
			t.Errorf("backend %q: got %q, want %q", tc.backend, got, want)
		}
	}

	// Explicit addresses without a port get their own default port.
	c := mustParse(t, minimal+"raft_addr: 10.0.1.1\nadmin_addr: 127.0.0.1\nmetrics_addr: \"[::1]\"\n")
	if got, want := [3]string{c.RaftAddr, c.AdminAddr, c.MetricsAddr}, [3]string{"10.0.1.1:7401", "127.0.0.1:7300", "[::1]:9300"}; got != want {
		t.Errorf("explicit addresses: got %q, want %q", got, want)
	}

	// Listen-only addresses may listen on all addresses; metrics only
	// when explicitly allowed.
	c = mustParse(t, minimal+"admin_addr: \":7300\"\nmetrics_addr: 0.0.0.0\nmetrics_allow_wildcard: true\n")
	if c.AdminAddr != ":7300" || c.MetricsAddr != "0.0.0.0:9300" {
		t.Errorf("wildcard listeners: admin %q metrics %q", c.AdminAddr, c.MetricsAddr)
	}
}

// TestMetricsWildcardRefused: metrics and pprof stay on the backend
// address or localhost unless a wildcard is explicitly allowed.
func TestMetricsWildcardRefused(t *testing.T) {
	for _, v := range []string{"0.0.0.0", "0.0.0.0:9100", "\"[::]:9300\"", "\":9300\""} {
		wantLine(t, parseErr(t, minimal+"metrics_addr: "+v+"\n"), "listens on all addresses")
		mustParse(t, minimal+"metrics_addr: "+v+"\nmetrics_allow_wildcard: true\n")
	}
	if c := mustParse(t, minimal); c.MetricsAddr != "10.0.0.1:9300" {
		t.Errorf("default metrics_addr %q, want the backend host", c.MetricsAddr)
	}
	mustParse(t, minimal+"metrics_addr: 127.0.0.1\npprof: true\n")
}

func TestMetricsOff(t *testing.T) {
	for _, v := range []string{"off", "OFF", "\"\"", "''", "Off"} {
		c := mustParse(t, minimal+"metrics_addr: "+v+"\n")
		if c.MetricsEnabled() || c.MetricsAddr != MetricsOff {
			t.Errorf("metrics_addr: %s gave %q (enabled %v), want off", v, c.MetricsAddr, c.MetricsEnabled())
		}
	}
	// A blank value is YAML null, which means "not set": the default.
	if c := mustParse(t, minimal+"metrics_addr:\n"); c.MetricsAddr != "10.0.0.1:9300" {
		t.Errorf("metrics_addr with null value = %q, want the default", c.MetricsAddr)
	}
	// Set directly (as the daemon does for a flag), "" means off too.
	c := mustParse(t, minimal)
	c.MetricsAddr = ""
	if c.MetricsEnabled() || c.Validate() != nil {
		t.Error("empty MetricsAddr should be valid and disabled")
	}
}

// TestNBDAddrOff: the TCP NBD export is off unless nbd_addr is set; a
// host without a port gets 10809, and a bad address is reported.
func TestNBDAddrOff(t *testing.T) {
	if c := mustParse(t, minimal); c.NBDAddr != "" {
		t.Errorf("nbd_addr defaults to %q, want off", c.NBDAddr)
	}
	if c := mustParse(t, minimal+"nbd_addr: 10.0.0.1\n"); c.NBDAddr != "10.0.0.1:10809" {
		t.Errorf("nbd_addr without a port: %q", c.NBDAddr)
	}
	c := mustParse(t, minimal)
	c.NBDAddr = "10.0.0.1:99999"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "nbd_addr") {
		t.Errorf("a bad nbd_addr: %v", err)
	}
}

func TestUnknownField(t *testing.T) {
	lines := parseErr(t, minimal+"nodename: x\n")
	wantLine(t, lines, `line 3: unknown setting "nodename"`)
	lines = parseErr(t, minimal+"raft:\n  rtt: 5\nlog:\n  colour: true\n")
	wantLine(t, lines, `line 4: unknown setting "raft.rtt"`)
	wantLine(t, lines, `line 6: unknown setting "log.colour"`)
	for _, l := range lines {
		if strings.Contains(l, "config.") || strings.Contains(l, "struct") {
			t.Errorf("error line mentions Go types: %q", l)
		}
	}
}

func TestBadYAML(t *testing.T) {
	cases := map[string]string{
		"node_name: [x\n":                 "invalid YAML: line 1",
		"node_name: a\n  bad indent: 1\n": "invalid YAML",
		"\tnode_name: a\n":                "invalid YAML",
		"- node_name: a\n":                "line 1: expected a mapping of settings (name: value), got a list",
		"just words\n":                    "expected a mapping of settings",
		"raft:\n  rtt_ms: ten\n":          "line 2: expected a whole number (0 or more), got `ten`",
		"raft:\n  rtt_ms: -1\n":           "line 2: expected a whole number (0 or more), got `-1`",
		"node_name: [a, b]\n":             "line 1: expected a single value, got a list",
		"disks: /dev/sda\n":               "line 1: expected a list of values, got `/dev/sda`",
		"node_name: a\nnode_name: b\n":    `mapping key "node_name" already defined at line 1`,
		minimal + "---\nrole: witness\n":  "more than one YAML document",
		minimal + "---\n":                 "more than one YAML document",
		minimal + "---\n[\n":              "invalid YAML",
	}
	for in, want := range cases {
		wantLine(t, parseErr(t, in), want)
	}
}

func TestEmptyFile(t *testing.T) {
	for _, in := range []string{"", "# only a comment\n", "---\n", "~\n"} {
		lines := parseErr(t, in)
		if len(lines) != 2 {
			t.Errorf("Parse(%q): want exactly the two required-setting errors, got %q", in, lines)
		}
		wantLine(t, lines, "node_name: is required")
		wantLine(t, lines, "backend_addr: is required")
	}
}

func TestSizeLimit(t *testing.T) {
	big := minimal + "# " + strings.Repeat("x", MaxFileSize) + "\n"
	wantLine(t, parseErr(t, big), "over the 1048576 byte limit")
	// Just under the limit is fine.
	ok := minimal + "#" + strings.Repeat("x", MaxFileSize-len(minimal)-2) + "\n"
	if len(ok) != MaxFileSize {
		t.Fatalf("test file is %d bytes", len(ok))
	}
	mustParse(t, ok)
}

func TestBadNodeName(t *testing.T) {
	for _, name := range []string{"Node1", "-a", "a_b", "a.b", "\"\"", "\"a b\"", strings.Repeat("a", 64), "ñ"} {
		lines := parseErr(t, "node_name: "+name+"\nbackend_addr: 10.0.0.1\n")
		wantLine(t, lines, "node_name: ")
	}
	for _, name := range []string{"a", "0", "node-1", "a-", strings.Repeat("a", 63)} {
		mustParse(t, "node_name: "+name+"\nbackend_addr: 10.0.0.1\n")
	}
}

func TestBadAddresses(t *testing.T) {
	cases := []struct{ extra, want string }{
		{"backend_addr: 10.0.0.1:0", `backend_addr: "10.0.0.1:0" has port "0"; a port must be a number from 1 to 65535`},
		{"backend_addr: 10.0.0.1:65536", `has port "65536"`},
		{"backend_addr: 10.0.0.1:http", `has port "http"`},
		{"backend_addr: 10.0.0.1:-1", `has port "-1"`},
		{"backend_addr: \":7400\"", `backend_addr: ":7400" has no host`},
		{"backend_addr: 0.0.0.0", `backend_addr: "0.0.0.0:7400" is not an address other nodes can reach`},
		{"backend_addr: \"[::]:7400\"", `is not an address other nodes can reach`},
		{"backend_addr: 10.0.0.300", `has host "10.0.0.300", which is neither an IP address nor a valid host name`},
		{"backend_addr: bad_host", `neither an IP address nor a valid host name`},
		{"backend_addr: a:b:c", `backend_addr: "a:b:c" must be host:port`},
		{"backend_addr: 10.0.0.1\nraft_addr: \":7401\"", `raft_addr: ":7401" has no host`},
		{"backend_addr: 10.0.0.1\nadmin_addr: 10.0.0.1:99999", `admin_addr: "10.0.0.1:99999" has port "99999"`},
		{"backend_addr: 10.0.0.1\nmetrics_addr: \"-x\"", `metrics_addr: "-x:9300" has host "-x"`},
	}
	for _, tc := range cases {
		lines := parseErr(t, "node_name: n\n"+tc.extra+"\n")
		wantLine(t, lines, tc.want)
	}
	// A bad backend address is reported once, not again for every address
	// that would have been derived from it.
	if lines := parseErr(t, "node_name: n\nbackend_addr: \":7400\"\n"); len(lines) != 1 {
		t.Errorf("bad backend: want one error, got %q", lines)
	}
}

func TestAddressCollisions(t *testing.T) {
	cases := []struct{ extra, want string }{
		{"raft_addr: 10.0.0.1:7400", `raft_addr: "10.0.0.1:7400" uses the same address and port as backend_addr ("10.0.0.1:7400")`},
		{"admin_addr: \":7401\"", `admin_addr: ":7401" uses the same address and port as raft_addr`},
		{"metrics_addr: 0.0.0.0:7300\nmetrics_allow_wildcard: true", `metrics_addr: "0.0.0.0:7300" uses the same address and port as admin_addr`},
		{"admin_addr: \"[::ffff:10.0.0.1]:7400\"", `admin_addr: "[::ffff:10.0.0.1]:7400" uses the same address and port as backend_addr`},
	}
	for _, tc := range cases {
		wantLine(t, parseErr(t, minimal+tc.extra+"\n"), tc.want)
	}
	// Same port on different hosts, or disabled metrics, is fine.
	mustParse(t, minimal+"admin_addr: 127.0.0.1:7400\n")
	mustParse(t, "node_name: n\nbackend_addr: node-1.example:7400\nadmin_addr: 127.0.0.1:7400\nmetrics_addr: off\n")
}

func TestRoles(t *testing.T) {
	if c := mustParse(t, minimal+"role: witness\n"); c.Role != RoleWitness {
		t.Errorf("role = %q", c.Role)
	}
	if c := mustParse(t, minimal+"role: data\n"); c.Role != RoleData {
		t.Errorf("role = %q", c.Role)
	}
	wantLine(t, parseErr(t, minimal+"role: Witness\n"), `role: "Witness" is invalid: use "data" or "witness"`)
}

func TestLog(t *testing.T) {
	wantLine(t, parseErr(t, minimal+"log:\n  format: xml\n"), `log.format: "xml" is invalid: use text or json`)
	wantLine(t, parseErr(t, minimal+"log:\n  level: trace\n"), `log.level: "trace" is invalid: use debug, info, warn or error`)
}

func TestRaft(t *testing.T) {
	cases := []struct{ raft, want string }{
		{"election_rtt: 2\n  heartbeat_rtt: 1", "raft.election_rtt: 2 must be greater than 2 × raft.heartbeat_rtt (1)"},
		{"heartbeat_rtt: 5", "raft.election_rtt: 5 must be greater than 2 × raft.heartbeat_rtt (5)"},
		{"heartbeat_rtt: 18446744073709551615\n  election_rtt: 18446744073709551615", "must be greater than 2 × raft.heartbeat_rtt"},
		{"rtt_ms: 60001", "raft.rtt_ms: 60001 is too large"},
		{"rtt_ms: 1000\n  election_rtt: 3601", "raft.election_rtt: 3601 is too large"},
		{"rtt_ms: 18446744073709551616", "line 4: raft.rtt_ms: expected a whole number from 0 to 18446744073709551615, got 18446744073709551616"},
		{"rtt_ms: 1.5", "raft.rtt_ms: expected a whole number"},
		{"election_rtt: -0.5", "raft.election_rtt: expected a whole number"},
		{"snapshot_entries: 1e3", "raft.snapshot_entries: expected a whole number"},
		{"heartbeat_rtt: .nan", "expected a whole number"},
	}
	for _, tc := range cases {
		wantLine(t, parseErr(t, minimal+"raft:\n  "+tc.raft+"\n"), tc.want)
	}
	mustParse(t, minimal+"raft:\n  election_rtt: 3\n  heartbeat_rtt: 1\n")
	mustParse(t, minimal+"raft:\n  rtt_ms: 1000\n  election_rtt: 3600\n")
	if c := mustParse(t, minimal+"raft:\n  rtt_ms: 0x14\n  heartbeat_rtt:\n"); c.Raft.RTTMillisecond != 20 || c.Raft.HeartbeatRTT != 1 {
		t.Errorf("hex rtt_ms / null heartbeat_rtt: %+v", c.Raft)
	}
	if c := mustParse(t, minimal+"raft: {rtt_ms: 7}\n"); c.Raft.RTTMillisecond != 7 {
		t.Errorf("flow mapping: %+v", c.Raft)
	}
	// The volume shards' tick defaults to 250 ms, or rtt_ms if slower,
	// and is never faster than rtt_ms.
	if c := mustParse(t, minimal+"raft: {rtt_ms: 400}\n"); c.Raft.VolumeRTTMillisecond != 400 {
		t.Errorf("volume_rtt_ms under a slow rtt_ms: %+v", c.Raft)
	}
	if c := mustParse(t, minimal+"raft: {volume_rtt_ms: 100}\n"); c.Raft.VolumeRTTMillisecond != 100 {
		t.Errorf("volume_rtt_ms = rtt_ms (one host): %+v", c.Raft)
	}
	wantLine(t, parseErr(t, minimal+"raft: {rtt_ms: 100, volume_rtt_ms: 50}\n"), "raft.volume_rtt_ms: 50 is below raft.rtt_ms (100)")
	// A float hidden behind an alias is found too.
	wantLine(t, parseErr(t, minimal+"raft:\n  snapshot_entries: &x 2.5\n  election_rtt: *x\n"), "raft.election_rtt: expected a whole number")

	// Zeros set directly (not via a file, where zero means "default").
	c := mustParse(t, minimal)
	c.Raft = RaftConfig{}
	lines := strings.Split(c.Validate().Error(), "\n")
	for _, want := range []string{"raft.rtt_ms: must be at least 1", "raft.heartbeat_rtt: must be at least 1", "raft.election_rtt: must be at least 1", "raft.snapshot_entries: must be at least 1"} {
		wantLine(t, lines, want)
	}
}

func TestDisks(t *testing.T) {
	wantLine(t, parseErr(t, minimal+"disks: [sdb]\n"), `disks[0]: "sdb" must be an absolute path`)
	wantLine(t, parseErr(t, minimal+"disks: [/dev/sdb, \"\"]\n"), `disks[1]: is empty`)
	wantLine(t, parseErr(t, minimal+"disks: [/dev/sdb, /dev//sdb]\n"), `disks[1]: "/dev//sdb" is already listed as disks[0]`)
	if c := mustParse(t, minimal+"disks: []\n"); len(c.Disks) != 0 {
		t.Errorf("disks = %q", c.Disks)
	}
}

// TestMigrationURITLS: plain TCP to libvirtd is refused unless the insecure
// flag says the operator means it.
func TestMigrationURITLS(t *testing.T) {
	if c := mustParse(t, minimal); !strings.HasPrefix(c.Compute.MigrationURI, "qemu+tls://") || c.Compute.LibvirtInsecureTCP {
		t.Errorf("default migration_uri = %q, insecure %v", c.Compute.MigrationURI, c.Compute.LibvirtInsecureTCP)
	}
	tcp := minimal + "compute:\n  migration_uri: qemu+tcp://10.0.0.1/system\n"
	lines := parseErr(t, tcp)
	wantLine(t, lines, `compute.migration_uri: "qemu+tcp://10.0.0.1/system" has libvirtd listen on TCP without TLS`)
	wantLine(t, lines, "compute.libvirt_insecure_tcp: true")
	wantLine(t, parseErr(t, minimal+"compute:\n  migration_uri: QEMU+TCP://10.0.0.1/system\n"), "compute.migration_uri: ")
	if c := mustParse(t, tcp+"  libvirt_insecure_tcp: true\n"); c.Compute.MigrationURI != "qemu+tcp://10.0.0.1/system" {
		t.Errorf("insecure migration_uri = %q", c.Compute.MigrationURI)
	}
	mustParse(t, minimal+"compute:\n  migration_uri: qemu+ssh://root@10.0.0.1/system\n")
}

func TestDataDir(t *testing.T) {
	wantLine(t, parseErr(t, minimal+"data_dir: var/lib/tandem\n"), `data_dir: "var/lib/tandem" must be an absolute path`)
	if c := mustParse(t, minimal+"data_dir: \"\"\n"); c.DataDir != DefaultDataDir {
		t.Errorf("empty data_dir = %q, want the default", c.DataDir)
	}
}

func TestValidateReportsEverything(t *testing.T) {
	c := Config{
		NodeName:    "Bad_Name",
		DataDir:     "relative",
		BackendAddr: "10.0.0.1:0",
		Role:        "boss",
		Log:         LogConfig{Format: "xml", Level: "loud"},
		Raft:        RaftConfig{RTTMillisecond: 10, ElectionRTT: 2, HeartbeatRTT: 1, SnapshotEntries: 1},
		Disks:       []string{"sdb"},
	}
	err := c.Validate()
	if err == nil {
		t.Fatal("Validate succeeded")
	}
	lines := strings.Split(err.Error(), "\n")
	prefixes := []string{"node_name: ", "data_dir: ", "backend_addr: ", "role: ", "log.format: ", "log.level: ", "raft.election_rtt: ", "disks[0]: "}
	if len(lines) != len(prefixes) {
		t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(prefixes), err)
	}
	for i, p := range prefixes {
		if !strings.HasPrefix(lines[i], p) {
			t.Errorf("line %d = %q, want prefix %q", i, lines[i], p)
		}
	}
}

func TestApplyDefaultsIdempotent(t *testing.T) {
	c := mustParse(t, minimal+"metrics_addr: OFF\nraft_addr: 10.0.0.2\n")
	d := c
	d.ApplyDefaults()
	if !reflect.DeepEqual(c, d) {
		t.Errorf("ApplyDefaults changed a parsed config:\n%+v\n%+v", c, d)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tandemd.yaml")
	if err := os.WriteFile(path, []byte(minimal), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.NodeName != "node-1" {
		t.Errorf("NodeName = %q", c.NodeName)
	}

	_, err = Load(filepath.Join(dir, "missing.yaml"))
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("missing file: %v", err)
	}

	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("node_name: X\nbackend_addr: \":1\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Load(bad)
	if err == nil {
		t.Fatal("Load(bad) succeeded")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != 2 {
		t.Fatalf("want two error lines, got %q", lines)
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, bad+": ") {
			t.Errorf("error line %q does not start with the path", l)
		}
	}

	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, make([]byte, 2*MaxFileSize), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(big); err == nil || !strings.Contains(err.Error(), "limit") || !strings.HasPrefix(err.Error(), big) {
		t.Errorf("big file: %v", err)
	}
}

func TestDecodeThenOverride(t *testing.T) {
	c, err := Decode([]byte(minimal + "admin_addr: 127.0.0.1\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.RaftAddr != "" || c.DataDir != "" || c.BackendAddr != "10.0.0.1" {
		t.Errorf("Decode applied defaults: %+v", c)
	}
	c.BackendAddr = "10.0.0.9" // as a --backend-addr flag would
	c.ApplyDefaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.RaftAddr != "10.0.0.9:7401" || c.AdminAddr != "127.0.0.1:7300" {
		t.Errorf("derived from the overridden backend: raft %q admin %q", c.RaftAddr, c.AdminAddr)
	}
	if _, err := Decode([]byte("nodename: x\n")); err == nil {
		t.Error("Decode accepted an unknown setting")
	}
}
