package compute

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/socket/dialers"
	"libvirt.org/go/libvirtxml"
)

// ErrNotFound is wrapped by Driver errors when the domain does not exist.
var ErrNotFound = errors.New("domain not found")

// Defaults for Dial.
const (
	DefaultURI         = "qemu:///system"
	DefaultCallTimeout = 30 * time.Second
	// DefaultNBDReconnectDelay is used when libvirtd understands it.
	DefaultNBDReconnectDelay = 2
	// minReconnectLibVersion is libvirt 9.2.0 (major*1e6+minor*1e3+micro),
	// the first release expected to know <reconnect delay> on NBD sources;
	// 9.0 (Debian 12) does not.
	minReconnectLibVersion = 9_002_000
	// minTCGMigrationFixVersion is QEMU 9.0.0, the first whose live
	// migration keeps every store of a TCG guest (XMLOptions.PadTCGRAM).
	minTCGMigrationFixVersion = 9_000_000
	shutdownPoll              = 200 * time.Millisecond
)

// State is a domain's run state.
type State int

// States, from libvirt's virDomainState.
const (
	StateUnknown      State = iota
	StateRunning            // running
	StateBlocked            // blocked on a resource
	StatePaused             // paused by the admin or by an I/O error
	StateShuttingDown       // the guest is shutting down
	StateShutOff            // defined but not running
	StateCrashed            // crashed (on_crash=destroy normally leaves ShutOff)
	StatePMSuspended        // suspended by guest power management
)

var stateNames = [...]string{"unknown", "running", "blocked", "paused", "shutting-down", "shut-off", "crashed", "pm-suspended"}

func (s State) String() string {
	if s < 0 || int(s) >= len(stateNames) {
		return fmt.Sprintf("state(%d)", int(s))
	}
	return stateNames[s]
}

func stateFromLibvirt(s int32) State {
	switch libvirt.DomainState(s) {
	case libvirt.DomainRunning:
		return StateRunning
	case libvirt.DomainBlocked:
		return StateBlocked
	case libvirt.DomainPaused:
		return StatePaused
	case libvirt.DomainShutdown:
		return StateShuttingDown
	case libvirt.DomainShutoff:
		return StateShutOff
	case libvirt.DomainCrashed:
		return StateCrashed
	case libvirt.DomainPmsuspended:
		return StatePMSuspended
	}
	return StateUnknown
}

// DomainInfo is one entry of List.
type DomainInfo struct {
	Name  string
	UUID  string
	State State
}

// Option configures Dial.
type Option func(*Driver)

// WithDomainType sets the libvirt domain type of defined VMs ("qemu" by
// default; "kvm" where KVM works; "test" for libvirt's test driver).
func WithDomainType(t string) Option { return func(d *Driver) { d.xmlOpts.DomainType = t } }

// WithNBDReconnectDelay forces the NBD reconnect delay in seconds (0 = omit
// the element) instead of choosing it from libvirtd's version.
func WithNBDReconnectDelay(seconds uint) Option {
	return func(d *Driver) { d.xmlOpts.NBDReconnectDelay, d.reconnectSet = seconds, true }
}

// WithCallTimeout bounds each libvirt call whose context has no deadline.
func WithCallTimeout(t time.Duration) Option { return func(d *Driver) { d.callTimeout = t } }

// WithLogger sets the logger (slog.Default() otherwise).
func WithLogger(l *slog.Logger) Option { return func(d *Driver) { d.log = l } }

// Driver manages domains on one libvirtd. It is safe for concurrent use.
type Driver struct {
	lv           *libvirt.Libvirt
	uri          string
	libVersion   uint64
	qemuVersion  uint64
	xmlOpts      XMLOptions
	reconnectSet bool
	callTimeout  time.Duration
	log          *slog.Logger
}

