package cloud

import (
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/google/btree"

	"github.com/moatlb/moat/internal/store"
	"github.com/moatlb/moat/internal/testcheck"
)

// Indexes. A Describe call names a load balancer, its listeners or a group by tag; answering it by
// scanning a whole bucket costs time in proportion to the state. So the cloud keeps, per bucket,
// an index of the records (by ARN, name, owner, tag) and the bucket's store.Version it shows. A
// commit that writes the bucket gives it a new version, and the next reader brings the index up
// to it by reading again only the records written since (store.ChangedSince), or, where the store
// cannot tell which, the whole bucket. An index is derived from the store alone, so it is as right
// as the transaction that reads it, through commits, rollbacks and restarts. Its records are
// shared (see store.ListShared): read them, never write through them.
//
// The indexes are persistent maps (sortedMap): a new version is a clone of the last one, O(1),
// with the changed records' entries removed and added, so a commit costs the index time in
// proportion to what it wrote, not to the bucket, while readers go on with the version they hold.

// sortedMap is a persistent map from strings in key order. Clone it before a change: the clone
// copies the tree's nodes as it changes them, so the original stays as it was for its readers.
type sortedMap[V any] struct{ t *btree.BTreeG[entry[V]] }

type entry[V any] struct {
	key   string
	value V
}

func newSortedMap[V any]() sortedMap[V] {
	return sortedMap[V]{btree.NewG(16, func(a, b entry[V]) bool { return a.key < b.key })}
}

// clone must not run concurrently with another clone of the same map (btree's rule): the
// indexCache clones under its lock.
func (m sortedMap[V]) clone() sortedMap[V] { return sortedMap[V]{m.t.Clone()} }

func (m sortedMap[V]) get(k string) (V, bool) {
	e, ok := m.t.Get(entry[V]{key: k})
	return e.value, ok
}

func (m sortedMap[V]) set(k string, v V)   { m.t.ReplaceOrInsert(entry[V]{k, v}) }
func (m sortedMap[V]) delete(k string)     { m.t.Delete(entry[V]{key: k}) }
func (m sortedMap[V]) len() int            { return m.t.Len() }
func (m sortedMap[V]) has(k string) bool   { return m.t.Has(entry[V]{key: k}) }
func (m sortedMap[V]) entries() []entry[V] { return m.withPrefix("") }

// values are the map's values in key order (nil if none, as a read of an empty bucket gives).
func (m sortedMap[V]) values() []V {
	if m.len() == 0 {
		return nil
	}
	out := make([]V, 0, m.len())
	m.t.Ascend(func(e entry[V]) bool { out = append(out, e.value); return true })
	return out
}

// withPrefix are the entries whose keys start with prefix, in key order.
func (m sortedMap[V]) withPrefix(prefix string) []entry[V] {
	var out []entry[V]
	m.eachWithPrefix(prefix, func(e entry[V]) bool { out = append(out, e); return true })
	return out
}

// eachWithPrefix calls fn with the entries whose keys start with prefix, in key order, until fn
// returns false.
func (m sortedMap[V]) eachWithPrefix(prefix string, fn func(entry[V]) bool) {
	m.t.AscendGreaterOrEqual(entry[V]{key: prefix}, func(e entry[V]) bool {
		return strings.HasPrefix(e.key, prefix) && fn(e)
	})
}

// deleteIf deletes k only while it still maps to v: a record leaving a unique key (a name, an
// address) in the same batch as another record taking it must not take it from the other.
func deleteIf[V comparable](m sortedMap[V], k string, v V) {
	if got, ok := m.get(k); ok && got == v {
		m.delete(k)
	}
}

// joinKey joins the parts of a composite key. No part holds a NUL (names, tags, IDs and ARNs
// cannot), so keys sort by their first part, then the next, and a prefix scan of the first parts
// finds the rest.
func joinKey(parts ...string) string { return strings.Join(parts, "\x00") + "\x00" }

// lastPart is the last part of a joined key.
func lastPart(k string) string {
	k = strings.TrimSuffix(k, "\x00")
	return k[strings.LastIndexByte(k, 0)+1:]
}

// recordIndex is what an indexCache keeps of a bucket of records of type T.
type recordIndex[T any, I any] interface {
	clone() I // a copy to change; the original stays as it was
	record(key string) (T, bool)
	add(T)     // a record's entries
	remove(T)  // the entries add made for the record
	dump() any // the contents, comparable with reflect.DeepEqual (tests)
}

