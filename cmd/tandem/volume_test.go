package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tandemhci/tandem/internal/adminclient"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

const (
	upToDate   = tandemv1.ReplicaState_REPLICA_STATE_UP_TO_DATE
	outdated   = tandemv1.ReplicaState_REPLICA_STATE_OUTDATED
	syncTarget = tandemv1.ReplicaState_REPLICA_STATE_SYNC_TARGET
	syncSource = tandemv1.ReplicaState_REPLICA_STATE_SYNC_SOURCE
)

// showAnswer is one scripted reply to Show.
type showAnswer struct {
	info *tandemv1.VolumeInfo
	err  error
}

// fakeVolumes serves the Volume service; calls are recorded by fakeDaemon's
// interceptor like the others.
type fakeVolumes struct {
	tandemv1.UnimplementedVolumeServer

	mu     sync.Mutex
	volume *tandemv1.VolumeInfo
	// shows, when set, answers Show calls in order; the last one repeats.
	shows  []showAnswer
	nShow  int
	onShow func(n int) // called with the 1-based number of each Show
	verify *tandemv1.VerifyVolumeResponse
}

func startVolumeDaemon(t *testing.T) (string, *fakeDaemon, *fakeVolumes) {
	t.Helper()
	v := &fakeVolumes{volume: sampleVolume(), verify: &tandemv1.VerifyVolumeResponse{CheckedBytes: 20 << 30}}
	dir, f := startDaemonWith(t, func(s *grpc.Server) { tandemv1.RegisterVolumeServer(s, v) })
	return dir, f, v
}

func (v *fakeVolumes) Create(_ context.Context, r *tandemv1.CreateVolumeRequest) (*tandemv1.VolumeInfo, error) {
	info := proto.Clone(v.volume).(*tandemv1.VolumeInfo)
	info.Name, info.SizeBytes, info.Epoch, info.History = r.GetName(), r.GetSizeBytes(), 1, nil
	return info, nil
}

func (v *fakeVolumes) List(context.Context, *tandemv1.ListVolumesRequest) (*tandemv1.ListVolumesResponse, error) {
	other := &tandemv1.VolumeInfo{Name: "scratch", SizeBytes: 512 << 20, Epoch: 1, Primary: "node-c", State: "creating",
		Replicas: []*tandemv1.VolumeReplica{{Node: "node-c", State: upToDate, Primary: true}},
		Warning:  "answered from node-c's local view"}
	return &tandemv1.ListVolumesResponse{Volumes: []*tandemv1.VolumeInfo{v.volume, other}}, nil
}

func (v *fakeVolumes) Show(_ context.Context, r *tandemv1.ShowVolumeRequest) (*tandemv1.VolumeInfo, error) {
	v.mu.Lock()
	v.nShow++
	n, hook := v.nShow, v.onShow
	var a showAnswer
	switch {
	case len(v.shows) > 0:
		a = v.shows[min(n, len(v.shows))-1]
	case r.GetName() == v.volume.GetName():
		a.info = v.volume
	default:
		a.err = status.Errorf(codes.NotFound, "volume %q not found", r.GetName())
	}
	v.mu.Unlock()
	if hook != nil {
		hook(n)
	}
	return a.info, a.err
}

func (v *fakeVolumes) Delete(_ context.Context, r *tandemv1.DeleteVolumeRequest) (*tandemv1.DeleteVolumeResponse, error) {
	if r.GetName() == v.volume.GetName() {
		return nil, status.Errorf(codes.FailedPrecondition, "volume %q is attached to VM web1; detach it first", r.GetName())
	}
	return &tandemv1.DeleteVolumeResponse{}, nil
}

func (v *fakeVolumes) Promote(_ context.Context, r *tandemv1.PromoteVolumeRequest) (*tandemv1.VolumeInfo, error) {
	info := proto.Clone(v.volume).(*tandemv1.VolumeInfo)
	info.Primary, info.Epoch = r.GetNode(), info.GetEpoch()+1
	for _, rep := range info.Replicas {
		rep.Primary = rep.GetNode() == r.GetNode()
	}
	return info, nil
}

func (v *fakeVolumes) Resync(context.Context, *tandemv1.ResyncVolumeRequest) (*tandemv1.VolumeInfo, error) {
	info := proto.Clone(v.volume).(*tandemv1.VolumeInfo)
	info.Replicas[1].State, info.Replicas[1].Link = syncTarget, "syncing"
	return info, nil
}

