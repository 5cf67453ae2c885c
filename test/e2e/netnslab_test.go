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
	"github.com/miekg/dns"
)

// netnsLab is a client host, moat lb's host and a target host in three network namespaces joined
// by veth pairs, so that addresses, zones and privileged ports are real routing rather than
// loopback:
//
//	client (198.18.0.2, .3; 2001:db8::2, ::3) ── veth ── lb (198.18.0.1, 2001:db8::1) ── veth ── target (198.18.2.10, 2001:db8:0:3::10)
//
// plus a veth from the test's own namespace to lb, for the API (a /30 in 198.18.9.0/24). The load
// balancer addresses moat allocates (from the 100th of each subnet: 198.18.{1,2}.96/27,
// 2001:db8:0:{1,2}::/64) are routed to the lb host, as a cloud routes an NLB's addresses to its
// nodes; binding IPv6 addresses that are only routed needs net.ipv6.ip_nonlocal_bind there. The
// target's IPv6 address is in the VPC's block but in no subnet's: an ip target of zone "all".
type netnsLab struct {
	t                  *testing.T
	client, lb, target string // the namespaces
	apiHost            string // lb's end of the test's veth
}

// newNetnsLab builds a lab named after tag and the test process, so that labs of other tests and
// runs do not collide.
func newNetnsLab(t *testing.T, tag string) *netnsLab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
	id := fmt.Sprintf("%s%d", tag, os.Getpid()%10000)
	l := &netnsLab{t: t, client: "moatc" + id, lb: "moatl" + id, target: "moatt" + id}
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	for _, ns := range []string{l.client, l.lb, l.target} {
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
	// The API's /30, apart from other labs' and from the leftovers of a killed run.
	octet := 4 * ((os.Getpid() + int(tag[0])) % 64)
	l.apiHost = fmt.Sprintf("198.18.9.%d", octet+2)
	veth("c"+id, l.client, []string{"198.18.0.2/24", "198.18.0.3/24", "2001:db8::2/64", "2001:db8::3/64"},
		"lc"+id, l.lb, []string{"198.18.0.1/24", "2001:db8::1/64"})
	veth("t"+id, l.target, []string{"198.18.2.10/24", "2001:db8:0:3::10/64"}, "lt"+id, l.lb, []string{"198.18.2.1/24", "2001:db8:0:3::1/64"})
	veth("r"+id, "", []string{fmt.Sprintf("198.18.9.%d/30", octet+1)}, "lr"+id, l.lb, []string{l.apiHost + "/30"})
	run("-n", l.client, "route", "add", "198.18.0.0/15", "via", "198.18.0.1")
	run("-n", l.client, "-6", "route", "add", "2001:db8::/56", "via", "2001:db8::1")
	run("-n", l.target, "route", "add", "default", "via", "198.18.2.1")
	run("-n", l.target, "-6", "route", "add", "default", "via", "2001:db8:0:3::1")
	for _, r := range []string{"198.18.1.96/27", "198.18.2.96/27", "2001:db8:0:1::/64", "2001:db8:0:2::/64"} {
		run("-n", l.lb, "route", "add", "local", r, "dev", "lo")
	}
	l.sysctl(l.lb, "net.ipv6.ip_nonlocal_bind=1")
	return l
}

// in is a command run in namespace ns.
func (l *netnsLab) in(ns string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
}

// serve starts a server in namespace ns for the rest of the test.
func (l *netnsLab) serve(ns string, args ...string) {
	l.t.Helper()
	cmd := l.in(ns, args...)
	cmd.SysProcAttr = dieWithTest()
	if err := cmd.Start(); err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
}

// sysctl sets a sysctl of namespace ns.
func (l *netnsLab) sysctl(ns, setting string) {
	l.t.Helper()
	if out, err := l.in(ns, "sysctl", "-w", setting).CombinedOutput(); err != nil {
		l.t.Fatalf("sysctl %s in %s: %v\n%s", setting, ns, err, out)
	}
}

// dial runs an echoserver client mode (dial or dial-udp) on the client host from source and
// returns what it printed: the target's answer, or the error.
func (l *netnsLab) dial(mode, addr, source string) (string, error) {
	out, err := l.in(l.client, echoBin, mode, addr, source).Output()
	return strings.TrimSpace(string(out)), err
}

// startLB starts moat lb on the lb host with the lab's inventory, its API on the test's veth.
func (l *netnsLab) startLB(args ...string) *lbProcess {
	l.t.Helper()
	dir := l.t.TempDir()
	inventory := filepath.Join(dir, "inventory.yaml")
	if err := os.WriteFile(inventory, []byte(netnsInventory), 0o600); err != nil {
		l.t.Fatal(err)
	}
	return startLBIn(l.t, []string{"ip", "netns", "exec", l.lb}, l.apiHost, filepath.Join(dir, "lb"),
		append([]string{"--inventory", inventory}, args...)...)
}

// labStack is a load balancer of the lab in both zones, with a frontend group, and the target
// instance.
type labStack struct {
	lbARN       string
	zoneB       string // the load balancer's address in zone b, the target's
	front       *string
	instance    *string
	targetGroup *string // the instance's group
	vpc         *string
}

