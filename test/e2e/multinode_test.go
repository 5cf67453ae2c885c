package e2e

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"

	"github.com/moatlb/moat/internal/etcdtest"
)

// TestNodesRaceOnOneStore runs three moat lb nodes on one three-member etcd cluster and has
// clients of every node race on the same few group names and references: create, delete,
// authorize and revoke a rule referencing another group. Every request and answer is recorded,
// and the history must be linearizable against a model of names, groups and references (checked
// with porcupine): each answer — the duplicate name refused, the group in use that cannot be
// deleted (DependencyViolation), the rule that already exists or does not, the group that is
// gone — is the one a single copy of the state, changed one request at a time, would give. The
// nodes must have run into each other (store conflicts counted) and, afterwards, every node reads
// the same state, which is the model's.
func TestNodesRaceOnOneStore(t *testing.T) {
	_, storeFlag := etcdCluster(t)
	var nodes []*ec2.Client
	var procs []*lbProcess
	for i := range 3 {
		p := startLB(t, filepath.Join(t.TempDir(), fmt.Sprint("node", i)), storeFlag)
		procs = append(procs, p)
		c, _ := p.clients(t)
		nodes = append(nodes, c)
	}
	vpc, _ := vpcSubnets(t, nodes[0])

	workers, ops := 2, 40
	if !testing.Short() {
		workers, ops = 3, 120
	}
	h := &raceHistory{names: []string{"race-a", "race-b", "race-c", "race-d"}, vpc: vpc}
	start := time.Now()
	var wg sync.WaitGroup
	for n, c := range nodes {
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(n), uint64(w)))
				for range ops {
					h.step(t, c, n*workers+w, rng, start)
				}
			}()
		}
	}
	wg.Wait()

	var conflicts float64
	for _, p := range procs {
		conflicts += metricValue(t, p, "moat_store_conflicts_total")
	}
	t.Logf("%d requests through 3 nodes; %v store conflicts; outcomes %v", len(h.ops), conflicts, h.outcomes())
	if conflicts == 0 {
		t.Error("the nodes never ran into each other: the test raced nothing")
	}
	if h.unknown > 0 {
		t.Fatalf("%d requests failed without an answer, so the history cannot be checked", h.unknown)
	}
	// Every node reads the same groups and references now; the history, ended by that read,
	// must be linearizable.
	var final string
	for i, c := range nodes {
		got := readGroups(t, c, h.names, vpc)
		if i == 0 {
			final = got
		} else if got != final {
			t.Errorf("node %d reads %s, node 0 %s", i, got, final)
		}
	}
	history := append(h.ops, porcupine.Operation{ClientId: len(nodes) * workers, Input: groupOp{Kind: "read"}, Output: groupResult{ID: final},
		Call: time.Since(start).Nanoseconds(), Return: time.Since(start).Nanoseconds() + 1})
	res, info := porcupine.CheckOperationsVerbose(groupsModel, history, 2*time.Minute)
	switch res {
	case porcupine.Illegal:
		path := filepath.Join(t.TempDir(), "history.html")
		_ = porcupine.VisualizePath(groupsModel, info, path)
		t.Fatalf("the history is not linearizable, or does not end in the state the nodes read (%s); visualization: %s", final, path)
	case porcupine.Unknown:
		t.Fatal("the linearizability check timed out")
	}
}

// groupOp is one request of the race: kind is create (Name), delete (ID), authorize or revoke
// (ID's group gets or loses a tcp 443 rule referencing Peer), or the read of the groups at the
// end (its answer, in groupResult.ID, is namedKey of the state).
type groupOp struct {
	Kind, Name, ID, Peer string
}

// groupResult is an answer: the new group's ID (create), or the error code.
type groupResult struct {
	ID, Code string
}

// groupsState is the model's state: groups by ID with their names and the IDs their inbound
// rules reference. It is immutable: steps return a new one.
type groupsState struct {
	name map[string]string          // ID -> name
	refs map[string]map[string]bool // ID -> referenced IDs
}

func (s groupsState) key() string {
	var b strings.Builder
	for _, id := range slices.Sorted(maps.Keys(s.name)) {
		fmt.Fprintf(&b, "%s=%s%v;", s.name[id], id, slices.Sorted(maps.Keys(s.refs[id])))
	}
	return b.String()
}

func (s groupsState) clone() groupsState {
	out := groupsState{name: maps.Clone(s.name), refs: map[string]map[string]bool{}}
	for id, r := range s.refs {
		out.refs[id] = maps.Clone(r)
	}
	return out
}

