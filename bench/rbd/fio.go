package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/tandemhci/tandem/bench/internal/benchkit"
	"github.com/tandemhci/tandem/bench/internal/vmbench"
	"github.com/tandemhci/tandem/internal/ctxtime"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// Target IDs, in report order.
const (
	// targetRBD is fio's rbd engine (librbd in fio) on an image of its
	// own, from the owner node's namespace: the reference of the goal.
	targetRBD = "rbd-engine"
	// targetNBD is a Tandem RBD volume through its owner's NBD export.
	targetNBD = "tandem-nbd-rbd"
	// targetR2 is a replicated Tandem volume with 2 replicas.
	targetR2 = "tandem-r2"
	// targetQemu is qemu-nbd on a local file: one copy, no network.
	targetQemu = "qemu-nbd"
)

const (
	// fioImage is the image of targetRBD, made with `rbd create`: Tandem's
	// owner holds the lock of its own volume's image, so fio cannot share
	// it.
	fioImage = "fio-direct"
	nbdVol   = "rbdfio"
	r2Vol    = "r2fio"
	// fioSlack is added to a timed job's ramp+runtime for its hard bound.
	fioSlack = 60 * time.Second
	// prefillMinRate sizes the prefill's hard bound (plus fioSlack).
	prefillMinRate = 5e6 // bytes per second
	readyTimeout   = time.Minute
)

// jobs are the measured fio jobs: the three figures.
func jobs() []benchkit.JobSpec {
	var out []benchkit.JobSpec
	for _, j := range benchkit.FioJobs() {
		switch j.ID {
		case benchkit.JobDurable, benchkit.JobQD32, benchkit.JobSeq:
			out = append(out, j)
		}
	}
	return out
}

// dataPath sets the four targets up, prefills them and runs every job on
// every target, one at a time; then it removes the fio volumes and image,
// so the failover series runs on a cluster holding just its VM. A target
// that cannot be set up or a job that fails is recorded; only a cancelled
// ctx ends the run.
func (b *bench) dataPath(ctx context.Context) error {
	n1 := b.env.C.Nodes[0]
	b.rep.Targets = []Target{
		{ID: targetRBD, Label: fmt.Sprintf("fio's rbd engine (librbd, client.admin, rbd_cache=false) on the image %s/%s made with `rbd create` (default features), fio in %s's namespace", b.ceph.Pool, fioImage, n1.Name),
			Engine: []string{"--ioengine=rbd", "--clientname=admin", "--pool=" + b.ceph.Pool, "--rbdname=" + fioImage}, Where: n1.Name},
		{ID: targetNBD, Label: fmt.Sprintf("Tandem RBD volume %s (`volume create --backend rbd`, owner %s) through its owner's NBD unix socket; tandemd's librbd reaches Ceph from %s's namespace", nbdVol, n1.Name, n1.Name),
			Where: "host", volume: nbdVol},
		{ID: targetR2, Label: "Tandem replicated volume " + r2Vol + ", 2 replicas (n1 primary, n2) + witness, through n1's NBD unix socket (the reference of bench/replication)", Where: "host", volume: r2Vol},
		{ID: targetQemu, Label: "qemu-nbd on a raw local file, --cache=none (single copy, no network)", Where: "host"},
	}
	setups := map[string]func(context.Context, *Target) error{targetRBD: b.setupImage, targetNBD: b.setupRBDVolume, targetR2: b.setupR2, targetQemu: b.setupQemu}
	for i := range b.rep.Targets {
		t := &b.rep.Targets[i]
		b.log.Info("setting up", "target", t.ID)
		if err := setups[t.ID](ctx, t); err != nil {
			if ctx.Err() != nil {
				return err
			}
			t.SetupError = err.Error()
			b.rep.Errors = append(b.rep.Errors, fmt.Sprintf("setting up %s: %v", t.ID, err))
			b.log.Error("target setup failed", "target", t.ID, "err", err)
			continue
		}
		t.Ready = true
	}
	b.rep.Images = b.images(ctx)
	fp := b.cfg.fio
	for i := range b.rep.Targets {
		t := &b.rep.Targets[i]
		if !t.Ready {
			continue
		}
		b.log.Info("prefill", "target", t.ID, "size", b.cfg.fio.Size)
		r, err := b.runJob(ctx, t, benchkit.PrefillJob(), fp)
		if err != nil {
			return err
		}
		b.rep.Prefill = append(b.rep.Prefill, r)
	}
	for _, j := range jobs() {
		for _, run := range b.order(j) {
			t := b.target(run.id)
			if !t.Ready {
				continue
			}
			b.log.Info("fio", "job", j.ID, "target", t.ID, "round", run.round)
			r, err := b.runJob(ctx, t, j, fp)
			if err != nil {
				return err
			}
			r.Round = run.round
			if m := r.Measurement; m != nil {
				_, lat, metric, rate := benchkit.Headline(j.ID, m)
				b.log.Info("result", "job", j.ID, "target", t.ID, "round", run.round, "p50_us", fmt.Sprintf("%.1f", lat), metric, fmt.Sprintf("%.0f", rate))
			}
			b.rep.Results = append(b.rep.Results, r)
		}
	}
	return b.removeFioTargets(ctx)
}

