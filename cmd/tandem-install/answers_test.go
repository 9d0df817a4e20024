package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tandemhci/tandem/internal/config"
)

const goodJoin = `disk: /dev/vda
hostname: node3
network:
  nic: 52:54:00:12:34:56
  address: 10.99.0.13
  netmask: 255.255.255.0
  gateway: 10.99.0.1
  vm_nic: ens4
cluster:
  join: 10.99.0.11
  token: tok-abc
ssh_authorized_keys:
  - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKeyKeyKeyKeyKeyKeyKeyKeyKeyKeyKeyKeyKeyKeyKey test@host
`

func mustPlan(t *testing.T, text string) Plan {
	t.Helper()
	a, err := parseAnswerFile([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	p, err := a.plan()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestAnswerFile(t *testing.T) {
	p := mustPlan(t, goodJoin)
	if p.Backend.String() != "10.99.0.13/24" || p.Gateway.String() != "10.99.0.1" {
		t.Errorf("backend %s gateway %s", p.Backend, p.Gateway)
	}
	if p.JoinAddr != "10.99.0.11:7400" || p.Token != "tok-abc" || p.Create != "" {
		t.Errorf("join %q token %q create %q", p.JoinAddr, p.Token, p.Create)
	}
	if p.VMBridge != "vmbr0" || p.RootGiB != defaultRootGiB || !p.Reboot || p.Wipe {
		t.Errorf("defaults: bridge %q root %d reboot %v wipe %v", p.VMBridge, p.RootGiB, p.Reboot, p.Wipe)
	}
}

// The example the installer prints ('tandem-install answers') is itself a
// valid answer file, so operators can start from it.
func TestExampleAnswersAreValid(t *testing.T) {
	p := mustPlan(t, exampleAnswers)
	if p.Create != "prod" || p.Disk != "/dev/sda" {
		t.Errorf("%+v", p)
	}
	var out, errb bytes.Buffer
	f := filepath.Join(t.TempDir(), "answer.yaml")
	if err := os.WriteFile(f, []byte(exampleAnswers), 0o600); err != nil {
		t.Fatal(err)
	}
	if code := run([]string{"check", f}, nil, &out, &errb); code != 0 {
		t.Errorf("check: exit %d: %s", code, errb.String())
	}
}

func TestAnswerFileRefusals(t *testing.T) {
	for _, tc := range []struct {
		name, edit, want string
	}{
		{"unknown key", "hostnme: x\n", "hostnme"},
		{"empty", "", "empty"},
		{"no disk", "disk: ''\n", "disk: required"},
		{"relative disk", "disk: vda\n", "not an absolute path"},
		{"bad hostname", "hostname: Node_3\n", "hostname:"},
		{"no nic", "network: {address: 10.0.0.1/24}\n", "network.nic: required"},
		{"no address", "network: {nic: eth0}\n", "network.address: required"},
		{"address and netmask twice", "network: {nic: eth0, address: 10.0.0.5/24, netmask: 255.0.0.0}\n", "already has a prefix length"},
		{"no netmask", "network: {nic: eth0, address: 10.0.0.5}\n", "has no netmask"},
		{"network address", "network: {nic: eth0, address: 10.0.0.0/24}\n", "network address"},
		{"gateway outside", "network: {nic: eth0, address: 10.0.0.5/24, gateway: 10.1.0.1}\n", "not in the backend subnet"},
		{"bad dns", "network: {nic: eth0, address: 10.0.0.5/24, dns: [x]}\n", "network.dns"},
		{"both create and join", "cluster: {create: a, join: 10.0.0.1, token: t}\n", "not both"},
		{"neither", "cluster: {}\n", "give create"},
		{"join without token", "cluster: {join: 10.0.0.1}\n", "cluster.token: required"},
		{"bad join port", "cluster: {join: '10.0.0.1:99999', token: t}\n", "port"},
		{"plain password", "root_password_hash: secret\n", "crypt(3)"},
		{"bad ssh key", "ssh_authorized_keys: [hello]\n", "ssh_authorized_keys[0]"},
		{"no login", "ssh_authorized_keys: []\n", "nobody can log in"},
		{"small root", "root_size_gib: 2\n", "root_size_gib"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			text := goodJoin + tc.edit
			if tc.name == "empty" {
				text = ""
			}
			// A later top-level key replaces the earlier one in YAML only
			// with unique keys: rebuild the document without the edited key.
			if k, _, ok := strings.Cut(tc.edit, ":"); ok && tc.name != "unknown key" {
				var keep []string
				skip := false
				for _, l := range strings.Split(goodJoin, "\n") {
					if !strings.HasPrefix(l, " ") {
						skip = strings.HasPrefix(l, k+":")
					}
					if !skip {
						keep = append(keep, l)
					}
				}
				text = strings.Join(keep, "\n") + "\n" + tc.edit
			}
			a, err := parseAnswerFile([]byte(text))
			if err == nil {
				_, err = a.plan()
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("want an error naming %q, got %v\n%s", tc.want, err, text)
			}
		})
	}
}

func TestCmdline(t *testing.T) {
	args := cmdlineArgs(`BOOT_IMAGE=/live/vmlinuz boot=live tandem.install=auto tandem.disk=/dev/sdb tandem.wipe ` +
		`tandem.ssh_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOther other@host" tandem.dns=1.1.1.1,9.9.9.9 tandem.reboot=0 quiet`)
	if got := args["install"]; len(got) != 1 || got[0] != "auto" {
		t.Errorf("install %q", got)
	}
	a, err := parseAnswerFile([]byte(goodJoin))
	if err != nil {
		t.Fatal(err)
	}
	if err := applyCmdline(&a, args); err != nil {
		t.Fatal(err)
	}
	p, err := a.plan()
	if err != nil {
		t.Fatal(err)
	}
	if p.Disk != "/dev/sdb" || !p.Wipe || p.Reboot || len(p.SSHKeys) != 2 || len(p.DNS) != 2 {
		t.Errorf("command line did not override the file: %+v", p)
	}
	if !strings.HasSuffix(p.SSHKeys[1], "other@host") {
		t.Errorf("quoted key %q", p.SSHKeys[1])
	}
	if err := applyCmdline(&a, cmdlineArgs("tandem.disks=/dev/sda tandem.wipe=maybe")); err == nil ||
		!strings.Contains(err.Error(), "tandem.disks") || !strings.Contains(err.Error(), "tandem.wipe") {
		t.Errorf("unknown and bad keys: %v", err)
	}
	// The command line alone can carry every answer.
	var b Answers
	if err := applyCmdline(&b, cmdlineArgs("tandem.disk=/dev/vda tandem.hostname=n4 tandem.nic=ens3 tandem.address=10.0.0.4/24 "+
		"tandem.create=lab tandem.root_password_hash=$6$salt$abcdefgh")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.plan(); err != nil {
		t.Errorf("command-line-only answers: %v", err)
	}
}

func TestGeneratedConfigIsValid(t *testing.T) {
	p := mustPlan(t, goodJoin)
	text, err := tandemConfig(p, false)
	if err != nil {
		t.Fatal(err)
	}
	c, err := config.Parse([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	if c.NodeName != "node3" || c.BackendAddr != "10.99.0.13:7400" || c.DataDir != "/var/lib/tandem" ||
		c.Compute.Bridge != "vmbr0" || c.Compute.DomainType != "qemu" {
		t.Errorf("%+v", c)
	}
	files, err := configFiles(p, true, "0123456789abcdef0123456789abcdef")
	if err != nil {
		t.Fatal(err)
	}
	byPath := map[string]targetFile{}
	for _, f := range files {
		byPath[f.Path] = f
	}
	fb := byPath["/etc/tandem/firstboot.yaml"]
	if fb.Mode != 0o600 || !strings.Contains(fb.Data, "token: tok-abc") || !strings.Contains(fb.Data, "join: 10.99.0.11:7400") {
		t.Errorf("firstboot.yaml %o %q", fb.Mode, fb.Data)
	}
	if k := byPath["/root/.ssh/authorized_keys"]; k.Mode != 0o600 || !strings.HasPrefix(k.Data, "ssh-ed25519 ") {
		t.Errorf("authorized_keys %+v", k)
	}
	if !strings.Contains(byPath["/etc/tandem/tandem.yaml"].Data, "domain_type: kvm") {
		t.Errorf("kvm not used when /dev/kvm exists")
	}
	be := byPath["/etc/systemd/network/10-backend.network"].Data
	if !strings.Contains(be, "MACAddress=52:54:00:12:34:56") || !strings.Contains(be, "Address=10.99.0.13/24") || !strings.Contains(be, "Gateway=10.99.0.1") {
		t.Errorf("backend network:\n%s", be)
	}
	if up := byPath["/etc/systemd/network/30-vmbr0-uplink.network"].Data; !strings.Contains(up, "Name=ens4") || !strings.Contains(up, "Bridge=vmbr0") {
		t.Errorf("uplink:\n%s", up)
	}
	if br := byPath["/etc/systemd/network/20-vmbr0.network"].Data; !strings.Contains(br, "RequiredForOnline=no") || strings.Contains(br, "\nAddress=") {
		t.Errorf("bridge:\n%s", br)
	}
	// The backend NIC as the bridge's uplink: the address moves onto the
	// bridge.
	p.VMNIC = strings.ToUpper(p.NIC)
	for _, f := range networkFiles(p) {
		switch f.Path {
		case "/etc/systemd/network/10-backend.network":
			if !strings.Contains(f.Data, "Bridge=vmbr0") || strings.Contains(f.Data, "\nAddress=") {
				t.Errorf("shared NIC:\n%s", f.Data)
			}
		case "/etc/systemd/network/20-vmbr0.network":
			if !strings.Contains(f.Data, "Address=10.99.0.13/24") {
				t.Errorf("shared NIC bridge:\n%s", f.Data)
			}
		case "/etc/systemd/network/30-vmbr0-uplink.network":
			t.Errorf("a separate uplink file for a shared NIC")
		}
	}
}
