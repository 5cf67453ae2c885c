package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moatlb/moat/internal/lbtest"
)

// TestAWSCLI drives moat lb with the real AWS CLI (Debian's awscli), as a user following the
// README would: caller identity, a VPC and subnet of its own, security group, rule, NLB, target
// group, listener, describe, an imported ACM certificate and Shield's subscription state, delete.
func TestAWSCLI(t *testing.T) {
	// Debian's package (AWS CLI v2) is the CLI the issue names; another aws on PATH may be v1.
	cli := "/usr/bin/aws"
	if _, err := os.Stat(cli); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("Debian's awscli is not installed; .ci/run installs it")
		}
		t.Skip("Debian's awscli is not installed (apt-get install awscli)")
	}
	p := startLB(t, t.TempDir())
	home := t.TempDir()
	aws := func(args ...string) map[string]any {
		t.Helper()
		cmd := exec.Command(cli, append([]string{"--endpoint-url", p.API, "--output", "json"}, args...)...)
		cmd.Env = append(os.Environ(),
			"AWS_SHARED_CREDENTIALS_FILE="+p.Creds, "AWS_CONFIG_FILE="+home+"/config", "HOME="+home,
			"AWS_REGION=us-east-1", "AWS_DEFAULT_REGION=us-east-1", "AWS_PAGER=", "AWS_PROFILE=default",
			"AWS_ACCESS_KEY_ID=", "AWS_SECRET_ACCESS_KEY=", "AWS_SESSION_TOKEN=",
		)
		out, err := cmd.Output()
		if err != nil {
			stderr := ""
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = string(ee.Stderr)
			}
			t.Fatalf("aws %s: %v\n%s", strings.Join(args, " "), err, stderr)
		}
		m := map[string]any{}
		if len(strings.TrimSpace(string(out))) > 0 {
			if err := json.Unmarshal(out, &m); err != nil {
				t.Fatalf("aws %s: output is not JSON: %s", strings.Join(args, " "), out)
			}
		}
		return m
	}
	str := func(v any, path ...any) string {
		t.Helper()
		for _, p := range path {
			switch k := p.(type) {
			case string:
				v = v.(map[string]any)[k]
			case int:
				v = v.([]any)[k]
			}
		}
		s, _ := v.(string)
		return s
	}

	if id := aws("sts", "get-caller-identity"); str(id, "Arn") != "arn:aws:iam::000000000000:user/default" || str(id, "Account") != "000000000000" {
		t.Fatalf("caller identity %v", id)
	}

	ownVPC := str(aws("ec2", "create-vpc", "--cidr-block", "127.60.0.0/16"), "Vpc", "VpcId")
	ownSubnet := aws("ec2", "create-subnet", "--vpc-id", ownVPC, "--cidr-block", "127.60.1.0/24", "--availability-zone", "us-east-1a")
	if str(ownSubnet, "Subnet", "CidrBlock") != "127.60.1.0/24" || str(ownSubnet, "Subnet", "VpcId") != ownVPC {
		t.Fatalf("created subnet %v", ownSubnet)
	}
	aws("ec2", "delete-subnet", "--subnet-id", str(ownSubnet, "Subnet", "SubnetId"))
	aws("ec2", "delete-vpc", "--vpc-id", ownVPC)

	subnets := aws("ec2", "describe-subnets", "--filters", "Name=tag:kubernetes.io/role/internal-elb,Values=1")
	subnetA, subnetB := str(subnets, "Subnets", 0, "SubnetId"), str(subnets, "Subnets", 1, "SubnetId")
	vpc := str(subnets, "Subnets", 0, "VpcId")

	sg := str(aws("ec2", "create-security-group", "--group-name", "cli-web", "--description", "web clients", "--vpc-id", vpc,
		"--tag-specifications", "ResourceType=security-group,Tags=[{Key=Name,Value=cli-web}]"), "GroupId")
	aws("ec2", "authorize-security-group-ingress", "--group-id", sg, "--protocol", "tcp", "--port", "80", "--cidr", "127.0.0.2/32")
	described := aws("ec2", "describe-security-groups", "--group-ids", sg)
	if got := str(described, "SecurityGroups", 0, "IpPermissions", 0, "IpRanges", 0, "CidrIp"); got != "127.0.0.2/32" {
		t.Fatalf("rule not described: %v", described)
	}

	lb := aws("elbv2", "create-load-balancer", "--name", "cli-nlb", "--type", "network", "--scheme", "internal",
		"--subnets", subnetA, subnetB, "--security-groups", sg)
	lbArn := str(lb, "LoadBalancers", 0, "LoadBalancerArn")
	if !strings.Contains(lbArn, ":loadbalancer/net/cli-nlb/") || !strings.HasSuffix(str(lb, "LoadBalancers", 0, "DNSName"), ".elb.us-east-1.moat.internal") {
		t.Fatalf("load balancer %v", lb)
	}
	tg := str(aws("elbv2", "create-target-group", "--name", "cli-tg", "--protocol", "TCP", "--port", "8080", "--vpc-id", vpc, "--target-type", "ip"),
		"TargetGroups", 0, "TargetGroupArn")
	aws("elbv2", "register-targets", "--target-group-arn", tg, "--targets", "Id=127.1.0.20,Port=8080")
	listener := str(aws("elbv2", "create-listener", "--load-balancer-arn", lbArn, "--protocol", "TCP", "--port", "80",
		"--default-actions", "Type=forward,TargetGroupArn="+tg), "Listeners", 0, "ListenerArn")

	if got := str(aws("elbv2", "describe-load-balancers", "--names", "cli-nlb"), "LoadBalancers", 0, "SecurityGroups", 0); got != sg {
		t.Errorf("load balancer groups: %s, want %s", got, sg)
	}
	if got := str(aws("elbv2", "describe-listeners", "--load-balancer-arn", lbArn), "Listeners", 0, "DefaultActions", 0, "TargetGroupArn"); got != tg {
		t.Errorf("listener forwards to %s, want %s", got, tg)
	}
	if got := str(aws("elbv2", "describe-target-health", "--target-group-arn", tg), "TargetHealthDescriptions", 0, "Target", "Id"); got != "127.1.0.20" {
		t.Errorf("target health lists %q", got)
	}
	aws("elbv2", "describe-target-groups", "--load-balancer-arn", lbArn)
	aws("elbv2", "add-tags", "--resource-arns", lbArn, "--tags", "Key=team,Value=web")
	if got := str(aws("elbv2", "describe-tags", "--resource-arns", lbArn), "TagDescriptions", 0, "Tags", 0, "Key"); got != "team" {
		t.Errorf("tags: %q", got)
	}

	// ACM and Shield speak JSON 1.1 on the same endpoint. The CLI reads blobs from fileb://.
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cert := lbtest.SelfSignedCert(t, key, "cli.example.com", []string{"cli.example.com"}, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
	certFile, keyFile := filepath.Join(home, "cert.pem"), filepath.Join(home, "key.pem")
	if err := os.WriteFile(certFile, cert.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, cert.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	certArn := str(aws("acm", "import-certificate", "--certificate", "fileb://"+certFile, "--private-key", "fileb://"+keyFile,
		"--tags", "Key=team,Value=web"), "CertificateArn")
	if !strings.HasPrefix(certArn, "arn:aws:acm:us-east-1:000000000000:certificate/") {
		t.Fatalf("imported certificate ARN %q", certArn)
	}
	described = aws("acm", "describe-certificate", "--certificate-arn", certArn)
	if str(described, "Certificate", "DomainName") != "cli.example.com" || str(described, "Certificate", "Status") != "ISSUED" ||
		str(described, "Certificate", "KeyAlgorithm") != "EC_prime256v1" || str(described, "Certificate", "Type") != "IMPORTED" {
		t.Errorf("described certificate %v", described)
	}
	if got := str(aws("shield", "get-subscription-state"), "SubscriptionState"); got != "INACTIVE" {
		t.Errorf("Shield subscription state %q", got)
	}
	aws("acm", "delete-certificate", "--certificate-arn", certArn)

	aws("elbv2", "delete-listener", "--listener-arn", listener)
	aws("elbv2", "delete-target-group", "--target-group-arn", tg)
	aws("elbv2", "delete-load-balancer", "--load-balancer-arn", lbArn)
	aws("ec2", "delete-security-group", "--group-id", sg)
	if lbs := aws("elbv2", "describe-load-balancers"); len(lbs["LoadBalancers"].([]any)) != 0 {
		t.Errorf("load balancers left: %v", lbs)
	}
}
