package chaos

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tandemhci/tandem/internal/guest"
)

// Anomaly is one violation a checker found.
type Anomaly struct {
	Checker string `json:"checker"` // "writes", "single-writer", "convergence", "liveness", "vm"
	Volume  string `json:"volume,omitempty"`
	Detail  string `json:"detail"`
	// GuestCrash marks a VM anomaly explained by a guest kernel crash
	// (QEMU TCG), reported apart from Tandem's.
	GuestCrash bool `json:"guest_crash,omitempty"`
}

func (a Anomaly) String() string {
	if a.Volume != "" {
		return fmt.Sprintf("%s: volume %s: %s", a.Checker, a.Volume, a.Detail)
	}
	return fmt.Sprintf("%s: %s", a.Checker, a.Detail)
}

// Final is what a block held when read back after healing and resync.
type Final struct {
	Volume string
	Block  uint64
	Data   []byte // the 4 KiB read back
}

// WriteReport is the result of CheckWrites.
type WriteReport struct {
	Anomalies    []Anomaly
	BlocksWith   int // blocks with at least one acknowledged write
	AckedWrites  int // acknowledged writes in the history
	ReadsChecked int // reads during the run that were checked
}

type blockKey struct {
	vol   string
	block uint64
}

type blockHist struct {
	writes  []Op // sorted by Gen
	lastAck uint64
}

// CheckWrites is the "no acknowledged write lost" checker. Every block read
// back must hold its last acknowledged generation or a later-invoked one:
// never an older one, never a torn one, never another block's. Reads during
// the run are held to the same rule at their own time: at least the
// generation acknowledged before the read started, and only a generation
// already invoked when it ended.
func CheckWrites(ops []Op, finals []Final) WriteReport {
	var rep WriteReport
	blocks := map[blockKey]*blockHist{}
	for _, op := range ops {
		if op.Kind != OpWrite {
			continue
		}
		k := blockKey{op.Volume, op.Block}
		b := blocks[k]
		if b == nil {
			b = &blockHist{}
			blocks[k] = b
		}
		b.writes = append(b.writes, op)
		if op.Result == OK {
			rep.AckedWrites++
			b.lastAck = max(b.lastAck, op.Gen)
		}
	}
	for _, b := range blocks {
		slices.SortFunc(b.writes, func(x, y Op) int { return cmp.Compare(x.Gen, y.Gen) })
		if b.lastAck > 0 {
			rep.BlocksWith++
		}
	}
	add := func(vol, format string, args ...any) {
		rep.Anomalies = append(rep.Anomalies, Anomaly{Checker: "writes", Volume: vol, Detail: fmt.Sprintf(format, args...)})
	}
	// what classifies a block's content against where it was read.
	what := func(vol string, block uint64, data []byte) (gen uint64, bad string) {
		s, st := Decode(data)
		switch st {
		case BlockZero:
			return 0, ""
		case BlockTorn:
			return 0, "is torn (neither a whole stamp nor zeroes)"
		}
		if s.Volume != vol || s.Block != block {
			return 0, fmt.Sprintf("holds the stamp of volume %s block %d generation %d (misdirected)", s.Volume, s.Block, s.Gen)
		}
		return s.Gen, ""
	}
	seen := map[blockKey]bool{}
	for _, f := range finals {
		k := blockKey{f.Volume, f.Block}
		seen[k] = true
		b := blocks[k]
		if b == nil {
			b = &blockHist{}
		}
		gen, bad := what(f.Volume, f.Block, f.Data)
		switch {
		case bad != "":
			add(f.Volume, "block %d %s after healing; last acknowledged generation %d", f.Block, bad, b.lastAck)
		case gen < b.lastAck:
			if gen == 0 {
				add(f.Volume, "block %d is zero after healing: acknowledged generation %d lost (%s)", f.Block, b.lastAck, ackWhere(b, b.lastAck))
			} else {
				add(f.Volume, "block %d holds generation %d after healing, older than acknowledged generation %d (%s)", f.Block, gen, b.lastAck, ackWhere(b, b.lastAck))
			}
		case gen > 0 && !invoked(b, gen, time.Time{}):
			add(f.Volume, "block %d holds generation %d, which no client ever wrote", f.Block, gen)
		}
	}
	for k, b := range blocks {
		if b.lastAck > 0 && !seen[k] {
			add(k.vol, "block %d (acknowledged generation %d) was not read back after healing", k.block, b.lastAck)
		}
	}
	for _, op := range ops {
		if op.Kind != OpRead || op.Result != OK {
			continue
		}
		rep.ReadsChecked++
		b := blocks[blockKey{op.Volume, op.Block}]
		if b == nil {
			b = &blockHist{}
		}
		if op.State == string(BlockTorn) {
			add(op.Volume, "read %d of block %d on %s found a torn block", op.ID, op.Block, op.Node)
			continue
		}
		if op.Seen != nil && (op.Seen.Volume != op.Volume || op.Seen.Block != op.Block) {
			add(op.Volume, "read %d of block %d on %s found volume %s block %d (misdirected)", op.ID, op.Block, op.Node, op.Seen.Volume, op.Seen.Block)
			continue
		}
		var floor uint64
		for _, w := range b.writes {
			if w.Result == OK && w.Complete.Before(op.Invoke) {
				floor = max(floor, w.Gen)
			}
		}
		if op.Gen < floor {
			add(op.Volume, "read %d of block %d on %s (epoch %d) found generation %d, older than generation %d acknowledged before the read (%s)",
				op.ID, op.Block, op.Node, op.Epoch, op.Gen, floor, ackWhere(b, floor))
		} else if op.Gen > 0 && !invoked(b, op.Gen, op.Complete) {
			add(op.Volume, "read %d of block %d found generation %d before any client wrote it", op.ID, op.Block, op.Gen)
		}
	}
	slices.SortFunc(rep.Anomalies, func(x, y Anomaly) int { return strings.Compare(x.String(), y.String()) })
	return rep
}

