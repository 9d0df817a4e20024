package main

import (
	"encoding/json"
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"

	"github.com/tandemhci/tandem/internal/version"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// buildVersion is the CLI's version (set at link time, see internal/version)
// with the commit the Go toolchain recorded, and the daemon's when reached.
type buildVersion struct {
	Version  string         `json:"version"`
	Commit   string         `json:"commit"`
	Modified bool           `json:"modified"`
	Go       string         `json:"go"`
	Daemon   *daemonVersion `json:"daemon,omitempty"`
}

// daemonVersion is what the tandemd the CLI reached reports about itself.
type daemonVersion struct {
	Node    string `json:"node"`
	Version string `json:"version"`
}

func readBuildVersion() buildVersion {
	v := buildVersion{Version: version.String(), Go: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return v
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Commit = s.Value
		case "vcs.modified":
			v.Modified = s.Value == "true"
		}
	}
	return v
}

func newVersionCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the tandem CLI's version and, if it answers, tandemd's",
		Args:  argsNamed(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			v := readBuildVersion()
			// The CLI's own version must print even with no daemon around,
			// so a daemon that cannot be reached is a note, not a failure.
			dv, derr := a.daemonVersion(cmd)
			v.Daemon = dv
			if a.output == "json" {
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(v)
			}
			commit := v.Commit
			if commit == "" {
				commit = "unknown"
			}
			if v.Modified {
				commit += "+dirty"
			}
			if _, err := fmt.Fprintf(a.stdout, "tandem %s (commit %s, %s)\n", v.Version, commit, v.Go); err != nil {
				return err
			}
			if dv == nil {
				fmt.Fprintf(a.stderr, "tandem: tandemd not reached: %v\n", derr)
				return nil
			}
			_, err := fmt.Fprintf(a.stdout, "tandemd %s (node %s)\n", orUnknown(dv.Version), orDash(dv.Node))
			return err
		},
	}
}

// daemonVersion asks the daemon the global flags point at for its version.
func (a *app) daemonVersion(cmd *cobra.Command) (*daemonVersion, error) {
	c, err := a.dial(cmd, 0)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	st, err := c.Cluster.Status(cmd.Context(), &tandemv1.StatusRequest{})
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	return &daemonVersion{Node: st.GetAnsweredBy(), Version: st.GetVersion()}, nil
}

// orUnknown shows a daemon too old to report its version.
func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