// Dial connects to libvirtd's unix socket and opens uri ("qemu:///system"
// when empty; "test:///default" in unit tests).
func Dial(ctx context.Context, socketPath, uri string, opts ...Option) (*Driver, error) {
	if uri == "" {
		uri = DefaultURI
	}
	d := &Driver{uri: uri, callTimeout: DefaultCallTimeout, log: slog.Default()}
	for _, o := range opts {
		o(d)
	}
	if d.xmlOpts.DomainType == "" {
		d.xmlOpts.DomainType = DefaultDomainType
	}
	d.log = d.log.With("component", "compute", "uri", uri)

	ctx, cancel := d.withTimeout(ctx)
	defer cancel()
	dialTimeout := d.callTimeout
	if dl, ok := ctx.Deadline(); ok {
		dialTimeout = time.Until(dl)
	}
	d.lv = libvirt.NewWithDialer(dialers.NewLocal(dialers.WithSocket(socketPath), dialers.WithLocalTimeout(dialTimeout)))

	done := make(chan error, 1)
	go func() { done <- d.lv.ConnectToURI(libvirt.ConnectURI(uri)) }()
	select {
	case err := <-done:
		if err != nil {
			return nil, fmt.Errorf("compute: connect %s via %s: %w", uri, socketPath, err)
		}
	case <-ctx.Done():
		// Do not leak a connection that completes after we gave up.
		go func() {
			if <-done == nil {
				_ = d.lv.Disconnect()
			}
		}()
		return nil, fmt.Errorf("compute: connect %s via %s: %w", uri, socketPath, ctx.Err())
	}

	ver, err := call(ctx, d, d.lv.ConnectGetLibVersion)
	if err != nil {
		_ = d.lv.Disconnect()
		return nil, fmt.Errorf("compute: libvirt version: %w", err)
	}
	d.libVersion = ver
	if d.xmlOpts.DomainType == "qemu" {
		hv, err := call(ctx, d, d.lv.ConnectGetVersion)
		if err != nil {
			_ = d.lv.Disconnect()
			return nil, fmt.Errorf("compute: QEMU version: %w", err)
		}
		d.qemuVersion = hv
		d.xmlOpts.PadTCGRAM = hv < minTCGMigrationFixVersion
		if d.xmlOpts.PadTCGRAM {
			d.log.Info("TCG guests get 8 KiB more RAM in a backend of their own: this QEMU loses stores of TCG guests in live migration when the RAM is a multiple of 256 KiB",
				"qemu_version", hv, "fixed_in", minTCGMigrationFixVersion)
		}
	}
	if !d.reconnectSet {
		if ver >= minReconnectLibVersion {
			d.xmlOpts.NBDReconnectDelay = DefaultNBDReconnectDelay
		} else {
			d.log.Warn("libvirtd too old for NBD reconnect; a dropped export socket fails guest I/O",
				"lib_version", ver, "need", minReconnectLibVersion)
		}
	}
	return d, nil
}

// Close disconnects from libvirtd.
func (d *Driver) Close() error {
	if err := d.lv.Disconnect(); err != nil {
		return fmt.Errorf("compute: disconnect %s: %w", d.uri, err)
	}
	return nil
}

// LibVersion is libvirtd's version as major*1e6+minor*1e3+micro.
func (d *Driver) LibVersion() uint64 { return d.libVersion }

// QEMUVersion is the hypervisor's version (major*1e6+minor*1e3+micro) for
// domain type "qemu", else 0.
func (d *Driver) QEMUVersion() uint64 { return d.qemuVersion }

// XMLOptions are the options Define renders domain XML with.
func (d *Driver) XMLOptions() XMLOptions { return d.xmlOpts }

// Define creates or updates the persistent definition of spec. Without a
// UUID in spec, an existing domain of that name keeps its UUID, so Define is
// idempotent (libvirt refuses a redefinition under a new UUID).
func (d *Driver) Define(ctx context.Context, spec VMSpec) error {
	if err := spec.Validate(); err != nil {
		return err
	}
	if spec.UUID == "" {
		dom, err := d.lookup(ctx, spec.Name)
		switch {
		case err == nil:
			spec.UUID = formatUUID(dom.UUID)
		case !errors.Is(err, ErrNotFound):
			return fmt.Errorf("compute: define domain %q: %w", spec.Name, err)
		}
	}
	x, err := DomainXMLWithOptions(spec, d.xmlOpts)
	if err != nil {
		return err
	}
	// Validate against libvirt's schema: an element this libvirtd does not
	// know would otherwise be dropped silently.
	_, err = call(ctx, d, func() (libvirt.Domain, error) {
		return d.lv.DomainDefineXMLFlags(x, libvirt.DomainDefineValidate)
	})
	if err != nil {
		return fmt.Errorf("compute: define domain %q: %w", spec.Name, err)
	}
	d.log.Info("domain defined", "domain", spec.Name)
	return nil
}