func (v *fakeVolumes) Verify(context.Context, *tandemv1.VerifyVolumeRequest) (*tandemv1.VerifyVolumeResponse, error) {
	return v.verify, nil
}

func sampleVolume() *tandemv1.VolumeInfo {
	at := timestamppb.New(time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC))
	return &tandemv1.VolumeInfo{
		Name: "vm-disk", SizeBytes: 20 << 30, Epoch: 3, Primary: "node-a", Witness: "node-b", ShardId: 1001,
		State: "ready", NbdUnix: "nbd+unix:///vm-disk?socket=/run/tandem/nbd.sock", NbdTcp: "nbd://10.0.0.1:10809/vm-disk",
		Created: at, AnsweredBy: "node-a",
		Replicas: []*tandemv1.VolumeReplica{
			{Node: "node-a", State: upToDate, Primary: true, Since: at},
			{Node: "node-c", State: outdated, DirtyBytes: 64 << 20, ResyncSentBytes: 1 << 20, Link: "outdated", Since: at},
		},
		History: []*tandemv1.VolumeEvent{
			{At: at, By: "node-a", Epoch: 3, What: "fence node-c", Reason: "replication timeout"},
		},
	}
}

// resyncScript makes Show report a SyncTarget secondary whose dirty bytes
// shrink by step per call, then UpToDate.
func resyncScript(dirty, step int64) []showAnswer {
	var out []showAnswer
	var sent int64
	for {
		v := sampleVolume()
		r := v.Replicas[1]
		r.DirtyBytes, r.ResyncSentBytes = dirty, sent
		if dirty > 0 {
			r.State, r.Link = syncTarget, "syncing"
			v.Replicas[0].State = syncSource
		} else {
			r.State, r.Link = upToDate, "in-sync"
		}
		out = append(out, showAnswer{info: v})
		if dirty == 0 {
			return out
		}
		dirty, sent = max(dirty-step, 0), sent+min(step, dirty)
	}
}

func TestVolumeCreate(t *testing.T) {
	dir, f, _ := startVolumeDaemon(t)
	r := runCLI(t, "", "--data-dir", dir, "volume", "create", "db", "--size", "1.5G", "--replicas", "3", "--nodes", "node-a,node-c", "--nodes", "node-d")
	r.wantCode(t, 0)
	wantMatch(t, "stdout", r.stdout, `created volume "db"`, `size:\s+1\.5 GiB \(1610612736 bytes\)`, `nbd tcp:\s+nbd://`)
	c := f.only(t)
	want := &tandemv1.CreateVolumeRequest{Name: "db", SizeBytes: 3 << 29, Replicas: 3, Nodes: []string{"node-a", "node-c", "node-d"}, Ha: "auto"}
	if !proto.Equal(c.req, want) {
		t.Errorf("request %v, want %v", c.req, want)
	}
	// Provisioning disks on several nodes gets a minute unless --timeout is given.
	if c.budget <= 50*time.Second || c.budget > time.Minute {
		t.Errorf("create deadline in %s, want about a minute", c.budget)
	}
}

func TestVolumeCreateDefaults(t *testing.T) {
	dir, f, _ := startVolumeDaemon(t)
	runCLI(t, "", "--data-dir", dir, "--timeout", "3s", "volume", "create", "db", "--size", "10G").wantCode(t, 0)
	c := f.only(t)
	want := &tandemv1.CreateVolumeRequest{Name: "db", SizeBytes: 10 << 30, Replicas: 2, Ha: "auto"}
	if !proto.Equal(c.req, want) {
		t.Errorf("request %v, want %v", c.req, want)
	}
	if c.budget <= 0 || c.budget > 3*time.Second {
		t.Errorf("create with --timeout 3s: deadline in %s", c.budget)
	}
}

