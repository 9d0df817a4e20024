package uring

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The kernel ABI (include/uapi/linux/io_uring.h).
const (
	opNop   = 0
	opFsync = 3
	opRead  = 22
	opWrite = 23

	sqeFixedFile = 1 << 0

	fsyncDatasync = 1 << 0 // IORING_FSYNC_DATASYNC, in the rw_flags slot

	enterGetEvents = 1 << 0

	registerFiles   = 2
	unregisterFiles = 3
	registerEventfd = 4

	featSingleMmap = 1 << 0

	offSQRing = 0
	offCQRing = 0x8000000
	offSQEs   = 0x10000000
)

// RWFDsync is RWF_DSYNC, the rw_flags that make a write durable.
const RWFDsync = unix.RWF_DSYNC

type sqringOffsets struct {
	head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
	userAddr                                                        uint64
}

type cqringOffsets struct {
	head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
	userAddr                                                        uint64
}

type params struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFD uint32
	resv                                                                   [3]uint32
	sqOff                                                                  sqringOffsets
	cqOff                                                                  cqringOffsets
}

type sqe struct {
	opcode      uint8
	flags       uint8
	ioprio      uint16
	fd          int32
	off         uint64
	addr        uint64
	len         uint32
	rwFlags     uint32
	userData    uint64
	bufIndex    uint16
	personality uint16
	spliceFdIn  int32
	addr3       uint64
	pad         uint64
}

type cqe struct {
	userData uint64
	res      int32
	flags    uint32
}

// Size checks: a mismatch fails to compile.
var (
	_ [64 - unsafe.Sizeof(sqe{})]struct{}
	_ [unsafe.Sizeof(sqe{}) - 64]struct{}
	_ [16 - unsafe.Sizeof(cqe{})]struct{}
	_ [120 - unsafe.Sizeof(params{})]struct{}
	_ [unsafe.Sizeof(params{}) - 120]struct{}
)

// Entries is the ring size, and so the most requests a File has in flight.
// It is above every queue depth the data path produces (the NBD server's
// and the secondary's worker pool's); more callers wait for a slot.
const Entries = 128

// maxTransfer bounds one SQE's length (a uint32); the kernel caps a
// transfer near 2 GiB anyway and the rest is resubmitted.
const maxTransfer = 1 << 30

// request is one slot: the buffer, kept alive for the kernel until the
// completion arrives on done. Only its caller touches buf; err is written
// before the send on done.
type request struct {
	buf  []byte
	err  error      // why io_uring_enter refused it (res errSubmit)
	done chan int32 // capacity 1: the reaper never blocks
}

// queued is a request waiting for the submitter, passed by value so that
// the submitter never reads a slot its caller may already reuse.
type queued struct {
	slot    uint32
	opcode  uint8
	rwFlags uint32
	off     uint64
	addr    unsafe.Pointer
	len     uint32
}

// File does positional I/O on one file through an io_uring (see the package
// comment). It is safe for concurrent use.
type File struct {
	name string
	fd   int // the ring's

	sqMem, cqMem, sqeMem []byte
	singleMmap           bool // cqMem is sqMem
	sqHead, sqTail       *uint32
	sqMask               uint32
	sqArray              []uint32
	sqes                 []sqe
	cqHead, cqTail       *uint32
	cqMask               uint32
	cqes                 []cqe

	slots   []request
	free    chan uint32   // indices of idle slots
	closing chan struct{} // closed by Close: no new requests

	mu         sync.Mutex
	pending    []queued // not yet in the SQ
	spare      []queued
	submitting bool // a caller is moving pending to the kernel

	efd        *os.File // the eventfd, read through the netpoller
	reaperDone chan struct{}
	reapThread bool // reapBlocking rather than reap
	stop       bool // reapBlocking: the stop NOP completed (reaper only)
	closeOnce  sync.Once
	closeErr   error
}

// Open sets up a ring for f. The ring gets an open file description of its
// own for f's file (opened through /proc/self/fd), which it alone holds:
// the kernel tears a ring down asynchronously, and a reference it kept to
// f's description would keep f's flock (or a device's O_EXCL claim) alive
// after f is closed. f must stay open until Open returns; it may be closed
// before Close. Open fails (wrapping ENOSYS, EPERM, ...) where the kernel
// has no io_uring or forbids it; callers then fall back to blocking I/O.
func Open(f *os.File) (*File, error) {
	own, err := reopen(f)
	if err != nil {
		return nil, fmt.Errorf("io_uring: %w", err)
	}
	defer own.Close() // registered with the ring, which keeps it open
	var u *File
	var ferr error
	if err := control(own, func(fd int) { u, ferr = setup(f.Name(), fd, false) }); err != nil {
		return nil, fmt.Errorf("io_uring: %w", err)
	}
	return u, ferr
}

