package layers

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const (
	mod        = "github.com/tandemhci/tandem"
	dragonboat = "github.com/lni/dragonboat"
	grpc       = "google.golang.org/grpc"
	libvirt    = "github.com/digitalocean/go-libvirt"
)

// rule forbids the packages in pkgs to depend, directly or not, on any
// package under a prefix in deny; with stdOnly, on anything outside the
// standard library and the package's own tree.
type rule struct {
	pkgs    []string
	deny    []string
	stdOnly bool
	why     string
}

// rules is the layering (see doc.go). Paths are import paths; a deny entry
// covers the package and everything under it.
func rules() []rule {
	return []rule{
		{
			pkgs: []string{mod + "/blockstore", mod + "/blockstore/nbd", mod + "/blockstore/rangelock", mod + "/blockstore/rbd", mod + "/blockstore/uring", mod + "/replication",
				mod + "/internal/bufpool", mod + "/internal/workers", mod + "/internal/batchwrite"},
			deny: []string{dragonboat, grpc, mod + "/internal/pki", mod + "/consensus", mod + "/compute",
				mod + "/internal/daemon", libvirt},
			why: "the data path depends on nothing above it",
		},
		{
			pkgs:    []string{mod + "/ha"},
			stdOnly: true,
			why:     "ha is pure logic",
		},
		{
			pkgs:    []string{mod + "/internal/placement"},
			stdOnly: true,
			why:     "placement is pure policy: the daemon gathers its inputs",
		},
		{
			pkgs:    []string{mod + "/internal/refusal", mod + "/internal/validate", mod + "/internal/invariant"},
			stdOnly: true,
			why:     "refusal, validate and invariant are rules, counters and messages any layer may use: the standard library only",
		},
		{
			pkgs:    []string{mod + "/internal/nodedir"},
			stdOnly: true,
			why:     "nodedir is pure file handling: it holds no daemon state",
		},
		{
			pkgs:    []string{mod + "/internal/cephtest"},
			stdOnly: true,
			why:     "the micro Ceph cluster drives Ceph's own binaries: no cgo, no go-ceph",
		},
		{
			pkgs:    []string{mod + "/internal/cephholders"},
			stdOnly: true,
			why:     "finding the processes that may hold a Ceph client reads /proc: the standard library only",
		},
		{
			pkgs:    []string{mod + "/internal/sealed"},
			stdOnly: true,
			why:     "sealing is pure crypto over the cluster secret",
		},
		{
			pkgs: []string{mod + "/consensus"},
			deny: []string{grpc, libvirt, mod + "/internal/daemon", mod + "/compute"},
			why:  "consensus keeps Raft state and serves nothing",
		},
		{
			pkgs: []string{mod + "/consensus/raftnet"},
			deny: []string{grpc, libvirt, mod + "/internal", mod + "/consensus", mod + "/replication", mod + "/compute"},
			why:  "raftnet carries dragonboat's messages and knows nothing of what they mean; its TLS policy comes from the caller",
		},
		{
			pkgs: []string{mod + "/compute"},
			deny: []string{dragonboat, mod + "/consensus", mod + "/internal/daemon"},
			why:  "compute runs VMs and knows no Raft",
		},
		{
			pkgs: []string{mod + "/fencing", mod + "/netannounce"},
			deny: []string{dragonboat, mod + "/internal/daemon"},
			why:  "mechanisms the daemon drives",
		},
		{
			pkgs: []string{mod + "/internal/state", mod + "/internal/membership", mod + "/internal/apierr", mod + "/internal/cluster", mod + "/internal/recovery", mod + "/internal/volume", mod + "/internal/images"},
			deny: []string{mod + "/internal/daemon", mod + "/compute", libvirt},
			why:  "subsystems share state.State, never the daemon, and run no VMs",
		},
		{
			pkgs: []string{mod + "/internal/api"},
			deny: []string{mod + "/internal/daemon"},
			why:  "the API layer serves the subsystems; only the wiring builds the daemon",
		},
		{
			pkgs: []string{mod + "/internal/metrics"},
			deny: []string{mod + "/internal/daemon", grpc, mod + "/compute", libvirt},
			why:  "metrics read the subsystems through small interfaces, never the daemon",
		},
		{
			pkgs: []string{mod + "/internal/vmm"},
			deny: []string{mod + "/internal/daemon"},
			why:  "the VM manager shares state.State, never the daemon",
		},
		{
			pkgs: []string{mod + "/internal/peers"},
			deny: []string{mod + "/internal/daemon", mod + "/compute", libvirt},
			why:  "the peer pool is transport: it takes its TLS identity, never the daemon",
		},
		{
			pkgs: []string{mod + "/internal/faultfs"},
			deny: []string{mod},
			why:  "faultfs is test infrastructure over go-fuse: it knows no Tandem package",
		},
		{
			pkgs: []string{mod + "/cmd/tandemd", mod + "/cmd/tandem", mod + "/cmd/tandem-install"},
			deny: []string{mod + "/internal/faultfs"},
			why:  "the fault-injecting filesystem is for tests: the shipped commands never import it",
		},
		{
			pkgs: []string{mod + "/internal/netdelay"},
			deny: []string{mod},
			why:  "netdelay is test infrastructure over go-nfqueue: it knows no Tandem package",
		},
		{
			pkgs: []string{mod + "/cmd/tandemd", mod + "/cmd/tandem", mod + "/cmd/tandem-install"},
			deny: []string{mod + "/internal/netdelay"},
			why:  "the packet delayer is for tests: the shipped commands never import it",
		},
		{
			pkgs: []string{mod + "/chaos"},
			deny: []string{mod + "/internal/daemon", mod + "/consensus", mod + "/replication", mod + "/blockstore", mod + "/internal/volume", dragonboat},
			why:  "the fault-schedule runner drives the product from outside, as an operator and a client would: CLI, NBD, processes and the network",
		},
		{
			pkgs: []string{mod + "/internal/units", mod + "/internal/settings"},
			deny: []string{grpc, dragonboat},
			why:  "descriptions of values",
		},
	}
}

