package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/tandemhci/tandem/internal/faultfs"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "tandem-faultfs:", err)
		os.Exit(1)
	}
}

const usage = `usage:
  tandem-faultfs serve -backing DIR -mount DIR -control SOCK
  tandem-faultfs -control SOCK set -ops write|sync [-path PATTERN] [-err EIO] [-delay 200ms]
  tandem-faultfs -control SOCK clear|faults|powerloss|sync|counters|unmount`

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "serve" {
		return serve(args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("tandem-faultfs", flag.ContinueOnError)
	fs.SetOutput(stderr)
	control := fs.String("control", "", "control socket of a running serve")
	fs.Usage = func() { fmt.Fprintln(stderr, usage) }
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *control == "" || fs.NArg() == 0 {
		fs.Usage()
		return errors.New("need -control and a command")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := faultfs.Dial(ctx, *control)
	if err != nil {
		return err
	}
	defer c.Close()
	cmd, rest := fs.Arg(0), fs.Args()[1:]
	switch cmd {
	case "set":
		sf := flag.NewFlagSet("set", flag.ContinueOnError)
		sf.SetOutput(stderr)
		var w faultfs.WireFault
		sf.StringVar(&w.Ops, "ops", "", "operations: read, write, sync, flush, meta or all, joined by |")
		sf.StringVar(&w.Path, "path", "", "path pattern relative to the mount root (empty: everything)")
		sf.StringVar(&w.Err, "err", "", "error to return: EIO, ENOSPC, … (empty: delay only)")
		sf.StringVar(&w.Delay, "delay", "", "delay before each operation, e.g. 200ms")
		sf.IntVar(&w.Times, "times", 0, "operations the fault hits before it removes itself (0: until cleared)")
		if err := sf.Parse(rest); err != nil {
			return err
		}
		f, err := w.Fault()
		if err != nil {
			return err
		}
		return c.SetFault(ctx, f)
	case "clear":
		return c.Clear(ctx)
	case "powerloss":
		return c.PowerLoss(ctx)
	case "sync":
		return c.Sync(ctx)
	case "unmount":
		return c.Unmount(ctx)
	case "faults":
		fl, err := c.Faults(ctx)
		if err != nil {
			return err
		}
		out := make([]faultfs.WireFault, 0, len(fl))
		for _, f := range fl {
			out = append(out, f.ToWire())
		}
		return printJSON(stdout, out)
	case "counters":
		cnt, dirty, err := c.Counters(ctx)
		if err != nil {
			return err
		}
		return printJSON(stdout, struct {
			faultfs.Counters
			DirtyBytes int64 `json:"dirty_bytes"`
		}{cnt, dirty})
	}
	fs.Usage()
	return fmt.Errorf("unknown command %q", cmd)
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func serve(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	backing := fs.String("backing", "", "directory holding the durable data")
	mnt := fs.String("mount", "", "mount point (an existing directory)")
	control := fs.String("control", "", "unix socket path for control requests")
	maxDirty := fs.Int64("max-dirty", 0, "unsynced bytes held before early writeback (0: default, <0: no bound)")
	debug := fs.Bool("debug", false, "log every FUSE request")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *backing == "" || *mnt == "" || *control == "" {
		fs.Usage()
		return errors.New("serve needs -backing, -mount and -control")
	}
	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	f, err := faultfs.Mount(ctx, *backing, *mnt, faultfs.Options{MaxDirtyBytes: *maxDirty, Logger: log, Debug: *debug})
	if err != nil {
		return err
	}
	served := make(chan error, 1)
	go func() { served <- faultfs.Serve(ctx, f, *control) }()
	// Ready once the socket answers.
	for {
		if c, err := faultfs.Dial(ctx, *control); err == nil {
			c.Close()
			break
		}
		select {
		case err := <-served:
			uctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			return errors.Join(err, f.Unmount(uctx))
		case <-time.After(10 * time.Millisecond):
		}
	}
	fmt.Fprintln(stdout, "ready")
	err = <-served
	// Serve unmounts on its way out; make sure on every path.
	uctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return errors.Join(err, f.Unmount(uctx))
}
