package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/tandemhci/tandem/internal/config"
	"github.com/tandemhci/tandem/internal/validate"
)

// Answers are what the installer needs to know, from an answer file (YAML,
// the keys below), the kernel command line (tandem.KEY=VALUE, overriding the
// file) or the interactive prompts.
type Answers struct {
	// Disk is the target disk, e.g. /dev/sda or /dev/disk/by-id/...
	Disk string `yaml:"disk"`
	// Wipe allows installing over a disk that holds a partition table or
	// a file system. Without it such a disk is refused and left untouched.
	Wipe bool `yaml:"wipe"`
	// Hostname is also the node's name in the cluster.
	Hostname string `yaml:"hostname"`
	// RootSizeGiB is the root partition's size; the rest of the disk is
	// the data partition. Default 16, at most half the disk.
	RootSizeGiB int            `yaml:"root_size_gib"`
	Network     NetworkAnswers `yaml:"network"`
	Cluster     ClusterAnswers `yaml:"cluster"`
	// RootPasswordHash is a crypt(3) hash ("$6$...", "$y$..."), as
	// written by mkpasswd or openssl passwd -6.
	RootPasswordHash string `yaml:"root_password_hash"`
	// SSHAuthorizedKeys go into /root/.ssh/authorized_keys.
	SSHAuthorizedKeys []string `yaml:"ssh_authorized_keys"`
	// Reboot into the installed system when done (default true).
	Reboot *bool `yaml:"reboot"`

	// rootPassword is a clear-text password typed at the interactive
	// prompt; it is never read from a file or the command line.
	rootPassword string
}

// NetworkAnswers configure the backend network and the VM bridge.
type NetworkAnswers struct {
	// NIC is the backend interface: a name (eno1) or a MAC address.
	NIC string `yaml:"nic"`
	// Address is the backend address, in CIDR form (10.0.0.5/24) or
	// plain with Netmask.
	Address string   `yaml:"address"`
	Netmask string   `yaml:"netmask"`
	Gateway string   `yaml:"gateway"`
	DNS     []string `yaml:"dns"`
	// VMNIC is the interface the VM bridge uplinks to (name or MAC); it may
	// be the backend NIC, which then carries the address on the bridge.
	// Empty: the bridge has no uplink (VMs reach only each other).
	VMNIC string `yaml:"vm_nic"`
	// VMBridge names the bridge; default vmbr0.
	VMBridge string `yaml:"vm_bridge"`
}

// ClusterAnswers say what the node does on its first boot: create a
// cluster, or join one through a member with a token.
type ClusterAnswers struct {
	Create string `yaml:"create"`
	Join   string `yaml:"join"`
	Token  string `yaml:"token"`
}

// Defaults.
const (
	defaultRootGiB  = 16
	minRootGiB      = 4
	minDiskGiB      = 8
	defaultVMBridge = config.DefaultVMBridge
	answerLabel     = "TANDEM"
	defaultAnswer   = "answer.yaml"
	maxAnswerSize   = 64 << 10
)

// parseAnswerFile decodes an answer file. Unknown keys are errors: a typo
// must not silently install with a default.
func parseAnswerFile(b []byte) (Answers, error) {
	var a Answers
	if len(b) > maxAnswerSize {
		return a, fmt.Errorf("the answer file is %d bytes, more than %d: not an answer file", len(b), maxAnswerSize)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&a); err != nil {
		if errors.Is(err, io.EOF) {
			return a, errors.New("the answer file is empty")
		}
		return a, fmt.Errorf("the answer file is not valid: %w", err)
	}
	return a, nil
}

// cmdlineArgs parses a kernel command line into its tandem.* keys (without
// the prefix). Values may be double-quoted to hold spaces, as the kernel
// allows: tandem.ssh_key="ssh-ed25519 AAAA... me@host".
func cmdlineArgs(cmdline string) map[string][]string {
	out := map[string][]string{}
	var words []string
	var cur strings.Builder
	inQuote, started := false, false
	for _, r := range cmdline {
		switch {
		case r == '"':
			inQuote, started = !inQuote, true
		case !inQuote && (r == ' ' || r == '\t' || r == '\n'):
			if started {
				words = append(words, cur.String())
				cur.Reset()
				started = false
			}
		default:
			cur.WriteRune(r)
			started = true
		}
	}
	if started {
		words = append(words, cur.String())
	}
	for _, w := range words {
		k, v, _ := strings.Cut(w, "=")
		if key, ok := strings.CutPrefix(k, "tandem."); ok && key != "" {
			out[key] = append(out[key], v)
		}
	}
	return out
}

// Keys of the command line that are not answers.
var cmdlineControl = []string{"install", "answer", "tty"}

