package cephholders

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

const librados = "/usr/lib/x86_64-linux-gnu/librados.so.2"

// TestScanFindsClientsUntilTheyExit runs real processes: one with
// librados mapped (preloaded into sleep) and one without. Only the first
// is listed; once killed it is no longer Alive, and a later scan does not
// list it.
func TestScanFindsClientsUntilTheyExit(t *testing.T) {
	if _, err := os.Stat(librados); err != nil {
		t.Skipf("no librados here: %v", err)
	}
	start := func(env ...string) *exec.Cmd {
		cmd := exec.Command("sleep", "300")
		cmd.Env = append(os.Environ(), env...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd
	}
	client := start("LD_PRELOAD=" + librados)
	plain := start()
	s := Scanner{}
	var found []Proc
	for deadline := time.Now().Add(10 * time.Second); ; {
		procs, err := s.Scan()
		if err != nil {
			t.Fatal(err)
		}
		found = procs
		if slices.ContainsFunc(procs, func(p Proc) bool { return p.PID == client.Process.Pid }) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond) // the loader maps it after exec
	}
	i := slices.IndexFunc(found, func(p Proc) bool { return p.PID == client.Process.Pid })
	if i < 0 {
		t.Fatalf("scan %v lacks the librados process %d", found, client.Process.Pid)
	}
	p := found[i]
	if p.Comm != "sleep" || len(p.Cmdline) != 2 || p.Cmdline[1] != "300" || p.Start == 0 {
		t.Errorf("process read as %+v", p)
	}
	if slices.ContainsFunc(found, func(p Proc) bool { return p.PID == plain.Process.Pid || p.PID == os.Getpid() }) {
		t.Errorf("scan %v lists a process without librados, or the caller", found)
	}
	if !s.Alive(p) {
		t.Fatalf("%v not alive", p)
	}
	// Another start time is another process.
	if s.Alive(Proc{PID: p.PID, Start: p.Start + 1}) {
		t.Errorf("a PID with another start time reads as alive")
	}
	_ = client.Process.Kill()
	_ = client.Wait()
	if s.Alive(p) {
		t.Errorf("%v alive after it was killed", p)
	}
	procs, err := s.Scan()
	if err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(procs, func(q Proc) bool { return q.PID == p.PID }) {
		t.Errorf("scan %v lists the killed process", procs)
	}
}

// TestScanFakeProc covers what a live system rarely shows: another
// network namespace, a zombie, a comm with spaces and parentheses, and a
// process whose mappings cannot be read (listed: only its exit proves it
// holds nothing), and processes whose namespace link cannot be read (told
// apart by the interfaces they see).
func TestScanFakeProc(t *testing.T) {
	root := t.TempDir()
	mk := func(pid, ns, stat, maps string, withMaps bool) {
		dir := filepath.Join(root, pid)
		must(t, os.MkdirAll(filepath.Join(dir, "ns"), 0o755))
		must(t, os.MkdirAll(filepath.Join(dir, "net"), 0o755))
		ifaces := "lo veth0"
		if ns == "net:[2]" {
			ifaces = "lo eth0"
		}
		if iface, hidden := strings.CutPrefix(ns, "hidden:"); hidden {
			// A namespace link that cannot be read (a directory here).
			must(t, os.Mkdir(filepath.Join(dir, "ns", "net"), 0o755))
			ifaces = iface
		} else {
			must(t, os.Symlink(ns, filepath.Join(dir, "ns", "net")))
		}
		var dev strings.Builder
		dev.WriteString("Inter-|   Receive\n face |bytes\n")
		for _, i := range strings.Fields(ifaces) {
			dev.WriteString("  " + i + ": 0 0 0\n")
		}
		must(t, os.WriteFile(filepath.Join(dir, "net", "dev"), []byte(dev.String()), 0o644))
		must(t, os.WriteFile(filepath.Join(dir, "stat"), []byte(pid+" "+stat), 0o644))
		must(t, os.WriteFile(filepath.Join(dir, "cmdline"), []byte("/bin/x\x00-a\x00"), 0o644))
		if withMaps {
			must(t, os.WriteFile(filepath.Join(dir, "maps"), []byte(maps), 0o644))
		} else {
			must(t, os.Mkdir(filepath.Join(dir, "maps"), 0o755)) // reads fail, not as missing
		}
	}
	tail := func(state, start string) string {
		f := []string{state}
		for i := 4; i <= 21; i++ {
			f = append(f, "0")
		}
		return strings.Join(append(f, start, "0", "0"), " ")
	}
	rados := "7f0-7f1 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/librados.so.2.0.0\n"
	other := "7f0-7f1 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libc.so.6\n"
	mk("1", "net:[1]", "(self) "+tail("S", "10"), rados, true)
	mk("2", "net:[1]", "(qemu (x) y) "+tail("S", "20"), rados, true)
	mk("3", "net:[2]", "(elsewhere) "+tail("S", "30"), rados, true)
	mk("4", "net:[1]", "(zombie) "+tail("Z", "40"), rados, true)
	mk("5", "net:[1]", "(nolib) "+tail("S", "50"), other, true)
	mk("6", "net:[1]", "(unreadable) "+tail("S", "60"), "", false)
	mk("7", "hidden:lo eth0", "(init) "+tail("S", "70"), rados, true)    // other interfaces: elsewhere
	mk("8", "hidden:veth0 lo", "(hidden) "+tail("S", "80"), rados, true) // ours: listed
	must(t, os.Mkdir(filepath.Join(root, "self"), 0o755))
	s := Scanner{Root: root, Self: 1}
	procs, err := s.Scan()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range procs {
		got = append(got, p.String())
	}
	want := []string{"qemu (x) y (pid 2)", "unreadable (pid 6)", "hidden (pid 8)"}
	if !slices.Equal(got, want) {
		t.Fatalf("scan = %v, want %v", got, want)
	}
	if procs[0].Start != 20 || !slices.Equal(procs[0].Cmdline, []string{"/bin/x", "-a"}) {
		t.Errorf("read %+v", procs[0])
	}
	if s.Alive(Proc{PID: 4, Start: 40}) || s.Alive(Proc{PID: 9, Start: 1}) || !s.Alive(Proc{PID: 2, Start: 20}) {
		t.Errorf("Alive wrong for a zombie, a missing process or a live one")
	}
	if _, err := (Scanner{Root: root, Self: 99}).Scan(); err == nil {
		t.Errorf("a scan without the caller's namespace succeeded")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