// indexCache keeps the last index built for a bucket and the version it shows.
type indexCache[T any, I recordIndex[T, I]] struct {
	bucket string
	empty  func() I

	mu      sync.Mutex
	version uint64
	built   bool
	index   I
	// wholeReads counts the indexes built from a read of the whole bucket.
	wholeReads atomic.Int64
}

// get returns the index of the bucket as tx sees it. With the kept index at the version tx
// starts from, or behind it where the store can tell which records changed since: the kept
// one with those records, and tx's own changes, read again — kept in turn if tx changed nothing
// (an update's changes may never be committed). Otherwise, one built from a read of the whole
// bucket, kept under the same rule.
func (ic *indexCache[T, I]) get(tx store.Tx) (I, error) {
	v, changed, versioned := store.Version(tx, ic.bucket)
	ic.mu.Lock()
	kept, keptVersion, have := ic.index, ic.version, versioned && ic.built
	ic.mu.Unlock()
	if have && keptVersion == v && len(changed) == 0 {
		ic.checkKept(kept, tx)
		return kept, nil
	}
	if have && keptVersion <= v {
		since, ok := []string(nil), true
		if keptVersion < v {
			since, ok = store.ChangedSince(tx, ic.bucket, keptVersion)
		}
		if ok {
			ic.mu.Lock()
			idx := kept.clone()
			ic.mu.Unlock()
			if err := ic.apply(idx, tx, slices.Concat(since, changed)); err != nil {
				return idx, err
			}
			ic.keep(idx, v, changed)
			ic.checkKept(idx, tx)
			return idx, nil
		}
	}
	ic.wholeReads.Add(1)
	all, err := store.ListShared[T](tx, ic.bucket)
	if err != nil {
		var zero I
		return zero, err
	}
	idx := ic.empty()
	for _, r := range all {
		idx.add(r)
	}
	if versioned {
		ic.keep(idx, v, changed)
	}
	return idx, nil
}

// keep makes idx, showing version v with tx's changes, the kept index: if there are none, and
// no reader has kept a later version.
func (ic *indexCache[T, I]) keep(idx I, v uint64, changed []string) {
	if len(changed) > 0 {
		return
	}
	ic.mu.Lock()
	if !ic.built || v > ic.version {
		ic.version, ic.index, ic.built = v, idx, true
	}
	ic.mu.Unlock()
}

// apply brings idx's records of keys to what tx sees: replaced, added or gone.
func (ic *indexCache[T, I]) apply(idx I, tx store.Tx, keys []string) error {
	slices.Sort(keys)
	for _, k := range slices.Compact(keys) {
		if old, ok := idx.record(k); ok {
			idx.remove(old)
		}
		r, err := store.LoadShared[T](tx, ic.bucket, k)
		if err == store.ErrNotFound {
			continue
		} else if err != nil {
			return err
		}
		idx.add(r)
	}
	return nil
}

// checkKept, in tests, builds the index again from a read of the whole bucket and compares: an
// index that differs means a version that did not change with the records, a change the log
// missed, a wrong remove, or a reader that wrote through a shared record (which the read's
// shared values also catch).
func (ic *indexCache[T, I]) checkKept(idx I, tx store.Tx) {
	if !testcheck.Enabled() {
		return
	}
	all, err := store.ListShared[T](tx, ic.bucket)
	if err != nil {
		return
	}
	fresh := ic.empty()
	for _, r := range all {
		fresh.add(r)
	}
	if !reflect.DeepEqual(fresh.dump(), idx.dump()) {
		panic(fmt.Sprintf("cloud: the index of %s differs from its records", ic.bucket))
	}
}

// indexes are a Cloud's index caches, one per indexed bucket.
type indexes struct {
	lbs       *indexCache[LoadBalancer, *lbIndex]
	listeners *indexCache[Listener, *listenerIndex]
	tgs       *indexCache[TargetGroup, *tgIndex]
	groups    *indexCache[SecurityGroup, *groupIndex]
}

func newIndexes() indexes {
	return indexes{
		lbs:       &indexCache[LoadBalancer, *lbIndex]{bucket: bucketLoadBalancers, empty: newLBIndex},
		listeners: &indexCache[Listener, *listenerIndex]{bucket: bucketListeners, empty: newListenerIndex},
		tgs:       &indexCache[TargetGroup, *tgIndex]{bucket: bucketTargetGroups, empty: newTGIndex},
		groups:    &indexCache[SecurityGroup, *groupIndex]{bucket: bucketSecurityGroups, empty: newGroupIndex},
	}
}

