//go:build linux

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"
)

// The namespaces' addresses come from 198.18.0.0/15, the range reserved for benchmarking
// networks: they exist only inside the test's own namespaces.
const netnsInventory = `
vpcs:
  - {name: bench, cidr: 198.18.0.0/16, default: true}
subnets:
  - {name: a, vpc: bench, zone: a, cidr: 198.18.1.0/24, tags: {kubernetes.io/role/internal-elb: "1"}}
  - {name: b, vpc: bench, zone: b, cidr: 198.18.2.0/24, tags: {kubernetes.io/role/internal-elb: "1"}}
securityGroups:
  - {name: targets, vpc: bench, description: the target host}
instances:
  - {name: target, subnet: b, privateIp: 198.18.2.10, securityGroups: [targets]}
`

// TestAcrossNetworkNamespaces puts a client host, moat lb and a target host in three network
// namespaces joined by veth pairs, so addresses, zones and the listener's privileged port are
// real routing rather than loopback:
//
//	client (198.18.0.2, .3) ── veth ── lb (198.18.0.1; load balancer addresses 198.18.{1,2}.96/27 routed locally) ── veth ── target 198.18.2.10
//
// It checks the frontend group (one client admitted, the other timing out) and the backend group
// (the target's group must admit the load balancer's group, or the target is unreachable).
func TestAcrossNetworkNamespaces(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
	id := fmt.Sprint(os.Getpid() % 100000)
	client, lbns, target := "moatc"+id, "moatl"+id, "moatt"+id
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	for _, ns := range []string{client, lbns, target} {
		run("netns", "add", ns)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
		run("-n", ns, "link", "set", "lo", "up")
	}
	veth := func(a, nsA, addrA, b, nsB, addrB string) {
		run("link", "add", a, "type", "veth", "peer", "name", b)
		for _, end := range [][3]string{{a, nsA, addrA}, {b, nsB, addrB}} {
			if end[1] != "" {
				run("link", "set", end[0], "netns", end[1])
				run("-n", end[1], "addr", "add", end[2], "dev", end[0])
				run("-n", end[1], "link", "set", end[0], "up")
			} else {
				run("addr", "add", end[2], "dev", end[0])
				run("link", "set", end[0], "up")
				t.Cleanup(func() { _ = exec.Command("ip", "link", "del", end[0]).Run() })
			}
		}
	}
	veth("c"+id, client, "198.18.0.2/24", "lc"+id, lbns, "198.18.0.1/24")
	veth("t"+id, target, "198.18.2.10/24", "lt"+id, lbns, "198.18.2.1/24")
	veth("r"+id, "", "198.18.9.1/30", "lr"+id, lbns, "198.18.9.2/30") // the test's own path to the API
	run("-n", client, "addr", "add", "198.18.0.3/24", "dev", "c"+id)
	run("-n", client, "route", "add", "198.18.0.0/15", "via", "198.18.0.1")
	run("-n", target, "route", "add", "default", "via", "198.18.2.1")
	// The load balancer addresses moat allocates (from the 100th of each subnet) are routed to
	// the lb host, as a cloud routes an NLB's addresses to its nodes.
	run("-n", lbns, "route", "add", "local", "198.18.1.96/27", "dev", "lo")
	run("-n", lbns, "route", "add", "local", "198.18.2.96/27", "dev", "lo")

	backend := exec.Command("ip", "netns", "exec", target, echoBin, "198.18.2.10:8080")
	backend.SysProcAttr = dieWithTest()
	if err := backend.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = backend.Process.Kill(); _ = backend.Wait() })

	dir := t.TempDir()
	inventory := filepath.Join(dir, "inventory.yaml")
	if err := os.WriteFile(inventory, []byte(netnsInventory), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startLBIn(t, []string{"ip", "netns", "exec", lbns}, "198.18.9.2", filepath.Join(dir, "lb"), "--inventory", inventory)
	ec2c, elbc := p.clients(t)
	ctx := context.Background()

	vpc, subnetIDs := vpcSubnets(t, ec2c)
	insts, err := ec2c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{})
	if err != nil {
		t.Fatal(err)
	}
	instance := insts.Reservations[0].Instances[0]
	targetGroup := instance.SecurityGroups[0].GroupId

	front, err := ec2c.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("front"), Description: aws.String("clients"), VpcId: vpc})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ec2c.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: front.GroupId, IpPermissions: []ec2types.IpPermission{
		{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(80), ToPort: aws.Int32(80), IpRanges: []ec2types.IpRange{{CidrIp: aws.String("198.18.0.2/32")}}},
	}}); err != nil {
		t.Fatal(err)
	}
	lbOut, err := elbc.CreateLoadBalancer(ctx, &elbv2.CreateLoadBalancerInput{Name: aws.String("netns"), Type: elbtypes.LoadBalancerTypeEnumNetwork,
		Scheme: elbtypes.LoadBalancerSchemeEnumInternal, Subnets: subnetIDs, SecurityGroups: []string{*front.GroupId}})
	if err != nil {
		t.Fatal(err)
	}
	lb := lbOut.LoadBalancers[0]
	zoneB := ""
	for _, z := range lb.AvailabilityZones {
		if *z.ZoneName == "us-east-1b" {
			zoneB = *z.LoadBalancerAddresses[0].IpAddress
		}
	}
	if zoneB != "198.18.2.100" {
		t.Fatalf("zone b address %s, want 198.18.2.100 (the first the allocator hands out)", zoneB)
	}
	tg, err := elbc.CreateTargetGroup(ctx, &elbv2.CreateTargetGroupInput{Name: aws.String("netns"), Protocol: elbtypes.ProtocolEnumTcp, Port: aws.Int32(8080),
		VpcId: vpc, TargetType: elbtypes.TargetTypeEnumInstance, HealthCheckIntervalSeconds: aws.Int32(5), HealthyThresholdCount: aws.Int32(2)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := elbc.RegisterTargets(ctx, &elbv2.RegisterTargetsInput{TargetGroupArn: tg.TargetGroups[0].TargetGroupArn, Targets: []elbtypes.TargetDescription{{Id: instance.InstanceId}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := elbc.CreateListener(ctx, &elbv2.CreateListenerInput{LoadBalancerArn: lb.LoadBalancerArn, Protocol: elbtypes.ProtocolEnumTcp, Port: aws.Int32(80),
		DefaultActions: []elbtypes.Action{{Type: elbtypes.ActionTypeEnumForward, TargetGroupArn: tg.TargetGroups[0].TargetGroupArn}}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "load balancer active", func() bool {
		out, err := elbc.DescribeLoadBalancers(ctx, &elbv2.DescribeLoadBalancersInput{LoadBalancerArns: []string{*lb.LoadBalancerArn}})
		return err == nil && out.LoadBalancers[0].State.Code == elbtypes.LoadBalancerStateEnumActive
	})

	dialFromClient := func(source string) (string, error) {
		out, err := exec.Command("ip", "netns", "exec", client, echoBin, "dial", zoneB+":80", source).Output()
		return strings.TrimSpace(string(out)), err
	}
	// The target's group does not admit the load balancer yet: it is unreachable, as on AWS.
	if out, err := dialFromClient("198.18.0.2"); err == nil {
		t.Fatalf("reached a target whose group does not admit the load balancer: %s", out)
	}
	if _, err := ec2c.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: targetGroup, IpPermissions: []ec2types.IpPermission{
		{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(8080), ToPort: aws.Int32(8080), UserIdGroupPairs: []ec2types.UserIdGroupPair{{GroupId: front.GroupId}}},
	}}); err != nil {
		t.Fatal(err)
	}
	var greeting string
	waitFor(t, 5*time.Second, "the backend rule to apply", func() bool {
		greeting, err = dialFromClient("198.18.0.2")
		return err == nil
	})
	if greeting != "hello from 198.18.2.10:8080" {
		t.Errorf("allowed client got %q", greeting)
	}
	if out, err := dialFromClient("198.18.0.3"); err == nil || !strings.Contains(out, "timeout") {
		t.Errorf("denied client: %q, %v; want a timeout", out, err)
	}
	waitFor(t, 30*time.Second, "target healthy", func() bool {
		out, err := elbc.DescribeTargetHealth(ctx, &elbv2.DescribeTargetHealthInput{TargetGroupArn: tg.TargetGroups[0].TargetGroupArn})
		return err == nil && out.TargetHealthDescriptions[0].TargetHealth.State == elbtypes.TargetHealthStateEnumHealthy
	})
}
