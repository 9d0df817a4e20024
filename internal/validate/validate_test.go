package validate

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode"
)

func TestNames(t *testing.T) {
	long := strings.Repeat("a", 300)
	cases := []struct {
		check func(string) error
		in    string
		msg   string // "" when valid
	}{
		{VolumeName, "v1", ""},
		{VolumeName, "web_data-0", ""},
		{VolumeName, strings.Repeat("a", 63), ""},
		{VolumeName, "", "volume name is empty"},
		{VolumeName, "a/b", `volume name "a/b" contains '/'`},
		{VolumeName, "../etc", `volume name "../etc" contains '/'`},
		{VolumeName, "a..b", `volume name "a..b" contains '..'`},
		{VolumeName, "..", `volume name ".." contains '..'`},
		{VolumeName, "a\x00b", `volume name "a\x00b" contains a NUL byte`},
		{VolumeName, "a\nb", `volume name "a\nb" contains a control character`},
		{VolumeName, long, `volume name "` + strings.Repeat("a", 40) + `"… is 300 characters; at most 63`},
		{VolumeName, "Web", `volume name "Web": use 1-63 lowercase letters, digits, '-' or '_', starting with a letter or digit`},
		{VolumeName, "-x", `volume name "-x" starts with '-'`},
		{VolumeName, "_x", `volume name "_x" starts with '_'`},
		{VolumeName, "é", `volume name "é": use 1-63`},
		{VMName, "a/b", `VM name "a/b" contains '/'`},
		{VMName, "web_1", ""},
		{NodeName, "n1", ""},
		{NodeName, "n_1", `node name "n_1": use 1-63 lowercase letters, digits and '-'`},
		{ClusterName, "prod", ""},
		{ClusterName, "", "cluster name is empty"},
	}
	for _, c := range cases {
		err := c.check(c.in)
		if c.msg == "" {
			if err != nil {
				t.Errorf("%q: %v, want valid", c.in, err)
			}
			continue
		}
		if !errors.Is(err, ErrInvalid) || !strings.Contains(Message(err), c.msg) {
			t.Errorf("%q: %v, want %q", c.in, err, c.msg)
		}
	}
}

func TestSizes(t *testing.T) {
	for n, msg := range map[int64]string{
		4096:          "",
		1 << 30:       "",
		MaxVolumeSize: "",
		0:             "size 0 B (0 bytes): must be a positive multiple of 4 KiB",
		-5 << 30:      "size -5 GiB (-5368709120 bytes): must be a positive multiple of 4 KiB",
		1000:          "size 1000 B (1000 bytes): must be a positive multiple of 4 KiB",
		65 << 40:      "size 65 TiB is over the 64 TiB limit",
		1 << 62:       "size 4 EiB is over the 64 TiB limit",
	} {
		err := VolumeSize(n)
		if (msg == "") != (err == nil) || (err != nil && Message(err) != msg) {
			t.Errorf("size %d: %v, want %q", n, err, msg)
		}
	}
}

func TestChecksum(t *testing.T) {
	for _, c := range []struct {
		off, length, block int64
		msg                string
	}{
		{0, 8 << 20, 64 << 10, ""},
		{1 << 30, 4096, 4096, ""},
		{0, 64 << 20, 64 << 20, ""},
		{0, 64 << 20, 1, "checksum block 1 bytes: must be a power of two from 4 KiB to 64 MiB"},
		{0, 4096, 0, "checksum block 0 bytes"},
		{0, 4096, 12288, "checksum block 12288 bytes"},
		{0, 4096, 128 << 20, "checksum block 134217728 bytes"},
		{-1, 4096, 4096, "checksum offset -1: must not be negative"},
		{0, 0, 4096, "checksum length 0 bytes: must be 1 byte to 64 MiB"},
		{0, 65 << 20, 4096, "checksum length 68157440 bytes"},
	} {
		err := Checksum(c.off, c.length, c.block)
		if (c.msg == "") != (err == nil) || (err != nil && !strings.Contains(Message(err), c.msg)) {
			t.Errorf("checksum %d+%d/%d: %v, want %q", c.off, c.length, c.block, err, c.msg)
		}
	}
}

func TestHostPath(t *testing.T) {
	for p, msg := range map[string]string{
		"/boot/vmlinuz":                 "",
		"vmlinuz":                       `kernel path "vmlinuz" must be absolute`,
		"/boot/../etc/shadow":           `must be clean (no '..', '//' or trailing '/'; "/etc/shadow")`,
		"/boot//vmlinuz":                "must be clean",
		"/boot/\x00":                    "contains a control character",
		"/" + strings.Repeat("a", 5000): "is 5001 bytes; at most 4096",
	} {
		err := HostPath("kernel", p)
		if (msg == "") != (err == nil) || (err != nil && !strings.Contains(Message(err), msg)) {
			t.Errorf("%q: %v, want %q", p, err, msg)
		}
	}
}

func TestRegularFile(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "k")
	if err := os.WriteFile(f, []byte("k"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := RegularFile("kernel", f); err != nil {
		t.Fatal(err)
	}
	if err := RegularFile("kernel", dir); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "is a directory") {
		t.Fatalf("directory: %v", err)
	}
	if err := RegularFile("kernel", filepath.Join(dir, "nope")); err == nil || errors.Is(err, ErrInvalid) || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
}

// FuzzName: whatever the input, a name the rules accept is one path
// element that stays in its directory, of the allowed characters, and a
// refusal's message shows no raw control character.
func FuzzName(f *testing.F) {
	for _, s := range []string{"v1", "web_data-0", "", "a/b", "..", "a\x00b", strings.Repeat("x", 300), "Web", "-x", "é", "a\u2028b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, check := range []func(string) error{VolumeName, VMName, NodeName, ClusterName} {
			err := check(s)
			if err != nil {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("%q: error %v does not wrap ErrInvalid", s, err)
				}
				if strings.ContainsFunc(Message(err), unicode.IsControl) {
					t.Fatalf("%q: message %q holds a control character", s, Message(err))
				}
				continue
			}
			if len(s) == 0 || len(s) > MaxNameLen || strings.ContainsAny(s, "/\\\x00.") || s[0] == '-' || s[0] == '_' {
				t.Fatalf("%q accepted", s)
			}
			for _, r := range s {
				if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
					t.Fatalf("%q accepted with %q", s, r)
				}
			}
			base := "/var/lib/tandem/volumes"
			if p := filepath.Join(base, s+".vol"); filepath.Dir(p) != base {
				t.Fatalf("%q leaves %s: %s", s, base, p)
			}
		}
	})
}
