package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tandemhci/tandem/internal/nbdclient"
)

// opTimeout bounds one NBD request: past it the outcome is unknown and the
// client reconnects to wherever the primary is then.
const opTimeout = 5 * time.Second

// A follower looks where the primary is about every followEvery (jittered
// by a quarter either way, so that followers do not look in step), each
// look bounded by followTimeout: `volume show` waits up to 3s for a
// replica that does not answer, and a node that does is the one whose
// answer matters while another is cut off.
const (
	followEvery   = time.Second
	followTimeout = 5 * time.Second
)

// isFollower says which clients follow the primary on their own: every
// second client of each volume (the odd ones), so each volume has both
// kinds with the default two clients. A fixed rule, not a draw: the
// schedule's random stream and the clients' own stay what they were.
func isFollower(c int) bool { return c%2 == 1 }

// Sighting is one node's answer to `volume show`: the primary it names and
// that primary's epoch.
type Sighting struct {
	Primary string
	Epoch   uint64
}

// shouldMove decides whether a follower connected to node at epoch moves
// to the primary a look found. A newer epoch always moves it (another
// primary, or the same one again at a new epoch: the history labels writes
// with the epoch connected at). A different primary at the same epoch
// moves it too (an epoch has one primary, so the connection's label was a
// stale view). An older epoch is a stale answer, from an isolated node or
// one behind: following it would go back to a deposed primary. A client
// that never connected does not move; it connects as any client does.
func shouldMove(node string, epoch uint64, seen Sighting) bool {
	switch {
	case node == "" || seen.Primary == "":
		return false
	case seen.Epoch > epoch:
		return true
	default:
		return seen.Epoch == epoch && seen.Primary != node
	}
}

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

	// A follower (isFollower) also moves when a look through a random
	// node finds the primary elsewhere or at a newer epoch (shouldMove),
	// as an NBD consumer that reconnects on its own would; the others
	// move only after an error. look draws the nodes (lookOrder) and the
	// pauses, from a stream of its own; sightings carries the latest
	// answer to the client.
	follower  bool
	look      *rand.Rand
	sightings chan Sighting
	moves     *atomic.Int64 // Result.FollowerMoves
}

// run loops until ctx ends.
func (cl *client) run(ctx context.Context) {
	defer cl.disconnect()
	if cl.follower {
		lctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl.watch(lctx)
		}()
		defer wg.Wait()
		defer cancel()
	}
	for ctx.Err() == nil {
		cl.follow(ctx)
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

// lookOrder draws the nodes a follower asks: every node once per round,
// in a random order. Not always the same node, since an isolated one
// answers with its stale view and a consumer that always asked it would
// never move; and not independent draws either, which once put four
// looks in a row (16s of a 22s isolation) on the isolated node: a round
// asks no node more than twice in a row.
type lookOrder struct {
	rng  *rand.Rand
	n    int
	left []int
}

func (o *lookOrder) next() int {
	if len(o.left) == 0 {
		o.left = o.rng.Perm(o.n)
	}
	i := o.left[0]
	o.left = o.left[1:]
	return i
}

// watch looks, about every followEvery, where a node (lookOrder) says the
// primary is, and hands the answer to the client (the latest one only).
func (cl *client) watch(ctx context.Context) {
	order := &lookOrder{rng: cl.look, n: len(cl.r.c.Nodes)}
	for {
		jitter := time.Duration(cl.look.Int64N(int64(followEvery / 2)))
		if !sleepUntil(ctx, time.Now().Add(followEvery*3/4+jitter)) {
			return
		}
		i := order.next()
		if p := cl.r.proc(i); p == nil || !p.Alive() {
			continue // its API is down: no answer this time
		}
		lctx, cancel := context.WithTimeout(ctx, followTimeout)
		info, err := cl.r.showVolumeVia(lctx, cl.r.c.Nodes[i], cl.vol)
		cancel()
		if err != nil {
			continue
		}
		seen := Sighting{Primary: info.GetPrimary(), Epoch: info.GetEpoch()}
		select {
		case <-cl.sightings: // replaced by the newer answer
		default:
		}
		cl.sightings <- seen
	}
}

// follow moves a follower to the primary its latest look found, if that
// is a move (shouldMove), between two requests.
func (cl *client) follow(ctx context.Context) {
	var seen Sighting
	select {
	case seen = <-cl.sightings:
	default:
		return
	}
	if !shouldMove(cl.node, cl.epoch, seen) {
		return
	}
	from, epoch := cl.node, cl.epoch
	cl.disconnect()
	if err := cl.dial(ctx, seen); err != nil {
		cl.r.log.Info("chaos: follower could not reach the primary it was told of", "volume", cl.vol, "client", cl.id, "primary", seen.Primary, "epoch", seen.Epoch, "err", err)
		return
	}
	cl.moves.Add(1)
	cl.r.log.Info("chaos: follower moved", "volume", cl.vol, "client", cl.id, "from", from, "from_epoch", epoch, "to", seen.Primary, "epoch", seen.Epoch)
}

// connect finds the primary with `volume show` and opens its NBD export
// (the unix socket in its data directory, as a VM on that node would).
func (cl *client) connect(ctx context.Context) error {
	info, err := cl.r.showVolume(ctx, cl.vol)
	if err != nil {
		return err
	}
	return cl.dial(ctx, Sighting{Primary: info.GetPrimary(), Epoch: info.GetEpoch()})
}

// dial opens the NBD export of the primary seen, and labels the client's
// operations with it.
func (cl *client) dial(ctx context.Context, seen Sighting) error {
	n := cl.r.c.Node(seen.Primary)
	if n == nil {
		return fmt.Errorf("volume %s has no primary", cl.vol)
	}
	dctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	c, err := nbdclient.Dial(dctx, "unix", cl.r.td.DataDir(n)+"/nbd.sock", cl.vol)
	if err != nil {
		return err
	}
	cl.conn, cl.node, cl.epoch = c, n.Name, seen.Epoch
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
	moves  atomic.Int64 // the followers' moves
}

func (w *workload) stop() {
	w.cancel()
	w.wg.Wait()
}
