package compute

import (
	"strings"
	"testing"
)

func TestConsoleEndpointsFromLiveXML(t *testing.T) {
	live := `<domain type="qemu"><name>g1</name><devices>
  <serial type="unix"><source mode="bind" path="/d/vms/g1.console.sock"/><log file="/d/vms/g1.console.log" append="on"/><target port="0"/></serial>
  <graphics type="vnc" port="5901" autoport="yes" listen="127.0.0.1"><listen type="address" address="127.0.0.1"/></graphics>
</devices></domain>`
	got, err := consoleEndpoints(live)
	if err != nil {
		t.Fatal(err)
	}
	if got.VNC != "127.0.0.1:5901" || got.Serial != "/d/vms/g1.console.sock" {
		t.Fatalf("endpoints %+v", got)
	}
	// Defined before consoles existed: a file serial port, no graphics.
	old := `<domain type="qemu"><name>g1</name><devices>
  <serial type="file"><source path="/d/vms/g1.console.log" append="on"/><target port="0"/></serial>
</devices></domain>`
	if got, err := consoleEndpoints(old); err != nil || got != (ConsoleEndpoints{}) {
		t.Fatalf("old definition: %+v %v", got, err)
	}
	// A display not yet given a port (autoport before start) is none.
	if got, _ := consoleEndpoints(`<domain><devices><graphics type="vnc" port="-1" autoport="yes"/></devices></domain>`); got.VNC != "" {
		t.Fatalf("unallocated port: %+v", got)
	}
}

func TestSerialPortSocketOrLogOnly(t *testing.T) {
	src, lg := serialPort("/var/lib/tandem/vms/g1.console.log")
	if src.UNIX == nil || src.UNIX.Path != "/var/lib/tandem/vms/g1.console.sock" || src.UNIX.Mode != "bind" || lg == nil || lg.File != "/var/lib/tandem/vms/g1.console.log" {
		t.Fatalf("serial port %+v %+v", src, lg)
	}
	if got := serialLogOf(src, lg); got != "/var/lib/tandem/vms/g1.console.log" {
		t.Fatalf("log of the socket port: %q", got)
	}
	// A path too long for a socket keeps the log, without interactive
	// sessions.
	long := "/" + strings.Repeat("d", 100) + "/g1.console.log"
	src, lg = serialPort(long)
	if src.File == nil || src.File.Path != long || lg != nil || serialLogOf(src, lg) != long {
		t.Fatalf("long path: %+v %+v", src, lg)
	}
	if src, _ := serialPort(""); src.Pty == nil {
		t.Fatalf("no log: %+v", src)
	}
}
