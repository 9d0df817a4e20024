package faultfs

// Control: a mount served by another process (cmd/tandem-faultfs) is
// driven over a unix socket, one JSON object per line each way:
//
//	{"op":"set","fault":{"ops":"write|sync","path":"volumes","err":"EIO","delay":"200ms","times":1}}
//	{"op":"clear"} {"op":"faults"} {"op":"powerloss"} {"op":"sync"}
//	{"op":"counters"} {"op":"unmount"}
//
// Every reply is {"ok":true,...} or {"ok":false,"error":"..."}; "faults"
// adds "faults", "counters" adds "counters" and "dirty_bytes".

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"
)

// WireFault is a Fault as the control protocol writes it.
type WireFault struct {
	Ops   string `json:"ops"`             // "write", "write|sync", "all"
	Path  string `json:"path,omitempty"`  // Fault.Path
	Err   string `json:"err,omitempty"`   // "EIO", "ENOSPC", …; empty: delay only
	Delay string `json:"delay,omitempty"` // a time.ParseDuration string
	Times int    `json:"times,omitempty"` // Fault.Times
}

// ToWire writes f for the control protocol.
func (f Fault) ToWire() WireFault {
	w := WireFault{Ops: f.Ops.String(), Path: f.Path, Times: f.Times}
	if f.Err != 0 {
		w.Err = errnoName(f.Err)
	}
	if f.Delay > 0 {
		w.Delay = f.Delay.String()
	}
	return w
}

// Fault reads w back.
func (w WireFault) Fault() (Fault, error) {
	ops, err := ParseOp(w.Ops)
	if err != nil {
		return Fault{}, err
	}
	errno, err := ParseErrno(w.Err)
	if err != nil {
		return Fault{}, err
	}
	var delay time.Duration
	if w.Delay != "" {
		if delay, err = time.ParseDuration(w.Delay); err != nil {
			return Fault{}, fmt.Errorf("faultfs: delay %q: %w", w.Delay, err)
		}
	}
	f := Fault{Ops: ops, Path: w.Path, Err: errno, Delay: delay, Times: w.Times}
	return f, f.validate()
}

type request struct {
	Op    string     `json:"op"`
	Fault *WireFault `json:"fault,omitempty"`
}

type response struct {
	OK         bool        `json:"ok"`
	Error      string      `json:"error,omitempty"`
	Faults     []WireFault `json:"faults,omitempty"`
	Counters   *Counters   `json:"counters,omitempty"`
	DirtyBytes int64       `json:"dirty_bytes,omitempty"`
}

// Serve answers control requests for f on a unix socket at socketPath
// until ctx ends or a client asks to unmount; it then unmounts f (if no
// client did) and removes the socket.
func Serve(ctx context.Context, f *FS, socketPath string) error {
	_ = os.Remove(socketPath) // a socket left by a killed server
	ln, err := net.Listen("unix", socketPath)
	if err != nil {
		return fmt.Errorf("faultfs: control socket: %w", err)
	}
	defer os.Remove(socketPath)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				uctx, ucancel := context.WithTimeout(context.Background(), time.Minute)
				defer ucancel()
				return f.Unmount(uctx)
			}
			return fmt.Errorf("faultfs: control socket: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conn.Close()
			serveConn(ctx, f, conn, cancel)
		}()
	}
}

func serveConn(ctx context.Context, f *FS, conn net.Conn, stop func()) {
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
			conn.Close() // an idle client must not keep Serve waiting
		case <-done:
		}
	}()
	sc := bufio.NewScanner(conn)
	enc := json.NewEncoder(conn)
	for sc.Scan() {
		var req request
		resp := response{OK: true}
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			resp = response{Error: fmt.Sprintf("faultfs: bad request: %v", err)}
		} else if err := handleRequest(ctx, f, req, &resp); err != nil {
			resp = response{Error: err.Error()}
		}
		if err := enc.Encode(resp); err != nil {
			return
		}
		if req.Op == "unmount" && resp.OK {
			stop()
			return
		}
	}
}

