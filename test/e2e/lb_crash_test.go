package e2e

import (
	"context"
	"fmt"
	"github.com/miekg/dns"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"
)

// TestLBSurvivesKill9 kills moat lb with SIGKILL in the middle of a burst of mutations, restarts
// it on the same data dir, and checks that every acknowledged change is there and that no request
// is visible in part.
func TestLBSurvivesKill9(t *testing.T) {
	dataDir := t.TempDir()
	rounds := 3
	if testing.Short() {
		rounds = 1
	}
	acked := map[string]int{} // group ID -> rules acknowledged
	var ackedLBs, ackedTGs, ackedListeners []string
	for round := range rounds {
		p := startLB(t, dataDir, "--quota-load-balancers", "1000")
		ec2c, elbc := p.clients(t)
		vpc, subnetIDs := vpcSubnets(t, ec2c)
		var mu sync.Mutex
		acks := make(chan struct{}, 1024)
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		// One worker builds load balancer stacks, step by step, while the others change groups.
		wg.Add(1)
		go func() {
			defer wg.Done()
			ack := func(list *[]string, id string) {
				mu.Lock()
				*list = append(*list, id)
				mu.Unlock()
				select {
				case acks <- struct{}{}:
				default:
				}
			}
			for i := 0; ctx.Err() == nil; i++ {
				name := fmt.Sprintf("r%d-%d", round, i)
				tg, err := elbc.CreateTargetGroup(ctx, &elbv2.CreateTargetGroupInput{Name: aws.String(name), Protocol: elbtypes.ProtocolEnumTcp, Port: aws.Int32(8080), VpcId: vpc, TargetType: elbtypes.TargetTypeEnumIp})
				if err != nil {
					return
				}
				ack(&ackedTGs, *tg.TargetGroups[0].TargetGroupArn)
				lb, err := elbc.CreateLoadBalancer(ctx, &elbv2.CreateLoadBalancerInput{Name: aws.String(name), Type: elbtypes.LoadBalancerTypeEnumNetwork, Scheme: elbtypes.LoadBalancerSchemeEnumInternal, Subnets: subnetIDs})
				if err != nil {
					return
				}
				ack(&ackedLBs, *lb.LoadBalancers[0].LoadBalancerArn)
				l, err := elbc.CreateListener(ctx, &elbv2.CreateListenerInput{LoadBalancerArn: lb.LoadBalancers[0].LoadBalancerArn, Protocol: elbtypes.ProtocolEnumTcp, Port: aws.Int32(80),
					DefaultActions: []elbtypes.Action{{Type: elbtypes.ActionTypeEnumForward, TargetGroupArn: tg.TargetGroups[0].TargetGroupArn}}})
				if err != nil {
					return
				}
				ack(&ackedListeners, *l.Listeners[0].ListenerArn)
			}
		}()
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ctx.Err() == nil; i++ {
					name := fmt.Sprintf("r%d-w%d-%d", round, w, i)
					out, err := ec2c.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String(name), Description: aws.String("crash test")})
					if err != nil {
						return // the kill, or a failure the deadline below reports
					}
					mu.Lock()
					acked[*out.GroupId] = 0
					mu.Unlock()
					select {
					case acks <- struct{}{}:
					default: // counting is over
					}
					perm := types.IpPermission{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(80), ToPort: aws.Int32(80), IpRanges: []types.IpRange{
						{CidrIp: aws.String("10.0.0.0/8")}, {CidrIp: aws.String("172.16.0.0/12")}, {CidrIp: aws.String("192.168.0.0/16")},
					}}
					if _, err := ec2c.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: out.GroupId, IpPermissions: []types.IpPermission{perm}}); err != nil {
						return
					}
					mu.Lock()
					acked[*out.GroupId] = 3
					mu.Unlock()
					select {
					case acks <- struct{}{}:
					default: // counting is over
					}
				}
			}()
		}
		// Kill after a random number of acknowledged mutations, while the workers keep going.
		target := 20 + rand.IntN(100)
		deadline := time.After(60 * time.Second)
		for n := 0; n < target; n++ {
			select {
			case <-acks:
			case <-deadline:
				t.Fatalf("only %d of %d mutations acknowledged in 60s; moat lb said:\n%s", n, target, p.stderr)
			}
		}
		p.kill()
		cancel()
		wg.Wait()
	}

	p := startLB(t, dataDir)
	ec2c, elbc := p.clients(t)
	checkStacks(t, p, elbc, ackedLBs, ackedTGs, ackedListeners)
	out, err := ec2c.DescribeSecurityGroups(context.Background(), &ec2.DescribeSecurityGroupsInput{Filters: []types.Filter{{Name: aws.String("description"), Values: []string{"crash test"}}}})
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]types.SecurityGroup{}
	for _, g := range out.SecurityGroups {
		found[*g.GroupId] = g
	}
	for id, rules := range acked {
		g, ok := found[id]
		if !ok {
			t.Errorf("acknowledged group %s lost", id)
			continue
		}
		if n := countRules(g.IpPermissions); n < rules {
			t.Errorf("group %s: %d rules, %d acknowledged", id, n, rules)
		}
	}
	for id, g := range found {
		if n := countRules(g.IpPermissions); n != 0 && n != 3 {
			t.Errorf("group %s holds %d rules: an authorize of 3 is visible in part", id, n)
		}
		if len(g.IpPermissionsEgress) != 1 {
			t.Errorf("group %s has %d egress permissions, want its default one", id, len(g.IpPermissionsEgress))
		}
	}
	if len(acked) == 0 {
		t.Fatal("the burst acknowledged nothing before the kill")
	}
	t.Logf("%d acknowledged groups survived %d kills; %d groups present", len(acked), rounds, len(found))
}

