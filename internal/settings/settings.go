package settings

import (
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tandemhci/tandem/ha"
	"github.com/tandemhci/tandem/internal/pki"
	"github.com/tandemhci/tandem/internal/units"
)

// Kind is the type of a setting's value; it is what 'config get --defaults'
// shows as the unit.
type Kind string

// The kinds of value.
const (
	KindDuration Kind = "duration" // time.ParseDuration: "500ms", "3s"
	KindRate     Kind = "rate"     // units.ParseRate, bytes/s: "100M", "100MiB/s"; 0 = unlimited
	KindBool     Kind = "bool"     // true or false
	KindString   Kind = "string"   // a word matching the setting's Pattern
)

// Keys of settings that are not HA timing (those are in package ha).
const (
	KeyResyncRate = "resync.rate"
	// KeyCertLifetime is the lifetime of issued node and admin certificates.
	KeyCertLifetime = "pki.cert_lifetime"
	// KeyVMCPUModel is the CPU model of VMs that have none of their own.
	KeyVMCPUModel = "vm.cpu_model"
	// KeyDataStream says whether replication connections stay encrypted
	// after their handshake: DataStreamTLS or DataStreamPlain.
	KeyDataStream = "replication.data_stream"
)

// Values of KeyDataStream.
const (
	// DataStreamTLS keeps the whole replication connection in TLS.
	DataStreamTLS = "tls"
	// DataStreamPlain authenticates both nodes with the usual mutual TLS
	// handshake and then carries the frames unencrypted (as DRBD does):
	// only for a dedicated, trusted backend network, where nobody can
	// read or inject the traffic. Both ends must say so, or TLS stays.
	DataStreamPlain = "plain"
)

// dataStreamRE is what KeyDataStream may be.
var dataStreamRE = regexp.MustCompile(`^(` + DataStreamTLS + `|` + DataStreamPlain + `)$`)

// cpuModelRE is what a CPU model name may be: libvirt's model names
// (qemu64, Skylake-Client-v4, EPYC-Rome, Opteron_G5) and nothing that
// could break out of the domain XML or a command line.
var cpuModelRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// CPUModelPattern is the pattern of KeyVMCPUModel's values, for the
// other places that take a CPU model (vm create, vm set).
func CPUModelPattern() *regexp.Regexp { return cpuModelRE }

// Setting describes one known key. Min and Max bound durations (in
// nanoseconds) and rates (in bytes/s); Max 0 is no upper bound. Pattern
// is what a string setting's value must match entirely.
type Setting struct {
	Key         string
	Kind        Kind
	Default     string // canonical form
	Description string
	Min, Max    int64
	Pattern     *regexp.Regexp
}

// registry lists every key, sorted. It is rebuilt on every call so nothing
// can change it.
func registry() []Setting {
	d := ha.DefaultTiming()
	dur := func(key string, def time.Duration, lo, hi time.Duration, desc string) Setting {
		return Setting{Key: key, Kind: KindDuration, Default: def.String(), Min: int64(lo), Max: int64(hi), Description: desc}
	}
	return []Setting{
		dur(ha.KeyDead, d.DeadTimeout, 100*time.Millisecond, 10*time.Minute,
			"no answer for this long: the node is dead and gets fenced (longer than ha.suspect_timeout)"),
		dur(ha.KeyFence, d.FenceTimeout, time.Second, 10*time.Minute,
			"time limit of one fencing attempt by one agent"),
		dur(ha.KeyHeartbeat, d.HeartbeatInterval, 50*time.Millisecond, 10*time.Second,
			"how often the metadata leader pings every data node"),
		dur(ha.KeyGrace, d.SelfFenceGrace, 0, 5*time.Minute,
			"time a node needs to destroy its VMs once its lease ran out; the cluster waits for it too"),
		dur(ha.KeyLease, d.SelfFenceLease, 100*time.Millisecond, 5*time.Minute,
			"a node that cannot renew its lease for this long stops its VMs (at least two heartbeats)"),
		dur(ha.KeySuspect, d.SuspectTimeout, 100*time.Millisecond, 5*time.Minute,
			"no answer for this long: the node is reported suspect (at least two heartbeats)"),
		{Key: ha.KeyArmed, Kind: KindBool, Default: "true",
			Description: "automatic recovery of failed nodes' VMs (false: detection only; see 'tandem ha disarm')"},
		{Key: KeyResyncRate, Kind: KindRate, Default: "0", Min: units.MinRate,
			Description: "limit of each volume's resync traffic per second (0: unlimited)"},
		{Key: KeyDataStream, Kind: KindString, Default: DataStreamTLS, Pattern: dataStreamRE,
			Description: "replication data after the mutually authenticated TLS handshake: tls (encrypted) or plain (unencrypted, only on a dedicated trusted backend network: anyone on its path can read and change the data; used when both nodes say plain); applies to replication links opened after the change"},
		dur(KeyCertLifetime, pki.NodeValidity, time.Minute, pki.CAValidity,
			"lifetime of the node and admin certificates the cluster issues; each node renews its own two thirds into it"),
		{Key: ha.KeyRBDBlocklistIsFence, Kind: KindBool, Default: "false",
			Description: "a dead node's clients blocklisted in Ceph count as fencing it for VMs whose disks are all on RBD (true), or recovery waits for power or lease fencing (false)"},
		{Key: KeyVMCPUModel, Kind: KindString, Default: "qemu64", Pattern: cpuModelRE,
			Description: "CPU model (libvirt's name, e.g. qemu64, Nehalem) of VMs without one of their own ('vm set --cpu-model'); applies at each VM's next start"},
	}
}

