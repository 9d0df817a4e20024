package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/tandemhci/tandem/internal/nbdclient"
)

// opTimeout bounds one NBD request: past it the outcome is unknown and the
// client reconnects to wherever the primary is then.
const opTimeout = 5 * time.Second

// client writes and reads its own blocks of one volume over NBD. It owns
// its blocks: nobody else writes them, and it has one request in flight, so
// each block's generations are written in order (see Op).
type client struct {
	r      *Runner
	id     int
	vol    string
	blocks []uint64
	gens   map[uint64]uint64 // last generation invoked per block
	rng    *rand.Rand

	conn  *nbdclient.Client
	node  string
	epoch uint64
}

// run loops until ctx ends.
func (cl *client) run(ctx context.Context) {
	defer cl.disconnect()
	for ctx.Err() == nil {
		if cl.conn == nil {
			if err := cl.connect(ctx); err != nil {
				sleepUntil(ctx, time.Now().Add(200*time.Millisecond))
				continue
			}
		}
		block := cl.blocks[cl.rng.IntN(len(cl.blocks))]
		var err error
		if cl.rng.IntN(4) == 0 {
			err = cl.read(ctx, block)
		} else {
			err = cl.write(ctx, block, cl.rng.IntN(2) == 0)
		}
		if err != nil {
			cl.disconnect()
		}
	}
}

// connect finds the primary with `volume show` and opens its NBD export
// (the unix socket in its data directory, as a VM on that node would).
func (cl *client) connect(ctx context.Context) error {
	info, err := cl.r.showVolume(ctx, cl.vol)
	if err != nil {
		return err
	}
	n := cl.r.c.Node(info.GetPrimary())
	if n == nil {
		return fmt.Errorf("volume %s has no primary", cl.vol)
	}
	dctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	c, err := nbdclient.Dial(dctx, "unix", cl.r.td.DataDir(n)+"/nbd.sock", cl.vol)
	if err != nil {
		return err
	}
	cl.conn, cl.node, cl.epoch = c, n.Name, info.GetEpoch()
	return nil
}

func (cl *client) disconnect() {
	if cl.conn != nil {
		// Close may block on a frozen server's socket buffer: not here,
		// a unix socket close never waits.
		_ = cl.conn.Close()
		cl.conn = nil
	}
}

// outcome classifies a request's error: an NBD error reply is a failure
// (not acknowledged; the data may still have landed), anything else an
// unknown outcome.
func outcome(err error) Outcome {
	var se *nbdclient.ErrServer
	switch {
	case err == nil:
		return OK
	case errors.As(err, &se):
		return Fail
	default:
		return Unknown
	}
}

// write writes the block's next generation, with FUA or as a write
// followed by a flush (acknowledged only once the flush is).
func (cl *client) write(ctx context.Context, block uint64, fua bool) error {
	cl.gens[block]++
	gen := cl.gens[block]
	data := Stamp{Volume: cl.vol, Block: block, Gen: gen, Client: uint32(cl.id)}.Encode()
	id := cl.r.hist.Invoke(Op{Client: cl.id, Volume: cl.vol, Block: block, Kind: OpWrite, Gen: gen, Node: cl.node, Epoch: cl.epoch})
	octx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	var err error
	if fua {
		err = cl.conn.WriteAt(octx, data, block*BlockSize, nbdclient.FlagFUA)
	} else if err = cl.conn.WriteAt(octx, data, block*BlockSize, 0); err == nil {
		err = cl.conn.Flush(octx)
	}
	cl.r.hist.Complete(id, outcome(err), err, nil)
	return err
}

func (cl *client) read(ctx context.Context, block uint64) error {
	id := cl.r.hist.Invoke(Op{Client: cl.id, Volume: cl.vol, Block: block, Kind: OpRead, Node: cl.node, Epoch: cl.epoch})
	octx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	buf := make([]byte, BlockSize)
	err := cl.conn.ReadAt(octx, buf, block*BlockSize)
	cl.r.hist.Complete(id, outcome(err), err, func(op *Op) {
		if err != nil {
			return
		}
		s, st := Decode(buf)
		op.State, op.Gen = string(st), s.Gen
		if st == BlockStamped {
			op.Seen = &s
		}
	})
	return err
}

// workload runs every client until stop; wait returns once all are done.
type workload struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func (w *workload) stop() {
	w.cancel()
	w.wg.Wait()
}
