package cloud

import (
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/moatlb/moat/internal/store"
)

// Indexes. A Describe call names a load balancer, its listeners or a group by tag; answering it by
// scanning a whole bucket costs time in proportion to the state. So the cloud keeps, per bucket,
// an index of the records (by ARN, name, owner, tag) built from one read of the bucket, and keeps
// it while the bucket's store.Version stays: any commit that writes the bucket gives it a new
// version, and the next reader builds the index again. An index is derived from the store alone,
// so it is as right as the transaction that reads it, through commits, rollbacks and restarts.
// Its records are shared (see store.ListShared): read them, never write through them.

// indexCache keeps the last index built for a bucket and the version it was built from. An
// index is built from the bucket's records (T) in key order, and gives them back (records).
type indexCache[T any, I any] struct {
	bucket  string
	key     func(T) string
	build   func(all []T) I
	records func(I) []T

	mu      sync.Mutex
	version uint64
	built   bool
	index   I
}

// get returns the index of the bucket as tx sees it: the kept one if it was built from the
// version tx starts from and tx changed nothing since; the kept one's records with tx's changes
// put in (an update: that one is not kept, it may never be committed); or one built from a read
// of the whole bucket, kept if tx changed nothing.
func (ic *indexCache[T, I]) get(tx store.Tx) (I, error) {
	v, changed, versioned := store.Version(tx, ic.bucket)
	ic.mu.Lock()
	kept, have := ic.index, versioned && ic.built && ic.version == v
	ic.mu.Unlock()
	switch {
	case have && len(changed) == 0:
		ic.checkKept(kept, tx)
		return kept, nil
	case have:
		all, err := ic.patch(tx, ic.records(kept), changed)
		if err != nil {
			return kept, err
		}
		idx := ic.build(all)
		ic.checkKept(idx, tx)
		return idx, nil
	}
	all, err := store.ListShared[T](tx, ic.bucket)
	if err != nil {
		var zero I
		return zero, err
	}
	idx := ic.build(all)
	if versioned && len(changed) == 0 {
		ic.mu.Lock()
		ic.version, ic.index, ic.built = v, idx, true
		ic.mu.Unlock()
	}
	return idx, nil
}

