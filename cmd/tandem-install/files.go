package main

import (
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/tandemhci/tandem/internal/config"
)

// targetFile is a file the installer writes into the installed system.
type targetFile struct {
	Path string // inside the target
	Mode uint32
	Data string
}

// matchNIC is a [Match] section selecting an interface by name or MAC.
func matchNIC(nic string) string {
	if macAddr.MatchString(nic) {
		// Type=ether: a bridge or VLAN that inherits the MAC is not it.
		return "[Match]\nMACAddress=" + strings.ToLower(nic) + "\nType=ether\n"
	}
	return "[Match]\nName=" + nic + "\n"
}

// sameNIC compares two NIC answers (names exactly, MACs in any case).
func sameNIC(a, b string) bool { return a != "" && strings.EqualFold(a, b) }

// networkFiles configures systemd-networkd: the backend address on the
// backend NIC, and the VM bridge with its uplink. When the VM uplink is the
// backend NIC, the address moves onto the bridge. The bridge and its port
// are not required for "online": VMs' links come and go.
func networkFiles(p Plan) []targetFile {
	addr := "[Network]\nAddress=" + p.Backend.String() + "\n"
	if p.Gateway.IsValid() {
		addr += "Gateway=" + p.Gateway.String() + "\n"
	}
	for _, d := range p.DNS {
		addr += "DNS=" + d.String() + "\n"
	}
	addr += "LinkLocalAddressing=no\nIPv6AcceptRA=no\n"
	br := p.VMBridge
	files := []targetFile{{
		Path: "/etc/systemd/network/20-" + br + ".netdev", Mode: 0o644,
		Data: "# Written by tandem-install: the VM bridge (compute.bridge).\n[NetDev]\nName=" + br + "\nKind=bridge\n",
	}}
	bridgeNet := "# Written by tandem-install.\n[Match]\nName=" + br + "\n"
	if sameNIC(p.VMNIC, p.NIC) {
		files = append(files, targetFile{
			Path: "/etc/systemd/network/10-backend.network", Mode: 0o644,
			Data: "# Written by tandem-install: the backend NIC, also the VM bridge's uplink.\n" + matchNIC(p.NIC) + "\n[Network]\nBridge=" + br + "\n",
		})
		bridgeNet += "\n" + addr
	} else {
		files = append(files, targetFile{
			Path: "/etc/systemd/network/10-backend.network", Mode: 0o644,
			Data: "# Written by tandem-install: the backend network (node-to-node traffic).\n" + matchNIC(p.NIC) + "\n" + addr,
		})
		if p.VMNIC != "" {
			files = append(files, targetFile{
				Path: "/etc/systemd/network/30-" + br + "-uplink.network", Mode: 0o644,
				Data: "# Written by tandem-install: the VM bridge's uplink.\n" + matchNIC(p.VMNIC) + "\n[Link]\nRequiredForOnline=no\n\n[Network]\nBridge=" + br + "\n",
			})
		}
		bridgeNet += "\n[Link]\nRequiredForOnline=no\n\n[Network]\nLinkLocalAddressing=no\nIPv6AcceptRA=no\nConfigureWithoutCarrier=yes\n"
	}
	files = append(files, targetFile{Path: "/etc/systemd/network/20-" + br + ".network", Mode: 0o644, Data: bridgeNet})
	return files
}

// tandemConfig is /etc/tandem/tandem.yaml: the node's name and backend
// address, the data partition as data_dir, and the VM bridge. It is
// checked with tandemd's own parser and validation before it is written.
func tandemConfig(p Plan, kvm bool) (string, error) {
	domain := "qemu"
	if kvm {
		domain = "kvm"
	}
	c := struct {
		NodeName    string `yaml:"node_name"`
		DataDir     string `yaml:"data_dir"`
		BackendAddr string `yaml:"backend_addr"`
		Compute     struct {
			Bridge     string `yaml:"bridge"`
			DomainType string `yaml:"domain_type"`
		} `yaml:"compute"`
	}{NodeName: p.Hostname, DataDir: config.DefaultDataDir, BackendAddr: net.JoinHostPort(p.Backend.Addr().String(), strconv.Itoa(config.DefaultBackendPort))}
	c.Compute.Bridge = p.VMBridge
	c.Compute.DomainType = domain
	b, err := yaml.Marshal(c)
	if err != nil {
		return "", err
	}
	text := "# Written by tandem-install. Every key, with its default, is in\n" +
		"# /usr/share/doc/tandem/examples/tandem.yaml. data_dir is the data\n" +
		"# partition (LABEL=" + labelData + ", see /etc/fstab): the volumes live there.\n" + string(b)
	if _, err := config.Parse([]byte(text)); err != nil {
		return "", fmt.Errorf("the generated tandem.yaml is not valid: %w", err)
	}
	return text, nil
}