// applyCmdline overrides a's fields with the command line's tandem.* keys.
func applyCmdline(a *Answers, args map[string][]string) error {
	var errs []error
	last := func(k string) string { v := args[k]; return v[len(v)-1] }
	boolean := func(k, v string) bool {
		b, err := strconv.ParseBool(v)
		if v == "" {
			b, err = true, nil // a bare tandem.wipe
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("tandem.%s=%q: want true or false", k, v))
		}
		return b
	}
	keys := make([]string, 0, len(args))
	for k := range args {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		v := last(k)
		switch k {
		case "disk":
			a.Disk = v
		case "wipe":
			a.Wipe = boolean(k, v)
		case "hostname":
			a.Hostname = v
		case "root_size_gib":
			n, err := strconv.Atoi(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("tandem.root_size_gib=%q: want a number of GiB", v))
			}
			a.RootSizeGiB = n
		case "nic":
			a.Network.NIC = v
		case "address":
			a.Network.Address = v
		case "netmask":
			a.Network.Netmask = v
		case "gateway":
			a.Network.Gateway = v
		case "dns":
			a.Network.DNS = strings.FieldsFunc(v, func(r rune) bool { return r == ',' })
		case "vm_nic":
			a.Network.VMNIC = v
		case "vm_bridge":
			a.Network.VMBridge = v
		case "create":
			a.Cluster.Create = v
		case "join":
			a.Cluster.Join = v
		case "token":
			a.Cluster.Token = v
		case "root_password_hash":
			a.RootPasswordHash = v
		case "ssh_key":
			a.SSHAuthorizedKeys = append(a.SSHAuthorizedKeys, args[k]...)
		case "reboot":
			b := boolean(k, v)
			a.Reboot = &b
		default:
			if !slices.Contains(cmdlineControl, k) {
				errs = append(errs, fmt.Errorf("tandem.%s: unknown key on the kernel command line", k))
			}
		}
	}
	return errors.Join(errs...)
}

// Plan is a validated set of answers, ready to install.
type Plan struct {
	Disk         string
	Wipe         bool
	Hostname     string
	RootGiB      int // requested; fitted to the disk by layout
	Backend      netip.Prefix
	Gateway      netip.Addr // invalid when none
	DNS          []netip.Addr
	NIC          string // name or MAC
	VMNIC        string
	VMBridge     string
	Create       string
	JoinAddr     string // host:port
	Token        string
	PasswordHash string
	Password     string // interactive only
	SSHKeys      []string
	Reboot       bool
}

