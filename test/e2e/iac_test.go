package e2e

import (
	"context"
	"errors"
	"net"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
	"github.com/google/go-cmp/cmp"
	"github.com/miekg/dns"
)

// TestInfrastructureAsCode does through aws-sdk-go-v2 what a Terraform configuration does: check
// the caller, build a VPC with two subnets, a group whose rule description is then updated, an
// internal NLB in the new subnets with a target group, a target and a listener; it sends traffic
// through the load balancer's DNS name, and tears everything down in reverse order, meeting AWS's
// DependencyViolation where something is still in use.
func TestInfrastructureAsCode(t *testing.T) {
	p := startLB(t, t.TempDir())
	cfg := p.config(t)
	ec2c, elbc := ec2.NewFromConfig(cfg), elbv2.NewFromConfig(cfg)
	ctx := context.Background()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	inUse := func(err error, what string) {
		t.Helper()
		var apiErr smithy.APIError
		if !errors.As(err, &apiErr) || apiErr.ErrorCode() != "DependencyViolation" {
			t.Errorf("deleting %s while in use: %v, want DependencyViolation", what, err)
		}
	}

	id, err := sts.NewFromConfig(cfg).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	must(err)
	if aws.ToString(id.Account) != "000000000000" || !strings.HasSuffix(aws.ToString(id.Arn), ":user/default") {
		t.Fatalf("caller identity %+v", id)
	}

	vpc, err := ec2c.CreateVpc(ctx, &ec2.CreateVpcInput{CidrBlock: aws.String("127.70.0.0/16")})
	must(err)
	vpcID := vpc.Vpc.VpcId
	var subnetIDs []string
	for i, zone := range []string{"us-east-1a", "us-east-1b"} {
		sn, err := ec2c.CreateSubnet(ctx, &ec2.CreateSubnetInput{VpcId: vpcID, CidrBlock: aws.String("127.70." + strconv.Itoa(i+1) + ".0/24"), AvailabilityZone: aws.String(zone)})
		must(err)
		subnetIDs = append(subnetIDs, aws.ToString(sn.Subnet.SubnetId))
	}

	listenPort := freePort(t)
	sg, err := ec2c.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("tf-front"), Description: aws.String("front"), VpcId: vpcID})
	must(err)
	office := ec2types.IpPermission{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(int32(listenPort)), ToPort: aws.Int32(int32(listenPort)),
		IpRanges: []ec2types.IpRange{{CidrIp: aws.String("127.0.0.2/32"), Description: aws.String("office")}}}
	_, err = ec2c.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: sg.GroupId, IpPermissions: []ec2types.IpPermission{office}})
	must(err)
	office.IpRanges[0].Description = aws.String("office, moved")
	_, err = ec2c.UpdateSecurityGroupRuleDescriptionsIngress(ctx, &ec2.UpdateSecurityGroupRuleDescriptionsIngressInput{GroupId: sg.GroupId, IpPermissions: []ec2types.IpPermission{office}})
	must(err)
	groups, err := ec2c.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: []string{aws.ToString(sg.GroupId)}})
	must(err)
	if got := aws.ToString(groups.SecurityGroups[0].IpPermissions[0].IpRanges[0].Description); got != "office, moved" {
		t.Errorf("rule description %q after the update", got)
	}

	lbs, err := elbc.CreateLoadBalancer(ctx, &elbv2.CreateLoadBalancerInput{Name: aws.String("tf-nlb"), Type: elbtypes.LoadBalancerTypeEnumNetwork,
		Scheme: elbtypes.LoadBalancerSchemeEnumInternal, Subnets: subnetIDs, SecurityGroups: []string{aws.ToString(sg.GroupId)}})
	must(err)
	lb := lbs.LoadBalancers[0]
	be := startBackend(t, "127.70.1.50:0")
	tgs, err := elbc.CreateTargetGroup(ctx, &elbv2.CreateTargetGroupInput{Name: aws.String("tf-tg"), Protocol: elbtypes.ProtocolEnumTcp,
		Port: aws.Int32(int32(be.port())), VpcId: vpcID, TargetType: elbtypes.TargetTypeEnumIp})
	must(err)
	tg := tgs.TargetGroups[0]
	_, err = elbc.RegisterTargets(ctx, &elbv2.RegisterTargetsInput{TargetGroupArn: tg.TargetGroupArn, Targets: []elbtypes.TargetDescription{{Id: aws.String("127.70.1.50")}}})
	must(err)
	listeners, err := elbc.CreateListener(ctx, &elbv2.CreateListenerInput{LoadBalancerArn: lb.LoadBalancerArn, Protocol: elbtypes.ProtocolEnumTcp,
		Port: aws.Int32(int32(listenPort)), DefaultActions: []elbtypes.Action{{Type: elbtypes.ActionTypeEnumForward, TargetGroupArn: tg.TargetGroupArn}}})
	must(err)

	// The name resolves to the load balancer's addresses in the new subnets; zone a's, where the
	// target is, carries the allowed client's bytes, and not the denied client's.
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(aws.ToString(lb.DNSName)), dns.TypeA)
	r, err := dns.Exchange(q, p.DNS)
	must(err)
	var zoneA string
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok && strings.HasPrefix(a.A.String(), "127.70.1.") {
			zoneA = a.A.String()
		}
	}
	if zoneA == "" {
		t.Fatalf("%s resolved to %v, with no address in the new subnet of zone a", aws.ToString(lb.DNSName), r.Answer)
	}
	front := net.JoinHostPort(zoneA, strconv.Itoa(listenPort))
	waitServing(t, "127.0.0.2", front)
	conn, greeting, err := dialFrom("127.0.0.2", front, 2*time.Second)
	must(err)
	conn.Close()
	if !strings.HasPrefix(greeting, "hello from 127.70.1.50") {
		t.Errorf("greeting %q", greeting)
	}
	if c, _, err := dialFrom("127.0.0.3", front, 500*time.Millisecond); err == nil {
		c.Close()
		t.Error("a client that no rule admits got through")
	}

	// Reverse order; what is still in use refuses to go.
	_, err = ec2c.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupId: sg.GroupId})
	inUse(err, "the load balancer's group")
	_, err = ec2c.DeleteSubnet(ctx, &ec2.DeleteSubnetInput{SubnetId: aws.String(subnetIDs[0])})
	inUse(err, "the load balancer's subnet")
	_, err = ec2c.DeleteVpc(ctx, &ec2.DeleteVpcInput{VpcId: vpcID})
	inUse(err, "the VPC")
	_, err = elbc.DeleteListener(ctx, &elbv2.DeleteListenerInput{ListenerArn: listeners.Listeners[0].ListenerArn})
	must(err)
	_, err = elbc.DeleteTargetGroup(ctx, &elbv2.DeleteTargetGroupInput{TargetGroupArn: tg.TargetGroupArn})
	must(err)
	_, err = elbc.DeleteLoadBalancer(ctx, &elbv2.DeleteLoadBalancerInput{LoadBalancerArn: lb.LoadBalancerArn})
	must(err)
	_, err = ec2c.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupId: sg.GroupId})
	must(err)
	for _, id := range subnetIDs {
		_, err = ec2c.DeleteSubnet(ctx, &ec2.DeleteSubnetInput{SubnetId: aws.String(id)})
		must(err)
	}
	_, err = ec2c.DeleteVpc(ctx, &ec2.DeleteVpcInput{VpcId: vpcID})
	must(err)
	vpcs, err := ec2c.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{})
	must(err)
	if slices.ContainsFunc(vpcs.Vpcs, func(v ec2types.Vpc) bool { return aws.ToString(v.VpcId) == aws.ToString(vpcID) }) {
		t.Error("the VPC is still described after its deletion")
	}
}

