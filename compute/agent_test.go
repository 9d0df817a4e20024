package compute

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/digitalocean/go-libvirt"
)

// fakeAgent is a qemu-guest-agent on a real unix socket: it speaks the QGA
// wire protocol (guest-sync-delimited with its 0xFF delimiter, one JSON
// answer per line, no answer to guest-shutdown) over a small state.
type fakeAgent struct {
	t    *testing.T
	ln   net.Listener
	path string

	mu       sync.Mutex
	frozen   bool
	shutdown int
	commands []string
	// stale is written before the next sync's delimiter, as an answer a
	// timed-out earlier client never read.
	stale string
	// mute drops every answer (a hung agent).
	mute bool
}

func newFakeAgent(t *testing.T) *fakeAgent {
	t.Helper()
	path := filepath.Join(t.TempDir(), "qga.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeAgent{t: t, ln: ln, path: path}
	go f.serve()
	t.Cleanup(func() { _ = ln.Close() })
	return f
}

func (f *fakeAgent) serve() {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		go f.conn(c)
	}
}

func (f *fakeAgent) conn(c net.Conn) {
	defer c.Close()
	rd := bufio.NewReader(c)
	for {
		line, err := rd.ReadBytes('\n')
		if err != nil {
			return
		}
		var req struct {
			Execute   string                     `json:"execute"`
			Arguments map[string]json.RawMessage `json:"arguments"`
		}
		if err := json.Unmarshal(line, &req); err != nil {
			fmt.Fprintf(c, `{"error":{"class":"GenericError","desc":"invalid JSON"}}`+"\n")
			continue
		}
		f.mu.Lock()
		f.commands = append(f.commands, req.Execute)
		mute := f.mute
		var out string
		switch req.Execute {
		case "guest-sync-delimited":
			out = f.stale + "\xff" + fmt.Sprintf(`{"return": %s}`, req.Arguments["id"])
			f.stale = ""
		case "guest-ping":
			out = `{"return": {}}`
		case "guest-network-get-interfaces":
			out = `{"return": [{"name": "lo", "hardware-address": "00:00:00:00:00:00", "ip-addresses": [{"ip-address-type": "ipv4", "ip-address": "127.0.0.1", "prefix": 8}]},` +
				`{"name": "eth0", "hardware-address": "52:54:00:12:34:56", "ip-addresses": [{"ip-address-type": "ipv4", "ip-address": "10.0.2.15", "prefix": 24}, {"ip-address-type": "ipv6", "ip-address": "fe80::5054:ff:fe12:3456", "prefix": 64}, {"ip-address-type": "ipv6", "ip-address": "fd00::15", "prefix": 64}]}]}`
		case "guest-fsfreeze-status":
			if f.frozen {
				out = `{"return": "frozen"}`
			} else {
				out = `{"return": "thawed"}`
			}
		case "guest-fsfreeze-freeze":
			if f.frozen {
				out = `{"error": {"class": "GenericError", "desc": "Command guest-fsfreeze-freeze has been disabled: the agent is in frozen state"}}`
			} else {
				f.frozen = true
				out = `{"return": 2}`
			}
		case "guest-fsfreeze-thaw":
			n := 0
			if f.frozen {
				n = 2
			}
			f.frozen = false
			out = fmt.Sprintf(`{"return": %d}`, n)
		case "guest-shutdown":
			f.shutdown++ // a working agent does not answer
		default:
			out = fmt.Sprintf(`{"error": {"class": "CommandNotFound", "desc": "The command %s has not been found"}}`, req.Execute)
		}
		f.mu.Unlock()
		if out != "" && !mute {
			if _, err := c.Write([]byte(out + "\n")); err != nil {
				return
			}
		}
	}
}

