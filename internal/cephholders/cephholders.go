package cephholders

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Proc is a process that may hold a Ceph client.
type Proc struct {
	PID int
	// Start is the process's start time in clock ticks after boot
	// (/proc/PID/stat field 22): with PID, it names one process for good.
	Start uint64
	Comm  string
	// Cmdline is its argument vector.
	Cmdline []string
}

func (p Proc) String() string { return fmt.Sprintf("%s (pid %d)", p.Comm, p.PID) }

// Scanner reads a proc filesystem.
type Scanner struct {
	// Root is the proc filesystem ("/proc" when empty).
	Root string
	// Self is the PID left out (the caller; os.Getpid() when 0).
	Self int
}

func (s Scanner) root() string {
	if s.Root == "" {
		return "/proc"
	}
	return s.Root
}

func (s Scanner) self() int {
	if s.Self == 0 {
		return os.Getpid()
	}
	return s.Self
}

// Scan lists the processes, other than Self, in Self's network namespace
// that have a Ceph client library mapped, sorted by PID. A process that
// exits during the scan is skipped; one whose namespace or mappings
// cannot be read is listed (it may be a client, and only its exit proves
// it is not).
func (s Scanner) Scan() ([]Proc, error) {
	root := s.root()
	selfDir := filepath.Join(root, strconv.Itoa(s.self()))
	ns, err := os.Readlink(filepath.Join(selfDir, "ns", "net"))
	if err != nil {
		return nil, fmt.Errorf("read this process's network namespace: %w", err)
	}
	ifaces, err := interfaces(selfDir)
	if err != nil {
		return nil, fmt.Errorf("read this process's network interfaces: %w", err)
	}
	ents, err := os.ReadDir(root)
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	var out []Proc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == s.self() {
			continue
		}
		dir := filepath.Join(root, e.Name())
		p, err := s.stat(pid)
		if err != nil {
			continue // gone, or a kernel thread's odd stat
		}
		other, err := os.Readlink(filepath.Join(dir, "ns", "net"))
		switch {
		case err == nil && other != ns:
			continue
		case errors.Is(err, fs.ErrNotExist):
			continue // exited
		case err != nil:
			// Some processes hide their namespace links even from root
			// (a sandbox's init); their own view of the interfaces still
			// tells another namespace apart.
			if o, err := interfaces(dir); err == nil && o != ifaces {
				continue
			}
		}
		mapped, err := mapsCeph(filepath.Join(dir, "maps"))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err == nil && !mapped {
			continue
		}
		if b, err := os.ReadFile(filepath.Join(dir, "cmdline")); err == nil {
			p.Cmdline = strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		}
		out = append(out, p)
	}
	return out, nil
}

// Alive reports whether p is still running: the same PID with the same
// start time, and not a zombie.
func (s Scanner) Alive(p Proc) bool {
	q, err := s.stat(p.PID)
	return err == nil && q.Start == p.Start
}

// stat reads a process's name and start time; a zombie reads as gone.
func (s Scanner) stat(pid int) (Proc, error) {
	b, err := os.ReadFile(filepath.Join(s.root(), strconv.Itoa(pid), "stat"))
	if err != nil {
		return Proc{}, err
	}
	// "pid (comm) state ppid ..."; comm may hold spaces and parentheses.
	open, close := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || close < open {
		return Proc{}, fmt.Errorf("process %d: malformed stat", pid)
	}
	f := strings.Fields(string(b[close+1:]))
	// f[0] is field 3 (state); the start time is field 22.
	if len(f) < 20 {
		return Proc{}, fmt.Errorf("process %d: short stat", pid)
	}
	if f[0] == "Z" || f[0] == "X" {
		return Proc{}, fs.ErrNotExist
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return Proc{}, fmt.Errorf("process %d: start time: %w", pid, err)
	}
	return Proc{PID: pid, Start: start, Comm: string(b[open+1 : close])}, nil
}

// interfaces names, sorted, the network interfaces a process sees
// (/proc/PID/net/dev, which follows its network namespace).
func interfaces(dir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, "net", "dev"))
	if err != nil {
		return "", err
	}
	var names []string
	for _, l := range strings.Split(string(b), "\n") {
		if name, _, ok := strings.Cut(l, ":"); ok {
			names = append(names, strings.TrimSpace(name))
		}
	}
	slices.Sort(names)
	return strings.Join(names, " "), nil
}

// mapsCeph reports whether a maps file maps librados or librbd.
func mapsCeph(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		i := bytes.LastIndexByte(line, '/')
		if i < 0 {
			continue
		}
		name := line[i+1:]
		if bytes.HasPrefix(name, []byte("librados.so")) || bytes.HasPrefix(name, []byte("librbd.so")) {
			return true, nil
		}
	}
	return false, sc.Err()
}
