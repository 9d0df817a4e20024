package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/tandemhci/tandem/internal/adminclient"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// escapeKey ends an interactive serial session: Ctrl-], as virsh console.
const escapeKey = 0x1d

// consoleStream is the client end of a Console stream.
type consoleStream interface {
	Send(*tandemv1.ConsoleFrame) error
	Recv() (*tandemv1.ConsoleFrame, error)
	CloseSend() error
}

func newVMConsoleCmd(a *app) *cobra.Command {
	var follow, logOnly bool
	var tail int64
	cmd := &cobra.Command{
		Use:   "console NAME",
		Short: "Open the VM's serial console (Ctrl-] ends it), or print its log (--log)",
		Long: `Open the VM's serial console (ttyS0), in both directions, like virsh
console: what you type goes to the guest, what it writes comes back. On a
terminal the session runs in raw mode, so Ctrl-C and the like reach the
guest; Ctrl-] ends it. With stdin not a terminal, the end of stdin ends it
too. One session per VM at a time. Any node reaches the VM's console
wherever it runs; operator or admin credentials are needed.

--log prints the console log instead (read-only; every node running the VM
keeps it), with --tail and --follow.`,
		Example: `  tandem vm console web1
  tandem vm console web1 --log --follow`,
		Args: argsNamed("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if logOnly || cmd.Flags().Changed("follow") || cmd.Flags().Changed("tail") {
				return a.withClient(cmd, 0, func(ctx context.Context, c *adminclient.Client) error {
					st, err := c.VM.Console(ctx, &tandemv1.ConsoleRequest{Name: args[0], Tail: tail, Follow: follow})
					if err != nil {
						return err
					}
					return recvAll(ctx, st.Recv, func(chunk *tandemv1.ConsoleChunk) error {
						_, err := a.stdout.Write(chunk.Data)
						return err
					})
				})
			}
			return a.withClient(cmd, 0, func(ctx context.Context, c *adminclient.Client) error {
				return a.serialSession(ctx, c, args[0], cmd.InOrStdin())
			})
		},
	}
	cmd.Flags().BoolVar(&logOnly, "log", false, "print the console log (read-only) instead of opening the console")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "with --log: keep printing new output")
	cmd.Flags().Int64Var(&tail, "tail", 4096, "with --log: bytes from the end to start with")
	return cmd
}

// openConsole opens a Console stream to vm and waits for the server's
// opened frame (or its refusal).
func openConsole(ctx context.Context, open func(context.Context) (consoleStream, error), vm string, probe bool) (consoleStream, string, error) {
	st, err := open(ctx)
	if err != nil {
		return nil, "", err
	}
	if err := st.Send(&tandemv1.ConsoleFrame{Open: &tandemv1.ConsoleOpen{Vm: vm, Probe: probe}}); err != nil && !errors.Is(err, io.EOF) {
		return nil, "", err
	}
	f, err := st.Recv()
	if errors.Is(err, io.EOF) {
		return nil, "", fmt.Errorf("the daemon ended the console stream of VM %s without an answer", vm)
	}
	if err != nil {
		return nil, "", err
	}
	if f.Opened == "" {
		return nil, "", fmt.Errorf("the daemon answered the console of VM %s with data before opening it", vm)
	}
	return st, f.Opened, nil
}

// splitEscape returns what of b goes to the guest: the bytes before the
// escape key, and whether it was typed.
func splitEscape(b []byte) ([]byte, bool) {
	if i := bytes.IndexByte(b, escapeKey); i >= 0 {
		return b[:i], true
	}
	return b, false
}

// serialSession runs an interactive serial console session of vm.
func (a *app) serialSession(ctx context.Context, c *adminclient.Client, vm string, stdin io.Reader) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, where, err := openConsole(ctx, func(ctx context.Context) (consoleStream, error) { return c.Console.Serial(ctx) }, vm, false)
	if err != nil {
		return err
	}
	fmt.Fprintf(a.stderr, "Connected to the serial console of VM %s (%s). Escape character is ^] (Ctrl-]).\r\n", vm, where)
	if f, ok := stdin.(*os.File); ok && isTerminal(stdin) {
		old, err := term.MakeRaw(int(f.Fd()))
		if err != nil {
			return fmt.Errorf("raw terminal mode: %w", err)
		}
		defer func() { _ = term.Restore(int(f.Fd()), old) }()
	}
	// stdin to the guest, until the escape key or its end: then the
	// stream's send side closes, the daemon ends the session, and Recv
	// below sees the end after the guest's last output.
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := stdin.Read(buf)
			data, esc := splitEscape(buf[:n])
			if len(data) > 0 {
				if serr := st.Send(&tandemv1.ConsoleFrame{Data: data}); serr != nil {
					return
				}
			}
			if esc || err != nil {
				_ = st.CloseSend()
				return
			}
		}
	}()
	err = recvAll(ctx, st.Recv, func(f *tandemv1.ConsoleFrame) error {
		_, err := a.stdout.Write(f.Data)
		return err
	})
	fmt.Fprintf(a.stderr, "\r\nDisconnected from VM %s.\r\n", vm)
	return err
}

