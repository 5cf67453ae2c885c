package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/acm"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"

	"github.com/moatlb/moat/internal/lbtest"
)

// dialTLSFrom connects from a loopback source address, completes a TLS handshake with cfg and
// reads the backend's greeting through it.
func dialTLSFrom(src, dst string, cfg *tls.Config, timeout time.Duration) (*tls.Conn, string, error) {
	d := &net.Dialer{Timeout: timeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := tls.DialWithDialer(d, "tcp", dst, cfg)
	if err != nil {
		return nil, "", err
	}
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		c.Close()
		return nil, "", err
	}
	return c, line, nil
}

// TestTLSListener runs moat lb as a process with a TLS listener whose certificate was imported
// into its ACM, issued by a CA of the test for the load balancer's DNS name: a client that
// verifies it against that CA reaches the backend, with the ALPN protocol the policy prefers; a
// client that offers only TLS 1.0 is refused under ELBSecurityPolicy-TLS13-1-2-2021-06; and a
// source the groups deny is dropped before any handshake.
func TestTLSListener(t *testing.T) {
	p := startLB(t, t.TempDir())
	ec2c, elbc := p.clients(t)
	ctx := context.Background()
	be := startBackend(t, "127.1.0.50:0")
	st := createStack(t, p, "tls", be.port(), freePort(t), "127.0.0.2/32", false)
	tlsPort := freePort(t)
	if _, err := ec2c.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: st.sg, IpPermissions: []ec2types.IpPermission{{
		IpProtocol: aws.String("tcp"), FromPort: aws.Int32(int32(tlsPort)), ToPort: aws.Int32(int32(tlsPort)), IpRanges: []ec2types.IpRange{{CidrIp: aws.String("127.0.0.2/32")}},
	}}}); err != nil {
		t.Fatal(err)
	}

	ca := lbtest.NewCA(t)
	name := aws.ToString(st.lb.DNSName)
	leaf := ca.Issue(t, name, name)
	imported, err := acm.NewFromConfig(p.config(t)).ImportCertificate(ctx, &acm.ImportCertificateInput{
		Certificate: leaf.PEM, PrivateKey: leaf.KeyPEM, CertificateChain: ca.PEM})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := elbc.CreateListener(ctx, &elbv2.CreateListenerInput{LoadBalancerArn: st.lb.LoadBalancerArn, Protocol: elbtypes.ProtocolEnumTls,
		Port: aws.Int32(int32(tlsPort)), Certificates: []elbtypes.Certificate{{CertificateArn: imported.CertificateArn}},
		SslPolicy: aws.String("ELBSecurityPolicy-TLS13-1-2-2021-06"), AlpnPolicy: []string{"HTTP2Preferred"},
		DefaultActions: []elbtypes.Action{{Type: elbtypes.ActionTypeEnumForward, TargetGroupArn: st.tg.TargetGroupArn}}}); err != nil {
		t.Fatal(err)
	}
	zoneA, _, _ := net.SplitHostPort(st.front)
	front := net.JoinHostPort(zoneA, fmt.Sprint(tlsPort))
	client := &tls.Config{ServerName: name, RootCAs: ca.Pool(), NextProtos: []string{"http/1.1", "h2"}}

	var conn *tls.Conn
	var greeting string
	waitFor(t, 10*time.Second, "the TLS listener to serve", func() bool {
		if conn, greeting, err = dialTLSFrom("127.0.0.2", front, client, 2*time.Second); err != nil {
			return false
		}
		return true
	})
	defer conn.Close()
	if !strings.HasPrefix(greeting, "hello from 127.1.0.50") {
		t.Errorf("greeting through TLS %q", greeting)
	}
	if cs := conn.ConnectionState(); cs.Version != tls.VersionTLS13 || cs.NegotiatedProtocol != "h2" {
		t.Errorf("negotiated %s and ALPN %q, want TLS 1.3 and h2 (HTTP2Preferred)", tls.VersionName(cs.Version), cs.NegotiatedProtocol)
	}

	old := client.Clone()
	old.MinVersion, old.MaxVersion = tls.VersionTLS10, tls.VersionTLS10
	if c, _, err := dialTLSFrom("127.0.0.2", front, old, 2*time.Second); err == nil {
		c.Close()
		t.Error("a TLS 1.0 client was served under ELBSecurityPolicy-TLS13-1-2-2021-06")
	}

	// The denied source's SYN is dropped: no handshake, a timeout.
	if c, _, err := dialTLSFrom("127.0.0.3", front, client, 500*time.Millisecond); err == nil {
		c.Close()
		t.Fatal("denied client completed a TLS handshake")
	} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Errorf("denied client: %v, want a timeout (dropped before any handshake)", err)
	}
	if n := be.from("127.0.0.3"); n != 0 {
		t.Errorf("the backend saw the denied client %d times", n)
	}
}
