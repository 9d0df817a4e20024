package main

import (
	"context"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	"github.com/tandemhci/tandem/internal/adminclient"
)

// table is a list command's output before --columns, --filter and
// --no-headers shape it. Cells are what people read: "-" for nothing.
type table struct {
	header []string
	rows   [][]string
	empty  string // printed instead of rows when there are none
}

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

// listFlags are the output controls every list command takes.
type listFlags struct {
	columns   []string
	filters   []string
	noHeaders bool
}

func addListFlags(cmd *cobra.Command, lf *listFlags) {
	f := cmd.Flags()
	f.StringSliceVar(&lf.columns, "columns", nil, "show only these columns, in this order (comma-separated, e.g. name,state)")
	f.StringArrayVar(&lf.filters, "filter", nil, "show only rows whose COLUMN matches VALUE (COLUMN=VALUE, a shell pattern such as web-*; repeatable, all must match)")
	f.BoolVar(&lf.noHeaders, "no-headers", false, "leave out the header line (for scripts)")
}

// check refuses output controls that cannot apply, before any call is made.
func (lf *listFlags) check(output string) error {
	if output == "json" && (len(lf.columns) > 0 || len(lf.filters) > 0 || lf.noHeaders) {
		return usageErrorf("--columns, --filter and --no-headers shape tables; with -o json filter with a JSON tool such as jq")
	}
	for _, f := range lf.filters {
		if k, _, ok := strings.Cut(f, "="); !ok || k == "" {
			return usageErrorf("--filter %q: want COLUMN=VALUE", f)
		}
		if _, err := path.Match(f[strings.Index(f, "=")+1:], ""); err != nil {
			return usageErrorf("--filter %q: bad pattern: %v", f, err)
		}
	}
	return nil
}

// write prints t shaped by lf.
func (lf *listFlags) write(w io.Writer, t *table) error {
	col := func(name string) (int, error) {
		i := slices.IndexFunc(t.header, func(h string) bool { return strings.EqualFold(h, name) })
		if i < 0 {
			return 0, usageErrorf("no column %q; the columns are %s", name, strings.ToLower(strings.Join(t.header, ", ")))
		}
		return i, nil
	}
	show := make([]int, 0, len(t.header))
	if len(lf.columns) == 0 {
		for i := range t.header {
			show = append(show, i)
		}
	}
	for _, c := range lf.columns {
		i, err := col(strings.TrimSpace(c))
		if err != nil {
			return err
		}
		show = append(show, i)
	}
	type match struct {
		col     int
		pattern string
	}
	var matches []match
	for _, f := range lf.filters {
		k, v, _ := strings.Cut(f, "=")
		i, err := col(k)
		if err != nil {
			return err
		}
		matches = append(matches, match{i, v})
	}
	tw := newTabWriter(w)
	line := func(cells []string) {
		out := make([]string, len(show))
		for j, i := range show {
			if i < len(cells) {
				out[j] = cells[i]
			}
		}
		fmt.Fprintln(tw, strings.Join(out, "\t"))
	}
	if !lf.noHeaders {
		line(t.header)
	}
	n := 0
rows:
	for _, r := range t.rows {
		for _, m := range matches {
			if ok, _ := path.Match(m.pattern, r[m.col]); !ok {
				continue rows
			}
		}
		line(r)
		n++
	}
	if n == 0 && !lf.noHeaders {
		msg := t.empty
		if len(t.rows) > 0 {
			msg = "(no rows match the filter)"
		}
		fmt.Fprintln(tw, msg)
	}
	return tw.Flush()
}

// listCmd makes cmd a noun's list command: it takes the list output flags,
// checks them before any call is made, asks the daemon with list and prints
// the answer (JSON, or table shaped by the flags).
func listCmd[T proto.Message](a *app, cmd *cobra.Command, list func(context.Context, *adminclient.Client) (T, error), table func(io.Writer, T, *listFlags) error) *cobra.Command {
	lf := &listFlags{}
	cmd.Args = argsNamed()
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := lf.check(a.output); err != nil {
			return err
		}
		return callAdmin(a, cmd, 0, list, func(w io.Writer, resp T) error { return table(w, resp, lf) })
	}
	addListFlags(cmd, lf)
	return cmd
}
