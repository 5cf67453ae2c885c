//go:build linux

package e2e

import (
	"context"
	"fmt"
	"net/netip"
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
	"github.com/miekg/dns"
	"golang.org/x/sys/unix"

	"github.com/moatlb/moat/internal/nftutil"
)

// The namespaces' addresses come from 198.18.0.0/15, the range reserved for benchmarking
// networks, and from 2001:db8::/32, the IPv6 documentation range: they exist only inside the
// test's own namespaces.
const netnsInventory = `
vpcs:
  - {name: bench, cidr: 198.18.0.0/16, ipv6Cidr: "2001:db8::/56", default: true}
subnets:
  - {name: a, vpc: bench, zone: a, cidr: 198.18.1.0/24, ipv6Cidr: "2001:db8:0:1::/64", tags: {kubernetes.io/role/internal-elb: "1"}}
  - {name: b, vpc: bench, zone: b, cidr: 198.18.2.0/24, ipv6Cidr: "2001:db8:0:2::/64", tags: {kubernetes.io/role/internal-elb: "1"}}
securityGroups:
  - {name: targets, vpc: bench, description: the target host}
instances:
  - {name: target, subnet: b, privateIp: 198.18.2.10, securityGroups: [targets]}
`

// netnsWorld is a client host, moat lb and a target host in three network namespaces joined by
// veth pairs, so that addresses, zones and the listener's privileged port are real routing
// rather than loopback:
//
//	client (198.18.0.2, .3; 2001:db8::2, ::3) ── veth ── lb (198.18.0.1, 2001:db8::1) ── veth ── target 198.18.2.10:8080, [2001:db8:0:3::10]:8080
//
// The load balancer addresses moat allocates (from the 100th of each subnet: 198.18.{1,2}.96/27,
// 2001:db8:0:{1,2}::/64) are routed to the lb host, as a cloud routes an NLB's addresses to its
// nodes; binding IPv6 addresses that are only routed needs net.ipv6.ip_nonlocal_bind there.
type netnsWorld struct {
	client string // the client host's namespace
	lbNS   string // moat lb's
	lb     *lbProcess
	ec2    *ec2.Client
	elb    *elbv2.Client
}

// newNetnsWorld builds the namespaces, starts the target's echo server and moat lb (its API on
// 198.18.9.2, which the test process reaches through a veth of its own) with netnsInventory.
func newNetnsWorld(t *testing.T) *netnsWorld {
	t.Helper()
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
	// addr adds an address in ns ("" for the test's own); IPv6 ones skip duplicate address
	// detection, which would keep them unusable for a second or two.
	addr := func(ns, a, dev string) {
		args := []string{"addr", "add", a, "dev", dev}
		if strings.Contains(a, ":") {
			args = append([]string{"-6"}, append(args, "nodad")...)
		}
		if ns != "" {
			args = append([]string{"-n", ns}, args...)
		}
		run(args...)
	}
	veth := func(a, nsA string, addrsA []string, b, nsB string, addrsB []string) {
		run("link", "add", a, "type", "veth", "peer", "name", b)
		for _, end := range []struct {
			dev, ns string
			addrs   []string
		}{{a, nsA, addrsA}, {b, nsB, addrsB}} {
			if end.ns != "" {
				run("link", "set", end.dev, "netns", end.ns)
				run("-n", end.ns, "link", "set", end.dev, "up")
			} else {
				run("link", "set", end.dev, "up")
				t.Cleanup(func() { _ = exec.Command("ip", "link", "del", end.dev).Run() })
			}
			for _, a := range end.addrs {
				addr(end.ns, a, end.dev)
			}
		}
	}
	veth("c"+id, client, []string{"198.18.0.2/24", "198.18.0.3/24", "2001:db8::2/64", "2001:db8::3/64"},
		"lc"+id, lbns, []string{"198.18.0.1/24", "2001:db8::1/64"})
	// The target's IPv6 address is in the VPC's block but in no subnet's (zone b's is the load
	// balancer addresses' here): an ip target of zone "all".
	veth("t"+id, target, []string{"198.18.2.10/24", "2001:db8:0:3::10/64"}, "lt"+id, lbns, []string{"198.18.2.1/24", "2001:db8:0:3::1/64"})
	veth("r"+id, "", []string{"198.18.9.1/30"}, "lr"+id, lbns, []string{"198.18.9.2/30"}) // the test's own path to the API
	run("-n", client, "route", "add", "198.18.0.0/15", "via", "198.18.0.1")
	run("-n", client, "-6", "route", "add", "2001:db8::/56", "via", "2001:db8::1")
	run("-n", target, "route", "add", "default", "via", "198.18.2.1")
	run("-n", target, "-6", "route", "add", "default", "via", "2001:db8:0:3::1")
	for _, r := range []string{"198.18.1.96/27", "198.18.2.96/27", "2001:db8:0:1::/64", "2001:db8:0:2::/64"} {
		run("-n", lbns, "route", "add", "local", r, "dev", "lo")
	}
	if out, err := exec.Command("ip", "netns", "exec", lbns, "sysctl", "-w", "net.ipv6.ip_nonlocal_bind=1").CombinedOutput(); err != nil {
		t.Fatalf("sysctl in %s: %v\n%s", lbns, err, out)
	}

	for _, listen := range []string{"198.18.2.10:8080", "[2001:db8:0:3::10]:8080"} {
		backend := exec.Command("ip", "netns", "exec", target, echoBin, listen)
		backend.SysProcAttr = dieWithTest()
		if err := backend.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = backend.Process.Kill(); _ = backend.Wait() })
	}

	dir := t.TempDir()
	inventory := filepath.Join(dir, "inventory.yaml")
	if err := os.WriteFile(inventory, []byte(netnsInventory), 0o600); err != nil {
		t.Fatal(err)
	}
	w := &netnsWorld{client: client, lbNS: lbns}
	w.lb = startLBIn(t, []string{"ip", "netns", "exec", lbns}, "198.18.9.2", filepath.Join(dir, "lb"), "--inventory", inventory)
	w.ec2, w.elb = w.lb.clients(t)
	return w
}