// Start boots a defined domain. Starting a running domain is a no-op, so
// the recovery manager can retry.
func (d *Driver) Start(ctx context.Context, name string) error {
	dom, err := d.lookup(ctx, name)
	if err != nil {
		return err
	}
	if err := call0(ctx, d, func() error { return d.lv.DomainCreate(dom) }); err != nil {
		// Drivers differ in the error code for "already running" (QEMU:
		// operation invalid, test: internal error), so ask the state.
		if st, serr := d.state(ctx, dom); serr == nil && st == StateRunning {
			return nil
		}
		return d.opErr("start", name, err)
	}
	d.log.Info("domain started", "domain", name)
	return nil
}

// Shutdown presses the ACPI power button and waits up to timeout for the
// domain to be shut off, then destroys it. If the power button cannot be
// pressed (e.g. the domain is paused) it destroys at once. ctx bounds the
// whole call; if it ends first the domain is left as it is.
func (d *Driver) Shutdown(ctx context.Context, name string, timeout time.Duration) error {
	dom, err := d.lookup(ctx, name)
	if err != nil {
		return err
	}
	st, err := d.state(ctx, dom)
	if err != nil {
		return d.opErr("shutdown", name, err)
	}
	if st == StateShutOff {
		return nil
	}
	// Flags 0: QEMU uses ACPI when no guest agent is configured (none is);
	// the explicit ACPI flag is not accepted by every driver (test://).
	if err := call0(ctx, d, func() error { return d.lv.DomainShutdown(dom) }); err != nil {
		if IsNotFoundErr(err) || ctx.Err() != nil {
			return d.opErr("shutdown", name, err)
		}
		d.log.Warn("ACPI shutdown refused; destroying", "domain", name, "err", err)
		return d.destroy(ctx, name, dom)
	}
	grace := time.NewTimer(timeout)
	defer grace.Stop()
	tick := time.NewTicker(shutdownPoll)
	defer tick.Stop()
	for {
		st, err := d.state(ctx, dom)
		if err != nil {
			return d.opErr("shutdown", name, err)
		}
		if st == StateShutOff {
			d.log.Info("domain shut down", "domain", name)
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("compute: shutdown domain %q: waiting for shut off: %w", name, ctx.Err())
		case <-grace.C:
			d.log.Warn("guest did not shut down in time; destroying", "domain", name, "timeout", timeout)
			return d.destroy(ctx, name, dom)
		case <-tick.C:
		}
	}
}

// Destroy powers the domain off at once. Destroying a domain that is not
// running is a no-op, so fencing can retry.
func (d *Driver) Destroy(ctx context.Context, name string) error {
	dom, err := d.lookup(ctx, name)
	if err != nil {
		return err
	}
	return d.destroy(ctx, name, dom)
}

func (d *Driver) destroy(ctx context.Context, name string, dom libvirt.Domain) error {
	if err := call0(ctx, d, func() error { return d.lv.DomainDestroy(dom) }); err != nil {
		if st, serr := d.state(ctx, dom); serr == nil && st == StateShutOff {
			return nil
		}
		return d.opErr("destroy", name, err)
	}
	d.log.Info("domain destroyed", "domain", name)
	return nil
}