// reopen opens a new description of f's file with f's access mode and
// O_DIRECT, but without O_EXCL (a device's exclusive claim stays f's).
func reopen(f *os.File) (*os.File, error) {
	var path string
	var flags int
	var ferr error
	if err := control(f, func(fd int) {
		path = fmt.Sprintf("/proc/self/fd/%d", fd)
		flags, ferr = unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	}); err != nil {
		return nil, err
	}
	if ferr != nil {
		return nil, fmt.Errorf("fcntl(F_GETFL) %s: %w", f.Name(), ferr)
	}
	return os.OpenFile(path, flags&(unix.O_ACCMODE|unix.O_DIRECT|unix.O_DSYNC|unix.O_SYNC)|unix.O_CLOEXEC, 0)
}

// control runs fn with f's fd while f keeps it alive.
func control(f *os.File, fn func(fd int)) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	return rc.Control(func(fd uintptr) { fn(int(fd)) })
}

// setup makes the ring for fileFD. reapThread picks the other reaper (see
// reapBlocking), kept for the benchmark that compares the two.
func setup(name string, fileFD int, reapThread bool) (_ *File, err error) {
	var p params
	r1, _, e := unix.Syscall(unix.SYS_IO_URING_SETUP, Entries, uintptr(unsafe.Pointer(&p)), 0)
	if e != 0 {
		return nil, fmt.Errorf("io_uring_setup: %w", e)
	}
	u := &File{name: name, fd: int(r1), closing: make(chan struct{}), reaperDone: make(chan struct{})}
	defer func() {
		if err != nil {
			u.unmap()
			unix.Close(u.fd)
		}
	}()

	sqSize := int(p.sqOff.array + p.sqEntries*4)
	cqSize := int(p.cqOff.cqes + p.cqEntries*uint32(unsafe.Sizeof(cqe{})))
	u.singleMmap = p.features&featSingleMmap != 0
	if u.singleMmap {
		sqSize = max(sqSize, cqSize)
	}
	prot, flags := unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE
	if u.sqMem, err = unix.Mmap(u.fd, offSQRing, sqSize, prot, flags); err != nil {
		return nil, fmt.Errorf("io_uring: mmap SQ ring: %w", err)
	}
	if u.singleMmap {
		u.cqMem = u.sqMem
	} else if u.cqMem, err = unix.Mmap(u.fd, offCQRing, cqSize, prot, flags); err != nil {
		return nil, fmt.Errorf("io_uring: mmap CQ ring: %w", err)
	}
	if u.sqeMem, err = unix.Mmap(u.fd, offSQEs, int(p.sqEntries)*int(unsafe.Sizeof(sqe{})), prot, flags); err != nil {
		return nil, fmt.Errorf("io_uring: mmap SQEs: %w", err)
	}
	u32 := func(mem []byte, off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&mem[off])) }
	u.sqHead, u.sqTail = u32(u.sqMem, p.sqOff.head), u32(u.sqMem, p.sqOff.tail)
	u.sqMask = *u32(u.sqMem, p.sqOff.ringMask)
	u.sqArray = unsafe.Slice(u32(u.sqMem, p.sqOff.array), p.sqEntries)
	u.sqes = unsafe.Slice((*sqe)(unsafe.Pointer(&u.sqeMem[0])), p.sqEntries)
	u.cqHead, u.cqTail = u32(u.cqMem, p.cqOff.head), u32(u.cqMem, p.cqOff.tail)
	u.cqMask = *u32(u.cqMem, p.cqOff.ringMask)
	u.cqes = unsafe.Slice((*cqe)(unsafe.Pointer(&u.cqMem[p.cqOff.cqes])), p.cqEntries)

	fds := []int32{int32(fileFD)}
	if err := u.register(registerFiles, unsafe.Pointer(&fds[0]), 1); err != nil {
		return nil, fmt.Errorf("io_uring: register file: %w", err)
	}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("io_uring: eventfd: %w", err)
	}
	e32 := int32(efd)
	if err := u.register(registerEventfd, unsafe.Pointer(&e32), 1); err != nil {
		unix.Close(efd)
		return nil, fmt.Errorf("io_uring: register eventfd: %w", err)
	}
	// Non-blocking, so os.NewFile makes it pollable: the reaper's Read
	// parks on the netpoller instead of blocking a thread.
	u.efd = os.NewFile(uintptr(efd), "io_uring-eventfd")

	n := min(Entries, int(p.sqEntries), int(p.cqEntries)/2)
	u.slots = make([]request, n)
	u.free = make(chan uint32, n)
	for i := range u.slots {
		u.slots[i].done = make(chan int32, 1)
		u.free <- uint32(i)
	}
	u.reapThread = reapThread
	if reapThread {
		go u.reapBlocking()
	} else {
		go u.reap()
	}
	return u, nil
}