// firstbootFile is what tandem-firstboot reads: create or join, with the
// token (so the file is root's only, and removed once the node is in).
type firstbootFile struct {
	Create string `yaml:"create,omitempty"`
	Join   string `yaml:"join,omitempty"`
	Token  string `yaml:"token,omitempty"`
}

func firstbootYAML(p Plan) string {
	b, _ := yaml.Marshal(firstbootFile{Create: p.Create, Join: p.JoinAddr, Token: p.Token})
	return "# Written by tandem-install; tandem-firstboot.service creates or joins the\n" +
		"# cluster with it and removes it once this node is a member. To retry a\n" +
		"# join with a new token, edit token: here (tandem-firstboot re-reads it).\n" + string(b)
}

// fstab mounts the root, the ESP and the data partition by UUID.
func fstab(rootUUID, espID, dataUUID string) string {
	return "# Written by tandem-install.\n" +
		"UUID=" + rootUUID + "\t/\text4\terrors=remount-ro\t0\t1\n" +
		"UUID=" + espID + "\t/boot/efi\tvfat\tumask=0077\t0\t2\n" +
		"# tandemd's data_dir: the node's state and its volumes.\n" +
		"UUID=" + dataUUID + "\t" + config.DefaultDataDir + "\text4\tdefaults\t0\t2\n"
}

// grubDefaults serve both the screen and a serial console (IPMI SOL).
const grubDefaults = `# Written by tandem-install.
GRUB_DEFAULT=0
GRUB_TIMEOUT=3
GRUB_DISTRIBUTOR="Tandem"
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_CMDLINE_LINUX="console=tty0 console=ttyS0,115200n8"
GRUB_TERMINAL="console serial"
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
GRUB_DISABLE_OS_PROBER=true
`

// sshdConfig names only the host keys the installer generates (ed25519 and
// ECDSA, quick to make even on a slow machine).
const sshdConfig = `# Written by tandem-install.
HostKey /etc/ssh/ssh_host_ed25519_key
HostKey /etc/ssh/ssh_host_ecdsa_key
`

func hostsFile(p Plan) string {
	return "127.0.0.1\tlocalhost\n" + p.Backend.Addr().String() + "\t" + p.Hostname + "\n" +
		"::1\tlocalhost ip6-localhost ip6-loopback\n"
}

func resolvConf(p Plan) string {
	var b strings.Builder
	b.WriteString("# Written by tandem-install.\n")
	for _, d := range p.DNS {
		b.WriteString("nameserver " + d.String() + "\n")
	}
	return b.String()
}

// configFiles are all the files the installer writes into the target,
// sorted by path.
func configFiles(p Plan, kvm bool, machineID string) ([]targetFile, error) {
	cfg, err := tandemConfig(p, kvm)
	if err != nil {
		return nil, err
	}
	files := append(networkFiles(p),
		targetFile{"/etc/hostname", 0o644, p.Hostname + "\n"},
		targetFile{"/etc/hosts", 0o644, hostsFile(p)},
		targetFile{"/etc/resolv.conf", 0o644, resolvConf(p)},
		targetFile{"/etc/machine-id", 0o444, machineID + "\n"},
		targetFile{"/etc/default/grub", 0o644, grubDefaults},
		targetFile{"/etc/ssh/sshd_config.d/tandem.conf", 0o644, sshdConfig},
		targetFile{"/etc/tandem/tandem.yaml", 0o644, cfg},
		targetFile{"/etc/tandem/firstboot.yaml", 0o600, firstbootYAML(p)},
	)
	if len(p.SSHKeys) > 0 {
		files = append(files, targetFile{"/root/.ssh/authorized_keys", 0o600, strings.Join(p.SSHKeys, "\n") + "\n"})
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Path < files[j].Path })
	return files, nil
}
