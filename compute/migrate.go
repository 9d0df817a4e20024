package compute

import (
	"context"
	"fmt"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/digitalocean/go-libvirt"
)

const (
	// DefaultProgressInterval is how often Migrate reports progress.
	DefaultProgressInterval = 200 * time.Millisecond
	// abortTimeout bounds DomainAbortJob after the caller's ctx ended.
	abortTimeout = 10 * time.Second
)

// MigrateOptions tune a live migration. The zero value uses libvirt's
// defaults (300 ms maximum downtime, unlimited bandwidth).
type MigrateOptions struct {
	// MaxDowntime is the longest pause QEMU may take to switch over.
	MaxDowntime time.Duration
	// BandwidthMiBps caps the migration stream (0 = unlimited).
	BandwidthMiBps uint64
	// MigrateURI overrides where the data stream goes (e.g.
	// "tcp://10.99.0.12"); by default the destination's migration_host.
	MigrateURI string
	// TLS encrypts QEMU's migration stream (memory and device state) with
	// x509 certificates too (VIR_MIGRATE_TLS): libvirt has both QEMUs use
	// the files in qemu.conf's migrate_tls_x509_cert_dir, and with
	// migrate_tls_x509_verify the destination checks the source's client
	// certificate. Without it, only libvirt's control connection is
	// encrypted (by a qemu+tls URI) and the stream is plain TCP.
	TLS bool
	// Progress, if set, is called from another goroutine about every
	// ProgressInterval while the migration runs.
	Progress         func(MigrateProgress)
	ProgressInterval time.Duration
	// DestSpec, if set, is the domain as the destination must run it (its
	// disks point at the destination node's own NBD export). Its
	// host-side details (NBD exports and sockets, with the source
	// Driver's reconnect delay; bridges; serial log; kernel and initrd
	// paths) are written into the source domain's migratable XML, live
	// and persistent, which the destination then runs and keeps. Its
	// name must be the domain's; an empty UUID means the domain's own.
	// Any other difference from the running domain is an ErrInvalidSpec.
	DestSpec *VMSpec
	// Dest, if set, is a Driver on the destination's libvirtd. Completed
	// statistics (downtime) are read from it: with MigrateUndefineSource
	// the source forgets the domain, and its statistics with it.
	Dest *Driver
}

// MigrateProgress is one progress sample of a running migration. Memory
// counts guest RAM; Data also counts disks and device state.
type MigrateProgress struct {
	Elapsed         time.Duration
	MemoryTotal     uint64
	MemoryProcessed uint64
	MemoryRemaining uint64
	DataTotal       uint64
	DataProcessed   uint64
	DataRemaining   uint64
}

// MigrateResult describes a completed migration.
type MigrateResult struct {
	// Total is libvirt's job time when completed statistics were
	// available, otherwise the wall-clock time of the migration call.
	Total time.Duration
	// Downtime is how long the guest was paused for the switch-over; 0
	// when unknown (no completed statistics, see StatsFrom).
	Downtime time.Duration
	// DataTransferred is the bytes sent (completed statistics, else the
	// last progress sample).
	DataTransferred uint64
	// StatsFrom says where the numbers come from: "destination",
	// "source" or "measured".
	StatsFrom string
}