func TestVolumeList(t *testing.T) {
	dir, f, _ := startVolumeDaemon(t)
	r := runCLI(t, "", "--data-dir", dir, "volume", "list")
	r.wantCode(t, 0)
	wantMatch(t, "stdout", r.stdout,
		`(?m)^NAME\s+SIZE\s+REPLICAS\s+PRIMARY\s+EPOCH\s+STATE\s+USED-BY\s+REPLICA-STATES\n`,
		`(?m)^vm-disk\s+20 GiB\s+2\s+node-a\s+3\s+ready\s+-\s+node-a:UpToDate\* node-c:Outdated\n`,
		`(?m)^scratch\s+512 MiB\s+1\s+node-c\s+1\s+creating\s+-\s+node-c:UpToDate\*\n`,
		`WARNING: scratch: answered from node-c's local view`,
	)
	if f.only(t).method != tandemv1.Volume_List_FullMethodName {
		t.Error("wrong method")
	}

	// Output controls: columns in the order given, filters, no headers.
	r = runCLI(t, "", "--data-dir", dir, "volume", "list", "--columns", "name,state", "--filter", "state=cre*", "--no-headers")
	r.wantCode(t, 0)
	if r.stdout != "scratch  creating\n" {
		t.Errorf("--columns/--filter/--no-headers: %q", r.stdout)
	}
	r = runCLI(t, "", "--data-dir", dir, "volume", "list", "--filter", "state=degraded")
	r.wantCode(t, 0)
	wantMatch(t, "stdout", r.stdout, `\(no rows match the filter\)`)
	r = runCLI(t, "", "--data-dir", dir, "volume", "list", "--columns", "name,colour")
	r.wantCode(t, 2)
	wantMatch(t, "stderr", r.stderr, `no column "colour"; the columns are name, size, replicas, primary, epoch, state, used-by, replica-states`)
	for _, bad := range [][]string{{"--filter", "state"}, {"--filter", "name=[x"}, {"-o", "json", "--no-headers"}} {
		r = runCLI(t, "", append([]string{"--data-dir", dir, "volume", "list"}, bad...)...)
		r.wantCode(t, 2)
	}

	r = runCLI(t, "", "--data-dir", dir, "-o", "json", "volume", "list")
	r.wantCode(t, 0)
	var got tandemv1.ListVolumesResponse
	if err := adminclient.UnmarshalJSON([]byte(r.stdout), &got); err != nil {
		t.Fatalf("stdout is not one ListVolumesResponse: %v\n%s", err, r.stdout)
	}
	if len(got.GetVolumes()) != 2 || !proto.Equal(got.GetVolumes()[0], sampleVolume()) {
		t.Errorf("round trip differs: %v", &got)
	}
}

func TestVolumeShow(t *testing.T) {
	dir, f, _ := startVolumeDaemon(t)
	r := runCLI(t, "", "--data-dir", dir, "volume", "show", "vm-disk")
	r.wantCode(t, 0)
	wantMatch(t, "stdout", r.stdout,
		`name:\s+vm-disk\n`,
		`size:\s+20 GiB \(21474836480 bytes\)\n`,
		`epoch:\s+3\n`,
		`primary:\s+node-a\n`,
		`witness:\s+node-b\n`,
		`shard:\s+1001\n`,
		`state:\s+ready\n`,
		`nbd unix:\s+nbd\+unix:///vm-disk\?socket=/run/tandem/nbd\.sock\n`,
		`nbd tcp:\s+nbd://10\.0\.0\.1:10809/vm-disk\n`,
		`answered by:\s+node-a\n`,
		`NODE\s+ROLE\s+STATE\s+LINK\s+DIRTY\s+RESYNC-SENT\s+SINCE\n`,
		`node-a\s+primary\s+UpToDate\s+-\s+-\s+-\s+\S+\n`,
		`node-c\s+secondary\s+Outdated\s+outdated\s+64 MiB\s+1 MiB\s+\S+\n`,
		`recent history:\nTIME\s+BY\s+EPOCH\s+WHAT\s+REASON\n.*node-a\s+3\s+fence node-c\s+replication timeout`,
	)
	if strings.Contains(r.stdout, "WARNING") {
		t.Errorf("warning without one in the answer:\n%s", r.stdout)
	}
	if req := f.only(t).req.(*tandemv1.ShowVolumeRequest); req.GetName() != "vm-disk" {
		t.Errorf("request %v", req)
	}

	r = runCLI(t, "", "--data-dir", dir, "-o", "json", "volume", "show", "vm-disk")
	r.wantCode(t, 0)
	var got tandemv1.VolumeInfo
	if err := adminclient.UnmarshalJSON([]byte(r.stdout), &got); err != nil {
		t.Fatalf("stdout is not one VolumeInfo: %v\n%s", err, r.stdout)
	}
	if !proto.Equal(&got, sampleVolume()) {
		t.Errorf("round trip differs:\ngot  %v\nwant %v", &got, sampleVolume())
	}
	var raw map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"size_bytes", "nbd_unix", "warning", "answered_by"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("JSON lacks %q", k)
		}
	}

	r = runCLI(t, "", "--data-dir", dir, "volume", "show", "nope")
	r.wantCode(t, 1)
	wantMatch(t, "stderr", r.stderr, `^tandem: volume "nope" not found\n$`)
}

