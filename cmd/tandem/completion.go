package main

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tandemhci/tandem/internal/adminclient"
	"github.com/tandemhci/tandem/internal/settings"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// completeTimeout bounds the daemon call behind one completion: a shell
// waiting on TAB must not hang on an unreachable node.
const completeTimeout = 3 * time.Second

// object kinds whose names the shell completes.
type nameKind int

const (
	volumeNames nameKind = iota
	vmNames
	nodeNames
)

// names asks the daemon (with the global flags already parsed by cobra) for
// the names of one kind of object. Errors complete nothing.
func (a *app) names(cmd *cobra.Command, kind nameKind) []string {
	o := a.options(cmd, 0)
	o.Timeout = min(o.Timeout, completeTimeout)
	ctx, cancel := context.WithTimeout(cmd.Context(), o.Timeout)
	defer cancel()
	c, err := adminclient.Dial(ctx, o)
	if err != nil {
		return nil
	}
	defer c.Close()
	var out []string
	switch kind {
	case volumeNames:
		resp, err := c.Volume.List(ctx, &tandemv1.ListVolumesRequest{})
		out = namesOf(resp.GetVolumes(), err, nil)
	case vmNames:
		resp, err := c.VM.List(ctx, &tandemv1.ListVMsRequest{})
		out = namesOf(resp.GetVms(), err, nil)
	case nodeNames:
		resp, err := c.Node.List(ctx, &tandemv1.ListNodesRequest{})
		out = namesOf(resp.GetNodes(), err, func(n *tandemv1.NodeInfo) bool { return n.GetState() != "removed" })
	}
	slices.Sort(out)
	return out
}

// namesOf is the names of the listed items that keep accepts (all with keep
// nil); none when the list failed.
func namesOf[T interface{ GetName() string }](items []T, err error, keep func(T) bool) []string {
	if err != nil {
		return nil
	}
	var out []string
	for _, it := range items {
		if keep == nil || keep(it) {
			out = append(out, it.GetName())
		}
	}
	return out
}

// argNames completes the positional arguments at the given indexes with
// names of kind; other positions complete nothing.
func (a *app) argNames(kind nameKind, at ...int) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if !slices.Contains(at, len(args)) {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return prefixed(a.names(cmd, kind), toComplete, ""), cobra.ShellCompDirectiveNoFileComp
	}
}

// flagNames completes a flag's value with names of kind; with list it is a
// comma-separated list and the last item is completed.
func (a *app) flagNames(kind nameKind, list bool) cobra.CompletionFunc {
	return func(cmd *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		head := ""
		if i := strings.LastIndex(toComplete, ","); list && i >= 0 {
			head, toComplete = toComplete[:i+1], toComplete[i+1:]
		}
		dirs := cobra.ShellCompDirectiveNoFileComp
		if list {
			dirs |= cobra.ShellCompDirectiveNoSpace
		}
		return prefixed(a.names(cmd, kind), toComplete, head), dirs
	}
}

func prefixed(names []string, prefix, head string) []cobra.Completion {
	var out []cobra.Completion
	for _, n := range names {
		if strings.HasPrefix(n, prefix) && !strings.Contains(head, n+",") {
			out = append(out, head+n)
		}
	}
	return out
}

func fixedValues(values ...string) cobra.CompletionFunc {
	return cobra.FixedCompletions(values, cobra.ShellCompDirectiveNoFileComp)
}

// addCompletions wires name and value completion onto the finished command
// tree, by command path, so each command's file stays about what it does.
func addCompletions(root *cobra.Command, a *app) {
	args := map[string]cobra.CompletionFunc{
		"volume show": a.argNames(volumeNames, 0), "volume delete": a.argNames(volumeNames, 0),
		"volume promote": a.argNames(volumeNames, 0), "volume resync": a.argNames(volumeNames, 0),
		"volume verify": a.argNames(volumeNames, 0),
		"vm show":       a.argNames(vmNames, 0), "vm start": a.argNames(vmNames, 0), "vm stop": a.argNames(vmNames, 0),
		"vm delete": a.argNames(vmNames, 0), "vm migrate": a.argNames(vmNames, 0), "vm console": a.argNames(vmNames, 0), "vm vnc": a.argNames(vmNames, 0),
		"node remove": a.argNames(nodeNames, 0), "node show": a.argNames(nodeNames, 0),
		"node fence-config": a.argNames(nodeNames, 0), "node fence": a.argNames(nodeNames, 0),
		"node note": a.argNames(nodeNames, 0),
		"cluster config set": func(_ *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
			if strings.Contains(toComplete, "=") {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			var keys []string
			for _, k := range settings.Keys() {
				keys = append(keys, k+"=")
			}
			return prefixed(keys, toComplete, ""), cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveNoSpace
		},
		"vm disk add": a.argNames(vmNames, 0), "vm disk detach": a.vmThenVolume(), "vm disk resize": a.vmThenVolume(),
		"node maintenance": func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
			if len(args) == 0 {
				return prefixed([]string{"enable", "disable"}, toComplete, ""), cobra.ShellCompDirectiveNoFileComp
			}
			return a.argNames(nodeNames, 1)(cmd, args, toComplete)
		},
	}
	flags := map[string]map[string]cobra.CompletionFunc{
		"volume create":  {"nodes": a.flagNames(nodeNames, true)},
		"volume promote": {"node": a.flagNames(nodeNames, false)},
		"volume resync":  {"discard": a.flagNames(nodeNames, false)},
		"vm create": {"node": a.flagNames(nodeNames, false), "disk-volume": a.flagNames(volumeNames, false),
			"machine": fixedValues("q35", "pc"), "firmware": fixedValues("bios", "uefi")},
		"vm start":         {"node": a.flagNames(nodeNames, false)},
		"vm disk add":      {"disk-volume": a.flagNames(volumeNames, false)},
		"vm migrate":       {"to": a.flagNames(nodeNames, false)},
		"node maintenance": {"failback": fixedValues("stay", "balanced")},
	}
	walk(root, func(c *cobra.Command) {
		path := strings.TrimPrefix(c.CommandPath(), root.Name()+" ")
		if f, ok := args[path]; ok && c.ValidArgsFunction == nil {
			c.ValidArgsFunction = f
		}
		for name, f := range flags[path] {
			if c.Flags().Lookup(name) != nil {
				_ = c.RegisterFlagCompletionFunc(name, f)
			}
		}
	})
	_ = root.RegisterFlagCompletionFunc("output", fixedValues("table", "json"))
}

// vmThenVolume completes VM VOLUME: a VM's name, then a volume's.
func (a *app) vmThenVolume() cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) == 0 {
			return a.argNames(vmNames, 0)(cmd, args, toComplete)
		}
		return a.argNames(volumeNames, 1)(cmd, args, toComplete)
	}
}

func walk(c *cobra.Command, f func(*cobra.Command)) {
	f(c)
	for _, sub := range c.Commands() {
		walk(sub, f)
	}
}
