package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"testing"

	"golang.org/x/sys/unix"

	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// openPTY returns a pseudo-terminal pair, or skips where there is none.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no pty: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Skipf("unlock pty: %v", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Skipf("pty number: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("open pty slave: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return m, s
}

func TestExpectedVotesTypedConfirmation(t *testing.T) {
	for _, tt := range []struct {
		typed string
		code  int
		calls int
	}{
		{typed: "yes\n", code: 0, calls: 1},
		{typed: "y\n", code: 1, calls: 0},
	} {
		t.Run(tt.typed[:len(tt.typed)-1], func(t *testing.T) {
			dir, f := startDaemon(t)
			master, slave := openPTY(t)
			if !isTerminal(slave) {
				t.Fatal("pty slave is not a terminal")
			}
			if _, err := master.WriteString(tt.typed); err != nil {
				t.Fatal(err)
			}
			var out, errb bytes.Buffer
			code := execute(context.Background(), []string{"--data-dir", dir, "cluster", "expected-votes", "2"}, slave, &out, &errb)
			if code != tt.code {
				t.Fatalf("exit %d, want %d; stderr:\n%s", code, tt.code, errb.String())
			}
			wantMatch(t, "stderr", errb.String(), `SPLIT BRAIN`, `Type "yes" to continue: `)
			calls := f.recorded()
			if len(calls) != tt.calls {
				t.Fatalf("%d calls, want %d", len(calls), tt.calls)
			}
			if tt.calls == 1 && !calls[0].req.(*tandemv1.SetExpectedVotesRequest).GetConfirm() {
				t.Error("confirm not set")
			}
			if tt.code != 0 {
				wantMatch(t, "stderr", errb.String(), `tandem: aborted: expected votes not changed`)
			}
		})
	}
}

// TestNodeRemoveTypedConfirmation: on a terminal, node remove asks for the
// node's name; --yes skips the question.
func TestNodeRemoveTypedConfirmation(t *testing.T) {
	for _, tt := range []struct {
		name, typed string
		yes         bool
		code, calls int
	}{
		{name: "right name", typed: "node-c\n", code: 0, calls: 1},
		{name: "wrong name", typed: "yes\n", code: 1, calls: 0},
		{name: "yes flag", yes: true, code: 0, calls: 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir, f := startDaemon(t)
			master, slave := openPTY(t)
			if tt.typed != "" {
				if _, err := master.WriteString(tt.typed); err != nil {
					t.Fatal(err)
				}
			}
			args := []string{"--data-dir", dir, "node", "remove", "node-c"}
			if tt.yes {
				args = append(args, "--yes")
			}
			var out, errb bytes.Buffer
			code := execute(context.Background(), args, slave, &out, &errb)
			if code != tt.code {
				t.Fatalf("exit %d, want %d; stderr:\n%s", code, tt.code, errb.String())
			}
			if got := len(f.recorded()); got != tt.calls {
				t.Fatalf("%d calls, want %d", got, tt.calls)
			}
			if tt.yes {
				if errb.Len() != 0 {
					t.Errorf("--yes still asked:\n%s", errb.String())
				}
				return
			}
			wantMatch(t, "stderr", errb.String(), `Type the node name \(node-c\) to continue: `)
			if tt.code != 0 {
				wantMatch(t, "stderr", errb.String(), `tandem: node node-c not removed: aborted: typed "yes", not "node-c"`)
			}
		})
	}
}

// TestIsTerminal: a pty is a terminal; a pipe, a regular file and a buffer
// are not, so confirmation prompts never block a script.
func TestIsTerminal(t *testing.T) {
	_, slave := openPTY(t)
	if !isTerminal(slave) {
		t.Error("pty slave: not a terminal")
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	f, err := os.Create(t.TempDir() + "/f")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for name, in := range map[string]io.Reader{"pipe": r, "file": f, "buffer": &bytes.Buffer{}} {
		if isTerminal(in) {
			t.Errorf("%s: reported as a terminal", name)
		}
	}
}
