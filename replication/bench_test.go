package replication

import (
	"bytes"
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