// newLabStack creates the frontend group with rules, and the load balancer with it, through p.
func newLabStack(t *testing.T, p *lbProcess, ec2c *ec2.Client, elbc *elbv2.Client, rules []ec2types.IpPermission) *labStack {
	t.Helper()
	ctx := context.Background()
	st := &labStack{}
	var subnetIDs []string
	st.vpc, subnetIDs = vpcSubnets(t, ec2c)
	insts, err := ec2c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{})
	if err != nil {
		t.Fatal(err)
	}
	instance := insts.Reservations[0].Instances[0]
	st.instance, st.targetGroup = instance.InstanceId, instance.SecurityGroups[0].GroupId
	front, err := ec2c.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("front"), Description: aws.String("clients"), VpcId: st.vpc})
	if err != nil {
		t.Fatal(err)
	}
	st.front = front.GroupId
	if _, err := ec2c.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: st.front, IpPermissions: rules}); err != nil {
		t.Fatal(err)
	}
	lbOut, err := elbc.CreateLoadBalancer(ctx, &elbv2.CreateLoadBalancerInput{Name: aws.String("netns"), Type: elbtypes.LoadBalancerTypeEnumNetwork,
		Scheme: elbtypes.LoadBalancerSchemeEnumInternal, Subnets: subnetIDs, SecurityGroups: []string{*st.front}})
	if err != nil {
		t.Fatal(err)
	}
	lb := lbOut.LoadBalancers[0]
	st.lbARN = *lb.LoadBalancerArn
	st.zoneB = p.zoneAddress(t, lb, "us-east-1b", dns.TypeA)
	if st.zoneB != "198.18.2.100" {
		t.Fatalf("zone b address %s, want 198.18.2.100 (the first the allocator hands out)", st.zoneB)
	}
	return st
}

// forward creates a target group with one target — the instance, or the address ipTarget — and a
// listener on listenPort forwarding to it, waits for the load balancer to be active, and returns
// the target group's and the listener's ARNs.
func (st *labStack) forward(t *testing.T, elbc *elbv2.Client, proto elbtypes.ProtocolEnum, listenPort, targetPort int32, ipTarget string) (tg, listener *string) {
	t.Helper()
	ctx := context.Background()
	in := &elbv2.CreateTargetGroupInput{Name: aws.String(fmt.Sprintf("%s%d", strings.ToLower(string(proto)), listenPort)), Protocol: proto,
		Port: aws.Int32(targetPort), VpcId: st.vpc, TargetType: elbtypes.TargetTypeEnumInstance, HealthCheckIntervalSeconds: aws.Int32(5), HealthyThresholdCount: aws.Int32(2)}
	target := elbtypes.TargetDescription{Id: st.instance}
	if ipTarget != "" {
		in.TargetType, target.Id = elbtypes.TargetTypeEnumIp, aws.String(ipTarget)
	}
	if proto == elbtypes.ProtocolEnumUdp { // checked over TCP, on the TCP echo's port
		in.HealthCheckProtocol, in.HealthCheckPort = elbtypes.ProtocolEnumTcp, aws.String("8080")
	}
	out, err := elbc.CreateTargetGroup(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	tg = out.TargetGroups[0].TargetGroupArn
	if _, err := elbc.RegisterTargets(ctx, &elbv2.RegisterTargetsInput{TargetGroupArn: tg, Targets: []elbtypes.TargetDescription{target}}); err != nil {
		t.Fatal(err)
	}
	l, err := elbc.CreateListener(ctx, &elbv2.CreateListenerInput{LoadBalancerArn: &st.lbARN, Protocol: proto, Port: aws.Int32(listenPort),
		DefaultActions: []elbtypes.Action{{Type: elbtypes.ActionTypeEnumForward, TargetGroupArn: tg}}})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "load balancer active", func() bool {
		out, err := elbc.DescribeLoadBalancers(ctx, &elbv2.DescribeLoadBalancersInput{LoadBalancerArns: []string{st.lbARN}})
		return err == nil && out.LoadBalancers[0].State.Code == elbtypes.LoadBalancerStateEnumActive
	})
	return tg, l.Listeners[0].ListenerArn
}

// admitFront lets the target's group admit the load balancer's group on the ports.
func (st *labStack) admitFront(t *testing.T, ec2c *ec2.Client, perms ...ec2types.IpPermission) {
	t.Helper()
	for i := range perms {
		perms[i].UserIdGroupPairs = []ec2types.UserIdGroupPair{{GroupId: st.front}}
	}
	if _, err := ec2c.AuthorizeSecurityGroupIngress(context.Background(), &ec2.AuthorizeSecurityGroupIngressInput{GroupId: st.targetGroup, IpPermissions: perms}); err != nil {
		t.Fatal(err)
	}
}

func portRule(proto string, port int32, cidrs ...string) ec2types.IpPermission {
	r := ec2types.IpPermission{IpProtocol: aws.String(proto), FromPort: aws.Int32(port), ToPort: aws.Int32(port)}
	for _, c := range cidrs {
		r.IpRanges = append(r.IpRanges, ec2types.IpRange{CidrIp: aws.String(c)})
	}
	return r
}
