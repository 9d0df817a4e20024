package cluster

import (
	"strings"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/apierr"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// Audit answers from this node's applied metadata: the trail is for
// reading after the fact, and a node without quorum still shows what it has.
func (m *Manager) Audit(req *tandemv1.AuditRequest) (*tandemv1.AuditResponse, error) {
	meta := m.st.Meta()
	if meta == nil {
		return nil, errNotInCluster
	}
	ms, err := meta.LocalState()
	if err != nil {
		return nil, apierr.From(err)
	}
	return &tandemv1.AuditResponse{Entries: filterAudit(ms.Audit, req)}, nil
}

// filterAudit keeps the entries that match every filter given, oldest
// first, and of those the newest limit.
func filterAudit(trail []consensus.AuditEntry, req *tandemv1.AuditRequest) []*tandemv1.AuditEntry {
	var out []*tandemv1.AuditEntry
	for _, a := range trail {
		switch {
		case req.Node != "" && a.Node != req.Node:
		case req.Action != "" && !strings.HasPrefix(a.Action, req.Action):
		case req.Since != nil && a.At.Before(req.Since.AsTime()):
		default:
			out = append(out, &tandemv1.AuditEntry{At: timestamppb.New(a.At), Node: a.Node, Action: a.Action, Detail: a.Detail, Credential: a.Credential})
		}
	}
	if n := int(req.Limit); n > 0 && len(out) > n {
		out = out[len(out)-n:]
	}
	return out
}
