package workers

import "sync"

// Pool hands each task to an idle worker, or starts a worker when none is
// idle, so the number of workers follows the peak concurrency of the
// callers (who bound it). Workers live until Close.
type Pool struct {
	work     chan func()
	quit     chan struct{}
	stopOnce sync.Once
}

// New returns a pool with no workers yet.
func New() *Pool {
	return &Pool{work: make(chan func()), quit: make(chan struct{})}
}

// Go runs fn on a worker. After Close it still runs fn, on a goroutine of
// its own.
func (p *Pool) Go(fn func()) {
	select {
	case p.work <- fn:
	default:
		go p.worker(fn)
	}
}

func (p *Pool) worker(fn func()) {
	for {
		fn()
		select {
		case fn = <-p.work:
		case <-p.quit:
			return
		}
	}
}

// Close lets idle workers exit; a worker busy with a task exits after it.
func (p *Pool) Close() {
	p.stopOnce.Do(func() { close(p.quit) })
}
