package main

import (
	"io"
	"log/slog"
	"testing"
)

// TestParseCmdline: the counter's offset is taken only as a multiple of
// 4096 (O_DIRECT), and the UEFI variable only with "on".
func TestParseCmdline(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	c := parseCmdline("console=ttyS0 tandem.disk=/dev/vda tandem.disk_offset=50331648 tandem.efivar=on tandem.rate=5", log)
	if c.disk != "/dev/vda" || c.diskOffset != 48<<20 || !c.efivar || c.rate != 5 {
		t.Fatalf("parsed %+v", c)
	}
	for _, bad := range []string{"tandem.disk_offset=1000", "tandem.disk_offset=-4096", "tandem.disk_offset=x", "tandem.efivar=yes"} {
		if c := parseCmdline(bad, log); c.diskOffset != 0 || c.efivar {
			t.Errorf("%q parsed as offset %d, efivar %v", bad, c.diskOffset, c.efivar)
		}
	}
}
