package consensus

import (
	"errors"

	sm "github.com/lni/dragonboat/v4/statemachine"
)

// State machines refuse commands with a result code, an index into a table
// of sentinel errors (0 is success, the last entry the catch-all), so that
// every replica and every caller agree on the refusal; the text travels too.

// ResultError is a refusal by a state machine; errors.Is matches its base.
type ResultError struct {
	Base error
	Msg  string
}

func (e *ResultError) Error() string { return e.Msg }
func (e *ResultError) Unwrap() error { return e.Base }

// rejectWith encodes err as a refusal using table.
func rejectWith(table []error, err error) sm.Result {
	code := uint64(len(table) - 1)
	for i, e := range table {
		if e != nil && errors.Is(err, e) {
			code = uint64(i)
			break
		}
	}
	return sm.Result{Value: code, Data: []byte(err.Error())}
}

// resultError decodes a refusal, or returns nil for success.
func resultError(table []error, res sm.Result) error {
	if res.Value == 0 {
		return nil
	}
	base := table[len(table)-1]
	if res.Value < uint64(len(table)) {
		base = table[res.Value]
	}
	return &ResultError{Base: base, Msg: string(res.Data)}
}
