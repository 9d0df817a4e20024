package main

import (
	"context"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

func (f *fakeDaemon) Audit(_ context.Context, r *tandemv1.AuditRequest) (*tandemv1.AuditResponse, error) {
	if r.GetAction() == "nothing" {
		return &tandemv1.AuditResponse{}, nil
	}
	at := timestamppb.New(time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC))
	return &tandemv1.AuditResponse{Entries: []*tandemv1.AuditEntry{{At: at, Node: "node-a", Action: "volume-create", Detail: "volume db (1 GiB)", Credential: "ops"}}}, nil
}

func TestAudit(t *testing.T) {
	dir, f := startDaemon(t)
	r := runCLI(t, "", "--data-dir", dir, "audit", "--node", "node-a", "--action", "volume", "--since", "24h", "--limit", "5")
	r.wantCode(t, 0)
	wantMatch(t, "stdout", r.stdout, `TIME\s+NODE\s+CREDENTIAL\s+ACTION\s+DETAIL\n`, `node-a\s+ops\s+volume-create\s+volume db \(1 GiB\)`)
	req := f.only(t).req.(*tandemv1.AuditRequest)
	if req.GetNode() != "node-a" || req.GetAction() != "volume" || req.GetLimit() != 5 {
		t.Errorf("request %v", req)
	}
	if ago := time.Since(req.GetSince().AsTime()); ago < 23*time.Hour || ago > 25*time.Hour {
		t.Errorf("--since 24h sent as %s ago", ago)
	}

	r = runCLI(t, "", "--data-dir", dir, "audit", "--action", "nothing")
	r.wantCode(t, 0)
	wantMatch(t, "stdout", r.stdout, `\(no entries match\)`)

	for _, bad := range []string{"yesterday", "-5h"} {
		r = runCLI(t, "", "--data-dir", dir, "audit", "--since", bad)
		r.wantCode(t, 2)
		wantMatch(t, "stderr", r.stderr, `--since: "`+bad+`"`)
	}
}

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	if got, err := parseSince("90m", now); err != nil || !got.Equal(now.Add(-90*time.Minute)) {
		t.Errorf("90m: %v %v", got, err)
	}
	if got, err := parseSince("2026-12-01T08:00:00Z", now); err != nil || got.Day() != 1 {
		t.Errorf("RFC 3339: %v %v", got, err)
	}
}
