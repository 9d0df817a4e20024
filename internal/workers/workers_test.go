package workers

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestRunsEveryTaskAndReusesWorkers(t *testing.T) {
	p := New()
	defer p.Close()
	var ran atomic.Int64
	for round := 0; round < 50; round++ {
		var wg sync.WaitGroup
		for i := 0; i < 8; i++ {
			wg.Add(1)
			p.Go(func() {
				defer wg.Done()
				ran.Add(1)
			})
		}
		wg.Wait()
	}
	if got := ran.Load(); got != 400 {
		t.Fatalf("ran %d tasks, want 400", got)
	}
}

func TestTasksRunConcurrently(t *testing.T) {
	p := New()
	defer p.Close()
	// Every task waits for all of them to start: this only finishes if the
	// pool never makes a task wait for another.
	const n = 16
	var started sync.WaitGroup
	started.Add(n)
	var done sync.WaitGroup
	done.Add(n)
	for i := 0; i < n; i++ {
		p.Go(func() {
			started.Done()
			started.Wait()
			done.Done()
		})
	}
	done.Wait()
}

func TestCloseEndsIdleWorkers(t *testing.T) {
	before := runtime.NumGoroutine()
	p := New()
	var wg sync.WaitGroup
	for i := 0; i < 10; i++ {
		wg.Add(1)
		p.Go(wg.Done)
	}
	wg.Wait()
	p.Close()
	p.Close() // idempotent
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines after Close, %d before the pool", runtime.NumGoroutine(), before)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A closed pool still runs what it is given.
	ch := make(chan struct{})
	p.Go(func() { close(ch) })
	<-ch
}
