package bufpool

import (
	"math/bits"
	"sync"
	"unsafe"
)

const (
	minClassShift = 12 // 4 KiB
	maxClassShift = 27 // 128 MiB
)

// Pool is a set of size classes; the zero value is ready to use.
type Pool struct {
	// Align, if set before first use, is a power of two that the first
	// byte of every buffer is a multiple of, as O_DIRECT I/O needs. Go's
	// allocator happens to align large power-of-two sizes, but does not
	// promise it.
	Align int

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
		return p.alloc(n, n)
	}
	if v, ok := p.classes[c].Get().(*[]byte); ok {
		return (*v)[:n]
	}
	return p.alloc(n, 1<<(c+minClassShift))
}

// alloc makes a buffer of length n and capacity size, aligned to p.Align.
func (p *Pool) alloc(n, size int) []byte {
	if p.Align <= 1 {
		return make([]byte, n, size)
	}
	return Aligned(size, p.Align)[:n]
}

// Aligned returns a zeroed n-byte slice whose first byte is a multiple of
// align (a power of two). The heap does not move objects, so slicing an
// over-allocation at an aligned address keeps it aligned.
func Aligned(n, align int) []byte {
	b := make([]byte, n+align)
	o := int(-uintptr(unsafe.Pointer(unsafe.SliceData(b))) & uintptr(align-1))
	return b[o : o+n : o+n]
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
