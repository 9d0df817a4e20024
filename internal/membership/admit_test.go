package membership

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/pki"
	"github.com/tandemhci/tandem/internal/state/statetest"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// member makes w a member of a cluster with a real CA and returns a valid
// join token and a join request from n4 that uses it.
func member(t *testing.T, w *world) (*pki.CA, *tandemv1.PeerJoinRequest) {
	t.Helper()
	ca, err := pki.NewCA("c1", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	key, err := ca.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	w.cluster = &Cluster{Name: "c1", ID: "id1", CACert: ca.CertPEM(), CAKey: key, Secret: bytes.Repeat([]byte{9}, 32)}
	return ca, joinRequest(t, ca.Fingerprint())
}

func joinRequest(t *testing.T, fp [32]byte) *tandemv1.PeerJoinRequest {
	t.Helper()
	tok, err := pki.NewJoinToken(fp)
	if err != nil {
		t.Fatal(err)
	}
	nk, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.NewCSR(nk, "n4")
	if err != nil {
		t.Fatal(err)
	}
	return &tandemv1.PeerJoinRequest{Token: tok.String(), NodeName: "n4", Role: tandemv1.NodeRole_NODE_ROLE_WITNESS, CsrPem: csr,
		BackendAddr: "10.0.0.4:7000", RaftAddr: "10.0.0.4:7001", AdminAddr: "10.0.0.4:7002", ReplicationAddr: "10.0.0.4:7003"}
}

func TestAdmit(t *testing.T) {
	w := newWorld()
	_, req := member(t, w)
	resp, err := w.manager().Admit(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.ClusterName != "c1" || resp.ClusterId != "id1" || resp.ReplicaId != 4 || resp.AdminToken != "" || len(resp.CertPem) == 0 ||
		!bytes.Equal(resp.ClusterSecret, bytes.Repeat([]byte{9}, 32)) {
		t.Fatalf("response %+v", resp)
	}
	if len(resp.Members) != 4 {
		t.Fatalf("members %v: want the three voters and n4", resp.Members)
	}
	// The token is consumed before the Raft group changes.
	if j, want := w.meta.j.List(), []string{"join n4", "add-voter 10.0.0.4:7001"}; !slices.Equal(j, want) {
		t.Fatalf("journal %q, want %q", j, want)
	}
}

// TestAdmitChecksOrder: everything the request alone shows is checked
// before quorum is asked, and quorum before the token is consumed.
func TestAdmitChecksOrder(t *testing.T) {
	other, err := pki.NewCA("other", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		edit   func(w *world, r *tandemv1.PeerJoinRequest)
		code   codes.Code
		msg    string
		quorum bool // quorum was asked
	}{
		{"not in a cluster", func(w *world, _ *tandemv1.PeerJoinRequest) { w.cluster = nil }, codes.FailedPrecondition, "this node is not in a cluster", false},
		{"malformed token", func(_ *world, r *tandemv1.PeerJoinRequest) { r.Token = "nonsense" }, codes.InvalidArgument, "", false},
		{"token of another cluster, bad name too", func(_ *world, r *tandemv1.PeerJoinRequest) {
			r.Token = joinRequest(t, other.Fingerprint()).Token
			r.NodeName = "Bad Name"
		}, codes.PermissionDenied, "join token is for another cluster", false},
		{"bad name", func(_ *world, r *tandemv1.PeerJoinRequest) { r.NodeName = "Bad Name" }, codes.InvalidArgument, `node name "Bad Name": use 1-63 lowercase letters, digits and '-'`, false},
		{"bad address", func(_ *world, r *tandemv1.PeerJoinRequest) { r.RaftAddr = "nowhere" }, codes.InvalidArgument, `address "nowhere"`, false},
		{"no quorum", func(w *world, _ *tandemv1.PeerJoinRequest) { w.quorate = false }, codes.FailedPrecondition, "no quorum", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld()
			_, req := member(t, w)
			c.edit(w, req)
			_, err := w.manager().Admit(context.Background(), req)
			if !statetest.IsStatus(err, c.code, c.msg) {
				t.Fatalf("got %v, want %v %q", err, c.code, c.msg)
			}
			if asked := w.quorumN > 0; asked != c.quorum {
				t.Fatalf("quorum asked: %v, want %v", asked, c.quorum)
			}
			if j := w.meta.j.List(); len(j) != 0 {
				t.Fatalf("a refused join changed %q", j)
			}
		})
	}
}

func TestAdmitUsedTokenChangesNoRaftMembership(t *testing.T) {
	w := newWorld()
	_, req := member(t, w)
	w.meta.joinErr = &consensus.ResultError{Base: consensus.ErrTokenUsed, Msg: "join token was already used"}
	_, err := w.manager().Admit(context.Background(), req)
	if !statetest.IsStatus(err, codes.PermissionDenied, "") {
		t.Fatalf("used token: %v", err)
	}
	if j, want := w.meta.j.List(), []string{"join n4"}; !slices.Equal(j, want) {
		t.Fatalf("journal %q, want %q", j, want)
	}
}

func TestExpectedVotesChecks(t *testing.T) {
	cases := []struct {
		name    string
		req     *tandemv1.SetExpectedVotesRequest
		quorate bool
		code    codes.Code
		msg     string
	}{
		{"unconfirmed", &tandemv1.SetExpectedVotesRequest{Votes: 1}, false, codes.InvalidArgument, "expected-votes needs confirm=true"},
		{"two votes", &tandemv1.SetExpectedVotesRequest{Votes: 2, Confirm: true}, false, codes.InvalidArgument, "expected votes 2: only 1 is supported"},
		{"quorate", &tandemv1.SetExpectedVotesRequest{Votes: 1, Confirm: true}, true, codes.FailedPrecondition, "the cluster is quorate"},
		{"lost majority", &tandemv1.SetExpectedVotesRequest{Votes: 1, Confirm: true}, false, codes.OK, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld()
			w.quorate = c.quorate
			err := w.manager().CheckExpectedVotes(context.Background(), c.req)
			if !statetest.IsStatus(err, c.code, c.msg) {
				t.Fatalf("got %v, want %v %q", err, c.code, c.msg)
			}
		})
	}
}