func (u *File) register(op uintptr, arg unsafe.Pointer, n uintptr) error {
	for {
		_, _, e := unix.Syscall6(unix.SYS_IO_URING_REGISTER, uintptr(u.fd), op, uintptr(arg), n, 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return e
		}
		return nil
	}
}

func (u *File) unmap() {
	if u.sqeMem != nil {
		unix.Munmap(u.sqeMem)
	}
	if u.cqMem != nil && !u.singleMmap {
		unix.Munmap(u.cqMem)
	}
	if u.sqMem != nil {
		unix.Munmap(u.sqMem)
	}
	u.sqeMem, u.cqMem, u.sqMem = nil, nil, nil
}

// ReadAt reads len(p) bytes at off: all of them, or an error.
func (u *File) ReadAt(p []byte, off int64) (int, error) {
	return u.transfer(opRead, "read", p, off, 0)
}

// WriteAt writes p at off with rw_flags rwFlags (0 or RWFDsync): all of p,
// or an error.
func (u *File) WriteAt(p []byte, off int64, rwFlags uint32) (int, error) {
	op := "write"
	if rwFlags != 0 {
		op = "pwritev2"
	}
	return u.transfer(opWrite, op, p, off, rwFlags)
}

func (u *File) transfer(opcode uint8, op string, p []byte, off int64, rwFlags uint32) (int, error) {
	done := 0
	for done < len(p) {
		chunk := p[done:]
		if len(chunk) > maxTransfer {
			chunk = chunk[:maxTransfer]
		}
		res, err := u.do(opcode, chunk, off+int64(done), rwFlags)
		if err != nil {
			return done, &os.PathError{Op: op, Path: u.name, Err: err}
		}
		switch {
		case res == -int32(unix.EINTR) || res == -int32(unix.EAGAIN):
			continue
		case res < 0:
			return done, &os.PathError{Op: op, Path: u.name, Err: syscall.Errno(-res)}
		case res == 0 && opcode == opRead:
			return done, fmt.Errorf("short read (%d of %d bytes at offset %d): %w", done, len(p), off, io.ErrUnexpectedEOF)
		case res == 0:
			return done, &os.PathError{Op: op, Path: u.name, Err: io.ErrShortWrite}
		}
		done += int(res)
	}
	return done, nil
}

// Datasync is fdatasync(2) through the ring.
func (u *File) Datasync() error {
	for {
		res, err := u.do(opFsync, nil, 0, fsyncDatasync)
		if err != nil {
			return &os.PathError{Op: "fdatasync", Path: u.name, Err: err}
		}
		switch {
		case res == -int32(unix.EINTR) || res == -int32(unix.EAGAIN):
			continue
		case res < 0:
			return &os.PathError{Op: "fdatasync", Path: u.name, Err: syscall.Errno(-res)}
		}
		return nil
	}
}

// Nop submits a no-op and waits for its completion: the ring's round trip.
func (u *File) Nop() error {
	_, err := u.do(opNop, nil, 0, 0)
	return err
}

// do submits one request and waits for its result (the CQE's res).
func (u *File) do(opcode uint8, p []byte, off int64, rwFlags uint32) (int32, error) {
	var slot uint32
	select {
	case slot = <-u.free:
	case <-u.closing:
		return 0, os.ErrClosed
	}
	select {
	case <-u.closing:
		u.free <- slot
		return 0, os.ErrClosed
	default:
	}
	r := &u.slots[slot]
	r.buf = p
	q := queued{slot: slot, opcode: opcode, rwFlags: rwFlags, off: uint64(off)}
	if len(p) > 0 {
		q.addr, q.len = unsafe.Pointer(unsafe.SliceData(p)), uint32(len(p))
	}

	u.mu.Lock()
	u.pending = append(u.pending, q)
	if !u.submitting {
		u.submitting = true
		u.submitLocked()
		u.submitting = false
	}
	u.mu.Unlock()

	res := <-r.done
	err := r.err
	r.buf, r.err = nil, nil
	u.free <- slot
	if res == errSubmit {
		return 0, fmt.Errorf("io_uring_enter: %w", err)
	}
	return res, nil
}

// errSubmit marks, on a slot's done channel, a request io_uring_enter
// refused; the error itself is in the slot's err.
const errSubmit = int32(-1 << 31)

