package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/moatlb/moat/internal/awsclient"
)

// TestInventoryReloadOnHangup adds an instance to the inventory file of a running moat lb and
// sends SIGHUP: the instance appears, and what the API changed meanwhile is kept.
func TestInventoryReloadOnHangup(t *testing.T) {
	dir := t.TempDir()
	inventory := filepath.Join(dir, "inventory.yaml")
	base := `
vpcs: [{name: v, cidr: 127.0.0.0/8, default: true}]
subnets: [{name: a, vpc: v, zone: a, cidr: 127.1.0.0/16}]
securityGroups: [{name: nodes, vpc: v}]
instances:
  - {name: node-a, subnet: a, privateIp: 127.1.0.10, securityGroups: [nodes]}
`
	if err := os.WriteFile(inventory, []byte(base), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startLB(t, filepath.Join(dir, "lb"), "--inventory", inventory)
	ec2c, _ := p.clients(t)
	ctx := context.Background()
	count := func() int {
		out, err := ec2c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{})
		if err != nil {
			t.Fatal(err)
		}
		return len(out.Reservations)
	}
	if n := count(); n != 1 {
		t.Fatalf("%d instances at start, want 1", n)
	}
	nodes, err := ec2c.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupNames: []string{"nodes"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ec2c.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{*nodes.SecurityGroups[0].GroupId}, Tags: []ec2types.Tag{{Key: aws.String("kubernetes.io/cluster/c"), Value: aws.String("owned")}}}); err != nil {
		t.Fatal(err)
	}

	added := base + "  - {name: node-b, subnet: a, privateIp: 127.1.0.11, securityGroups: [nodes]}\n"
	if err := os.WriteFile(inventory, []byte(added), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the added instance", func() bool { return count() == 2 })
	again, err := ec2c.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupNames: []string{"nodes"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(again.SecurityGroups[0].Tags) != 1 {
		t.Errorf("the reload lost a tag the API set: %+v", again.SecurityGroups[0].Tags)
	}

	// A broken file keeps the previous inventory and moat lb serving.
	if err := os.WriteFile(inventory, []byte("vpcs: [{name: v, cidr: not-a-cidr}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the reload failure to be logged", func() bool { return strings.Contains(p.stderr.String(), "inventory reload failed") })
	if n := count(); n != 2 {
		t.Errorf("%d instances after a failed reload, want 2", n)
	}
}

// TestAPIOverHTTPS serves the API with --tls-cert-file/--tls-key-file; a client that trusts the
// certificate works, and plain HTTP is not served.
func TestAPIOverHTTPS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := selfSigned(t, dir)
	caBundle, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	p := startLB(t, filepath.Join(dir, "lb"), "--tls-cert-file", certFile, "--tls-key-file", keyFile)
	if !strings.HasPrefix(p.API, "https://") {
		t.Fatalf("API served at %s, want https", p.API)
	}
	cfg, err := config.LoadDefaultConfig(context.Background(), config.WithSharedCredentialsFiles([]string{p.Creds}), config.WithSharedConfigFiles([]string{}),
		config.WithRegion("us-east-1"), config.WithRetryer(func() aws.Retryer { return aws.NopRetryer{} }),
		config.WithCustomCABundle(bytes.NewReader(caBundle)))
	if err != nil {
		t.Fatal(err)
	}
	cfg.HTTPClient = awsclient.HTTPClient(cfg.HTTPClient)
	client := ec2.NewFromConfig(cfg, func(o *ec2.Options) { o.BaseEndpoint = aws.String(p.API) })
	if _, err := client.DescribeVpcs(context.Background(), &ec2.DescribeVpcsInput{}); err != nil {
		t.Fatalf("over HTTPS: %v", err)
	}
	resp, err := http.Post("http://"+strings.TrimPrefix(p.API, "https://")+"/", "application/x-www-form-urlencoded", strings.NewReader("Action=DescribeVpcs&Version=2016-11-15"))
	if err == nil {
		defer resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Error("plain HTTP was served alongside HTTPS")
		}
	}
}

// selfSigned writes a self-signed certificate for 127.0.0.1 and its key.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "moat lb test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}
