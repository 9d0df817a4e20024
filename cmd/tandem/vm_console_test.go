package main

import (
	"bytes"
	"testing"
)

func TestSplitEscape(t *testing.T) {
	for _, tc := range []struct {
		in   string
		data string
		esc  bool
	}{
		{"hello\n", "hello\n", false},
		{"ab\x1dcd", "ab", true},
		{"\x1d", "", true},
		{"\x03", "\x03", false}, // Ctrl-C goes to the guest
		{"", "", false},
	} {
		data, esc := splitEscape([]byte(tc.in))
		if !bytes.Equal(data, []byte(tc.data)) || esc != tc.esc {
			t.Errorf("splitEscape(%q) = %q, %v; want %q, %v", tc.in, data, esc, tc.data, tc.esc)
		}
	}
}
