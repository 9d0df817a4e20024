package main

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/tandemhci/tandem/internal/adminclient"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// TestJSONNumbersAreNumbers: sizes, epochs and IDs come out as JSON
// numbers, states by their table names, and the output still reads back
// as the same message.
func TestJSONNumbersAreNumbers(t *testing.T) {
	dir, _, _ := startVolumeDaemon(t)
	r := runCLI(t, "", "--data-dir", dir, "-o", "json", "volume", "show", "vm-disk")
	r.wantCode(t, 0)
	wantMatch(t, "stdout", r.stdout, `"size_bytes": 21474836480,`, `"epoch": 3,`, `"shard_id": 1001,`, `"dirty_bytes": \d+`, `"created": "2025-03-01T12:00:00Z"`, `"state": "UpToDate"`, `"state": "Outdated"`)
	if strings.Contains(r.stdout, `"21474836480"`) || strings.Contains(r.stdout, "REPLICA_STATE_") {
		t.Errorf("a 64-bit number is still a string:\n%s", r.stdout)
	}
	var got tandemv1.VolumeInfo
	if err := adminclient.UnmarshalJSON([]byte(r.stdout), &got); err != nil {
		t.Fatalf("does not read back: %v", err)
	}
	if !proto.Equal(&got, sampleVolume()) {
		t.Errorf("round trip differs:\n%v\n%v", &got, sampleVolume())
	}
	// Field order is the message's, not alphabetical.
	if strings.Index(r.stdout, `"name"`) > strings.Index(r.stdout, `"size_bytes"`) {
		t.Errorf("fields reordered:\n%s", r.stdout)
	}
}