// patch returns all (in key order) with the records of the changed keys (in order) as tx sees
// them: replaced, added or gone.
func (ic *indexCache[T, I]) patch(tx store.Tx, all []T, changed []string) ([]T, error) {
	out := make([]T, 0, len(all)+len(changed))
	for len(all) > 0 || len(changed) > 0 {
		if len(changed) == 0 || len(all) > 0 && ic.key(all[0]) < changed[0] {
			out = append(out, all[0])
			all = all[1:]
			continue
		}
		k := changed[0]
		changed = changed[1:]
		if len(all) > 0 && ic.key(all[0]) == k {
			all = all[1:]
		}
		r, err := store.LoadShared[T](tx, ic.bucket, k)
		if err == store.ErrNotFound {
			continue
		} else if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	if len(out) == 0 {
		return nil, nil // as a read of an empty bucket gives
	}
	return out, nil
}

// checkKept, in tests, builds the index again from a read of the whole bucket and compares: an
// index that differs means a version that did not change with the records, a wrong patch, or a
// reader that wrote through a shared record (which the read's shared values also catch).
func (ic *indexCache[T, I]) checkKept(idx I, tx store.Tx) {
	if !testing.Testing() {
		return
	}
	all, err := store.ListShared[T](tx, ic.bucket)
	if err == nil && !reflect.DeepEqual(ic.build(all), idx) {
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
		lbs: &indexCache[LoadBalancer, *lbIndex]{bucket: bucketLoadBalancers, build: buildLBIndex,
			key: func(lb LoadBalancer) string { return lb.ARN }, records: func(x *lbIndex) []LoadBalancer { return x.all }},
		listeners: &indexCache[Listener, *listenerIndex]{bucket: bucketListeners, build: buildListenerIndex,
			key: func(l Listener) string { return l.ARN }, records: func(x *listenerIndex) []Listener { return x.all }},
		tgs: &indexCache[TargetGroup, *tgIndex]{bucket: bucketTargetGroups, build: buildTGIndex,
			key: func(tg TargetGroup) string { return tg.ARN }, records: func(x *tgIndex) []TargetGroup { return x.all }},
		groups: &indexCache[SecurityGroup, *groupIndex]{bucket: bucketSecurityGroups, build: buildGroupIndex,
			key: func(sg SecurityGroup) string { return sg.ID }, records: func(x *groupIndex) []SecurityGroup { return x.all }},
	}
}

// lbIndex is the load balancers bucket.
type lbIndex struct {
	all    []LoadBalancer // in ARN order
	byARN  map[string]int
	byName map[string]int // lower-case: names are unique regardless of case
	byDNS  map[string]int // lower-case DNS name
	// addrs are the addresses the load balancers hold, with the ARN of each holder.
	addrs map[netip.Addr]string
}

func (c *Cloud) lbIndex(tx store.Tx) (*lbIndex, error) { return c.idx.lbs.get(tx) }

func buildLBIndex(all []LoadBalancer) *lbIndex {
	x := &lbIndex{all: all, byARN: map[string]int{}, byName: map[string]int{}, byDNS: map[string]int{}, addrs: map[netip.Addr]string{}}
	for i, lb := range all {
		x.byARN[lb.ARN] = i
		x.byName[strings.ToLower(lb.Name)] = i
		x.byDNS[strings.ToLower(lb.DNSName)] = i
		for _, z := range lb.Zones {
			for _, s := range []string{z.Address, z.IPv6Address} {
				if a, err := netip.ParseAddr(s); err == nil {
					x.addrs[a] = lb.ARN
				}
			}
		}
	}
	return x
}

// named returns the load balancer whose ARN or name (any case) is want.
func (x *lbIndex) named(want string) (LoadBalancer, bool) {
	i, ok := x.byARN[want]
	if !ok {
		i, ok = x.byName[strings.ToLower(want)]
	}
	if !ok {
		return LoadBalancer{}, false
	}
	return x.all[i], true
}

// listenerIndex is the listeners bucket.
type listenerIndex struct {
	all   []Listener // in ARN order
	byARN map[string]int
	// ofLB are the listeners of each load balancer, in ARN order.
	ofLB map[string][]int
	// users are, per target group, the load balancers whose listeners forward to it.
	users map[string][]string
}

func (c *Cloud) listenerIndex(tx store.Tx) (*listenerIndex, error) { return c.idx.listeners.get(tx) }

func buildListenerIndex(all []Listener) *listenerIndex {
	x := &listenerIndex{all: all, byARN: map[string]int{}, ofLB: map[string][]int{}, users: map[string][]string{}}
	for i, l := range all {
		x.byARN[l.ARN] = i
		x.ofLB[l.LoadBalancerARN] = append(x.ofLB[l.LoadBalancerARN], i)
		if !slices.Contains(x.users[l.TargetGroupARN], l.LoadBalancerARN) {
			x.users[l.TargetGroupARN] = append(x.users[l.TargetGroupARN], l.LoadBalancerARN)
		}
	}
	return x
}

// of returns the listeners of a load balancer.
func (x *listenerIndex) of(lbARN string) []Listener {
	out := make([]Listener, 0, len(x.ofLB[lbARN]))
	for _, i := range x.ofLB[lbARN] {
		out = append(out, x.all[i])
	}
	return out
}

// tgIndex is the target groups bucket.
type tgIndex struct {
	all    []TargetGroup // in ARN order
	byARN  map[string]int
	byName map[string]int // lower-case
}

func (c *Cloud) tgIndex(tx store.Tx) (*tgIndex, error) { return c.idx.tgs.get(tx) }

func buildTGIndex(all []TargetGroup) *tgIndex {
	x := &tgIndex{all: all, byARN: map[string]int{}, byName: map[string]int{}}
	for i, tg := range all {
		x.byARN[tg.ARN] = i
		x.byName[strings.ToLower(tg.Name)] = i
	}
	return x
}

// named returns the target group whose ARN or name (any case) is want.
func (x *tgIndex) named(want string) (TargetGroup, bool) {
	i, ok := x.byARN[want]
	if !ok {
		i, ok = x.byName[strings.ToLower(want)]
	}
	if !ok {
		return TargetGroup{}, false
	}
	return x.all[i], true
}

// groupIndex is the security groups bucket.
type groupIndex struct {
	all  []SecurityGroup // in ID order
	byID map[string]int
	// byName is keyed by VPC and lower-case name: names are unique per VPC regardless of case.
	byName map[[2]string]int
	inVPC  map[string]int // groups per VPC
	// byTag lists the groups with each tag key and value, in ID order.
	byTag map[Tag][]int
	// referrers are, per group, the other groups with a rule that names it.
	referrers map[string][]string
	// ruleOwner is the group of each rule ID.
	ruleOwner map[string]string
}

func (c *Cloud) groupIndex(tx store.Tx) (*groupIndex, error) { return c.idx.groups.get(tx) }

func buildGroupIndex(all []SecurityGroup) *groupIndex {
	x := &groupIndex{all: all, byID: map[string]int{}, byName: map[[2]string]int{}, inVPC: map[string]int{},
		byTag: map[Tag][]int{}, referrers: map[string][]string{}, ruleOwner: map[string]string{}}
	for i, sg := range all {
		x.byID[sg.ID] = i
		x.byName[[2]string{sg.VPCID, strings.ToLower(sg.Name)}] = i
		x.inVPC[sg.VPCID]++
		for k, v := range sg.Tags {
			x.byTag[Tag{k, v}] = append(x.byTag[Tag{k, v}], i)
		}
		for _, r := range slices.Concat(sg.Ingress, sg.Egress) {
			x.ruleOwner[r.ID] = sg.ID
			if r.GroupID != "" && r.GroupID != sg.ID && !slices.Contains(x.referrers[r.GroupID], sg.ID) {
				x.referrers[r.GroupID] = append(x.referrers[r.GroupID], sg.ID)
			}
		}
	}
	return x
}

// byNameIn returns the group named name (any case) in the VPC.
func (x *groupIndex) byNameIn(vpcID, name string) (SecurityGroup, bool) {
	i, ok := x.byName[[2]string{vpcID, strings.ToLower(name)}]
	if !ok {
		return SecurityGroup{}, false
	}
	return x.all[i], true
}

// candidates narrows the groups that can match filters by their exact tag:<key> filters (a group
// must have one of the values): the groups with those tags, or all of them when no filter is such
// a filter. The filters themselves are still to be applied to each candidate.
func (x *groupIndex) candidates(filters []Filter) []SecurityGroup {
	var narrowed []int
	for _, f := range filters {
		key, isTag := strings.CutPrefix(f.Name, "tag:")
		if !isTag || slices.ContainsFunc(f.Values, func(v string) bool { return strings.ContainsAny(v, "*?") }) {
			continue
		}
		var with []int
		for _, v := range f.Values {
			with = append(with, x.byTag[Tag{key, v}]...)
		}
		slices.Sort(with)
		with = slices.Compact(with)
		if narrowed == nil {
			narrowed = with
		} else {
			narrowed = slices.DeleteFunc(narrowed, func(i int) bool { _, found := slices.BinarySearch(with, i); return !found })
		}
		if len(narrowed) == 0 {
			return nil
		}
	}
	if narrowed == nil {
		return x.all
	}
	out := make([]SecurityGroup, len(narrowed))
	for n, i := range narrowed {
		out[n] = x.all[i]
	}
	return out
}
