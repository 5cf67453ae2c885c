//go:build linux

package e2e

import (
	"context"
	"encoding/json"
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

// TestInstanceGroupsEnforcedByLB runs moat lb with its default inventory in a network namespace of
// its own (its loopback is the whole world: instances at 127.1.0.10 and 127.2.0.10, clients at
// 127.0.0.x), enforcing the instances' groups, with the kernel fast path and with the userspace
// proxy. Directly, node-a is reachable only as its group says, inbound and outbound; through the
// load balancer, the client the frontend group admits reaches node-a's NodePort whatever node-a's
// group says of the client, because the group admits the load balancer's group.
func TestInstanceGroupsEnforcedByLB(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("network namespaces and nftables need root")
	}
	for i, fastPath := range []string{"kernel", "off"} {
		t.Run("fast-path="+fastPath, func(t *testing.T) {
			t.Parallel()
			instanceGroupsInNetns(t, fmt.Sprintf("%d%d", os.Getpid()%10000, i), i, fastPath)
		})
	}
}

func instanceGroupsInNetns(t *testing.T, id string, n int, fastPath string) {
	ns := "moatsg" + id
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("netns", "add", ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	run("-n", ns, "link", "set", "lo", "up")
	// The test's own path to the API: 198.18.8.0/30 (benchmarking range, inside the test only).
	hostEnd, nsEnd := "sgh"+id, "sgn"+id
	octet := 4 * ((2*os.Getpid() + n) % 64) // apart from the leftovers of a killed run
	hostAddr, nsAddr := fmt.Sprintf("198.18.8.%d", octet+1), fmt.Sprintf("198.18.8.%d", octet+2)
	run("link", "add", hostEnd, "type", "veth", "peer", "name", nsEnd)
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", hostEnd).Run() })
	run("link", "set", nsEnd, "netns", ns)
	run("addr", "add", hostAddr+"/30", "dev", hostEnd)
	run("link", "set", hostEnd, "up")
	run("-n", ns, "addr", "add", nsAddr+"/30", "dev", nsEnd)
	run("-n", ns, "link", "set", nsEnd, "up")

	inNS := func(args ...string) *exec.Cmd {
		return exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
	}
	serve := func(addr string) {
		cmd := inNS(echoBin, addr)
		cmd.SysProcAttr = dieWithTest()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	}
	const nodePort = "127.1.0.10:30080"
	serve(nodePort)
	serve("127.0.0.5:9000") // somewhere for node-a to go
	dial := func(target, source string) error {
		out, err := inNS(echoBin, "dial", target, source).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s", strings.TrimSpace(string(out)))
		}
		return nil
	}
	reachable := func(target, source string) bool { return dial(target, source) == nil }

	dir := t.TempDir()
	flowLog := filepath.Join(dir, "flows.jsonl")
	p := startLBIn(t, []string{"ip", "netns", "exec", ns}, nsAddr, filepath.Join(dir, "lb"),
		"--instance-sg-mode=enforce", "--fast-path="+fastPath, "--flow-log", flowLog)
	if !strings.Contains(p.stderr.String(), "instance security groups enforced") || !strings.Contains(p.stderr.String(), "denied flows to instances go to the flow log") {
		t.Fatalf("moat lb does not say it enforces instance groups and logs their denials:\n%s", p.stderr)
	}
	// logged waits for the flow log's line of a denial at node-a's interface.
	logged := func(what, direction, source, destination string) {
		t.Helper()
		waitFor(t, 10*time.Second, what+" in the flow log", func() bool {
			data, _ := os.ReadFile(flowLog)
			for _, line := range strings.Split(string(data), "\n") {
				var e struct{ Action, Instance, Interface, Direction, Protocol, Source, Destination, Reason string }
				if json.Unmarshal([]byte(line), &e) == nil && e.Action == "deny" && strings.HasPrefix(e.Instance, "i-") &&
					strings.HasPrefix(e.Interface, "eni-") && e.Direction == direction && e.Protocol == "tcp" &&
					strings.HasPrefix(e.Source, source) && strings.HasPrefix(e.Destination, destination) && e.Reason == "no_rule_matched" {
					return true
				}
			}
			return false
		})
	}
	ec2c, elbc := p.clients(t)
	ctx := context.Background()
	vpc, subnetIDs := vpcSubnets(t, ec2c)
	nodes, err := ec2c.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{Filters: []ec2types.Filter{{Name: aws.String("group-name"), Values: []string{"moat-nodes"}}}})
	if err != nil {
		t.Fatal(err)
	}
	nodesGroup := nodes.SecurityGroups[0].GroupId
	nodePortRule := func(cidr string) []ec2types.IpPermission {
		return []ec2types.IpPermission{{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(30080), ToPort: aws.Int32(30080),
			IpRanges: []ec2types.IpRange{{CidrIp: aws.String(cidr)}}}}
	}

	// Directly: node-a's group has no inbound rule, so nobody gets in.
	waitFor(t, 5*time.Second, "the nodes' group to close node-a", func() bool { return !reachable(nodePort, "127.0.0.2") })
	if _, err := ec2c.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: nodesGroup, IpPermissions: nodePortRule("127.0.0.2/32")}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the rule for 127.0.0.2 to apply", func() bool { return reachable(nodePort, "127.0.0.2") })
	if err := dial(nodePort, "127.0.0.3"); err == nil || !strings.Contains(err.Error(), "timeout") {
		t.Errorf("a client no rule admits, straight to the NodePort: %v, want a timeout", err)
	}
	logged("the direct denial of 127.0.0.3", "inbound", "127.0.0.3:", nodePort)

	// Outbound: revoking the allow-all rule keeps node-a from opening flows.
	if !reachable("127.0.0.5:9000", "127.1.0.10") {
		t.Fatal("node-a cannot go out with its allow-all outbound rule")
	}
	allOut := []ec2types.IpPermission{{IpProtocol: aws.String("-1"), IpRanges: []ec2types.IpRange{{CidrIp: aws.String("0.0.0.0/0")}}}}
	if _, err := ec2c.RevokeSecurityGroupEgress(ctx, &ec2.RevokeSecurityGroupEgressInput{GroupId: nodesGroup, IpPermissions: allOut}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the revoke of node-a's outbound rule to apply", func() bool { return !reachable("127.0.0.5:9000", "127.1.0.10") })
	logged("node-a's denied flow out", "outbound", "127.1.0.10:", "127.0.0.5:9000")
	if _, err := ec2c.AuthorizeSecurityGroupEgress(ctx, &ec2.AuthorizeSecurityGroupEgressInput{GroupId: nodesGroup, IpPermissions: allOut}); err != nil {
		t.Fatal(err)
	}
	if _, err := ec2c.RevokeSecurityGroupIngress(ctx, &ec2.RevokeSecurityGroupIngressInput{GroupId: nodesGroup, IpPermissions: nodePortRule("127.0.0.2/32")}); err != nil {
		t.Fatal(err)
	}

	// Through a load balancer whose group admits 127.0.0.2, with node-a as an instance target
	// (client IP preserved): node-a's group admits the load balancer's group, not the client.
	front, err := ec2c.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("front"), Description: aws.String("clients"), VpcId: vpc})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ec2c.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: front.GroupId, IpPermissions: []ec2types.IpPermission{
		{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(8080), ToPort: aws.Int32(8080), IpRanges: []ec2types.IpRange{{CidrIp: aws.String("127.0.0.2/32")}}},
	}}); err != nil {
		t.Fatal(err)
	}
	if _, err := ec2c.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: nodesGroup, IpPermissions: []ec2types.IpPermission{
		{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(30080), ToPort: aws.Int32(30080), UserIdGroupPairs: []ec2types.UserIdGroupPair{{GroupId: front.GroupId}}},
	}}); err != nil {
		t.Fatal(err)
	}
	lbOut, err := elbc.CreateLoadBalancer(ctx, &elbv2.CreateLoadBalancerInput{Name: aws.String("sg"), Type: elbtypes.LoadBalancerTypeEnumNetwork,
		Scheme: elbtypes.LoadBalancerSchemeEnumInternal, Subnets: subnetIDs, SecurityGroups: []string{*front.GroupId}})
	if err != nil {
		t.Fatal(err)
	}
	lb := lbOut.LoadBalancers[0]
	var lbAddr string // in node-a's zone: cross-zone is off
	for _, z := range lb.AvailabilityZones {
		if *z.ZoneName == "us-east-1a" {
			lbAddr = *z.LoadBalancerAddresses[0].IpAddress
		}
	}
	insts, err := ec2c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{Filters: []ec2types.Filter{{Name: aws.String("private-ip-address"), Values: []string{"127.1.0.10"}}}})
	if err != nil {
		t.Fatal(err)
	}
	tg, err := elbc.CreateTargetGroup(ctx, &elbv2.CreateTargetGroupInput{Name: aws.String("sg"), Protocol: elbtypes.ProtocolEnumTcp, Port: aws.Int32(30080),
		VpcId: vpc, TargetType: elbtypes.TargetTypeEnumInstance, HealthCheckIntervalSeconds: aws.Int32(5), HealthyThresholdCount: aws.Int32(2)})
	if err != nil {
		t.Fatal(err)
	}
	tgARN := tg.TargetGroups[0].TargetGroupArn
	if _, err := elbc.RegisterTargets(ctx, &elbv2.RegisterTargetsInput{TargetGroupArn: tgARN,
		Targets: []elbtypes.TargetDescription{{Id: insts.Reservations[0].Instances[0].InstanceId}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := elbc.CreateListener(ctx, &elbv2.CreateListenerInput{LoadBalancerArn: lb.LoadBalancerArn, Protocol: elbtypes.ProtocolEnumTcp, Port: aws.Int32(8080),
		DefaultActions: []elbtypes.Action{{Type: elbtypes.ActionTypeEnumForward, TargetGroupArn: tgARN}}}); err != nil {
		t.Fatal(err)
	}
	front8080 := lbAddr + ":8080"
	waitFor(t, 10*time.Second, "the allowed client to reach node-a through the load balancer", func() bool { return reachable(front8080, "127.0.0.2") })
	if reachable(nodePort, "127.0.0.2") {
		t.Error("the client the load balancer admits also reaches node-a directly: node-a's group admits only the load balancer")
	}
	if reachable(front8080, "127.0.0.3") {
		t.Error("the client the frontend group denies got through the load balancer")
	}
	// Health checks come from the load balancer's address, which node-a's group admits.
	waitFor(t, 30*time.Second, "node-a healthy", func() bool {
		out, err := elbc.DescribeTargetHealth(ctx, &elbv2.DescribeTargetHealthInput{TargetGroupArn: tgARN})
		return err == nil && out.TargetHealthDescriptions[0].TargetHealth.State == elbtypes.TargetHealthStateEnumHealthy
	})
	if n := metricValue(t, p, "moat_instance_sg_denied_flows_total"); n == 0 {
		t.Error("no denied flow counted in moat_instance_sg_denied_flows_total")
	}
}