func TestRecordOverride(t *testing.T) {
	w := newWorld()
	w.meta.ms.Nodes["n0"] = &consensus.NodeRecord{Name: "n0", State: consensus.NodeRemoved}
	removed, err := w.manager().RecordOverride(context.Background(), w.meta, w.meta.ms)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(removed, []string{"n2", "n3"}) {
		t.Fatalf("removed %q", removed)
	}
	want := []string{"state n2 removed", "state n3 removed",
		"audit expected-votes-override: expected votes forced to 1 on n1 from metadata index 42; left out: n2, n3"}
	if j := w.meta.j.List(); !slices.Equal(j, want) {
		t.Fatalf("journal %q, want %q", j, want)
	}
	if _, err := w.manager().RecordOverride(context.Background(), &failingMeta{w.meta}, &consensus.MetaState{Nodes: map[string]*consensus.NodeRecord{"n5": {Name: "n5"}}}); status.Code(err) != codes.Internal ||
		!strings.Contains(err.Error(), "override applied, but recording n5 as removed failed") {
		t.Fatalf("failing record: %v", err)
	}
}

type failingMeta struct{ *fakeMeta }

func (failingMeta) SetNodeState(context.Context, string, string) (consensus.NodeRecord, error) {
	return consensus.NodeRecord{}, errors.New("no leader")
}

// A join the metadata would refuse (unknown, wrong, used or expired token,
// a taken name) is refused by the pre-check read: nothing is proposed, and
// the refusal is counted under its reason.
func TestAdmitRefusedBeforeProposal(t *testing.T) {
	cases := []struct {
		err    error
		code   codes.Code
		reason string
	}{
		{consensus.ErrTokenInvalid, codes.PermissionDenied, RefusedBadToken},
		{fmt.Errorf("%w (by n9)", consensus.ErrTokenUsed), codes.PermissionDenied, RefusedUsedToken},
		{consensus.ErrTokenExpired, codes.PermissionDenied, RefusedExpiredToken},
		{fmt.Errorf("%w: n4", consensus.ErrNodeExists), codes.AlreadyExists, RefusedNameTaken},
	}
	for _, c := range cases {
		t.Run(c.reason, func(t *testing.T) {
			w := newWorld()
			_, req := member(t, w)
			w.meta.checkErr = c.err
			_, err := w.manager().Admit(context.Background(), req)
			if !statetest.IsStatus(err, c.code, c.err.Error()) {
				t.Fatalf("got %v, want %v %q", err, c.code, c.err)
			}
			if j := w.meta.j.List(); len(j) != 0 {
				t.Fatalf("a refused join proposed %q", j)
			}
			if w.meta.checks != 1 || !slices.Equal(w.refused, []string{c.reason}) {
				t.Fatalf("checks %d, refusals counted %q", w.meta.checks, w.refused)
			}
		})
	}
}

