package volume

import (
	"slices"
	"testing"

	"github.com/tandemhci/tandem/consensus"
)

func TestMonitors(t *testing.T) {
	for in, want := range map[string][]string{
		"10.0.0.1":                                      {"10.0.0.1:6789"},
		"10.0.0.1:6789,10.0.0.2:6789":                   {"10.0.0.1:6789", "10.0.0.2:6789"},
		"[v2:10.0.0.1:3300/0,v1:10.0.0.1:6789/0]":       {"10.0.0.1:6789"},
		"v2:10.0.0.1:3300/0":                            {"10.0.0.1:3300"},
		"10.0.0.1:6789 10.0.0.1:6789":                   {"10.0.0.1:6789"},
		"[v2:10.0.0.1:3300/0,v1:10.0.0.1:6789/0] fd::1": {"10.0.0.1:6789", "[fd::1]:6789"},
	} {
		if got := monitors(in); !slices.Equal(got, want) {
			t.Errorf("monitors(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestVMOf(t *testing.T) {
	ms := &consensus.MetaState{VMs: map[string]*consensus.VMRecord{
		"a": {Name: "a", Spec: consensus.VMSpecRecord{Volumes: []string{"d1", "d2"}}},
		"b": {Name: "b", Spec: consensus.VMSpecRecord{Volumes: []string{"d3"}}},
	}}
	if VMOf(ms, "d2") != "a" || VMOf(ms, "d3") != "b" || VMOf(ms, "d4") != "" {
		t.Fatal("VMOf")
	}
}
