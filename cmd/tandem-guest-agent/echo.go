package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// echoPrefix starts the answer to each line read on the serial port.
const echoPrefix = "echo: "

// serialEcho answers each line read on the serial port (ttyS0) with
// "echo: <line>", so a test can drive the interactive console (tandem vm
// console) both ways. It only reads the port and writes short replies; the
// counter and heartbeat loops never wait for it.
func (a *agent) serialEcho(ctx context.Context) error {
	f, err := os.OpenFile("/dev/ttyS0", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return fmt.Errorf("serial port: %w", err)
	}
	defer f.Close()
	// Line mode without the tty's own echo: the reply is the only answer,
	// and CR from a terminal ends a line like LF.
	if t, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); err == nil {
		t.Lflag &^= unix.ECHO | unix.ECHOE | unix.ECHOK | unix.ECHONL
		t.Lflag |= unix.ICANON
		t.Iflag |= unix.ICRNL
		if err := unix.IoctlSetTermios(int(f.Fd()), unix.TCSETS, t); err != nil {
			a.log.Warn("serial port: cannot turn its echo off", "err", err)
		}
	}
	a.log.Info("serial echo ready", "port", "/dev/ttyS0")
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if _, err := fmt.Fprintf(f, "\r\n%s%s\r\n", echoPrefix, line); err != nil {
			return fmt.Errorf("serial port: %w", err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("serial port: %w", err)
	}
	return fmt.Errorf("serial port: end of input")
}
