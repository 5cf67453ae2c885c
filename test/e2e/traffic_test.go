package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"
	"github.com/miekg/dns"
)

// backend is a TCP server standing in for a pod: it greets every connection and echoes lines.
type backend struct {
	ln      net.Listener
	mu      sync.Mutex
	sources map[string]int // connections by source address
}

func (b *backend) from(ip string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sources[ip]
}

func startBackend(t *testing.T, addr string) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{ln: ln, sources: map[string]int{}}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			b.sources[c.RemoteAddr().(*net.TCPAddr).IP.String()]++
			b.mu.Unlock()
			go func() {
				defer c.Close()
				fmt.Fprintf(c, "hello from %s\n", ln.Addr())
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return b
}

func (b *backend) port() int { return b.ln.Addr().(*net.TCPAddr).Port }

// freePort returns a port nothing listens on, on any address.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// dialFrom connects from a chosen loopback source address and reads the greeting.
func dialFrom(src, dst string, timeout time.Duration) (net.Conn, string, error) {
	d := net.Dialer{Timeout: timeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", dst)
	if err != nil {
		return nil, "", err
	}
	return greeted(c, timeout)
}

// greeted reads the backend's greeting from a new connection, within timeout.
func greeted[C net.Conn](c C, timeout time.Duration) (C, string, error) {
	var none C
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		c.Close()
		return none, "", err
	}
	_ = c.SetReadDeadline(time.Time{})
	return c, line, nil
}

