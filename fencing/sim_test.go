package fencing

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

const (
	simUser = "admin"
	simPass = "Tandem-Sekrit-7q" // distinctive, so a leak is easy to grep for
)

// syncBuffer collects ipmi_sim's output for failure messages.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// node is a dummy "node" process: a sleep that the BMC's power-off kills.
type node struct {
	cmd    *exec.Cmd
	exited chan struct{}
}

func startNode(t *testing.T) *node {
	t.Helper()
	cmd := exec.Command("sleep", "300")
	if err := cmd.Start(); err != nil {
		t.Fatalf("start dummy node: %v", err)
	}
	n := &node{cmd: cmd, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(n.exited) }() // reap, so "gone" is observable
	t.Cleanup(func() {
		if !n.gone(0) {
			_ = cmd.Process.Kill()
			<-n.exited
		}
	})
	return n
}

// gone reports whether the node process exited within d.
func (n *node) gone(d time.Duration) bool {
	if d == 0 {
		select {
		case <-n.exited:
			return true
		default:
			return false
		}
	}
	select {
	case <-n.exited:
		return true
	case <-time.After(d):
		return false
	}
}

// freeUDPPort returns a loopback UDP port that was free a moment ago.
func freeUDPPort(t *testing.T) int {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find free UDP port: %v", err)
	}
	defer pc.Close()
	return pc.LocalAddr().(*net.UDPAddr).Port
}

type bmcSim struct {
	port   int
	output *syncBuffer
}

// chassisScript is ipmi_sim's chassis_control hook. It is called as
// "<script> 0x20 get power" (answer "power:0|1") or "<script> 0x20 set power 0|1".
// On power 0 it kills the node first and records "off" after, so a BMC
// that reports off implies the node is already dead.
const chassisScript = `#!/bin/sh
STATE=%q
PIDFILE=%q
mc=$1; op=$2; shift 2
case "$op" in
get)
	for p in "$@"; do
		case "$p" in
		power) echo "power:$(cat "$STATE" 2>/dev/null || echo 1)" ;;
		esac
	done ;;
set)
	while [ $# -ge 2 ]; do
		case "$1" in
		power)
			if [ "$2" = 0 ] && [ -s "$PIDFILE" ]; then
				kill -KILL "$(cat "$PIDFILE")" 2>/dev/null
			fi
			echo "$2" > "$STATE" ;;
		esac
		shift 2
	done ;;
esac
exit 0
`

// startBMC runs a real ipmi_sim on 127.0.0.1 whose chassis power controls
// nodePID. It fails (never skips) when root cannot start it.
func startBMC(t *testing.T, nodePID int) *bmcSim {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("ipmi_sim tests run as root only")
	}
	bin, err := exec.LookPath("ipmi_sim")
	if err != nil {
		t.Fatalf("ipmi_sim not found (apt-get install -y openipmi ipmitool): %v", err)
	}
	dir := t.TempDir()
	stateDir := filepath.Join(dir, "state")
	if err := os.Mkdir(stateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	pidFile := filepath.Join(dir, "node.pid")
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(nodePID)), 0o600); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(dir, "chassis_control")
	if err := os.WriteFile(script, fmt.Appendf(nil, chassisScript, filepath.Join(dir, "power"), pidFile), 0o700); err != nil {
		t.Fatal(err)
	}
	port := freeUDPPort(t)
	lanConf := fmt.Sprintf(`name "tandem-test"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 %d
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  chassis_control "%s 0x20"
  user 2 true "%s" "%s" admin 10 none md2 md5 straight
`, port, script, simUser, simPass)
	bmcEmu := "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\nmc_enable 0x20\n"
	lanPath, emuPath := filepath.Join(dir, "lan.conf"), filepath.Join(dir, "bmc.emu")
	if err := os.WriteFile(lanPath, []byte(lanConf), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(emuPath, []byte(bmcEmu), 0o600); err != nil {
		t.Fatal(err)
	}

	out := &syncBuffer{}
	cmd := exec.Command(bin, "-c", lanPath, "-f", emuPath, "-s", stateDir, "-n")
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start ipmi_sim: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // by PID, only the process this test started
		<-exited
	})
	sim := &bmcSim{port: port, output: out}

	// Ready once an authenticated status read works.
	agent := NewIPMI(sim.config(simPass, time.Second))
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := agent.Status(ctx)
		cancel()
		if err == nil {
			return sim
		}
		select {
		case werr := <-exited:
			t.Fatalf("ipmi_sim exited early (%v); output:\n%s", werr, out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("ipmi_sim not ready on 127.0.0.1:%d: %v; output:\n%s", port, err, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *bmcSim) config(password string, timeout time.Duration) IPMIConfig {
	return IPMIConfig{Host: "127.0.0.1", Port: s.port, User: simUser, Password: password, Timeout: timeout, PollInterval: 50 * time.Millisecond}
}
