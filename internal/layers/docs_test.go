package layers

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"go/parser"
	"go/token"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// docPkg is the part of `go list -json` output the doc test uses.
type docPkg struct {
	ImportPath string
	Dir        string
}

// listModule lists every package of the module (not its dependencies),
// with go list as loadGraph does.
func listModule(t *testing.T) []docPkg {
	t.Helper()
	gocmd, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the doc test needs the go command: %v", err)
	}
	cmd := exec.Command(gocmd, "list", "-json=ImportPath,Dir", mod+"/...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.Bytes())
	}
	var pkgs []docPkg
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p docPkg
		err := dec.Decode(&p)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("decoding go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) == 0 {
		t.Fatal("go list found no package in the module")
	}
	gomod, err := exec.Command(gocmd, "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	if err := openSourceDirs(filepath.Dir(strings.TrimSpace(string(gomod)))); err != nil {
		t.Fatal(err)
	}
	return pkgs
}

// checkDocs returns one problem per package whose directory has no doc.go,
// or whose doc.go has no package comment naming its owner ("Owner:") and
// stating its invariants (the word "invariant", either case). Issue 12:
// each package has a doc.go that states its invariant and its owner.
func checkDocs(pkgs []docPkg) []string {
	var errs []string
	for _, p := range pkgs {
		path := filepath.Join(p.Dir, "doc.go")
		if _, err := os.Stat(path); err != nil {
			errs = append(errs, fmt.Sprintf("%s: no doc.go (%v)", short(p.ImportPath), err))
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.PackageClauseOnly|parser.ParseComments)
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: doc.go: %v", short(p.ImportPath), err))
			continue
		}
		if f.Doc == nil {
			errs = append(errs, fmt.Sprintf("%s: doc.go has no package comment", short(p.ImportPath)))
			continue
		}
		text := f.Doc.Text()
		var missing []string
		if !strings.Contains(text, "Owner:") {
			missing = append(missing, `an "Owner: the <area> maintainers." line`)
		}
		if !strings.Contains(text, "nvariant") {
			missing = append(missing, "its invariants")
		}
		if len(missing) > 0 {
			errs = append(errs, fmt.Sprintf("%s: doc.go's package comment lacks %s", short(p.ImportPath), strings.Join(missing, " and ")))
		}
	}
	slices.Sort(errs)
	return errs
}

func TestPackageDocs(t *testing.T) {
	for _, e := range checkDocs(listModule(t)) {
		t.Error(e)
	}
}

// TestCheckDocsReports proves the checker on made-up packages, so a broken
// check cannot make TestPackageDocs pass vacuously.
func TestCheckDocsReports(t *testing.T) {
	root := t.TempDir()
	files := map[string]string{
		"good/doc.go":      "// Package good is fine.\n//\n// Owner: the test maintainers.\n//\n// Invariant: it holds.\npackage good\n",
		"noowner/doc.go":   "// Package noowner.\n//\n// Invariants:\n//   - one\npackage noowner\n",
		"noinv/doc.go":     "// Package noinv.\n//\n// Owner: the test maintainers.\npackage noinv\n",
		"detached/doc.go":  "// Owner: the test maintainers. Invariant: none.\n\npackage detached\n",
		"nodoc/x.go":       "// Package nodoc has its comment elsewhere. Owner: x. Invariant: y.\npackage nodoc\n",
		"neither/doc.go":   "// Package neither.\npackage neither\n",
		"command/doc.go":   "// Command command runs.\n//\n// Owner: the test maintainers.\n//\n// Invariant: it runs.\npackage main\n",
		"commentonly/x.go": "package commentonly\n\n// Owner: not a package comment. Invariant.\nvar X int\n",
	}
	for name, src := range files {
		path := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var pkgs []docPkg
	for _, d := range []string{"good", "noowner", "noinv", "detached", "nodoc", "neither", "command", "commentonly"} {
		pkgs = append(pkgs, docPkg{ImportPath: mod + "/" + d, Dir: filepath.Join(root, d)})
	}
	got := checkDocs(pkgs)
	want := []string{
		"commentonly: no doc.go",
		"detached: doc.go has no package comment",
		`neither: doc.go's package comment lacks an "Owner: the <area> maintainers." line and its invariants`,
		"nodoc: no doc.go",
		"noinv: doc.go's package comment lacks its invariants",
		`noowner: doc.go's package comment lacks an "Owner: the <area> maintainers." line`,
	}
	if len(got) != len(want) {
		t.Fatalf("checkDocs:\n got %q\nwant %q", got, want)
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("checkDocs[%d] = %q, want it to start with %q", i, got[i], want[i])
		}
	}
}