// All returns every known setting, sorted by key.
func All() []Setting {
	r := registry()
	slices.SortFunc(r, func(a, b Setting) int { return strings.Compare(a.Key, b.Key) })
	return r
}

// Keys returns every known key, sorted.
func Keys() []string {
	var out []string
	for _, s := range All() {
		out = append(out, s.Key)
	}
	return out
}

// Lookup finds a key.
func Lookup(key string) (Setting, bool) {
	for _, s := range registry() {
		if s.Key == key {
			return s, true
		}
	}
	return Setting{}, false
}

// UnknownKeyError is returned for a key the registry does not know.
type UnknownKeyError struct{ Key string }

func (e *UnknownKeyError) Error() string {
	return fmt.Sprintf("unknown setting %q; the settings are: %s", e.Key, strings.Join(Keys(), ", "))
}

// parse reads v as s's kind and checks the range; the int64 is
// nanoseconds, bytes/s, or 0/1.
func (s Setting) parse(v string) (int64, error) {
	var n int64
	switch s.Kind {
	case KindDuration:
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil {
			return 0, fmt.Errorf("%s=%q: not a duration (e.g. 500ms, 3s, 1m)", s.Key, v)
		}
		n = int64(d)
		if n < s.Min || (s.Max > 0 && n > s.Max) {
			return 0, fmt.Errorf("%s=%q: must be between %v and %v", s.Key, v, time.Duration(s.Min), time.Duration(s.Max))
		}
		return n, nil
	case KindRate:
		r, err := units.ParseRate(v)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", s.Key, err)
		}
		if r != 0 && s.Max > 0 && r > s.Max {
			return 0, fmt.Errorf("%s=%q: at most %s/s", s.Key, v, units.FormatBytes(s.Max))
		}
		return r, nil
	case KindBool:
		switch strings.ToLower(strings.TrimSpace(v)) {
		case "true":
			return 1, nil
		case "false":
			return 0, nil
		}
		return 0, fmt.Errorf("%s=%q: true or false", s.Key, v)
	}
	return 0, fmt.Errorf("%s: unknown kind %q", s.Key, s.Kind)
}

// canon checks v and returns it in canonical form.
func (s Setting) canon(v string) (string, error) {
	if s.Kind == KindString {
		t := strings.TrimSpace(v)
		if s.Pattern == nil || !s.Pattern.MatchString(t) {
			return "", fmt.Errorf("%s=%q: must match %s", s.Key, v, s.patternText())
		}
		return t, nil
	}
	n, err := s.parse(v)
	if err != nil {
		return "", err
	}
	return s.format(n), nil
}

func (s Setting) patternText() string {
	if s.Pattern == nil {
		return "(no value is valid)"
	}
	return s.Pattern.String()
}

