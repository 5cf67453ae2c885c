package deploy_test

import (
	"context"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"

	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	"github.com/aws/smithy-go/middleware"

	"github.com/moatlb/moat/internal/controller/deploy"
	"github.com/moatlb/moat/internal/controller/model"
)

// scanRecorder records the calls that read every load balancer or target group of the region:
// DescribeLoadBalancers and DescribeTargetGroups without ARNs or names, and DescribeTags of load
// balancers or target groups (GetResources gives their tags).
type scanRecorder struct {
	mu    sync.Mutex
	scans []string
}

func (r *scanRecorder) add(stack *middleware.Stack) error {
	return stack.Initialize.Add(middleware.InitializeMiddlewareFunc("recordScans", func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
		scan := false
		switch p := in.Parameters.(type) {
		case *elbv2.DescribeLoadBalancersInput:
			scan = len(p.LoadBalancerArns) == 0 && len(p.Names) == 0
		case *elbv2.DescribeTargetGroupsInput:
			scan = len(p.TargetGroupArns) == 0 && len(p.Names) == 0 && p.LoadBalancerArn == nil
		case *elbv2.DescribeTagsInput:
			scan = slices.ContainsFunc(p.ResourceArns, func(arn string) bool {
				return strings.Contains(arn, ":loadbalancer/") || strings.Contains(arn, ":targetgroup/")
			})
		}
		if scan {
			r.mu.Lock()
			r.scans = append(r.scans, middleware.GetOperationName(ctx))
			r.mu.Unlock()
		}
		return next.HandleInitialize(ctx, in)
	}), middleware.After)
}

func (r *scanRecorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.scans
	r.scans = nil
	return out
}

// TestRGTFindsResourcesByTags: with the EnableRGTAPI gate, a deploy finds its stack's load
// balancer and target groups by GetResources and describes only those — never every load
// balancer or target group of the region, nor DescribeTags of them even in a fresh process —
// and finds exactly what the scanning deployer finds, and a delete leaves nothing behind. (A
// fresh Deployer rewrites the nodes' rules for the bindings it has seen, so a fresh one is
// checked for mutating calls on its second resync, as in TestTagCacheResync.)
func TestRGTFindsResourcesByTags(t *testing.T) {
	f := newFixture(t, func(c *model.Config) { c.FeatureGates = model.FeatureGates{model.GateEnableRGTAPI: true} })
	rec := &scanRecorder{}
	cfg := f.env.Config.Copy()
	cfg.APIOptions = append(slices.Clone(cfg.APIOptions), rec.add)
	f.d = f.deployer(cfg)

	svc := webService("10.0.0.0/8")
	first := f.deploy(f.d, svc)
	f.deploy(f.d, otherService())
	if scans := rec.take(); len(scans) != 0 {
		t.Errorf("deploys with EnableRGTAPI described the whole region: %v", scans)
	}

	resync := func(t *testing.T, d *deploy.Deployer, wantScans, checkMutating bool) deploy.Result {
		t.Helper()
		before := f.env.Calls(t)
		res := f.deploy(d, svc)
		calls := f.env.Calls(t).Since(before)
		if m := calls.Mutating(); checkMutating && m.Total() != 0 {
			t.Errorf("resync made mutating calls: %s", m)
		}
		if scans := rec.take(); (len(scans) != 0) != wantScans {
			t.Errorf("resync's region-wide reads: %v (want some: %v; all calls: %s)", scans, wantScans, calls)
		}
		if n := calls.Count("GetResources"); (n != 0) == wantScans {
			t.Errorf("%d GetResources calls (all calls: %s)", n, calls)
		}
		return res
	}
	sameResult := func(t *testing.T, got deploy.Result) {
		t.Helper()
		if got.LoadBalancerARN != first.LoadBalancerARN || got.DNSName != first.DNSName ||
			!maps.Equal(got.TargetGroupARNs, first.TargetGroupARNs) {
			t.Errorf("found %+v, want %+v", got, first)
		}
	}
	t.Run("same process", func(t *testing.T) { sameResult(t, resync(t, f.d, false, true)) })
	t.Run("restarted controller", func(t *testing.T) {
		restarted := f.deployer(cfg)
		sameResult(t, resync(t, restarted, false, false))
		sameResult(t, resync(t, restarted, false, true))
	})
	t.Run("gate off finds the same", func(t *testing.T) {
		gateOff := f.cfg
		gateOff.FeatureGates = nil
		scanning, err := deploy.NewFromConfig(cfg, deploy.Options{Model: gateOff})
		if err != nil {
			t.Fatal(err)
		}
		sameResult(t, resync(t, scanning, true, false))
		sameResult(t, resync(t, scanning, true, true))
	})
	t.Run("delete", func(t *testing.T) {
		for _, s := range []string{svc.Namespace + "/" + svc.Name, otherService().Namespace + "/" + otherService().Name} {
			if err := f.d.Delete(f.ctx, s); err != nil {
				t.Fatal(err)
			}
		}
		if left := f.leftovers(); len(left) != 0 {
			t.Errorf("left after deleting with EnableRGTAPI: %v", left)
		}
		if scans := rec.take(); len(scans) != 0 {
			t.Errorf("deletes with EnableRGTAPI described the whole region: %v", scans)
		}
	})
}

// TestRGTNeedsAClient: the gate without a Resource Groups Tagging API client is a configuration
// error, not a silent scan.
func TestRGTNeedsAClient(t *testing.T) {
	cfg := model.DefaultConfig(cluster, "vpc-1")
	cfg.FeatureGates = model.FeatureGates{model.GateEnableRGTAPI: true}
	if _, err := deploy.New(nil, nil, deploy.Options{Model: cfg}); err == nil {
		t.Fatal("New accepted EnableRGTAPI without a tagging client")
	}
}
