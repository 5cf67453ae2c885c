package deploy

import (
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/util/cache"
	"k8s.io/utils/clock"
)

// tagCacheTTL is how long the tags of an ELBv2 resource are trusted, as the AWS controller's
// tagging manager caches them (pkg/deploy/elbv2/tagging_manager.go).
const tagCacheTTL = 20 * time.Minute

// tagCache holds the tags of ELBv2 resources (load balancers, target groups, listeners) by ARN,
// so that the full scans every reconcile makes DescribeTags only the resources it has not seen
// for tagCacheTTL: without it each reconcile DescribeTags every resource of the region, and the
// controller's work grows as the square of the number of Services.
//
// What the deployer writes itself (a create with tags, AddTags/RemoveTags, a delete) updates or
// drops the entry at once, so it never acts on stale tags of its own making. Tags changed by
// anyone else are seen when the entry expires, as with the AWS controller.
//
// The cached maps are shared: callers must not modify them.
type tagCache struct {
	entries *cache.Expiring // ARN → tagEntry

	// mu makes "store a DescribeTags answer unless the deployer wrote the resource's tags since
	// the call was sent" atomic; writes counts the deployer's writes, to tell.
	mu     sync.Mutex
	writes uint64
}

// tagEntry is a resource's tags, or (gone) the marker of a resource the deployer deleted or
// whose tags it failed to write: a miss that an older DescribeTags answer may not overwrite.
type tagEntry struct {
	tags map[string]string
	gone bool
	// asOf is the count of the deployer's writes the entry is known to include: the write that
	// stored it, or the count when the DescribeTags call that read it was sent.
	asOf uint64
}

func newTagCache(clk clock.Clock) *tagCache {
	return &tagCache{entries: cache.NewExpiringWithClock(clk)}
}

// get returns the fresh tags of arn.
func (c *tagCache) get(arn string) (map[string]string, bool) {
	v, ok := c.entries.Get(arn)
	if !ok {
		return nil, false
	}
	e := v.(tagEntry)
	return e.tags, !e.gone
}

// writeCount is taken before a DescribeTags call and given to fill with its answer.
func (c *tagCache) writeCount() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writes
}

// fill stores tags read by a DescribeTags call sent when writeCount was since, unless the entry
// is newer: the deployer wrote arn's tags after since, or a later call read them (concurrent
// reconciles scan the same resources, and an answer may predate a write).
func (c *tagCache) fill(arn string, tags map[string]string, since uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if v, ok := c.entries.Get(arn); ok && v.(tagEntry).asOf > since {
		return
	}
	c.entries.Set(arn, tagEntry{tags: tags, asOf: since}, tagCacheTTL)
}

// put records tags the deployer has just written on arn.
func (c *tagCache) put(arn string, tags map[string]string) {
	c.store(arn, tagEntry{tags: tags})
}

// drop forgets arn: deleted, or its tags are unknown after a failed write.
func (c *tagCache) drop(arn string) {
	c.store(arn, tagEntry{gone: true})
}

func (c *tagCache) store(arn string, e tagEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes++
	e.asOf = c.writes
	c.entries.Set(arn, e, tagCacheTTL)
}