// Undefine removes the persistent definition. A running domain keeps
// running as a transient one until it stops.
func (d *Driver) Undefine(ctx context.Context, name string) error {
	dom, err := d.lookup(ctx, name)
	if err != nil {
		return err
	}
	flags := libvirt.DomainUndefineManagedSave | libvirt.DomainUndefineSnapshotsMetadata
	// KeepNvram: a UEFI VM's variable store is the cluster's (its record),
	// and libvirt refuses to undefine a domain with one otherwise (the
	// test driver knows no such flag, and no UEFI).
	if x, err := call(ctx, d, func() (string, error) { return d.lv.DomainGetXMLDesc(dom, libvirt.DomainXMLInactive) }); err == nil && strings.Contains(x, "<nvram") {
		flags |= libvirt.DomainUndefineKeepNvram
	}
	if err := call0(ctx, d, func() error { return d.lv.DomainUndefineFlags(dom, flags) }); err != nil {
		return d.opErr("undefine", name, err)
	}
	d.log.Info("domain undefined", "domain", name)
	return nil
}

// State returns the domain's run state.
func (d *Driver) State(ctx context.Context, name string) (State, error) {
	dom, err := d.lookup(ctx, name)
	if err != nil {
		return StateUnknown, err
	}
	st, err := d.state(ctx, dom)
	if err != nil {
		return StateUnknown, d.opErr("state of", name, err)
	}
	return st, nil
}

// List returns every domain libvirtd knows, running or not.
func (d *Driver) List(ctx context.Context) ([]DomainInfo, error) {
	type listed struct {
		doms []libvirt.Domain
	}
	l, err := call(ctx, d, func() (listed, error) {
		doms, _, err := d.lv.ConnectListAllDomains(1, 0)
		return listed{doms}, err
	})
	if err != nil {
		return nil, fmt.Errorf("compute: list domains: %w", err)
	}
	out := make([]DomainInfo, 0, len(l.doms))
	for _, dom := range l.doms {
		st, err := d.state(ctx, dom)
		if IsNotFoundErr(err) {
			continue // undefined while we listed
		}
		if err != nil {
			return nil, d.opErr("state of", dom.Name, err)
		}
		out = append(out, DomainInfo{Name: dom.Name, UUID: formatUUID(dom.UUID), State: st})
	}
	return out, nil
}

func (d *Driver) lookup(ctx context.Context, name string) (libvirt.Domain, error) {
	dom, err := call(ctx, d, func() (libvirt.Domain, error) { return d.lv.DomainLookupByName(name) })
	if err != nil {
		return libvirt.Domain{}, d.opErr("look up", name, err)
	}
	return dom, nil
}

func (d *Driver) state(ctx context.Context, dom libvirt.Domain) (State, error) {
	s, err := call(ctx, d, func() (int32, error) {
		s, _, err := d.lv.DomainGetState(dom, 0)
		return s, err
	})
	return stateFromLibvirt(s), err
}

// opErr wraps err, mapping libvirt's "no domain" to ErrNotFound.
func (d *Driver) opErr(op, name string, err error) error {
	if IsNotFoundErr(err) {
		return fmt.Errorf("compute: %s domain %q: %w", op, name, ErrNotFound)
	}
	return fmt.Errorf("compute: %s domain %q: %w", op, name, err)
}

// IsNotFoundErr reports whether err is ErrNotFound or libvirt's ERR_NO_DOMAIN.
func IsNotFoundErr(err error) bool {
	return errors.Is(err, ErrNotFound) || libvirt.IsNotFound(err)
}

func (d *Driver) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok || d.callTimeout <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d.callTimeout)
}

// call runs one blocking go-libvirt call under ctx (go-libvirt takes no
// context). When ctx ends first the call is abandoned, not cancelled: its
// reply is dropped when it arrives.
func call[T any](ctx context.Context, d *Driver, f func() (T, error)) (T, error) {
	var zero T
	if err := ctx.Err(); err != nil {
		return zero, err
	}
	ctx, cancel := d.withTimeout(ctx)
	defer cancel()
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		v, err := f()
		ch <- result{v, err}
	}()
	select {
	case r := <-ch:
		return r.v, r.err
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}

func call0(ctx context.Context, d *Driver, f func() error) error {
	_, err := call(ctx, d, func() (struct{}, error) { return struct{}{}, f() })
	return err
}

func formatUUID(u libvirt.UUID) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

