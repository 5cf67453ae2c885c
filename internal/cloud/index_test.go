package cloud

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moatlb/moat/internal/store"
	"github.com/moatlb/moat/internal/storetest"
)

// checkIndexes compares every index, as tx sees it, with what a scan of the records (decoded
// afresh) in the same transaction answers.
func checkIndexes(c *Cloud, tx store.Tx) error {
	lbs, err := store.List[LoadBalancer](tx, bucketLoadBalancers)
	if err != nil {
		return err
	}
	listeners, err := store.List[Listener](tx, bucketListeners)
	if err != nil {
		return err
	}
	tgs, err := store.List[TargetGroup](tx, bucketTargetGroups)
	if err != nil {
		return err
	}
	groups, err := store.List[SecurityGroup](tx, bucketSecurityGroups)
	if err != nil {
		return err
	}
	lx, err := c.lbIndex(tx)
	if err != nil {
		return err
	}
	if all := lx.all(); !reflect.DeepEqual(all, lbs) {
		return fmt.Errorf("load balancer index %d records, bucket %d", len(all), len(lbs))
	}
	addrs := 0
	for _, lb := range lbs {
		if got, ok := lx.named(strings.ToUpper(lb.Name)); !ok || got.ARN != lb.ARN {
			return fmt.Errorf("load balancer by name %s: %v %v", lb.Name, got.ARN, ok)
		}
		if got, ok := lx.withDNSName(strings.ToLower(lb.DNSName)); !ok || got.ARN != lb.ARN {
			return fmt.Errorf("load balancer by DNS name %s: %v", lb.DNSName, ok)
		}
		for _, z := range lb.Zones {
			addrs++
			if held, _ := lx.addrs.get(z.Address); held != (heldAddr{netipMust(z.Address), lb.ARN}) {
				return fmt.Errorf("address %s of %s: held by %q", z.Address, lb.ARN, held.holder)
			}
		}
		for _, g := range lb.SecurityGroups {
			if !lx.groupInUse(g) {
				return fmt.Errorf("group %s of %s: not in use by the index", g, lb.ARN)
			}
		}
	}
	if lx.addrs.len() != addrs {
		return fmt.Errorf("%d load balancer addresses indexed, %d held", lx.addrs.len(), addrs)
	}
	if err := checkTagged("load balancers", lbs, lx.tags, lx.byARN, func(lb LoadBalancer) (string, Tags) { return lb.ARN, lb.Tags }); err != nil {
		return err
	}

	ix, err := c.listenerIndex(tx)
	if err != nil {
		return err
	}
	if err := checkTagged("listeners", listeners, ix.tags, ix.byARN, func(l Listener) (string, Tags) { return l.ARN, l.Tags }); err != nil {
		return err
	}
	tgx, err := c.tgIndex(tx)
	if err != nil {
		return err
	}
	if err := checkTagged("target groups", tgs, tgx.tags, tgx.byARN, func(tg TargetGroup) (string, Tags) { return tg.ARN, tg.Tags }); err != nil {
		return err
	}
	for _, lb := range append(slices.Clone(lbs), LoadBalancer{ARN: "arn:none"}) {
		want := []Listener{}
		for _, l := range listeners {
			if l.LoadBalancerARN == lb.ARN {
				want = append(want, l)
			}
		}
		if got := ix.of(lb.ARN); !reflect.DeepEqual(got, want) {
			return fmt.Errorf("listeners of %s: %d, scan %d", lb.ARN, len(got), len(want))
		}
	}
	for _, tg := range tgs {
		var want []string
		for _, l := range listeners {
			if l.TargetGroupARN == tg.ARN && !slices.Contains(want, l.LoadBalancerARN) {
				want = append(want, l.LoadBalancerARN)
			}
		}
		if got := ix.usersOf(tg.ARN); !slices.Equal(got, slices.Sorted(slices.Values(want))) {
			return fmt.Errorf("users of %s: %v, scan %v", tg.ARN, got, want)
		}
		if got, ok := tgx.named(strings.ToUpper(tg.Name)); !ok || !reflect.DeepEqual(got, tg) {
			return fmt.Errorf("target group by name %s: %v %v", tg.Name, got.ARN, ok)
		}
		if tgx.count() != len(tgs) {
			return fmt.Errorf("target group index %d records, bucket %d", tgx.count(), len(tgs))
		}
	}

	gx, err := c.groupIndex(tx)
	if err != nil {
		return err
	}
	if all := gx.all(); !reflect.DeepEqual(all, groups) {
		return fmt.Errorf("group index %d records, bucket %d", len(all), len(groups))
	}
	if err := checkTagged("groups", groups, gx.tags, gx.byID, func(sg SecurityGroup) (string, Tags) { return sg.ID, sg.Tags }); err != nil {
		return err
	}
	inVPC := map[string]int{}
	for _, g := range groups {
		inVPC[g.VPCID]++
		if got, ok := gx.byNameIn(g.VPCID, strings.ToUpper(g.Name)); !ok || got.ID != g.ID {
			return fmt.Errorf("group by name %s: %v %v", g.Name, got.ID, ok)
		}
		var referrers []string
		for _, other := range groups {
			refers := func(r Rule) bool { return r.GroupID == g.ID }
			if other.ID != g.ID && (slices.ContainsFunc(other.Ingress, refers) || slices.ContainsFunc(other.Egress, refers)) {
				referrers = append(referrers, other.ID)
			}
		}
		if got := gx.referrersOf(g.ID); !slices.Equal(got, referrers) {
			return fmt.Errorf("referrers of %s: %v, scan %v", g.ID, got, referrers)
		}
		for _, r := range slices.Concat(g.Ingress, g.Egress) {
			if owner, _ := gx.ruleOwner.get(r.ID); owner != g.ID {
				return fmt.Errorf("rule %s: owner %q, scan %s", r.ID, owner, g.ID)
			}
		}
		for k, v := range g.Tags {
			filters := []Filter{{Name: "tag:" + k, Values: []string{v, "absent"}}}
			var want []string
			for _, other := range groups {
				if m, _ := matchTagFilter(filters[0], other.Tags); m {
					want = append(want, other.ID)
				}
			}
			var got []string
			for _, cand := range gx.candidates(filters) {
				got = append(got, cand.ID)
			}
			if !slices.Equal(got, want) {
				return fmt.Errorf("groups tagged %s=%s: %v, scan %v", k, v, got, want)
			}
		}
	}
	for vpc, n := range inVPC {
		if got := gx.countIn(vpc); got != n {
			return fmt.Errorf("groups in %s: %d, scan %d", vpc, got, n)
		}
	}
	if gx.inVPC.len() != len(inVPC) {
		return fmt.Errorf("groups counted in %d VPCs, scan %d", gx.inVPC.len(), len(inVPC))
	}
	return nil
}

