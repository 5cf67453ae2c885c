//go:build linux && !moat_portable

package dataplane

import (
	"runtime"
	"testing"

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