// Join attempts are limited per source address before the token is even
// parsed; each refusal is counted, and another address is not affected.
func TestAdmitRateLimitedPerSource(t *testing.T) {
	w := newWorld()
	_, req := member(t, w)
	m := w.manager()
	bogus := &tandemv1.PeerJoinRequest{Token: "nonsense", NodeName: "n9"}
	from := func(ip string) context.Context {
		return peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP(ip), Port: 40000}})
	}
	for range joinBurst {
		if _, err := m.Admit(from("10.0.0.66"), bogus); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("bogus join within the burst: %v", err)
		}
	}
	for range 100 {
		_, err := m.Admit(from("10.0.0.66"), bogus)
		if !statetest.IsStatus(err, codes.ResourceExhausted, "too many join attempts from 10.0.0.66") {
			t.Fatalf("join past the burst: %v", err)
		}
	}
	if _, err := m.Admit(from("10.0.0.4"), req); err != nil {
		t.Fatalf("a join from another address: %v", err)
	}
	counts := map[string]int{}
	for _, r := range w.refused {
		counts[r]++
	}
	if counts[RefusedMalformed] != joinBurst || counts[RefusedRateLimited] != 100 || len(counts) != 2 {
		t.Fatalf("refusals counted %v", counts)
	}
	if w.meta.checks != 1 || w.quorumN != 1 {
		t.Fatalf("bogus joins reached the metadata: %d checks, %d quorum checks", w.meta.checks, w.quorumN)
	}
}

// A node on a release below the cluster version is refused once its token
// checks out, before anything is signed or proposed, with what to do; a
// release from before versions (protocol 0) reads as level 1.
func TestAdmitRefusesOlderRelease(t *testing.T) {
	for _, c := range []struct {
		protocol uint32
		cluster  uint32
		refused  bool
	}{
		{0, 2, true}, {1, 2, true}, {2, 2, false}, {0, 1, false}, {3, 2, false},
	} {
		w := newWorld()
		_, req := member(t, w)
		req.Protocol = c.protocol
		w.meta.ms.ClusterVersion = c.cluster
		_, err := w.manager().Admit(context.Background(), req)
		if !c.refused {
			if err != nil {
				t.Fatalf("protocol %d, cluster %d: %v", c.protocol, c.cluster, err)
			}
			continue
		}
		if !statetest.IsStatus(err, codes.FailedPrecondition, fmt.Sprintf("cluster is at version %d", c.cluster)) || !strings.Contains(err.Error(), "upgrade-status") {
			t.Fatalf("protocol %d, cluster %d: got %v", c.protocol, c.cluster, err)
		}
		if j := w.meta.j.List(); len(j) != 0 {
			t.Fatalf("a refused join proposed %q", j)
		}
		if !slices.Equal(w.refused, []string{RefusedOldRelease}) {
			t.Fatalf("refusals counted %q", w.refused)
		}
	}
}

// TestAdmitRecordsRelease: the join entry carries the node's release and
// protocol level, so a freshly joined node needs no node-version entry of
// its own (which came a second after the join and made the cluster's
// applied index move under tests that compare it). A request from an
// older release, without them, leaves the record for the node to fill.
func TestAdmitRecordsRelease(t *testing.T) {
	for _, c := range []struct {
		release  string
		protocol uint32
		want     string
	}{{"v9", 1, "v9"}, {"", 1, ""}, {"v9", 0, ""}} {
		w := newWorld()
		_, req := member(t, w)
		req.Release, req.Protocol = c.release, c.protocol
		if _, err := w.manager().Admit(context.Background(), req); err != nil {
			t.Fatal(err)
		}
		if got := w.meta.joined; got.Version != c.want || (c.want != "" && got.Protocol != c.protocol) {
			t.Fatalf("release %q protocol %d: the join recorded %q protocol %d", c.release, c.protocol, got.Version, got.Protocol)
		}
	}
}