// Migrate live-migrates the running domain name to the libvirtd at destURI
// (e.g. "qemu+tcp://10.99.0.12/system") with peer-to-peer migration: the
// source libvirtd drives the whole protocol, so the caller needs only this
// Driver. The destination keeps a persistent definition and the source's
// is removed. If ctx ends first, the migration job is aborted, which
// leaves the domain running on the source.
//
// Statistics (libvirt 9.0): with MigrateUndefineSource the source drops the
// domain and its completed job statistics when Perform returns, so they are
// read from opts.Dest, whose copy (from the migration cookie) includes the
// downtime. Without Dest, Total is the measured call time and Downtime is 0.
// The job time includes starting the destination QEMU and reaping the
// source's, so it is well above the downtime.
func (d *Driver) Migrate(ctx context.Context, name, destURI string, opts MigrateOptions) (MigrateResult, error) {
	var res MigrateResult
	if destURI == "" {
		return res, fmt.Errorf("compute: migrate domain %q: empty destination URI", name)
	}
	if opts.DestSpec != nil {
		if err := opts.DestSpec.Validate(); err != nil {
			return res, fmt.Errorf("compute: migrate domain %q: destination spec: %w", name, err)
		}
	}
	dom, err := d.lookup(ctx, name)
	if err != nil {
		return res, err
	}
	if opts.MaxDowntime > 0 {
		ms := uint64(opts.MaxDowntime / time.Millisecond)
		if err := call0(ctx, d, func() error { return d.lv.DomainMigrateSetMaxDowntime(dom, max(ms, 1), 0) }); err != nil {
			return res, d.opErr("set max downtime of", name, err)
		}
	}
	var params []libvirt.TypedParam
	if opts.BandwidthMiBps > 0 {
		params = append(params, libvirt.TypedParam{Field: libvirt.MigrateParamBandwidth, Value: *libvirt.NewTypedParamValueUllong(opts.BandwidthMiBps)})
	}
	if opts.DestSpec != nil {
		// Edit what the source runs rather than render the spec again: the
		// migratable XML carries what libvirt filled in (addresses,
		// aliases, MACs), so only the host-side parts change. The
		// persistent definition comes from the inactive XML, so that
		// live-only state does not become the destination's config.
		live, err := d.destXML(ctx, dom, *opts.DestSpec, 0)
		if err != nil {
			return res, fmt.Errorf("compute: migrate domain %q: destination XML: %w", name, err)
		}
		persist, err := d.destXML(ctx, dom, *opts.DestSpec, libvirt.DomainXMLInactive)
		if err != nil {
			return res, fmt.Errorf("compute: migrate domain %q: destination persistent XML: %w", name, err)
		}
		params = append(params, libvirt.TypedParam{Field: libvirt.MigrateParamDestXML, Value: *libvirt.NewTypedParamValueString(live)}, libvirt.TypedParam{Field: libvirt.MigrateParamPersistXML, Value: *libvirt.NewTypedParamValueString(persist)})
	}
	if opts.MigrateURI != "" {
		params = append(params, libvirt.TypedParam{Field: libvirt.MigrateParamURI, Value: *libvirt.NewTypedParamValueString(opts.MigrateURI)})
	}
	flags := libvirt.MigrateLive | libvirt.MigratePeer2peer | libvirt.MigratePersistDest | libvirt.MigrateUndefineSource
	if opts.TLS {
		flags |= libvirt.MigrateTLS
	}

	d.log.Info("migration starting", "domain", name, "dest", destURI, "stream_tls", opts.TLS)
	start := time.Now()
	performed := make(chan error, 1)
	// Not call(): a migration may legitimately outlast the per-call
	// timeout, so only ctx bounds it.
	go func() {
		_, err := d.lv.DomainMigratePerform3Params(dom, libvirt.OptString{destURI}, params, nil, flags)
		performed <- err
	}()
	var last MigrateProgress
	interval := opts.ProgressInterval
	if interval <= 0 {
		interval = DefaultProgressInterval
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case err = <-performed:
		case <-ctx.Done():
			return res, d.abortMigration(ctx, name, dom, performed)
		case <-tick.C:
			if p, ok := d.jobProgress(ctx, dom); ok {
				last = p
				if opts.Progress != nil {
					opts.Progress(p)
				}
			}
			continue
		}
		break
	}
	wall := time.Since(start)
	if err != nil {
		return res, d.opErr("migrate", name, err)
	}
	res = MigrateResult{Total: wall, DataTransferred: last.DataProcessed, StatsFrom: "measured"}
	if st, ok := d.completedStats(ctx, dom, opts.Dest, name); ok {
		res = st
	}
	d.log.Info("migration done", "domain", name, "dest", destURI, "total", res.Total,
		"downtime", res.Downtime, "bytes", res.DataTransferred, "stats_from", res.StatsFrom)
	return res, nil
}

// abortMigration cancels the running job after ctx ended and waits
// (bounded) for the Perform call to return, so that the caller learns
// whether the domain stayed on the source.
func (d *Driver) abortMigration(ctx context.Context, name string, dom libvirt.Domain, performed <-chan error) error {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), abortTimeout)
	defer cancel()
	aerr := call0(actx, d, func() error { return d.lv.DomainAbortJob(dom) })
	var perr error
	select {
	case perr = <-performed:
	case <-actx.Done():
		perr = actx.Err()
	}
	d.log.Warn("migration aborted", "domain", name, "abort_err", aerr, "perform_err", perr)
	if aerr != nil {
		return fmt.Errorf("compute: migrate domain %q: %w (abort: %w)", name, ctx.Err(), aerr)
	}
	if perr == nil {
		// The switch-over won the race: the domain is on the destination.
		return fmt.Errorf("compute: migrate domain %q: %w after the migration completed", name, ctx.Err())
	}
	return fmt.Errorf("compute: migrate domain %q: %w (aborted: %v)", name, ctx.Err(), perr)
}