// invoked reports whether generation gen of the block was written by some
// client (before `before`, unless it is zero).
func invoked(b *blockHist, gen uint64, before time.Time) bool {
	for _, w := range b.writes {
		if w.Gen == gen && (before.IsZero() || w.Invoke.Before(before)) {
			return true
		}
	}
	return false
}

// ackWhere names the primary and epoch that acknowledged generation gen.
func ackWhere(b *blockHist, gen uint64) string {
	for _, w := range b.writes {
		if w.Gen == gen {
			return fmt.Sprintf("acknowledged by %s at epoch %d, %s", w.Node, w.Epoch, w.Complete.Format("15:04:05.000"))
		}
	}
	return "?"
}

// AckRecord is a node's own record of what it acknowledged for a volume as
// primary at one epoch: the first and the last acknowledgement it logged.
type AckRecord struct {
	Node        string
	Volume      string
	Epoch       uint64
	First, Last time.Time
}

// CheckSingleWriter finds two writers: writes acknowledged at an older epoch
// after a newer epoch had already acknowledged one. From the client history,
// an acknowledged write of epoch e1 invoked after another node's write of
// epoch e2 > e1 had completed proves both primaries acknowledged in
// overlapping time; from the nodes' records, an older epoch's last
// acknowledgement after a newer epoch's first one does.
func CheckSingleWriter(ops []Op, records []AckRecord) []Anomaly {
	var out []Anomaly
	type epochKey struct {
		vol   string
		epoch uint64
	}
	firstAck := map[epochKey]Op{} // per (volume, epoch): the ok write that completed first
	for _, op := range ops {
		if op.Kind != OpWrite || op.Result != OK {
			continue
		}
		k := epochKey{op.Volume, op.Epoch}
		if f, ok := firstAck[k]; !ok || op.Complete.Before(f.Complete) {
			firstAck[k] = op
		}
	}
	reported := map[[2]epochKey]bool{}
	for _, op := range ops {
		if op.Kind != OpWrite || op.Result != OK {
			continue
		}
		for k, f := range firstAck {
			if k.vol != op.Volume || k.epoch <= op.Epoch || f.Node == op.Node || !op.Invoke.After(f.Complete) {
				continue
			}
			pair := [2]epochKey{{op.Volume, op.Epoch}, k}
			if reported[pair] {
				continue
			}
			reported[pair] = true
			out = append(out, Anomaly{Checker: "single-writer", Volume: op.Volume, Detail: fmt.Sprintf(
				"%s acknowledged write %d (block %d) at epoch %d, invoked %s, after %s had acknowledged write %d at epoch %d (%s)",
				op.Node, op.ID, op.Block, op.Epoch, op.Invoke.Format("15:04:05.000"), f.Node, f.ID, f.Epoch, f.Complete.Format("15:04:05.000"))})
		}
	}
	for i, a := range records {
		for _, b := range records[i+1:] {
			if a.Volume != b.Volume || a.Epoch == b.Epoch {
				continue
			}
			old, cur := a, b
			if old.Epoch > cur.Epoch {
				old, cur = cur, old
			}
			if old.Last.After(cur.First) {
				out = append(out, Anomaly{Checker: "single-writer", Volume: a.Volume, Detail: fmt.Sprintf(
					"%s's record: acknowledged at epoch %d until %s, after %s began acknowledging at epoch %d (%s)",
					old.Node, old.Epoch, old.Last.Format("15:04:05.000"), cur.Node, cur.Epoch, cur.First.Format("15:04:05.000"))})
			}
		}
	}
	return out
}

