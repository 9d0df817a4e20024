package deploy

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tandemhci/tandem/internal/config"
)

// yamlKeys lists the keys of a config struct as they appear in the file,
// nested ones with their section's indentation dropped.
func yamlKeys(t reflect.Type) []string {
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		tag := strings.Split(f.Tag.Get("yaml"), ",")[0]
		if tag == "" || tag == "-" {
			continue
		}
		out = append(out, tag)
		if f.Type.Kind() == reflect.Struct {
			out = append(out, yamlKeys(f.Type)...)
		}
	}
	return out
}

// TestSampleConfigNamesEveryKey: the sample shipped as
// /usr/share/doc/tandem/examples/tandem.yaml documents every key tandemd
// reads, commented out, and is itself a valid (empty) configuration.
func TestSampleConfigNamesEveryKey(t *testing.T) {
	b, err := os.ReadFile("tandem.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range yamlKeys(reflect.TypeOf(config.Config{})) {
		if !regexp.MustCompile(`(?m)^#\s*` + regexp.QuoteMeta(k) + `:`).Match(b) {
			t.Errorf("the sample does not name %q", k)
		}
	}
	if _, err := config.Decode(b); err != nil {
		t.Errorf("the sample as shipped does not decode: %v", err)
	}
	// Uncommented, the top-level keys decode too (the sample's own syntax
	// is right); placeholders like <backend host> are left to validation.
	var plain []string
	for _, l := range strings.Split(string(b), "\n") {
		if m := regexp.MustCompile(`^#([a-z_]+:.*)$`).FindStringSubmatch(l); m != nil && !strings.Contains(l, "<") {
			plain = append(plain, m[1])
		}
	}
	if _, err := config.Decode([]byte(strings.Join(plain, "\n"))); err != nil {
		t.Errorf("the sample's keys, uncommented, do not decode: %v\n%s", err, strings.Join(plain, "\n"))
	}
}

func moduleRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// TestDebianPackage builds the package as 'make deb' does and checks what
// an operator gets: the version, the files, a unit systemd accepts, man
// pages and completion for every command, and no lintian complaint.
func TestDebianPackage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds hardened binaries and runs lintian")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	out := t.TempDir()
	cmd := exec.CommandContext(ctx, "make", "-s", "deb", "DEB_OUT="+out, "VERSION=v1.2.3-4-gabcdef")
	cmd.Dir = moduleRoot(t)
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make deb: %v\n%s", err, b)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if regexp.MustCompile(`^[EWI]: tandem`).MatchString(l) {
			t.Errorf("lintian: %s", l)
		}
	}
	deb := filepath.Join(out, "tandem_1.2.3+4+gabcdef_amd64.deb")
	run := func(name string, args ...string) string {
		t.Helper()
		b, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, b)
		}
		return string(b)
	}
	if v := strings.TrimSpace(run("dpkg-deb", "-f", deb, "Version")); v != "1.2.3+4+gabcdef" {
		t.Errorf("version %q", v)
	}
	contents := run("dpkg-deb", "-c", deb)
	for _, f := range []string{
		"./usr/bin/tandemd", "./usr/bin/tandem", "./lib/systemd/system/tandemd.service",
		"./usr/share/doc/tandem/examples/tandem.yaml", "./usr/share/doc/tandem/examples/libvirtd-tls.conf",
		"./usr/share/doc/tandem/examples/qemu-migrate-tls.conf", "./usr/share/doc/tandem/copyright",
		"./usr/share/man/man1/tandem.1.gz", "./usr/share/man/man1/tandem-volume-create.1.gz", "./usr/share/man/man8/tandemd.8.gz",
		"./usr/share/bash-completion/completions/tandem", "./usr/share/zsh/vendor-completions/_tandem",
	} {
		if !strings.Contains(contents, " "+f+"\n") {
			t.Errorf("the package lacks %s", f)
		}
	}
	root := t.TempDir()
	run("dpkg-deb", "-x", deb, root)
	if v := run(filepath.Join(root, "usr/bin/tandemd"), "--version"); !strings.Contains(v, "v1.2.3-4-gabcdef") {
		t.Errorf("tandemd --version: %q", v)
	}
	if v := run(filepath.Join(root, "usr/bin/tandem"), "version", "--data-dir", t.TempDir()); !strings.Contains(v, "v1.2.3-4-gabcdef") {
		t.Errorf("tandem version: %q", v)
	}
	// systemd checks the unit's directives; ExecStart points at the
	// extracted binary since this machine has no /usr/bin/tandemd.
	unit, err := os.ReadFile(filepath.Join(root, "lib/systemd/system/tandemd.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Type=notify", "WatchdogSec=", "Restart=on-failure", "KillMode=process", "ConditionPathExists=/etc/tandem/tandem.yaml", "After=network-online.target libvirtd.service"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("the unit lacks %q", want)
		}
	}
	check := filepath.Join(t.TempDir(), "tandemd.service")
	fixed := strings.Replace(string(unit), "ExecStart=/usr/bin/tandemd", "ExecStart="+filepath.Join(root, "usr/bin/tandemd"), 1)
	if err := os.WriteFile(check, []byte(fixed), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.CommandContext(ctx, "systemd-analyze", "verify", "--man=no", check).CombinedOutput(); err != nil {
		t.Errorf("systemd-analyze verify: %v\n%s", err, b)
	}
	// A man page for every command the CLI has.
	pages, _ := filepath.Glob(filepath.Join(root, "usr/share/man/man1/*.1.gz"))
	if len(pages) < 40 {
		t.Errorf("%d man pages, want one per command (40 or more)", len(pages))
	}
}