// jobRun is one run of a job on a target; round is set for the goal's
// repeated QD1 runs.
type jobRun struct {
	id    string
	round int
}

// order is the runs of job j: every target once, but for the QD1 job the
// goal's two targets -goal-rounds times each, alternating which goes
// first, so that a change of the machine's load over the rounds weighs on
// both alike.
func (b *bench) order(j benchkit.JobSpec) []jobRun {
	return jobOrder(j, b.cfg.rounds)
}

func jobOrder(j benchkit.JobSpec, rounds int) []jobRun {
	var out []jobRun
	if j.ID == benchkit.JobDurable {
		for k := 1; k <= rounds; k++ {
			pair := []jobRun{{targetRBD, k}, {targetNBD, k}}
			if k%2 == 0 {
				pair[0], pair[1] = pair[1], pair[0]
			}
			out = append(out, pair...)
		}
	}
	for _, id := range targetOrder() {
		if j.ID != benchkit.JobDurable || (id != targetRBD && id != targetNBD) {
			out = append(out, jobRun{id: id})
		}
	}
	return out
}

func (b *bench) target(id string) *Target {
	for i := range b.rep.Targets {
		if b.rep.Targets[i].ID == id {
			return &b.rep.Targets[i]
		}
	}
	return &Target{ID: id}
}

// setupImage makes targetRBD's image with Ceph's own CLI.
func (b *bench) setupImage(ctx context.Context, t *Target) error {
	if out, err := b.rbdCLI(ctx, "create", "--size", itoa(b.cfg.fio.Size>>20), b.ceph.Pool+"/"+fioImage); err != nil {
		return fmt.Errorf("rbd create: %w: %s", err, out)
	}
	t.Path = b.ceph.Pool + "/" + fioImage
	t.ns = b.env.C.Nodes[0].NS
	// The rbd engine reads CEPH_CONF (librados's default search); the
	// CEPH_ARGS say the same as the conf, for a librados that parses them.
	t.wrap = []string{"env", "CEPH_CONF=" + b.conf, "CEPH_ARGS=--rbd_cache=false"}
	return nil
}

// setupRBDVolume creates targetNBD's volume on n1 (its owner) and waits
// for its export.
func (b *bench) setupRBDVolume(ctx context.Context, t *Target) error {
	return b.createVolume(ctx, t, func(v *tandemv1.VolumeInfo) error {
		if v.GetPrimary() != b.env.C.Nodes[0].Name || v.GetNbdUnix() == "" {
			return fmt.Errorf("owner %q, NBD export %q", v.GetPrimary(), v.GetNbdUnix())
		}
		return nil
	}, "--backend", "rbd")
}

