package main

import (
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// fakeEvents streams a fixed list of events.
type fakeEvents struct {
	fakeHA
	events []*tandemv1.Event
}

func (f *fakeEvents) Events(_ *tandemv1.EventsRequest, st tandemv1.HA_EventsServer) error {
	for _, e := range f.events {
		if err := st.Send(e); err != nil {
			return err
		}
	}
	return nil
}

func TestEventsHeaderAndEmpty(t *testing.T) {
	ev := &fakeEvents{}
	dir, _ := startDaemonWith(t, func(s *grpc.Server) { tandemv1.RegisterHAServer(s, ev) })
	r := runCLI(t, "", "--data-dir", dir, "events")
	r.wantCode(t, 0)
	wantMatch(t, "stdout", r.stdout, `^TIME\s+SEQ\s+KIND\s+SUBJECT\s+DETAIL \(BY\)\n\(no events\)\n$`)

	at := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	ev.events = []*tandemv1.Event{
		{Seq: 7, At: timestamppb.New(at), By: "n1", Kind: "volume-create", Detail: "volume db"},
		{Seq: 8, At: timestamppb.New(at), By: "n1", Kind: "vm-recovered", Node: "n2", Vm: "web", Detail: "on n2"},
	}
	r = runCLI(t, "", "--data-dir", dir, "events")
	r.wantCode(t, 0)
	// One timestamp style across the CLI: formatTime's.
	stamp := formatTime(timestamppb.New(at))
	wantMatch(t, "stdout", r.stdout,
		`^TIME\s+SEQ`,
		`\n`+stamp+`\s+7\s+volume-create\s+-\s+volume db \(by n1\)\n`,
		`\n`+stamp+`\s+8\s+vm-recovered\s+n2 vm web\s+on n2 \(by n1\)\n$`)
}
