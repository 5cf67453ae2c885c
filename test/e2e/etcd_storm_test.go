package e2e

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"

	"github.com/moatlb/moat/internal/etcdtest"
)

// TestEtcdMemberKilledDuringStorm runs three moat lb nodes on a three-member etcd cluster while
// clients of every node send a storm of mutations — create a group of a unique name, authorize a
// rule in it, delete every other one — and readers describe groups; midway, the etcd leader is
// killed with SIGKILL. Every answer is recorded. The API must keep answering: every node
// acknowledges writes again after the kill, and requests fail only around it. Afterwards, read
// through every node, every acknowledged write is there (the group, its rule) and no group whose
// delete was acknowledged is. How long writes stalled around the kill is measured and logged:
// about the election (1-2 s) on most nodes; but a commit in flight when the leader dies waits for
// etcd's request timeout (5 s + 2 election timeouts, 7 s) and then fails, and since a node's
// updates take turns, that node's writes stall as long.
func TestEtcdMemberKilledDuringStorm(t *testing.T) {
	members, storeFlag := etcdCluster(t)
	var nodes []*ec2.Client
	for i := range 3 {
		p := startLB(t, filepath.Join(t.TempDir(), fmt.Sprint("node", i)), storeFlag,
			"--quota-security-groups-per-vpc=100000") // the storm keeps half the groups it creates
		c, _ := p.clients(t)
		nodes = append(nodes, c)
	}
	vpc, _ := vpcSubnets(t, nodes[0])

	// The storm runs for before, then the leader is killed, then it runs until every node has
	// acknowledged afterKill writes sent after the kill.
	before, afterKill := 3*time.Second, 5
	if !testing.Short() {
		before, afterKill = 10*time.Second, 50
	}
	const writersPerNode = 2
	s := &storm{vpc: vpc}
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for n, c := range nodes {
		for w := range writersPerNode {
			wg.Go(func() { s.write(ctx, c, n, n*writersPerNode+w) })
		}
		wg.Go(func() { s.read(ctx, c, n) })
	}
	t.Cleanup(func() { stop(); wg.Wait() }) // also when the test ends early
	time.Sleep(before)                      // the storm's length before the kill, not a synchronisation

	victim := findLeader(t, members)
	killed := time.Now()
	victim.Stop() // SIGKILL
	t.Logf("killed the etcd leader, the member on %s, %v into the storm", victim.Endpoint, killed.Sub(s.started()).Round(time.Millisecond))
	waitFor(t, 60*time.Second, fmt.Sprintf("every node to acknowledge %d writes sent after the kill", afterKill), func() bool {
		writes, _ := s.acknowledgedAfter(killed, len(nodes))
		return slices.Min(writes) >= afterKill
	})
	stop()
	wg.Wait()

	s.report(t, killed, len(nodes))
	s.checkAnswering(t, killed, len(nodes))
	for n, c := range nodes {
		s.checkState(t, c, n)
	}
}

// findLeader is the member that is the raft leader, asking each until one says so (an election
// may be under way).
func findLeader(t *testing.T, members []*etcdtest.Member) *etcdtest.Member {
	t.Helper()
	var leader *etcdtest.Member
	waitFor(t, 10*time.Second, "an etcd leader", func() bool {
		for _, m := range members {
			if is, err := m.IsLeader(); err == nil && is {
				leader = m
				return true
			}
		}
		return false
	})
	return leader
}

// stormCall is one request of the storm and what came of it.
type stormCall struct {
	node       int
	kind       string // create, authorize, delete, describe
	group      string // the group's ID (create: the one answered)
	rule       string // authorize: the rule's CIDR
	start, end time.Time
	err        error // nil: acknowledged (a 200 answer)
}

// answered says whether an HTTP answer came back, even an error's.
func (c stormCall) answered() bool {
	_, ok := errors.AsType[smithy.APIError](c.err)
	return c.err == nil || ok
}

type storm struct {
	vpc *string

	mu    sync.Mutex
	calls []stormCall
	begin time.Time
}

func (s *storm) record(c stormCall) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.begin.IsZero() || c.start.Before(s.begin) {
		s.begin = c.start
	}
	s.calls = append(s.calls, c)
}

func (s *storm) started() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.begin
}

// do sends one request, bounded well beyond the store's own 10 s timeout so that moat lb's
// answer, not the client's patience, decides, and records it.
func (s *storm) do(c stormCall, f func(ctx context.Context) (string, error)) stormCall {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c.start = time.Now()
	id, err := f(ctx)
	c.end, c.err = time.Now(), err
	if c.group == "" {
		c.group = id
	}
	s.record(c)
	return c
}

