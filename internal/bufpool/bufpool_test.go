package bufpool

import (
	"runtime"
	"testing"
	"unsafe"
)

func TestGetLengthAndClassCapacity(t *testing.T) {
	var p Pool
	for _, tc := range []struct{ n, cap int }{
		{0, 4096}, {1, 4096}, {4096, 4096}, {4097, 8192}, {4096 + 40, 8192},
		{1 << 20, 1 << 20}, {1<<20 + 40, 2 << 20}, {128 << 20, 128 << 20},
	} {
		b := p.Get(tc.n)
		if len(b) != tc.n || cap(b) != tc.cap {
			t.Errorf("Get(%d): len %d cap %d, want len %d cap %d", tc.n, len(b), cap(b), tc.n, tc.cap)
		}
		p.Put(b)
	}
	if b := p.Get(128<<20 + 1); len(b) != 128<<20+1 {
		t.Errorf("a buffer above the largest class has length %d", len(b))
	}
}

func TestPutIgnoresForeignBuffers(t *testing.T) {
	var p Pool
	p.Put(make([]byte, 5000)) // not a class size
	p.Put(nil)
	for i := 0; i < 100; i++ {
		if b := p.Get(5000); cap(b) != 8192 {
			t.Fatalf("Get(5000) returned a buffer of capacity %d, want 8192", cap(b))
		}
	}
}

func TestReuse(t *testing.T) {
	var p Pool
	round := func() {
		b := p.Get(1 << 20)
		b[0] = 1
		p.Put(b)
	}
	round()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := 0; i < 100; i++ {
		round()
	}
	runtime.ReadMemStats(&after)
	// sync.Pool may drop items at a GC, and Put allocates a slice header;
	// most rounds must not allocate a new MiB.
	if got := after.TotalAlloc - before.TotalAlloc; got > 10<<20 {
		t.Errorf("100 Get/Put rounds of 1 MiB allocated %d bytes", got)
	}
}

func TestAlign(t *testing.T) {
	// 64 KiB as well: Go's allocator happens to place 4 KiB-class
	// buffers at 4 KiB boundaries, never at 64 KiB ones.
	for _, align := range []int{4096, 64 << 10} {
		p := Pool{Align: align}
		aligned := func(b []byte) bool { return uintptr(unsafe.Pointer(unsafe.SliceData(b)))%uintptr(align) == 0 }
		for round := range 3 { // fresh buffers, then recycled ones
			var got [][]byte
			for _, n := range []int{1, 512, 4096, 4097, 65536, 1 << 20, 128<<20 + 1} {
				b := p.Get(n)
				if len(b) != n || !aligned(b) {
					t.Fatalf("align %d, round %d: Get(%d): len %d, address %p not aligned", align, round, n, len(b), unsafe.SliceData(b))
				}
				if n <= 128<<20 && cap(b) != 1<<(sizeClass(n)+minClassShift) {
					t.Fatalf("align %d, round %d: Get(%d): cap %d is not its class size", align, round, n, cap(b))
				}
				got = append(got, b)
			}
			for _, b := range got {
				p.Put(b)
			}
		}
	}
}
