package statetest

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Journal records the calls that change something, in order, across the
// fakes of one test, so a test can check the steps and their order. The
// zero Journal is empty and ready; it is safe for concurrent use.
type Journal struct {
	mu    sync.Mutex
	calls []string
}

// Add records one call, formatted as by fmt.Sprintf.
func (j *Journal) Add(format string, args ...any) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.calls = append(j.calls, fmt.Sprintf(format, args...))
}

// List is a copy of the calls so far.
func (j *Journal) List() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Clone(j.calls)
}

// Count is the number of calls starting with prefix.
func (j *Journal) Count(prefix string) int {
	n := 0
	for _, c := range j.List() {
		if strings.HasPrefix(c, prefix) {
			n++
		}
	}
	return n
}

// Index is the position of the first call starting with prefix, -1 if
// none.
func (j *Journal) Index(prefix string) int {
	return slices.IndexFunc(j.List(), func(c string) bool { return strings.HasPrefix(c, prefix) })
}

// Has reports whether a call starts with prefix.
func (j *Journal) Has(prefix string) bool { return j.Index(prefix) >= 0 }

// IsStatus reports whether err is a gRPC status error with code c whose
// message contains msg ("" matches any message). A nil err has code OK.
func IsStatus(err error, c codes.Code, msg string) bool {
	s := status.Convert(err)
	return s.Code() == c && strings.Contains(s.Message(), msg)
}

// Quorum is a quorum check that passes while *quorate and otherwise fails
// as the real one does, with FailedPrecondition.
func Quorum(quorate *bool) func(context.Context) error {
	return func(context.Context) error {
		if !*quorate {
			return status.Error(codes.FailedPrecondition, "no quorum: a majority of voters is not reachable; nothing was changed")
		}
		return nil
	}
}