func (f *fakeAgent) set(fn func(*fakeAgent)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func TestAgentSocketProtocol(t *testing.T) {
	f := newFakeAgent(t)
	a := DialAgentSocket(f.path)
	defer a.Close()
	ctx := context.Background()

	if err := a.Ping(ctx); err != nil {
		t.Fatalf("ping: %v", err)
	}
	addrs, err := a.Addresses(ctx)
	if err != nil {
		t.Fatalf("addresses: %v", err)
	}
	// Loopback and link-local are left out.
	if want := []string{"eth0 10.0.2.15/24", "eth0 fd00::15/64"}; !slices.Equal(addrs, want) {
		t.Fatalf("addresses %q, want %q", addrs, want)
	}

	if s, err := a.FSFreezeStatus(ctx); err != nil || s != "thawed" {
		t.Fatalf("status %q, %v; want thawed", s, err)
	}
	if n, err := a.FSFreeze(ctx); err != nil || n != 2 {
		t.Fatalf("freeze: %d, %v; want 2", n, err)
	}
	if s, err := a.FSFreezeStatus(ctx); err != nil || s != "frozen" {
		t.Fatalf("status %q, %v; want frozen", s, err)
	}
	// The agent's own refusal comes back as an AgentError.
	_, err = a.FSFreeze(ctx)
	var ae *AgentError
	if !errors.As(err, &ae) || ae.Class != "GenericError" || !strings.Contains(err.Error(), "frozen state") {
		t.Fatalf("second freeze: %v, want the agent's GenericError", err)
	}
	if n, err := a.FSThaw(ctx); err != nil || n != 2 {
		t.Fatalf("thaw: %d, %v; want 2", n, err)
	}

	// An answer left over from an earlier exchange is skipped by the sync.
	f.set(func(f *fakeAgent) { f.stale = `{"return": 99}` + "\n" })
	if s, err := a.FSFreezeStatus(ctx); err != nil || s != "thawed" {
		t.Fatalf("status after a stale answer %q, %v; want thawed", s, err)
	}

	// guest-shutdown gets no answer and must not wait for one.
	if err := a.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	// The next exchange resynchronises on the same connection.
	if err := a.Ping(ctx); err != nil {
		t.Fatalf("ping after shutdown: %v", err)
	}
	f.set(func(f *fakeAgent) {
		if f.shutdown != 1 {
			t.Errorf("agent got %d guest-shutdown, want 1", f.shutdown)
		}
	})

	_, err = a.call(ctx, "guest-exec", map[string]any{"path": "/bin/true"}, nil)
	if !errors.As(err, &ae) || ae.Class != "CommandNotFound" {
		t.Fatalf("unknown command: %v, want CommandNotFound", err)
	}
}

func TestAgentNotAnswering(t *testing.T) {
	// No socket at all: no agent.
	a := DialAgentSocket(filepath.Join(t.TempDir(), "none.sock"))
	if err := a.Ping(context.Background()); !errors.Is(err, ErrAgentNotAnswering) {
		t.Fatalf("ping without a socket: %v, want ErrAgentNotAnswering", err)
	}

	// A hung agent: the socket accepts, nothing answers; the deadline
	// ends the wait with ErrAgentNotAnswering.
	f := newFakeAgent(t)
	f.set(func(f *fakeAgent) { f.mute = true })
	a = DialAgentSocket(f.path)
	defer a.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := a.Ping(ctx)
	if !errors.Is(err, ErrAgentNotAnswering) {
		t.Fatalf("ping of a hung agent: %v, want ErrAgentNotAnswering", err)
	}
	if !strings.Contains(err.Error(), "guest-ping") {
		t.Fatalf("error %q does not name the command", err)
	}

	// Once it answers again, the client reconnects and syncs.
	f.set(func(f *fakeAgent) { f.mute = false })
	if err := a.Ping(context.Background()); err != nil {
		t.Fatalf("ping after the agent came back: %v", err)
	}
}

func TestAgentChannelInDomainXML(t *testing.T) {
	x, err := DomainXML(VMSpec{Name: "vm1", VCPUs: 1, MemoryMiB: 128, Diskless: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`<channel type="unix">`, `<source mode="bind">`, `<target type="virtio" name="org.qemu.guest_agent.0">`} {
		if !strings.Contains(x, want) {
			t.Errorf("domain XML lacks %s:\n%s", want, x)
		}
	}
	// The channel is no part of the spec read back (libvirt's own path).
	spec, _, err := ParseDomainXML(x)
	if err != nil || spec.Name != "vm1" {
		t.Fatalf("parse back: %+v, %v", spec, err)
	}
}

func TestAgentErrOfLibvirt(t *testing.T) {
	// libvirt 9.0 carries the agent's refusal as an internal error.
	err := agentErr("guest-fsfreeze-freeze", "vm1", libvirt.Error{Code: uint32(libvirt.ErrInternalError),
		Message: "internal error: unable to execute QEMU agent command 'guest-fsfreeze-freeze': the agent is already in frozen state"})
	var ae *AgentError
	if !errors.As(err, &ae) || ae.Desc != "the agent is already in frozen state" {
		t.Fatalf("refusal: %v, want an AgentError with the agent's text", err)
	}
	for _, e := range []libvirt.Error{
		{Code: uint32(libvirt.ErrOperationInvalid), Message: "QEMU guest agent is not connected"},
		{Code: uint32(libvirt.ErrAgentUnresponsive), Message: "Guest agent is not responding: QEMU guest agent is not connected"},
		{Code: uint32(libvirt.ErrAgentCommandTimeout), Message: "guest agent command timed out"},
	} {
		if err := agentErr("guest-ping", "vm1", e); !errors.Is(err, ErrAgentNotAnswering) {
			t.Errorf("%q: %v, want ErrAgentNotAnswering", e.Message, err)
		}
	}
	if err := agentErr("guest-ping", "vm1", context.DeadlineExceeded); !errors.Is(err, ErrAgentNotAnswering) {
		t.Errorf("deadline: %v, want ErrAgentNotAnswering", err)
	}
}

func TestRetargetDropsAgentSocketPath(t *testing.T) {
	spec := VMSpec{Name: "vm1", VCPUs: 1, MemoryMiB: 128, Diskless: true}
	def, err := domainDef(spec, XMLOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// As the source's libvirt reports it, with its own socket path.
	def.Devices.Channels[0].Source.UNIX.Path = "/var/lib/libvirt/qemu/channel/target/domain-7-vm1/org.qemu.guest_agent.0"
	if err := retarget(def, spec, XMLOptions{}); err != nil {
		t.Fatal(err)
	}
	if p := def.Devices.Channels[0].Source.UNIX.Path; p != "" {
		t.Fatalf("destination keeps the source's agent socket %q", p)
	}
}