// ReplicaObs is one replica as seen after healing.
type ReplicaObs struct {
	Node  string
	State string // e.g. "UpToDate"
	Link  string // e.g. "in-sync"
	// Sum is a hash of the replica's data area, read from its file once
	// the primary flushed; "" if it could not be read.
	Sum string
}

// VolumeConvergence is what the runner saw of a volume after healing.
type VolumeConvergence struct {
	Volume string
	// Converged: every replica UpToDate and in sync within the bound.
	Converged bool
	Waited    time.Duration
	Replicas  []ReplicaObs
	// Verify is `volume verify`'s error ("" when it found the replicas
	// identical); Mismatches is how many ranges it reported.
	Verify     string
	Mismatches int
}

// CheckConvergence: within the bound after healing, every replica is
// UpToDate and in sync, `volume verify` finds them identical, and their
// data areas hash the same.
func CheckConvergence(vols []VolumeConvergence) []Anomaly {
	var out []Anomaly
	for _, v := range vols {
		add := func(format string, args ...any) {
			out = append(out, Anomaly{Checker: "convergence", Volume: v.Volume, Detail: fmt.Sprintf(format, args...)})
		}
		if !v.Converged {
			var rs []string
			for _, r := range v.Replicas {
				rs = append(rs, fmt.Sprintf("%s %s/%s", r.Node, r.State, r.Link))
			}
			add("replicas not all UpToDate and in sync %s after healing: %s", v.Waited.Round(time.Second), strings.Join(rs, ", "))
		}
		switch {
		case v.Mismatches > 0:
			add("volume verify: %d mismatching ranges: %s", v.Mismatches, v.Verify)
		case v.Verify != "":
			add("volume verify failed: %s", v.Verify)
		}
		var ref *ReplicaObs
		for i := range v.Replicas {
			r := &v.Replicas[i]
			if r.Sum == "" {
				continue
			}
			if ref == nil {
				ref = r
			} else if r.Sum != ref.Sum {
				add("replica on %s differs from the one on %s (data hash %.12s vs %.12s)", r.Node, ref.Node, r.Sum, ref.Sum)
			}
		}
	}
	return out
}

// Liveness is what the runner saw of a volume's availability after healing.
type Liveness struct {
	Volume string
	// WriteErr is why no write succeeded within the bound ("" when one did).
	WriteErr string
	Waited   time.Duration
}

// CheckLiveness: after healing, a write to every volume succeeds within the
// bound.
func CheckLiveness(ls []Liveness) []Anomaly {
	var out []Anomaly
	for _, l := range ls {
		if l.WriteErr != "" {
			out = append(out, Anomaly{Checker: "liveness", Volume: l.Volume, Detail: fmt.Sprintf("no write succeeded within %s after healing: %s", l.Waited.Round(time.Second), l.WriteErr)})
		}
	}
	return out
}

// DomainSample is one look at a node's libvirt domain list: whether domain
// was running there, some time between Before and After.
type DomainSample struct {
	Node          string
	Domain        string
	ID            int // libvirt's domain ID: a new QEMU gets a new one
	Running       bool
	Before, After time.Time
}

