package vmm

import (
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// isStatus reports whether err is a status error of code whose text
// contains msg: what the tests of refusals check.
func isStatus(err error, code codes.Code, msg string) bool {
	return err != nil && status.Code(err) == code && strings.Contains(err.Error(), msg)
}
