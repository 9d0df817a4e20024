package chaos

import (
	"encoding/json"
	"io"
	"sync"
	"time"
)

// OpKind is what a client did.
type OpKind string

const (
	OpWrite OpKind = "write"
	OpRead  OpKind = "read"
)

// Outcome is how an operation ended. Fail and Unknown both mean "not
// acknowledged": the data may or may not have reached the disk.
type Outcome string

const (
	Invoked Outcome = "invoke"  // not completed (yet): counts as unknown
	OK      Outcome = "ok"      // the server acknowledged it
	Fail    Outcome = "fail"    // the server answered with an error
	Unknown Outcome = "unknown" // no answer: timeout, connection lost
)

// Op is one operation of a client, with the times it was invoked and
// completed. Within a block, one client writes, one operation at a time, and
// generations only grow: that is what lets the checker decide what a block
// may hold without a full linearizability search.
type Op struct {
	ID     int     `json:"id"`
	Client int     `json:"client"`
	Volume string  `json:"volume"`
	Block  uint64  `json:"block"`
	Kind   OpKind  `json:"kind"`
	Gen    uint64  `json:"gen"`             // write: generation written; read: generation found
	State  string  `json:"state,omitempty"` // read: BlockState found
	Seen   *Stamp  `json:"seen,omitempty"`  // read: the stamp found, when whole
	Node   string  `json:"node"`            // the primary the client was connected to
	Epoch  uint64  `json:"epoch"`           // that primary's epoch when the client connected
	Result Outcome `json:"outcome"`
	Err    string  `json:"err,omitempty"`
	// Invoke and Complete bracket the operation (Complete is zero while
	// Result is Invoked).
	Invoke   time.Time `json:"invoke"`
	Complete time.Time `json:"complete"`
}

// History records the operations of every client. Safe for concurrent use.
type History struct {
	mu  sync.Mutex
	ops []Op
}

// Invoke records the start of op and returns its ID.
func (h *History) Invoke(op Op) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	op.ID = len(h.ops)
	op.Result = Invoked
	if op.Invoke.IsZero() {
		op.Invoke = time.Now()
	}
	h.ops = append(h.ops, op)
	return op.ID
}

// Complete records how op id ended; f may fill in what a read found.
func (h *History) Complete(id int, result Outcome, err error, f func(*Op)) {
	now := time.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	op := &h.ops[id]
	op.Result, op.Complete = result, now
	if err != nil {
		op.Err = err.Error()
	}
	if f != nil {
		f(op)
	}
}

// Ops returns a copy of every operation so far.
func (h *History) Ops() []Op {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Op(nil), h.ops...)
}

// WriteJSON writes the history, one operation per line.
func (h *History) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	for _, op := range h.Ops() {
		if err := enc.Encode(op); err != nil {
			return err
		}
	}
	return nil
}
