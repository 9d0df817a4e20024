package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tandemhci/tandem/internal/pki"
	"github.com/tandemhci/tandem/internal/testcluster"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// TestApplianceInstall installs the appliance ISO (TANDEM_ISO, built by
// 'make iso'; 'make test-appliance' builds it and runs this test) into a
// QEMU machine under TCG that joins a two-node cluster: the ISO boots
// (SeaBIOS) from a CD with a blank virtio disk, a NIC on the backend bridge
// and one on the VM network, and an answer drive labelled TANDEM naming a
// mistyped join token. The installer partitions the disk, installs, reboots
// from it; the first boot's join is refused and retried with backoff, the
// error visible on the console, until the test writes the right token over
// SSH, as an operator would, and the installed tandemd joins. The test then
// checks the installed system over SSH (with the key from the answers) and
// kills the machine, which the cluster must see go offline.
func TestApplianceInstall(t *testing.T) {
	iso := os.Getenv("TANDEM_ISO")
	if iso == "" {
		t.Skip("TANDEM_ISO is not set: 'make test-appliance' builds the ISO and runs this test")
	}
	if _, err := os.Stat(iso); err != nil {
		t.Fatalf("TANDEM_ISO: %v", err)
	}
	testcluster.Require(t)
	for _, c := range []string{"qemu-system-x86_64", "qemu-img", "mkfs.vfat", "mcopy", "ssh", "ssh-keygen"} {
		if _, err := exec.LookPath(c); err != nil {
			if _, err2 := os.Stat("/usr/sbin/" + c); err2 != nil {
				t.Fatalf("%s not found: 'make test-appliance' installs it", c)
			}
		}
	}
	t.Setenv("PATH", os.Getenv("PATH")+":/usr/sbin:/sbin")
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	bin := binDir(t)
	c := testcluster.New(t, testcluster.Options{Nodes: 2})
	td := testcluster.NewTandem(c, bin)
	n1, n2 := c.Nodes[0], c.Nodes[1]
	for _, n := range c.Nodes {
		if _, err := td.StartDaemon(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	if err := td.Form(ctx, "appliance"); err != nil {
		t.Fatal(err)
	}
	out, _, err := td.CLI(ctx, n1, "cluster", "token", "--ttl", "2h", "--output", "json")
	if err != nil {
		t.Fatal(err)
	}
	token := regexp.MustCompile(`"token":\s*"([^"]+)"`).FindStringSubmatch(out)
	if token == nil {
		t.Fatalf("no token in %s", out)
	}
	// The answers carry a mistyped token (another secret, a valid
	// checksum): the installed system must retry visibly, and take the
	// right one once the operator writes it into its first-boot file.
	jt, err := pki.ParseJoinToken(token[1])
	if err != nil {
		t.Fatal(err)
	}
	jt.Secret[0] ^= 0xff
	wrongToken := jt.String()

	// The new node: 10.99.0.13 on the backend (its NIC a tap on the
	// switch's backend bridge), a second NIC on the VM network.
	sub := n1.IP[:strings.LastIndex(n1.IP, ".")]
	addr := sub + ".13"
	if _, err := c.SwitchOnBackend(); err != nil {
		t.Fatal(err)
	}
	for _, tap := range [][2]string{{"tapbe", "br0"}, {"tapvm", "br1"}} {
		for _, argv := range [][]string{
			{"ip", "tuntap", "add", "dev", tap[0], "mode", "tap"},
			{"ip", "link", "set", tap[0], "master", tap[1]},
			{"ip", "link", "set", tap[0], "up"},
		} {
			if out, err := c.ExecSwitch(ctx, argv...); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
		}
	}
	dir := t.TempDir()
	key := filepath.Join(dir, "id_ed25519")
	run := func(name string, args ...string) string {
		t.Helper()
		b, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, b)
		}
		return string(b)
	}
	run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "appliance-test", "-f", key)
	pub, err := os.ReadFile(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	answer := fmt.Sprintf(`disk: /dev/disk/by-id/virtio-tandem-target
hostname: n3
network:
  nic: "52:54:00:99:00:13"
  address: %s/24
  vm_nic: "52:54:00:98:00:13"
cluster:
  join: %s
  token: %s
ssh_authorized_keys:
  - %s
`, addr, td.BackendAddr(n1), wrongToken, strings.TrimSpace(string(pub)))
	if err := os.WriteFile(filepath.Join(dir, "answer.yaml"), []byte(answer), 0o600); err != nil {
		t.Fatal(err)
	}
	answers := filepath.Join(dir, "answers.img")
	run("mkfs.vfat", "-C", "-n", "TANDEM", answers, "2048")
	run("mcopy", "-i", answers, filepath.Join(dir, "answer.yaml"), "::answer.yaml")
	disk := filepath.Join(dir, "disk.qcow2")
	run("qemu-img", "create", "-q", "-f", "qcow2", disk, "16G")

	serial := filepath.Join(dir, "serial.log")
	argv := []string{"qemu-system-x86_64", "-machine", "pc", "-accel", "tcg,thread=multi", "-smp", "2", "-m", "2048",
		"-nodefaults", "-display", "none", "-vga", "none", "-serial", "file:" + serial, "-boot", "strict=on",
		"-drive", "file=" + disk + ",if=none,id=hd,format=qcow2,cache=unsafe",
		"-device", "virtio-blk-pci,drive=hd,serial=tandem-target,bootindex=1",
		"-drive", "file=" + iso + ",if=none,id=cd,media=cdrom,readonly=on",
		"-device", "ide-cd,drive=cd,bootindex=2",
		"-drive", "file=" + answers + ",if=none,id=ans,format=raw",
		"-device", "virtio-blk-pci,drive=ans,serial=tandem-answers,bootindex=3",
		"-netdev", "tap,id=be,ifname=tapbe,script=no,downscript=no",
		"-device", "virtio-net-pci,netdev=be,mac=52:54:00:99:00:13",
		"-netdev", "tap,id=vm,ifname=tapvm,script=no,downscript=no",
		"-device", "virtio-net-pci,netdev=vm,mac=52:54:00:98:00:13",
		"-device", "virtio-rng-pci",
	}
	start := time.Now()
	vm, err := c.StartOnSwitch("appliance-qemu", argv, nil)
	if err != nil {
		t.Fatal(err)
	}
	serialTail := func() string { return tail(serial, 40) }
	defer func() {
		if t.Failed() {
			t.Logf("serial console (last lines):\n%s", serialTail())
		}
	}()

	// The installed system, over SSH from the switch (the key from the
	// answers).
	ssh := func(cmd string) (string, error) {
		out, err := c.ExecSwitch(ctx, "ssh", "-i", key, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
			"-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=20", "-o", "LogLevel=ERROR", "root@"+addr, cmd)
		return strings.TrimSpace(string(out)), err
	}

	// Installed (the installer says so on the serial console), refused
	// with the mistyped token and fixed by the operator, then joined: the
	// other nodes count 3 voters online.
	var installed, refused time.Duration
	st, err := waitFor(ctx, 35*time.Minute, func() (*tandemv1.ClusterStatus, bool, error) {
		if !vm.Alive() {
			return nil, false, fmt.Errorf("QEMU exited:\n%s", c.LogTail(c.Switch(), "appliance-qemu", 20))
		}
		if installed == 0 {
			if b, _ := os.ReadFile(serial); strings.Contains(string(b), "tandem-install: installed in") {
				installed = time.Since(start)
				t.Logf("appliance: installed %s after QEMU start; rebooting from the disk", installed.Round(time.Second))
			} else if strings.Contains(string(b), "installation failed") {
				return nil, false, fmt.Errorf("the installer failed:\n%s", serialTail())
			}
		}
		if installed != 0 && refused == 0 {
			b, _ := os.ReadFile(serial)
			if i := strings.Index(string(b), "refused the join token"); i >= 0 && strings.Contains(string(b[i:]), "Next attempt in") {
				refused = time.Since(start)
				t.Logf("appliance: the mistyped token was refused visibly %s after QEMU start; writing the right one", refused.Round(time.Second))
				// What an operator does on the console: no restart.
				if out, err := ssh(fmt.Sprintf("sed -i 's/^token: .*/token: %s/' /etc/tandem/firstboot.yaml && grep -c '^token: ' /etc/tandem/firstboot.yaml", token[1])); err != nil || out != "1" {
					return nil, false, fmt.Errorf("fixing the token over SSH: %v %q", err, out)
				}
			}
		}
		st, err := td.Status(ctx, n2)
		if err != nil {
			return nil, false, nil
		}
		if st.GetVoters() == 3 && refused == 0 {
			return st, false, fmt.Errorf("the node joined with a mistyped token")
		}
		return st, st.GetVoters() == 3 && st.GetVotesOnline() == 3 && st.GetQuorate(), nil
	})
	if err != nil {
		t.Fatalf("waiting for the installed node to join: %v (last status %s)", err, statusLine(st))
	}
	joined := time.Since(start)
	t.Logf("appliance: QEMU start to joined (3 of 3 online): %s (install %s, token fixed %s)", joined.Round(time.Second), installed.Round(time.Second), refused.Round(time.Second))
	for _, n := range c.Nodes {
		st, err := td.Status(ctx, n)
		if err != nil || st.GetVotesOnline() != 3 || !st.GetQuorate() {
			t.Errorf("status on %s: %v %s", n.Name, err, statusLine(st))
		}
	}

	// A volume with a replica on n3, to see where its file lands.
	if _, _, err := td.CLI(ctx, n1, "volume", "create", "appl", "--size", "64M", "--nodes", "n3,n1"); err != nil {
		t.Errorf("a volume on the installed node: %v", err)
	}
	// The build's version: what make test-appliance built the ISO as
	// (TANDEM_ISO_VERSION), else the test's own binaries' (same tree).
	wantVersion := os.Getenv("TANDEM_ISO_VERSION")
	if wantVersion == "" {
		wantVersion = strings.TrimPrefix(strings.TrimSpace(run(filepath.Join(bin, "tandemd"), "--version")), "tandemd ")
	}
	for _, tc := range []struct{ cmd, want string }{
		{"systemctl is-active tandemd", "active"},
		{"systemctl is-active libvirtd", "active"},
		{"tandem version", "tandemd " + wantVersion + " (node n3)"},
		{"systemd-analyze verify --man=no tandemd.service tandem-firstboot.service && echo verified", "verified"},
		// tandemd's data_dir, and so its volumes, is the data partition.
		{`f=$(ls -d /var/lib/tandem/volumes/* | head -n1); test -n "$f" && findmnt -n -o SOURCE -T "$f"; readlink -f /dev/disk/by-label/tandem-data`, ""},
		{"test -e /etc/tandem/firstboot.yaml || echo token-removed", "token-removed"},
		{"ip -br link show vmbr0 && bridge link show | grep -c 'master vmbr0'", "vmbr0"},
	} {
		out, err := ssh(tc.cmd)
		if err != nil {
			t.Errorf("on the installed node: %s: %v\n%s", tc.cmd, err, out)
			continue
		}
		if tc.want == "" { // the two lines must name the same device
			l := strings.Fields(out)
			if len(l) != 2 || l[0] != l[1] || !strings.HasSuffix(l[0], "4") {
				t.Errorf("volumes are not on the data partition: %q", out)
			}
			continue
		}
		if !strings.Contains(out, tc.want) {
			t.Errorf("on the installed node: %s: %q, want %q", tc.cmd, out, tc.want)
		}
		t.Logf("n3$ %s\n%s", tc.cmd, out)
	}
	if out, err := ssh("cat /var/log/tandem-install.log | grep -c 'tandem-install:'"); err != nil || out == "0" {
		t.Errorf("the installer's log is not in the installed system: %v %q", err, out)
	}

	// Power the machine off hard: the cluster must see it go.
	if err := syscall.Kill(vm.PID(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	st, err = waitFor(ctx, 5*time.Minute, func() (*tandemv1.ClusterStatus, bool, error) {
		st, err := td.Status(ctx, n1)
		if err != nil {
			return nil, false, nil
		}
		for _, n := range st.GetNodes() {
			if n.GetName() == "n3" {
				return st, n.GetHealth() == tandemv1.Health_HEALTH_OFFLINE, nil
			}
		}
		return st, false, fmt.Errorf("n3 is no longer listed: %s", statusLine(st))
	})
	if err != nil {
		t.Fatalf("after killing the installed node: %v", err)
	}
	t.Logf("appliance: n3 offline %s after its QEMU was killed (%s)", time.Since(killed).Round(time.Second), statusLine(st))
	if !st.GetQuorate() || st.GetVotesOnline() != 2 {
		t.Errorf("two of three must stay quorate: %s", statusLine(st))
	}
}

// waitFor polls f every 2 s until it reports done, fails, or the bound
// passes (a bound against hanging, far above the expected time).
func waitFor(ctx context.Context, bound time.Duration, f func() (*tandemv1.ClusterStatus, bool, error)) (*tandemv1.ClusterStatus, error) {
	deadline := time.Now().Add(bound)
	var last *tandemv1.ClusterStatus
	for {
		st, done, err := f()
		if st != nil {
			last = st
		}
		if err != nil || done {
			return last, err
		}
		if time.Now().After(deadline) {
			return last, fmt.Errorf("not done after %s", bound)
		}
		select {
		case <-ctx.Done():
			return last, ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}

func statusLine(st *tandemv1.ClusterStatus) string {
	if st == nil {
		return "(none)"
	}
	return fmt.Sprintf("quorate=%v %d/%d online: %s", st.GetQuorate(), st.GetVotesOnline(), st.GetVoters(), voters(st))
}

// tail is the last n lines of a file, for failure messages.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	l := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}
