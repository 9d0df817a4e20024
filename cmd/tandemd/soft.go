package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/tandemhci/tandem/consensus"
)

// dragonboat reads its soft settings (queue lengths, pending-proposal
// shards) only from a file in the working directory, when its package
// initialises: before main runs. So tandemd starts, writes the file into a
// new temporary directory and executes itself again there (the same PID,
// so systemd and the test harness keep tracking it); the new image reads
// the file, goes back to the directory it was started in, and removes the
// temporary one. A failure to re-execute is not fatal: tandemd then runs
// with dragonboat's defaults, which cost more memory and CPU per volume.
//
// dragonboat logs each setting it reads, to stderr, before tandemd's
// logger exists. Those lines would precede every one-line startup error,
// so the re-executed image starts with stderr on a file in the temporary
// directory and the real stderr kept on another descriptor; main puts it
// back and passes on whatever else was written there.

// softEnv carries the original working directory into the re-executed
// image, and marks it as such; softStderrEnv the descriptor of the real
// stderr.
const (
	softEnv       = "TANDEMD_SOFT_SETTINGS_FROM"
	softStderrEnv = "TANDEMD_SOFT_SETTINGS_STDERR"
	softInitLog   = "init.log"
)

// softDirPrefix names the temporary directory, so that the re-executed
// image removes only a directory it made.
const softDirPrefix = "tandemd-soft-"

// withSoftSettings is the first thing main does. In the original image it
// re-executes tandemd and does not return unless that failed; in the
// re-executed one it restores the working directory. The returned message,
// if any, is for the log once there is one.
func withSoftSettings() string {
	if orig, ok := os.LookupEnv(softEnv); ok {
		os.Unsetenv(softEnv)
		tmp, _ := os.Getwd()
		var initOut []byte
		if fd, err := strconv.Atoi(os.Getenv(softStderrEnv)); err == nil && fd > 2 {
			os.Unsetenv(softStderrEnv)
			if syscall.Dup2(fd, 2) == nil {
				syscall.Close(fd)
				initOut, _ = os.ReadFile(filepath.Join(tmp, softInitLog))
			}
		}
		applied := 0
		for _, l := range strings.SplitAfter(string(initOut), "\n") {
			switch {
			case strings.Contains(l, "settings: Setting "):
				applied++
			case l != "":
				os.Stderr.WriteString(l)
			}
		}
		if strings.HasPrefix(filepath.Base(tmp), softDirPrefix) {
			os.RemoveAll(tmp)
		}
		if err := os.Chdir(orig); err != nil {
			return fmt.Sprintf("dragonboat soft settings: back to %s: %v", orig, err)
		}
		if want := softSettingsCount(); applied != want {
			return fmt.Sprintf("dragonboat applied %d of tandemd's %d soft settings (more memory and CPU per volume)", applied, want)
		}
		return ""
	}
	err := reexecSoft()
	return fmt.Sprintf("running with dragonboat's default soft settings (more memory and CPU per volume): %v", err)
}

// reexecSoft executes tandemd again in a directory holding
// consensus.SoftSettingsFile; it returns only on failure.
func reexecSoft() error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own executable: %w", err)
	}
	orig, err := os.Getwd()
	if err != nil {
		return fmt.Errorf("working directory: %w", err)
	}
	dir, err := os.MkdirTemp("", softDirPrefix)
	if err != nil {
		return fmt.Errorf("temporary directory: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, consensus.SoftSettingsFile), consensus.SoftSettings(), 0o600); err != nil {
		os.RemoveAll(dir)
		return fmt.Errorf("write %s: %w", consensus.SoftSettingsFile, err)
	}
	initLog, err := os.Create(filepath.Join(dir, softInitLog))
	if err != nil {
		os.RemoveAll(dir)
		return fmt.Errorf("create %s: %w", softInitLog, err)
	}
	defer initLog.Close()
	// The real stderr on a new descriptor, which exec keeps (syscall.Dup
	// does not set close-on-exec); stderr on the file until main.
	stderr, err := syscall.Dup(2)
	if err != nil {
		os.RemoveAll(dir)
		return fmt.Errorf("keep stderr: %w", err)
	}
	if err := os.Chdir(dir); err != nil {
		syscall.Close(stderr)
		os.RemoveAll(dir)
		return fmt.Errorf("enter %s: %w", dir, err)
	}
	env := append(os.Environ(), softEnv+"="+orig, softStderrEnv+"="+strconv.Itoa(stderr))
	if err = syscall.Dup2(int(initLog.Fd()), 2); err == nil {
		err = syscall.Exec(self, os.Args, env)
		// Still here: undo.
		_ = syscall.Dup2(stderr, 2)
	}
	syscall.Close(stderr)
	_ = os.Chdir(orig)
	os.RemoveAll(dir)
	return fmt.Errorf("re-execute %s: %w", self, err)
}

// softSettingsCount is how many settings consensus.SoftSettings changes,
// each of which dragonboat logs as it applies it.
func softSettingsCount() int {
	var m map[string]any
	if err := json.Unmarshal(consensus.SoftSettings(), &m); err != nil {
		return -1
	}
	return len(m)
}