// daemonImporters may import internal/daemon; every other package of the
// module must not, directly or not.
func daemonImporters(path string) bool {
	return path == mod+"/internal/daemon" || under(path, mod+"/cmd")
}

// under reports whether path is prefix or a package below it.
func under(path, prefix string) bool {
	return path == prefix || strings.HasPrefix(path, prefix+"/")
}

// pkg is the part of `go list -json` output the test uses.
type pkg struct {
	ImportPath string
	Standard   bool
	Imports    []string
}

// graph maps an import path to its package.
type graph map[string]*pkg

// loadGraph lists every package of the module and all their dependencies.
// Test imports are left out on purpose (see doc.go).
func loadGraph(t *testing.T) graph {
	t.Helper()
	gocmd, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the layering test needs the go command: %v", err)
	}
	cmd := exec.Command(gocmd, "list", "-deps", "-json=ImportPath,Standard,Imports", mod+"/...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.Bytes())
	}
	g, err := decodeGraph(bytes.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	gomod, err := exec.Command(gocmd, "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	if err := openSourceDirs(filepath.Dir(strings.TrimSpace(string(gomod)))); err != nil {
		t.Fatal(err)
	}
	return g
}

// openSourceDirs opens every directory of the module. go test caches a
// passing result keyed on what the test process itself opened, not on what
// the go list child read; an opened directory is keyed on its entries' sizes
// and times, so any edit, new file or new package reruns the test.
func openSourceDirs(root string) error {
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() && path != root && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata") {
			return filepath.SkipDir
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("walking the module: %w", err)
	}
	return nil
}

func decodeGraph(r io.Reader) (graph, error) {
	g := graph{}
	dec := json.NewDecoder(r)
	for {
		var p pkg
		err := dec.Decode(&p)
		if errors.Is(err, io.EOF) {
			return g, nil
		}
		if err != nil {
			return nil, fmt.Errorf("decoding go list output: %w", err)
		}
		g[p.ImportPath] = &p
	}
}

// violation is a forbidden dependency and one shortest import chain to it.
type violation struct {
	pkg, dep string
	chain    []string
}

func (v violation) String() string {
	chain := make([]string, len(v.chain))
	for i, p := range v.chain {
		chain[i] = short(p)
	}
	return fmt.Sprintf("%s must not depend on %s; import chain: %s", short(v.pkg), short(v.dep), strings.Join(chain, " -> "))
}

// short names the module's packages relative to the module, for reading.
func short(path string) string {
	if rel, ok := strings.CutPrefix(path, mod+"/"); ok {
		return rel
	}
	return path
}