var (
	ifName     = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,14}$`)
	cryptHash  = regexp.MustCompile(`^\$[0-9a-z]+\$[^\s:]+$`)
	sshKeyLine = regexp.MustCompile(`^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp(256|384|521)|sk-[a-z0-9@.-]+) [A-Za-z0-9+/=]{16,}( .*)?$`)
)

// plan checks every answer and returns all problems at once, each naming
// its key, so one fix-up round is enough.
func (a Answers) plan() (Plan, error) {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	p := Plan{Disk: a.Disk, Wipe: a.Wipe, Hostname: a.Hostname, RootGiB: a.RootSizeGiB, NIC: a.Network.NIC,
		VMNIC: a.Network.VMNIC, VMBridge: a.Network.VMBridge, Create: a.Cluster.Create, Token: strings.TrimSpace(a.Cluster.Token),
		PasswordHash: a.RootPasswordHash, Password: a.rootPassword, Reboot: a.Reboot == nil || *a.Reboot}

	switch {
	case p.Disk == "":
		bad("disk: required (the target disk, e.g. /dev/sda)")
	case !filepath.IsAbs(p.Disk):
		bad("disk: %q is not an absolute path (e.g. /dev/sda)", p.Disk)
	}
	if p.RootGiB == 0 {
		p.RootGiB = defaultRootGiB
	} else if p.RootGiB < minRootGiB {
		bad("root_size_gib: %d is less than %d", p.RootGiB, minRootGiB)
	}
	if err := validate.NodeName(p.Hostname); err != nil {
		bad("hostname: %v (it is also the node's name in the cluster)", err)
	}

	n := a.Network
	switch {
	case n.NIC == "":
		bad("network.nic: required (the backend interface's name or MAC address)")
	case !validNIC(n.NIC):
		bad("network.nic: %q is neither an interface name nor a MAC address", n.NIC)
	}
	if n.VMNIC != "" && !validNIC(n.VMNIC) {
		bad("network.vm_nic: %q is neither an interface name nor a MAC address", n.VMNIC)
	}
	if p.VMBridge == "" {
		p.VMBridge = defaultVMBridge
	} else if !ifName.MatchString(p.VMBridge) {
		bad("network.vm_bridge: %q is not an interface name", p.VMBridge)
	}
	pfx, err := backendPrefix(n.Address, n.Netmask)
	if err != nil {
		bad("network.address: %v", err)
	}
	p.Backend = pfx
	if n.Gateway != "" {
		gw, err := netip.ParseAddr(n.Gateway)
		switch {
		case err != nil || !gw.Is4() && !gw.Is6():
			bad("network.gateway: %q is not an IP address", n.Gateway)
		case pfx.IsValid() && !pfx.Masked().Contains(gw):
			bad("network.gateway: %s is not in the backend subnet %s", gw, pfx.Masked())
		default:
			p.Gateway = gw
		}
	}
	for _, d := range n.DNS {
		ip, err := netip.ParseAddr(strings.TrimSpace(d))
		if err != nil {
			bad("network.dns: %q is not an IP address", d)
			continue
		}
		p.DNS = append(p.DNS, ip)
	}

	c := a.Cluster
	switch {
	case c.Create != "" && c.Join != "":
		bad("cluster: give create or join, not both")
	case c.Create != "":
		if err := validate.ClusterName(c.Create); err != nil {
			bad("cluster.create: %v", err)
		}
		if c.Token != "" {
			bad("cluster.token: only used with cluster.join")
		}
	case c.Join != "":
		addr, err := joinAddress(c.Join)
		if err != nil {
			bad("cluster.join: %v", err)
		}
		p.JoinAddr = addr
		if p.Token == "" {
			bad("cluster.token: required with cluster.join (make one on a member: tandem cluster token)")
		}
	default:
		bad("cluster: give create (a new cluster's name) or join (a member's backend address) and token")
	}

	if p.PasswordHash != "" && !cryptHash.MatchString(p.PasswordHash) {
		bad("root_password_hash: not a crypt(3) hash like $6$salt$hash (make one with: openssl passwd -6 or mkpasswd -m sha-512)")
	}
	for i, k := range a.SSHAuthorizedKeys {
		k = strings.TrimSpace(k)
		if !sshKeyLine.MatchString(k) {
			bad("ssh_authorized_keys[%d]: not an OpenSSH public key line (type base64 [comment])", i)
			continue
		}
		p.SSHKeys = append(p.SSHKeys, k)
	}
	if p.PasswordHash == "" && p.Password == "" && len(a.SSHAuthorizedKeys) == 0 {
		bad("root_password_hash or ssh_authorized_keys: give at least one, or nobody can log in to the installed system")
	}
	return p, errors.Join(errs...)
}

// macAddr matches a colon-separated Ethernet MAC.
var macAddr = regexp.MustCompile(`^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$`)

func validNIC(s string) bool { return macAddr.MatchString(s) || ifName.MatchString(s) }

// backendPrefix accepts "10.0.0.5/24", or "10.0.0.5" with netmask
// "255.255.255.0" or "24".
func backendPrefix(addr, mask string) (netip.Prefix, error) {
	if addr == "" {
		return netip.Prefix{}, errors.New("required (the node's backend IP address, e.g. 10.0.0.5/24)")
	}
	if strings.Contains(addr, "/") {
		if mask != "" {
			return netip.Prefix{}, fmt.Errorf("%q already has a prefix length; leave netmask out", addr)
		}
		p, err := netip.ParsePrefix(addr)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not an address with a prefix length (10.0.0.5/24)", addr)
		}
		return checkHost(p)
	}
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address", addr)
	}
	if mask == "" {
		return netip.Prefix{}, fmt.Errorf("%q has no netmask: write %s/24 or give network.netmask", addr, addr)
	}
	bits, err := strconv.Atoi(mask)
	if err != nil {
		m := net.ParseIP(mask).To4()
		if m == nil || !ip.Is4() {
			return netip.Prefix{}, fmt.Errorf("netmask %q is neither a prefix length nor a dotted IPv4 mask", mask)
		}
		ones, size := net.IPMask(m).Size()
		if size == 0 {
			return netip.Prefix{}, fmt.Errorf("netmask %q is not contiguous", mask)
		}
		bits = ones
	}
	if bits < 1 || bits > ip.BitLen() {
		return netip.Prefix{}, fmt.Errorf("netmask %q is out of range", mask)
	}
	return checkHost(netip.PrefixFrom(ip, bits))
}

// checkHost refuses prefixes that cannot be a host's address.
func checkHost(p netip.Prefix) (netip.Prefix, error) {
	ip := p.Addr()
	switch {
	case ip.IsUnspecified(), ip.IsLoopback(), ip.IsMulticast(), ip.IsLinkLocalUnicast():
		return netip.Prefix{}, fmt.Errorf("%s cannot be a node's backend address", ip)
	case p.Bits() < p.Addr().BitLen()-1 && ip == p.Masked().Addr():
		return netip.Prefix{}, fmt.Errorf("%s is the subnet's network address, not a host's", p)
	}
	return p, nil
}

// joinAddress checks a member's backend address; the port defaults to
// tandemd's backend port.
func joinAddress(s string) (string, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		host, port = strings.Trim(s, "[]"), strconv.Itoa(config.DefaultBackendPort)
	}
	if host == "" {
		return "", fmt.Errorf("%q has no host", s)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("%q: port %q is not a port number", s, port)
	}
	if strings.ContainsAny(host, " /") {
		return "", fmt.Errorf("%q is not a host name or IP address", s)
	}
	return net.JoinHostPort(host, port), nil
}
