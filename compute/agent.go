package compute

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/digitalocean/go-libvirt"
	"libvirt.org/go/libvirtxml"
)

// The guest agent (issue 18). Every VM gets a virtio-serial channel named
// AgentChannel whose host end is a unix socket libvirt creates and
// connects to itself (libvirt's default path, so it follows the domain
// through migrations). QEMU's socket chardev takes one client at a time
// and libvirt holds it, so the daemon's Agent talks to a domain's agent
// through libvirt's pass-through (virDomainQemuAgentCommand): the QGA
// JSON commands and answers are Tandem's, libvirt only carries them.
// DialAgentSocket speaks the same protocol straight to an agent's socket
// (guest-sync-delimited framing), for a socket no libvirt holds.

// AgentChannel is the virtio-serial port name qemu-guest-agent opens.
const AgentChannel = "org.qemu.guest_agent.0"

// ErrAgentNotAnswering is wrapped by Agent errors when no agent answers
// in time (none installed, not started yet, or the guest hung).
var ErrAgentNotAnswering = errors.New("guest agent not answering")

// DefaultAgentTimeout bounds an agent command whose context has no
// deadline.
const DefaultAgentTimeout = 5 * time.Second

// agentChannel is the guest agent's channel device.
func agentChannel() libvirtxml.DomainChannel {
	return libvirtxml.DomainChannel{
		Source: &libvirtxml.DomainChardevSource{UNIX: &libvirtxml.DomainChardevSourceUNIX{Mode: "bind"}},
		Target: &libvirtxml.DomainChannelTarget{VirtIO: &libvirtxml.DomainChannelTargetVirtIO{Name: AgentChannel}},
	}
}

// retargetAgentChannel drops the source's socket path of the guest agent
// channel, so the destination's libvirt makes its own (the source's is
// under the source domain's id, which need not be free or exist there).
func retargetAgentChannel(devs *libvirtxml.DomainDeviceList) {
	for i := range devs.Channels {
		ch := &devs.Channels[i]
		if ch.Target != nil && ch.Target.VirtIO != nil && ch.Target.VirtIO.Name == AgentChannel &&
			ch.Source != nil && ch.Source.UNIX != nil {
			ch.Source.UNIX.Path = ""
		}
	}
}

// AgentError is an error the agent itself returned ({"error": ...}).
type AgentError struct {
	Command string
	Class   string
	Desc    string
}

func (e *AgentError) Error() string {
	return fmt.Sprintf("guest agent: %s: %s (%s)", e.Command, e.Desc, e.Class)
}

// agentTransport carries one command to the agent: cmd is the JSON
// object, the result the raw "return" value. noReply commands
// (guest-shutdown) get no answer from a working agent.
type agentTransport interface {
	exchange(ctx context.Context, command string, cmd []byte, noReply bool) (json.RawMessage, error)
}

// Agent is a client of one guest's qemu-guest-agent.
type Agent struct {
	t agentTransport
	// shutdown, when set, replaces guest-shutdown (libvirt must send it
	// itself: it alone knows the agent goes away without answering).
	shutdown func(ctx context.Context) error
}

// GuestInterface is one interface as guest-network-get-interfaces lists it.
type GuestInterface struct {
	Name      string
	MAC       string
	Addresses []netip.Prefix
}

// Ping is guest-ping: nil when the agent answers.
func (a *Agent) Ping(ctx context.Context) error {
	_, err := a.call(ctx, "guest-ping", nil, nil)
	return err
}

// Interfaces is guest-network-get-interfaces.
func (a *Agent) Interfaces(ctx context.Context) ([]GuestInterface, error) {
	var raw []struct {
		Name string `json:"name"`
		MAC  string `json:"hardware-address"`
		IPs  []struct {
			Type   string `json:"ip-address-type"`
			Addr   string `json:"ip-address"`
			Prefix int    `json:"prefix"`
		} `json:"ip-addresses"`
	}
	if _, err := a.call(ctx, "guest-network-get-interfaces", nil, &raw); err != nil {
		return nil, err
	}
	out := make([]GuestInterface, 0, len(raw))
	for _, r := range raw {
		gi := GuestInterface{Name: r.Name, MAC: r.MAC}
		for _, ip := range r.IPs {
			addr, err := netip.ParseAddr(ip.Addr)
			if err != nil {
				return nil, fmt.Errorf("guest agent: interface %s: address %q: %w", r.Name, ip.Addr, err)
			}
			p := netip.PrefixFrom(addr, ip.Prefix)
			if !p.IsValid() {
				return nil, fmt.Errorf("guest agent: interface %s: prefix %d of %s out of range", r.Name, ip.Prefix, addr)
			}
			gi.Addresses = append(gi.Addresses, p)
		}
		out = append(out, gi)
	}
	return out, nil
}