// CheckVMs: no VM ever runs on two nodes at once, and each VM in
// shouldRun runs on exactly one node at the end (final: VM -> nodes where
// it runs). A domain seen running in two consecutive samples of one node
// with the same ID ran there throughout [first.After, last.Before]; a
// sample of another node that says running inside that interval, or
// another such interval overlapping it, is a VM running twice.
func CheckVMs(samples []DomainSample, shouldRun []string, final map[string][]string) []Anomaly {
	var out []Anomaly
	type key struct{ node, dom string }
	byKey := map[key][]DomainSample{}
	for _, s := range samples {
		k := key{s.Node, s.Domain}
		byKey[k] = append(byKey[k], s)
	}
	type span struct {
		node     string
		from, to time.Time
	}
	spans := map[string][]span{} // domain -> proven running spans
	for k, ss := range byKey {
		slices.SortFunc(ss, func(a, b DomainSample) int { return a.Before.Compare(b.Before) })
		for i := 0; i < len(ss); {
			j := i
			for j+1 < len(ss) && ss[i].Running && ss[j+1].Running && ss[j+1].ID == ss[i].ID {
				j++
			}
			if j > i {
				spans[k.dom] = append(spans[k.dom], span{k.node, ss[i].After, ss[j].Before})
			}
			i = j + 1
		}
	}
	reported := map[string]bool{}
	for dom, sp := range spans {
		for i, a := range sp {
			for _, b := range sp[i+1:] {
				if b.node != a.node && b.from.Before(a.to) && a.from.Before(b.to) && !reported[dom] {
					reported[dom] = true
					out = append(out, Anomaly{Checker: "vm", Detail: fmt.Sprintf("VM %s ran on %s (%s..%s) and on %s (%s..%s) at once",
						dom, a.node, a.from.Format("15:04:05.000"), a.to.Format("15:04:05.000"), b.node, b.from.Format("15:04:05.000"), b.to.Format("15:04:05.000"))})
				}
			}
			for _, s := range samples {
				if s.Domain != dom || s.Node == a.node || !s.Running || reported[dom] {
					continue
				}
				if !s.Before.Before(a.from) && !s.After.After(a.to) {
					reported[dom] = true
					out = append(out, Anomaly{Checker: "vm", Detail: fmt.Sprintf("VM %s ran on %s (%s..%s) and on %s (%s..%s) at once",
						dom, a.node, a.from.Format("15:04:05.000"), a.to.Format("15:04:05.000"), s.Node, s.Before.Format("15:04:05.000"), s.After.Format("15:04:05.000"))})
				}
			}
		}
	}
	for _, vm := range shouldRun {
		if n := final[vm]; len(n) != 1 {
			out = append(out, Anomaly{Checker: "vm", Detail: fmt.Sprintf("VM %s should run after healing; it runs on %d nodes %v", vm, len(n), n)})
		}
	}
	return out
}

// CheckGuestCounter is the VM's side of "nothing acknowledged is lost"
// (I2), from the test guest's heartbeats (internal/guest): the agent
// reports a disk counter only once the O_SYNC write that stored it
// returned, and a new agent (a boot: a restart, a failover) starts from
// the counter on its disk. So every agent's first counter is at least the
// highest any earlier agent reported, and an agent's counter never goes
// back.
//
// Agents are told apart by arrival order: a datagram whose boot number is
// that of the current agent of that boot but whose sequence number does
// not grow starts a new agent (the datagrams of one agent arrive in order
// on the harness's bridge). The boot number alone does not do: it reaches
// the disk with the agent's first counter write, so an agent killed before
// any write completed leaves the next one the same boot number. Two copies
// running at once show as agents interleaving, one starting below what
// another acknowledged.
func CheckGuestCounter(vm string, arrivals []guest.Arrival) []Anomaly {
	type agent struct {
		boot          uint64
		lo, hi        uint64 // counters it reported
		lastSeq       uint64
		first, hiAt   time.Time
		wentBack      bool
		backAt, backV uint64
	}
	var agents []*agent
	cur := map[uint64]*agent{} // boot -> its latest agent
	for _, a := range arrivals {
		g := cur[a.Boot]
		if g == nil || a.Seq <= g.lastSeq {
			g = &agent{boot: a.Boot, lo: a.Acked, hi: a.Acked, first: a.At, hiAt: a.At}
			agents = append(agents, g)
			cur[a.Boot] = g
		}
		if a.Acked < g.hi && !g.wentBack {
			g.wentBack, g.backAt, g.backV = true, a.Seq, a.Acked
		}
		g.lo = min(g.lo, a.Acked)
		if a.Acked > g.hi {
			g.hi, g.hiAt = a.Acked, a.At
		}
		g.lastSeq = a.Seq
	}
	var out []Anomaly
	add := func(format string, args ...any) {
		out = append(out, Anomaly{Checker: "vm", Detail: fmt.Sprintf("VM %s: ", vm) + fmt.Sprintf(format, args...)})
	}
	for i, g := range agents {
		if g.wentBack {
			add("the agent of boot %d (first heard %s) reported counter %d at sequence %d after %d: its counter went back",
				g.boot, g.first.Format("15:04:05.000"), g.backV, g.backAt, g.hi)
		}
		var prev *agent
		for _, p := range agents[:i] {
			if prev == nil || p.hi > prev.hi {
				prev = p
			}
		}
		if prev != nil && g.lo < prev.hi {
			add("the agent of boot %d (first heard %s) started from disk counter %d, below counter %d that the agent of boot %d acknowledged (%s): acknowledged disk writes lost, or two copies ran",
				g.boot, g.first.Format("15:04:05.000"), g.lo, prev.hi, prev.boot, prev.hiAt.Format("15:04:05.000"))
		}
	}
	return out
}