// apply is what AWS's rules make of op in state s: the answer it must give, and the state after.
func (s groupsState) apply(op groupOp) (groupResult, groupsState) {
	switch op.Kind {
	case "create":
		for _, n := range s.name {
			if n == op.Name {
				return groupResult{Code: "InvalidGroup.Duplicate"}, s
			}
		}
		return groupResult{}, s // the ID is the server's to choose: see groupsModel
	case "delete":
		if _, ok := s.name[op.ID]; !ok {
			return groupResult{Code: "InvalidGroup.NotFound"}, s
		}
		for id, r := range s.refs {
			if id != op.ID && r[op.ID] {
				return groupResult{Code: "DependencyViolation"}, s
			}
		}
		next := s.clone()
		delete(next.name, op.ID)
		delete(next.refs, op.ID)
		return groupResult{}, next
	case "authorize", "revoke":
		_, okGroup := s.name[op.ID]
		_, okPeer := s.name[op.Peer]
		if !okGroup || !okPeer {
			return groupResult{Code: "InvalidGroup.NotFound"}, s
		}
		has := s.refs[op.ID][op.Peer]
		if op.Kind == "authorize" && has {
			return groupResult{Code: "InvalidPermission.Duplicate"}, s
		}
		if op.Kind == "revoke" && !has {
			return groupResult{Code: "InvalidPermission.NotFound"}, s
		}
		next := s.clone()
		if next.refs[op.ID] == nil {
			next.refs[op.ID] = map[string]bool{}
		}
		if op.Kind == "authorize" {
			next.refs[op.ID][op.Peer] = true
		} else {
			delete(next.refs[op.ID], op.Peer)
		}
		return groupResult{}, next
	}
	panic("unknown op " + op.Kind)
}

var groupsModel = porcupine.Model{
	Init: func() any { return groupsState{name: map[string]string{}, refs: map[string]map[string]bool{}} },
	Step: func(state, input, output any) (bool, any) {
		s, op, got := state.(groupsState), input.(groupOp), output.(groupResult)
		if op.Kind == "read" {
			return namedKey(s) == got.ID, s
		}
		want, next := s.apply(op)
		if op.Kind == "create" && want.Code == "" {
			if _, used := s.name[got.ID]; used {
				return false, s
			}
			next = s.clone()
			next.name[got.ID] = op.Name
		}
		if got.Code != want.Code {
			return false, s
		}
		return true, next
	},
	Equal: func(a, b any) bool { return a.(groupsState).key() == b.(groupsState).key() },
	DescribeOperation: func(input, output any) string {
		return fmt.Sprintf("%+v → %+v", input, output)
	},
	DescribeState: func(state any) string { return state.(groupsState).key() },
}

// namedKey is a state's key with every ID replaced by its group's name, as readGroups sees it.
func namedKey(s groupsState) string {
	var b strings.Builder
	for _, id := range slices.SortedFunc(maps.Keys(s.name), func(a, b string) int { return strings.Compare(s.name[a], s.name[b]) }) {
		var refs []string
		for r := range s.refs[id] {
			refs = append(refs, s.name[r])
		}
		slices.Sort(refs)
		fmt.Fprintf(&b, "%s%v;", s.name[id], refs)
	}
	return b.String()
}

// readGroups is the race's groups as a node reads them, in namedKey's form.
func readGroups(t *testing.T, c *ec2.Client, names []string, vpc *string) string {
	t.Helper()
	out, err := c.DescribeSecurityGroups(context.Background(), &ec2.DescribeSecurityGroupsInput{Filters: []ec2types.Filter{
		{Name: aws.String("vpc-id"), Values: []string{*vpc}}, {Name: aws.String("group-name"), Values: names}}})
	if err != nil {
		t.Fatal(err)
	}
	nameOf := map[string]string{}
	for _, g := range out.SecurityGroups {
		nameOf[*g.GroupId] = *g.GroupName
	}
	slices.SortFunc(out.SecurityGroups, func(a, b ec2types.SecurityGroup) int { return strings.Compare(*a.GroupName, *b.GroupName) })
	var b strings.Builder
	for _, g := range out.SecurityGroups {
		var refs []string
		for _, p := range g.IpPermissions {
			for _, pair := range p.UserIdGroupPairs {
				refs = append(refs, nameOf[*pair.GroupId])
			}
		}
		slices.Sort(refs)
		fmt.Fprintf(&b, "%s%v;", *g.GroupName, refs)
	}
	return b.String()
}

