package validate

import (
	"fmt"
	"os"
	"path/filepath"
)

// RegularFile checks that the file at p, symbolic links resolved, is a
// regular file: not a directory, a device, a FIFO or a socket, which QEMU
// would hang on or read as a kernel. The error wraps ErrInvalid when the
// file is of the wrong type and the os error when it cannot be examined.
func RegularFile(what, p string) error {
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, p, err)
	}
	fi, err := os.Stat(real)
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, p, err)
	}
	if !fi.Mode().IsRegular() {
		kind := "not a regular file"
		switch m := fi.Mode(); {
		case m.IsDir():
			kind = "a directory"
		case m&os.ModeDevice != 0:
			kind = "a device"
		case m&os.ModeNamedPipe != 0:
			kind = "a FIFO"
		case m&os.ModeSocket != 0:
			kind = "a socket"
		}
		if real != p {
			return invalid("%s %s (-> %s) is %s, not a regular file", what, p, real, kind)
		}
		return invalid("%s %s is %s, not a regular file", what, p, kind)
	}
	return nil
}
