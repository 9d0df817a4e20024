package config

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/tandemhci/tandem/internal/validate"
)

// Raft timing bounds. The lower one is dragonboat's own rule; the upper ones
// only catch typos (a unit mix-up) before they become a cluster that never
// elects a leader.
const (
	maxRTTMillisecond  = 60_000    // one minute
	maxElectionTimeout = 3_600_000 // rtt_ms × election_rtt, one hour in ms
)

// Validate reports every problem with c, joined with errors.Join, one line
// per problem in the form "setting: what is wrong". It does no I/O: host
// names are checked for syntax only and resolved when the daemon starts
// listening.
func (c Config) Validate() error {
	var errs []error
	bad := func(setting, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", setting, fmt.Sprintf(format, args...)))
	}

	switch {
	case c.NodeName == "":
		bad("node_name", "is required; set a name for this node, unique in the cluster, e.g. node-1")
	case !validNodeName(c.NodeName):
		bad("node_name", "%q is invalid: use 1 to 63 lowercase letters, digits and '-', starting with a letter or digit (pattern [a-z0-9][a-z0-9-]{0,62})", c.NodeName)
	}

	if cs := c.Compute.LibvirtSocket; cs != "" && cs != ComputeOff && !filepath.IsAbs(cs) {
		bad("compute.libvirt_socket", "%q must be an absolute path (e.g. %s) or %q", cs, DefaultLibvirtSocket, ComputeOff)
	}
	if u := c.Compute.MigrationURI; strings.HasPrefix(strings.ToLower(u), "qemu+tcp:") && !c.Compute.LibvirtInsecureTCP {
		bad("compute.migration_uri", "%q has libvirtd listen on TCP without TLS or authentication, so any host on the backend network could control this node's VMs; use qemu+tls://<backend host>/system (the default; see deploy/libvirtd-tls.conf), or set compute.libvirt_insecure_tcp: true to accept the risk", u)
	}
	if wd := c.Watchdog; wd != "" && wd != "off" && !filepath.IsAbs(wd) {
		bad("watchdog", "%q must be an absolute device path or \"off\"", wd)
	}
	if dt := c.Compute.DomainType; dt != "" && dt != "auto" && dt != "qemu" && dt != "kvm" {
		bad("compute.domain_type", "%q is not one of auto, qemu, kvm", dt)
	}
	if k := c.Compute.KVMProbeKernel; k != "" && !filepath.IsAbs(k) {
		bad("compute.kvm_probe_kernel", "%q must be an absolute path", k)
	}

	switch {
	case c.DataDir == "":
		bad("data_dir", "is required")
	case !filepath.IsAbs(c.DataDir):
		bad("data_dir", "%q must be an absolute path, e.g. %s", c.DataDir, DefaultDataDir)
	}

	// Listeners, kept to check for two of them on one host:port.
	type listener struct {
		setting, addr, host string
		port                uint16
	}
	var listeners []listener
	addr := func(setting, value string, advertised bool) {
		host, port, problem := checkAddr(value, advertised)
		if problem != "" {
			bad(setting, "%s", problem)
			return
		}
		listeners = append(listeners, listener{setting, value, host, port})
	}

	backendOK := false
	if c.BackendAddr == "" {
		bad("backend_addr", "is required; set the IP address or host name other nodes reach this node at, e.g. 10.0.0.1:%d", DefaultBackendPort)
	} else {
		n := len(errs)
		addr("backend_addr", c.BackendAddr, true)
		backendOK = len(errs) == n
	}
	// An empty derived address is only worth reporting if the backend
	// address it derives from is fine.
	derived := func(field, v string, advertised bool) {
		if v != "" {
			addr(field, v, advertised)
		} else if backendOK {
			bad(field, "is empty (ApplyDefaults derives it from backend_addr)")
		}
	}
	derived("raft_addr", c.RaftAddr, true)
	derived("admin_addr", c.AdminAddr, false)
	if c.MetricsEnabled() {
		n := len(errs)
		addr("metrics_addr", c.MetricsAddr, false)
		if host, _, err := net.SplitHostPort(c.MetricsAddr); len(errs) == n && err == nil && wildcard(host) && !c.MetricsAllowWildcard {
			bad("metrics_addr", "%q listens on all addresses, which shows the metrics (and pprof when on) to every network the node is on; use the backend address (the default) or 127.0.0.1, or set metrics_allow_wildcard: true", c.MetricsAddr)
		}
	}
	derived("replication_addr", c.ReplicationAddr, true)
	if c.NBDAddr != "" {
		addr("nbd_addr", c.NBDAddr, false)
	}
	for i, a := range listeners {
		for _, b := range listeners[:i] {
			if a.port == b.port && sameHost(a.host, b.host) {
				bad(a.setting, "%q uses the same address and port as %s (%q); each listener needs its own port", a.addr, b.setting, b.addr)
				break
			}
		}
	}

	if c.Role != RoleData && c.Role != RoleWitness {
		bad("role", "%q is invalid: use %q or %q", c.Role, RoleData, RoleWitness)
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		bad("log.format", "%q is invalid: use text or json", c.Log.Format)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "%q is invalid: use debug, info, warn or error", c.Log.Level)
	}

	r := c.Raft
	switch {
	case r.RTTMillisecond == 0:
		bad("raft.rtt_ms", "must be at least 1")
	case r.RTTMillisecond > maxRTTMillisecond:
		bad("raft.rtt_ms", "%d is too large: at most %d (one minute); it is a network round trip in milliseconds", r.RTTMillisecond, maxRTTMillisecond)
	}
	switch {
	case r.VolumeRTTMillisecond > maxRTTMillisecond:
		bad("raft.volume_rtt_ms", "%d is too large: at most %d (one minute)", r.VolumeRTTMillisecond, maxRTTMillisecond)
	case r.VolumeRTTMillisecond != 0 && r.VolumeRTTMillisecond < r.RTTMillisecond:
		bad("raft.volume_rtt_ms", "%d is below raft.rtt_ms (%d): the volume shards never tick faster than the metadata shard; set it to raft.rtt_ms to run every shard on one host", r.VolumeRTTMillisecond, r.RTTMillisecond)
	}
	if r.HeartbeatRTT == 0 {
		bad("raft.heartbeat_rtt", "must be at least 1")
	}
	switch {
	case r.ElectionRTT == 0:
		bad("raft.election_rtt", "must be at least 1")
	case r.HeartbeatRTT > 0 && (r.HeartbeatRTT > math.MaxUint64/2 || r.ElectionRTT <= 2*r.HeartbeatRTT):
		// Dragonboat refuses ElectionRTT <= 2*HeartbeatRTT. Written to
		// avoid overflowing 2*HeartbeatRTT.
		bad("raft.election_rtt", "%d must be greater than 2 × raft.heartbeat_rtt (%d); the default is 5 ×", r.ElectionRTT, r.HeartbeatRTT)
	case r.RTTMillisecond > 0 && r.RTTMillisecond <= maxRTTMillisecond && r.ElectionRTT > maxElectionTimeout/r.RTTMillisecond:
		bad("raft.election_rtt", "%d is too large: the election timeout raft.rtt_ms × raft.election_rtt would be over an hour", r.ElectionRTT)
	}
	if r.SnapshotEntries == 0 {
		bad("raft.snapshot_entries", "must be at least 1")
	}

	seen := make(map[string]int, len(c.Disks))
	for i, d := range c.Disks {
		setting := fmt.Sprintf("disks[%d]", i)
		switch {
		case d == "":
			bad(setting, "is empty")
		case !filepath.IsAbs(d):
			bad(setting, "%q must be an absolute path, e.g. /dev/disk/by-id/...", d)
		default:
			clean := filepath.Clean(d)
			if j, dup := seen[clean]; dup {
				bad(setting, "%q is already listed as disks[%d]", d, j)
			} else {
				seen[clean] = i
			}
		}
	}

	return errors.Join(errs...)
}

