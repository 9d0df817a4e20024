package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// scriptedTandemd answers the first boot's calls from a script, standing in
// for the local tandemd (the part under test is the retry loop).
type scriptedTandemd struct {
	status []error // errors of successive Status calls (nil: answer)
	joins  []error // results of successive Join calls
	joined bool
	tokens []string
}

func (s *scriptedTandemd) Status(context.Context) (*tandemv1.ClusterStatus, error) {
	if len(s.status) > 0 {
		err := s.status[0]
		s.status = s.status[1:]
		if err != nil {
			return nil, err
		}
	}
	return &tandemv1.ClusterStatus{Initialized: s.joined, ClusterName: "lab", Voters: 3, VotesOnline: 3}, nil
}

func (s *scriptedTandemd) Create(context.Context, string) error {
	return errors.New("unexpected create")
}

func (s *scriptedTandemd) Join(_ context.Context, _, token string) error {
	s.tokens = append(s.tokens, token)
	err := s.joins[0]
	s.joins = s.joins[1:]
	s.joined = err == nil
	return err
}

func TestFirstbootRetriesVisiblyUntilJoined(t *testing.T) {
	path := filepath.Join(t.TempDir(), "firstboot.yaml")
	write := func(token string) {
		if err := os.WriteFile(path, []byte("join: 10.99.0.11:7400\ntoken: "+token+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("old")
	api := &scriptedTandemd{
		status: []error{status.Error(codes.Unavailable, "connection refused")},
		joins: []error{
			status.Error(codes.Unavailable, "dial tcp 10.99.0.11:7400: connect: no route to host"),
			status.Error(codes.PermissionDenied, "join token is invalid or used"),
			nil,
		},
	}
	var screen bytes.Buffer
	con := &console{w: &screen}
	var delays []time.Duration
	sleep := func(_ context.Context, d time.Duration) error {
		delays = append(delays, d)
		if len(delays) == 3 {
			write("new") // the operator fixes the token; no restart needed
		}
		return nil
	}
	afterRan := false
	if err := firstboot(context.Background(), con, path, api, sleep, func(context.Context, *tandemv1.ClusterStatus) { afterRan = true }); err != nil {
		t.Fatal(err)
	}
	out := screen.String()
	for _, want := range []string{
		"tandemd does not answer",
		"cannot reach the cluster member at 10.99.0.11:7400", "Check the backend network",
		"refused the join token", "tandem cluster token",
		`member of cluster "lab"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the console does not say %q:\n%s", want, out)
		}
	}
	if want := []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second}; len(delays) != 3 || delays[0] != want[0] || delays[1] != want[1] || delays[2] != want[2] {
		t.Errorf("backoff %v, want %v", delays, want)
	}
	if strings.Join(api.tokens, ",") != "old,old,new" {
		t.Errorf("tokens tried: %v", api.tokens)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the file with the used token is still there")
	}
	if !afterRan {
		t.Errorf("libvirtd's TLS was not turned on after joining")
	}
	// The backoff is capped.
	d := firstDelay
	for range 20 {
		d = min(2*d, maxDelay)
	}
	if d != maxDelay {
		t.Errorf("cap %s", d)
	}
}

func TestFirstbootStopsWithContext(t *testing.T) {
	path := filepath.Join(t.TempDir(), "firstboot.yaml")
	if err := os.WriteFile(path, []byte("join: 10.99.0.11:7400\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var screen bytes.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	sleep := func(ctx context.Context, d time.Duration) error { cancel(); return ctx.Err() }
	err := firstboot(ctx, &console{w: &screen}, path, &scriptedTandemd{}, sleep, nil)
	if !errors.Is(err, context.Canceled) || !strings.Contains(screen.String(), "no token") {
		t.Errorf("%v\n%s", err, screen.String())
	}
}

func TestInteractive(t *testing.T) {
	need(t, "blkid")
	blank := sparse(t, gib8)
	withData := sparse(t, gib8)
	if err := os.WriteFile(withData, []byte("x"), 0o644); err != nil { // truncates: re-extend
		t.Fatal(err)
	}
	if err := os.Truncate(withData, gib8); err != nil {
		t.Fatal(err)
	}
	f, _ := os.OpenFile(withData, os.O_WRONLY, 0)
	_, _ = f.WriteAt([]byte{0x55, 0xaa}, 510)
	f.Close()
	disks := []diskInfo{{Path: withData, Size: gib8}, {Path: blank, Size: gib8}}
	nics := []nicInfo{{Name: "eno1", MAC: "52:54:00:00:00:01"}, {Name: "eno2", MAC: "52:54:00:00:00:02", Carrier: true}}
	input := strings.Join([]string{
		"1", "", // the disk with data: Enter picks another
		"2",           // the blank one
		"Bad_Name",    // refused
		"node7",       //
		"",            // backend NIC: default, the one with link (eno2)
		"10.0.0.7",    // refused: no prefix length
		"10.0.0.7/24", //
		"10.0.0.1",    // gateway
		"",            // no DNS
		"1",           // VM uplink eno1
		"join", "10.0.0.5", "tok",
		"pw", "pw", // password twice (no terminal: plain lines)
		"",    // no SSH key
		"yes", //
	}, "\n") + "\n"
	var out bytes.Buffer
	pr := &prompter{ctx: context.Background(), in: bufio.NewReader(strings.NewReader(input)), out: &out}
	a, err := pr.interactive(disks, nics, &installer{})
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	p, err := a.plan()
	if err != nil {
		t.Fatal(err)
	}
	if p.Disk != blank || p.Wipe || p.Hostname != "node7" || p.NIC != "eno2" || p.VMNIC != "eno1" || p.Backend.String() != "10.0.0.7/24" ||
		p.JoinAddr != "10.0.0.5:7400" || p.Token != "tok" || p.Password != "pw" {
		t.Errorf("%+v", p)
	}
	for _, want := range []string{"MBR partition table", "has no netmask", "Summary:"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the prompts do not say %q:\n%s", want, out.String())
		}
	}
	// Anything but "yes" at the end cancels, with its own exit code.
	pr = &prompter{ctx: context.Background(), in: bufio.NewReader(strings.NewReader(strings.Replace(input, "yes\n", "no\n", 1))), out: &out}
	if _, err := pr.interactive(disks, nics, &installer{}); exitCode(err) != exitCancelled {
		t.Errorf("cancel: %v", err)
	}
}

// TestConsoleReopensEachWrite: a console is opened for every message, so
// one revoked under the installer (a getty's vhangup of the serial port,
// here a replaced file) still gets the messages that follow.
func TestConsoleReopensEachWrite(t *testing.T) {
	dir := t.TempDir()
	tty := filepath.Join(dir, "ttyS0")
	if err := os.WriteFile(tty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel("/dev", tty)
	if err != nil {
		t.Fatal(err)
	}
	active := filepath.Join(dir, "active")
	if err := os.WriteFile(active, []byte("tty0 "+rel+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	extra := openConsoles(active, true)
	if len(extra) != 1 {
		t.Fatalf("openConsoles skipping VTs: %v", extra)
	}
	con := &console{extra: extra}
	con.Infof("first")
	if err := os.Remove(tty); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	con.Infof("second")
	b, err := os.ReadFile(tty)
	if err != nil || !strings.Contains(string(b), "second") || strings.Contains(string(b), "first") {
		t.Fatalf("the console after it was replaced holds %q (%v)", b, err)
	}
}