func TestVolumeShowNotes(t *testing.T) {
	dir, _, v := startVolumeDaemon(t)
	v.volume.Warning = "node-a cannot reach the shard leader; this is its local view"
	v.volume.Replicas[1].Link = "diverged"
	v.volume.Replicas[0].Reconcile = true
	r := runCLI(t, "", "--data-dir", dir, "volume", "show", "vm-disk")
	r.wantCode(t, 0)
	wantMatch(t, "stdout", r.stdout,
		`WARNING: node-a cannot reach the shard leader`,
		`node-a: reconciling after the primary change`,
		`replica on node-c has diverged from primary node-a`,
	)
}

// TestVolumeShowPlainLink: a link whose data crosses the network
// unencrypted says so; a TLS one (the default) shows as before.
func TestVolumeShowPlainLink(t *testing.T) {
	dir, _, v := startVolumeDaemon(t)
	v.volume.Replicas[1].State, v.volume.Replicas[1].Link, v.volume.Replicas[1].DirtyBytes = upToDate, "in-sync", 0
	v.volume.Replicas[1].DataStream = "tls"
	r := runCLI(t, "", "--data-dir", dir, "volume", "show", "vm-disk")
	r.wantCode(t, 0)
	wantMatch(t, "stdout", r.stdout, `node-c\s+secondary\s+UpToDate\s+in-sync\s+0 B\s+1 MiB\s+\S+\n`)
	if strings.Contains(r.stdout, "plain") {
		t.Errorf("a TLS link shown as plain:\n%s", r.stdout)
	}
	v.volume.Replicas[1].DataStream = "plain"
	r = runCLI(t, "", "--data-dir", dir, "volume", "show", "vm-disk")
	r.wantCode(t, 0)
	wantMatch(t, "stdout", r.stdout,
		`node-c\s+secondary\s+UpToDate\s+in-sync \(plain\)\s+0 B\s+1 MiB\s+\S+\n`,
		`\(plain\): the link carries its data unencrypted`)
}

func TestVolumeDeleteRefused(t *testing.T) {
	dir, f, _ := startVolumeDaemon(t)
	r := runCLI(t, "", "--data-dir", dir, "volume", "delete", "vm-disk")
	r.wantCode(t, 1)
	wantMatch(t, "stderr", r.stderr, `^tandem: volume "vm-disk" is attached to VM web1; detach it first\n$`)

	r = runCLI(t, "", "--data-dir", dir, "volume", "delete", "old")
	r.wantCode(t, 0)
	wantMatch(t, "stdout", r.stdout, `^deleted volume "old"\n$`)
	calls := f.recorded()
	if req := calls[1].req.(*tandemv1.DeleteVolumeRequest); req.GetName() != "old" {
		t.Errorf("request %v", req)
	}
}

func TestVolumePromote(t *testing.T) {
	dir, f, _ := startVolumeDaemon(t)
	r := runCLI(t, "", "--data-dir", dir, "volume", "promote", "vm-disk", "--node", "node-c")
	r.wantCode(t, 0)
	wantMatch(t, "stdout", r.stdout, `volume "vm-disk": primary node-c, epoch 4\n`, `replicas: node-a:UpToDate node-c:Outdated\*`)
	if req := f.only(t).req.(*tandemv1.PromoteVolumeRequest); req.GetName() != "vm-disk" || req.GetNode() != "node-c" {
		t.Errorf("request %v", req)
	}

	r = runCLI(t, "", "--data-dir", dir, "-o", "json", "volume", "promote", "vm-disk", "--node", "node-c")
	r.wantCode(t, 0)
	var got tandemv1.VolumeInfo
	if err := adminclient.UnmarshalJSON([]byte(r.stdout), &got); err != nil || got.GetEpoch() != 4 {
		t.Errorf("json %q: %v", r.stdout, err)
	}
}

