package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"
)

// console shows the installer's and first boot's messages where a person
// looks: the installer's own terminal (w), every active system console (the
// screen and a serial console, e.g. IPMI SOL), a log file, and the journal
// (through log, which writes to stderr).
type console struct {
	mu    sync.Mutex
	w     io.Writer   // the terminal, or nil
	extra []io.Writer // other consoles
	file  io.Writer   // the log file, or nil
	log   *slog.Logger
}

var vtName = regexp.MustCompile(`^tty[0-9]+$`)

// openConsoles lists the kernel's active consoles (/sys/class/tty/console/
// active) as writers. skipVT leaves out virtual terminals, for when w is
// already the screen. A console that does not open is skipped: a message
// must never fail for want of a serial port.
func openConsoles(active string, skipVT bool) []io.Writer {
	b, err := os.ReadFile(active)
	if err != nil {
		return nil
	}
	var out []io.Writer
	for _, name := range strings.Fields(string(b)) {
		if skipVT && vtName.MatchString(name) {
			continue
		}
		out = append(out, ttyWriter(filepath.Join("/dev", name)))
	}
	return out
}

// ttyWriter opens its terminal for each write. A descriptor held open
// would be dead after a vhangup (a getty starting on the same serial
// port revokes it, and every later write fails with EIO), and the rest
// of the installation would be silent there.
type ttyWriter string

func (t ttyWriter) Write(p []byte) (int, error) {
	f, err := os.OpenFile(string(t), os.O_WRONLY|syscall.O_NOCTTY, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return f.Write(p)
}

// line writes one message everywhere, with a timestamp in the file.
func (c *console) line(level slog.Level, msg string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	text := strings.TrimRight(msg, "\n")
	for _, w := range append([]io.Writer{c.w}, c.extra...) {
		if w != nil {
			// Consoles may be in raw mode: end lines with CR LF.
			fmt.Fprint(w, strings.ReplaceAll(text, "\n", "\r\n")+"\r\n")
		}
	}
	if c.file != nil {
		fmt.Fprintf(c.file, "%s %s\n", time.Now().UTC().Format(time.RFC3339), text)
	}
	if c.log != nil {
		c.log.Log(context.Background(), level, text)
	}
}

func (c *console) Infof(format string, args ...any) {
	c.line(slog.LevelInfo, "tandem-install: "+fmt.Sprintf(format, args...))
}

func (c *console) Errorf(format string, args ...any) {
	c.line(slog.LevelError, "tandem-install: ERROR: "+fmt.Sprintf(format, args...))
}
