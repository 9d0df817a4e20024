package guest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// isoOf builds an ISO of files with xorriso (extra are its options).
func isoOf(t testing.TB, files map[string]string, extra ...string) []byte {
	t.Helper()
	if _, err := exec.LookPath("xorriso"); err != nil {
		t.Skip("xorriso not installed")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	for n, c := range files {
		if err := os.WriteFile(filepath.Join(src, n), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(dir, "x.iso")
	args := append([]string{"-as", "mkisofs", "-quiet", "-V", "cidata", "-o", out}, extra...)
	if b, err := exec.Command("xorriso", append(args, src)...).CombinedOutput(); err != nil {
		t.Fatalf("xorriso: %v\n%s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestReadISOFile(t *testing.T) {
	files := map[string]string{"user-data": "#cloud-config\ntandem_test_value: v1\n", "meta-data": "instance-id: x\n"}
	// Joliet names, and the primary tree's names when there is no Joliet
	// (with -untranslated-filenames the plain ISO 9660 names are kept).
	for name, opts := range map[string][]string{"joliet": {"-J", "-r"}, "primary": {"-untranslated-filenames"}} {
		iso := bytes.NewReader(isoOf(t, files, opts...))
		if l, err := ISOLabel(iso); err != nil || l != "cidata" {
			t.Fatalf("%s: label %q, %v", name, l, err)
		}
		for f, want := range files {
			got, err := ReadISOFile(iso, f, 1<<16)
			if err != nil || string(got) != want {
				t.Errorf("%s: %s: %q, %v", name, f, got, err)
			}
		}
		if _, err := ReadISOFile(iso, "user-data", 4); err == nil {
			t.Errorf("%s: a file over the bound was read", name)
		}
	}
	if _, err := ISOLabel(bytes.NewReader(make([]byte, 64<<10))); err == nil {
		t.Error("zeros taken for an ISO")
	}
}

// FuzzReadISOFile: whatever the device holds, the reader returns an error
// or a file, and never panics (it runs as the guest's PID 1).
func FuzzReadISOFile(f *testing.F) {
	f.Add(make([]byte, 40<<10))
	if _, err := exec.LookPath("xorriso"); err == nil {
		f.Add(isoOf(f, map[string]string{"user-data": "#cloud-config\n"}, "-J", "-r"))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		_, _ = ISOLabel(r)
		_, _ = ReadISOFile(r, "user-data", 1<<16)
	})
}