func TestVolumeResyncNoWait(t *testing.T) {
	dir, f, _ := startVolumeDaemon(t)
	r := runCLI(t, "", "--data-dir", dir, "volume", "resync", "vm-disk")
	r.wantCode(t, 0)
	wantMatch(t, "stdout", r.stdout, `resync requested for volume "vm-disk"`, `replicas: node-a:UpToDate\* node-c:SyncTarget`, `node-c: link syncing, 64 MiB dirty`)
	if f.only(t).method != tandemv1.Volume_Resync_FullMethodName {
		t.Error("wrong method")
	}
}

func TestVolumeResyncWait(t *testing.T) {
	dir, f, v := startVolumeDaemon(t)
	v.shows = resyncScript(300<<20, 100<<20)
	r := runCLI(t, "", "--data-dir", dir, "volume", "resync", "vm-disk", "--wait", "--interval", "5ms")
	r.wantCode(t, 0)
	wantMatch(t, "stdout", r.stdout, `^volume "vm-disk": all 2 replicas UpToDate \(300 MiB sent in \S+\)\n$`)
	// Not a terminal: lines, one per change of states here, the last at 100%.
	wantMatch(t, "stderr", r.stderr,
		`^resync vm-disk: 0% \(0 B of 300 MiB\), --/s, ETA --; node-a:SyncSource\* node-c:SyncTarget\n`,
		`resync vm-disk: 100% \(300 MiB of 300 MiB\), .*; node-a:UpToDate\* node-c:UpToDate\n$`,
	)
	if strings.Contains(r.stderr, "\r") {
		t.Errorf("carriage return in non-terminal output: %q", r.stderr)
	}
	calls := f.recorded()
	if len(calls) != 5 || calls[0].method != tandemv1.Volume_Resync_FullMethodName {
		t.Fatalf("calls %v, want Resync then 4 Show", calls)
	}
	for _, c := range calls[1:] {
		if c.method != tandemv1.Volume_Show_FullMethodName {
			t.Errorf("call %s, want Show", c.method)
		}
		// Each poll keeps the per-call timeout, not the hour-long wait.
		if c.budget <= 0 || c.budget > 10*time.Second {
			t.Errorf("poll deadline in %s, want the 10s default", c.budget)
		}
	}

	// JSON: the final VolumeInfo on stdout, progress still on stderr.
	dir, _, v = startVolumeDaemon(t)
	v.shows = resyncScript(2<<20, 1<<20)
	r = runCLI(t, "", "--data-dir", dir, "-o", "json", "volume", "resync", "vm-disk", "--wait", "--interval", "5ms")
	r.wantCode(t, 0)
	var got tandemv1.VolumeInfo
	if err := adminclient.UnmarshalJSON([]byte(r.stdout), &got); err != nil || got.GetReplicas()[1].GetState() != upToDate {
		t.Errorf("json %q: %v", r.stdout, err)
	}
}

func TestVolumeResyncWaitRetriesUnavailable(t *testing.T) {
	dir, _, v := startVolumeDaemon(t)
	script := resyncScript(2<<20, 1<<20)
	v.shows = append([]showAnswer{script[0], {err: status.Error(codes.Unavailable, "no leader for shard 1001")}}, script[1:]...)
	r := runCLI(t, "", "--data-dir", dir, "volume", "resync", "vm-disk", "--wait", "--interval", "5ms")
	r.wantCode(t, 0)
	wantMatch(t, "stderr", r.stderr, `volume "vm-disk": unavailable: no leader for shard 1001; retrying\n`)
}

func TestVolumeResyncWaitDiverged(t *testing.T) {
	dir, _, v := startVolumeDaemon(t)
	script := resyncScript(3<<20, 1<<20)
	script[1].info.Replicas[1].Link = "diverged"
	v.shows = script
	r := runCLI(t, "", "--data-dir", dir, "volume", "resync", "vm-disk", "--wait", "--interval", "5ms")
	r.wantCode(t, 1)
	wantMatch(t, "stderr", r.stderr, `tandem: volume "vm-disk": the replica on node-c has diverged from primary node-a .*; resync cannot make it UpToDate\n$`)
	if r.stdout != "" {
		t.Errorf("stdout %q", r.stdout)
	}
}