// lbIndex is the load balancers bucket.
type lbIndex struct {
	byARN  sortedMap[LoadBalancer]
	byName sortedMap[string] // lower-case (names are unique regardless of case) → ARN
	byDNS  sortedMap[string] // lower-case DNS name → ARN
	// addrs are the addresses the load balancers hold, with the ARN of each holder.
	addrs sortedMap[heldAddr]
	// inGroup are the load balancers of each security group: group ID, ARN → ARN.
	inGroup sortedMap[string]
	tags    tagIndex
}

type heldAddr struct {
	addr   netip.Addr
	holder string
}

func (c *Cloud) lbIndex(tx store.Tx) (*lbIndex, error) { return c.idx.lbs.get(tx) }

func newLBIndex() *lbIndex {
	return &lbIndex{byARN: newSortedMap[LoadBalancer](), byName: newSortedMap[string](), byDNS: newSortedMap[string](),
		addrs: newSortedMap[heldAddr](), inGroup: newSortedMap[string](), tags: newTagIndex()}
}

func (x *lbIndex) clone() *lbIndex {
	return &lbIndex{byARN: x.byARN.clone(), byName: x.byName.clone(), byDNS: x.byDNS.clone(), addrs: x.addrs.clone(),
		inGroup: x.inGroup.clone(), tags: x.tags.clone()}
}

func (x *lbIndex) record(arn string) (LoadBalancer, bool) { return x.byARN.get(arn) }

func (x *lbIndex) add(lb LoadBalancer) {
	x.byARN.set(lb.ARN, lb)
	x.byName.set(strings.ToLower(lb.Name), lb.ARN)
	x.byDNS.set(strings.ToLower(lb.DNSName), lb.ARN)
	for _, a := range lbAddrs(lb) {
		x.addrs.set(a.String(), heldAddr{a, lb.ARN})
	}
	for _, g := range lb.SecurityGroups {
		x.inGroup.set(joinKey(g, lb.ARN), lb.ARN)
	}
	x.tags.add(lb.ARN, lb.Tags)
}

func (x *lbIndex) remove(lb LoadBalancer) {
	x.byARN.delete(lb.ARN)
	deleteIf(x.byName, strings.ToLower(lb.Name), lb.ARN)
	deleteIf(x.byDNS, strings.ToLower(lb.DNSName), lb.ARN)
	for _, a := range lbAddrs(lb) {
		deleteIf(x.addrs, a.String(), heldAddr{a, lb.ARN})
	}
	for _, g := range lb.SecurityGroups {
		x.inGroup.delete(joinKey(g, lb.ARN))
	}
	x.tags.remove(lb.ARN, lb.Tags)
}

func (x *lbIndex) dump() any {
	return []any{x.byARN.entries(), x.byName.entries(), x.byDNS.entries(), x.addrs.entries(), x.inGroup.entries(), x.tags.entries()}
}

func lbAddrs(lb LoadBalancer) []netip.Addr {
	var out []netip.Addr
	for _, z := range lb.Zones {
		for _, s := range []string{z.Address, z.IPv6Address} {
			if a, err := netip.ParseAddr(s); err == nil {
				out = append(out, a)
			}
		}
	}
	return out
}

// all are the load balancers in ARN order.
func (x *lbIndex) all() []LoadBalancer { return x.byARN.values() }

func (x *lbIndex) count() int { return x.byARN.len() }

// named returns the load balancer whose ARN or name (any case) is want.
func (x *lbIndex) named(want string) (LoadBalancer, bool) {
	if lb, ok := x.byARN.get(want); ok {
		return lb, true
	}
	return x.withName(want)
}

// withName returns the load balancer named name (any case).
func (x *lbIndex) withName(name string) (LoadBalancer, bool) {
	arn, ok := x.byName.get(strings.ToLower(name))
	if !ok {
		return LoadBalancer{}, false
	}
	return x.byARN.get(arn)
}

// groupInUse tells whether a load balancer has the security group.
func (x *lbIndex) groupInUse(id string) bool {
	inUse := false
	x.inGroup.eachWithPrefix(joinKey(id), func(entry[string]) bool { inUse = true; return false })
	return inUse
}

