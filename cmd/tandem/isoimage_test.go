package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestImageNameOf(t *testing.T) {
	for in, want := range map[string]string{
		"/tmp/debian-12.8.0-amd64-netinst.iso": "debian-12-8-0-amd64-netinst",
		"Win2022.ISO":                          "win2022",
		"_odd name.iso":                        "odd-name",
	} {
		if got := imageNameOf(in); got != want {
			t.Errorf("imageNameOf(%q) = %q, want %q", in, got, want)
		}
	}
}

// A file that is not ISO 9660, or no regular file, is refused before any
// connection (exit 2, no daemon needed), naming the problem.
func TestImageUploadRefusesNonISO(t *testing.T) {
	clearEnv(t)
	dir := t.TempDir()
	notISO := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(notISO, make([]byte, 64<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	short := filepath.Join(dir, "short.iso")
	if err := os.WriteFile(short, []byte("CD001"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"image", "upload", notISO}, `not an ISO 9660 image \(no "CD001" signature at byte 32769\)`},
		{[]string{"image", "upload", short}, `not an ISO 9660 image`},
		{[]string{"image", "upload", filepath.Join(dir, "missing.iso")}, `missing.iso`},
		{[]string{"image", "upload", dir}, `not a regular file|directory`},
		{[]string{"image", "upload", notISO, "--name", "Bad/Name"}, `image name`},
		{[]string{"vm", "cdrom", "web", "insert"}, `insert needs an IMAGE`},
		{[]string{"vm", "cdrom", "web", "open"}, `usage: tandem vm cdrom VM insert IMAGE`},
	} {
		r := runCLI(t, "", append(tc.args, "--data-dir", dir)...)
		if r.code == 0 {
			t.Errorf("%v: exit 0", tc.args)
			continue
		}
		wantMatch(t, "stderr of "+tc.args[2], r.stderr, tc.want)
	}
}