func TestVolumeResyncWaitTimeout(t *testing.T) {
	dir, _, v := startVolumeDaemon(t)
	v.shows = resyncScript(300<<20, 100<<20)[:2] // stuck at 200 MiB
	r := runCLI(t, "", "--data-dir", dir, "volume", "resync", "vm-disk", "--wait", "--interval", "5ms", "--timeout-wait", "100ms")
	r.wantCode(t, 1)
	wantMatch(t, "stderr", r.stderr, `tandem: gave up waiting for volume "vm-disk" after 100ms \(replicas node-a:SyncSource\* node-c:SyncTarget, 200 MiB dirty\); the resync goes on`)
}

func TestVolumeResyncWaitInterrupted(t *testing.T) {
	dir, _, v := startVolumeDaemon(t)
	v.shows = resyncScript(300<<20, 100<<20)[:1]
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	v.onShow = func(n int) {
		if n == 3 {
			cancel() // Ctrl-C
		}
	}
	var out, errb bytes.Buffer
	code := execute(ctx, []string{"--data-dir", dir, "volume", "resync", "vm-disk", "--wait", "--interval", "5ms"}, strings.NewReader(""), &out, &errb)
	if code != 130 {
		t.Fatalf("exit %d, want 130 (interrupted); stderr:\n%s", code, errb.String())
	}
	wantMatch(t, "stderr", errb.String(), `tandem: stopped waiting \(context canceled\); the resync of volume "vm-disk" goes on in the cluster: follow it with 'tandem volume show vm-disk'\n$`)
}

func TestVolumeResyncWaitNotUpToDate(t *testing.T) {
	dir, _, v := startVolumeDaemon(t)
	info := sampleVolume()
	info.Replicas[1].State, info.Replicas[1].DirtyBytes = tandemv1.ReplicaState_REPLICA_STATE_UNSPECIFIED, 0
	v.shows = []showAnswer{{info: info}}
	r := runCLI(t, "", "--data-dir", dir, "volume", "resync", "vm-disk", "--wait", "--interval", "5ms")
	r.wantCode(t, 1)
	wantMatch(t, "stderr", r.stderr, `not every replica is UpToDate: node-c:Unknown`)
}

func TestResyncProgressDisplay(t *testing.T) {
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	script := resyncScript(300<<20, 100<<20)
	p := newResyncProgress(t0)
	p.observe(script[0].info, t0)
	if got, want := p.bar(), "[....................]   0% 0 B/300 MiB --/s ETA --"; got != want {
		t.Errorf("bar at start\n got %q\nwant %q", got, want)
	}
	p.observe(script[2].info, t0.Add(2*time.Second))
	if got, want := p.bar(), "[#############.......]  66% 200 MiB/300 MiB 100 MiB/s ETA 1s"; got != want {
		t.Errorf("bar at 2s\n got %q\nwant %q", got, want)
	}
	if len(p.bar()) >= 80 {
		t.Errorf("bar is %d columns", len(p.bar()))
	}

	// A new resync restarting the sent counter keeps the sum growing.
	restarted := proto.Clone(script[3].info).(*tandemv1.VolumeInfo)
	restarted.Replicas[1].ResyncSentBytes = 50 << 20
	p.observe(restarted, t0.Add(3*time.Second))
	if p.sent != 250<<20 {
		t.Errorf("sent %d after a counter restart, want 250 MiB", p.sent)
	}

	var buf bytes.Buffer
	o := newProgressOutput(&buf, true)
	o.draw("long line here")
	o.draw("short")
	o.note("retrying")
	o.draw("again")
	o.finish()
	if got, want := buf.String(), "\rlong line here\rshort         \r     \rretrying\n\ragain\n"; got != want {
		t.Errorf("terminal output\n got %q\nwant %q", got, want)
	}
}

func TestIsTerminalWriter(t *testing.T) {
	_, slave := openPTY(t)
	if !isTerminalWriter(slave) {
		t.Error("pty is not a terminal")
	}
	if isTerminalWriter(&bytes.Buffer{}) {
		t.Error("buffer is a terminal")
	}
}