// checkTagged compares what an index's tags narrow each of the records' tags to (by value, with
// a value no record has, and by key alone) with a scan of the records.
func checkTagged[T any](what string, records []T, tags tagIndex, byKey sortedMap[T], view func(T) (string, Tags)) error {
	for _, r := range records {
		_, rTags := view(r)
		for k, v := range rTags {
			for _, f := range []TagFilter{{k, []string{v, "absent"}}, {Key: k}} {
				var want, got []string
				for _, other := range records {
					if key, tags := view(other); matchesTagFilters(tags, []TagFilter{f}) {
						want = append(want, key)
					}
				}
				for _, cand := range taggedRecords(tags, byKey, []TagFilter{f}) {
					key, _ := view(cand)
					got = append(got, key)
				}
				if !slices.Equal(got, want) {
					return fmt.Errorf("%s tagged %v: %v, scan %v", what, f, got, want)
				}
			}
		}
	}
	return nil
}

func netipMust(s string) netip.Addr { return netip.MustParseAddr(s) }

// TestIndexesFollowConcurrentChanges changes load balancers, listeners, target groups and groups
// from several goroutines, some in updates that fail after writing, while others check every
// index against a scan in their own transactions; then it checks them again after a restart.
// Run it with -race.
func TestIndexesFollowConcurrentChanges(t *testing.T) {
	loc := storetest.New(t)
	st, err := loc.Open()
	if err != nil {
		t.Fatal(err)
	}
	c, vpc := inventoryCloud(t, st)
	subnets, err := c.DescribeSubnets(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	subnet := subnets[0].ID
	var mu sync.Mutex
	var groupIDs, lbARNs, tgARNs, listenerARNs []string
	pick := func(from *[]string) string {
		mu.Lock()
		defer mu.Unlock()
		if len(*from) == 0 {
			return "none"
		}
		return (*from)[rand.IntN(len(*from))]
	}
	keep := func(to *[]string, v string) {
		mu.Lock()
		*to = append(*to, v)
		mu.Unlock()
	}
	port := func() *int { p := 10000 + rand.IntN(8); return &p }
	ops := []func() error{
		func() error {
			sg, err := c.CreateSecurityGroup(fmt.Sprintf("g%d", rand.IntN(12)), "d", vpc, []Tag{{"stack", fmt.Sprint(rand.IntN(3))}})
			if err == nil {
				keep(&groupIDs, sg.ID)
			}
			return err
		},
		func() error { _, err := c.DeleteSecurityGroup(GroupRef{ID: pick(&groupIDs)}); return err },
		func() error {
			_, _, err := c.AuthorizeRules(GroupRef{ID: pick(&groupIDs)}, rand.IntN(2) == 0, []Permission{{Protocol: "tcp", FromPort: port(), ToPort: port(), Groups: []Peer{{Value: pick(&groupIDs)}}}}, nil)
			return err
		},
		func() error {
			_, _, err := c.RevokeRules(GroupRef{ID: pick(&groupIDs)}, rand.IntN(2) == 0, []Permission{{Protocol: "tcp", FromPort: port(), ToPort: port(), Groups: []Peer{{Value: pick(&groupIDs)}}}}, nil)
			return err
		},
		func() error {
			return c.CreateTags([]string{pick(&groupIDs)}, []Tag{{"stack", fmt.Sprint(rand.IntN(3))}})
		},
		func() error {
			lb, err := c.CreateLoadBalancer(CreateLoadBalancerInput{Name: fmt.Sprintf("lb%d", rand.IntN(6)), Type: "network", Subnets: []string{subnet}, SecurityGroups: []string{pick(&groupIDs)}})
			if err == nil {
				keep(&lbARNs, lb.ARN)
			}
			return err
		},
		func() error { return c.DeleteLoadBalancer(pick(&lbARNs)) },
		func() error {
			tg, err := c.CreateTargetGroup(CreateTargetGroupInput{Name: fmt.Sprintf("tg%d", rand.IntN(10)), Protocol: "TCP", Port: port(), VPCID: vpc, TargetType: "ip"})
			if err == nil {
				keep(&tgARNs, tg.ARN)
			}
			return err
		},
		func() error { return c.DeleteTargetGroup(pick(&tgARNs)) },
		func() error {
			l, err := c.CreateListener(CreateListenerInput{LoadBalancerARN: pick(&lbARNs), Protocol: "TCP", Port: port(), DefaultActions: []Action{{Type: "forward", TargetGroupARN: pick(&tgARNs)}}})
			if err == nil {
				keep(&listenerARNs, l.ARN)
			}
			return err
		},
		func() error { return c.DeleteListener(pick(&listenerARNs)) },
		func() error { return c.AddTags([]string{pick(&lbARNs)}, []Tag{{"k", fmt.Sprint(rand.IntN(3))}}) },
		func() error { return c.RemoveTags([]string{pick(&lbARNs)}, []string{"k"}) },
		func() error { return c.AddTags([]string{pick(&tgARNs)}, []Tag{{"k", fmt.Sprint(rand.IntN(3))}}) },
		func() error { return c.AddTags([]string{pick(&listenerARNs)}, []Tag{{"k", fmt.Sprint(rand.IntN(3))}}) },
		// An update that writes every indexed bucket, reads the indexes (which must show its
		// writes), then fails: nothing of it may stay, in the store or in an index.
		func() error {
			err := c.store.Update(func(tx store.Tx) error {
				for _, w := range []struct{ bucket, key string }{{bucketLoadBalancers, "arn:rolled-back"}, {bucketListeners, "arn:rolled-back"}, {bucketTargetGroups, "arn:rolled-back"}, {bucketSecurityGroups, "sg-0rolledback0000"}} {
					if err := tx.Delete(w.bucket, pick(&lbARNs)); err != nil {
						return err
					}
					if err := store.Save(tx, w.bucket, w.key, map[string]any{"ARN": w.key, "ID": w.key, "Name": "rolled-back", "VPCID": vpc}); err != nil {
						return err
					}
				}
				if err := checkIndexes(c, tx); err != nil {
					return err
				}
				lx, err := c.lbIndex(tx)
				if err != nil {
					return err
				}
				if _, ok := lx.record("arn:rolled-back"); !ok {
					return errors.New("the index in the update misses the update's write")
				}
				return errRolledBack
			})
			if errors.Is(err, errRolledBack) {
				return nil
			}
			return err
		},
	}
	deadline := time.Now().Add(3 * time.Second)
	if testing.Short() {
		deadline = time.Now().Add(time.Second)
	}
	// Past the deadline, go on (for a while) until some of each kind were made.
	made := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(groupIDs) > 0 && len(lbARNs) > 0 && len(tgARNs) > 0 && len(listenerARNs) > 0
	}
	hardDeadline := deadline.Add(20 * time.Second)
	going := func() bool { return time.Now().Before(deadline) || !made() && time.Now().Before(hardDeadline) }
	var wg sync.WaitGroup
	var emu sync.Mutex
	var errs []error
	fail := func(err error) {
		emu.Lock()
		errs = append(errs, err)
		emu.Unlock()
	}
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for going() {
				var aws *Error
				if err := ops[rand.IntN(len(ops))](); err != nil && !errors.As(err, &aws) {
					fail(err)
				}
			}
		}()
	}
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for going() {
				if err := st.View(func(tx store.Tx) error { return checkIndexes(c, tx) }); err != nil {
					fail(err)
				}
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d failures, first: %v", len(errs), errs[0])
	}
	// The changes must have happened for the checks to mean anything.
	if !made() {
		t.Errorf("created %d groups, %d load balancers, %d target groups, %d listeners: want some of each", len(groupIDs), len(lbARNs), len(tgARNs), len(listenerARNs))
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st, err = loc.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	c = New(st, Config{})
	if err := st.View(func(tx store.Tx) error { return checkIndexes(c, tx) }); err != nil {
		t.Fatalf("after a restart: %v", err)
	}
}