// ResumeIOErrorPaused resumes the domains QEMU paused on an I/O error
// (error_policy='stop') for which ok returns true, and names them.
func (d *Driver) ResumeIOErrorPaused(ctx context.Context, ok func(name string) bool) ([]string, error) {
	doms, err := call(ctx, d, func() ([]libvirt.Domain, error) {
		doms, _, err := d.lv.ConnectListAllDomains(1, libvirt.ConnectListDomainsActive)
		return doms, err
	})
	if err != nil {
		return nil, fmt.Errorf("compute: list domains: %w", err)
	}
	var resumed []string
	for _, dom := range doms {
		type st struct{ state, reason int32 }
		s, err := call(ctx, d, func() (st, error) {
			s, r, err := d.lv.DomainGetState(dom, 0)
			return st{s, r}, err
		})
		if err != nil || libvirt.DomainState(s.state) != libvirt.DomainPaused || libvirt.DomainPausedReason(s.reason) != libvirt.DomainPausedIoerror || !ok(dom.Name) {
			continue
		}
		if err := call0(ctx, d, func() error { return d.lv.DomainResume(dom) }); err != nil {
			return resumed, d.opErr("resume", dom.Name, err)
		}
		d.log.Info("domain resumed after an I/O error pause", "domain", dom.Name)
		resumed = append(resumed, dom.Name)
	}
	return resumed, nil
}

// Warm asks libvirtd for the domain capabilities of the configured domain
// type, so that its one-time QEMU probe (about 2 s) happens now and not
// inside the first VM start of a failover.
func (d *Driver) Warm(ctx context.Context) error {
	dt := d.xmlOpts.DomainType
	_, err := call(ctx, d, func() (string, error) {
		return d.lv.ConnectGetDomainCapabilities(nil, libvirt.OptString{"x86_64"}, nil, libvirt.OptString{dt}, 0)
	})
	if err != nil {
		return fmt.Errorf("compute: domain capabilities: %w", err)
	}
	return nil
}

// ChangeMedia puts the ISO at path into the CD-ROM drive of domain name
// ("" ejects, forcing the tray open if the guest locked it). A running
// domain sees the change at once and keeps it in its persistent
// definition; a stopped one gets it at its next start. The drive's device
// element is the domain's own with only its source changed, so libvirt
// finds nothing else modified (boot order, address).
func (d *Driver) ChangeMedia(ctx context.Context, name, path string) error {
	if path != "" && !filepath.IsAbs(path) {
		return invalid("cdrom %q must be an absolute path", path)
	}
	dom, err := d.lookup(ctx, name)
	if err != nil {
		return err
	}
	st, err := d.state(ctx, dom)
	if err != nil {
		return err
	}
	flags := libvirt.DomainDeviceModifyConfig
	xflags := libvirt.DomainXMLInactive
	if st == StateRunning || st == StatePaused {
		flags |= libvirt.DomainDeviceModifyLive
		xflags = 0
	}
	x, err := call(ctx, d, func() (string, error) { return d.lv.DomainGetXMLDesc(dom, xflags) })
	if err != nil {
		return d.opErr("read the definition of", name, err)
	}
	var def libvirtxml.Domain
	if err := def.Unmarshal(x); err != nil {
		return fmt.Errorf("compute: parse the definition of domain %q: %w", name, err)
	}
	var disk *libvirtxml.DomainDisk
	if def.Devices != nil {
		for i := range def.Devices.Disks {
			if isCDROM(def.Devices.Disks[i]) {
				disk = &def.Devices.Disks[i]
				break
			}
		}
	}
	if disk == nil {
		return invalid("domain %q has no CD-ROM drive", name)
	}
	setCDROMSource(disk, path)
	if path == "" {
		flags |= libvirt.DomainDeviceModifyForce
	}
	dx, err := disk.Marshal()
	if err != nil {
		return fmt.Errorf("compute: marshal the CD-ROM of domain %q: %w", name, err)
	}
	if err := call0(ctx, d, func() error { return d.lv.DomainUpdateDeviceFlags(dom, dx, flags) }); err != nil {
		return d.opErr("change the CD-ROM of", name, err)
	}
	d.log.Info("CD-ROM changed", "domain", name, "image", path)
	return nil
}
