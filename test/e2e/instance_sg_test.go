//go:build linux

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"
)

// TestInstanceGroupsEnforcedByLB runs the instance-group cases with moat lb enforcing the
// groups of the instances on its own host: in a loopback world (one namespace whose loopback is
// the whole world, as moat up's), with the kernel fast path and with the userspace proxy, and
// in a routed world where node-a's address is on moat lb's host and everyone else is a host of
// their own.
func TestInstanceGroupsEnforcedByLB(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("network namespaces and nftables need root")
	}
	for i, fastPath := range []string{"kernel", "off"} {
		t.Run("loopback/fast-path="+fastPath, func(t *testing.T) {
			t.Parallel()
			instanceGroupCases(t, loopbackWorld(t, fmt.Sprintf("%d%d", os.Getpid()%10000, i), i, fastPath, "enforce"))
		})
	}
	t.Run("routed", func(t *testing.T) {
		t.Parallel()
		instanceGroupCases(t, routedWorld(t, fmt.Sprintf("%d%d", os.Getpid()%10000, 2), 2, "lb"))
	})
}

// TestInstanceGroupsEnforcedByNode runs the same cases with `moat node` enforcing in node-a's
// namespace, reading the groups from moat lb on another host (namespace) with a read-only key.
func TestInstanceGroupsEnforcedByNode(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("network namespaces and nftables need root")
	}
	w := routedWorld(t, fmt.Sprintf("%d%d", os.Getpid()%10000, 3), 3, "node")
	instanceGroupCases(t, w)
	// Traffic that stays on node-a's host crosses no instance interface, as on AWS: node-a
	// reaches its own NodePort although no rule admits it.
	if err := w.dial(w.nodeA+":30080", w.nodeA); err != nil {
		t.Errorf("node-a cannot reach its own NodePort over loopback: %v", err)
	}
}

// sgWorld is where the cases run: every role has an address, and a network namespace where
// commands act as that host.
type sgWorld struct {
	p                *lbProcess
	nodeA            string // node-a: its NodePort is nodeA:30080
	clientA, clientB string // two clients outside every subnet
	m1, m2, stranger string // members of group "peers", and a non-member in node-a's subnet
	away             string // a server (address:port) node-a can open flows to
	ns               map[string]string
	// denied sums moat_instance_sg_denied_flows_total on the enforcer's /metrics.
	denied func(t *testing.T) float64
	// flowLog is moat lb's --flow-log when it enforces, where each denial gets a line.
	flowLog string
}

