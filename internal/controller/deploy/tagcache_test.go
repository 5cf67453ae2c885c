package deploy_test

import (
	"maps"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/moatlb/moat/internal/controller/annotations"
	"github.com/moatlb/moat/internal/controller/model"
)

// withFakeClock gives the fixture a Deployer whose tag cache runs on the returned clock.
func (f *fixture) withFakeClock() *clocktesting.FakeClock {
	clk := clocktesting.NewFakeClock(time.Now())
	f.clock = clk
	f.d = f.deployer(f.env.Config)
	return clk
}

// TestTagCacheResync: a resync of an unchanged stack takes every tag from the cache — no
// DescribeTags call — and scans load balancers twice (model build and load balancer synthesis)
// and target groups once, as the AWS controller does. A restarted controller reads each kind of
// resource's tags once (one batch each here), then no more.
func TestTagCacheResync(t *testing.T) {
	f := newFixture(t)
	svc := webService("10.0.0.0/8")
	f.deploy(f.d, svc)
	f.deploy(f.d, otherService())

	// A restarted Deployer (Options.Bindings nil) rewrites the nodes' rules for the bindings it
	// has seen, so only the same process is checked for mutating calls (TestNoOpResync covers it).
	resync := func(t *testing.T, wantDescribeTags int, checkMutating bool) {
		t.Helper()
		before := f.env.Calls(t)
		f.deploy(f.d, svc)
		calls := f.env.Calls(t).Since(before)
		for action, want := range map[string]int{
			"DescribeTags":          wantDescribeTags,
			"DescribeLoadBalancers": 2,
			"DescribeTargetGroups":  1,
		} {
			if n := calls.Count(action); n != want {
				t.Errorf("%s calls: %d, want %d (all calls: %s)", action, n, want, calls)
			}
		}
		if m := calls.Mutating(); checkMutating && m.Total() != 0 {
			t.Errorf("resync made mutating calls: %s", m)
		}
	}
	t.Run("same process", func(t *testing.T) { resync(t, 0, true) })
	t.Run("restarted controller", func(t *testing.T) {
		f.d = f.deployer(f.env.Config)
		resync(t, 3, false) // load balancers, target groups, listeners
		resync(t, 0, true)
	})
}

// TestTagCacheOwnWrites: tags the deployer changes are seen by the next deploy at once, without
// waiting for the cache to expire: a tag it added and then changed is removed when the
// annotation goes, and the deploy after that has nothing to change.
func TestTagCacheOwnWrites(t *testing.T) {
	f := newFixture(t)
	f.withFakeClock() // never advanced: nothing expires
	svc := webService("10.0.0.0/8")
	key := annotations.Key(annotations.AdditionalResourceTags)
	res := f.deploy(f.d, svc)
	lbARN := res.LoadBalancerARN
	arns := []string{lbARN}
	for _, arn := range res.TargetGroupARNs {
		arns = append(arns, arn)
	}
	for _, l := range f.listeners(lbARN) {
		arns = append(arns, aws.ToString(l.ListenerArn))
	}

	for _, step := range []struct{ annotation, team string }{{"team=a", "a"}, {"team=b", "b"}, {"", ""}} {
		if step.annotation == "" {
			delete(svc.Annotations, key)
		} else {
			svc.Annotations[key] = step.annotation
		}
		f.deploy(f.d, svc)
		for _, arn := range arns {
			team, ok := f.elbTags(arn)["team"]
			if team != step.team || ok != (step.team != "") {
				t.Errorf("annotation %q: %s has team=%q (set: %v)", step.annotation, arn, team, ok)
			}
		}
	}

	before := f.env.Calls(t)
	f.deploy(f.d, svc)
	calls := f.env.Calls(t).Since(before)
	if m := calls.Mutating(); m.Total() != 0 {
		t.Errorf("deploy after the tag changes made mutating calls: %s", m)
	}
	if n := calls.Count("DescribeTags"); n != 0 {
		t.Errorf("deploy after the tag changes made %d DescribeTags calls, want 0", n)
	}
}