// setupR2 creates targetR2's volume and waits for both replicas.
func (b *bench) setupR2(ctx context.Context, t *Target) error {
	ready := vmbench.ReplicatedDisk(2)
	n1 := b.env.C.Nodes[0].Name
	return b.createVolume(ctx, t, func(v *tandemv1.VolumeInfo) error {
		if _, err := ready(v, n1); err != nil {
			return err
		}
		if v.GetNbdUnix() == "" {
			return fmt.Errorf("no NBD export yet (%s)", benchkit.OrDash(v.GetWarning()))
		}
		return nil
	}, "--replicas", "2", "--nodes", n1+","+b.env.C.Nodes[1].Name)
}

// createVolume creates t's volume through n1 with args and waits until
// ready accepts it and its export answers with the size.
func (b *bench) createVolume(ctx context.Context, t *Target, ready func(*tandemv1.VolumeInfo) error, args ...string) error {
	env, n1 := b.env, b.env.C.Nodes[0]
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	_, _, err := env.CLI(cctx, n1, append([]string{"volume", "create", t.volume, "--size", itoa(b.cfg.fio.Size)}, args...)...)
	cancel()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(readyTimeout)
	var v *tandemv1.VolumeInfo
	for {
		v, err = env.Volume(ctx, n1, t.volume)
		if err == nil {
			err = ready(v)
		}
		if err == nil {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("volume %s not ready within %s: %w", t.volume, readyTimeout, err)
		}
		if err := ctxtime.Sleep(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
	t.URI = v.GetNbdUnix()
	t.Path = v.GetBackend() + " " + v.GetPool() + "/" + v.GetImage()
	if v.GetBackend() != "rbd" {
		t.Path = "replicas " + vmbench.ReplicaSummary(v)
	}
	t.Engine = []string{"--ioengine=nbd", "--uri=" + t.URI}
	return benchkit.WaitExport(ctx, "", t.URI, b.cfg.fio.Size, 30*time.Second, nil)
}

// setupQemu starts qemu-nbd on a preallocated local file.
func (b *bench) setupQemu(ctx context.Context, t *Target) error {
	file, sock := filepath.Join(b.work, "qemu.img"), filepath.Join(b.work, "qemu-nbd.sock")
	if err := benchkit.Preallocate(file, b.cfg.fio.Size); err != nil {
		return err
	}
	s, err := benchkit.StartQemuNBD(ctx, file, sock, filepath.Join(b.work, "qemu-nbd.log"), b.cfg.fio.Size)
	if err != nil {
		return err
	}
	b.qemu = s
	t.Path, t.URI = file, benchkit.NBDUnixURI(benchkit.QemuNBDExport, sock)
	t.Engine = []string{"--ioengine=nbd", "--uri=" + t.URI}
	return nil
}

// runJob runs one fio job on one target. Only a cancelled ctx is an error:
// a failed job is recorded in the result and in the report's errors.
func (b *bench) runJob(ctx context.Context, t *Target, j benchkit.JobSpec, fp benchkit.FioParams) (Result, error) {
	jsonPath := filepath.Join(b.work, t.ID+"-"+j.ID+".json")
	bound := fp.Ramp + fp.Runtime + fioSlack
	if !j.TimeBased {
		bound = fioSlack + time.Duration(float64(fp.Size)/prefillMinRate*float64(time.Second))
	}
	r := Result{Target: t.ID, Job: j.ID, Started: time.Now().UTC().Format(time.RFC3339), Load: benchkit.LoadAvg()}
	var cache chan string
	if t.ID == targetRBD && j.TimeBased {
		cache = make(chan string, 1)
		go func() { cache <- b.librbdCache(ctx, fp.Ramp/2+500*time.Millisecond) }()
	}
	fr, err := benchkit.RunFioWrapped(ctx, t.ns, t.wrap, benchkit.FioArgs(j, fp, t.Engine, "fsync", jsonPath), jsonPath, bound)
	r.Command, r.WallS, r.FioVersion = fr.Argv, fr.Wall.Seconds(), fr.Version
	if cache != nil {
		r.LibrbdCache = <-cache
	}
	if ctx.Err() != nil {
		return r, fmt.Errorf("%s on %s: %w", j.ID, t.ID, ctx.Err())
	}
	if fr.Output != "" {
		r.FioOutput = benchkit.Truncate(fr.Output, 2000)
	}
	if err != nil {
		r.Error = err.Error()
		b.rep.Errors = append(b.rep.Errors, fmt.Sprintf("%s on %s: %v", j.ID, t.ID, err))
		b.log.Error("fio failed", "job", j.ID, "target", t.ID, "err", err)
		return r, nil
	}
	m := fr.M
	r.Measurement = &m
	return r, nil
}

// librbdCache asks, after wait, the admin socket of the fio process
// running the rbd engine what librbd's rbd_cache is ("false" is what the
// conf says). It returns the answer or why there is none.
func (b *bench) librbdCache(ctx context.Context, wait time.Duration) string {
	if err := ctxtime.Sleep(ctx, wait); err != nil {
		return "not read: " + err.Error()
	}
	socks, _ := filepath.Glob(filepath.Join(b.asok, "client.admin.*.asok"))
	var answers []string
	for _, s := range socks {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		out, err := exec.CommandContext(cctx, "ceph", "--admin-daemon", s, "config", "get", "rbd_cache").Output()
		cancel()
		if err != nil {
			continue // a socket left by a process that has ended
		}
		var v struct {
			Cache string `json:"rbd_cache"`
		}
		if json.Unmarshal(out, &v) == nil && v.Cache != "" {
			answers = append(answers, v.Cache)
		}
	}
	if len(answers) == 0 {
		return fmt.Sprintf("not read: no admin socket of fio's librbd answered (%d found)", len(socks))
	}
	return strings.Join(answers, ",")
}

// images describes the RBD images of the targets with `rbd info`.
func (b *bench) images(ctx context.Context) []ImageInfo {
	var out []ImageInfo
	for _, img := range []string{fioImage, nbdVol} {
		i := ImageInfo{Name: b.ceph.Pool + "/" + img}
		data, err := b.rbdCLI(ctx, "info", "--format", "json", i.Name)
		var info struct {
			Size     int64    `json:"size"`
			Features []string `json:"features"`
			Order    int      `json:"order"`
		}
		if err == nil {
			if k := bytes.IndexByte(data, '{'); k >= 0 {
				err = json.Unmarshal(data[k:], &info)
			}
		}
		if err != nil {
			i.Error = err.Error()
		} else {
			i.SizeBytes, i.Features, i.ObjectBytes = info.Size, info.Features, int64(1)<<info.Order
		}
		out = append(out, i)
	}
	return out
}

// removeFioTargets deletes the fio volumes and image and stops qemu-nbd.
func (b *bench) removeFioTargets(ctx context.Context) error {
	for _, vol := range []string{nbdVol, r2Vol} {
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		if _, _, err := b.env.CLI(cctx, b.env.C.Nodes[0], "volume", "delete", vol); err != nil && !strings.Contains(err.Error(), "no volume named") {
			b.rep.Errors = append(b.rep.Errors, fmt.Sprintf("volume delete %s: %v", vol, err))
		}
		cancel()
	}
	if out, err := b.rbdCLI(ctx, "rm", b.ceph.Pool+"/"+fioImage); err != nil && !bytes.Contains(out, []byte("No such file")) {
		b.rep.Errors = append(b.rep.Errors, fmt.Sprintf("rbd rm %s: %v", fioImage, err))
	}
	if b.qemu != nil {
		b.qemu.Kill()
		b.qemu = nil
	}
	_ = os.Remove(filepath.Join(b.work, "qemu.img"))
	return ctx.Err()
}
