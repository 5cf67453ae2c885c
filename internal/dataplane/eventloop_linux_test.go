//go:build linux && !moat_portable

package dataplane

import (
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestLoopsHoldProcessorsOfTheirOwn: an engine runs a loop per processor the program had, and
// the program gets a processor more per loop while the loop runs (it holds its own while it
// waits in epoll_wait): a second engine runs as many loops as the first, not one per processor
// the first added, and closed engines give theirs back.
func TestLoopsHoldProcessorsOfTheirOwn(t *testing.T) {
	before := runtime.GOMAXPROCS(0)
	start := func() *Userspace {
		t.Helper()
		e, err := NewUserspace(Options{Registerer: prometheus.NewRegistry()})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	first := start()
	loops := len(first.loops.loops)
	if got := runtime.GOMAXPROCS(0); got != before+loops {
		t.Errorf("GOMAXPROCS %d with an engine of %d loops, want %d", got, loops, before+loops)
	}
	second := start()
	if n := len(second.loops.loops); n != loops {
		t.Errorf("the second engine runs %d loops, the first %d", n, loops)
	}
	if got := runtime.GOMAXPROCS(0); got != before+2*loops {
		t.Errorf("GOMAXPROCS %d with two engines, want %d", got, before+2*loops)
	}
	first.Close()
	second.Close()
	if got := runtime.GOMAXPROCS(0); got != before {
		t.Errorf("GOMAXPROCS %d after the engines closed, want %d", got, before)
	}
}

// TestLoopsStopForTheCollector: a loop waiting in epoll_wait holds its processor, so a
// collection stops the world only once the runtime's preemption signal ends the wait. With an
// engine idle (its loops in their longest wait, maxWait), collections end long before that.
func TestLoopsStopForTheCollector(t *testing.T) {
	e, err := NewUserspace(Options{Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	for range 5 {
		start := time.Now()
		runtime.GC()
		if took := time.Since(start); took >= maxWait {
			t.Fatalf("a collection took %v with the loops waiting (at most %v each)", took, maxWait)
		}
	}
}