// withDNSName returns the load balancer whose DNS name (lower-case) is name.
func (x *lbIndex) withDNSName(name string) (LoadBalancer, bool) {
	arn, ok := x.byDNS.get(name)
	if !ok {
		return LoadBalancer{}, false
	}
	return x.byARN.get(arn)
}

// listenerIndex is the listeners bucket.
type listenerIndex struct {
	byARN sortedMap[Listener]
	// ofLB are the listeners of each load balancer: load balancer ARN, listener ARN → ARN.
	ofLB sortedMap[string]
	// users are the load balancers whose listeners forward to each target group: target group
	// ARN, load balancer ARN, listener ARN → load balancer ARN.
	users sortedMap[string]
	tags  tagIndex
}

func (c *Cloud) listenerIndex(tx store.Tx) (*listenerIndex, error) { return c.idx.listeners.get(tx) }

func newListenerIndex() *listenerIndex {
	return &listenerIndex{byARN: newSortedMap[Listener](), ofLB: newSortedMap[string](), users: newSortedMap[string](), tags: newTagIndex()}
}

func (x *listenerIndex) clone() *listenerIndex {
	return &listenerIndex{byARN: x.byARN.clone(), ofLB: x.ofLB.clone(), users: x.users.clone(), tags: x.tags.clone()}
}

func (x *listenerIndex) record(arn string) (Listener, bool) { return x.byARN.get(arn) }

func (x *listenerIndex) add(l Listener) {
	x.byARN.set(l.ARN, l)
	x.ofLB.set(joinKey(l.LoadBalancerARN, l.ARN), l.ARN)
	x.users.set(joinKey(l.TargetGroupARN, l.LoadBalancerARN, l.ARN), l.LoadBalancerARN)
	x.tags.add(l.ARN, l.Tags)
}

func (x *listenerIndex) remove(l Listener) {
	x.byARN.delete(l.ARN)
	x.ofLB.delete(joinKey(l.LoadBalancerARN, l.ARN))
	x.users.delete(joinKey(l.TargetGroupARN, l.LoadBalancerARN, l.ARN))
	x.tags.remove(l.ARN, l.Tags)
}

func (x *listenerIndex) dump() any {
	return []any{x.byARN.entries(), x.ofLB.entries(), x.users.entries(), x.tags.entries()}
}

// all are the listeners in ARN order.
func (x *listenerIndex) all() []Listener { return x.byARN.values() }

// of returns the listeners of a load balancer, in ARN order.
func (x *listenerIndex) of(lbARN string) []Listener {
	of := x.ofLB.withPrefix(joinKey(lbARN))
	out := make([]Listener, 0, len(of))
	for _, e := range of {
		if l, ok := x.byARN.get(e.value); ok {
			out = append(out, l)
		}
	}
	return out
}

// usersOf are the load balancers whose listeners forward to a target group, in ARN order.
func (x *listenerIndex) usersOf(tgARN string) []string {
	var out []string
	for _, e := range x.users.withPrefix(joinKey(tgARN)) {
		if len(out) == 0 || out[len(out)-1] != e.value {
			out = append(out, e.value)
		}
	}
	return out
}

// tgIndex is the target groups bucket.
type tgIndex struct {
	byARN  sortedMap[TargetGroup]
	byName sortedMap[string] // lower-case → ARN
	tags   tagIndex
}

func (c *Cloud) tgIndex(tx store.Tx) (*tgIndex, error) { return c.idx.tgs.get(tx) }

func newTGIndex() *tgIndex {
	return &tgIndex{byARN: newSortedMap[TargetGroup](), byName: newSortedMap[string](), tags: newTagIndex()}
}

func (x *tgIndex) clone() *tgIndex {
	return &tgIndex{byARN: x.byARN.clone(), byName: x.byName.clone(), tags: x.tags.clone()}
}

func (x *tgIndex) record(arn string) (TargetGroup, bool) { return x.byARN.get(arn) }

func (x *tgIndex) add(tg TargetGroup) {
	x.byARN.set(tg.ARN, tg)
	x.byName.set(strings.ToLower(tg.Name), tg.ARN)
	x.tags.add(tg.ARN, tg.Tags)
}

func (x *tgIndex) remove(tg TargetGroup) {
	x.byARN.delete(tg.ARN)
	deleteIf(x.byName, strings.ToLower(tg.Name), tg.ARN)
	x.tags.remove(tg.ARN, tg.Tags)
}