// dial connects from the client host's source address to addr and returns the greeting (the
// first line echoserver prints).
func (w *netnsWorld) dial(addr, source string) (string, error) {
	out, err := w.dialOut(addr, source)
	greeting, _, _ := strings.Cut(out, "\n")
	return greeting, err
}

// dialOut is dial's whole output: the greeting and the client's own address ("local …").
func (w *netnsWorld) dialOut(addr, source string) (string, error) {
	out, err := exec.Command("ip", "netns", "exec", w.client, echoBin, "dial", addr, source).Output()
	return strings.TrimSpace(string(out)), err
}

// netnsStack is what createStack made: a load balancer with a frontend group, and a target group
// with the target instance behind a TCP listener on port 80.
type netnsStack struct {
	lb          elbtypes.LoadBalancer
	targetGroup *string // ARN
	front       *string // the frontend group's ID
	targets     *string // the target instance's group's ID
}

// createStack builds a stack of ipType whose frontend group has ingress, and waits until the
// load balancer is active. The target instance's group does not admit the load balancer yet.
func (w *netnsWorld) createStack(t *testing.T, ipType elbtypes.IpAddressType, ingress ...ec2types.IpPermission) netnsStack {
	t.Helper()
	ctx := context.Background()
	vpc, subnetIDs := vpcSubnets(t, w.ec2)
	insts, err := w.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{})
	if err != nil {
		t.Fatal(err)
	}
	instance := insts.Reservations[0].Instances[0]
	s := netnsStack{targets: instance.SecurityGroups[0].GroupId}
	front, err := w.ec2.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("front"), Description: aws.String("clients"), VpcId: vpc})
	if err != nil {
		t.Fatal(err)
	}
	s.front = front.GroupId
	if _, err := w.ec2.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: s.front, IpPermissions: ingress}); err != nil {
		t.Fatal(err)
	}
	lbOut, err := w.elb.CreateLoadBalancer(ctx, &elbv2.CreateLoadBalancerInput{Name: aws.String("netns"), Type: elbtypes.LoadBalancerTypeEnumNetwork,
		Scheme: elbtypes.LoadBalancerSchemeEnumInternal, IpAddressType: ipType, Subnets: subnetIDs, SecurityGroups: []string{*s.front}})
	if err != nil {
		t.Fatal(err)
	}
	s.lb = lbOut.LoadBalancers[0]
	tg, err := w.elb.CreateTargetGroup(ctx, &elbv2.CreateTargetGroupInput{Name: aws.String("netns"), Protocol: elbtypes.ProtocolEnumTcp, Port: aws.Int32(8080),
		VpcId: vpc, TargetType: elbtypes.TargetTypeEnumInstance, HealthCheckIntervalSeconds: aws.Int32(5), HealthyThresholdCount: aws.Int32(2)})
	if err != nil {
		t.Fatal(err)
	}
	s.targetGroup = tg.TargetGroups[0].TargetGroupArn
	if _, err := w.elb.RegisterTargets(ctx, &elbv2.RegisterTargetsInput{TargetGroupArn: s.targetGroup, Targets: []elbtypes.TargetDescription{{Id: instance.InstanceId}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.elb.CreateListener(ctx, &elbv2.CreateListenerInput{LoadBalancerArn: s.lb.LoadBalancerArn, Protocol: elbtypes.ProtocolEnumTcp, Port: aws.Int32(80),
		DefaultActions: []elbtypes.Action{{Type: elbtypes.ActionTypeEnumForward, TargetGroupArn: s.targetGroup}}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "load balancer active", func() bool {
		out, err := w.elb.DescribeLoadBalancers(ctx, &elbv2.DescribeLoadBalancersInput{LoadBalancerArns: []string{*s.lb.LoadBalancerArn}})
		return err == nil && out.LoadBalancers[0].State.Code == elbtypes.LoadBalancerStateEnumActive
	})
	return s
}

// admitFront lets the frontend group reach the target instance on its port, as the controller's
// backend rule does.
func (w *netnsWorld) admitFront(t *testing.T, s netnsStack) {
	t.Helper()
	if _, err := w.ec2.AuthorizeSecurityGroupIngress(context.Background(), &ec2.AuthorizeSecurityGroupIngressInput{GroupId: s.targets, IpPermissions: []ec2types.IpPermission{
		{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(8080), ToPort: aws.Int32(8080), UserIdGroupPairs: []ec2types.UserIdGroupPair{{GroupId: s.front}}},
	}}); err != nil {
		t.Fatal(err)
	}
}

// waitHealthy waits until the target is healthy.
func (w *netnsWorld) waitHealthy(t *testing.T, s netnsStack) {
	t.Helper()
	waitFor(t, 30*time.Second, "target healthy", func() bool {
		out, err := w.elb.DescribeTargetHealth(context.Background(), &elbv2.DescribeTargetHealthInput{TargetGroupArn: s.targetGroup})
		return err == nil && out.TargetHealthDescriptions[0].TargetHealth.State == elbtypes.TargetHealthStateEnumHealthy
	})
}

// TestAcrossNetworkNamespaces checks, across netnsWorld's namespaces, the frontend group (one
// client admitted, the other timing out) and the backend group (the target's group must admit
// the load balancer's group, or the target is unreachable).
func TestAcrossNetworkNamespaces(t *testing.T) {
	w := newNetnsWorld(t)
	s := w.createStack(t, elbtypes.IpAddressTypeIpv4,
		ec2types.IpPermission{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(80), ToPort: aws.Int32(80), IpRanges: []ec2types.IpRange{{CidrIp: aws.String("198.18.0.2/32")}}})
	zoneB := w.lb.zoneAddress(t, s.lb, "us-east-1b", dns.TypeA)
	if zoneB != "198.18.2.100" {
		t.Fatalf("zone b address %s, want 198.18.2.100 (the first the allocator hands out)", zoneB)
	}
	// The target's group does not admit the load balancer yet: it is unreachable, as on AWS.
	if out, err := w.dial(zoneB+":80", "198.18.0.2"); err == nil {
		t.Fatalf("reached a target whose group does not admit the load balancer: %s", out)
	}
	w.admitFront(t, s)
	var greeting string
	var err error
	waitFor(t, 5*time.Second, "the backend rule to apply", func() bool {
		greeting, err = w.dial(zoneB+":80", "198.18.0.2")
		return err == nil
	})
	if !strings.HasPrefix(greeting, "hello from 198.18.2.10:8080,") {
		t.Errorf("allowed client got %q", greeting)
	}
	if out, err := w.dial(zoneB+":80", "198.18.0.3"); err == nil || !strings.Contains(out, "timeout") {
		t.Errorf("denied client: %q, %v; want a timeout", out, err)
	}
	w.waitHealthy(t, s)
}

// TestDualstackAcrossNetworkNamespaces serves a dualstack load balancer from subnets with IPv6
// blocks: each zone gets an IPv6 address, moat's DNS answers AAAA records for the zones DNS
// answers A records for (and NODATA for an ipv4 load balancer), an IPv6 client that an
// Ipv6Ranges rule admits reaches the IPv4 target, and another IPv6 client's SYN is dropped. Then
// a second listener forwards to an ipv6 target group: with the kernel fast path (moat lb's
// default as root) and IPv6 forwarding on in the lb host, the admitted IPv6 client's flow to the
// IPv6 target is carried by the kernel — its conntrack entry in the lb host has moat lb's
// fast-path mark, and the userspace proxy accepted no flow — and the other IPv6 client is still
// dropped.
func TestDualstackAcrossNetworkNamespaces(t *testing.T) {
	w := newNetnsWorld(t)
	s := w.createStack(t, elbtypes.IpAddressTypeDualstack,
		ec2types.IpPermission{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(80), ToPort: aws.Int32(81),
			IpRanges: []ec2types.IpRange{{CidrIp: aws.String("198.18.0.2/32")}}, Ipv6Ranges: []ec2types.Ipv6Range{{CidrIpv6: aws.String("2001:db8::2/128")}}})
	if s.lb.IpAddressType != elbtypes.IpAddressTypeDualstack {
		t.Fatalf("ip address type %s", s.lb.IpAddressType)
	}
	zoneB6 := w.lb.zoneAddress(t, s.lb, "us-east-1b", dns.TypeAAAA)
	if zoneB6 != "2001:db8:0:2::64" {
		t.Fatalf("zone b IPv6 address %q, want 2001:db8:0:2::64 (the first the allocator hands out)", zoneB6)
	}
	w.admitFront(t, s)
	w.waitHealthy(t, s)

	// Only zone b has a healthy target: DNS answers its addresses, of each family.
	name := aws.ToString(s.lb.DNSName)
	if got := lookup(t, w.lb.DNS, name, dns.TypeAAAA); len(got) != 1 || got[0] != zoneB6 {
		t.Errorf("AAAA %s: %v, want [%s]", name, got, zoneB6)
	}
	if got := lookup(t, w.lb.DNS, name, dns.TypeA); len(got) != 1 || got[0] != w.lb.zoneAddress(t, s.lb, "us-east-1b", dns.TypeA) {
		t.Errorf("A %s: %v, want [%s]", name, got, w.lb.zoneAddress(t, s.lb, "us-east-1b", dns.TypeA))
	}
	v4only, err := w.elb.CreateLoadBalancer(context.Background(), &elbv2.CreateLoadBalancerInput{Name: aws.String("v4only"), Type: elbtypes.LoadBalancerTypeEnumNetwork,
		Scheme: elbtypes.LoadBalancerSchemeEnumInternal, Subnets: []string{*s.lb.AvailabilityZones[0].SubnetId}})
	if err != nil {
		t.Fatal(err)
	}
	if got := lookup(t, w.lb.DNS, aws.ToString(v4only.LoadBalancers[0].DNSName), dns.TypeAAAA); len(got) != 0 {
		t.Errorf("AAAA of an ipv4 load balancer: %v, want none", got)
	}

	// The admitted IPv6 client reaches the IPv4 target through the address DNS gave; the other
	// times out; IPv4 clients are served as before.
	target := "[" + zoneB6 + "]:80"
	if got, err := w.dial(target, "2001:db8::2"); err != nil || !strings.HasPrefix(got, "hello from 198.18.2.10:8080,") {
		t.Errorf("admitted IPv6 client: %q, %v", got, err)
	}
	if out, err := w.dial(target, "2001:db8::3"); err == nil || !strings.Contains(out, "timeout") {
		t.Errorf("denied IPv6 client: %q, %v; want a timeout", out, err)
	}
	if got, err := w.dial(w.lb.zoneAddress(t, s.lb, "us-east-1b", dns.TypeA)+":80", "198.18.0.2"); err != nil || !strings.HasPrefix(got, "hello from 198.18.2.10:8080,") {
		t.Errorf("admitted IPv4 client: %q, %v", got, err)
	}

	w.ipv6ToIPv6(t, s, zoneB6)
}

// ipv6ToIPv6 forwards port 81 of the dualstack load balancer to an ipv6 target group with the
// target host's IPv6 address, and checks that the kernel carries the admitted IPv6 client's flow.
func (w *netnsWorld) ipv6ToIPv6(t *testing.T, s netnsStack, zoneB6 string) {
	t.Helper()
	ctx := context.Background()
	if !strings.Contains(w.lb.stderr.String(), "kernel fast path on") {
		t.Fatalf("moat lb runs without the kernel fast path:\n%s", w.lb.stderr)
	}
	if out, err := exec.Command("ip", "netns", "exec", w.lbNS, "sysctl", "-w", "net.ipv6.conf.all.forwarding=1").CombinedOutput(); err != nil {
		t.Fatalf("sysctl in %s: %v\n%s", w.lbNS, err, out)
	}
	vpc, _ := vpcSubnets(t, w.ec2)
	tg, err := w.elb.CreateTargetGroup(ctx, &elbv2.CreateTargetGroupInput{Name: aws.String("v6"), Protocol: elbtypes.ProtocolEnumTcp, Port: aws.Int32(8080),
		VpcId: vpc, TargetType: elbtypes.TargetTypeEnumIp, IpAddressType: elbtypes.TargetGroupIpAddressTypeEnumIpv6,
		HealthCheckIntervalSeconds: aws.Int32(5), HealthyThresholdCount: aws.Int32(2)})
	if err != nil {
		t.Fatal(err)
	}
	tgARN := tg.TargetGroups[0].TargetGroupArn
	if _, err := w.elb.RegisterTargets(ctx, &elbv2.RegisterTargetsInput{TargetGroupArn: tgARN,
		Targets: []elbtypes.TargetDescription{{Id: aws.String("2001:db8:0:3::10")}}}); err != nil {
		t.Fatal(err)
	}
	l, err := w.elb.CreateListener(ctx, &elbv2.CreateListenerInput{LoadBalancerArn: s.lb.LoadBalancerArn, Protocol: elbtypes.ProtocolEnumTcp, Port: aws.Int32(81),
		DefaultActions: []elbtypes.Action{{Type: elbtypes.ActionTypeEnumForward, TargetGroupArn: tgARN}}})
	if err != nil {
		t.Fatal(err)
	}
	listener := aws.ToString(l.Listeners[0].ListenerArn)
	waitFor(t, 30*time.Second, "the IPv6 target healthy", func() bool {
		out, err := w.elb.DescribeTargetHealth(ctx, &elbv2.DescribeTargetHealthInput{TargetGroupArn: tgARN})
		return err == nil && out.TargetHealthDescriptions[0].TargetHealth.State == elbtypes.TargetHealthStateEnumHealthy
	})

	front := netip.AddrPortFrom(netip.MustParseAddr(zoneB6), 81)
	var out string
	waitFor(t, 10*time.Second, "the admitted IPv6 client's flow to the IPv6 target", func() bool {
		out, err = w.dialOut(front.String(), "2001:db8::2")
		return err == nil
	})
	// Client IP preservation is off for ip targets: the target sees the load balancer's address.
	if !strings.HasPrefix(out, "hello from [2001:db8:0:3::10]:8080,") || answerAddr(t, out, "you are ").Addr() != front.Addr() {
		t.Errorf("admitted IPv6 client got %q, want the IPv6 target seeing %v", out, front.Addr())
	}
	local := answerAddr(t, out, "local ")
	f, ok := conntrackFlow(t, w.lbNS, unix.IPPROTO_TCP, local, front)
	switch {
	case !ok:
		t.Errorf("no conntrack entry for %v → %v in the lb host", local, front)
	case f.Mark&nftutil.MarkFlow == 0 || f.Mark&(1<<nftutil.MarkSlotBits-1) == 0:
		t.Errorf("conntrack mark %#x: not a fast-path flow of moat lb", f.Mark)
	case f.TupleReply.IP.SourceAddress != netip.MustParseAddr("2001:db8:0:3::10"):
		t.Errorf("conntrack sends the flow to %v, want the IPv6 target", f.TupleReply.IP.SourceAddress)
	}
	if n := metricValue(t, w.lb, "moat_dataplane_proxied_flows_total", `listener="`+listener+`"`); n != 0 {
		t.Errorf("the userspace proxy accepted %v IPv6 flows, want 0", n)
	}
	if out, err := w.dial(front.String(), "2001:db8::3"); err == nil || !strings.Contains(out, "timeout") {
		t.Errorf("denied IPv6 client to the IPv6 target: %q, %v; want a timeout", out, err)
	}
}
