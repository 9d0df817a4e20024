package main

import (
	"io"
	"os"

	"golang.org/x/term"
)

// isTerminal reports whether r is an interactive terminal. Only an *os.File
// can be one: a test's bytes.Buffer never asks for a typed confirmation.
func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
