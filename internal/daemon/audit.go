package daemon

import (
	"context"

	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

func (s *clusterService) Audit(_ context.Context, req *tandemv1.AuditRequest) (*tandemv1.AuditResponse, error) {
	return s.d.clus.Audit(req)
}