// submitLocked moves every pending request into the SQ and into the kernel,
// repeating while more were queued meanwhile, so that concurrent callers
// share io_uring_enter calls. u.mu is held on entry and exit but released
// around the syscall; u.submitting keeps the SQ to this caller.
func (u *File) submitLocked() {
	for len(u.pending) > 0 {
		batch := u.pending
		u.pending, u.spare = u.spare[:0], nil
		u.mu.Unlock()
		u.submit(batch)
		u.mu.Lock()
		u.spare = batch[:0]
	}
}

func (u *File) submit(batch []queued) {
	tail := *u.sqTail // only the submitter writes it
	for _, q := range batch {
		i := tail & u.sqMask
		u.sqes[i] = sqe{opcode: q.opcode, flags: sqeFixedFile, fd: 0, off: q.off, rwFlags: q.rwFlags,
			addr: uint64(uintptr(q.addr)), len: q.len, userData: uint64(q.slot)}
		u.sqArray[i] = i
		tail++
	}
	atomic.StoreUint32(u.sqTail, tail)
	for {
		head := atomic.LoadUint32(u.sqHead)
		if head == tail {
			return
		}
		_, _, e := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(u.fd), uintptr(tail-head), 0, 0, 0, 0)
		switch e {
		case 0, unix.EINTR:
			continue
		case unix.EAGAIN, unix.EBUSY:
			// Out of kernel memory or completions to reap: the reaper
			// makes room.
			time.Sleep(50 * time.Microsecond)
			continue
		}
		// The kernel refused the rest: take them back and fail them.
		head = atomic.LoadUint32(u.sqHead)
		for t := head; t != tail; t++ {
			slot := uint32(u.sqes[t&u.sqMask].userData)
			if slot == stopSlot {
				continue // Close's wake-up, refused: cannot happen with no other request
			}
			u.slots[slot].err = e
			u.slots[slot].done <- errSubmit
		}
		atomic.StoreUint32(u.sqTail, head)
		return
	}
}

// reap hands each completion to its caller. It waits for the eventfd the
// kernel signals on every completion, through the netpoller.
func (u *File) reap() {
	defer close(u.reaperDone)
	var buf [8]byte
	for {
		u.drain()
		if _, err := u.efd.Read(buf[:]); err != nil {
			if !errors.Is(err, os.ErrClosed) {
				// Cannot happen with an eventfd; poll rather than lose
				// completions.
				time.Sleep(time.Millisecond)
				continue
			}
			u.drain()
			return
		}
	}
}

// reapBlocking is the alternative reaper: it waits in io_uring_enter
// (GETEVENTS) on a thread of its own instead of on the eventfd through the
// netpoller. BenchmarkWrite4K compares the two; reap won (see doc.go).
func (u *File) reapBlocking() {
	defer close(u.reaperDone)
	for {
		u.drain()
		if u.stop {
			return
		}
		_, _, e := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(u.fd), 0, 1, enterGetEvents, 0, 0)
		if e != 0 && e != unix.EINTR && e != unix.EAGAIN && e != unix.EBUSY {
			time.Sleep(time.Millisecond) // cannot happen; poll rather than lose completions
		}
	}
}

// stopSlot marks the NOP Close submits to wake reapBlocking.
const stopSlot = ^uint32(0)

func (u *File) drain() {
	head := *u.cqHead // only the reaper writes it
	tail := atomic.LoadUint32(u.cqTail)
	for ; head != tail; head++ {
		c := u.cqes[head&u.cqMask]
		if c.userData == uint64(stopSlot) {
			u.stop = true
			continue
		}
		u.slots[c.userData].done <- c.res
	}
	atomic.StoreUint32(u.cqHead, head)
}

// Close waits for the requests in flight, fails later ones with
// os.ErrClosed and releases the ring. It does not close the file.
func (u *File) Close() error {
	u.closeOnce.Do(func() {
		close(u.closing)
		for range u.slots {
			<-u.free // every slot back: nothing in flight
		}
		if u.reapThread {
			// No caller is submitting: all slots are back.
			u.submit([]queued{{slot: stopSlot, opcode: opNop}})
		}
		if err := u.efd.Close(); err != nil {
			u.closeErr = fmt.Errorf("io_uring: close eventfd: %w", err)
		}
		<-u.reaperDone
		// Unregister the file before closing the ring: the ring's own
		// teardown is asynchronous, and until it drops its reference the
		// file stays open (holding its flock, say) after our caller closed
		// it.
		if err := u.register(unregisterFiles, nil, 0); err != nil {
			u.closeErr = errors.Join(u.closeErr, fmt.Errorf("io_uring: unregister file: %w", err))
		}
		u.unmap()
		if err := unix.Close(u.fd); err != nil && u.closeErr == nil {
			u.closeErr = fmt.Errorf("io_uring: close: %w", err)
		}
	})
	return u.closeErr
}
