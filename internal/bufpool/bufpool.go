// Package bufpool recycles byte buffers in power-of-two size classes, so a
// busy data path does not allocate (and the GC clear and scan) a fresh
// buffer per request: at 1 MiB writes that cost more CPU than the copy.
package bufpool

import (
	"math/bits"
	"sync"
)

const (
	minClassShift = 12 // 4 KiB
	maxClassShift = 27 // 128 MiB
)

// Pool is a set of size classes; the zero value is ready to use.
type Pool struct {
	classes [maxClassShift - minClassShift + 1]sync.Pool
}

func sizeClass(n int) int {
	if n <= 1<<minClassShift {
		return 0
	}
	return bits.Len(uint(n-1)) - minClassShift
}

// Get returns a buffer of length n; its contents are undefined.
func (p *Pool) Get(n int) []byte {
	c := sizeClass(n)
	if c >= len(p.classes) {
		return make([]byte, n)
	}
	if v, ok := p.classes[c].Get().(*[]byte); ok {
		return (*v)[:n]
	}
	return make([]byte, n, 1<<(c+minClassShift))
}

// Put recycles a buffer from Get; the caller must not use it afterwards.
// Buffers that Get did not make are ignored.
func (p *Pool) Put(b []byte) {
	c := sizeClass(cap(b))
	if cap(b) == 0 || c >= len(p.classes) || cap(b) != 1<<(c+minClassShift) {
		return
	}
	b = b[:0]
	p.classes[c].Put(&b)
}