// jobProgress samples the running job; ok is false when there is none
// (not started yet, or already finished).
func (d *Driver) jobProgress(ctx context.Context, dom libvirt.Domain) (MigrateProgress, bool) {
	type stats struct {
		typ    int32
		params []libvirt.TypedParam
	}
	s, err := call(ctx, d, func() (stats, error) {
		typ, params, err := d.lv.DomainGetJobStats(dom, 0)
		return stats{typ, params}, err
	})
	if err != nil || libvirt.DomainJobType(s.typ) == libvirt.DomainJobNone {
		return MigrateProgress{}, false
	}
	p := jobParams(s.params)
	return MigrateProgress{
		Elapsed:         time.Duration(p[libvirt.DomainJobTimeElapsed]) * time.Millisecond,
		MemoryTotal:     p[libvirt.DomainJobMemoryTotal],
		MemoryProcessed: p[libvirt.DomainJobMemoryProcessed],
		MemoryRemaining: p[libvirt.DomainJobMemoryRemaining],
		DataTotal:       p[libvirt.DomainJobDataTotal],
		DataProcessed:   p[libvirt.DomainJobDataProcessed],
		DataRemaining:   p[libvirt.DomainJobDataRemaining],
	}, true
}

// completedStats reads the finished job's statistics, from the
// destination when a Driver for it is given, else from the source (which
// no longer knows the domain after MigrateUndefineSource).
func (d *Driver) completedStats(ctx context.Context, src libvirt.Domain, dest *Driver, name string) (MigrateResult, bool) {
	try := func(dr *Driver, dom libvirt.Domain, from string) (MigrateResult, bool) {
		type stats struct {
			typ    int32
			params []libvirt.TypedParam
		}
		s, err := call(ctx, dr, func() (stats, error) {
			typ, params, err := dr.lv.DomainGetJobStats(dom, libvirt.DomainJobStatsCompleted)
			return stats{typ, params}, err
		})
		if err != nil || libvirt.DomainJobType(s.typ) != libvirt.DomainJobCompleted {
			d.log.Debug("no completed migration statistics", "domain", name, "from", from, "type", s.typ, "err", err)
			return MigrateResult{}, false
		}
		p := jobParams(s.params)
		return MigrateResult{
			Total:           time.Duration(p[libvirt.DomainJobTimeElapsed]) * time.Millisecond,
			Downtime:        time.Duration(p[libvirt.DomainJobDowntime]) * time.Millisecond,
			DataTransferred: p[libvirt.DomainJobDataProcessed],
			StatsFrom:       from,
		}, true
	}
	if dest != nil {
		if dom, err := dest.lookup(ctx, name); err == nil {
			if r, ok := try(dest, dom, "destination"); ok {
				return r, true
			}
		}
	}
	return try(d, src, "source")
}

// jobParams collects the unsigned numeric job statistics by name.
func jobParams(params []libvirt.TypedParam) map[string]uint64 {
	m := make(map[string]uint64, len(params))
	for _, p := range params {
		switch v := p.Value.I.(type) {
		case uint64:
			m[p.Field] = v
		case int64:
			if v >= 0 {
				m[p.Field] = uint64(v)
			}
		case uint32:
			m[p.Field] = uint64(v)
		case int32:
			if v >= 0 {
				m[p.Field] = uint64(v)
			}
		}
	}
	return m
}

