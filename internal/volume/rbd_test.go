package volume

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/consensus"
)

func TestNodeAt(t *testing.T) {
	ms := &consensus.MetaState{Nodes: map[string]*consensus.NodeRecord{
		"n1": {Name: "n1", BackendAddr: "10.99.0.11"},
		"n2": {Name: "n2", BackendAddr: "10.99.0.12:7400"},
	}}
	for addr, want := range map[string]string{
		"10.99.0.11:0/3821": "n1",
		"10.99.0.12:0/77":   "n2",
		"10.99.0.13:0/1":    "",
		"":                  "",
	} {
		if got := nodeAt(ms, addr); got != want {
			t.Errorf("nodeAt(%q) = %q, want %q", addr, got, want)
		}
	}
}

func TestPickStorage(t *testing.T) {
	ms := &consensus.MetaState{Storage: map[string]*consensus.StorageRecord{}}
	if _, err := pickStorage(ms, ""); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("none configured: %v", err)
	}
	ms.Storage["a"] = &consensus.StorageRecord{Name: "a"}
	if st, err := pickStorage(ms, ""); err != nil || st.Name != "a" {
		t.Errorf("the only one: %v %v", st, err)
	}
	ms.Storage["b"] = &consensus.StorageRecord{Name: "b"}
	if _, err := pickStorage(ms, ""); status.Code(err) != codes.InvalidArgument {
		t.Errorf("two, none named: %v", err)
	}
	if st, err := pickStorage(ms, "b"); err != nil || st.Name != "b" {
		t.Errorf("named: %v %v", st, err)
	}
	if _, err := pickStorage(ms, "c"); status.Code(err) != codes.NotFound {
		t.Errorf("unknown: %v", err)
	}
}
