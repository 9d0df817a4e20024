package blockstore

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// Benchmarks of the local write path on files in TMPDIR (ext4 on virtio
// here). Each I/O benchmark also reports p50/p99 latency in µs. Run with
//
//	go test -run '^$' -bench . -benchtime 3000x ./blockstore
//
// Figures measured here are in the report and in local.go's comment.

const benchSize = 256 << 20

func benchVolume(b *testing.B, zeroFill bool) *LocalVolume {
	b.Helper()
	v, _ := newVolume(b, benchSize, CreateOptions{ZeroFill: zeroFill})
	return v
}

// latencies runs op b.N times and reports p50/p99 alongside ns/op.
func latencies(b *testing.B, op func(i int) error) {
	b.Helper()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		t0 := time.Now()
		if err := op(i); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	slices.Sort(lat)
	if len(lat) > 0 {
		b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1e3, "p50-µs")
		b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds())/1e3, "p99-µs")
	}
}

func randomOffsets(n int) []int64 {
	rng := rand.New(rand.NewPCG(1, 1))
	offs := make([]int64, n)
	for i := range offs {
		offs[i] = rng.Int64N(benchSize/4096) * 4096
	}
	return offs
}

func BenchmarkWriteAt4K(b *testing.B) {
	cases := []struct {
		name     string
		zeroFill bool // blocks already written (steady state) vs fallocated only
		flags    WriteFlags
		dsync    bool
	}{
		{"nosync", true, 0, false},
		{"FUA-fdatasync", true, FUA, false},
		{"FUA-rwf_dsync", true, FUA, true},
		{"unwritten/FUA-fdatasync", false, FUA, false},
		{"unwritten/FUA-rwf_dsync", false, FUA, true},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			ctx := b.Context()
			v := benchVolume(b, c.zeroFill)
			v.fuaDsync = c.dsync
			buf := alignedBuf(4096)
			offs := randomOffsets(1 << 16)
			b.SetBytes(4096)
			latencies(b, func(i int) error {
				_, err := v.WriteAt(ctx, buf, offs[i%len(offs)], c.flags)
				return err
			})
		})
	}
}

// BenchmarkWriteAt4KUnaligned: 4 KiB at an offset 512 bytes into a block:
// two block reads and one 8 KiB write per call.
func BenchmarkWriteAt4KUnaligned(b *testing.B) {
	ctx := b.Context()
	v := benchVolume(b, true)
	buf := make([]byte, 4096)
	offs := randomOffsets(1 << 16)
	b.SetBytes(4096)
	latencies(b, func(i int) error {
		_, err := v.WriteAt(ctx, buf, min(offs[i%len(offs)]+512, benchSize-4096), 0)
		return err
	})
}

// BenchmarkWriteAt4KFUAParallel shows the group commit: concurrent FUA
// writers share fdatasyncs.
func BenchmarkWriteAt4KFUAParallel(b *testing.B) {
	for _, dsync := range []bool{false, true} {
		name := "fdatasync"
		if dsync {
			name = "rwf_dsync"
		}
		b.Run(name, func(b *testing.B) {
			ctx := b.Context()
			v := benchVolume(b, true)
			v.fuaDsync = dsync
			offs := randomOffsets(1 << 16)
			b.SetBytes(4096)
			b.SetParallelism(4) // 4 × GOMAXPROCS writers
			b.RunParallel(func(pb *testing.PB) {
				buf := alignedBuf(4096)
				rng := rand.New(rand.NewPCG(rand.Uint64(), 0))
				for pb.Next() {
					if _, err := v.WriteAt(ctx, buf, offs[rng.IntN(len(offs))], FUA); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

func BenchmarkReadAt4K(b *testing.B) {
	ctx := b.Context()
	v := benchVolume(b, true)
	buf := alignedBuf(4096)
	offs := randomOffsets(1 << 16)
	b.SetBytes(4096)
	latencies(b, func(i int) error {
		_, err := v.ReadAt(ctx, buf, offs[i%len(offs)])
		return err
	})
}

// BenchmarkMarkDirtyAlreadyDirty is the replication hot path while a peer
// is away: the region's bit is already set and durable.
func BenchmarkMarkDirtyAlreadyDirty(b *testing.B) {
	ctx := b.Context()
	v, _ := newVolume(b, 1<<30, CreateOptions{})
	if err := v.SetAllDirty(ctx, 0); err != nil {
		b.Fatal(err)
	}
	offs := make([]int64, 1<<16)
	rng := rand.New(rand.NewPCG(2, 2))
	for i := range offs {
		offs[i] = rng.Int64N(1<<30-4096) &^ 4095
	}
	b.Run("serial", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			if err := v.MarkDirty(ctx, 0, offs[i%len(offs)], 4096); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			i := rand.IntN(len(offs))
			for pb.Next() {
				if err := v.MarkDirty(ctx, 0, offs[i%len(offs)], 4096); err != nil {
					b.Error(err)
					return
				}
				i++
			}
		})
	})
}

// BenchmarkMarkDirtyNew sets a fresh bit each time: one 4 KiB bitmap block
// write plus fdatasync (the write-ahead cost when a peer first misses a
// region).
func BenchmarkMarkDirtyNew(b *testing.B) {
	ctx := b.Context()
	v, _ := newVolume(b, 64<<30, CreateOptions{Granularity: 4096}) // 16M regions: never runs out
	latencies(b, func(i int) error {
		return v.MarkDirty(ctx, 0, int64(i)*4096, 1)
	})
}

// BenchmarkRawBaseline4K is the floor: the same random 4 KiB writes issued
// straight to the volume's file (no range lock, no checks), to show what
// the layer above adds.
func BenchmarkRawBaseline4K(b *testing.B) {
	for _, c := range []struct {
		name        string
		sync, dsync bool
	}{{"pwrite", false, false}, {"pwrite+fdatasync", true, false}, {"pwritev2-RWF_DSYNC", false, true}} {
		b.Run(c.name, func(b *testing.B) {
			v := benchVolume(b, true)
			buf := alignedBuf(4096)
			offs := randomOffsets(1 << 16)
			b.SetBytes(4096)
			latencies(b, func(i int) error {
				off := offs[i%len(offs)]
				if c.dsync {
					_, err := v.f.WriteAtDsync(buf, off)
					return err
				}
				if _, err := v.f.WriteAt(buf, off); err != nil {
					return err
				}
				if c.sync {
					return v.f.Datasync()
				}
				return nil
			})
		})
	}
}
