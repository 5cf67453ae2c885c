// Package zonelease elects, per availability zone, the one moat lb node that serves the zone's
// load balancer addresses, with an etcd lease and election, and fences it by its own lease: a node
// holds a zone only while it knows its lease is alive, and lets go before etcd can expire the lease
// and hand the zone to another node.
package zonelease

import "time"

// Margin is how long before the earliest moment etcd may expire a node's lease the node stops
// serving: time for the data plane to close the zone's listeners after the fence fires, with room
// for a busy scheduler. A quarter of the TTL.
func Margin(ttl time.Duration) time.Duration { return ttl / 4 }

// renewEvery is how often a node renews its lease: several tries fit before the fence.
func renewEvery(ttl time.Duration) time.Duration { return ttl / 8 }

// fence is what a node knows of its own lease's life. etcd expires a lease no sooner than TTL
// after it last granted or renewed it, and it did that after the node sent the request: so from
// the node's own clock, the lease is certainly alive until sentAt + TTL of its last successful
// grant or keep-alive. The node serves until that moment less the margin.
type fence struct {
	margin time.Duration
	until  time.Time // zero: no lease
}

// renewed records a grant or keep-alive sent at sentAt that etcd answered with the lease's TTL.
func (f *fence) renewed(sentAt time.Time, ttl time.Duration) {
	if u := sentAt.Add(ttl - f.margin); u.After(f.until) {
		f.until = u
	}
}

// alive says whether the lease is certainly alive at now, fence margin included.
func (f *fence) alive(now time.Time) bool { return now.Before(f.until) }

// drop forgets the lease: the node has lost it or given it up.
func (f *fence) drop() { f.until = time.Time{} }