// TestTrafficThroughSecurityGroups runs moat lb as a process and checks with real connections
// what the seed article promises: the allowed client reaches the application through the load
// balancer's DNS name, the denied client never reaches it, and a rule change applies to new
// flows within a second without cutting established ones.
func TestTrafficThroughSecurityGroups(t *testing.T) {
	p := startLB(t, t.TempDir())
	ec2c, elbc := p.clients(t)
	ctx := context.Background()
	be := startBackend(t, "127.1.0.50:0")
	listenPort := freePort(t)

	st := createStack(t, p, "web", be.port(), listenPort, "127.0.0.2/32", true)
	lb, tg, sg, allowed := st.lb, st.tg, st.sg, st.rule

	// The DNS name resolves, through moat lb's DNS server, to the zone addresses.
	front := st.front
	zoneA, _, _ := net.SplitHostPort(front)
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(*lb.DNSName), dns.TypeA)
	r, err := dns.Exchange(q, p.DNS)
	if err != nil {
		t.Fatal(err)
	}
	var resolved []string
	for _, rr := range r.Answer {
		resolved = append(resolved, rr.(*dns.A).A.String())
	}
	if !strings.Contains(strings.Join(resolved, ","), zoneA) {
		t.Fatalf("%s resolved to %v, want %s among them", *lb.DNSName, resolved, zoneA)
	}

	// Allowed client: its bytes reach the backend and come back.
	conn, greeting, err := dialFrom("127.0.0.2", front, 2*time.Second)
	if err != nil {
		t.Fatalf("allowed client: %v\n%s", err, p.stderr)
	}
	defer conn.Close()
	if !strings.HasPrefix(greeting, "hello from 127.1.0.50") {
		t.Errorf("greeting %q", greeting)
	}
	if be.from("127.0.0.2") != 1 {
		t.Errorf("the backend saw the allowed client %d times by its own address", be.from("127.0.0.2"))
	}
	// Denied client: the SYN is dropped, so it times out and the backend sees nothing; the drop
	// is counted.
	dropped := metricValue(t, p, "moat_dataplane_listener_dropped_packets_total")
	if c, _, err := dialFrom("127.0.0.3", front, 500*time.Millisecond); err == nil {
		c.Close()
		t.Fatal("denied client got through")
	} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Errorf("denied client: %v, want a timeout (silent drop)", err)
	}
	if n := be.from("127.0.0.3"); n != 0 {
		t.Errorf("the backend saw %d connections from the denied client", n)
	}
	waitFor(t, 5*time.Second, "the denied SYNs to be counted", func() bool {
		return metricValue(t, p, "moat_dataplane_listener_dropped_packets_total") > dropped
	})

	// Revoke: new flows from 127.0.0.2 are denied within a second; the established one lives on.
	if _, err := ec2c.RevokeSecurityGroupIngress(ctx, &ec2.RevokeSecurityGroupIngressInput{GroupId: sg, IpPermissions: []ec2types.IpPermission{allowed}}); err != nil {
		t.Fatal(err)
	}
	revoked := time.Now()
	waitFor(t, time.Second, "revoke to apply", func() bool {
		c, _, err := dialFrom("127.0.0.2", front, 200*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	t.Logf("revoke applied to new flows after %v", time.Since(revoked).Round(time.Millisecond))
	fmt.Fprintln(conn, "still here")
	_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	if echo, err := bufio.NewReader(conn).ReadString('\n'); err != nil || echo != "still here\n" {
		t.Errorf("established flow after revoke: %q, %v", echo, err)
	}

	// A rule whose source is a security group admits the instances carrying it: node-a
	// (127.1.0.10) carries moat-nodes, the client at 127.0.0.2 does not.
	nodes, err := ec2c.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{Filters: []ec2types.Filter{{Name: aws.String("group-name"), Values: []string{"moat-nodes"}}}})
	if err != nil {
		t.Fatal(err)
	}
	byGroup := ec2types.IpPermission{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(int32(listenPort)), ToPort: aws.Int32(int32(listenPort)),
		UserIdGroupPairs: []ec2types.UserIdGroupPair{{GroupId: nodes.SecurityGroups[0].GroupId}}}
	if _, err := ec2c.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: sg, IpPermissions: []ec2types.IpPermission{byGroup}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, "the group rule to admit node-a", func() bool {
		c, _, err := dialFrom("127.1.0.10", front, 200*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	if c, _, err := dialFrom("127.0.0.2", front, 300*time.Millisecond); err == nil {
		c.Close()
		t.Error("a client outside the group was admitted by the group rule")
	}

	// Health checks move the target to healthy (interval 5 s, threshold 2).
	waitFor(t, 30*time.Second, "target healthy", func() bool {
		out, err := elbc.DescribeTargetHealth(ctx, &elbv2.DescribeTargetHealthInput{TargetGroupArn: tg.TargetGroupArn})
		return err == nil && len(out.TargetHealthDescriptions) == 1 && out.TargetHealthDescriptions[0].TargetHealth.State == elbtypes.TargetHealthStateEnumHealthy
	})

	// Now that zone a has a healthy target and zone b none, the name answers with zone a only.
	r, err = dns.Exchange(q, p.DNS)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != zoneA {
		t.Errorf("with a healthy target in zone a only, %s resolved to %v, want [%s]", *lb.DNSName, r.Answer, zoneA)
	}

	// Per-zone names answer with their zone's address, healthy or not.
	zq := new(dns.Msg)
	zq.SetQuestion(dns.Fqdn("us-east-1b."+*lb.DNSName), dns.TypeA)
	if r, err = dns.Exchange(zq, p.DNS); err != nil {
		t.Fatal(err)
	}
	if len(r.Answer) != 1 || strings.HasPrefix(r.Answer[0].(*dns.A).A.String(), "127.1.") {
		t.Errorf("us-east-1b.%s resolved to %v, want zone b's address", *lb.DNSName, r.Answer)
	}

	// A listener on a port something else holds on the load balancer's address fails clearly.
	taken, err := net.Listen("tcp", net.JoinHostPort(zoneA, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	_, err = elbc.CreateListener(ctx, &elbv2.CreateListenerInput{LoadBalancerArn: lb.LoadBalancerArn, Protocol: elbtypes.ProtocolEnumTcp,
		Port: aws.Int32(int32(taken.Addr().(*net.TCPAddr).Port)), DefaultActions: []elbtypes.Action{{Type: elbtypes.ActionTypeEnumForward, TargetGroupArn: tg.TargetGroupArn}}})
	var icr *elbtypes.InvalidConfigurationRequestException
	if !errors.As(err, &icr) || !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("listener on a taken port: %v, want InvalidConfigurationRequest naming the cause", err)
	}

	// Deleting the load balancer makes its address stop answering.
	if _, err := elbc.DeleteLoadBalancer(ctx, &elbv2.DeleteLoadBalancerInput{LoadBalancerArn: lb.LoadBalancerArn}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "address to stop answering", func() bool {
		c, err := net.DialTimeout("tcp", front, 200*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
}

// stack is a load balancer built through the API for a test: a frontend group admitting one
// CIDR on the listener port, an internal NLB in both subnets, and an ip target group holding
// one backend in zone a.
type stack struct {
	lb   elbtypes.LoadBalancer
	tg   elbtypes.TargetGroup
	sg   *string
	rule ec2types.IpPermission
	// front is zone a's address and the listener port.
	front string
}

// vpcSubnets returns the VPC of moat lb's inventory and its subnets.
func vpcSubnets(t *testing.T, ec2c *ec2.Client) (vpc *string, subnetIDs []string) {
	t.Helper()
	out, err := ec2c.DescribeSubnets(context.Background(), &ec2.DescribeSubnetsInput{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range out.Subnets {
		subnetIDs = append(subnetIDs, *s.SubnetId)
	}
	return out.Subnets[0].VpcId, subnetIDs
}

func createStack(t *testing.T, p *lbProcess, name string, backendPort, listenPort int, clients string, preserveClientIP bool) stack {
	t.Helper()
	ec2c, elbc := p.clients(t)
	ctx := context.Background()
	vpc, subnetIDs := vpcSubnets(t, ec2c)

	sg, err := ec2c.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String(name + "-clients"), Description: aws.String("who may reach " + name), VpcId: vpc})
	if err != nil {
		t.Fatal(err)
	}
	rule := ec2types.IpPermission{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(int32(listenPort)), ToPort: aws.Int32(int32(listenPort)), IpRanges: []ec2types.IpRange{{CidrIp: aws.String(clients)}}}
	if _, err := ec2c.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: sg.GroupId, IpPermissions: []ec2types.IpPermission{rule}}); err != nil {
		t.Fatal(err)
	}
	lbOut, err := elbc.CreateLoadBalancer(ctx, &elbv2.CreateLoadBalancerInput{Name: aws.String(name), Type: elbtypes.LoadBalancerTypeEnumNetwork, Scheme: elbtypes.LoadBalancerSchemeEnumInternal, Subnets: subnetIDs, SecurityGroups: []string{*sg.GroupId}})
	if err != nil {
		t.Fatal(err)
	}
	lb := lbOut.LoadBalancers[0]
	tgOut, err := elbc.CreateTargetGroup(ctx, &elbv2.CreateTargetGroupInput{
		Name: aws.String(name), Protocol: elbtypes.ProtocolEnumTcp, Port: aws.Int32(int32(backendPort)), VpcId: vpc, TargetType: elbtypes.TargetTypeEnumIp,
		HealthCheckIntervalSeconds: aws.Int32(5), HealthyThresholdCount: aws.Int32(2), UnhealthyThresholdCount: aws.Int32(2),
	})
	if err != nil {
		t.Fatal(err)
	}
	tg := tgOut.TargetGroups[0]
	// Cross-zone is off, as on AWS: the one target, in zone a, serves zone a's address.
	if _, err := elbc.RegisterTargets(ctx, &elbv2.RegisterTargetsInput{TargetGroupArn: tg.TargetGroupArn, Targets: []elbtypes.TargetDescription{{Id: aws.String("127.1.0.50"), Port: aws.Int32(int32(backendPort))}}}); err != nil {
		t.Fatal(err)
	}
	if preserveClientIP {
		// The backend then sees clients' own addresses (moat binds the upstream socket to them on loopback).
		if _, err := elbc.ModifyTargetGroupAttributes(ctx, &elbv2.ModifyTargetGroupAttributesInput{TargetGroupArn: tg.TargetGroupArn,
			Attributes: []elbtypes.TargetGroupAttribute{{Key: aws.String("preserve_client_ip.enabled"), Value: aws.String("true")}}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := elbc.CreateListener(ctx, &elbv2.CreateListenerInput{LoadBalancerArn: lb.LoadBalancerArn, Protocol: elbtypes.ProtocolEnumTcp, Port: aws.Int32(int32(listenPort)),
		DefaultActions: []elbtypes.Action{{Type: elbtypes.ActionTypeEnumForward, TargetGroupArn: tg.TargetGroupArn}}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "load balancer active", func() bool {
		out, err := elbc.DescribeLoadBalancers(ctx, &elbv2.DescribeLoadBalancersInput{LoadBalancerArns: []string{*lb.LoadBalancerArn}})
		return err == nil && out.LoadBalancers[0].State.Code == elbtypes.LoadBalancerStateEnumActive
	})
	st := stack{lb: lb, tg: tg, sg: sg.GroupId, rule: rule}
	st.front = net.JoinHostPort(p.zoneAddress(t, lb, "us-east-1a", dns.TypeA), fmt.Sprint(listenPort))
	return st
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