func (x *tgIndex) dump() any { return []any{x.byARN.entries(), x.byName.entries(), x.tags.entries()} }

// all are the target groups in ARN order.
func (x *tgIndex) all() []TargetGroup { return x.byARN.values() }

func (x *tgIndex) count() int { return x.byARN.len() }

// named returns the target group whose ARN or name (any case) is want.
func (x *tgIndex) named(want string) (TargetGroup, bool) {
	if tg, ok := x.byARN.get(want); ok {
		return tg, true
	}
	return x.withName(want)
}

// withName returns the target group named name (any case).
func (x *tgIndex) withName(name string) (TargetGroup, bool) {
	arn, ok := x.byName.get(strings.ToLower(name))
	if !ok {
		return TargetGroup{}, false
	}
	return x.byARN.get(arn)
}

// groupIndex is the security groups bucket.
type groupIndex struct {
	byID sortedMap[SecurityGroup]
	// byName is keyed by VPC and lower-case name (names are unique per VPC regardless of case) → ID.
	byName sortedMap[string]
	inVPC  sortedMap[int] // groups per VPC
	tags   tagIndex
	// referrers are, per group, the other groups with a rule that names it: group ID, referrer
	// ID → referrer ID.
	referrers sortedMap[string]
	// ruleOwner is the group of each rule ID.
	ruleOwner sortedMap[string]
}

func (c *Cloud) groupIndex(tx store.Tx) (*groupIndex, error) { return c.idx.groups.get(tx) }

func newGroupIndex() *groupIndex {
	return &groupIndex{byID: newSortedMap[SecurityGroup](), byName: newSortedMap[string](), inVPC: newSortedMap[int](),
		tags: newTagIndex(), referrers: newSortedMap[string](), ruleOwner: newSortedMap[string]()}
}

func (x *groupIndex) clone() *groupIndex {
	return &groupIndex{byID: x.byID.clone(), byName: x.byName.clone(), inVPC: x.inVPC.clone(),
		tags: x.tags.clone(), referrers: x.referrers.clone(), ruleOwner: x.ruleOwner.clone()}
}

func (x *groupIndex) record(id string) (SecurityGroup, bool) { return x.byID.get(id) }

func (x *groupIndex) add(sg SecurityGroup) {
	x.byID.set(sg.ID, sg)
	x.byName.set(joinKey(sg.VPCID, strings.ToLower(sg.Name)), sg.ID)
	n, _ := x.inVPC.get(sg.VPCID)
	x.inVPC.set(sg.VPCID, n+1)
	x.tags.add(sg.ID, sg.Tags)
	for _, r := range slices.Concat(sg.Ingress, sg.Egress) {
		x.ruleOwner.set(r.ID, sg.ID)
		if r.GroupID != "" && r.GroupID != sg.ID {
			x.referrers.set(joinKey(r.GroupID, sg.ID), sg.ID)
		}
	}
}

func (x *groupIndex) remove(sg SecurityGroup) {
	x.byID.delete(sg.ID)
	deleteIf(x.byName, joinKey(sg.VPCID, strings.ToLower(sg.Name)), sg.ID)
	if n, _ := x.inVPC.get(sg.VPCID); n > 1 {
		x.inVPC.set(sg.VPCID, n-1)
	} else {
		x.inVPC.delete(sg.VPCID)
	}
	x.tags.remove(sg.ID, sg.Tags)
	for _, r := range slices.Concat(sg.Ingress, sg.Egress) {
		deleteIf(x.ruleOwner, r.ID, sg.ID)
		if r.GroupID != "" && r.GroupID != sg.ID {
			x.referrers.delete(joinKey(r.GroupID, sg.ID))
		}
	}
}

func (x *groupIndex) dump() any {
	return []any{x.byID.entries(), x.byName.entries(), x.inVPC.entries(), x.tags.entries(), x.referrers.entries(), x.ruleOwner.entries()}
}

// all are the groups in ID order.
func (x *groupIndex) all() []SecurityGroup { return x.byID.values() }

// countIn is the number of groups in a VPC.
func (x *groupIndex) countIn(vpcID string) int {
	n, _ := x.inVPC.get(vpcID)
	return n
}

// referrersOf are the other groups with a rule that names the group, in ID order.
func (x *groupIndex) referrersOf(id string) []string {
	var out []string
	for _, e := range x.referrers.withPrefix(joinKey(id)) {
		out = append(out, e.value)
	}
	return out
}