// write is one writer's storm until ctx ends: a group of a unique name, a rule in it, and every
// other group deleted again.
func (s *storm) write(ctx context.Context, c *ec2.Client, node, writer int) {
	for i := 0; ctx.Err() == nil; i++ {
		created := s.do(stormCall{node: node, kind: "create"}, func(ctx context.Context) (string, error) {
			out, err := c.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String(fmt.Sprintf("storm-%d-%d", writer, i)),
				Description: aws.String("storm"), VpcId: s.vpc})
			if err != nil {
				return "", err
			}
			return *out.GroupId, nil
		})
		if created.err != nil {
			continue // its ID is unknown: nothing to build on
		}
		cidr := fmt.Sprintf("10.%d.%d.%d/32", writer, i/256%256, i%256)
		s.do(stormCall{node: node, kind: "authorize", group: created.group, rule: cidr}, func(ctx context.Context) (string, error) {
			_, err := c.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: aws.String(created.group),
				IpPermissions: []ec2types.IpPermission{{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(443), ToPort: aws.Int32(443),
					IpRanges: []ec2types.IpRange{{CidrIp: aws.String(cidr)}}}}})
			return "", err
		})
		if i%2 == 1 {
			s.do(stormCall{node: node, kind: "delete", group: created.group}, func(ctx context.Context) (string, error) {
				_, err := c.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupId: aws.String(created.group)})
				return "", err
			})
		}
	}
}

// read describes one group after another until ctx ends, as controllers' reconciles do.
func (s *storm) read(ctx context.Context, c *ec2.Client, node int) {
	for ctx.Err() == nil {
		s.do(stormCall{node: node, kind: "describe"}, func(ctx context.Context) (string, error) {
			_, err := c.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{Filters: []ec2types.Filter{
				{Name: aws.String("vpc-id"), Values: []string{*s.vpc}}, {Name: aws.String("group-name"), Values: []string{"storm-0-0"}}}})
			return "", err
		})
	}
}

// writes are the storm's mutations, in the order they ended.
func (s *storm) writes() []stormCall {
	var out []stormCall
	for _, c := range s.calls {
		if c.kind != "describe" {
			out = append(out, c)
		}
	}
	slices.SortFunc(out, func(a, b stormCall) int { return a.end.Compare(b.end) })
	return out
}

// report logs, second by second around the kill, the acknowledged writes, the answered reads and
// the failures, and how long writes stalled: the longest time without an acknowledged write that
// spans or follows the kill, and the time from the kill to the first write both sent and
// acknowledged after it.
func (s *storm) report(t *testing.T, killed time.Time, nodes int) {
	t.Helper()
	type second struct{ writes, reads, failed int }
	bySecond := map[int]*second{}
	for _, c := range s.calls {
		sec := int(c.end.Sub(killed).Truncate(time.Second) / time.Second)
		if c.end.Before(killed) {
			sec--
		}
		b := bySecond[sec]
		if b == nil {
			b = &second{}
			bySecond[sec] = b
		}
		switch {
		case c.err != nil:
			b.failed++
		case c.kind == "describe":
			b.reads++
		default:
			b.writes++
		}
	}
	var lines []string
	for sec := -3; sec <= min(slices.Max(slices.Collect(maps.Keys(bySecond))), 15); sec++ {
		if b := bySecond[sec]; b != nil {
			lines = append(lines, fmt.Sprintf("  [%+ds,%+ds): %4d writes acknowledged, %4d reads answered, %3d failed", sec, sec+1, b.writes, b.reads, b.failed))
		}
	}
	t.Logf("answers by second around the kill:\n%s", strings.Join(lines, "\n"))

	writes := s.writes()
	stall, first := stallAround(writes, killed)
	t.Logf("writes stalled at most %v after the kill; the first write sent after the kill was acknowledged %v after it",
		stall.Round(time.Millisecond), first.Round(time.Millisecond))
	for n := range nodes {
		mine := slices.DeleteFunc(slices.Clone(writes), func(c stormCall) bool { return c.node != n })
		acked := func(after bool) int {
			return len(slices.DeleteFunc(slices.Clone(mine), func(c stormCall) bool { return c.err != nil || c.end.After(killed) != after }))
		}
		stall, first := stallAround(mine, killed)
		t.Logf("node %d: %d writes acknowledged before the kill, %d after; stalled at most %v, the first sent after the kill acknowledged %v after it",
			n, acked(false), acked(true), stall.Round(time.Millisecond), first.Round(time.Millisecond))
	}
}

