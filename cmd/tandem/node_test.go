package main

import (
	"testing"

	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// TestNodeRemoveForce: a refusal is printed as tandemd words it and changes
// nothing; --force is sent and what it overrode is printed as warnings.
// Without a terminal there is no prompt.
func TestNodeRemoveForce(t *testing.T) {
	dir, f := startDaemon(t)
	r := runCLI(t, "", "--data-dir", dir, "node", "remove", "node-b")
	r.wantCode(t, 1)
	wantMatch(t, "stderr", r.stderr, `refusing to remove node node-b:`, `node node-b is online`, `primary of volume db`, `--force overrides`)
	if c := f.only(t); c.req.(*tandemv1.RemoveNodeRequest).GetForce() {
		t.Error("force sent without --force")
	}

	r = runCLI(t, "", "--data-dir", dir, "node", "remove", "node-b", "--force")
	r.wantCode(t, 0)
	wantMatch(t, "stdout", r.stdout, `removed node "node-b"`)
	wantMatch(t, "stderr", r.stderr,
		`(?m)^warning: --force overrode: node node-b is online`,
		`(?m)^warning: --force overrode: node node-b is the primary of volume db`)
	if calls := f.recorded(); len(calls) != 2 || !calls[1].req.(*tandemv1.RemoveNodeRequest).GetForce() {
		t.Errorf("--force not sent: %v", calls)
	}
	r = runCLI(t, "", "--data-dir", dir, "node", "remove", "--help")
	wantMatch(t, "help", r.stdout, `--force`, `--yes`, `Examples:`, `overrides exactly those safety checks`)
}
