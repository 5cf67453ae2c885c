package deploy

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/aws/smithy-go"

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

// TestDescribeByARNSkipsDeleted: a resource deleted between GetResources and its Describe fails
// its batch with the not-found code; the others of that batch are still found, one by one, and
// another error fails the call.
func TestDescribeByARNSkipsDeleted(t *testing.T) {
	var arns []string
	for i := range 45 {
		arns = append(arns, fmt.Sprintf("arn-%02d", i))
	}
	gone := map[string]bool{"arn-03": true, "arn-41": true}
	calls := 0
	describe := func(batch []string) ([]string, error) {
		calls++
		if len(batch) > describeBatch {
			t.Fatalf("a batch of %d ARNs", len(batch))
		}
		for _, arn := range batch {
			if gone[arn] {
				return nil, &smithy.GenericAPIError{Code: "LoadBalancerNotFound", Message: arn}
			}
		}
		return batch, nil
	}
	got, err := describeByARN(arns, describe, "LoadBalancerNotFound")
	if err != nil {
		t.Fatal(err)
	}
	want := slices.DeleteFunc(slices.Clone(arns), func(a string) bool { return gone[a] })
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	// 3 batches; the first and last failed and were described again one by one (20 + 5).
	if calls != 3+20+5 {
		t.Errorf("%d Describe calls, want 28", calls)
	}
	if _, err := describeByARN(arns, describe, "TargetGroupNotFound"); err == nil {
		t.Error("another resource's not-found error was taken for a deleted resource")
	}
}
