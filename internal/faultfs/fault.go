package faultfs

import (
	"context"
	"errors"
	"fmt"
	"path"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Op is a set of operation classes a Fault applies to.
type Op uint32

const (
	// OpRead is reading file data.
	OpRead Op = 1 << iota
	// OpWrite is writing file data, fallocate included.
	OpWrite
	// OpSync is fsync and fdatasync of a file, and the sync that an
	// O_SYNC/O_DSYNC file or an RWF_DSYNC write implies.
	OpSync
	// OpFlush is the FUSE flush sent at each close(2) of a descriptor.
	OpFlush
	// OpMeta is a namespace change: create, mkdir, mknod, symlink, link,
	// rename, unlink and rmdir.
	OpMeta

	// OpAll is every class above.
	OpAll = OpRead | OpWrite | OpSync | OpFlush | OpMeta
)

var opNames = []struct {
	op   Op
	name string
}{{OpRead, "read"}, {OpWrite, "write"}, {OpSync, "sync"}, {OpFlush, "flush"}, {OpMeta, "meta"}}

// String names the classes in o, joined by "|".
func (o Op) String() string {
	var parts []string
	for _, n := range opNames {
		if o&n.op != 0 {
			parts = append(parts, n.name)
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, "|")
}

// ParseOp reads an Op written as names joined by "|" or ",", or "all".
func ParseOp(s string) (Op, error) {
	var o Op
	for _, p := range strings.FieldsFunc(s, func(r rune) bool { return r == '|' || r == ',' }) {
		p = strings.TrimSpace(p)
		if p == "all" {
			o |= OpAll
			continue
		}
		found := false
		for _, n := range opNames {
			if n.name == p {
				o |= n.op
				found = true
			}
		}
		if !found {
			return 0, fmt.Errorf("faultfs: unknown operation %q (want read, write, sync, flush, meta or all)", p)
		}
	}
	if o == 0 {
		return 0, errors.New("faultfs: a fault needs at least one operation")
	}
	return o, nil
}

// Fault is one rule: operations of the classes in Ops on paths matching
// Path wait Delay and then, if Err is not 0, fail with Err without being
// applied.
type Fault struct {
	Ops Op
	// Path selects files by their path relative to the mount root
	// ("volumes/v1.img"). It is a path.Match pattern matched against the
	// path and against each of its parent directories, so "volumes"
	// selects everything below volumes/ and "volumes/*.img" the images in
	// it. Empty selects the whole mount.
	Path string
	// Err is the error returned, typically EIO or ENOSPC; 0 only delays.
	Err syscall.Errno
	// Delay is waited before the operation (slow I/O); 0 for none. A
	// canceled request (the caller interrupted) stops waiting.
	Delay time.Duration
	// Times is how many operations the rule hits before it removes
	// itself ("fail the next write"); 0 means until cleared.
	Times int
}

func (f Fault) validate() error {
	if f.Ops == 0 || f.Ops&^OpAll != 0 {
		return fmt.Errorf("faultfs: fault operations %#x: want a non-empty set of OpRead, OpWrite, OpSync, OpFlush, OpMeta", uint32(f.Ops))
	}
	if f.Path != "" {
		if _, err := path.Match(f.Path, ""); err != nil {
			return fmt.Errorf("faultfs: fault path pattern %q: %w", f.Path, err)
		}
		if strings.HasPrefix(f.Path, "/") {
			return fmt.Errorf("faultfs: fault path pattern %q: want a path relative to the mount root", f.Path)
		}
	}
	if f.Err == 0 && f.Delay <= 0 {
		return errors.New("faultfs: a fault needs an error, a delay or both")
	}
	if f.Delay < 0 {
		return fmt.Errorf("faultfs: negative delay %v", f.Delay)
	}
	if f.Times < 0 {
		return fmt.Errorf("faultfs: negative times %d", f.Times)
	}
	return nil
}

// matches reports whether rel (slash-separated, relative to the root, ""
// for the root) or one of its parents matches the pattern.
func (f Fault) matches(rel string) bool {
	if f.Path == "" {
		return true
	}
	for p := rel; ; {
		if ok, _ := path.Match(f.Path, p); ok {
			return true
		}
		i := strings.LastIndexByte(p, '/')
		if i < 0 {
			return false
		}
		p = p[:i]
	}
}

// Counters count what the mount injected and did, for reports. Injected
// is keyed "<op>/<errno name>" ("write/EIO", "sync/ENOSPC") and
// "<op>/delay" for delayed operations.
type Counters struct {
	Injected map[string]uint64 `json:"injected"`
	// PowerLosses is the number of PowerLoss calls.
	PowerLosses uint64 `json:"power_losses"`
	// DroppedBytes is the unsynced data PowerLoss discarded, counted in
	// whole 4 KiB pages.
	DroppedBytes uint64 `json:"dropped_bytes"`
	// Syncs is the file syncs that made data durable.
	Syncs uint64 `json:"syncs"`
	// Writebacks is the times a file's unsynced data was written to the
	// backing file early because the mount held more than MaxDirtyBytes.
	Writebacks uint64 `json:"writebacks"`
}

// faults is the rule table and the counters, shared by every node.
type faults struct {
	mu       sync.RWMutex
	rules    []rule
	counters Counters
}

type rule struct {
	Fault
	left int // hits left when Times > 0
}

func (t *faults) set(f Fault) error {
	if err := f.validate(); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for i, r := range t.rules {
		if r.Ops == f.Ops && r.Path == f.Path {
			t.rules[i] = rule{f, f.Times}
			return nil
		}
	}
	t.rules = append(t.rules, rule{f, f.Times})
	return nil
}

func (t *faults) clear() {
	t.mu.Lock()
	t.rules = nil
	t.mu.Unlock()
}

// list returns the rules in force; Times is what is left of it.
func (t *faults) list() []Fault {
	t.mu.RLock()
	defer t.mu.RUnlock()
	out := make([]Fault, 0, len(t.rules))
	for _, r := range t.rules {
		f := r.Fault
		f.Times = r.left
		out = append(out, f)
	}
	return out
}

// hit finds the first rule for op matching rel and counts the hit against
// its Times.
func (t *faults) hit(op Op, rel string) (Fault, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := range t.rules {
		r := &t.rules[i]
		if r.Ops&op == 0 || !r.matches(rel) {
			continue
		}
		f := r.Fault
		if r.Times > 0 {
			if r.left--; r.left == 0 {
				t.rules = append(t.rules[:i], t.rules[i+1:]...)
			}
		}
		return f, true
	}
	return Fault{}, false
}

// check applies the first rule for op matching the path relPath returns
// (computed only when there are rules): it waits the delay and returns
// the error, counting both.
func (t *faults) check(ctx context.Context, op Op, relPath func() string) syscall.Errno {
	t.mu.RLock()
	n := len(t.rules)
	t.mu.RUnlock()
	if n == 0 {
		return 0
	}
	if r, ok := t.hit(op, relPath()); ok {
		if r.Delay > 0 {
			t.count(op.String() + "/delay")
			timer := time.NewTimer(r.Delay)
			select {
			case <-timer.C:
			case <-ctx.Done():
				timer.Stop()
				return syscall.EINTR
			}
		}
		if r.Err != 0 {
			t.count(op.String() + "/" + errnoName(r.Err))
		}
		return r.Err
	}
	return 0
}

func (t *faults) count(key string) {
	t.mu.Lock()
	if t.counters.Injected == nil {
		t.counters.Injected = map[string]uint64{}
	}
	t.counters.Injected[key]++
	t.mu.Unlock()
}

func (t *faults) add(fn func(c *Counters)) {
	t.mu.Lock()
	fn(&t.counters)
	t.mu.Unlock()
}

func (t *faults) snapshot() Counters {
	t.mu.RLock()
	defer t.mu.RUnlock()
	c := t.counters
	c.Injected = make(map[string]uint64, len(t.counters.Injected))
	for k, v := range t.counters.Injected {
		c.Injected[k] = v
	}
	return c
}

var errnoNames = map[syscall.Errno]string{
	syscall.EIO: "EIO", syscall.ENOSPC: "ENOSPC", syscall.EROFS: "EROFS", syscall.EDQUOT: "EDQUOT",
	syscall.EFBIG: "EFBIG", syscall.ENODEV: "ENODEV", syscall.ENXIO: "ENXIO", syscall.EAGAIN: "EAGAIN",
	syscall.EINTR: "EINTR", syscall.EPERM: "EPERM", syscall.EACCES: "EACCES",
}

func errnoName(e syscall.Errno) string {
	if n, ok := errnoNames[e]; ok {
		return n
	}
	return fmt.Sprintf("errno%d", int(e))
}

// ParseErrno reads an error name as errnoName writes it ("EIO", "ENOSPC",
// "errno5"); "" is 0.
func ParseErrno(s string) (syscall.Errno, error) {
	if s == "" {
		return 0, nil
	}
	for e, n := range errnoNames {
		if strings.EqualFold(n, s) {
			return e, nil
		}
	}
	var n int
	if _, err := fmt.Sscanf(s, "errno%d", &n); err == nil && n > 0 {
		return syscall.Errno(n), nil
	}
	return 0, fmt.Errorf("faultfs: unknown error %q (want EIO, ENOSPC, EROFS, EDQUOT, … or errnoN)", s)
}