func newVMVNCCmd(a *app) *cobra.Command {
	var listen string
	cmd := &cobra.Command{
		Use:   "vnc NAME",
		Short: "Tunnel the VM's VNC display to a local port for any VNC viewer",
		Long: `Tunnel the VM's graphical console to a local TCP port: point any VNC
viewer at it (vncviewer 127.0.0.1:5900, or remmina, or TigerVNC). Each
viewer connection goes through the authenticated admin API to the node
running the VM, where QEMU serves the display on 127.0.0.1 only; so it
works from any node and from an admin machine, and after a migration a
reconnecting viewer reaches the VM on its new node. The VM must run;
operator or admin credentials are needed. Ctrl-C ends the tunnel.

The local port has no password of its own: keep --listen on a loopback
address unless every host that can reach it may see and type on the
VM's screen.`,
		Example: `  tandem vm vnc web1
  tandem vm vnc web1 --listen 127.0.0.1:5901`,
		Args: argsNamed("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			vm := args[0]
			return a.withClient(cmd, 0, func(ctx context.Context, c *adminclient.Client) error {
				open := func(ctx context.Context) (consoleStream, error) { return c.Console.VNC(ctx) }
				// Refuse at once (stopped VM, no rights) rather than on
				// the first viewer's connection.
				pctx, pcancel := context.WithCancel(ctx)
				_, where, err := openConsole(pctx, open, vm, true)
				pcancel()
				if err != nil {
					return err
				}
				var lc net.ListenConfig
				ln, err := lc.Listen(ctx, "tcp", listen)
				if err != nil {
					return fmt.Errorf("listen on %s: %w", listen, err)
				}
				defer ln.Close()
				if h, _, err := net.SplitHostPort(listen); err == nil {
					if ip := net.ParseIP(h); ip == nil || !ip.IsLoopback() {
						fmt.Fprintf(a.stderr, "warning: %s is not a loopback address: anyone who reaches it sees and types on VM %s's screen\n", listen, vm)
					}
				}
				fmt.Fprintf(a.stdout, "Listening on %s for VNC viewers of VM %s (now on %s); Ctrl-C ends.\n", ln.Addr(), vm, where)
				go func() {
					<-ctx.Done()
					_ = ln.Close()
				}()
				for {
					conn, err := ln.Accept()
					if err != nil {
						if ctx.Err() != nil {
							return nil
						}
						return fmt.Errorf("accept on %s: %w", listen, err)
					}
					go a.vncTunnel(ctx, open, vm, conn)
				}
			})
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:5900", "local address for VNC viewers (host:port; port 0 picks a free one)")
	return cmd
}

// vncTunnel carries one viewer connection over a fresh Console.VNC
// stream, which finds the VM wherever it runs now.
func (a *app) vncTunnel(ctx context.Context, open func(context.Context) (consoleStream, error), vm string, conn net.Conn) {
	defer conn.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, _, err := openConsole(ctx, open, vm, false)
	if err != nil {
		fmt.Fprintf(a.stderr, "tandem: VNC viewer %s: %s\n", conn.RemoteAddr(), adminclient.Explain(err))
		return
	}
	if err := tunnel(conn, st); err != nil && ctx.Err() == nil {
		fmt.Fprintf(a.stderr, "tandem: VNC viewer %s: %s\n", conn.RemoteAddr(), adminclient.Explain(err))
	}
}

// tunnel copies between a local connection and a console stream until
// either ends; the connection's end closes the stream's send side.
func tunnel(conn net.Conn, st consoleStream) error {
	go func() {
		buf := make([]byte, 32<<10)
		for {
			n, err := conn.Read(buf)
			if n > 0 {
				if serr := st.Send(&tandemv1.ConsoleFrame{Data: buf[:n]}); serr != nil {
					return
				}
			}
			if err != nil {
				_ = st.CloseSend()
				return
			}
		}
	}()
	for {
		f, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if _, err := conn.Write(f.Data); err != nil {
			return nil // the viewer went away
		}
	}
}