func TestVolumeVerify(t *testing.T) {
	dir, f, v := startVolumeDaemon(t)
	r := runCLI(t, "", "--data-dir", dir, "volume", "verify", "vm-disk")
	r.wantCode(t, 0)
	wantMatch(t, "stdout", r.stdout, `checked: 20 GiB \(21474836480 bytes\)\n`, `no mismatches`)
	if b := f.only(t).budget; b <= 50*time.Minute {
		t.Errorf("verify deadline in %s, want about an hour", b)
	}

	v.verify = &tandemv1.VerifyVolumeResponse{CheckedBytes: 20 << 30, Mismatches: []*tandemv1.VerifyMismatch{
		{Node: "node-c", Offset: 4096, Length: 65536},
		{Node: "node-c", Offset: 1 << 30, Length: 4096},
	}}
	r = runCLI(t, "", "--data-dir", dir, "volume", "verify", "vm-disk")
	r.wantCode(t, 1)
	wantMatch(t, "stdout", r.stdout, `2 mismatched range\(s\):\nNODE\s+OFFSET\s+LENGTH\nnode-c\s+4096\s+65536\nnode-c\s+1073741824\s+4096\n`)
	wantMatch(t, "stderr", r.stderr, `^tandem: volume "vm-disk": 2 mismatched range\(s\), 68 KiB, on node-c differ from the primary; run 'tandem volume verify vm-disk --repair' to resync them\n$`)

	// JSON still gets the whole answer, and the exit code still says it.
	r = runCLI(t, "", "--data-dir", dir, "-o", "json", "volume", "verify", "vm-disk")
	r.wantCode(t, 1)
	var got tandemv1.VerifyVolumeResponse
	if err := adminclient.UnmarshalJSON([]byte(r.stdout), &got); err != nil || len(got.GetMismatches()) != 2 {
		t.Errorf("json %q: %v", r.stdout, err)
	}

	v.verify.RepairedBytes = 69632
	r = runCLI(t, "", "--data-dir", dir, "volume", "verify", "vm-disk", "--repair")
	r.wantCode(t, 0)
	wantMatch(t, "stdout", r.stdout, `repaired: 68 KiB \(69632 bytes\)`)
	calls := f.recorded()
	if req := calls[len(calls)-1].req.(*tandemv1.VerifyVolumeRequest); !req.GetRepair() {
		t.Errorf("request %v, want repair", req)
	}

	v.verify.RepairedBytes = 4096
	r = runCLI(t, "", "--data-dir", dir, "volume", "verify", "vm-disk", "--repair")
	r.wantCode(t, 1)
	wantMatch(t, "stderr", r.stderr, `but only 4 KiB repaired`)
}

// TestVolumeVerifyNamesSkippedReplicas: a replica that was not compared is
// named with its reason, and the exit code is 1 unless --in-sync-only.
func TestVolumeVerifyNamesSkippedReplicas(t *testing.T) {
	dir, _, v := startVolumeDaemon(t)
	v.verify = &tandemv1.VerifyVolumeResponse{CheckedBytes: 64 << 20, Primary: "node-a", Replicas: []*tandemv1.VerifyReplica{
		{Node: "node-b", State: syncTarget, SkippedReason: "resync running (link syncing, 36700160 bytes still to send)"},
		{Node: "node-c", State: upToDate, Compared: true},
	}}
	r := runCLI(t, "", "--data-dir", dir, "volume", "verify", "vm-disk")
	r.wantCode(t, 1)
	wantMatch(t, "stdout", r.stdout,
		`REPLICA\s+STATE\s+COMPARED\s+MISMATCHED\s+NOTE\n`,
		`node-a\s+primary\s+-\s+-\s+reference\n`,
		`node-b\s+SyncTarget\s+no\s+-\s+resync running`,
		`node-c\s+UpToDate\s+yes\s+0 B`,
		`no mismatches in the replicas compared; some were skipped`)
	if strings.Contains(r.stdout, "every replica matches") {
		t.Errorf("all-clear printed although node-b was skipped:\n%s", r.stdout)
	}
	wantMatch(t, "stderr", r.stderr, `replica\(s\) on node-b not compared`, `--in-sync-only`)

	r = runCLI(t, "", "--data-dir", dir, "volume", "verify", "vm-disk", "--in-sync-only")
	r.wantCode(t, 0)

	v.verify.Replicas[0] = &tandemv1.VerifyReplica{Node: "node-b", State: upToDate, Compared: true}
	r = runCLI(t, "", "--data-dir", dir, "volume", "verify", "vm-disk")
	r.wantCode(t, 0)
	wantMatch(t, "stdout", r.stdout, `no mismatches: every replica matches the primary`)
}

