//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"
	"github.com/miekg/dns"

	"github.com/moatlb/moat/internal/explain"
)

// TestInstanceGroupThroughLBProperty draws random rules for a target instance's group, for the
// frontend group of a load balancer that forwards to it, and for that group's outbound side, and
// checks with real connections that what clients get — through the load balancer, and straight
// to the target — is what a reference written from AWS's rules says:
//
//   - through the load balancer: the frontend group admits the client on the listener port, the
//     load balancer's outbound rules allow the target's address and port, and the target's inbound
//     rules admit the load balancer — its group by reference, or its zone address by CIDR. The
//     client's own address, which the target sees (client IP preservation), plays no part there.
//   - straight to the target: the target's inbound rules admit the client's address.
//
// It runs with moat lb enforcing the instance groups on its host, with the kernel fast path and
// with the userspace proxy, and auditing (direct flows then all pass, and the denials are
// counted). MOAT_PROPERTY_SEED replays a seed; the default one is fixed, so a run is repeatable.
func TestInstanceGroupThroughLBProperty(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("network namespaces and nftables need root")
	}
	seed := uint64(1)
	if s := os.Getenv("MOAT_PROPERTY_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("MOAT_PROPERTY_SEED=%q: %v", s, err)
		}
	}
	t.Logf("seed %d (replay with MOAT_PROPERTY_SEED=%d)", seed, seed)
	for i, mode := range []struct{ fastPath, sgMode string }{{"kernel", "enforce"}, {"off", "enforce"}, {"kernel", "audit"}} {
		t.Run(fmt.Sprintf("fast-path=%s/instance-sg-mode=%s", mode.fastPath, mode.sgMode), func(t *testing.T) {
			t.Parallel()
			n := 4 + i // apart from the other instance-group tests' API links
			w := loopbackWorld(t, fmt.Sprintf("%d%d", os.Getpid()%10000, n), n, mode.fastPath, mode.sgMode)
			throughLBProperty(t, w, rand.New(rand.NewPCG(seed, uint64(i))), mode.sgMode == "audit")
		})
	}
}

// lbProp is the property's fixture in a loopback world: a load balancer with the frontend group
// front, listening on listenPort, forwarding to node-a's port 30080 (an instance target).
type lbProp struct {
	w          *sgWorld
	ec2        *ec2.Client
	front      *string
	frontAddr  string // the load balancer's address in node-a's zone (cross-zone is off)
	listenPort int
	nodes      *string // node-a's group
	peers      *string // m1's group, which carries the marker of the firewall's program
	// Each group's rules now, to revoke in the next round.
	nodesIn, frontIn, frontOut, peersIn []ec2types.IpPermission
}

const propTargetPort = 30080

