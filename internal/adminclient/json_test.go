package adminclient

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

func TestJSONRoundTrip(t *testing.T) {
	in := &tandemv1.ClusterStatus{Initialized: true, ClusterName: "prod", Term: 7, AppliedIndex: 1 << 40,
		Nodes: []*tandemv1.NodeInfo{
			{Name: "a", Role: tandemv1.NodeRole_NODE_ROLE_WITNESS, Vote: tandemv1.Vote_VOTE_NON_VOTING, Health: tandemv1.Health_HEALTH_ONLINE,
				JoinedAt: timestamppb.New(timestamppb.Now().AsTime()), RttUs: 420},
			{Name: "b"},
		}}
	b, err := MarshalJSON(in)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for _, want := range []string{`"applied_index": 1099511627776`, `"term": 7,`, `"role": "witness"`, `"vote": "non-voting"`, `"health": "online"`, `"rtt_us": 420`, `"role": ""`, `"health": "unknown"`} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %s:\n%s", want, s)
		}
	}
	if strings.Contains(s, "NODE_ROLE_") || strings.Contains(s, `"1099511627776"`) {
		t.Errorf("proto enum names or quoted numbers left:\n%s", s)
	}
	var out tandemv1.ClusterStatus
	if err := UnmarshalJSON(b, &out); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(in, &out) {
		t.Errorf("round trip differs:\n%v\n%v", in, &out)
	}
	// Plain protojson (e.g. from grpcurl) reads too, and unknown fields are ignored.
	pj, _ := protojson.Marshal(in)
	pj = []byte(strings.Replace(string(pj), "{", `{"from_the_future": 1, `, 1))
	var out2 tandemv1.ClusterStatus
	if err := UnmarshalJSON(pj, &out2); err != nil || !proto.Equal(in, &out2) {
		t.Errorf("plain protojson: %v\n%v", err, &out2)
	}
}

func TestEnumName(t *testing.T) {
	for _, tc := range []struct {
		v    protoreflect.Enum
		want string
	}{
		{tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE, "UpToDate"},
		{tandemv1.ReplicaState_REPLICA_STATE_SYNC_TARGET, "SyncTarget"},
		{tandemv1.ReplicaState_REPLICA_STATE_INCONSISTENT, "Inconsistent"},
		{tandemv1.ReplicaState_REPLICA_STATE_UNSPECIFIED, ""},
		{tandemv1.Vote_VOTE_NON_VOTING, "non-voting"},
		{tandemv1.Health_HEALTH_OFFLINE, "offline"},
		{tandemv1.NodeRole_NODE_ROLE_DATA, "data"},
	} {
		if got := EnumName(tc.v.Descriptor().Values().ByNumber(tc.v.Number())); got != tc.want {
			t.Errorf("%v: %q, want %q", tc.v, got, tc.want)
		}
	}
}
