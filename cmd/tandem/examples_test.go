package main

import (
	"io"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// TestEveryCommandHasExamples: every command that does something shows
// how to use it in its help.
func TestEveryCommandHasExamples(t *testing.T) {
	root := newRootCmd(io.Discard, io.Discard)
	walk(root, func(c *cobra.Command) {
		if !c.Runnable() || c.HasSubCommands() || c.Hidden || c.Name() == "help" || strings.HasPrefix(c.CommandPath(), "tandem completion") {
			return
		}
		if strings.TrimSpace(c.Example) == "" {
			t.Errorf("%q has no Examples", c.CommandPath())
		} else if !strings.Contains(c.Example, "tandem ") {
			t.Errorf("%q: examples do not show a tandem command: %q", c.CommandPath(), c.Example)
		}
	})
	r := runCLI(t, "", "volume", "create", "--help")
	r.wantCode(t, 0)
	wantMatch(t, "help", r.stdout, `Examples:\n  tandem volume create web-disk --size 20G`)
}
