package statetest

import (
	"errors"
	"slices"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestJournal(t *testing.T) {
	var j Journal
	j.Add("start %s on %s", "vm1", "n2")
	j.Add("audit x")
	j.Add("start %s on %s", "vm2", "n3")
	if got := j.List(); !slices.Equal(got, []string{"start vm1 on n2", "audit x", "start vm2 on n3"}) {
		t.Fatalf("List = %q", got)
	}
	if j.Count("start ") != 2 || j.Index("audit") != 1 || j.Index("stop") != -1 || !j.Has("start vm2") || j.Has("stop") {
		t.Fatalf("Count/Index/Has wrong over %q", j.List())
	}
}

func TestIsStatus(t *testing.T) {
	err := status.Error(codes.FailedPrecondition, "no quorum: nothing was changed")
	for _, tc := range []struct {
		err  error
		code codes.Code
		msg  string
		want bool
	}{
		{err, codes.FailedPrecondition, "no quorum", true},
		{err, codes.FailedPrecondition, "", true},
		{err, codes.Unavailable, "no quorum", false},
		{err, codes.FailedPrecondition, "leader", false},
		{nil, codes.FailedPrecondition, "", false},
		{nil, codes.OK, "", true},
		{errors.New("plain"), codes.Unknown, "plain", true},
	} {
		if got := IsStatus(tc.err, tc.code, tc.msg); got != tc.want {
			t.Errorf("IsStatus(%v, %v, %q) = %v", tc.err, tc.code, tc.msg, got)
		}
	}
}
