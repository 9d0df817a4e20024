//go:build ceph

package rbd

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/tandemhci/tandem/blockstore"
	"github.com/tandemhci/tandem/internal/cephtest"
)

// fio runs fio's own rbd engine (librbd, independent of this package) on
// an image of c as client.admin and returns its JSON report.
func fio(t *testing.T, c *cephtest.Cluster, image string, args ...string) fioReport {
	t.Helper()
	r, err := runFio(t, c, image, args...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func runFio(t *testing.T, c *cephtest.Cluster, image string, args ...string) (fioReport, error) {
	t.Helper()
	var r fioReport
	bin, err := exec.LookPath("fio")
	if err != nil {
		t.Fatalf("fio not found (make deps installs it): %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	argv := append([]string{"--ioengine=rbd", "--clientname=admin", "--pool=" + c.Pool, "--rbdname=" + image,
		"--output-format=json"}, args...)
	cmd := exec.CommandContext(ctx, bin, argv...)
	cmd.Env = append(os.Environ(), c.Env()...)
	cmd.Dir = t.TempDir() // fio leaves its verify state files there
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return r, fmt.Errorf("fio %q: %w\n%s\n%.2000s", argv, err, stderr.Bytes(), stdout.Bytes())
	}
	// fio may print notes before the JSON.
	out := stdout.Bytes()
	if i := bytes.IndexByte(out, '{'); i > 0 {
		out = out[i:]
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return r, fmt.Errorf("fio: decoding its report: %w\n%s", err, stdout.Bytes())
	}
	for _, j := range r.Jobs {
		if j.Error != 0 {
			return r, fmt.Errorf("fio job %s: error %d\n%s", j.Name, j.Error, stderr.Bytes())
		}
	}
	return r, nil
}

type fioReport struct {
	Jobs []struct {
		Name  string `json:"jobname"`
		Error int    `json:"error"`
		Write fioDir `json:"write"`
		Read  fioDir `json:"read"`
	} `json:"jobs"`
}

type fioDir struct {
	IOPS  float64 `json:"iops"`
	Bytes int64   `json:"io_bytes"`
	Clat  struct {
		Percentile map[string]int64 `json:"percentile"`
	} `json:"clat_ns"`
}

// TestFioRBDEngine checks the backend against an independent client,
// fio's rbd engine: what this package writes fio reads back, what fio
// writes this package reads back, and fio's own write-then-verify pass
// on the image holds. It logs fio's QD1 4K write latency.
func TestFioRBDEngine(t *testing.T) {
	c := cluster(t)
	cfg := adminConfig(c)
	p := connectPool(t, cfg)
	ctx := t.Context()
	const name, size = "fio", 32 << 20
	if err := p.Create(ctx, name, size); err != nil {
		t.Fatalf("Create: %v", err)
	}
	t.Cleanup(func() { p.Remove(context.Background(), name) })

	// Ours writes a pattern; fio reads it and verifies every block.
	v := openVolume(t, cfg, name, OpenOptions{Exclusive: true})
	if _, err := v.WriteAt(ctx, bytes.Repeat([]byte{0x5a}, 8<<20), 0, blockstore.FUA); err != nil {
		t.Fatal(err)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	r := fio(t, c, name, "--name=readback", "--rw=read", "--bs=64k", "--size=8M", "--verify=pattern",
		"--verify_pattern=0x5a", "--verify_fatal=1")
	if r.Jobs[0].Read.Bytes != 8<<20 {
		t.Errorf("fio read %d bytes, want %d", r.Jobs[0].Read.Bytes, 8<<20)
	}
	// The same check with another pattern must fail: the verification
	// above is real.
	if _, err := runFio(t, c, name, "--name=wrongpattern", "--rw=read", "--bs=64k", "--size=1M", "--verify=pattern",
		"--verify_pattern=0x77", "--verify_fatal=1"); err == nil {
		t.Error("fio verified pattern 0x77 on data written as 0x5a")
	}

	// fio writes a pattern (and verifies it itself); ours reads it.
	fio(t, c, name, "--name=writepattern", "--rw=write", "--bs=64k", "--offset=8M", "--size=8M",
		"--verify=pattern", "--verify_pattern=0xc3", "--do_verify=1", "--verify_fatal=1")
	v = openVolume(t, cfg, name, OpenOptions{ReadOnly: true})
	if got := readAll(t, v, 8<<20, 8<<20); !bytes.Equal(got, bytes.Repeat([]byte{0xc3}, 8<<20)) {
		t.Error("data fio wrote through its rbd engine reads back differently")
	}
	v.Close()

	// fio's random-write verify pass with checksummed blocks, QD8.
	fio(t, c, name, "--name=verify", "--rw=randwrite", "--bs=4k", "--offset=16M", "--size=8M", "--iodepth=8",
		"--verify=crc32c", "--do_verify=1", "--verify_fatal=1")

	// QD1 4K random writes, librbd cache off (cephtest's CEPH_ARGS): the
	// figure the benchmark compares Tandem's NBD export of RBD with.
	r = fio(t, c, name, "--name=qd1", "--rw=randwrite", "--bs=4k", "--iodepth=1", "--offset=24M", "--size=8M",
		"--time_based", "--runtime=3")
	w := r.Jobs[0].Write
	t.Logf("fio rbd engine, QD1 4K random write (pool size %d, %d OSDs on one machine): p50 %v, p99 %v, %.0f IOPS",
		c.PoolSize, cephtest.DefaultOSDs, pct(w, "50.000000"), pct(w, "99.000000"), w.IOPS)
}

func pct(d fioDir, p string) time.Duration {
	return time.Duration(d.Clat.Percentile[p]).Round(time.Microsecond)
}