// forbidden walks root's imports breadth first and returns each forbidden
// package reached with the shortest chain to it. It does not walk past a
// forbidden package, so one bad import yields one violation rather than
// every package behind it.
func (g graph) forbidden(root string, bad func(string) bool) []violation {
	parent := map[string]string{root: ""}
	queue := []string{root}
	var vs []violation
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if p != root && bad(p) {
			var chain []string
			for q := p; q != ""; q = parent[q] {
				chain = append(chain, q)
			}
			slices.Reverse(chain)
			vs = append(vs, violation{pkg: root, dep: p, chain: chain})
			continue
		}
		n := g[p]
		if n == nil {
			continue
		}
		for _, imp := range n.Imports {
			if _, seen := parent[imp]; !seen {
				parent[imp] = p
				queue = append(queue, imp)
			}
		}
	}
	return vs
}

// check returns every violation of rs and of the internal/daemon rule in g.
func (g graph) check(rs []rule) []string {
	var errs []string
	for _, r := range rs {
		for _, root := range r.pkgs {
			if g[root] == nil {
				errs = append(errs, fmt.Sprintf("%s: no such package (rule %q); update the table", short(root), r.why))
				continue
			}
			bad := func(p string) bool {
				if r.stdOnly {
					return !g.standard(p) && !under(p, root)
				}
				return slices.ContainsFunc(r.deny, func(d string) bool { return under(p, d) })
			}
			for _, v := range g.forbidden(root, bad) {
				errs = append(errs, fmt.Sprintf("%s (%s)", v, r.why))
			}
		}
	}
	for _, root := range slices.Sorted(func(yield func(string) bool) {
		for p := range g {
			if under(p, mod) && !daemonImporters(p) && !yield(p) {
				return
			}
		}
	}) {
		bad := func(p string) bool { return p == mod+"/internal/daemon" }
		for _, v := range g.forbidden(root, bad) {
			errs = append(errs, fmt.Sprintf("%s (only cmd/ may import the daemon)", v))
		}
	}
	return errs
}

// standard reports whether p is in the standard library. "C" and "unsafe"
// count as standard.
func (g graph) standard(p string) bool {
	if n := g[p]; n != nil {
		return n.Standard
	}
	return p == "C"
}

func TestLayers(t *testing.T) {
	g := loadGraph(t)
	for _, e := range g.check(rules()) {
		t.Error(e)
	}
}

// TestCheckReportsChain proves the checker on a made-up graph, so a broken
// walk cannot make TestLayers pass vacuously.
func TestCheckReportsChain(t *testing.T) {
	g := graph{
		mod + "/blockstore":      {ImportPath: mod + "/blockstore", Imports: []string{"fmt", mod + "/internal/x"}},
		mod + "/internal/x":      {ImportPath: mod + "/internal/x", Imports: []string{mod + "/consensus"}},
		mod + "/consensus":       {ImportPath: mod + "/consensus", Imports: []string{dragonboat + "/v4"}},
		dragonboat + "/v4":       {ImportPath: dragonboat + "/v4"},
		mod + "/ha":              {ImportPath: mod + "/ha", Imports: []string{"fmt", mod + "/ha/sub", mod + "/internal/units"}},
		mod + "/ha/sub":          {ImportPath: mod + "/ha/sub", Imports: []string{"fmt"}},
		mod + "/internal/units":  {ImportPath: mod + "/internal/units"},
		mod + "/bench":           {ImportPath: mod + "/bench", Imports: []string{mod + "/internal/daemon"}},
		mod + "/cmd/tandemd":     {ImportPath: mod + "/cmd/tandemd", Imports: []string{mod + "/internal/daemon"}},
		mod + "/internal/daemon": {ImportPath: mod + "/internal/daemon", Imports: []string{mod + "/consensus"}},
		"fmt":                    {ImportPath: "fmt", Standard: true},
	}
	rs := []rule{
		{pkgs: []string{mod + "/blockstore"}, deny: []string{dragonboat, mod + "/consensus"}, why: "data path"},
		{pkgs: []string{mod + "/ha"}, stdOnly: true, why: "pure"},
		{pkgs: []string{mod + "/gone"}, why: "stale"},
	}
	want := []string{
		"blockstore must not depend on consensus; import chain: blockstore -> internal/x -> consensus (data path)",
		"ha must not depend on internal/units; import chain: ha -> internal/units (pure)",
		`gone: no such package (rule "stale"); update the table`,
		"bench must not depend on internal/daemon; import chain: bench -> internal/daemon (only cmd/ may import the daemon)",
	}
	if got := g.check(rs); !slices.Equal(got, want) {
		t.Errorf("check:\n got %q\nwant %q", got, want)
	}
}