// raceHistory records the race's requests and answers.
type raceHistory struct {
	names []string
	vpc   *string

	mu      sync.Mutex
	ids     []string // every ID a create answered, gone or not
	ops     []porcupine.Operation
	unknown int
}

func (h *raceHistory) pickID(rng *rand.Rand) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case len(h.ids) == 0 || rng.IntN(10) == 0:
		return "sg-0123456789abcdef0" // never created
	case rng.IntN(4) == 0:
		return h.ids[rng.IntN(len(h.ids))]
	}
	// Mostly the latest groups, which are likely to exist still.
	recent := h.ids[max(0, len(h.ids)-len(h.names)):]
	return recent[rng.IntN(len(recent))]
}

// step sends one random request through c and records it.
func (h *raceHistory) step(t *testing.T, c *ec2.Client, client int, rng *rand.Rand, start time.Time) {
	ctx := context.Background()
	var op groupOp
	switch k := rng.IntN(10); {
	case k < 3:
		op = groupOp{Kind: "create", Name: h.names[rng.IntN(len(h.names))]}
	case k < 5:
		op = groupOp{Kind: "delete", ID: h.pickID(rng)}
	case k < 8:
		op = groupOp{Kind: "authorize", ID: h.pickID(rng), Peer: h.pickID(rng)}
	default:
		op = groupOp{Kind: "revoke", ID: h.pickID(rng), Peer: h.pickID(rng)}
	}
	if op.Peer != "" && op.Peer == op.ID {
		return // a group referencing itself is no race
	}
	perm := []ec2types.IpPermission{{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(443), ToPort: aws.Int32(443),
		UserIdGroupPairs: []ec2types.UserIdGroupPair{{GroupId: aws.String(op.Peer)}}}}
	call := time.Since(start).Nanoseconds()
	var res groupResult
	var err error
	switch op.Kind {
	case "create":
		var out *ec2.CreateSecurityGroupOutput
		out, err = c.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String(op.Name), Description: aws.String("race"), VpcId: h.vpc})
		if err == nil {
			res.ID = *out.GroupId
		}
	case "delete":
		_, err = c.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupId: aws.String(op.ID)})
	case "authorize":
		_, err = c.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: aws.String(op.ID), IpPermissions: perm})
	case "revoke":
		_, err = c.RevokeSecurityGroupIngress(ctx, &ec2.RevokeSecurityGroupIngressInput{GroupId: aws.String(op.ID), IpPermissions: perm})
	}
	ret := time.Since(start).Nanoseconds()
	h.mu.Lock()
	defer h.mu.Unlock()
	if apiErr, ok := errors.AsType[smithy.APIError](err); ok {
		res.Code = apiErr.ErrorCode()
	} else if err != nil {
		t.Logf("%+v: no answer: %v", op, err)
		h.unknown++
		return
	}
	if res.ID != "" {
		h.ids = append(h.ids, res.ID)
	}
	h.ops = append(h.ops, porcupine.Operation{ClientId: client, Input: op, Call: call, Output: res, Return: ret})
}

// outcomes counts the answers by kind and code, to show what the race covered.
func (h *raceHistory) outcomes() map[string]int {
	out := map[string]int{}
	for _, op := range h.ops {
		code := op.Output.(groupResult).Code
		if code == "" {
			code = "OK"
		}
		out[op.Input.(groupOp).Kind+":"+code]++
	}
	return out
}

// etcdMember starts a one-member etcd cluster for the rest of the test (skipping the test
// without the kube assets' etcd).
func etcdMember(t *testing.T) *etcdtest.Member {
	t.Helper()
	bin, err := etcdtest.Binary()
	if err != nil {
		t.Skipf("no etcd binary (%v): run hack/kube-assets.sh", err)
	}
	member, err := etcdtest.Start(bin, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(member.Stop)
	return member
}

// etcdCluster starts a three-member etcd cluster for the rest of the test (skipping the test
// without the kube assets' etcd) and returns its members and moat lb's --store flag for it.
func etcdCluster(t *testing.T) (members []*etcdtest.Member, storeFlag string) {
	t.Helper()
	bin, err := etcdtest.Binary()
	if err != nil {
		t.Skipf("no etcd binary (%v): run hack/kube-assets.sh", err)
	}
	members, err = etcdtest.StartCluster(bin, t.TempDir(), 3)
	if err != nil {
		t.Fatal(err)
	}
	var urls []string
	for _, m := range members {
		t.Cleanup(m.Stop)
		urls = append(urls, m.Endpoint)
	}
	return members, "--store=etcd://" + strings.Join(urls, ",")
}