// Addresses are the guest's addresses outside loopback and link-local,
// as "iface addr/prefix", in the agent's order.
func (a *Agent) Addresses(ctx context.Context) ([]string, error) {
	ifs, err := a.Interfaces(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, gi := range ifs {
		for _, p := range gi.Addresses {
			if p.Addr().IsLoopback() || p.Addr().IsLinkLocalUnicast() {
				continue
			}
			out = append(out, gi.Name+" "+p.String())
		}
	}
	return out, nil
}

// FSFreezeStatus is guest-fsfreeze-status: "thawed" or "frozen".
func (a *Agent) FSFreezeStatus(ctx context.Context) (string, error) {
	var s string
	_, err := a.call(ctx, "guest-fsfreeze-status", nil, &s)
	return s, err
}

// FSFreeze is guest-fsfreeze-freeze: the number of file systems frozen.
func (a *Agent) FSFreeze(ctx context.Context) (int, error) {
	var n int
	_, err := a.call(ctx, "guest-fsfreeze-freeze", nil, &n)
	return n, err
}

// FSThaw is guest-fsfreeze-thaw: the number of file systems thawed.
func (a *Agent) FSThaw(ctx context.Context) (int, error) {
	var n int
	_, err := a.call(ctx, "guest-fsfreeze-thaw", nil, &n)
	return n, err
}

// Shutdown asks the guest to power off (guest-shutdown, mode powerdown).
// It returns once the agent took the request, not when the guest is off.
func (a *Agent) Shutdown(ctx context.Context) error {
	if a.shutdown != nil {
		return a.shutdown(ctx)
	}
	_, err := a.call(ctx, "guest-shutdown", map[string]any{"mode": "powerdown"}, nil)
	return err
}

// call runs one command with the default timeout unless ctx has one,
// decoding the return value into out (when not nil).
func (a *Agent) call(ctx context.Context, command string, args map[string]any, out any) (json.RawMessage, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultAgentTimeout)
		defer cancel()
	}
	req := map[string]any{"execute": command}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	ret, err := a.t.exchange(ctx, command, b, command == "guest-shutdown")
	if err != nil {
		return nil, err
	}
	if out != nil {
		if err := json.Unmarshal(ret, out); err != nil {
			return nil, fmt.Errorf("guest agent: %s: unexpected answer %s: %w", command, ret, err)
		}
	}
	return ret, nil
}

// agentReply is one line from the agent.
type agentReply struct {
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
}

// parseReply is the return value of a reply line, or the agent's error.
func parseReply(command string, line []byte) (json.RawMessage, error) {
	var r agentReply
	if err := json.Unmarshal(line, &r); err != nil {
		return nil, fmt.Errorf("guest agent: %s: answer is not JSON (%q): %w", command, truncate(line), err)
	}
	if r.Error != nil {
		return nil, &AgentError{Command: command, Class: r.Error.Class, Desc: r.Error.Desc}
	}
	if r.Return == nil {
		return nil, fmt.Errorf("guest agent: %s: answer has neither return nor error: %q", command, truncate(line))
	}
	return r.Return, nil
}

func truncate(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "..."
	}
	return string(b)
}

// socketAgent speaks QGA over a unix socket. Each exchange resynchronises
// with guest-sync-delimited, so a stale answer of an earlier, timed-out
// command can never be taken for this one's.
type socketAgent struct {
	path string
	mu   sync.Mutex // one exchange at a time: the channel is a byte stream
	conn net.Conn
	rd   *bufio.Reader
	id   uint64
}

// DialAgentSocket is an Agent speaking to the agent socket at path; the
// connection is made at the first command and again after an error.
func DialAgentSocket(path string) *Agent {
	return &Agent{t: &socketAgent{path: path, id: uint64(time.Now().UnixNano()) & (1<<52 - 1)}}
}

// Close closes the connection of a socket Agent.
func (a *Agent) Close() error {
	if s, ok := a.t.(*socketAgent); ok {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.drop()
	}
	return nil
}

func (s *socketAgent) drop() {
	if s.conn != nil {
		_ = s.conn.Close()
		s.conn, s.rd = nil, nil
	}
}

