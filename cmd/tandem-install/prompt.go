package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/term"

	"github.com/tandemhci/tandem/internal/validate"
)

// nicInfo describes a network interface for the interactive list.
type nicInfo struct {
	Name    string
	MAC     string
	Carrier bool
}

// listNICs returns the physical interfaces under sysNet (/sys/class/net):
// those with a device, so no loopback, bridge or tap.
func listNICs(sysNet string) []nicInfo {
	ents, _ := os.ReadDir(sysNet)
	var out []nicInfo
	for _, e := range ents {
		dir := filepath.Join(sysNet, e.Name())
		if _, err := os.Stat(filepath.Join(dir, "device")); err != nil {
			continue
		}
		mac, _ := os.ReadFile(filepath.Join(dir, "address"))
		carrier, _ := os.ReadFile(filepath.Join(dir, "carrier"))
		out = append(out, nicInfo{Name: e.Name(), MAC: strings.TrimSpace(string(mac)), Carrier: strings.TrimSpace(string(carrier)) == "1"})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// errAborted: the person declined at the final question.
var errAborted = errors.New("installation cancelled: no disk was written to")

// prompter asks questions on a terminal.
type prompter struct {
	ctx    context.Context
	in     *bufio.Reader
	out    io.Writer
	secret func() (string, error) // reads a password without echo; nil: plain line
}

// readSecret returns a no-echo reader when in is a terminal.
func readSecret(in io.Reader) func() (string, error) {
	f, ok := in.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return nil
	}
	return func() (string, error) {
		b, err := term.ReadPassword(int(f.Fd()))
		return string(b), err
	}
}

// ask prints q with its default and reads a line until check accepts it.
func (p *prompter) ask(q, def string, check func(string) error) (string, error) {
	for {
		if def != "" {
			fmt.Fprintf(p.out, "%s [%s]: ", q, def)
		} else {
			fmt.Fprintf(p.out, "%s: ", q)
		}
		line, err := p.in.ReadString('\n')
		if err != nil && (line == "" || !errors.Is(err, io.EOF)) {
			if errors.Is(err, io.EOF) {
				return "", errors.New("no more input: installation cancelled, no disk was written to")
			}
			return "", err
		}
		v := strings.TrimSpace(line)
		if v == "" {
			v = def
		}
		if check == nil {
			return v, nil
		}
		if err := check(v); err != nil {
			fmt.Fprintf(p.out, "  %v\n", err)
			continue
		}
		return v, nil
	}
}

func (p *prompter) password() (string, error) {
	for {
		fmt.Fprint(p.out, "Root password (empty: SSH key only): ")
		a, err := p.readSecretLine()
		if err != nil || a == "" {
			return "", err
		}
		fmt.Fprint(p.out, "Again: ")
		b, err := p.readSecretLine()
		if err != nil {
			return "", err
		}
		if a == b {
			return a, nil
		}
		fmt.Fprintln(p.out, "  the passwords differ; again")
	}
}

func (p *prompter) readSecretLine() (string, error) {
	if p.secret != nil {
		s, err := p.secret()
		fmt.Fprintln(p.out)
		return s, err
	}
	line, err := p.in.ReadString('\n')
	if err != nil && line == "" {
		return "", err
	}
	return strings.TrimRight(line, "\r\n"), nil
}

// pick accepts a list number or a literal value.
func pick(v string, n int) (int, bool) {
	i, err := strconv.Atoi(v)
	return i - 1, err == nil && i >= 1 && i <= n
}

// interactive asks for every answer, checking each as it is typed, shows a
// summary and asks for a final "yes". Nothing is written before that.
func (p *prompter) interactive(disks []diskInfo, nics []nicInfo, in *installer) (Answers, error) {
	var a Answers
	fmt.Fprintln(p.out, "\nTandem appliance installer. Defaults are in brackets; Enter takes them.")

	fmt.Fprintln(p.out, "\nDisks:")
	for i, d := range disks {
		fmt.Fprintf(p.out, "  %d) %-14s %10s  %s\n", i+1, d.Path, gib(d.Size), d.Model)
	}
	def := ""
	if len(disks) > 0 {
		def = "1"
	}
	for {
		v, err := p.ask("Install onto disk (number or path)", def, nil)
		if err != nil {
			return a, err
		}
		if i, ok := pick(v, len(disks)); ok {
			v = disks[i].Path
		}
		a.Disk, a.Wipe = v, false
		_, err = checkDisk(p.ctx, a.Disk, false, in.busy, in.mounts)
		if errors.Is(err, ErrDiskInUse) {
			fmt.Fprintf(p.out, "  %v\n", err)
			w, err := p.ask("  Type WIPE to erase it, or Enter to choose another disk", "", nil)
			if err != nil {
				return a, err
			}
			if w != "WIPE" {
				continue
			}
			a.Wipe = true
		} else if err != nil {
			fmt.Fprintf(p.out, "  %v\n", err)
			continue
		}
		break
	}

	var err error
	if a.Hostname, err = p.ask("Host name (also the node's name in the cluster)", "", validate.NodeName); err != nil {
		return a, err
	}
	fmt.Fprintln(p.out, "\nNetwork interfaces:")
	for i, n := range nics {
		link := "no link"
		if n.Carrier {
			link = "link up"
		}
		fmt.Fprintf(p.out, "  %d) %-12s %s  %s\n", i+1, n.Name, n.MAC, link)
	}
	nicAnswer := func(q, def string, allowNone bool) (string, error) {
		v, err := p.ask(q, def, func(v string) error {
			if _, ok := pick(v, len(nics)); ok || validNIC(v) || (allowNone && v == "none") {
				return nil
			}
			return fmt.Errorf("%q is not a number from the list, an interface name or a MAC address", v)
		})
		if i, ok := pick(v, len(nics)); ok {
			v = nics[i].Name
		}
		if v == "none" {
			v = ""
		}
		return v, err
	}
	defNIC := ""
	for i, n := range nics {
		if n.Carrier || i == 0 {
			defNIC = strconv.Itoa(i + 1)
			if n.Carrier {
				break
			}
		}
	}
	if a.Network.NIC, err = nicAnswer("Backend NIC (node-to-node traffic)", defNIC, false); err != nil {
		return a, err
	}
	if a.Network.Address, err = p.ask("Backend address with prefix length (e.g. 10.0.0.11/24)", "", func(v string) error {
		_, err := backendPrefix(v, "")
		return err
	}); err != nil {
		return a, err
	}
	if a.Network.Gateway, err = p.ask("Gateway (empty: none)", "", nil); err != nil {
		return a, err
	}
	dns, err := p.ask("DNS servers, comma-separated (empty: none)", "", nil)
	if err != nil {
		return a, err
	}
	a.Network.DNS = strings.FieldsFunc(dns, func(r rune) bool { return r == ',' || r == ' ' })
	if a.Network.VMNIC, err = nicAnswer("Uplink of the VM bridge vmbr0 (number, name, or none)", a.Network.NIC, true); err != nil {
		return a, err
	}

	mode, err := p.ask("Create a new cluster or join one (create/join)", "join", func(v string) error {
		if v != "create" && v != "join" {
			return errors.New("answer create or join")
		}
		return nil
	})
	if err != nil {
		return a, err
	}
	if mode == "create" {
		if a.Cluster.Create, err = p.ask("Cluster name", "", validate.ClusterName); err != nil {
			return a, err
		}
	} else {
		if a.Cluster.Join, err = p.ask("Backend address of a member (host[:port])", "", func(v string) error {
			_, err := joinAddress(v)
			return err
		}); err != nil {
			return a, err
		}
		if a.Cluster.Token, err = p.ask("Join token (on a member: tandem cluster token)", "", func(v string) error {
			if v == "" {
				return errors.New("a token is required")
			}
			return nil
		}); err != nil {
			return a, err
		}
	}
	if a.rootPassword, err = p.password(); err != nil {
		return a, err
	}
	key, err := p.ask("SSH public key for root (one line; empty: none)", "", func(v string) error {
		if v != "" && !sshKeyLine.MatchString(v) {
			return errors.New("not an OpenSSH public key line (type base64 [comment])")
		}
		return nil
	})
	if err != nil {
		return a, err
	}
	if key != "" {
		a.SSHAuthorizedKeys = []string{key}
	}
	plan, err := a.plan()
	if err != nil {
		return a, &badAnswersError{err}
	}
	fmt.Fprintf(p.out, "\nSummary:\n  disk %s%s\n  host %s, backend %s on %s", plan.Disk, map[bool]string{true: " (ERASED)", false: ""}[plan.Wipe], plan.Hostname, plan.Backend, plan.NIC)
	if plan.Gateway.IsValid() {
		fmt.Fprintf(p.out, " via %s", plan.Gateway)
	}
	fmt.Fprintf(p.out, "\n  VM bridge %s uplink %s\n", plan.VMBridge, orNone(plan.VMNIC))
	if plan.Create != "" {
		fmt.Fprintf(p.out, "  create cluster %q\n", plan.Create)
	} else {
		fmt.Fprintf(p.out, "  join the cluster through %s\n", plan.JoinAddr)
	}
	ok, err := p.ask("Install now? Everything on "+plan.Disk+" is lost (yes/no)", "no", nil)
	if err != nil {
		return a, err
	}
	if ok != "yes" {
		return a, errAborted
	}
	return a, nil
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
