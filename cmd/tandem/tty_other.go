//go:build !linux

package main

import (
	"io"
	"os"
)

// isTerminal reports whether r looks like an interactive terminal. Off Linux
// a character device is close enough: confirmation still needs a typed "yes".
func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
