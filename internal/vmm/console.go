package vmm

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/compute"
	"github.com/tandemhci/tandem/consensus"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// Interactive consoles (issue 18): Console.Serial and Console.VNC streams.
// The node the client talks to reads the open frame, finds the node
// running the VM in the catalog and either connects the console itself or
// forwards the stream to that node's Peer.VMSerial or Peer.VMVNC; there
// the stream is piped to QEMU's serial socket or VNC port (found in the
// live domain definition, compute.Driver.Consoles). Each connection looks
// the VM up again, so a viewer reconnecting after a migration reaches the
// VM on its new node. Nothing is connected before the VM is found running
// with the console asked for; a stopped VM is FailedPrecondition.

// ConsoleKind is which console a stream opens.
type ConsoleKind int

// The consoles.
const (
	ConsoleSerial ConsoleKind = iota
	ConsoleVNC
)

func (k ConsoleKind) String() string {
	if k == ConsoleVNC {
		return "VNC display"
	}
	return "serial console"
}

// FrameStream is one end of a console stream: the admin or peer server's
// stream, or the client of a peer's.
type FrameStream interface {
	Send(*tandemv1.ConsoleFrame) error
	Recv() (*tandemv1.ConsoleFrame, error)
}

// peerFrameStream is the client end of a peer's console stream.
type peerFrameStream interface {
	FrameStream
	CloseSend() error
}

// frameSize bounds the data of one frame read from a console.
const frameSize = 32 << 10

// consoleSessions are the serial sessions open on this node: QEMU serves
// one client of a serial socket at a time and leaves a second one waiting
// unanswered, so a second session is refused instead. The zero value is
// ready.
type consoleSessions struct {
	mu   sync.Mutex
	open map[string]bool
}

// take marks vm's serial session open; release ends it.
func (s *consoleSessions) take(vm string) (release func(), ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.open[vm] {
		return nil, false
	}
	if s.open == nil {
		s.open = map[string]bool{}
	}
	s.open[vm] = true
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.open, vm)
	}, true
}

// OpenConsole serves an admin console stream (Console.Serial or
// Console.VNC) on whichever node the client reached.
func (m *Manager) OpenConsole(ctx context.Context, kind ConsoleKind, st FrameStream) error {
	open, err := openFrame(st)
	if err != nil {
		return err
	}
	ms, err := m.vols.Catalog(ctx, false)
	if err != nil {
		return err
	}
	v, err := vmOf(ms, open.Vm)
	if err != nil {
		return err
	}
	if v.Desired != consensus.VMStarted || v.Node == "" {
		return status.Errorf(codes.FailedPrecondition, "VM %s is %s: its %s exists only while it runs (tandem vm start %s)", v.Name, orNone(v.Desired), kind, v.Name)
	}
	if !open.Probe {
		m.log.Info("console requested", "vm", v.Name, "console", kind.String(), "node", v.Node, "by", consensus.ActorFrom(ctx))
	}
	if v.Node == m.self() {
		return m.localConsole(ctx, kind, open, st)
	}
	c, err := m.peerAt(ms, v.Node)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var ps peerFrameStream
	if kind == ConsoleVNC {
		ps, err = c.VMVNC(ctx)
	} else {
		ps, err = c.VMSerial(ctx)
	}
	if err != nil {
		return status.Errorf(codes.Unavailable, "node %s, which runs VM %s: %v", v.Node, v.Name, grpcMessage(err))
	}
	if err := ps.Send(&tandemv1.ConsoleFrame{Open: open}); err != nil && !errors.Is(err, io.EOF) {
		return status.Errorf(codes.Unavailable, "node %s, which runs VM %s: %v", v.Node, v.Name, err)
	}
	return relay(st, ps, cancel)
}

// VMConsoleStream serves a peer's console stream (Peer.VMSerial or
// Peer.VMVNC) for a VM running here.
func (m *Manager) VMConsoleStream(ctx context.Context, kind ConsoleKind, st FrameStream) error {
	open, err := openFrame(st)
	if err != nil {
		return err
	}
	return m.localConsole(ctx, kind, open, st)
}