var errRolledBack = errors.New("rolled back")

// TestIndexFollowsCommitsWithoutReadingTheBucket: on bbolt, which logs the keys of its commits,
// an index follows a stream of commits by reading the records they wrote, never the whole bucket
// again (which costs time in proportion to the state); and it answers as the records say.
func TestIndexFollowsCommitsWithoutReadingTheBucket(t *testing.T) {
	st, err := store.OpenBolt(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	c, vpc := inventoryCloud(t, st)
	var ids []string
	for i := range 50 {
		sg, err := c.CreateSecurityGroup(fmt.Sprint("g", i), "d", vpc, nil)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, sg.ID)
	}
	tagged := func(v string) []string {
		t.Helper()
		got, _, err := c.DescribeSecurityGroups(nil, nil, []Filter{{Name: "tag:n", Values: []string{v}}}, Page{})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, sg := range got {
			out = append(out, sg.ID)
		}
		return out
	}
	tagged("0")
	before := c.idx.groups.wholeReads.Load()
	for i, id := range ids {
		if err := c.CreateTags([]string{id}, []Tag{{"n", fmt.Sprint(i % 2)}}); err != nil {
			t.Fatal(err)
		}
		if got := len(tagged("1")); got != (i+1)/2 {
			t.Fatalf("after tagging %d groups, %d have n=1, want %d", i+1, got, (i+1)/2)
		}
	}
	if _, err := c.DeleteSecurityGroup(GroupRef{ID: ids[1]}); err != nil {
		t.Fatal(err)
	}
	if got := len(tagged("1")); got != len(ids)/2-1 {
		t.Fatalf("after deleting a group tagged n=1, %d have it, want %d", got, len(ids)/2-1)
	}
	if n := c.idx.groups.wholeReads.Load() - before; n != 0 {
		t.Errorf("the group index read the whole bucket %d times over %d commits, want 0", n, len(ids)+1)
	}
}

// inventoryCloud is a Cloud on st with the default inventory, and the ID of its VPC.
func inventoryCloud(t *testing.T, st store.Store) (*Cloud, string) {
	t.Helper()
	c := New(st, Config{})
	if err := c.ApplyInventory(DefaultInventory()); err != nil {
		t.Fatal(err)
	}
	vpcs, err := c.DescribeVPCs(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c, vpcs[0].ID
}
