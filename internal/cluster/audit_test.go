package cluster

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tandemhci/tandem/consensus"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

func TestFilterAudit(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	trail := []consensus.AuditEntry{
		{At: t0, Node: "n1", Action: "volume-create", Detail: "a"},
		{At: t0.Add(time.Hour), Node: "n2", Action: "config-set", Detail: "b"},
		{At: t0.Add(2 * time.Hour), Node: "n1", Action: "volume-delete", Detail: "c"},
		{At: t0.Add(3 * time.Hour), Node: "n1", Action: "vm-create", Detail: "d"},
	}
	for _, tc := range []struct {
		req  *tandemv1.AuditRequest
		want string
	}{
		{&tandemv1.AuditRequest{}, "abcd"},
		{&tandemv1.AuditRequest{Node: "n1"}, "acd"},
		{&tandemv1.AuditRequest{Action: "volume"}, "ac"},
		{&tandemv1.AuditRequest{Since: timestamppb.New(t0.Add(90 * time.Minute))}, "cd"},
		{&tandemv1.AuditRequest{Node: "n1", Limit: 2}, "cd"},
		{&tandemv1.AuditRequest{Node: "n3"}, ""},
	} {
		got := ""
		for _, e := range filterAudit(trail, tc.req) {
			got += e.Detail
		}
		if got != tc.want {
			t.Errorf("%v: got %q, want %q", tc.req, got, tc.want)
		}
	}
}