func TestVolumeUsageErrors(t *testing.T) {
	dir, f, _ := startVolumeDaemon(t)
	wantUsageErrors(t, dir, f, [][]string{
		{"volume", "bogus"},
		{"volume", "create"},
		{"volume", "create", "db"},
		{"volume", "create", "db", "--size", "0"},
		{"volume", "create", "db", "--size", "-1G"},
		{"volume", "create", "db", "--size", "1.5"},
		{"volume", "create", "db", "--size", "10GB"},
		{"volume", "create", "db", "--size", "99999999T"},
		{"volume", "create", "db", "--size", "1G", "--replicas", "4"},
		{"volume", "create", "db", "--size", "1G", "--replicas", "0"},
		{"volume", "create", "db", "--size", "1G", "--replicas", "-1"},
		{"volume", "create", "db", "--size", "1G", "--nodes", "a,a"},
		{"volume", "create", "db", "--size", "1G", "--nodes", "a,,b"},
		{"volume", "create", "a", "b", "--size", "1G"},
		{"volume", "list", "extra"},
		{"volume", "show"},
		{"volume", "delete"},
		{"volume", "promote", "db"},
		{"volume", "resync"},
		{"volume", "resync", "db", "--interval", "1s"},
		{"volume", "resync", "db", "--wait", "--interval", "0s"},
		{"volume", "resync", "db", "--wait", "--timeout-wait", "-1s"},
		{"volume", "verify"},
		{"volume", "verify", "db", "--repair=maybe"},
	})
	r := runCLI(t, "", "--data-dir", dir, "volume", "create", "db", "--size", "10GB")
	wantMatch(t, "stderr", r.stderr, `^tandem: --size: size "10GB": unit "GB" is ambiguous; use G or GiB \(1024-based\)\n`)
	r = runCLI(t, "", "--data-dir", dir, "volume", "create", "db", "--size", "1G", "--replicas", "-1")
	wantMatch(t, "stderr", r.stderr, `^tandem: --replicas must be 1, 2 or 3, not -1\n`)
	if strings.Contains(r.stderr, "strconv") {
		t.Errorf("raw strconv error: %q", r.stderr)
	}
}

// TestVolumeCreateNodesSetTheCount: --nodes without --replicas asks for as
// many replicas as nodes; with --replicas the count is sent as given.
func TestVolumeCreateNodesSetTheCount(t *testing.T) {
	dir, f, _ := startVolumeDaemon(t)
	runCLI(t, "", "--data-dir", dir, "volume", "create", "db", "--size", "1G", "--nodes", "a,b,c").wantCode(t, 0)
	if r := f.only(t).req.(*tandemv1.CreateVolumeRequest); r.GetReplicas() != 0 || len(r.GetNodes()) != 3 {
		t.Errorf("request %v, want replicas 0 (as many as nodes)", r)
	}
}

func TestVolumeShowUsedByAndResyncNote(t *testing.T) {
	dir, _, v := startVolumeDaemon(t)
	r := runCLI(t, "", "--data-dir", dir, "volume", "show", "vm-disk")
	r.wantCode(t, 0)
	wantMatch(t, "stdout", r.stdout, `used by:\s+- \(no VM\)\n`, `RESYNC-SENT counts what the running or last resync sent \(cumulative`)
	v.volume.UsedBy = "web1"
	r = runCLI(t, "", "--data-dir", dir, "volume", "show", "vm-disk")
	wantMatch(t, "stdout", r.stdout, `used by:\s+VM web1\n`)
}

func TestVolumeCreateHAAndSet(t *testing.T) {
	dir, f, _ := startVolumeDaemon(t)
	runCLI(t, "", "--data-dir", dir, "volume", "create", "db", "--size", "1G", "--ha", "manual").wantCode(t, 0)
	if c := f.only(t); c.req.(*tandemv1.CreateVolumeRequest).GetHa() != "manual" {
		t.Errorf("request %v, want ha manual", c.req)
	}
	r := runCLI(t, "", "--data-dir", dir, "volume", "create", "db", "--size", "1G", "--ha", "maybe")
	r.wantCode(t, 2)
	wantMatch(t, "stderr", r.stderr, `--ha must be auto or manual, not "maybe"`)
	r = runCLI(t, "", "--data-dir", dir, "volume", "set", "db")
	r.wantCode(t, 2)
	wantMatch(t, "stderr", r.stderr, `--ha is required: auto or manual`)
}
