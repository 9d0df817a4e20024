package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/tandemhci/tandem/bench/internal/benchkit"
	"github.com/tandemhci/tandem/internal/ctxtime"
	"github.com/tandemhci/tandem/internal/testcluster"
)

// Round trips: the cost of one message and its answer on the two links a
// replicated QD1 write crosses, measured by fio's net engine in ping-pong
// mode (a 4 KiB message, then its 4 KiB echo), a client no one here wrote.
// With them the report bounds what any replicated system could reach on
// this machine: see replicatedFloor.
const (
	// rttTCP is between two node namespaces over the backend switch, the
	// primary-to-secondary hop.
	rttTCP = "tcp-n1-n2"
	// rttUnix is a unix socket on one host, the hop between fio and an
	// NBD server.
	rttUnix = "unix"
	// streamTCP is the same link carrying a one-way stream of 1 MiB
	// writes: what it moves per second bounds any replicated system's
	// sequential rate here, since every byte crosses it once.
	streamTCP = "stream-n1-n2"
	// targetRoundTrips selects all three with -targets.
	targetRoundTrips = "round-trips"

	rttPort    = 18099
	rttRuntime = 5 * time.Second
)

// RoundTrip is one ping-pong measurement; Measurement.Write is the round
// trip's latency and IOPS the round trips per second.
type RoundTrip struct {
	ID          string                `json:"id"`
	Label       string                `json:"label"`
	Command     []string              `json:"command,omitempty"`
	Measurement *benchkit.Measurement `json:"measurement,omitempty"`
	Error       string                `json:"error,omitempty"`
}

// mbps is a stream's rate in MB/s, 0 when unmeasured.
func (r *RoundTrip) mbps() float64 {
	if r == nil || r.Measurement == nil {
		return 0
	}
	return r.Measurement.MBps
}

// p50 is the round trip's median in µs, 0 when unmeasured.
func (r *RoundTrip) p50() float64 {
	if r == nil || r.Measurement == nil || r.Measurement.Write == nil {
		return 0
	}
	return r.Measurement.Write.P50US
}

func findRoundTrip(rts []RoundTrip, id string) *RoundTrip {
	for i := range rts {
		if rts[i].ID == id {
			return &rts[i]
		}
	}
	return nil
}

// pingPongArgs are fio's options for one side of a 4 KiB ping-pong.
func pingPongArgs(name, rw string, extra ...string) []string {
	// --thread: fio's forked job would be in a process group of its own
	// and outlive a kill of the process we started.
	return append([]string{"--name=" + name, "--thread", "--ioengine=net", "--rw=" + rw, "--bs=4k", "--size=64g", "--pingpong=1"}, extra...)
}

// measureRoundTrips runs both ping-pongs, one at a time, with nothing else
// running. A failure is recorded in the result, never fatal.
func (b *bench) measureRoundTrips(ctx context.Context) []RoundTrip {
	n1, n2 := b.c.Node("n1"), b.c.Node("n2")
	rts := []RoundTrip{
		{ID: rttTCP, Label: fmt.Sprintf("TCP between the namespaces of n1 and n2 over the backend switch (%s → %s), the primary-to-secondary hop", n1.IP, n2.IP)},
		{ID: rttUnix, Label: "a unix socket on the host, the hop between fio and an NBD server"},
		{ID: streamTCP, Label: "a one-way TCP stream of 1 MiB writes from n1 to n2 over the backend switch, no TLS: what the primary-to-secondary hop carries at most"},
	}
	for i := range rts {
		rt := &rts[i]
		var err error
		rt.Command, rt.Measurement, err = b.pingPong(ctx, rt.ID, n1, n2)
		if err != nil {
			rt.Error = err.Error()
			b.rep.Errors = append(b.rep.Errors, fmt.Sprintf("round trip %s: %v", rt.ID, err))
			b.log.Error("round trip", "link", rt.ID, "err", err)
			continue
		}
		b.log.Info("round trip", "link", rt.ID, "p50_us", fmt.Sprintf("%.1f", rt.p50()), "per_s", fmt.Sprintf("%.0f", rt.Measurement.IOPS), "mb_per_s", fmt.Sprintf("%.0f", rt.Measurement.MBps))
	}
	return rts
}

