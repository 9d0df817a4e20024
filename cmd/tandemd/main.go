package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/config"
	"github.com/tandemhci/tandem/internal/daemon"
	"github.com/tandemhci/tandem/internal/version"
)

func main() {
	if msg := withSoftSettings(); msg != "" {
		fmt.Fprintf(os.Stderr, "tandemd: %s\n", msg)
	}
	setProcs()
	os.Exit(run(os.Args[1:], os.Stderr))
}

// minProcs is tandemd's floor for GOMAXPROCS.
const minProcs = 4

// setProcs raises GOMAXPROCS to twice the core count, at least minProcs,
// unless the environment sets it. Disk I/O is blocking pwrite and fdatasync
// calls: a goroutine in one keeps its P until the runtime's monitor hands
// the P off, 20 µs to 10 ms later, so with one P per core a few slow writes
// stall every other request, network replies included. Measured on 2
// cores, 4K writes at queue depth 32 through NBD: 19k IOPS with 2 Ps, 42k
// with 16; 4 Ps did as well with 25% less CPU (idle Ps spin looking for
// work) and, replicated, 10-40% more IOPS than 16.
func setProcs() {
	if os.Getenv("GOMAXPROCS") != "" {
		return
	}
	runtime.GOMAXPROCS(max(minProcs, 2*runtime.NumCPU()))
}

// flagKeys maps command-line flags to config file keys; flags win.
func flagKeys() [][2]string {
	return [][2]string{
		{"node-name", "node_name"},
		{"data-dir", "data_dir"},
		{"backend-addr", "backend_addr"},
		{"raft-addr", "raft_addr"},
		{"admin-addr", "admin_addr"},
		{"metrics-addr", "metrics_addr"},
		{"replication-addr", "replication_addr"},
		{"nbd-addr", "nbd_addr"},
		{"role", "role"},
		{"libvirt-socket", "compute.libvirt_socket"},
		{"vm-bridge", "compute.bridge"},
		{"vm-memory-mib", "compute.memory_mib"},
		{"migration-uri", "compute.migration_uri"},
		{"libvirt-insecure-tcp", "compute.libvirt_insecure_tcp"},
		{"migration-stream-tls", "compute.migration_stream_tls"},
		{"log-format", "log.format"},
		{"log-level", "log.level"},
		{"pprof", "pprof"},
	}
}

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("tandemd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "config file (YAML); flags override its settings (default "+config.DefaultPath+" when it exists)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	vals := map[string]*string{}
	for _, fk := range flagKeys() {
		vals[fk[0]] = fs.String(fk[0], "", "overrides '"+fk[1]+"' in the config file")
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *showVersion {
		fmt.Fprintln(os.Stdout, "tandemd", version.String())
		return 0
	}
	set := map[string]string{}
	fs.Visit(func(f *flag.Flag) {
		for _, fk := range flagKeys() {
			if fk[0] == f.Name {
				set[fk[1]] = *vals[f.Name]
			}
		}
	})
	explicit := false
	fs.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "config" })
	cfg, err := loadConfig(configPath(*cfgPath, explicit, config.DefaultPath), set)
	if err != nil {
		fmt.Fprintf(stderr, "tandemd: %s\n", oneLine(err))
		return 1
	}
	log := newLogger(cfg.Log, stderr)
	consensus.InstallLogger(log)

	d, err := daemon.New(cfg, log)
	if err != nil {
		fmt.Fprintf(stderr, "tandemd: %s\n", oneLine(err))
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go notifySystemd(ctx, d, log)
	if err := d.Run(ctx); err != nil {
		var se *daemon.StartupError
		if errors.As(err, &se) {
			fmt.Fprintf(stderr, "tandemd: %s\n", oneLine(err))
		} else {
			log.Error("tandemd stopped", "err", err)
		}
		return 1
	}
	return 0
}

// configPath is the file to read: the one given with --config, else the
// default one when it exists, else none (flags only). An explicit
// --config "" reads no file.
func configPath(flagValue string, explicit bool, defaultPath string) string {
	if explicit {
		return flagValue
	}
	if _, err := os.Stat(defaultPath); err == nil {
		return defaultPath
	}
	return ""
}

// loadConfig applies flag values on top of the file's settings before the
// defaults are derived, so addresses derived from the backend address follow
// a --backend-addr override too.
func loadConfig(path string, set map[string]string) (config.Config, error) {
	var c config.Config
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return config.Config{}, fmt.Errorf("reading config file: %w", err)
		}
		if c, err = config.Decode(data); err != nil {
			return config.Config{}, fmt.Errorf("%s: %w", path, err)
		}
	}
	fields := map[string]*string{
		"node_name": &c.NodeName, "data_dir": &c.DataDir, "backend_addr": &c.BackendAddr,
		"raft_addr": &c.RaftAddr, "admin_addr": &c.AdminAddr, "metrics_addr": &c.MetricsAddr,
		"replication_addr": &c.ReplicationAddr, "nbd_addr": &c.NBDAddr,
		"role": &c.Role, "log.format": &c.Log.Format, "log.level": &c.Log.Level,
		"compute.libvirt_socket": &c.Compute.LibvirtSocket, "compute.bridge": &c.Compute.Bridge,
		"compute.migration_uri": &c.Compute.MigrationURI,
	}
	for k, v := range set {
		if k == "pprof" {
			on, err := strconv.ParseBool(v)
			if err != nil {
				return config.Config{}, fmt.Errorf("--pprof %q: want true or false", v)
			}
			c.Pprof = on
			continue
		}
		if b, flag := boolSetting(&c, k); b != nil {
			on, err := strconv.ParseBool(v)
			if err != nil {
				return config.Config{}, fmt.Errorf("--%s %q: want true or false", flag, v)
			}
			*b = on
			continue
		}
		if k == "compute.memory_mib" {
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return config.Config{}, fmt.Errorf("--vm-memory-mib %q: want a number of MiB", v)
			}
			c.Compute.MemoryMiB = n
			continue
		}
		*fields[k] = v
	}
	if v, ok := set["metrics_addr"]; ok && v == "" {
		c.MetricsAddr = config.MetricsOff
	}
	c.ApplyDefaults()
	if err := c.Validate(); err != nil {
		return config.Config{}, fmt.Errorf("config invalid: %w", err)
	}
	return c, nil
}

// boolSetting is the boolean compute setting k names, with its flag.
func boolSetting(c *config.Config, k string) (*bool, string) {
	switch k {
	case "compute.libvirt_insecure_tcp":
		return &c.Compute.LibvirtInsecureTCP, "libvirt-insecure-tcp"
	case "compute.migration_stream_tls":
		return &c.Compute.MigrationStreamTLS, "migration-stream-tls"
	}
	return nil, ""
}

func newLogger(lc config.LogConfig, w io.Writer) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(lc.Level))
	opts := &slog.HandlerOptions{Level: lv}
	if lc.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func oneLine(err error) string {
	return strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "; ")
}
