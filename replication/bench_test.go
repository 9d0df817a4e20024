package replication

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// BenchmarkReplicatedWriteQD1 measures the protocol's own cost per 4K write
// (memory stores, loopback TCP without TLS): what replication adds before
// any disk or real network.
func BenchmarkReplicatedWriteQD1(b *testing.B) {
	t := &testing.T{}
	r := newRig(t, 1, 5*time.Second)
	buf := bytes.Repeat([]byte{1}, 4096)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := r.p.WriteAt(r.ctx, buf, int64(i%1000)*4096, 0); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReplicatedWriteQD32 is BenchmarkReplicatedWriteQD1 with 32
// writers at once (random 4K blocks, rarely overlapping): the cost of
// ordering in-flight writes on both sides.
func BenchmarkReplicatedWriteQD32(b *testing.B) {
	t := &testing.T{}
	r := newRig(t, 1, 5*time.Second)
	buf := bytes.Repeat([]byte{1}, 4096)
	b.SetParallelism(max(1, 32/runtime.GOMAXPROCS(0)))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		rng := rand.New(rand.NewPCG(rand.Uint64(), 1))
		for pb.Next() {
			if _, err := r.p.WriteAt(r.ctx, buf, rng.Int64N(volSize/4096)*4096, 0); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkReplicatedWriteStream compares the data streams of a replication
// connection (replication.data_stream) over real mutual TLS on loopback,
// memory stores, one writer (QD1): tls against plain, 4 KiB and 1 MiB
// writes. cpu-ns/op is the process's user+system CPU per write: both
// nodes' sides of the link, the encryption included.
func BenchmarkReplicatedWriteStream(b *testing.B) {
	for _, size := range []int{4 << 10, 1 << 20} {
		for _, stream := range []string{StreamTLS, StreamPlain} {
			b.Run(fmt.Sprintf("%dK/%s", size>>10, stream), func(b *testing.B) {
				plain := stream == StreamPlain
				r := newTLSRig(b, plain, plain, false)
				if st := r.p.Status(); len(st) != 1 || st[0].Stream != stream {
					b.Fatalf("status %+v, want stream %s", st, stream)
				}
				buf := bytes.Repeat([]byte{1}, size)
				slots := int64(volSize / size)
				b.SetBytes(int64(size))
				cpu0 := cpuTime(b)
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if _, err := r.p.WriteAt(r.ctx, buf, (int64(i)%slots)*int64(size), 0); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(b.N), "cpu-ns/op")
			})
		}
	}
}

// cpuTime is the process's user+system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