func (s *socketAgent) exchange(ctx context.Context, command string, cmd []byte, noReply bool) (json.RawMessage, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ret, err := s.exchangeLocked(ctx, command, cmd, noReply)
	if err != nil {
		s.drop() // a half-read answer must not be read by the next command
		if ctx.Err() != nil || isTimeout(err) {
			return nil, fmt.Errorf("%w: %s: no answer within the deadline", ErrAgentNotAnswering, command)
		}
	}
	return ret, err
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (s *socketAgent) exchangeLocked(ctx context.Context, command string, cmd []byte, noReply bool) (json.RawMessage, error) {
	if s.conn == nil {
		var d net.Dialer
		c, err := d.DialContext(ctx, "unix", s.path)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrAgentNotAnswering, command, err)
		}
		s.conn, s.rd = c, bufio.NewReader(c)
	}
	// The context's end interrupts blocked reads and writes.
	stop := context.AfterFunc(ctx, func() { _ = s.conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		_ = s.conn.SetDeadline(dl)
	}
	s.id++
	id := s.id
	sync := fmt.Appendf(nil, `{"execute":"guest-sync-delimited","arguments":{"id":%d}}`+"\n", id)
	if _, err := s.conn.Write(sync); err != nil {
		return nil, fmt.Errorf("guest agent: %s: sync: %w", command, err)
	}
	// Everything before the agent's 0xFF delimiter is an earlier
	// exchange's leftovers; after it, answers until ours.
	for {
		if _, err := s.rd.ReadBytes(0xFF); err != nil {
			return nil, fmt.Errorf("guest agent: %s: sync: %w", command, err)
		}
		line, err := s.rd.ReadBytes('\n')
		if err != nil {
			return nil, fmt.Errorf("guest agent: %s: sync: %w", command, err)
		}
		ret, err := parseReply("guest-sync-delimited", bytes.TrimLeft(line, "\xff"))
		if err != nil {
			return nil, err
		}
		var got uint64
		if json.Unmarshal(ret, &got) == nil && got == id {
			break
		}
	}
	if _, err := s.conn.Write(append(slices.Clip(cmd), '\n')); err != nil {
		return nil, fmt.Errorf("guest agent: %s: %w", command, err)
	}
	if noReply {
		return nil, nil
	}
	line, err := s.rd.ReadBytes('\n')
	if err != nil {
		return nil, fmt.Errorf("guest agent: %s: %w", command, err)
	}
	return parseReply(command, line)
}

// libvirtAgent sends commands through libvirt's own connection to the
// domain's agent; libvirt synchronises with guest-sync itself.
type libvirtAgent struct {
	d    *Driver
	name string
}

// Agent is the guest agent of the domain name, reached through libvirtd.
func (d *Driver) Agent(name string) *Agent {
	la := &libvirtAgent{d: d, name: name}
	return &Agent{t: la, shutdown: la.shutdown}
}

// agentTimeoutSeconds is libvirt's pass-through timeout for ctx: whole
// seconds left, at least 1.
func agentTimeoutSeconds(ctx context.Context) int32 {
	dl, ok := ctx.Deadline()
	if !ok {
		return int32(DefaultAgentTimeout / time.Second)
	}
	return int32(max(1, time.Until(dl)/time.Second))
}

