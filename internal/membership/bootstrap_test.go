package membership

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/internal/pki"
	"github.com/tandemhci/tandem/internal/state/statetest"
)

func TestCreate(t *testing.T) {
	w := newWorld()
	m := w.manager()
	m.st.Node.AdminAddr, m.st.Node.RaftAddr = "10.0.0.1:7002", "10.0.0.1:7001"
	id, err := m.Create(context.Background(), "prod")
	if err != nil {
		t.Fatal(err)
	}
	if id.ClusterName != "prod" || id.ReplicaID != 1 || id.NodeName != "n1" || id.Role != "data" || len(id.ClusterID) != 32 {
		t.Fatalf("identity %+v", id)
	}
	// Files before Raft, the cluster recorded before the identity is
	// written, the identity (proof of a finished create) before serving.
	want := []string{"cluster?", "reset", "save-tls", "save-secret", "save-admin", "start prod replica=1 members=map[1:10.0.0.1:7001] join=false", "save-identity", "serve"}
	if !slices.Equal(w.init.steps, want) {
		t.Fatalf("steps %q, want %q", w.init.steps, want)
	}
	if j := w.meta.j.List(); !slices.Equal(j, []string{"bootstrap prod n1"}) {
		t.Fatalf("journal %q", j)
	}
	if w.init.saved != id || w.init.admin.Endpoint != "10.0.0.1:7002" || w.init.admin.Token == "" {
		t.Fatalf("saved %+v, admin endpoint %q", w.init.saved, w.init.admin.Endpoint)
	}
	if _, err := pki.AdminTokenVerifier(w.init.admin.Token); err != nil {
		t.Fatalf("admin token: %v", err)
	}
	if len(w.init.secret) != 32 || bytes.Equal(w.init.secret, make([]byte, 32)) {
		t.Fatalf("cluster secret %x: want 32 random bytes", w.init.secret)
	}
	// Now in a cluster: a second create or a join is refused, changing nothing.
	w.init.steps = nil
	if _, err := m.Create(context.Background(), "other"); !statetest.IsStatus(err, codes.AlreadyExists, `this node is already in cluster "prod"`) {
		t.Fatalf("second create: %v", err)
	}
	_, req := member(t, newWorld())
	if _, err := m.Join(context.Background(), "10.0.0.2:7000", req.Token); !statetest.IsStatus(err, codes.AlreadyExists, "") {
		t.Fatalf("join after create: %v", err)
	}
	if want := []string{"cluster?", "cluster?"}; !slices.Equal(w.init.steps, want) {
		t.Fatalf("steps %q, want %q", w.init.steps, want)
	}
}

func TestCreateFailuresResetTheNode(t *testing.T) {
	w := newWorld()
	w.init.startErr = errors.New("raft port taken")
	_, err := w.manager().Create(context.Background(), "prod")
	if status.Code(err) != codes.Internal || status.Convert(err).Message() != "start raft: raft port taken" {
		t.Fatalf("start failure: %v", err)
	}
	if last := w.init.steps[len(w.init.steps)-1]; last != "reset" {
		t.Fatalf("steps %q: a failed create must end with a reset", w.init.steps)
	}

	w = newWorld()
	w.meta.bootErr = errors.New("no leader")
	_, err = w.manager().Create(context.Background(), "prod")
	if status.Code(err) != codes.Internal || status.Convert(err).Message() != "record cluster: no leader" {
		t.Fatalf("bootstrap failure: %v", err)
	}
	if last := w.init.steps[len(w.init.steps)-1]; last != "reset" || slices.Contains(w.init.steps, "save-identity") {
		t.Fatalf("steps %q: no identity may be written, and the node reset", w.init.steps)
	}
}

// TestJoinArgumentChecks: a bad token or address is refused before the
// lock is taken or anything is dialled.
func TestJoinArgumentChecks(t *testing.T) {
	w := newWorld()
	_, req := member(t, newWorld())
	cases := []struct{ addr, token, msg string }{
		{"10.0.0.2:7000", "nonsense", ""},
		{"10.0.0.2", req.Token, `address "10.0.0.2": want host:port of a member's backend address`},
	}
	for _, c := range cases {
		_, err := w.manager().Join(context.Background(), c.addr, c.token)
		if !statetest.IsStatus(err, codes.InvalidArgument, c.msg) {
			t.Fatalf("%q %q: %v", c.addr, c.token, err)
		}
	}
	if len(w.init.steps) != 0 {
		t.Fatalf("steps %q", w.init.steps)
	}
}

// TestJoinUnreachableMember: nothing listens, so the join fails as
// Unavailable and the node's state is left alone.
func TestJoinUnreachableMember(t *testing.T) {
	w := newWorld()
	_, req := member(t, newWorld())
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := w.manager().Join(ctx, "127.0.0.1:1", req.Token)
	if !statetest.IsStatus(err, codes.Unavailable, "cannot reach a cluster member at 127.0.0.1:1") {
		t.Fatalf("got %v", err)
	}
	if want := []string{"cluster?"}; !slices.Equal(w.init.steps, want) {
		t.Fatalf("steps %q, want %q", w.init.steps, want)
	}
}
