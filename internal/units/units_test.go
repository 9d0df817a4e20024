package units

import (
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want int64
	}{
		{"512", 512},
		{"512B", 512},
		{"1K", 1024},
		{"1k", 1024},
		{"4KiB", 4096},
		{"4Ki", 4096},
		{"64M", 64 << 20},
		{"64mib", 64 << 20},
		{"20G", 20 << 30},
		{"20 GiB", 20 << 30},
		{" 2T ", 2 << 40},
		{"1TiB", 1 << 40},
		{"1.5G", 3 << 29},
		{"0.5K", 512},
		{"2.25M", 2359296},
		{"8388607T", 8388607 << 40},
		{"9223372036854775807", 1<<63 - 1},
	} {
		got, err := ParseSize(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
	for _, tt := range []struct{ in, want string }{
		{"", "empty"},
		{"0", "zero"},
		{"0G", "zero"},
		{"0.0K", "zero"},
		{"-1G", `size "-1G" is negative`},
		{"-5", "negative"},
		{"1.5", "whole number of bytes"},
		{"1.1K", "whole number of bytes"},
		{"0.3", "whole number of bytes"},
		{"8388608T", "too large"},
		{"9223372036854775808", "too large"},
		{"99999999999999999999999G", "too large"},
		{"10GB", `size "10GB": unit "GB" is ambiguous`},
		{"10kb", "ambiguous"},
		{"10P", "unknown unit"},
		{"10X", "unknown unit"},
		{"1e9", "unknown unit"},
		{"0x10", "unknown unit"},
		{"G", "not a number"},
		{".5G", "not a number"},
		{"1.G", "not a number"},
		{"1.2.3G", "not a number"},
		{"+5G", "not a number"},
		{"ten", "not a number"},
	} {
		got, err := ParseSize(tt.in)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseSize(%q) = %d, %v; want an error saying %q", tt.in, got, err, tt.want)
		}
	}
}

func TestFormatBytes(t *testing.T) {
	for in, want := range map[int64]string{
		0: "0 B", 1023: "1023 B", 1024: "1 KiB", 1536: "1.5 KiB", 20 << 30: "20 GiB",
		3 << 39: "1.5 TiB", 1<<63 - 1: "8 EiB",
	} {
		if got := FormatBytes(in); got != want {
			t.Errorf("FormatBytes(%d) = %q, want %q", in, got, want)
		}
	}
}

func TestParseRate(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want int64
	}{
		{"0", 0},
		{"0/s", 0},
		{"0B/s", 0},
		{"104857600", 100 << 20},
		{"100M", 100 << 20},
		{"100MiB/s", 100 << 20},
		{"100 mib/S", 100 << 20},
		{"100M/s", 100 << 20},
		{"64K", MinRate},
		{"65536", MinRate},
		{"1.5G/s", 3 << 29},
		{" 1T ", 1 << 40},
	} {
		got, err := ParseRate(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseRate(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
	for _, tt := range []struct{ in, want string }{
		{"", "empty"},
		{"abc", `rate "abc" is not a number`},
		{"-5", `rate "-5" is negative`},
		{"-100M/s", "negative"},
		{"100", "below the minimum of 64 KiB/s"},
		{"65535", "below the minimum"},
		{"63K/s", "63 KiB/s, below"},
		{"100MB/s", `rate "100MB/s": unit "MB" is ambiguous`},
		{"100M/min", "unknown unit"},
		{"100M/s/s", "unknown unit"},
		{"1.5", "whole number of bytes"},
		{"99999999T", "too large"},
	} {
		got, err := ParseRate(tt.in)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseRate(%q) = %d, %v; want an error saying %q", tt.in, got, err, tt.want)
		}
	}
}

func TestFormatRate(t *testing.T) {
	for in, want := range map[int64]string{
		0: "0", MinRate: "64KiB/s", 100 << 20: "100MiB/s", 3 << 29: "1536MiB/s", 1 << 40: "1TiB/s",
		1536 << 10: "1536KiB/s", 100000: "100000B/s",
	} {
		got := FormatRate(in)
		if got != want {
			t.Errorf("FormatRate(%d) = %q, want %q", in, got, want)
		}
		if back, err := ParseRate(got); err != nil || back != in {
			t.Errorf("ParseRate(FormatRate(%d) = %q) = %d, %v", in, got, back, err)
		}
	}
}
