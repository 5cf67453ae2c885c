//go:build linux

package e2e

import (
	"context"
	"net/netip"
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

// netnsWorld is a netnsLab with echo servers on the target host (198.18.2.10:8080 and
// [2001:db8:0:3::10]:8080) and moat lb running with netnsInventory.
type netnsWorld struct {
	*netnsLab
	lbProc *lbProcess
	ec2    *ec2.Client
	elb    *elbv2.Client
}

// newNetnsWorld builds the lab, starts the target's echo servers and moat lb.
func newNetnsWorld(t *testing.T) *netnsWorld {
	t.Helper()
	w := &netnsWorld{netnsLab: newNetnsLab(t, "w")}
	for _, listen := range []string{"198.18.2.10:8080", "[2001:db8:0:3::10]:8080"} {
		w.serve(w.target, echoBin, listen)
	}
	w.lbProc = w.startLB()
	w.ec2, w.elb = w.lbProc.clients(t)
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
	return w.netnsLab.dial("dial", addr, source)
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
	zoneB := w.lbProc.zoneAddress(t, s.lb, "us-east-1b", dns.TypeA)
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
	zoneB6 := w.lbProc.zoneAddress(t, s.lb, "us-east-1b", dns.TypeAAAA)
	if zoneB6 != "2001:db8:0:2::64" {
		t.Fatalf("zone b IPv6 address %q, want 2001:db8:0:2::64 (the first the allocator hands out)", zoneB6)
	}
	w.admitFront(t, s)
	w.waitHealthy(t, s)

	// Only zone b has a healthy target: DNS answers its addresses, of each family.
	name := aws.ToString(s.lb.DNSName)
	if got := lookup(t, w.lbProc.DNS, name, dns.TypeAAAA); len(got) != 1 || got[0] != zoneB6 {
		t.Errorf("AAAA %s: %v, want [%s]", name, got, zoneB6)
	}
	if got := lookup(t, w.lbProc.DNS, name, dns.TypeA); len(got) != 1 || got[0] != w.lbProc.zoneAddress(t, s.lb, "us-east-1b", dns.TypeA) {
		t.Errorf("A %s: %v, want [%s]", name, got, w.lbProc.zoneAddress(t, s.lb, "us-east-1b", dns.TypeA))
	}
	v4only, err := w.elb.CreateLoadBalancer(context.Background(), &elbv2.CreateLoadBalancerInput{Name: aws.String("v4only"), Type: elbtypes.LoadBalancerTypeEnumNetwork,
		Scheme: elbtypes.LoadBalancerSchemeEnumInternal, Subnets: []string{*s.lb.AvailabilityZones[0].SubnetId}})
	if err != nil {
		t.Fatal(err)
	}
	if got := lookup(t, w.lbProc.DNS, aws.ToString(v4only.LoadBalancers[0].DNSName), dns.TypeAAAA); len(got) != 0 {
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
	if got, err := w.dial(w.lbProc.zoneAddress(t, s.lb, "us-east-1b", dns.TypeA)+":80", "198.18.0.2"); err != nil || !strings.HasPrefix(got, "hello from 198.18.2.10:8080,") {
		t.Errorf("admitted IPv4 client: %q, %v", got, err)
	}

	w.ipv6ToIPv6(t, s, zoneB6)
}

// ipv6ToIPv6 forwards port 81 of the dualstack load balancer to an ipv6 target group with the
// target host's IPv6 address, and checks that the kernel carries the admitted IPv6 client's flow.
func (w *netnsWorld) ipv6ToIPv6(t *testing.T, s netnsStack, zoneB6 string) {
	t.Helper()
	ctx := context.Background()
	if !strings.Contains(w.lbProc.stderr.String(), "kernel fast path on") {
		t.Fatalf("moat lb runs without the kernel fast path:\n%s", w.lbProc.stderr)
	}
	w.sysctl(w.lb, "net.ipv6.conf.all.forwarding=1")
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
	f, ok := conntrackFlow(t, w.lb, unix.IPPROTO_TCP, local, front)
	switch {
	case !ok:
		t.Errorf("no conntrack entry for %v → %v in the lb host", local, front)
	case f.Mark&nftutil.MarkFlow == 0 || f.Mark&(1<<nftutil.MarkSlotBits-1) == 0:
		t.Errorf("conntrack mark %#x: not a fast-path flow of moat lb", f.Mark)
	case f.TupleReply.IP.SourceAddress != netip.MustParseAddr("2001:db8:0:3::10"):
		t.Errorf("conntrack sends the flow to %v, want the IPv6 target", f.TupleReply.IP.SourceAddress)
	}
	if n := metricValue(t, w.lbProc, "moat_dataplane_proxied_flows_total", `listener="`+listener+`"`); n != 0 {
		t.Errorf("the userspace proxy accepted %v IPv6 flows, want 0", n)
	}
	if out, err := w.dial(front.String(), "2001:db8::3"); err == nil || !strings.Contains(out, "timeout") {
		t.Errorf("denied IPv6 client to the IPv6 target: %q, %v; want a timeout", out, err)
	}
}