func handleRequest(ctx context.Context, f *FS, req request, resp *response) error {
	switch req.Op {
	case "set":
		if req.Fault == nil {
			return errors.New("faultfs: set needs a fault")
		}
		flt, err := req.Fault.Fault()
		if err != nil {
			return err
		}
		return f.SetFault(flt)
	case "clear":
		f.Clear()
	case "faults":
		for _, flt := range f.Faults() {
			resp.Faults = append(resp.Faults, flt.ToWire())
		}
	case "powerloss":
		f.PowerLoss()
	case "sync":
		return f.Sync()
	case "counters":
		c := f.Counters()
		resp.Counters = &c
		resp.DirtyBytes = f.DirtyBytes()
	case "unmount":
		uctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		return f.Unmount(uctx)
	default:
		return fmt.Errorf("faultfs: unknown request %q (want set, clear, faults, powerloss, sync, counters or unmount)", req.Op)
	}
	return nil
}

// Client drives a mount served by Serve in another process. Its methods
// are safe for concurrent use.
type Client struct {
	mu   sync.Mutex
	conn net.Conn
	sc   *bufio.Scanner
}

// Dial connects to the control socket at socketPath.
func Dial(ctx context.Context, socketPath string) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socketPath)
	if err != nil {
		return nil, fmt.Errorf("faultfs: control socket: %w", err)
	}
	return &Client{conn: conn, sc: bufio.NewScanner(conn)}, nil
}

// Close closes the connection; the mount stays.
func (c *Client) Close() error { return c.conn.Close() }

func (c *Client) call(ctx context.Context, req request) (*response, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if dl, ok := ctx.Deadline(); ok {
		c.conn.SetDeadline(dl)
		defer c.conn.SetDeadline(time.Time{})
	}
	b, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	if _, err := c.conn.Write(append(b, '\n')); err != nil {
		return nil, fmt.Errorf("faultfs: control %s: %w", req.Op, err)
	}
	if !c.sc.Scan() {
		err := c.sc.Err()
		if err == nil {
			err = errors.New("connection closed")
		}
		return nil, fmt.Errorf("faultfs: control %s: %w", req.Op, err)
	}
	var resp response
	if err := json.Unmarshal(c.sc.Bytes(), &resp); err != nil {
		return nil, fmt.Errorf("faultfs: control %s: bad reply: %w", req.Op, err)
	}
	if !resp.OK {
		return nil, fmt.Errorf("faultfs: control %s: %s", req.Op, resp.Error)
	}
	return &resp, nil
}

// SetFault is FS.SetFault.
func (c *Client) SetFault(ctx context.Context, f Fault) error {
	if err := f.validate(); err != nil {
		return err
	}
	w := f.ToWire()
	_, err := c.call(ctx, request{Op: "set", Fault: &w})
	return err
}

// Clear is FS.Clear.
func (c *Client) Clear(ctx context.Context) error {
	_, err := c.call(ctx, request{Op: "clear"})
	return err
}

// Faults is FS.Faults.
func (c *Client) Faults(ctx context.Context) ([]Fault, error) {
	resp, err := c.call(ctx, request{Op: "faults"})
	if err != nil {
		return nil, err
	}
	var out []Fault
	for _, w := range resp.Faults {
		f, err := w.Fault()
		if err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, nil
}

// PowerLoss is FS.PowerLoss.
func (c *Client) PowerLoss(ctx context.Context) error {
	_, err := c.call(ctx, request{Op: "powerloss"})
	return err
}

// Sync is FS.Sync.
func (c *Client) Sync(ctx context.Context) error {
	_, err := c.call(ctx, request{Op: "sync"})
	return err
}

// Counters is FS.Counters, with FS.DirtyBytes.
func (c *Client) Counters(ctx context.Context) (Counters, int64, error) {
	resp, err := c.call(ctx, request{Op: "counters"})
	if err != nil {
		return Counters{}, 0, err
	}
	if resp.Counters == nil {
		return Counters{}, 0, errors.New("faultfs: control counters: empty reply")
	}
	return *resp.Counters, resp.DirtyBytes, nil
}

// Unmount unmounts the filesystem and stops the server.
func (c *Client) Unmount(ctx context.Context) error {
	_, err := c.call(ctx, request{Op: "unmount"})
	return err
}
