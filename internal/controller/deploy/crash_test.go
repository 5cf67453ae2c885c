package deploy_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	corev1 "k8s.io/api/core/v1"

	"github.com/moatlb/moat/internal/controller/model"
)

// TestCrashSafety kills the controller at every mutating call of a create and of a delete —
// before the call reaches the server, and after the server made the change but before the
// controller learned of it — then runs a fresh controller to completion: it must converge on
// exactly one of everything, and a delete must leave nothing behind.
func TestCrashSafety(t *testing.T) {
	for _, after := range []bool{true, false} {
		when := "before"
		if after {
			when = "after"
		}
		t.Run("create/"+when, func(t *testing.T) {
			for n := 1; ; n++ {
				done := crashCreate(t, n, after)
				if done {
					if n < 10 {
						t.Fatalf("a create made only %d mutating calls", n-1)
					}
					t.Logf("crashed at each of %d mutating calls", n-1)
					return
				}
			}
		})
		t.Run("delete/"+when, func(t *testing.T) {
			for n := 1; ; n++ {
				done := crashDelete(t, n, after)
				if done {
					if n < 5 {
						t.Fatalf("a delete made only %d mutating calls", n-1)
					}
					t.Logf("crashed at each of %d mutating calls", n-1)
					return
				}
			}
		})
	}
}

// crashCreate creates two Services with a controller that dies at the n-th mutating call, then
// finishes with a new controller and checks the result. It reports whether the first controller
// finished without reaching call n.
func crashCreate(t *testing.T, n int, after bool) (finished bool) {
	f := newFixture(t)
	c := &crasher{at: n, after: after}
	crashing := f.deployer(f.crashingConfig(c))
	var err error
	for _, svc := range []*corev1.Service{webService("10.0.0.0/8", "203.0.113.0/24"), otherService()} {
		var stack model.Stack
		if stack, err = crashing.Build(f.ctx, svc); err != nil {
			break
		}
		if _, err = crashing.Deploy(f.ctx, stack, f.nodeTargets(stack)); err != nil {
			break
		}
	}
	if err == nil {
		return true
	}
	if !errors.Is(err, errCrash) {
		t.Fatalf("crash at call %d: unexpected error %v", n, err)
	}
	// A new controller converges.
	d := f.deployer(f.env.Config)
	web := f.deploy(d, webService("10.0.0.0/8", "203.0.113.0/24"))
	f.deploy(d, otherService())
	f.checkConverged(fmt.Sprintf("create crashed at call %d (after=%v)", n, after), web.SecurityGroups[1])
	// And a resync after that changes nothing.
	before := f.env.Calls(t)
	f.deploy(d, webService("10.0.0.0/8", "203.0.113.0/24"))
	if m := f.env.Calls(t).Since(before).Mutating(); m.Total() != 0 {
		t.Fatalf("create crashed at call %d: resync after recovery made mutating calls: %s", n, m)
	}
	return false
}

// checkConverged checks that both Services have exactly one of everything.
func (f *fixture) checkConverged(what, backendID string) {
	f.t.Helper()
	if n := len(f.loadBalancers()); n != 2 {
		f.t.Fatalf("%s: %d load balancers, want 2", what, n)
	}
	if n := len(f.targetGroups()); n != 3 {
		f.t.Fatalf("%s: %d target groups, want 3", what, n)
	}
	names := map[string]int{}
	for _, g := range f.groups() {
		names[aws.ToString(g.GroupName)]++
	}
	for name, count := range names {
		if count != 1 {
			f.t.Fatalf("%s: %d groups named %s", what, count, name)
		}
	}
	if n := len(f.groups(tagOrName("tag:elbv2.k8s.aws/cluster", cluster))); n != 3 {
		f.t.Fatalf("%s: %d cluster groups, want 3 (two managed, one backend)", what, n)
	}
	for _, lb := range f.loadBalancers() {
		if n := len(f.listeners(aws.ToString(lb.LoadBalancerArn))); n == 0 {
			f.t.Fatalf("%s: load balancer %s has no listener", what, aws.ToString(lb.LoadBalancerName))
		}
	}
	wantStrings(f.t, what+": node rules", inbound(f.nodeGroup()), []string{"tcp 30080-31000 " + backendID + " [" + shared + "]"})
}

// crashDelete deploys two Services, deletes both with a controller that dies at the n-th
// mutating call, then deletes again with a new controller: nothing may be left.
func crashDelete(t *testing.T, n int, after bool) (finished bool) {
	f := newFixture(t)
	f.deploy(f.d, webService("10.0.0.0/8", "203.0.113.0/24"))
	f.deploy(f.d, otherService())
	c := &crasher{at: n, after: after}
	crashing := f.deployer(f.crashingConfig(c))
	var err error
	for _, id := range []string{"shop/web", "shop/api"} {
		if err = crashing.Delete(f.ctx, id); err != nil {
			break
		}
	}
	if err == nil {
		if left := f.leftovers(); len(left) != 0 {
			t.Fatalf("delete without crash left %v", left)
		}
		return true
	}
	if !errors.Is(err, errCrash) {
		t.Fatalf("crash at call %d: unexpected error %v", n, err)
	}
	d := f.deployer(f.env.Config)
	for _, id := range []string{"shop/web", "shop/api"} {
		if err := d.Delete(f.ctx, id); err != nil {
			t.Fatalf("delete crashed at call %d (after=%v), then %s: %v", n, after, id, err)
		}
	}
	if left := f.leftovers(); len(left) != 0 {
		t.Fatalf("delete crashed at call %d (after=%v): left %v", n, after, left)
	}
	return false
}