// validNodeName reports whether s matches [a-z0-9][a-z0-9-]{0,62}, the
// one node name rule (internal/validate).
func validNodeName(s string) bool { return validate.NodeName(s) == nil }

// checkAddr checks a host:port. An advertised address is one other nodes
// dial, so it needs a concrete host; a listen-only address may have an empty
// or unspecified host (all addresses). It returns a problem description, or
// the host and port.
func checkAddr(addr string, advertised bool) (host string, port uint16, problem string) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Sprintf("%q must be host:port, e.g. 10.0.0.1:%d or [fd00::1]:%d", addr, DefaultBackendPort, DefaultBackendPort)
	}
	p, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || p == 0 {
		return "", 0, fmt.Sprintf("%q has port %q; a port must be a number from 1 to 65535", addr, portStr)
	}
	switch ip, err := netip.ParseAddr(host); {
	case host == "":
		if advertised {
			return "", 0, fmt.Sprintf("%q has no host; other nodes need this node's IP address or host name", addr)
		}
	case err == nil:
		if advertised && ip.IsUnspecified() {
			return "", 0, fmt.Sprintf("%q is not an address other nodes can reach; use this node's IP address or host name", addr)
		}
	case !validHostname(host):
		return "", 0, fmt.Sprintf("%q has host %q, which is neither an IP address nor a valid host name", addr, host)
	}
	return host, uint16(p), ""
}

// validHostname checks RFC 1123 host name syntax. A last label that is all
// digits is refused so that a mistyped IPv4 address such as 10.0.0.300 is
// not taken for a name.
func validHostname(h string) bool {
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return false
	}
	labels := strings.Split(h, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	last := labels[len(labels)-1]
	return strings.Trim(last, "0123456789") != ""
}

// wildcard reports whether a listen host means all addresses.
func wildcard(h string) bool {
	ip, err := netip.ParseAddr(h)
	return h == "" || err == nil && ip.IsUnspecified()
}

// sameHost reports whether two listeners on the same port would clash: the
// same host, or either one listening on all addresses. Names are not
// resolved, so "localhost" and "127.0.0.1" are not detected as the same.
func sameHost(a, b string) bool {
	if wildcard(a) || wildcard(b) {
		return true
	}
	ia, ea := netip.ParseAddr(a)
	ib, eb := netip.ParseAddr(b)
	if ea == nil && eb == nil {
		return ia.Unmap() == ib.Unmap()
	}
	return strings.EqualFold(strings.TrimSuffix(a, "."), strings.TrimSuffix(b, "."))
}