// stallAround is, of writes ordered by their end, the longest time without an acknowledgement
// that ends after the kill, and how long after the kill the first write sent after it was
// acknowledged (-1 if none was).
func stallAround(writes []stormCall, killed time.Time) (stall, first time.Duration) {
	var prev time.Time
	first = -1
	for _, c := range writes {
		if c.err != nil {
			continue
		}
		if !prev.IsZero() && c.end.After(killed) {
			stall = max(stall, c.end.Sub(prev))
		}
		prev = c.end
		if first < 0 && c.start.After(killed) {
			first = c.end.Sub(killed)
		}
	}
	return stall, first
}

// failoverBound is how long after the kill requests may still fail: the etcd election, the
// clients' move to another member, and the store's 10 s timeout for requests caught in between.
const failoverBound = 20 * time.Second

// checkAnswering asserts that every node acknowledged writes and answered reads it was sent after
// the kill, and that requests failed only if they were sent before failoverBound had passed.
func (s *storm) checkAnswering(t *testing.T, killed time.Time, nodes int) {
	t.Helper()
	var failed int
	for _, c := range s.calls {
		if c.err == nil {
			continue
		}
		failed++
		if c.start.After(killed.Add(failoverBound)) {
			t.Errorf("node %d: %s sent %s failed: %v", c.node, c.kind, sinceKill(c.start, killed), c.err)
		} else {
			t.Logf("node %d: %s sent %s failed (answered: %v): %v", c.node, c.kind, sinceKill(c.start, killed), c.answered(), c.err)
		}
	}
	writesAfter, readsAfter := s.acknowledgedAfter(killed, nodes)
	t.Logf("%d requests, %d failed; sent after the kill and acknowledged, by node: writes %v, reads %v", len(s.calls), failed, writesAfter, readsAfter)
	for n := range nodes {
		if writesAfter[n] == 0 || readsAfter[n] == 0 {
			t.Errorf("node %d answered nothing it was sent after the kill (writes %d, reads %d)", n, writesAfter[n], readsAfter[n])
		}
	}
}

func sinceKill(at, killed time.Time) string {
	if d := at.Sub(killed).Round(time.Millisecond); d < 0 {
		return fmt.Sprintf("%v before the kill", -d)
	} else {
		return fmt.Sprintf("%v after the kill", d)
	}
}

// acknowledgedAfter counts, by node, the writes and the reads sent after the kill and
// acknowledged.
func (s *storm) acknowledgedAfter(killed time.Time, nodes int) (writes, reads []int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	writes, reads = make([]int, nodes), make([]int, nodes)
	for _, c := range s.calls {
		switch {
		case c.err != nil || !c.start.After(killed):
		case c.kind == "describe":
			reads[c.node]++
		default:
			writes[c.node]++
		}
	}
	return writes, reads
}

// checkState asserts, through one node, that every acknowledged write is there and no group whose
// delete was acknowledged is.
func (s *storm) checkState(t *testing.T, c *ec2.Client, node int) {
	t.Helper()
	present := map[string]ec2types.SecurityGroup{}
	pages := ec2.NewDescribeSecurityGroupsPaginator(c, &ec2.DescribeSecurityGroupsInput{Filters: []ec2types.Filter{{Name: aws.String("vpc-id"), Values: []string{*s.vpc}}}})
	for pages.HasMorePages() {
		out, err := pages.NextPage(context.Background())
		if err != nil {
			t.Fatalf("node %d: %v", node, err)
		}
		for _, g := range out.SecurityGroups {
			present[*g.GroupId] = g
		}
	}
	deleted, rules := map[string]bool{}, map[string][]string{}
	var created []string
	var authorized int
	for _, c := range s.calls {
		if c.err != nil {
			continue
		}
		switch c.kind {
		case "create":
			created = append(created, c.group)
		case "authorize":
			rules[c.group] = append(rules[c.group], c.rule)
			authorized++
		case "delete":
			deleted[c.group] = true
		}
	}
	var lost, revived int
	for _, id := range created {
		g, ok := present[id]
		switch {
		case deleted[id] && ok:
			revived++
			t.Errorf("node %d: group %s (%s) is there, though its delete was acknowledged", node, id, *g.GroupName)
		case !deleted[id] && !ok:
			lost++
			t.Errorf("node %d: group %s, whose create was acknowledged, is gone", node, id)
		case ok:
			for _, cidr := range rules[id] {
				if !slices.ContainsFunc(g.IpPermissions, func(p ec2types.IpPermission) bool {
					return slices.ContainsFunc(p.IpRanges, func(r ec2types.IpRange) bool { return *r.CidrIp == cidr })
				}) {
					lost++
					t.Errorf("node %d: group %s lacks the rule for %s, whose authorize was acknowledged", node, id, cidr)
				}
			}
		}
	}
	t.Logf("node %d: %d acknowledged creates (%d deleted since, acknowledged), %d acknowledged rules: %d lost, %d revived",
		node, len(created), len(deleted), authorized, lost, revived)
}