// checkStacks verifies every acknowledged load balancer, target group and listener exists, and
// that what exists is whole: each load balancer has its two zones, each with its address (as its
// zonal DNS name answers at p), and each listener points at an existing load balancer and target
// group.
func checkStacks(t *testing.T, p *lbProcess, elbc *elbv2.Client, lbs, tgs, listeners []string) {
	t.Helper()
	ctx := context.Background()
	lbSet := map[string]bool{}
	pages := elbv2.NewDescribeLoadBalancersPaginator(elbc, &elbv2.DescribeLoadBalancersInput{})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, lb := range page.LoadBalancers {
			lbSet[*lb.LoadBalancerArn] = true
			if len(lb.AvailabilityZones) != 2 {
				t.Errorf("load balancer %s is not whole: %+v", *lb.LoadBalancerArn, lb.AvailabilityZones)
			}
			for _, z := range lb.AvailabilityZones {
				p.zoneAddress(t, lb, aws.ToString(z.ZoneName), dns.TypeA)
			}
			ls, err := elbc.DescribeListeners(ctx, &elbv2.DescribeListenersInput{LoadBalancerArn: lb.LoadBalancerArn})
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range ls.Listeners {
				if _, err := elbc.DescribeTargetGroups(ctx, &elbv2.DescribeTargetGroupsInput{TargetGroupArns: []string{*l.DefaultActions[0].TargetGroupArn}}); err != nil {
					t.Errorf("listener %s forwards to a missing target group: %v", *l.ListenerArn, err)
				}
			}
		}
	}
	for _, arn := range lbs {
		if !lbSet[arn] {
			t.Errorf("acknowledged load balancer %s lost", arn)
		}
	}
	for _, arn := range tgs {
		if _, err := elbc.DescribeTargetGroups(ctx, &elbv2.DescribeTargetGroupsInput{TargetGroupArns: []string{arn}}); err != nil {
			t.Errorf("acknowledged target group %s lost: %v", arn, err)
		}
	}
	for _, arn := range listeners {
		if _, err := elbc.DescribeListeners(ctx, &elbv2.DescribeListenersInput{ListenerArns: []string{arn}}); err != nil {
			t.Errorf("acknowledged listener %s lost: %v", arn, err)
		}
	}
	t.Logf("%d load balancers, %d target groups, %d listeners acknowledged; %d load balancers present", len(lbs), len(tgs), len(listeners), len(lbSet))
}

func countRules(perms []types.IpPermission) int {
	n := 0
	for _, p := range perms {
		n += len(p.IpRanges) + len(p.Ipv6Ranges) + len(p.UserIdGroupPairs) + len(p.PrefixListIds)
	}
	return n
}
