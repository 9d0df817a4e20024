package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// The UEFI variable the agent keeps (tandem.efivar=on): made once with a
// random value, then only read. A restart that still reads the same value
// shows the firmware's variable store (NVRAM) followed the VM.
const (
	efivarsDir = "/sys/firmware/efi/efivars"
	efiVarName = "TandemTest-7d0a8d5a-5b34-4c8e-9f3e-2a7b1c9d4e61"
	// Non-volatile, boot service and runtime access.
	efiVarAttrs = 0x7
)

// efiVar reads the variable, or makes it, and publishes its value for the
// heartbeats.
func (a *agent) efiVar(context.Context) error {
	if _, err := os.Stat("/sys/firmware/efi"); err != nil {
		a.log.Info("no UEFI firmware: no variable to keep", "err", err)
		return nil
	}
	if err := unix.Mount("efivarfs", efivarsDir, "efivarfs", 0, ""); err != nil && err != unix.EBUSY {
		return fmt.Errorf("mount efivarfs: %w", err)
	}
	path := efivarsDir + "/" + efiVarName
	b, err := os.ReadFile(path)
	switch {
	case err == nil && len(b) > 4:
		v := string(b[4:])
		a.efiValue.Store(&v)
		a.log.Info("UEFI variable read", "name", efiVarName, "value", v)
		return nil
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("read %s: %w", path, err)
	}
	raw := make([]byte, 8)
	if _, err := rand.Read(raw); err != nil {
		return fmt.Errorf("random value: %w", err)
	}
	v := hex.EncodeToString(raw)
	// efivarfs takes the attributes and the data in one write.
	buf := append(binary.LittleEndian.AppendUint32(nil, efiVarAttrs), v...)
	if err := os.WriteFile(path, buf, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	a.efiValue.Store(&v)
	a.log.Info("UEFI variable made", "name", efiVarName, "value", v)
	return nil
}