// TestTagCacheExpiry: a tag someone else adds is not seen while the cached entry is fresh (as
// with the AWS controller), and is seen — and removed, as the deployer owns the resource's tags —
// once the entry has expired after 20 minutes.
func TestTagCacheExpiry(t *testing.T) {
	f := newFixture(t)
	clk := f.withFakeClock()
	svc := webService("10.0.0.0/8")
	lbARN := f.deploy(f.d, svc).LoadBalancerARN
	want := f.elbTags(lbARN)
	if _, err := f.env.ELB.AddTags(f.ctx, &elbv2.AddTagsInput{ResourceArns: []string{lbARN},
		Tags: []elbtypes.Tag{{Key: aws.String("owner"), Value: aws.String("someone-else")}}}); err != nil {
		t.Fatal(err)
	}

	deploy := func(t *testing.T) (describeTags, removeTags int) {
		t.Helper()
		before := f.env.Calls(t)
		f.deploy(f.d, svc)
		calls := f.env.Calls(t).Since(before)
		return calls.Count("DescribeTags"), calls.Count("RemoveTags")
	}

	clk.Step(20*time.Minute - time.Second)
	if d, r := deploy(t); d != 0 || r != 0 {
		t.Errorf("before the TTL: %d DescribeTags and %d RemoveTags calls, want none", d, r)
	}
	if got := f.elbTags(lbARN)["owner"]; got != "someone-else" {
		t.Errorf("before the TTL the outside tag is gone: owner=%q", got)
	}

	clk.Step(time.Second)
	if d, r := deploy(t); d == 0 || r != 1 {
		t.Errorf("after the TTL: %d DescribeTags and %d RemoveTags calls, want some and 1", d, r)
	}
	if got := f.elbTags(lbARN); !maps.Equal(got, want) {
		t.Errorf("after the TTL the load balancer's tags are %v, want %v", got, want)
	}
}

// TestTagCacheDeletedResources: what is deleted — by the deployer (a port, the whole stack) or
// out of band (the load balancer) — is not found again through the cache: the next deploy
// recreates what the stack needs, and leaves nothing behind.
func TestTagCacheDeletedResources(t *testing.T) {
	f := newFixture(t)
	f.withFakeClock() // never advanced: nothing expires
	svc := webService("10.0.0.0/8")
	first := f.deploy(f.d, svc)

	// A port goes: its target group and listener are deleted.
	oneport := webService("10.0.0.0/8")
	oneport.Spec.Ports = oneport.Spec.Ports[:1]
	res := f.deploy(f.d, oneport)
	if n := len(f.targetGroups()); n != 1 {
		t.Errorf("%d target groups after a port went, want 1", n)
	}
	if n := len(f.listeners(res.LoadBalancerARN)); n != 1 {
		t.Errorf("%d listeners after a port went, want 1", n)
	}

	// The load balancer is deleted out of band: the next deploy makes a new one.
	if _, err := f.env.ELB.DeleteLoadBalancer(f.ctx, &elbv2.DeleteLoadBalancerInput{LoadBalancerArn: aws.String(first.LoadBalancerARN)}); err != nil {
		t.Fatal(err)
	}
	res = f.deploy(f.d, svc)
	if res.LoadBalancerARN == first.LoadBalancerARN {
		t.Fatal("deploy kept the deleted load balancer")
	}
	if lbs := f.loadBalancers(); len(lbs) != 1 || aws.ToString(lbs[0].LoadBalancerArn) != res.LoadBalancerARN {
		t.Fatalf("load balancers after the redeploy: %d, want only %s", len(lbs), res.LoadBalancerARN)
	}
	if n := len(f.listeners(res.LoadBalancerARN)); n != 2 {
		t.Errorf("%d listeners on the new load balancer, want 2", n)
	}

	// The deployer deletes the stack, then deploys it again: everything is made anew.
	if err := f.d.Delete(f.ctx, "shop/web"); err != nil {
		t.Fatal(err)
	}
	if left := f.leftovers(); len(left) != 0 {
		t.Fatalf("left after delete: %v", left)
	}
	before := f.env.Calls(t)
	again := f.deploy(f.d, svc)
	calls := f.env.Calls(t).Since(before)
	if calls.Count("CreateLoadBalancer") != 1 || calls.Count("CreateTargetGroup") != 2 || calls.Count("CreateListener") != 2 {
		t.Errorf("redeploy after delete: %s", calls.Mutating())
	}
	if got := f.elbTags(again.LoadBalancerARN)[model.TagStack]; got != "shop/web" {
		t.Errorf("new load balancer's stack tag %q", got)
	}
}