func (l *libvirtAgent) exchange(ctx context.Context, command string, cmd []byte, _ bool) (json.RawMessage, error) {
	dom, err := l.d.lookup(ctx, l.name)
	if err != nil {
		return nil, err
	}
	out, err := call(ctx, l.d, func() (libvirt.OptString, error) {
		return l.d.lv.QEMUDomainAgentCommand(dom, string(cmd), agentTimeoutSeconds(ctx), 0)
	})
	if err != nil {
		return nil, agentErr(command, l.name, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("guest agent of %s: %s: empty answer", l.name, command)
	}
	return parseReply(command, []byte(out[0]))
}

// shutdown is libvirt's agent shutdown, which sends guest-shutdown and
// knows that a working agent does not answer it.
func (l *libvirtAgent) shutdown(ctx context.Context) error {
	dom, err := l.d.lookup(ctx, l.name)
	if err != nil {
		return err
	}
	if err := call0(ctx, l.d, func() error { return l.d.lv.DomainShutdownFlags(dom, libvirt.DomainShutdownGuestAgent) }); err != nil {
		return agentErr("guest-shutdown", l.name, err)
	}
	return nil
}

// agentErr maps libvirt's agent errors: not connected (no agent opened
// the port) and timeouts are ErrAgentNotAnswering.
func agentErr(command, name string, err error) error {
	if IsNotFoundErr(err) {
		return err
	}
	var le libvirt.Error
	if errors.As(err, &le) {
		switch libvirt.ErrorNumber(le.Code) {
		case libvirt.ErrAgentUnresponsive, libvirt.ErrAgentCommandTimeout, libvirt.ErrAgentUnsynced:
			return fmt.Errorf("%w: %s: %s", ErrAgentNotAnswering, command, le.Message)
		}
		if strings.Contains(le.Message, "agent is not connected") || strings.Contains(le.Message, "agent not available") {
			return fmt.Errorf("%w: %s: %s", ErrAgentNotAnswering, command, le.Message)
		}
		// The agent's own {"error"}: libvirt 9.0 reports it as an internal
		// error "unable to execute QEMU agent command 'X': desc" (later
		// releases with ErrAgentCommandFailed); the class is lost.
		const prefix = "unable to execute QEMU agent command '"
		if i := strings.Index(le.Message, prefix); i >= 0 || libvirt.ErrorNumber(le.Code) == libvirt.ErrAgentCommandFailed {
			desc := le.Message
			if i >= 0 {
				if _, after, ok := strings.Cut(le.Message[i+len(prefix):], "': "); ok {
					desc = after
				}
			}
			return &AgentError{Command: command, Class: "GenericError", Desc: desc}
		}
		return fmt.Errorf("guest agent of %s: %s: %s", name, command, le.Message)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w: %s: no answer within the deadline", ErrAgentNotAnswering, command)
	}
	return fmt.Errorf("guest agent of %s: %s: %w", name, command, err)
}

// How StopGuest brought a domain down.
const (
	StoppedByAgent   = "agent"
	StoppedByACPI    = "acpi"
	StoppedByDestroy = "destroy"
)

// agentShutdownAsk bounds asking the agent to shut the guest down, which
// a guest without one refuses at once and a hung agent never answers.
const agentShutdownAsk = 5 * time.Second

// StopGuest shuts the domain down as gently as it can: through the guest
// agent when one takes the request, else with the ACPI power button; a
// guest still running after timeout is destroyed. It returns which of
// them brought it down (StoppedByAgent, StoppedByACPI, StoppedByDestroy;
// "" when it was already off). The call takes at most timeout plus
// agentShutdownAsk. ctx bounds the whole call; if it ends first the
// domain is left as it is.
func (d *Driver) StopGuest(ctx context.Context, name string, timeout time.Duration) (string, error) {
	dom, err := d.lookup(ctx, name)
	if err != nil {
		return "", err
	}
	st, err := d.state(ctx, dom)
	if err != nil {
		return "", d.opErr("shutdown", name, err)
	}
	if st == StateShutOff {
		return "", nil
	}
	how := StoppedByAgent
	actx, cancel := context.WithTimeout(ctx, agentShutdownAsk)
	err = d.Agent(name).Shutdown(actx)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return "", err
		}
		d.log.Info("guest agent did not take the shutdown; pressing the power button", "domain", name, "err", err)
		how = StoppedByACPI
		if err := call0(ctx, d, func() error { return d.lv.DomainShutdownFlags(dom, libvirt.DomainShutdownAcpiPowerBtn) }); err != nil {
			if IsNotFoundErr(err) || ctx.Err() != nil {
				return "", d.opErr("shutdown", name, err)
			}
			d.log.Warn("ACPI shutdown refused; destroying", "domain", name, "err", err)
			return StoppedByDestroy, d.destroy(ctx, name, dom)
		}
	}
	off, err := d.waitOff(ctx, dom, timeout)
	if err != nil || off {
		return how, err
	}
	d.log.Warn("guest did not shut down in time; destroying", "domain", name, "asked", how, "timeout", timeout)
	return StoppedByDestroy, d.destroy(ctx, name, dom)
}

// waitOff waits up to timeout for the domain to be shut off.
func (d *Driver) waitOff(ctx context.Context, dom libvirt.Domain, timeout time.Duration) (bool, error) {
	grace := time.NewTimer(timeout)
	defer grace.Stop()
	tick := time.NewTicker(shutdownPoll)
	defer tick.Stop()
	for {
		st, err := d.state(ctx, dom)
		if err != nil {
			return false, d.opErr("shutdown", dom.Name, err)
		}
		if st == StateShutOff {
			return true, nil
		}
		select {
		case <-ctx.Done():
			return false, fmt.Errorf("compute: shutdown domain %q: waiting for shut off: %w", dom.Name, ctx.Err())
		case <-grace.C:
			return false, nil
		case <-tick.C:
		}
	}
}