// TestNoDriftAcrossRestart: what Terraform reads back right after creating load balancers, target
// groups, listeners and groups, it reads again, equal, after moat lb restarts on the same state;
// otherwise every plan would show changes.
func TestNoDriftAcrossRestart(t *testing.T) {
	dataDir := t.TempDir()
	p := startLB(t, dataDir)
	ec2c, elbc := p.clients(t)
	ctx := context.Background()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	sg, err := ec2c.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("drift"), Description: aws.String("drift")})
	must(err)
	_, err = ec2c.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: sg.GroupId, IpPermissions: []ec2types.IpPermission{{
		IpProtocol: aws.String("tcp"), FromPort: aws.Int32(80), ToPort: aws.Int32(80), IpRanges: []ec2types.IpRange{{CidrIp: aws.String("127.0.0.2/32"), Description: aws.String("office")}},
	}}})
	must(err)
	subnets, err := ec2c.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{})
	must(err)
	var subnetIDs []string
	for _, s := range subnets.Subnets {
		subnetIDs = append(subnetIDs, aws.ToString(s.SubnetId))
	}
	lbs, err := elbc.CreateLoadBalancer(ctx, &elbv2.CreateLoadBalancerInput{Name: aws.String("drift"), Type: elbtypes.LoadBalancerTypeEnumNetwork,
		Scheme: elbtypes.LoadBalancerSchemeEnumInternal, Subnets: subnetIDs, SecurityGroups: []string{aws.ToString(sg.GroupId)}})
	must(err)
	lbARN := lbs.LoadBalancers[0].LoadBalancerArn
	tgs, err := elbc.CreateTargetGroup(ctx, &elbv2.CreateTargetGroupInput{Name: aws.String("drift"), Protocol: elbtypes.ProtocolEnumTcp,
		Port: aws.Int32(8080), VpcId: subnets.Subnets[0].VpcId, TargetType: elbtypes.TargetTypeEnumIp})
	must(err)
	tgARN := tgs.TargetGroups[0].TargetGroupArn
	_, err = elbc.CreateListener(ctx, &elbv2.CreateListenerInput{LoadBalancerArn: lbARN, Protocol: elbtypes.ProtocolEnumTcp, Port: aws.Int32(int32(freePort(t))),
		DefaultActions: []elbtypes.Action{{Type: elbtypes.ActionTypeEnumForward, TargetGroupArn: tgARN}}})
	must(err)

	// What a plan reads, with the per-request metadata left out.
	read := func(ec2c *ec2.Client, elbc *elbv2.Client) []any {
		t.Helper()
		lb, err := elbc.DescribeLoadBalancers(ctx, &elbv2.DescribeLoadBalancersInput{LoadBalancerArns: []string{aws.ToString(lbARN)}})
		must(err)
		lbAttrs, err := elbc.DescribeLoadBalancerAttributes(ctx, &elbv2.DescribeLoadBalancerAttributesInput{LoadBalancerArn: lbARN})
		must(err)
		tg, err := elbc.DescribeTargetGroups(ctx, &elbv2.DescribeTargetGroupsInput{TargetGroupArns: []string{aws.ToString(tgARN)}})
		must(err)
		tgAttrs, err := elbc.DescribeTargetGroupAttributes(ctx, &elbv2.DescribeTargetGroupAttributesInput{TargetGroupArn: tgARN})
		must(err)
		ls, err := elbc.DescribeListeners(ctx, &elbv2.DescribeListenersInput{LoadBalancerArn: lbARN})
		must(err)
		lsAttrs, err := elbc.DescribeListenerAttributes(ctx, &elbv2.DescribeListenerAttributesInput{ListenerArn: ls.Listeners[0].ListenerArn})
		must(err)
		tags, err := elbc.DescribeTags(ctx, &elbv2.DescribeTagsInput{ResourceArns: []string{aws.ToString(lbARN), aws.ToString(tgARN), aws.ToString(ls.Listeners[0].ListenerArn)}})
		must(err)
		groups, err := ec2c.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: []string{aws.ToString(sg.GroupId)}})
		must(err)
		rules, err := ec2c.DescribeSecurityGroupRules(ctx, &ec2.DescribeSecurityGroupRulesInput{Filters: []ec2types.Filter{{Name: aws.String("group-id"), Values: []string{aws.ToString(sg.GroupId)}}}})
		must(err)
		return []any{lb.LoadBalancers, lbAttrs.Attributes, tg.TargetGroups, tgAttrs.Attributes, ls.Listeners, lsAttrs.Attributes, tags.TagDescriptions, groups.SecurityGroups, rules.SecurityGroupRules}
	}
	waitFor(t, 30*time.Second, "the load balancer to be active", func() bool {
		out, err := elbc.DescribeLoadBalancers(ctx, &elbv2.DescribeLoadBalancersInput{LoadBalancerArns: []string{aws.ToString(lbARN)}})
		return err == nil && out.LoadBalancers[0].State.Code == elbtypes.LoadBalancerStateEnumActive
	})
	before := read(ec2c, elbc)
	for _, z := range before[0].([]elbtypes.LoadBalancer)[0].AvailabilityZones {
		if len(z.LoadBalancerAddresses) != 0 {
			t.Errorf("a load balancer created without addresses describes %+v in %s, as AWS does not", z.LoadBalancerAddresses, aws.ToString(z.ZoneName))
		}
	}

	p.kill()
	p = startLB(t, dataDir)
	ec2c, elbc = p.clients(t)
	waitFor(t, 30*time.Second, "the load balancer to be active again", func() bool {
		out, err := elbc.DescribeLoadBalancers(ctx, &elbv2.DescribeLoadBalancersInput{LoadBalancerArns: []string{aws.ToString(lbARN)}})
		return err == nil && out.LoadBalancers[0].State.Code == elbtypes.LoadBalancerStateEnumActive
	})
	after := read(ec2c, elbc)
	names := []string{"load balancer", "its attributes", "target group", "its attributes", "listener", "its attributes", "tags", "group", "rules"}
	for i := range before {
		if diff := cmp.Diff(before[i], after[i], cmp.Exporter(func(reflect.Type) bool { return true })); diff != "" {
			t.Errorf("the %s read differently after a restart (-before +after):\n%s", names[i], diff)
		}
	}
}
