package e2e

import (
	"context"
	"github.com/miekg/dns"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"
)

// TestUDPThroughSecurityGroups runs a UDP listener of moat lb as a process: the admitted client's
// datagrams reach the echo backend and come back, the other client's vanish.
func TestUDPThroughSecurityGroups(t *testing.T) {
	p := startLB(t, t.TempDir())
	ec2c, elbc := p.clients(t)
	ctx := context.Background()

	echo, err := net.ListenPacket("udp", "127.1.0.50:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := echo.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = echo.WriteTo(buf[:n], from)
		}
	}()
	echoPort := echo.LocalAddr().(*net.UDPAddr).Port
	// UDP target groups are health-checked over TCP; this stands in for the target's check port.
	hc := startBackend(t, "127.1.0.50:0")
	listenPort := freePort(t)

	vpc, subnetIDs := vpcSubnets(t, ec2c)
	sg, err := ec2c.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("dns-clients"), Description: aws.String("udp clients"), VpcId: vpc})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ec2c.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: sg.GroupId, IpPermissions: []ec2types.IpPermission{
		{IpProtocol: aws.String("udp"), FromPort: aws.Int32(int32(listenPort)), ToPort: aws.Int32(int32(listenPort)), IpRanges: []ec2types.IpRange{{CidrIp: aws.String("127.0.0.2/32")}}},
	}}); err != nil {
		t.Fatal(err)
	}
	lbOut, err := elbc.CreateLoadBalancer(ctx, &elbv2.CreateLoadBalancerInput{Name: aws.String("udp"), Type: elbtypes.LoadBalancerTypeEnumNetwork,
		Scheme: elbtypes.LoadBalancerSchemeEnumInternal, Subnets: subnetIDs, SecurityGroups: []string{*sg.GroupId}})
	if err != nil {
		t.Fatal(err)
	}
	lb := lbOut.LoadBalancers[0]
	tgOut, err := elbc.CreateTargetGroup(ctx, &elbv2.CreateTargetGroupInput{Name: aws.String("udp"), Protocol: elbtypes.ProtocolEnumUdp, Port: aws.Int32(int32(echoPort)),
		VpcId: vpc, TargetType: elbtypes.TargetTypeEnumIp, HealthCheckProtocol: elbtypes.ProtocolEnumTcp, HealthCheckPort: aws.String(strconv.Itoa(hc.port()))})
	if err != nil {
		t.Fatal(err)
	}
	tg := tgOut.TargetGroups[0]
	if _, err := elbc.RegisterTargets(ctx, &elbv2.RegisterTargetsInput{TargetGroupArn: tg.TargetGroupArn, Targets: []elbtypes.TargetDescription{{Id: aws.String("127.1.0.50"), Port: aws.Int32(int32(echoPort))}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := elbc.CreateListener(ctx, &elbv2.CreateListenerInput{LoadBalancerArn: lb.LoadBalancerArn, Protocol: elbtypes.ProtocolEnumUdp, Port: aws.Int32(int32(listenPort)),
		DefaultActions: []elbtypes.Action{{Type: elbtypes.ActionTypeEnumForward, TargetGroupArn: tg.TargetGroupArn}}}); err != nil {
		t.Fatal(err)
	}
	front := net.JoinHostPort(p.zoneAddress(t, lb, "us-east-1a", dns.TypeA), strconv.Itoa(listenPort))
	waitFor(t, 10*time.Second, "load balancer active", func() bool {
		out, err := elbc.DescribeLoadBalancers(ctx, &elbv2.DescribeLoadBalancersInput{LoadBalancerArns: []string{*lb.LoadBalancerArn}})
		return err == nil && out.LoadBalancers[0].State.Code == elbtypes.LoadBalancerStateEnumActive
	})

	// The listener serves once the data plane has applied it, just after CreateListener answers
	// (a datagram before that is refused).
	waitFor(t, 10*time.Second, "the admitted client's echo", func() bool { return udpEcho(t, "127.0.0.2", front) })
	if udpEcho(t, "127.0.0.3", front) {
		t.Error("the denied client's datagram got through")
	}
}

// udpEcho sends a datagram from src to dst and reports whether the same bytes came back.
func udpEcho(t *testing.T, src, dst string) bool {
	t.Helper()
	raddr, err := net.ResolveUDPAddr("udp", dst)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(src)}, raddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 64)
	for range 3 { // UDP may lose a datagram; three tries, then it is denied
		if _, err := c.Write([]byte("ping from " + src)); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if n, err := c.Read(buf); err == nil && string(buf[:n]) == "ping from "+src {
			return true
		}
	}
	return false
}