// format prints a parsed value canonically.
func (s Setting) format(n int64) string {
	switch s.Kind {
	case KindDuration:
		return time.Duration(n).String()
	case KindRate:
		return units.FormatRate(n)
	case KindBool:
		return strconv.FormatBool(n != 0)
	}
	return strconv.FormatInt(n, 10)
}

// Canonical checks key=value and returns the value in canonical form, the
// form to store: "100M" becomes "100MiB/s", "1.50s" becomes "1.5s".
func Canonical(key, value string) (string, error) {
	s, ok := Lookup(key)
	if !ok {
		return "", &UnknownKeyError{Key: key}
	}
	return s.canon(value)
}

// Validate checks every key and value of a configuration, reporting all
// the problems at once.
func Validate(cfg map[string]string) error {
	var errs []error
	for _, k := range slices.Sorted(maps.Keys(cfg)) {
		if _, err := Canonical(k, cfg[k]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Valid returns the known keys of cfg whose values are valid, in canonical
// form, and an error naming every other key (unknown, or a value that no
// longer parses or is out of range); those read as their defaults. It is
// what the daemon acts on, so a value 'config get --defaults' reports as
// not in force is not in force.
func Valid(cfg map[string]string) (map[string]string, error) {
	out := make(map[string]string, len(cfg))
	var errs []error
	for _, k := range slices.Sorted(maps.Keys(cfg)) {
		c, err := Canonical(k, cfg[k])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out[k] = c
	}
	return out, errors.Join(errs...)
}

// read returns key's value from cfg, or its default. A stored value that
// fails to parse yields the default and an error saying so.
func read(cfg map[string]string, key string, kind Kind) (int64, error) {
	s, ok := Lookup(key)
	if !ok || s.Kind != kind {
		return 0, fmt.Errorf("settings: %s is not a known %s setting", key, kind) // a programming error
	}
	def, err := s.parse(s.Default)
	if err != nil {
		return 0, fmt.Errorf("settings: default of %s: %w", key, err)
	}
	v, ok := cfg[key]
	if !ok || v == "" {
		return def, nil
	}
	n, err := s.parse(v)
	if err != nil {
		return def, fmt.Errorf("stored %w; using the default %s", err, s.Default)
	}
	return n, nil
}

// Duration reads a duration setting; see read for errors.
func Duration(cfg map[string]string, key string) (time.Duration, error) {
	n, err := read(cfg, key, KindDuration)
	return time.Duration(n), err
}

// Rate reads a rate setting in bytes/s (0: unlimited); see read for errors.
func Rate(cfg map[string]string, key string) (int64, error) {
	return read(cfg, key, KindRate)
}

// Bool reads a boolean setting; see read for errors.
func Bool(cfg map[string]string, key string) (bool, error) {
	n, err := read(cfg, key, KindBool)
	return n != 0, err
}

// String reads a string setting: the stored value, or the default when it
// is not set or does not match the setting's pattern (with an error
// saying so).
func String(cfg map[string]string, key string) (string, error) {
	s, ok := Lookup(key)
	if !ok || s.Kind != KindString {
		return "", fmt.Errorf("settings: %s is not a known %s setting", key, KindString) // a programming error
	}
	v, ok := cfg[key]
	if !ok || v == "" {
		return s.Default, nil
	}
	c, err := s.canon(v)
	if err != nil {
		return s.Default, fmt.Errorf("stored %w; using the default %s", err, s.Default)
	}
	return c, nil
}

// Effective is one setting with the value in force.
type Effective struct {
	Setting
	Value string // canonical; the default when not set or not valid
	Set   bool   // explicitly set (and valid)
	Err   error  // the stored value is not valid (Value is the default)
}

// Resolve lists every known setting with the value cfg gives it, sorted by
// key. Unknown keys in cfg are not listed (Validate reports them).
func Resolve(cfg map[string]string) []Effective {
	var out []Effective
	for _, s := range All() {
		e := Effective{Setting: s, Value: s.Default}
		if v, ok := cfg[s.Key]; ok && v != "" {
			if c, err := s.canon(v); err != nil {
				e.Err = err
			} else {
				e.Value, e.Set = c, true
			}
		}
		out = append(out, e)
	}
	return out
}