// NodeMemory reports the host's total and free memory in MiB. Free counts
// buffers and page cache too, which the kernel reclaims for guests.
//
// It prefers the host-wide statistics (/proc/meminfo): NodeGetInfo sums
// the NUMA nodes' sysfs counters, which on some VMs miss hot-plugged
// memory (seen here: 6.7 of 24 GiB). Drivers without node statistics
// (test://) fall back to NodeGetInfo and NodeGetFreeMemory.
func (d *Driver) NodeMemory(ctx context.Context) (totalMiB, freeMiB uint64, err error) {
	stats, err := call(ctx, d, func() (map[string]uint64, error) {
		cells := int32(libvirt.NodeMemoryStatsAllCells)
		_, n, err := d.lv.NodeGetMemoryStats(0, cells, 0)
		if err != nil {
			return nil, err
		}
		params, _, err := d.lv.NodeGetMemoryStats(n, cells, 0)
		if err != nil {
			return nil, err
		}
		m := make(map[string]uint64, len(params))
		for _, p := range params {
			m[p.Field] = p.Value
		}
		return m, nil
	})
	if err == nil && stats[libvirt.NodeMemoryStatsTotal] > 0 {
		free := stats[libvirt.NodeMemoryStatsFree] + stats[libvirt.NodeMemoryStatsBuffers] + stats[libvirt.NodeMemoryStatsCached]
		return stats[libvirt.NodeMemoryStatsTotal] / 1024, free / 1024, nil // KiB
	}
	if ctx.Err() != nil {
		return 0, 0, fmt.Errorf("compute: node memory: %w", ctx.Err())
	}
	totalKiB, err := call(ctx, d, func() (uint64, error) {
		_, mem, _, _, _, _, _, _, err := d.lv.NodeGetInfo()
		return mem, err
	})
	if err != nil {
		return 0, 0, fmt.Errorf("compute: node info: %w", err)
	}
	freeB, err := call(ctx, d, d.lv.NodeGetFreeMemory)
	if err != nil {
		return 0, 0, fmt.Errorf("compute: node free memory: %w", err)
	}
	return totalKiB / 1024, freeB / (1 << 20), nil
}

// Running returns the names of the domains that are active (running,
// paused or otherwise not shut off).
func (d *Driver) Running(ctx context.Context) ([]string, error) {
	doms, err := call(ctx, d, func() ([]libvirt.Domain, error) {
		doms, _, err := d.lv.ConnectListAllDomains(1, libvirt.ConnectListDomainsActive)
		return doms, err
	})
	if err != nil {
		return nil, fmt.Errorf("compute: list running domains: %w", err)
	}
	names := make([]string, 0, len(doms))
	for _, dom := range doms {
		names = append(names, dom.Name)
	}
	return names, nil
}

// IncomingMigrationStats reads, on the destination, the completed
// statistics of the migration that brought name here (libvirt keeps them
// only there once the source undefined the domain).
func (d *Driver) IncomingMigrationStats(ctx context.Context, name string) (MigrateResult, bool) {
	dom, err := d.lookup(ctx, name)
	if err != nil {
		return MigrateResult{}, false
	}
	r, ok := d.completedStats(ctx, dom, d, name)
	if ok {
		r.StatsFrom = "destination"
	}
	return r, ok
}

// WithPKIPath returns uri with libvirt's pkipath parameter set to dir when
// uri is a qemu+tls URI that names none: in a peer-to-peer migration the
// source libvirtd is the TLS client of the destination, and pkipath is
// where it finds its client certificate, key and CA (clientcert.pem,
// clientkey.pem, cacert.pem). Other URIs and an empty dir are returned
// unchanged.
func WithPKIPath(uri, dir string) string {
	u, err := url.Parse(uri)
	if err != nil || dir == "" || u.Scheme != "qemu+tls" {
		return uri
	}
	if u.Query().Get("pkipath") != "" {
		return uri
	}
	// Plain paths stay readable in logs; libvirt unescapes either form.
	v := dir
	if strings.ContainsFunc(dir, func(r rune) bool {
		return !(r == '/' || r == '-' || r == '_' || r == '.' || '0' <= r && r <= '9' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z')
	}) {
		v = url.QueryEscape(dir)
	}
	if u.RawQuery != "" {
		u.RawQuery += "&"
	}
	u.RawQuery += "pkipath=" + v
	return u.String()
}

// IsTLSURI reports whether uri reaches libvirtd over TLS (qemu+tls).
func IsTLSURI(uri string) bool {
	u, err := url.Parse(uri)
	return err == nil && u.Scheme == "qemu+tls"
}

// ReloadTLS makes the libvirtd whose read-write socket is socket re-read
// its TLS certificate, key and CA files (libvirt 6.2+), through its admin
// socket next to it and virt-admin: go-libvirt does not speak the admin
// protocol. New TLS connections use the new files; open ones keep theirs.
func ReloadTLS(ctx context.Context, socket string) error {
	admin := filepath.Join(filepath.Dir(socket), "libvirt-admin-sock")
	uri := "libvirtd:///system?socket=" + admin
	out, err := exec.CommandContext(ctx, "virt-admin", "-c", uri, "server-update-tls", "libvirtd").CombinedOutput()
	if err != nil {
		return fmt.Errorf("compute: virt-admin -c %s server-update-tls libvirtd: %w: %s", uri, err, strings.TrimSpace(string(out)))
	}
	return nil
}