func throughLBProperty(t *testing.T, w *sgWorld, rng *rand.Rand, audit bool) {
	rounds, probes := 12, 24
	if testing.Short() {
		rounds, probes = 6, 16
	}
	ec2c, elbc := w.p.clients(t)
	ctx := context.Background()
	vpc, subnetIDs := vpcSubnets(t, ec2c)
	f := &lbProp{w: w, ec2: ec2c, listenPort: 8080, nodes: groupID(t, ec2c, "nodes"), peers: groupID(t, ec2c, "peers")}
	front, err := ec2c.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("front"), Description: aws.String("clients"), VpcId: vpc})
	if err != nil {
		t.Fatal(err)
	}
	f.front = front.GroupId
	// A new group may send anywhere, as on AWS.
	f.frontOut = []ec2types.IpPermission{{IpProtocol: aws.String("-1"), IpRanges: []ec2types.IpRange{{CidrIp: aws.String("0.0.0.0/0")}}}}
	lbOut, err := elbc.CreateLoadBalancer(ctx, &elbv2.CreateLoadBalancerInput{Name: aws.String("prop"), Type: elbtypes.LoadBalancerTypeEnumNetwork,
		Scheme: elbtypes.LoadBalancerSchemeEnumInternal, Subnets: subnetIDs, SecurityGroups: []string{*f.front}})
	if err != nil {
		t.Fatal(err)
	}
	lb := lbOut.LoadBalancers[0]
	f.frontAddr = w.p.zoneAddress(t, lb, "us-east-1a", dns.TypeA)
	insts, err := ec2c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{Filters: []ec2types.Filter{{Name: aws.String("private-ip-address"), Values: []string{w.nodeA}}}})
	if err != nil {
		t.Fatal(err)
	}
	nodeID := *insts.Reservations[0].Instances[0].InstanceId
	tg, err := elbc.CreateTargetGroup(ctx, &elbv2.CreateTargetGroupInput{Name: aws.String("prop"), Protocol: elbtypes.ProtocolEnumTcp, Port: aws.Int32(propTargetPort),
		VpcId: vpc, TargetType: elbtypes.TargetTypeEnumInstance})
	if err != nil {
		t.Fatal(err)
	}
	tgARN := tg.TargetGroups[0].TargetGroupArn
	if _, err := elbc.RegisterTargets(ctx, &elbv2.RegisterTargetsInput{TargetGroupArn: tgARN, Targets: []elbtypes.TargetDescription{{Id: aws.String(nodeID)}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := elbc.CreateListener(ctx, &elbv2.CreateListenerInput{LoadBalancerArn: lb.LoadBalancerArn, Protocol: elbtypes.ProtocolEnumTcp, Port: aws.Int32(int32(f.listenPort)),
		DefaultActions: []elbtypes.Action{{Type: elbtypes.ActionTypeEnumForward, TargetGroupArn: tgARN}}}); err != nil {
		t.Fatal(err)
	}
	frontAddr := netip.MustParseAddr(f.frontAddr)
	frontEnd := fmt.Sprintf("%s:%d", f.frontAddr, f.listenPort)
	target := fmt.Sprintf("%s:%d", w.nodeA, propTargetPort)
	deniedAtTarget := func() float64 {
		return metricValue(t, w.p, "moat_instance_sg_denied_flows_total", `instance="`+nodeID+`"`, `direction="inbound"`)
	}
	deniedBefore := deniedAtTarget()
	// How often each of the target's and the outbound side's decisions kept the load balancer
	// out, so that a run shows what it covered.
	var directDenials, lbAdmits, outboundDenies, targetDenies int

	for round := range rounds {
		nodesIn, frontIn, frontOut := f.draw(rng, frontAddr)
		marker := netip.AddrFrom4([4]byte{127, 0, 0, byte(200 + round)})
		f.apply(t, marker, nodesIn, frontIn, frontOut)
		// The rules are in force once both markers are: the data plane then forwards flows by a
		// state with all of them, and the firewall enforces one.
		f.waitMarkers(t, marker, frontEnd, audit)
		outboundOK, targetOK := refAdmits(frontOut, propTargetPort, netip.MustParseAddr(w.nodeA)), refAdmits(nodesIn, propTargetPort, frontAddr, *f.front)
		if !outboundOK {
			outboundDenies++
		}
		if !targetOK {
			targetDenies++
		}

		var wg sync.WaitGroup
		limit := make(chan struct{}, 8) // each probe is a process; a 2-core machine runs few at once
		for range probes {
			client := netip.AddrFrom4([4]byte{127, 0, 0, byte(2 + rng.IntN(126))})
			wantLB := refAdmits(frontIn, f.listenPort, client) && outboundOK && targetOK
			wantDirect := refAdmits(nodesIn, propTargetPort, client)
			if !wantDirect {
				directDenials++
			}
			if wantLB {
				lbAdmits++
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				limit <- struct{}{}
				defer func() { <-limit }()
				errLB := f.dial(frontEnd, client)
				if (errLB == nil) != wantLB {
					t.Errorf("round %d: client %s through the load balancer: %v, the reference admits: %v\n%s", round, client, errLB, wantLB, f.describe(nodesIn, frontIn, frontOut))
				}
				// moat explain must give the verdict the data plane acted on, and the reference's
				// reason for it.
				wantVerdict := explain.Allowed
				switch {
				case !refAdmits(frontIn, f.listenPort, client):
					wantVerdict = explain.DroppedByLoadBalancerGroup
				case !outboundOK || !targetOK:
					wantVerdict = explain.DroppedByTargetGroup
				}
				f.checkExplain(t, client, frontEnd, errLB, wantVerdict)
				errDirect := f.dial(target, client)
				gotDirect := errDirect == nil
				wantVerdict = explain.Allowed
				if !wantDirect && !audit {
					wantVerdict = explain.DroppedByTargetGroup
				}
				f.checkExplain(t, client, target, errDirect, wantVerdict)
				switch {
				case audit && !gotDirect:
					t.Errorf("round %d: client %s straight to the target was dropped in audit mode", round, client)
				case !audit && gotDirect != wantDirect:
					t.Errorf("round %d: client %s straight to the target: %v, the reference admits: %v\n%s", round, client, errDirect, wantDirect, f.describe(nodesIn, frontIn, frontOut))
				}
			}()
		}
		wg.Wait()
	}
	// Each direct flow the reference denies is counted, dropped or (audit) let through: in audit
	// mode exactly once; enforcing, a retransmitted SYN may count again.
	var counted float64
	waitFor(t, 10*time.Second, fmt.Sprintf("%d denied direct flows counted", directDenials), func() bool {
		counted = deniedAtTarget() - deniedBefore
		return counted >= float64(directDenials)
	})
	if audit && counted != float64(directDenials) {
		t.Errorf("%v denied direct flows counted in audit mode, the reference denies %d", counted, directDenials)
	}
	t.Logf("%d rounds of %d probes: the reference admits %d through the load balancer, denies %d straight to the target; in %d rounds the outbound rules, in %d the target's, keep the load balancer out",
		rounds, probes, lbAdmits, directDenials, outboundDenies, targetDenies)

	// With its only target deregistered (draining), the load balancer has no target for a new
	// flow of a client its group admits (the last round's marker): it resets it, and moat
	// explain, asked through the CLI, says so and what would help.
	if _, err := elbc.DeregisterTargets(ctx, &elbv2.DeregisterTargetsInput{TargetGroupArn: tgARN, Targets: []elbtypes.TargetDescription{{Id: aws.String(nodeID)}}}); err != nil {
		t.Fatal(err)
	}
	marker := netip.AddrFrom4([4]byte{127, 0, 0, byte(200 + rounds - 1)})
	waitFor(t, 10*time.Second, "explain to see the target draining", func() bool {
		return f.explain(t, marker, frontEnd).Paths[0].Verdict == explain.NoHealthyTarget
	})
	f.checkExplain(t, marker, frontEnd, f.dial(frontEnd, marker), explain.NoHealthyTarget)
	out, err := exec.Command(moatBin, "explain", "--endpoint-url", w.p.API, "--credentials-file", w.p.Creds, "--region", "us-east-1",
		"--from", marker.String(), "--to", frontEnd).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "NO_HEALTHY_TARGET") || !strings.Contains(string(out), "aws elbv2 register-targets --target-group-arn "+*tgARN) {
		t.Errorf("moat explain: %v\n%s", err, out)
	}
}

// explain asks moat lb what it does with a flow from client to target (address:port).
func (f *lbProp) explain(t *testing.T, client netip.Addr, target string) explain.Answer {
	t.Helper()
	creds, err := f.w.p.config(t).Credentials.Retrieve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	c := explain.Client{Endpoint: f.w.p.API, Region: "us-east-1", Credentials: credentials.StaticCredentialsProvider{Value: creds}}
	a, err := c.Ask(context.Background(), explain.Query{From: client.String(), To: target})
	if err != nil {
		t.Fatalf("explain %s → %s: %v", client, target, err)
	}
	if len(a.Paths) != 1 {
		t.Fatalf("explain %s → %s: %d paths, want 1: %+v", client, target, len(a.Paths), a)
	}
	return a
}

// checkExplain checks moat explain's verdict on a flow from client to target against want (the
// reference's) and against dialErr, what the flow met: admitted, dropped (a timeout), or reset by
// the load balancer (dropped by the targets' groups, or no target).
func (f *lbProp) checkExplain(t *testing.T, client netip.Addr, target string, dialErr error, want string) {
	t.Helper()
	a := f.explain(t, client, target)
	got := a.Paths[0].Verdict
	observed := map[string]string{explain.Allowed: "admitted", explain.DroppedByLoadBalancerGroup: "dropped", explain.DroppedByTargetGroup: "reset", explain.NoHealthyTarget: "reset"}
	if !strings.Contains(target, f.frontAddr) && got == explain.DroppedByTargetGroup {
		observed[got] = "dropped" // straight to the target, its firewall drops
	}
	met := "reset"
	switch {
	case dialErr == nil:
		met = "admitted"
	case strings.Contains(dialErr.Error(), "timeout"):
		met = "dropped"
	}
	if got != want || observed[got] != met {
		steps, _ := json.MarshalIndent(a.Paths[0], "  ", "  ")
		t.Errorf("explain %s → %s: %s, the reference says %s and the flow was %s (%v)\n  %s", client, target, got, want, met, dialErr, steps)
	}
}

// draw returns random rules: the target group's inbound ones, the frontend group's inbound and
// outbound ones. Peers mix a reference to the frontend group, CIDRs that do or do not cover the
// load balancer's address, CIDRs of clients (which admit nobody through the load balancer), and
// CIDRs that cover both; ports and ranges land around the target's and listener's ports.
func (f *lbProp) draw(rng *rand.Rand, lbAddr netip.Addr) (nodesIn, frontIn, frontOut []refRule) {
	clientCIDR := func() netip.Prefix {
		return netip.PrefixFrom(netip.AddrFrom4([4]byte{127, 0, 0, byte(rng.IntN(128))}), 25+rng.IntN(8)).Masked()
	}
	ports := func(r *refRule, port int) {
		if rng.IntN(5) == 0 {
			r.proto = "-1"
			return
		}
		r.proto, r.from = "tcp", port-rng.IntN(3)
		r.to = r.from + rng.IntN(4)
	}
	for range 1 + rng.IntN(3) {
		var r refRule
		ports(&r, propTargetPort)
		switch rng.IntN(5) {
		case 0:
			r.group = *f.front
		case 1: // around the load balancer's address: a /27 holds it, a /32 or /30 may miss it
			b := lbAddr.As4()
			b[3] += byte(rng.IntN(5)) - 2
			r.cidr = netip.PrefixFrom(netip.AddrFrom4(b), []int{27, 30, 32}[rng.IntN(3)]).Masked()
		case 2, 3:
			r.cidr = clientCIDR()
		default: // clients and the load balancer alike
			r.cidr = netip.MustParsePrefix([]string{"127.0.0.0/8", "127.0.0.0/14"}[rng.IntN(2)])
		}
		nodesIn = append(nodesIn, r)
	}
	for range 1 + rng.IntN(6) {
		r := refRule{cidr: clientCIDR()}
		ports(&r, f.listenPort)
		frontIn = append(frontIn, r)
	}
	if rng.IntN(3) == 0 {
		return nodesIn, frontIn, []refRule{{proto: "-1", cidr: netip.MustParsePrefix("0.0.0.0/0")}}
	}
	for range 1 + rng.IntN(2) {
		r := refRule{cidr: netip.MustParsePrefix([]string{"127.1.0.10/32", "127.1.0.0/16", "127.1.0.12/30", "127.2.0.0/16"}[rng.IntN(4)])}
		ports(&r, propTargetPort)
		frontOut = append(frontOut, r)
	}
	return nodesIn, frontIn, frontOut
}

// apply replaces the groups' rules through the API: the target's, the frontend's (with a rule
// admitting marker), and last m1's group, which then admits only marker.
func (f *lbProp) apply(t *testing.T, marker netip.Addr, nodesIn, frontIn, frontOut []refRule) {
	t.Helper()
	ctx := context.Background()
	markerRule := refRule{proto: "tcp", from: f.listenPort, to: f.listenPort, cidr: netip.PrefixFrom(marker, 32)}
	replace := func(group *string, egress bool, current *[]ec2types.IpPermission, rules []refRule) {
		t.Helper()
		var err error
		if len(*current) > 0 {
			if egress {
				_, err = f.ec2.RevokeSecurityGroupEgress(ctx, &ec2.RevokeSecurityGroupEgressInput{GroupId: group, IpPermissions: *current})
			} else {
				_, err = f.ec2.RevokeSecurityGroupIngress(ctx, &ec2.RevokeSecurityGroupIngressInput{GroupId: group, IpPermissions: *current})
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		*current = toPermissions(rules)
		if egress {
			_, err = f.ec2.AuthorizeSecurityGroupEgress(ctx, &ec2.AuthorizeSecurityGroupEgressInput{GroupId: group, IpPermissions: *current})
		} else {
			_, err = f.ec2.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: group, IpPermissions: *current})
		}
		if err != nil {
			t.Fatalf("%v\n%s", err, f.describe(nodesIn, frontIn, frontOut))
		}
	}
	replace(f.front, true, &f.frontOut, frontOut)
	replace(f.nodes, false, &f.nodesIn, nodesIn)
	replace(f.front, false, &f.frontIn, append([]refRule{markerRule}, frontIn...))
	replace(f.peers, false, &f.peersIn, []refRule{{proto: "tcp", from: propTargetPort, to: propTargetPort, cidr: netip.PrefixFrom(marker, 32)}})
}

// waitMarkers waits until marker, which only this round's rules admit, is admitted by the
// frontend group (its flow is no longer dropped: it gets in or, when the target's rules keep the
// load balancer out, is reset), and (enforcing) by m1's group (a flow to m1's closed port is
// refused rather than dropped).
func (f *lbProp) waitMarkers(t *testing.T, marker netip.Addr, frontEnd string, audit bool) {
	t.Helper()
	notDropped := func(target string) func() bool {
		return func() bool {
			err := f.dial(target, marker)
			return err == nil || !strings.Contains(err.Error(), "timeout")
		}
	}
	waitFor(t, 10*time.Second, "the frontend group's marker rule for "+marker.String(), notDropped(frontEnd))
	if !audit {
		waitFor(t, 10*time.Second, "m1's group's marker rule for "+marker.String(), notDropped(fmt.Sprintf("%s:%d", f.w.m1, propTargetPort)))
	}
}

// dial connects from a client address of the loopback world (whose one namespace has them all)
// to target, as sgWorld.dial does.
func (f *lbProp) dial(target string, client netip.Addr) error {
	out, err := f.w.inNS(f.w.clientA, echoBin, "dial", target, client.String()).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s", strings.TrimSpace(string(out)))
	}
	return nil
}

func (f *lbProp) describe(nodesIn, frontIn, frontOut []refRule) string {
	return fmt.Sprintf("  target inbound %v\n  frontend inbound %v\n  frontend outbound %v\n  (frontend group %s)", nodesIn, frontIn, frontOut, *f.front)
}