// localConsole connects st to the console of VM open.Vm running here.
func (m *Manager) localConsole(ctx context.Context, kind ConsoleKind, open *tandemv1.ConsoleOpen, st FrameStream) error {
	drv, err := m.Driver(ctx)
	if err != nil {
		return computeErr(err)
	}
	eps, err := drv.Consoles(ctx, open.Vm)
	switch {
	case compute.IsNotFoundErr(err) || errors.Is(err, compute.ErrNotRunning):
		return status.Errorf(codes.FailedPrecondition, "VM %s does not run on node %s (%v); ask again once it runs", open.Vm, m.self(), err)
	case err != nil:
		return computeErr(err)
	}
	network, addr := "tcp", eps.VNC
	if kind == ConsoleSerial {
		network, addr = "unix", eps.Serial
	}
	if addr == "" {
		return status.Errorf(codes.FailedPrecondition, "VM %s has no %s on node %s: it was started before Tandem gave VMs one (or its serial log path is too long for a socket); stop and start it to get one", open.Vm, kind, m.self())
	}
	opened := &tandemv1.ConsoleFrame{Opened: "node " + m.self()}
	if open.Probe {
		return st.Send(opened)
	}
	if kind == ConsoleSerial {
		release, ok := m.serials.take(open.Vm)
		if !ok {
			return status.Errorf(codes.FailedPrecondition, "a serial console session to VM %s is already open on node %s; one at a time (end the other with Ctrl-])", open.Vm, m.self())
		}
		defer release()
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return status.Errorf(codes.Unavailable, "VM %s's %s on node %s: %v", open.Vm, kind, m.self(), err)
	}
	defer conn.Close()
	// Who asked is logged where the request arrived (OpenConsole).
	m.log.Info("console session opened", "vm", open.Vm, "console", kind.String())
	defer m.log.Info("console session ended", "vm", open.Vm, "console", kind.String())
	if err := st.Send(opened); err != nil {
		return err
	}
	return pipe(conn, st)
}

// openFrame reads a stream's first frame, which must open a console and
// carry nothing else.
func openFrame(st FrameStream) (*tandemv1.ConsoleOpen, error) {
	f, err := st.Recv()
	if errors.Is(err, io.EOF) {
		return nil, status.Error(codes.InvalidArgument, "the console stream ended before its open frame")
	}
	if err != nil {
		return nil, err
	}
	switch {
	case f.Open == nil || f.Open.Vm == "":
		return nil, status.Error(codes.InvalidArgument, "the first frame of a console stream must open it: open.vm names the VM")
	case len(f.Data) > 0 || f.Opened != "":
		return nil, status.Error(codes.InvalidArgument, "the open frame of a console stream carries nothing else (no data, no opened)")
	}
	return f.Open, nil
}

// dataFrame checks a frame after the open frame: data only.
func dataFrame(f *tandemv1.ConsoleFrame) error {
	if f.Open != nil || f.Opened != "" {
		return status.Error(codes.InvalidArgument, "a console stream opens once: only data frames follow its open frame")
	}
	return nil
}

// pipe copies between conn and st both ways until either ends: st's end
// (or a bad frame) closes conn; conn's end returns, which ends st. A bad
// frame is the error returned.
func pipe(conn net.Conn, st FrameStream) error {
	inErr := make(chan error, 1)
	go func() {
		inErr <- func() error {
			for {
				f, err := st.Recv()
				if errors.Is(err, io.EOF) {
					return nil
				}
				if err != nil {
					return err
				}
				if err := dataFrame(f); err != nil {
					return err
				}
				if _, err := conn.Write(f.Data); err != nil {
					return status.Errorf(codes.Unavailable, "console connection: %v", err)
				}
			}
		}()
		// Ends the read below.
		_ = conn.Close()
	}()
	buf := make([]byte, frameSize)
	for {
		n, err := conn.Read(buf)
		if n > 0 {
			// Send marshals before it returns, so buf may be reused.
			if err := st.Send(&tandemv1.ConsoleFrame{Data: buf[:n]}); err != nil {
				return err
			}
		}
		if err != nil {
			select {
			case e := <-inErr:
				return e
			default:
			}
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return status.Errorf(codes.Unavailable, "console connection: %v", err)
		}
	}
}

// relay forwards st to the peer stream ps opened for it, both ways, until
// either ends; cancel ends ps after a bad frame from st (the error
// returned).
func relay(st FrameStream, ps peerFrameStream, cancel context.CancelFunc) error {
	inErr := make(chan error, 1)
	go func() {
		err := func() error {
			for {
				f, err := st.Recv()
				if errors.Is(err, io.EOF) {
					return ps.CloseSend()
				}
				if err != nil {
					return err
				}
				if err := dataFrame(f); err != nil {
					return err
				}
				if err := ps.Send(f); err != nil {
					// The peer ended: its Recv says why.
					return nil
				}
			}
		}()
		inErr <- err
		if err != nil {
			cancel()
		}
	}()
	for {
		f, err := ps.Recv()
		if err != nil {
			select {
			case e := <-inErr:
				if e != nil {
					return e
				}
			default:
			}
			if errors.Is(err, io.EOF) {
				return nil
			}
			// The peer's status (FailedPrecondition for a VM gone, say)
			// is the answer.
			return err
		}
		if err := st.Send(f); err != nil {
			return err
		}
	}
}
