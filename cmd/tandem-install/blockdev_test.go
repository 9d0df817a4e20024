package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The test binary runs as the installer when this is set, so that
// TestRefusalsOnBlockDevices runs the real entry point as its own process.
const asInstallerEnv = "TANDEM_INSTALL_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(asInstallerEnv) == "1" {
		os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// loopDisk attaches a sparse file of size bytes as a loop block device and
// detaches it when the test ends.
func loopDisk(t *testing.T, size int64) string {
	t.Helper()
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skipf("no loop devices on this machine (%v): the refusals on files are checked by TestInstallRefusesBeforeWriting", err)
	}
	need(t, "losetup")
	out, err := exec.Command("losetup", "--find", "--show", sparse(t, size)).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup: %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", dev, err, out)
		}
	})
	return dev
}

// TestRefusalsOnBlockDevices runs the installer binary on real block
// devices with bad answers, as the live system's unit does: each refusal
// says so on the console, writes its exit code into the installer's log
// and leaves every disk as it was.
func TestRefusalsOnBlockDevices(t *testing.T) {
	need(t, "blkid", "sgdisk", "mkfs.ext4")
	withData := loopDisk(t, gib8)
	sh(t, "sgdisk", "-n", "1:0:+100M", withData)
	mounted := loopDisk(t, gib8)
	sh(t, "mkfs.ext4", "-q", "-F", mounted)
	mnt := t.TempDir()
	sh(t, "mount", mounted, mnt)
	t.Cleanup(func() { _ = exec.Command("umount", mnt).Run() })
	disks := []string{withData, mounted}
	before := map[string][32]byte{}
	for _, d := range disks {
		before[d] = digest(t, d)
	}

	for _, tc := range []struct {
		name, disk string
		wipe       bool
		code       int
		want       string
	}{
		{"missing disk", "/dev/tandem-test-no-such-disk", true, exitNoDisk, "no such disk"},
		{"data without wipe", withData, false, exitDiskInUse, "left untouched"},
		{"mounted disk", mounted, true, exitDiskBusy, "mounted on " + mnt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			answers := strings.Replace(goodJoin, "disk: /dev/vda", fmt.Sprintf("disk: %s\nwipe: %v", tc.disk, tc.wipe), 1)
			if err := os.WriteFile(filepath.Join(dir, "answer.yaml"), []byte(answers), 0o600); err != nil {
				t.Fatal(err)
			}
			logPath := filepath.Join(dir, "install.log")
			cmd := exec.Command(os.Args[0], "install", "-answers", filepath.Join(dir, "answer.yaml"),
				"-cmdline", os.DevNull, "-log", logPath, "-image", filepath.Join(dir, "no-image"),
				"-consoles", filepath.Join(dir, "no-consoles"))
			cmd.Env = append(os.Environ(), asInstallerEnv+"=1")
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != tc.code {
				t.Fatalf("installer: %v, want exit code %d\n%s%s", err, tc.code, stdout.String(), stderr.String())
			}
			screen := stdout.String()
			logText, _ := os.ReadFile(logPath)
			for what, text := range map[string]string{"console": screen, "log": string(logText)} {
				for _, want := range []string{tc.want, fmt.Sprintf("exit code %d", tc.code), "no disk was written to"} {
					if !strings.Contains(text, want) {
						t.Errorf("the %s does not say %q:\n%s", what, want, text)
					}
				}
			}
		})
	}
	for _, d := range disks {
		if digest(t, d) != before[d] {
			t.Errorf("%s was written to", d)
		}
	}
}
