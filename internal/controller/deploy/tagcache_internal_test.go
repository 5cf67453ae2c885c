package deploy

import (
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

// TestTagCacheOrdering: a DescribeTags answer sent before the deployer wrote or dropped a
// resource's tags (a concurrent reconcile's scan) does not overwrite what the deployer wrote; one
// sent after does; entries expire after the TTL.
func TestTagCacheOrdering(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Now())
	c := newTagCache(clk)
	want := func(arn, value string, cached bool) {
		t.Helper()
		tags, ok := c.get(arn)
		if ok != cached || tags["k"] != value {
			t.Fatalf("%s: got %v (cached %v), want k=%q (cached %v)", arn, tags, ok, value, cached)
		}
	}

	before := c.writeCount()
	c.put("lb", map[string]string{"k": "written"})
	c.fill("lb", map[string]string{"k": "old"}, before)
	want("lb", "written", true)
	c.fill("lb", map[string]string{"k": "read after"}, c.writeCount())
	want("lb", "read after", true)

	before = c.writeCount()
	c.drop("lb")
	c.fill("lb", map[string]string{"k": "old"}, before)
	want("lb", "", false)

	// A later read is not overwritten by an earlier one that arrives after it.
	early := c.writeCount()
	c.put("tg", map[string]string{"k": "written"})
	c.fill("tg", map[string]string{"k": "late read"}, c.writeCount())
	c.fill("tg", map[string]string{"k": "early read"}, early)
	want("tg", "late read", true)

	clk.Step(tagCacheTTL - time.Nanosecond)
	want("tg", "late read", true)
	clk.Step(time.Nanosecond)
	want("tg", "", false)
	c.fill("tg", map[string]string{"k": "fresh"}, early) // expired entries do not block a fill
	want("tg", "fresh", true)
}
