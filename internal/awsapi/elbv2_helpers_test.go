package awsapi_test

import (
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	"github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"

	"github.com/moatlb/moat/internal/cloud"
)

// testClock is a clock the test moves by hand, for deregistration delays.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func newTestClock() *testClock {
	return &testClock{now: time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)}
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func withClock(c *testClock) func(*cloud.Config) {
	return func(cfg *cloud.Config) { cfg.Now = c.Now }
}

// withQuotas starts from AWS's default quotas and lets the test lower some.
func withQuotas(set func(*cloud.Quotas)) func(*cloud.Config) {
	return func(cfg *cloud.Config) {
		cfg.Quotas = cloud.DefaultQuotas()
		set(&cfg.Quotas)
	}
}

// subnet is a subnet of the default inventory.
type subnet struct {
	ID, Zone, CIDR string
}

// subnets returns the default inventory's subnets in zone order (a, then b).
func (e *env) subnets(t *testing.T) []subnet {
	t.Helper()
	out := must[*ec2.DescribeSubnetsOutput](t)(e.EC2.DescribeSubnets(e.ctx, &ec2.DescribeSubnetsInput{}))
	var sns []subnet
	for _, s := range out.Subnets {
		sns = append(sns, subnet{aws.ToString(s.SubnetId), aws.ToString(s.AvailabilityZone), aws.ToString(s.CidrBlock)})
	}
	slices.SortFunc(sns, func(a, b subnet) int { return strings.Compare(a.Zone, b.Zone) })
	if len(sns) != 2 {
		t.Fatalf("default inventory has %d subnets, want 2", len(sns))
	}
	return sns
}

func (e *env) subnetIDs(t *testing.T) []string {
	var ids []string
	for _, s := range e.subnets(t) {
		ids = append(ids, s.ID)
	}
	return ids
}

func (e *env) vpcID(t *testing.T) string {
	t.Helper()
	out := must[*ec2.DescribeVpcsOutput](t)(e.EC2.DescribeVpcs(e.ctx, &ec2.DescribeVpcsInput{}))
	return aws.ToString(out.Vpcs[0].VpcId)
}

// createLB creates a network load balancer in both subnets, adjusted by edit.
func (e *env) createLB(t *testing.T, name string, edit ...func(*elbv2.CreateLoadBalancerInput)) types.LoadBalancer {
	t.Helper()
	in := &elbv2.CreateLoadBalancerInput{Name: aws.String(name), Type: types.LoadBalancerTypeEnumNetwork, Subnets: e.subnetIDs(t)}
	for _, f := range edit {
		f(in)
	}
	out, err := e.ELB.CreateLoadBalancer(e.ctx, in)
	if err != nil {
		t.Fatalf("create load balancer %s: %v", name, err)
	}
	if len(out.LoadBalancers) != 1 {
		t.Fatalf("create load balancer %s returned %d load balancers", name, len(out.LoadBalancers))
	}
	return out.LoadBalancers[0]
}

// createTG creates a TCP target group of instances on port 80, adjusted by edit.
func (e *env) createTG(t *testing.T, name string, edit ...func(*elbv2.CreateTargetGroupInput)) types.TargetGroup {
	t.Helper()
	in := &elbv2.CreateTargetGroupInput{Name: aws.String(name), Protocol: types.ProtocolEnumTcp, Port: aws.Int32(80), VpcId: aws.String(e.vpcID(t))}
	for _, f := range edit {
		f(in)
	}
	out, err := e.ELB.CreateTargetGroup(e.ctx, in)
	if err != nil {
		t.Fatalf("create target group %s: %v", name, err)
	}
	return out.TargetGroups[0]
}

func forward(tgARN string) []types.Action {
	return []types.Action{{Type: types.ActionTypeEnumForward, TargetGroupArn: aws.String(tgARN)}}
}

// createListener adds a listener forwarding to the target group.
func (e *env) createListener(t *testing.T, lbARN, tgARN string, port int32, protocol types.ProtocolEnum) types.Listener {
	t.Helper()
	out, err := e.ELB.CreateListener(e.ctx, &elbv2.CreateListenerInput{
		LoadBalancerArn: aws.String(lbARN), Protocol: protocol, Port: aws.Int32(port), DefaultActions: forward(tgARN),
	})
	if err != nil {
		t.Fatalf("create listener %s:%d: %v", protocol, port, err)
	}
	return out.Listeners[0]
}

func (e *env) describeLB(t *testing.T, arn string) types.LoadBalancer {
	t.Helper()
	out := must[*elbv2.DescribeLoadBalancersOutput](t)(e.ELB.DescribeLoadBalancers(e.ctx, &elbv2.DescribeLoadBalancersInput{LoadBalancerArns: []string{arn}}))
	return out.LoadBalancers[0]
}

func (e *env) describeTG(t *testing.T, arn string) types.TargetGroup {
	t.Helper()
	out := must[*elbv2.DescribeTargetGroupsOutput](t)(e.ELB.DescribeTargetGroups(e.ctx, &elbv2.DescribeTargetGroupsInput{TargetGroupArns: []string{arn}}))
	return out.TargetGroups[0]
}

// lbNames lists the names of all load balancers.
func (e *env) lbNames(t *testing.T) []string {
	t.Helper()
	var names []string
	p := elbv2.NewDescribeLoadBalancersPaginator(e.ELB, &elbv2.DescribeLoadBalancersInput{})
	for p.HasMorePages() {
		out := must[*elbv2.DescribeLoadBalancersOutput](t)(p.NextPage(e.ctx))
		for _, lb := range out.LoadBalancers {
			names = append(names, aws.ToString(lb.LoadBalancerName))
		}
	}
	return names
}

func (e *env) tgNames(t *testing.T) []string {
	t.Helper()
	var names []string
	p := elbv2.NewDescribeTargetGroupsPaginator(e.ELB, &elbv2.DescribeTargetGroupsInput{})
	for p.HasMorePages() {
		out := must[*elbv2.DescribeTargetGroupsOutput](t)(p.NextPage(e.ctx))
		for _, tg := range out.TargetGroups {
			names = append(names, aws.ToString(tg.TargetGroupName))
		}
	}
	return names
}

// attrs turns an attribute list into a map.
func attrs[T types.LoadBalancerAttribute | types.TargetGroupAttribute | types.ListenerAttribute](list []T) map[string]string {
	out := map[string]string{}
	for _, a := range list {
		switch a := any(a).(type) {
		case types.LoadBalancerAttribute:
			out[aws.ToString(a.Key)] = aws.ToString(a.Value)
		case types.TargetGroupAttribute:
			out[aws.ToString(a.Key)] = aws.ToString(a.Value)
		case types.ListenerAttribute:
			out[aws.ToString(a.Key)] = aws.ToString(a.Value)
		}
	}
	return out
}

// wantMessage fails unless err's message contains part.
func wantMessage(t *testing.T, err error, part string) {
	t.Helper()
	if err == nil || !strings.Contains(err.Error(), part) {
		t.Fatalf("want an error containing %q, got %v", part, err)
	}
}
