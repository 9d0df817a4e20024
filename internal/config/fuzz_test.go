package config

import (
	"reflect"
	"slices"
	"testing"

	"go.yaml.in/yaml/v3"
)

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		minimal,
		"",
		"node_name: n\nbackend_addr: \"[fd00::1]\"\nmetrics_addr: off\nrole: witness\n",
		"node_name: n\nbackend_addr: h.example:1\nraft_addr: h.example:2\nadmin_addr: \":3\"\nmetrics_addr: \"\"\nlog: {format: json, level: warn}\nraft: {rtt_ms: 1, election_rtt: 3, heartbeat_rtt: 1, snapshot_entries: 1}\ndisks: [/a, /b]\n",
		"raft:\n  rtt_ms: ten\n",
		"node_name: a\n---\nrole: data\n",
		"a: &x [*x]\n",
		"- [\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Parse succeeded but Validate fails: %v", err)
		}
		d := c
		d.Disks = slices.Clone(c.Disks)
		d.ApplyDefaults()
		if !reflect.DeepEqual(c, d) {
			t.Fatalf("ApplyDefaults is not idempotent:\n%+v\n%+v", c, d)
		}
		// What the daemon would write back (e.g. "show effective config")
		// parses to the same thing.
		out, err := yaml.Marshal(c)
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		again, err := Parse(out)
		if err != nil {
			t.Fatalf("re-parsing marshalled config %q: %v", out, err)
		}
		if len(c.Disks) == 0 && len(again.Disks) == 0 {
			again.Disks = c.Disks // nil and [] are the same list
		}
		if !reflect.DeepEqual(c, again) {
			t.Fatalf("marshal round trip changed the config:\n%+v\n%+v", c, again)
		}
	})
}