// byNameIn returns the group named name (any case) in the VPC.
func (x *groupIndex) byNameIn(vpcID, name string) (SecurityGroup, bool) {
	id, ok := x.byName.get(joinKey(vpcID, strings.ToLower(name)))
	if !ok {
		return SecurityGroup{}, false
	}
	return x.byID.get(id)
}

// candidates narrows the groups that can match filters by their exact tag:<key> filters (a group
// must have one of the values): see tagIndex.narrow. The filters themselves are still to be
// applied to each candidate.
func (x *groupIndex) candidates(filters []Filter) []SecurityGroup {
	var tagged []TagFilter
	for _, f := range filters {
		key, isTag := strings.CutPrefix(f.Name, "tag:")
		if isTag && !slices.ContainsFunc(f.Values, func(v string) bool { return strings.ContainsAny(v, "*?") }) {
			tagged = append(tagged, TagFilter{Key: key, Values: f.Values})
		}
	}
	return taggedRecords(x.tags, x.byID, tagged)
}

// tagIndex lists the records of a bucket with each tag: key, value, record key → record key. The
// load balancer, listener, target group and security group indexes each keep one, so that a query
// by tag (DescribeSecurityGroups' tag:<key> filters, GetResources' TagFilters) reads the records
// that have the tag instead of the bucket.
type tagIndex struct{ byTag sortedMap[string] }

func newTagIndex() tagIndex { return tagIndex{newSortedMap[string]()} }

func (x tagIndex) clone() tagIndex { return tagIndex{x.byTag.clone()} }

func (x tagIndex) add(key string, tags Tags) {
	for k, v := range tags {
		x.byTag.set(joinKey(k, v, key), key)
	}
}

func (x tagIndex) remove(key string, tags Tags) {
	for k, v := range tags {
		x.byTag.delete(joinKey(k, v, key))
	}
}

func (x tagIndex) entries() []entry[string] { return x.byTag.entries() }

// taggedRecords returns, in key order, the records that can match every one of filters by
// tagIndex.narrow, or all of records when no filter narrows them.
func taggedRecords[T any](tags tagIndex, records sortedMap[T], filters []TagFilter) []T {
	keys, narrowed := tags.narrow(filters)
	if !narrowed {
		return records.values()
	}
	out := make([]T, 0, len(keys))
	for _, k := range keys {
		if r, ok := records.get(k); ok {
			out = append(out, r)
		}
	}
	return out
}

// narrow returns the sorted keys of the records tagged as the narrowest of filters asks (a record
// must have the filter's key with one of its values, or with any value when it has none), or
// narrowed false when there are no filters. A record must match every filter, so one filter's
// records are enough; the others are read only as far as they stay narrower, and a first pass
// looks for a filter of a few records at a few records' cost, so a cluster-wide tag before a
// stack's tag costs the stack's records, not the cluster's.
func (x tagIndex) narrow(filters []TagFilter) (keys []string, narrowed bool) {
	if len(filters) == 0 {
		return nil, false
	}
	var narrowest []string
	found := false
	for _, limit := range []int{fewTagged, -1} {
		for _, f := range filters {
			if found {
				limit = len(narrowest)
			}
			if keys, narrower := x.taggedAny(f, limit); narrower {
				narrowest, found = keys, true
			}
		}
		if found {
			break
		}
	}
	slices.Sort(narrowest)
	return slices.Compact(narrowest), true
}

// fewTagged is how many records narrow's first pass reads of each tag filter.
const fewTagged = 32

// taggedAny returns the keys of the records that f matches, unless there are limit or more of
// them (limit < 0: no limit): then narrower is false.
func (x tagIndex) taggedAny(f TagFilter, limit int) (keys []string, narrower bool) {
	prefixes := []string{joinKey(f.Key)} // any value: every entry of the key
	if len(f.Values) > 0 {
		prefixes = prefixes[:0]
		for _, v := range f.Values {
			prefixes = append(prefixes, joinKey(f.Key, v))
		}
	}
	for _, p := range prefixes {
		stop := false
		x.byTag.eachWithPrefix(p, func(e entry[string]) bool {
			if limit >= 0 && len(keys) >= limit {
				stop = true
				return false
			}
			keys = append(keys, e.value)
			return true
		})
		if stop {
			return nil, false
		}
	}
	return keys, true
}
