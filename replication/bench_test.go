package replication

import (
	"bytes"
	"math/rand/v2"
	"runtime"
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
