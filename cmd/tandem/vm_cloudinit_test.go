package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"

	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

type createVMs struct {
	fakeVMs
	created []*tandemv1.CreateVMRequest
}

func (f *createVMs) Create(_ context.Context, req *tandemv1.CreateVMRequest) (*tandemv1.VMInfo, error) {
	f.created = append(f.created, req)
	return &tandemv1.VMInfo{Name: req.Name, State: "stopped", CloudInit: req.CloudInit != nil}, nil
}

func TestVMCreateCloudInit(t *testing.T) {
	vms := &createVMs{}
	dir, _ := startDaemonWith(t, func(s *grpc.Server) { tandemv1.RegisterVMServer(s, vms) })
	files := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(files, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	user := write("user-data.yaml", "#cloud-config\nhostname: web\n")
	netcfg := write("net.yaml", "version: 2\n")
	r := runCLI(t, "", "--data-dir", dir, "vm", "create", "web", "--disk", "1G", "--cloud-init", user, "--network-config", netcfg)
	r.wantCode(t, 0)
	if len(vms.created) != 1 {
		t.Fatalf("creates: %d", len(vms.created))
	}
	ci := vms.created[0].CloudInit
	if ci == nil || string(ci.UserData) != "#cloud-config\nhostname: web\n" || string(ci.NetworkConfig) != "version: 2\n" || ci.MetaData != nil {
		t.Fatalf("request's cloud-init: %+v", ci)
	}
	wantMatch(t, "stdout", r.stdout, `Cloud-init:\s+NoCloud seed attached`)

	// Bad input is refused before the daemon is asked.
	for name, c := range map[string]struct {
		args []string
		want string
	}{
		"missing":    {[]string{"--cloud-init", filepath.Join(files, "nosuch")}, "no such file"},
		"not yaml":   {[]string{"--cloud-init", write("bad.yaml", "#cloud-config\nusers: [\n")}, "not valid YAML"},
		"no header":  {[]string{"--cloud-init", write("plain.txt", "just some words [\n")}, "#cloud-config"},
		"too big":    {[]string{"--cloud-init", write("big.yaml", "#!/bin/sh\n"+strings.Repeat("#", 70<<10))}, "more than 65536"},
		"directory":  {[]string{"--cloud-init", files}, "not a regular file"},
		"meta alone": {[]string{"--meta-data", netcfg}, "go with --cloud-init"},
		"bad meta":   {[]string{"--cloud-init", user, "--meta-data", write("meta", "- a list\n")}, "meta-data"},
	} {
		r := runCLI(t, "", append([]string{"--data-dir", dir, "vm", "create", "bad", "--disk", "1G"}, c.args...)...)
		if r.code == 0 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("%s: exit %d, stderr %q; want %q", name, r.code, r.stderr, c.want)
		}
	}
	if len(vms.created) != 1 {
		t.Errorf("a refused create reached the daemon: %d creates", len(vms.created))
	}
}
