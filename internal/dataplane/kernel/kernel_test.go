package kernel

import (
	"testing"
	"time"
)

// TestCountsEvery: counters are read every poll while reading them is cheap, spaced out to keep
// the reads near 1% of the time when they take long, and never left unread past maxCountsEvery.
func TestCountsEvery(t *testing.T) {
	for _, c := range []struct{ took, poll, want time.Duration }{
		{time.Millisecond, time.Second, time.Second},
		{10 * time.Millisecond, time.Second, time.Second},
		{20 * time.Millisecond, time.Second, 2 * time.Second},
		{40 * time.Millisecond, 20 * time.Millisecond, 4 * time.Second},
		{time.Second, time.Second, maxCountsEvery},
	} {
		if got := countsEvery(c.took, c.poll); got != c.want {
			t.Errorf("countsEvery(%v, %v) = %v, want %v", c.took, c.poll, got, c.want)
		}
	}
}
