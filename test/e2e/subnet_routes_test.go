//go:build linux

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"
	"github.com/miekg/dns"
)

// TestAPIMadeSubnetsServe runs moat lb in a network namespace of its own, where it may route. A
// load balancer in a subnet made by CreateSubnet outside 127.0.0.0/8 gets addresses that serve
// (moat lb makes the block local), and the route goes with the subnet. In a block that the host
// already routes, moat lb takes nothing over: the load balancer is active_impaired, saying why.
func TestAPIMadeSubnetsServe(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("routes and network namespaces need root")
	}
	id := fmt.Sprintf("rt%d", os.Getpid()%10000)
	ns := "moat" + id
	addNetns(t, ns)
	nsAddr := apiLink(t, id, 7, ns)
	ip(t, "-n", ns, "route", "add", "10.77.1.0/25", "dev", "lo") // a network the host uses
	p := startLBIn(t, []string{"ip", "netns", "exec", ns}, nsAddr, t.TempDir(), "--instance-sg-mode=off")
	ec2c, elbc := p.clients(t)
	ctx := context.Background()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	state := func(arn *string) (elbtypes.LoadBalancerStateEnum, string) {
		out, err := elbc.DescribeLoadBalancers(ctx, &elbv2.DescribeLoadBalancersInput{LoadBalancerArns: []string{aws.ToString(arn)}})
		must(err)
		return out.LoadBalancers[0].State.Code, aws.ToString(out.LoadBalancers[0].State.Reason)
	}
	// stack makes a VPC and a subnet of block/24 in zone a, a load balancer there forwarding port
	// 8000 to target:8080, and returns it with its subnet.
	stack := func(block, target string) (elbtypes.LoadBalancer, *string) {
		t.Helper()
		vpc, err := ec2c.CreateVpc(ctx, &ec2.CreateVpcInput{CidrBlock: aws.String(block + ".0.0/16")})
		must(err)
		sn, err := ec2c.CreateSubnet(ctx, &ec2.CreateSubnetInput{VpcId: vpc.Vpc.VpcId, CidrBlock: aws.String(block + ".1.0/24"), AvailabilityZone: aws.String("us-east-1a")})
		must(err)
		lbs, err := elbc.CreateLoadBalancer(ctx, &elbv2.CreateLoadBalancerInput{Name: aws.String(strings.ReplaceAll(block, ".", "-")), Type: elbtypes.LoadBalancerTypeEnumNetwork,
			Scheme: elbtypes.LoadBalancerSchemeEnumInternal, Subnets: []string{aws.ToString(sn.Subnet.SubnetId)}})
		must(err)
		tgs, err := elbc.CreateTargetGroup(ctx, &elbv2.CreateTargetGroupInput{Name: aws.String(strings.ReplaceAll(block, ".", "-")), Protocol: elbtypes.ProtocolEnumTcp,
			Port: aws.Int32(8080), VpcId: vpc.Vpc.VpcId, TargetType: elbtypes.TargetTypeEnumIp})
		must(err)
		_, err = elbc.RegisterTargets(ctx, &elbv2.RegisterTargetsInput{TargetGroupArn: tgs.TargetGroups[0].TargetGroupArn, Targets: []elbtypes.TargetDescription{{Id: aws.String(target)}}})
		must(err)
		_, err = elbc.CreateListener(ctx, &elbv2.CreateListenerInput{LoadBalancerArn: lbs.LoadBalancers[0].LoadBalancerArn, Protocol: elbtypes.ProtocolEnumTcp, Port: aws.Int32(8000),
			DefaultActions: []elbtypes.Action{{Type: elbtypes.ActionTypeEnumForward, TargetGroupArn: tgs.TargetGroups[0].TargetGroupArn}}})
		must(err)
		return lbs.LoadBalancers[0], sn.Subnet.SubnetId
	}

	// Served: the block becomes local, so the target binds there too, and a client gets through.
	served, servedSubnet := stack("10.78", "10.78.1.50")
	waitFor(t, 10*time.Second, "the load balancer to be active", func() bool {
		s, _ := state(served.LoadBalancerArn)
		return s == elbtypes.LoadBalancerStateEnumActive
	})
	echo := exec.Command("ip", "netns", "exec", ns, echoBin, "10.78.1.50:8080")
	echo.SysProcAttr = dieWithTest()
	must(echo.Start())
	t.Cleanup(func() { _ = echo.Process.Kill(); _ = echo.Wait() })
	front := p.zoneAddress(t, served, "us-east-1a", dns.TypeA) + ":8000"
	waitFor(t, 10*time.Second, "a client to get through "+front, func() bool {
		out, err := exec.Command("ip", "netns", "exec", ns, echoBin, "dial", front).Output()
		return err == nil && strings.HasPrefix(string(out), "hello from 10.78.1.50:8080")
	})

	// Impaired: 10.77.1.0/25 is the host's already.
	impaired, _ := stack("10.77", "10.77.1.50")
	waitFor(t, 10*time.Second, "the load balancer to be impaired", func() bool {
		s, reason := state(impaired.LoadBalancerArn)
		return s == elbtypes.LoadBalancerStateEnumActiveImpaired && strings.Contains(reason, "10.77.1.0/25")
	})

	// The route goes with its subnet.
	_, err := elbc.DeleteLoadBalancer(ctx, &elbv2.DeleteLoadBalancerInput{LoadBalancerArn: served.LoadBalancerArn})
	must(err)
	_, err = ec2c.DeleteSubnet(ctx, &ec2.DeleteSubnetInput{SubnetId: servedSubnet})
	must(err)
	waitFor(t, 10*time.Second, "the deleted subnet's route to go", func() bool {
		out, err := exec.Command("ip", "-n", ns, "route", "show", "table", "local", "10.78.1.0/24").Output()
		return err == nil && strings.TrimSpace(string(out)) == ""
	})
}