// logged waits for the flow log's line of a denial at an instance interface (when moat lb
// enforces; moat node counts denials only).
func (w *sgWorld) logged(t *testing.T, what, direction, source, destination string) {
	t.Helper()
	if w.flowLog == "" {
		return
	}
	waitFor(t, 10*time.Second, what+" in the flow log", func() bool {
		data, _ := os.ReadFile(w.flowLog)
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

// enforceByLB starts moat lb in ns enforcing instance groups (mode enforce or audit), with its
// flow log, and checks that it says so.
func (w *sgWorld) enforceByLB(t *testing.T, ns, nsAddr, dir, mode string, args ...string) {
	t.Helper()
	w.flowLog = filepath.Join(dir, "flows.jsonl")
	w.p = startLBIn(t, []string{"ip", "netns", "exec", ns}, nsAddr, filepath.Join(dir, "lb"),
		append(args, "--instance-sg-mode="+mode, "--flow-log", w.flowLog)...)
	// Its stderr reaches the test through a pipe and a copying goroutine: the lines it wrote
	// before it served may arrive a little after. (On failure the harness prints that stderr.)
	waitFor(t, 10*time.Second, "moat lb to say it enforces instance groups and logs their denials", func() bool {
		out := w.p.stderr.String()
		return strings.Contains(out, "instance security groups enforced") && strings.Contains(out, "denied flows to instances go to the flow log")
	})
	w.denied = func(t *testing.T) float64 { return metricValue(t, w.p, "moat_instance_sg_denied_flows_total") }
}

// inNS runs a command on the host that has address src.
func (w *sgWorld) inNS(src string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", w.ns[src]}, args...)...)
}

// serve runs an echo server on addr, on the host that has the address, until the test ends.
func (w *sgWorld) serve(t *testing.T, addr string) {
	t.Helper()
	cmd := w.inNS(addr[:strings.LastIndexByte(addr, ':')], echoBin, addr)
	cmd.SysProcAttr = dieWithTest()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
}

// dial connects from source to target and reads the greeting (1 s timeouts).
func (w *sgWorld) dial(target, source string) error {
	out, err := w.inNS(source, echoBin, "dial", target, source).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s", strings.TrimSpace(string(out)))
	}
	return nil
}

func (w *sgWorld) reachable(target, source string) bool { return w.dial(target, source) == nil }

// heldConn is one flow kept open by `echoserver hold`.
type heldConn struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

func (w *sgWorld) hold(t *testing.T, target, source string) *heldConn {
	t.Helper()
	cmd := w.inNS(source, echoBin, "hold", target, source)
	cmd.SysProcAttr = dieWithTest()
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &heldConn{cmd: cmd, in: in, out: bufio.NewReader(out)}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	if line, err := h.out.ReadString('\n'); err != nil || !strings.HasPrefix(line, "hello") {
		t.Fatalf("holding a flow from %s to %s: %q %v", source, target, line, err)
	}
	return h
}

// echo sends a line over the held flow and waits for it back (echoserver bounds the wait).
func (h *heldConn) echo() error {
	if _, err := fmt.Fprintln(h.in, "ping"); err != nil {
		return err
	}
	line, err := h.out.ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ping" {
		return fmt.Errorf("echo: %q %v", line, err)
	}
	return nil
}

func ip(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func addNetns(t *testing.T, name string) {
	t.Helper()
	ip(t, "netns", "add", name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	ip(t, "-n", name, "link", "set", "lo", "up")
}

// apiLink joins namespace ns to the host by a veth pair on a /30 of 198.18.8.0/24
// (benchmarking range, inside the test only), the test's own path to moat lb's API. It returns
// the namespace's end.
func apiLink(t *testing.T, id string, n int, ns string) string {
	t.Helper()
	hostEnd, nsEnd := "sgh"+id, "sgn"+id
	octet := 4 * ((2*os.Getpid() + n) % 64) // apart from the leftovers of a killed run
	hostAddr, nsAddr := fmt.Sprintf("198.18.8.%d", octet+1), fmt.Sprintf("198.18.8.%d", octet+2)
	ip(t, "link", "add", hostEnd, "type", "veth", "peer", "name", nsEnd)
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", hostEnd).Run() })
	ip(t, "link", "set", nsEnd, "netns", ns)
	ip(t, "addr", "add", hostAddr+"/30", "dev", hostEnd)
	ip(t, "link", "set", hostEnd, "up")
	ip(t, "-n", ns, "addr", "add", nsAddr+"/30", "dev", nsEnd)
	ip(t, "-n", ns, "link", "set", nsEnd, "up")
	return nsAddr
}

// loopbackInventory puts node-a and the peers on loopback, as moat up's default inventory puts
// its nodes.
const loopbackInventory = `
vpcs:
  - {name: moat, cidr: 127.0.0.0/8, default: true}
subnets:
  - {name: moat-a, vpc: moat, zone: a, cidr: 127.1.0.0/16, tags: {kubernetes.io/role/internal-elb: "1"}}
  - {name: moat-b, vpc: moat, zone: b, cidr: 127.2.0.0/16, tags: {kubernetes.io/role/internal-elb: "1"}}
securityGroups:
  - {name: nodes, vpc: moat, description: the nodes}
  - {name: peers, vpc: moat, description: the peers}
instances:
  - {name: node-a, subnet: moat-a, privateIp: 127.1.0.10, securityGroups: [nodes]}
  - {name: m1, subnet: moat-a, privateIp: 127.1.0.11, securityGroups: [peers]}
  - {name: m2, subnet: moat-a, privateIp: 127.1.0.12, securityGroups: [peers]}
`

// loopbackWorld: moat lb in a namespace of its own whose loopback is the whole world
// (instances at 127.1.0.x, clients at 127.0.0.x), enforcing (or auditing: mode) the groups of
// every instance.
func loopbackWorld(t *testing.T, id string, n int, fastPath, mode string) *sgWorld {
	ns := "moatsg" + id
	addNetns(t, ns)
	nsAddr := apiLink(t, id, n, ns)
	w := &sgWorld{nodeA: "127.1.0.10", clientA: "127.0.0.2", clientB: "127.0.0.3", m1: "127.1.0.11", m2: "127.1.0.12", stranger: "127.1.0.13",
		away: "127.0.0.5:9000", ns: map[string]string{}}
	for _, a := range []string{w.nodeA, w.clientA, w.clientB, w.m1, w.m2, w.stranger, "127.0.0.5"} {
		w.ns[a] = ns
	}
	w.serve(t, w.nodeA+":30080")
	w.serve(t, w.away)
	dir := t.TempDir()
	inventory := filepath.Join(dir, "inventory.yaml")
	if err := os.WriteFile(inventory, []byte(loopbackInventory), 0o600); err != nil {
		t.Fatal(err)
	}
	w.enforceByLB(t, ns, nsAddr, dir, mode, "--inventory", inventory, "--fast-path="+fastPath)
	return w
}

// routedInventory: node-a and the peers in one subnet of a VPC that exists only inside the
// test's namespaces (198.18.0.0/15 is the benchmarking range).
const routedInventory = `
vpcs:
  - {name: v, cidr: 198.18.0.0/16, default: true}
subnets:
  - {name: a, vpc: v, zone: a, cidr: 198.18.1.0/24, tags: {kubernetes.io/role/internal-elb: "1"}}
  - {name: b, vpc: v, zone: b, cidr: 198.18.2.0/24, tags: {kubernetes.io/role/internal-elb: "1"}}
securityGroups:
  - {name: nodes, vpc: v, description: the nodes}
  - {name: peers, vpc: v, description: the peers}
instances:
  - {name: node-a, subnet: a, privateIp: 198.18.1.10, securityGroups: [nodes]}
  - {name: m1, subnet: a, privateIp: 198.18.1.11, securityGroups: [peers]}
  - {name: m2, subnet: a, privateIp: 198.18.1.12, securityGroups: [peers]}
`

// routedWorld: hosts in namespaces of their own around a router that runs moat lb, each on a
// /30 of 198.18.10.0/24 with its addresses as /32s, so that every flow between two hosts is
// routed over veth:
//
//	client A (198.18.0.2) ─┐
//	client B (198.18.0.3) ─┼─ router: moat lb, load balancer addresses 198.18.{1,2}.96/27 ── host (the test's API path)
//	peers (.11, .12, .13) ─┤
//	node-a (198.18.1.10) ──┘  ("node": a host of its own, where moat node runs; "lb": on the router)
//
// With enforcer "node", moat node enforces in node-a's namespace; with "lb", moat lb enforces
// for node-a's address on its own host; with "" nothing enforces yet (w.node starts agents).
func routedWorld(t *testing.T, id string, n int, enforcer string) *sgWorld {
	router := "moatr" + id
	addNetns(t, router)
	if out, err := exec.Command("ip", "netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1").CombinedOutput(); err != nil {
		t.Fatalf("sysctl: %v\n%s", err, out)
	}
	nsAddr := apiLink(t, id, n, router)
	w := &sgWorld{nodeA: "198.18.1.10", clientA: "198.18.0.2", clientB: "198.18.0.3", m1: "198.18.1.11", m2: "198.18.1.12", stranger: "198.18.1.13",
		away: "198.18.0.2:9000", ns: map[string]string{}}
	host := func(k int, name string, addrs ...string) {
		ns := name + id
		addNetns(t, ns)
		gw, self := fmt.Sprintf("198.18.10.%d", 4*k+1), fmt.Sprintf("198.18.10.%d", 4*k+2)
		ip(t, "link", "add", fmt.Sprint("r", k), "netns", router, "type", "veth", "peer", "name", "uplink", "netns", ns)
		ip(t, "-n", router, "addr", "add", gw+"/30", "dev", fmt.Sprint("r", k))
		ip(t, "-n", router, "link", "set", fmt.Sprint("r", k), "up")
		ip(t, "-n", ns, "addr", "add", self+"/30", "dev", "uplink")
		ip(t, "-n", ns, "link", "set", "uplink", "up")
		for _, a := range addrs {
			ip(t, "-n", ns, "addr", "add", a+"/32", "dev", "uplink")
			ip(t, "-n", router, "route", "add", a+"/32", "via", self)
			w.ns[a] = ns
		}
		ip(t, "-n", ns, "route", "add", "default", "via", gw, "src", addrs[0])
	}
	host(0, "moata", w.clientA)
	host(1, "moatb", w.clientB)
	host(2, "moatp", w.m1, w.m2, w.stranger)
	if enforcer == "lb" {
		ip(t, "-n", router, "addr", "add", w.nodeA+"/32", "dev", "lo")
		w.ns[w.nodeA] = router
	} else {
		host(3, "moatn", w.nodeA)
	}
	// The load balancer addresses moat allocates (from the 100th of each subnet) are the
	// router's, as a cloud routes an NLB's addresses to its nodes.
	ip(t, "-n", router, "route", "add", "local", "198.18.1.96/27", "dev", "lo")
	ip(t, "-n", router, "route", "add", "local", "198.18.2.96/27", "dev", "lo")
	w.serve(t, w.nodeA+":30080")
	w.serve(t, w.away)

	dir := t.TempDir()
	inventory := filepath.Join(dir, "inventory.yaml")
	if err := os.WriteFile(inventory, []byte(routedInventory), 0o600); err != nil {
		t.Fatal(err)
	}
	if enforcer == "lb" {
		w.enforceByLB(t, router, nsAddr, dir, "enforce", "--inventory", inventory, "--fast-path=off")
		return w
	}
	w.p = startLBIn(t, []string{"ip", "netns", "exec", router}, nsAddr, filepath.Join(dir, "lb"), "--inventory", inventory, "--instance-sg-mode=off", "--fast-path=off")
	if enforcer == "node" {
		agent := w.startNode(t, filepath.Join(dir, "node"), w.readOnlyCredentials(t))
		agent.waitLog(t, "enforcing instance security groups")
		w.denied = func(t *testing.T) float64 { return agent.metric(t, "moat_instance_sg_denied_flows_total") }
	}
	return w
}

// instanceGroupCases: node-a is reachable only as its group says, inbound and outbound, on new
// flows (an established one outlives a revoke); a rule referencing a group admits its members
// and no one else; through a load balancer, the client the frontend group admits reaches
// node-a's NodePort because node-a's group admits the load balancer's group, not the client.
func instanceGroupCases(t *testing.T, w *sgWorld) {
	ec2c, elbc := w.p.clients(t)
	ctx := context.Background()
	vpc, subnetIDs := vpcSubnets(t, ec2c)
	nodesGroup, peersGroup := groupID(t, ec2c, "nodes"), groupID(t, ec2c, "peers")
	nodePort := w.nodeA + ":30080"
	rule := func(perm ec2types.IpPermission) []ec2types.IpPermission {
		perm.IpProtocol, perm.FromPort, perm.ToPort = aws.String("tcp"), aws.Int32(30080), aws.Int32(30080)
		return []ec2types.IpPermission{perm}
	}
	fromA := rule(ec2types.IpPermission{IpRanges: []ec2types.IpRange{{CidrIp: aws.String(w.clientA + "/32")}}})
	fromPeers := rule(ec2types.IpPermission{UserIdGroupPairs: []ec2types.UserIdGroupPair{{GroupId: peersGroup}}})
	authorize := func(perms []ec2types.IpPermission) {
		t.Helper()
		if _, err := ec2c.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: nodesGroup, IpPermissions: perms}); err != nil {
			t.Fatal(err)
		}
	}
	revoke := func(perms []ec2types.IpPermission) {
		t.Helper()
		if _, err := ec2c.RevokeSecurityGroupIngress(ctx, &ec2.RevokeSecurityGroupIngressInput{GroupId: nodesGroup, IpPermissions: perms}); err != nil {
			t.Fatal(err)
		}
	}

	// Directly: node-a's group has no inbound rule, so nobody gets in.
	waitFor(t, 5*time.Second, "the nodes' group to close node-a", func() bool { return !w.reachable(nodePort, w.clientA) })
	if w.reachable(nodePort, w.clientB) {
		t.Error("client B reached node-a, whose group has no inbound rule")
	}
	authorize(fromA)
	answered := time.Now()
	// Dials of 100 ms, so that the figure logged is not a SYN retransmission's (1 s).
	waitFor(t, 5*time.Second, "the rule for client A to apply", func() bool {
		return w.inNS(w.clientA, echoBin, "dial", nodePort, w.clientA, "100ms").Run() == nil
	})
	t.Logf("client A got in %v after the API answered the authorize", time.Since(answered).Round(time.Millisecond))
	if err := w.dial(nodePort, w.clientB); err == nil || !strings.Contains(err.Error(), "timeout") {
		t.Errorf("client B, which no rule admits, straight to the NodePort: %v, want a timeout", err)
	}
	w.logged(t, "the direct denial of client B", "inbound", w.clientB+":", nodePort)

	// An admitted flow outlives the revoke of the rule that admitted it; new flows do not.
	held := w.hold(t, nodePort, w.clientA)
	revoke(fromA)
	waitFor(t, 5*time.Second, "the revoke of client A's rule to apply", func() bool { return !w.reachable(nodePort, w.clientA) })
	if err := held.echo(); err != nil {
		t.Errorf("the flow established before the revoke died: %v", err)
	}

	// A rule referencing a group admits each member, and not a non-member of the same subnet.
	authorize(fromPeers)
	waitFor(t, 5*time.Second, "the rule for the peers' group to apply", func() bool { return w.reachable(nodePort, w.m1) })
	if !w.reachable(nodePort, w.m2) {
		t.Error("m2, a member of the referenced group, is not admitted")
	}
	if w.reachable(nodePort, w.stranger) {
		t.Error("a non-member in node-a's subnet is admitted by the group reference")
	}
	revoke(fromPeers)

	// Outbound: revoking the allow-all rule keeps node-a from opening flows.
	if !w.reachable(w.away, w.nodeA) {
		t.Fatal("node-a cannot go out with its allow-all outbound rule")
	}
	allOut := []ec2types.IpPermission{{IpProtocol: aws.String("-1"), IpRanges: []ec2types.IpRange{{CidrIp: aws.String("0.0.0.0/0")}}}}
	if _, err := ec2c.RevokeSecurityGroupEgress(ctx, &ec2.RevokeSecurityGroupEgressInput{GroupId: nodesGroup, IpPermissions: allOut}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the revoke of node-a's outbound rule to apply", func() bool { return !w.reachable(w.away, w.nodeA) })
	w.logged(t, "node-a's denied flow out", "outbound", w.nodeA+":", w.away)
	if _, err := ec2c.AuthorizeSecurityGroupEgress(ctx, &ec2.AuthorizeSecurityGroupEgressInput{GroupId: nodesGroup, IpPermissions: allOut}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "node-a's outbound rule to apply again", func() bool { return w.reachable(w.away, w.nodeA) })

	// Through a load balancer whose group admits client A, with node-a as an instance target:
	// node-a's group admits the load balancer's group, not the client.
	front, err := ec2c.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("front"), Description: aws.String("clients"), VpcId: vpc})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ec2c.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: front.GroupId, IpPermissions: []ec2types.IpPermission{
		{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(8080), ToPort: aws.Int32(8080), IpRanges: []ec2types.IpRange{{CidrIp: aws.String(w.clientA + "/32")}}},
	}}); err != nil {
		t.Fatal(err)
	}
	authorize(rule(ec2types.IpPermission{UserIdGroupPairs: []ec2types.UserIdGroupPair{{GroupId: front.GroupId}}}))
	lbOut, err := elbc.CreateLoadBalancer(ctx, &elbv2.CreateLoadBalancerInput{Name: aws.String("sg"), Type: elbtypes.LoadBalancerTypeEnumNetwork,
		Scheme: elbtypes.LoadBalancerSchemeEnumInternal, Subnets: subnetIDs, SecurityGroups: []string{*front.GroupId}})
	if err != nil {
		t.Fatal(err)
	}
	lb := lbOut.LoadBalancers[0]
	lbAddr := w.p.zoneAddress(t, lb, "us-east-1a", dns.TypeA) // in node-a's zone: cross-zone is off
	insts, err := ec2c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{Filters: []ec2types.Filter{{Name: aws.String("private-ip-address"), Values: []string{w.nodeA}}}})
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
	waitFor(t, 10*time.Second, "client A to reach node-a through the load balancer", func() bool { return w.reachable(front8080, w.clientA) })
	if w.reachable(nodePort, w.clientA) {
		t.Error("the client the load balancer admits also reaches node-a directly: node-a's group admits only the load balancer")
	}
	if w.reachable(front8080, w.clientB) {
		t.Error("the client the frontend group denies got through the load balancer")
	}
	// Its SYN was dropped by the listener's socket without a trace; the firewall's log names it.
	if w.flowLog != "" {
		waitFor(t, 10*time.Second, "client B's denial at the listener in the flow log", func() bool {
			data, _ := os.ReadFile(w.flowLog)
			for line := range strings.Lines(string(data)) {
				var e struct {
					Action, Protocol, Client, Reason string
					LoadBalancer                     string `json:"load_balancer"`
					Listener                         string `json:"listener"`
				}
				if json.Unmarshal([]byte(line), &e) == nil && e.Action == "deny" && e.LoadBalancer == *lb.LoadBalancerArn &&
					strings.Contains(e.Listener, ":listener/net/sg/") && e.Protocol == "tcp" && strings.HasPrefix(e.Client, w.clientB+":") && e.Reason == "security_group" {
					return true
				}
			}
			return false
		})
	}
	// Health checks come from the load balancer's address, which node-a's group admits.
	waitFor(t, 30*time.Second, "node-a healthy", func() bool {
		out, err := elbc.DescribeTargetHealth(ctx, &elbv2.DescribeTargetHealthInput{TargetGroupArn: tgARN})
		return err == nil && out.TargetHealthDescriptions[0].TargetHealth.State == elbtypes.TargetHealthStateEnumHealthy
	})
	if n := w.denied(t); n == 0 {
		t.Error("no denied flow counted in moat_instance_sg_denied_flows_total")
	}
}

func groupID(t *testing.T, ec2c *ec2.Client, name string) *string {
	t.Helper()
	out, err := ec2c.DescribeSecurityGroups(context.Background(), &ec2.DescribeSecurityGroupsInput{Filters: []ec2types.Filter{{Name: aws.String("group-name"), Values: []string{name}}}})
	if err != nil || len(out.SecurityGroups) != 1 {
		t.Fatalf("group %s: %v", name, err)
	}
	return out.SecurityGroups[0].GroupId
}
