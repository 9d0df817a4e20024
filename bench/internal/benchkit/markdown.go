package benchkit

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
)

// Table writes one Markdown table: NewTable writes the header row and the
// |---| rule, Row (or Rowf) each further row.
type Table struct{ w io.Writer }

// NewTable starts a table with the columns head.
func NewTable(w io.Writer, head ...string) Table {
	fmt.Fprintf(w, "| %s |\n|%s\n", strings.Join(head, " | "), strings.Repeat("---|", len(head)))
	return Table{w: w}
}

// Row writes one row of cells, as they are (see Escape).
func (t Table) Row(cells ...string) {
	fmt.Fprintf(t.w, "| %s |\n", strings.Join(cells, " | "))
}

// Rowf writes one row formatted by format, which holds the cells and their
// separators without the outer bars: "%s | %d".
func (t Table) Rowf(format string, args ...any) {
	fmt.Fprintf(t.w, "| "+format+" |\n", args...)
}

// Escape makes s safe inside a table cell: a bar would end the cell and a
// newline the row.
func Escape(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ").Replace(s)
}

// OrDash is s, or an en dash for an empty cell.
func OrDash(s string) string {
	if s == "" {
		return "–"
	}
	return s
}

// Verdict is a goal's verdict in bold.
func Verdict(ok bool) string {
	if ok {
		return "**PASS**"
	}
	return "**FAIL**"
}

// PassFail is Verdict, or "not measured" when ok is nil.
func PassFail(ok *bool) string {
	if ok == nil {
		return "not measured"
	}
	return Verdict(*ok)
}

// SortedKeys is m's keys in order: the reports must not depend on map
// iteration.
func SortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}

// ToolList is m's values in the order of its keys.
func ToolList(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for _, k := range SortedKeys(m) {
		out = append(out, m[k])
	}
	return out
}

// FindingsTable configures WriteFindings: the reports differ in how much of
// a finding they show.
type FindingsTable struct {
	// Column heads the last column: the finding's Pattern, or its Example
	// when Example is set.
	Column  string
	Example bool
	// Width truncates the pattern or example.
	Width int
	// NodeSep joins a node and its count ("n1:3"), Join the nodes.
	NodeSep, Join string
	// Limit, when above 0, ends the table after that many findings with
	// the row More(rest) returns (its cells, outer bars excluded).
	Limit int
	More  func(rest int) string
}

// WriteFindings writes the daemons' log findings as a table.
func (ft FindingsTable) WriteFindings(w io.Writer, fs []LogFinding) {
	t := NewTable(w, "Level", "Count", "By node", ft.Column)
	for i, f := range fs {
		if ft.Limit > 0 && i == ft.Limit {
			t.Rowf("%s", ft.More(len(fs)-i))
			break
		}
		by := make([]string, 0, len(f.ByNode))
		for _, n := range SortedKeys(f.ByNode) {
			by = append(by, fmt.Sprintf("%s%s%d", n, ft.NodeSep, f.ByNode[n]))
		}
		text := f.Pattern
		if ft.Example {
			text = f.Example
		}
		t.Row(f.Level, fmt.Sprint(f.Count), strings.Join(by, ft.Join), "`"+Escape(Truncate(text, ft.Width))+"`")
	}
}

// FmtBytes renders a size in whole GiB or MiB when it is one, else in
// bytes.
func FmtBytes(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	default:
		return fmt.Sprintf("%d bytes", n)
	}
}
