package adminclient

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// CallError is a failed admin call, tagged with where it went. It keeps the
// gRPC status, so status.Code and status.FromError work on it unchanged.
type CallError struct {
	Method  string // full gRPC method, e.g. /tandem.v1.Cluster/Status
	Target  string // socket path or host:port
	Local   bool   // true for the unix socket
	Timeout time.Duration
	Err     error
}

func (e *CallError) Error() string { return e.Err.Error() }
func (e *CallError) Unwrap() error { return e.Err }

// GRPCStatus returns the status of the underlying error.
func (e *CallError) GRPCStatus() *status.Status { return status.Convert(e.Err) }

// Explain turns an error from Dial or from a call into one line for users.
func Explain(err error) string {
	if err == nil {
		return ""
	}
	var ce *CallError
	errors.As(err, &ce) // ce stays nil for errors that never reached a call
	st, ok := innerStatus(err)
	if !ok {
		switch {
		case errors.Is(err, context.Canceled):
			return "interrupted"
		case errors.Is(err, context.DeadlineExceeded):
			return "timed out"
		}
		return err.Error()
	}
	msg := st.Message()
	if msg == "" {
		msg = st.Code().String()
	}
	where := "tandemd"
	if ce != nil {
		where = "tandemd at " + ce.Target
	}

	switch st.Code() {
	case codes.Canceled:
		return "interrupted"
	case codes.DeadlineExceeded:
		if ce != nil && !readOnly(ce.Method) {
			// The daemon may have received it: a change committed after
			// the client gave up is not undone, and a blind retry may do
			// it twice or fail on the first one's result.
			return fmt.Sprintf("no answer from %s within %s; the request may still complete there: check its result before retrying (or use a longer --timeout)", where, ce.Timeout)
		}
		if ce != nil {
			return fmt.Sprintf("no answer from %s within %s (try a longer --timeout)", where, ce.Timeout)
		}
		return "timed out: " + msg
	case codes.Unavailable:
		// A daemon relaying a peer's failure prefixes it with "on NODE: ":
		// that is the daemon's answer about another node, not a failure to
		// reach the daemon.
		if node, rest, ok := relayed(msg); ok && isTransportFailure(rest) {
			return fmt.Sprintf("unavailable: node %s does not answer (%s)", node, transportDetail(rest, nil))
		}
		if !isTransportFailure(msg) {
			// The daemon itself answered Unavailable (e.g. no quorum).
			return "unavailable: " + msg
		}
		detail := transportDetail(msg, ce)
		switch {
		case ce != nil && ce.Local && strings.Contains(detail, "permission denied"):
			return fmt.Sprintf("cannot reach %s: permission denied (the socket is root-only; run as root)", where)
		case ce != nil && ce.Local:
			return fmt.Sprintf("cannot reach %s: is it running? (%s)", where, detail)
		case strings.Contains(detail, "handshake") || strings.Contains(detail, "certificate"):
			return fmt.Sprintf("TLS handshake with %s failed: %s (check the admin credentials)", where, detail)
		default:
			return fmt.Sprintf("cannot reach %s (%s)", where, detail)
		}
	case codes.Unauthenticated:
		return fmt.Sprintf("refused: %s (check the API credential)", msg)
	case codes.PermissionDenied:
		return "permission denied: " + msg
	case codes.Unimplemented:
		if ce != nil {
			return fmt.Sprintf("%s does not implement %s yet", where, strings.TrimPrefix(ce.Method, "/"))
		}
		return "not implemented: " + msg
	case codes.Internal, codes.Unknown, codes.DataLoss:
		return "tandemd error: " + msg
	default:
		// FailedPrecondition, InvalidArgument, NotFound, AlreadyExists, ...:
		// the daemon's message is written for the user already.
		return msg
	}
}

// innerStatus finds the status of the innermost gRPC error, so wrapping
// with fmt.Errorf does not repeat the context in the message.
func innerStatus(err error) (*status.Status, bool) {
	var ce *CallError
	if errors.As(err, &ce) {
		err = ce.Err
	}
	var gs interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &gs) || gs.GRPCStatus() == nil {
		return nil, false
	}
	return gs.GRPCStatus(), true
}

// isTransportFailure tells the client-side connection errors gRPC reports as
// Unavailable apart from an Unavailable answer sent by the daemon (e.g. "no
// quorum"), whose text is free-form. gRPC's own messages start with these.
// relayed splits "on NODE: rest", the form in which tandemd passes on what
// another node answered.
func relayed(msg string) (node, rest string, ok bool) {
	after, found := strings.CutPrefix(msg, "on ")
	if !found {
		return "", "", false
	}
	node, rest, ok = strings.Cut(after, ": ")
	if !ok || node == "" || strings.ContainsAny(node, " \t") {
		return "", "", false
	}
	return node, rest, true
}

func isTransportFailure(msg string) bool {
	for _, p := range []string{"connection error", "last connection error", "last resolver error",
		"error reading from server", "transport is closing", "name resolver error", "no children to pick from"} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return strings.Contains(msg, "Error while dialing")
}

// transportDetail shortens gRPC's nested connection error to its cause, e.g.
// `connection error: desc = "transport: Error while dialing: dial unix
// /x/tandemd.sock: connect: no such file or directory"` to
// "connect: no such file or directory".
func transportDetail(msg string, ce *CallError) string {
	d := msg
	for _, p := range []string{"connection error: desc = ", "last connection error: "} {
		if i := strings.Index(d, p); i >= 0 {
			d = d[i+len(p):]
		}
	}
	d = strings.Trim(d, `"`)
	d = strings.TrimPrefix(d, "transport: ")
	d = strings.TrimPrefix(d, "Error while dialing: ")
	d = strings.TrimPrefix(d, "authentication handshake failed: ")
	if ce != nil {
		for _, p := range []string{"dial unix " + ce.Target + ": ", "dial tcp " + ce.Target + ": "} {
			d = strings.TrimPrefix(d, p)
		}
	}
	return d
}

// readOnly reports whether the gRPC method (full name, or just the method)
// only reads: a timed-out call of any other may still have changed
// something. Unknown methods count as changing.
func readOnly(method string) bool {
	if i := strings.LastIndexByte(method, '/'); i >= 0 {
		method = method[i+1:]
	}
	return slices.Contains(readOnlyMethods(), method)
}

// readOnlyMethods names the API's methods that change nothing, in any
// service; TestReadOnlyMethodsExist keeps it to methods the API has.
func readOnlyMethods() []string {
	return []string{"Audit", "ComputeInfo", "DiskInfo", "Events", "GetConfig", "HALiveness", "ImageRead",
		"List", "ListExportCerts", "Ping", "Show", "Status", "UpgradeStatus",
		"VMMigrationStats", "VMState", "VolumeChecksum", "VolumeStatus"}
}