// pingPong starts fio's echoing side (in n2 for TCP, on the host for a
// unix socket), runs the timed client against it and stops the server.
func (b *bench) pingPong(ctx context.Context, id string, n1, n2 *testcluster.Node) ([]string, *benchkit.Measurement, error) {
	jsonPath := filepath.Join(b.work, "rtt-"+id+".json")
	timed := []string{"--time_based", "--runtime=" + benchkit.FioDuration(rttRuntime), "--output-format=json", "--output=" + jsonPath}
	var client []string
	var ns string // where the client runs; "" the host
	var stop func()
	switch id {
	case rttTCP:
		srv := pingPongArgs("echo", "read", "--protocol=tcp", "--listen", "--port="+strconv.Itoa(rttPort))
		p, err := b.c.Start(n2, "fio-echo", append([]string{"fio"}, srv...), nil)
		if err != nil {
			return nil, nil, fmt.Errorf("start fio echo in %s: %w", n2.Name, err)
		}
		stop = func() {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			_ = p.Stop(sctx)
		}
		client = pingPongArgs("ping", "write", append([]string{"--protocol=tcp", "--hostname=" + n2.IP, "--port=" + strconv.Itoa(rttPort)}, timed...)...)
		ns = n1.NS
	case streamTCP:
		args := func(name, rw string, extra ...string) []string {
			return append([]string{"--name=" + name, "--thread", "--ioengine=net", "--rw=" + rw, "--bs=1m", "--size=1024g", "--protocol=tcp"}, extra...)
		}
		p, err := b.c.Start(n2, "fio-sink", append([]string{"fio"}, args("sink", "read", "--listen", "--port="+strconv.Itoa(rttPort+1))...), nil)
		if err != nil {
			return nil, nil, fmt.Errorf("start fio sink in %s: %w", n2.Name, err)
		}
		stop = func() {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			_ = p.Stop(sctx)
		}
		client = args("stream", "write", append([]string{"--hostname=" + n2.IP, "--port=" + strconv.Itoa(rttPort+1)}, timed...)...)
		ns = n1.NS
	case rttUnix:
		sock := filepath.Join(b.work, "rtt.sock")
		_ = os.Remove(sock)
		srv := pingPongArgs("echo", "read", "--protocol=unix", "--filename="+sock)
		s, err := benchkit.StartServer(ctx, append([]string{"fio"}, srv...), filepath.Join(b.work, "rtt-echo.log"))
		if err != nil {
			return nil, nil, fmt.Errorf("start fio echo: %w", err)
		}
		stop = s.Kill
		client = pingPongArgs("ping", "write", append([]string{"--protocol=unix", "--filename=" + sock}, timed...)...)
	default:
		return nil, nil, fmt.Errorf("unknown link %q", id)
	}
	defer stop()
	// The echoing side needs a moment to bind or listen.
	if err := ctxtime.Sleep(ctx, 500*time.Millisecond); err != nil {
		return nil, nil, err
	}
	fr, err := benchkit.RunFioIn(ctx, ns, client, jsonPath, rttRuntime+fioSlack)
	if err != nil && id == rttUnix && ctx.Err() == nil {
		// fio 3.33 ends a unix ping-pong with EISCONN once the time is up
		// (it connects the connected socket again); what it measured
		// before that stands.
		if data, rerr := os.ReadFile(jsonPath); rerr == nil {
			if _, _, m, perr := benchkit.ParseFio(data); errors.Is(perr, syscall.EISCONN) && m.Writes > 0 {
				fr.M, err = m, nil
			}
		}
	}
	if err != nil {
		return fr.Argv, nil, err
	}
	return fr.Argv, &fr.M, nil
}
