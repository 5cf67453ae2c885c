package e2e

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"
	"github.com/aws/smithy-go"

	"github.com/moatlb/moat/internal/awsclient"
)

// TestReadOnlyProfileAddedWhileRunning adds a profile with `moat lb credentials add-read-only` to
// the data dir of a running moat lb: the file keeps its profiles and mode 0600, and the running
// moat lb accepts the new key at its next request, for reads only, while the default key keeps
// full access. Removing the profile from the file revokes the key as promptly, and a broken file
// (even on SIGHUP) leaves moat lb serving with the keys it had.
func TestReadOnlyProfileAddedWhileRunning(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "lb")
	p := startLB(t, dir)
	ctx := context.Background()
	before, err := os.ReadFile(p.Creds)
	if err != nil {
		t.Fatal(err)
	}

	out, err := exec.Command(moatBin, "lb", "credentials", "add-read-only", "node", "--data-dir", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("add-read-only: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), p.Creds) || !strings.Contains(string(out), "AWS_PROFILE=node") {
		t.Errorf("add-read-only does not say where the profile is:\n%s", out)
	}
	after, err := os.ReadFile(p.Creds)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(after, before) || !bytes.Contains(after, []byte("[node]")) || !bytes.Contains(after, []byte("moat_read_only = true")) {
		t.Errorf("credentials file after add-read-only:\n%s", after)
	}
	if info, err := os.Stat(p.Creds); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("credentials file mode: %v, %v; want 0600", info.Mode(), err)
	}
	if out, err := exec.Command(moatBin, "lb", "credentials", "add-read-only", "node", "--data-dir", dir).CombinedOutput(); err == nil {
		t.Errorf("adding profile node twice succeeded:\n%s", out)
	}
	if again, _ := os.ReadFile(p.Creds); !bytes.Equal(again, after) {
		t.Error("a refused add-read-only changed the file")
	}

	// The running moat lb takes the new key at the next request: no restart, no signal.
	cfg, err := config.LoadDefaultConfig(ctx,
		config.WithSharedCredentialsFiles([]string{p.Creds}), config.WithSharedConfigFiles([]string{}),
		config.WithSharedConfigProfile("node"), config.WithRegion("us-east-1"), config.WithRetryer(func() aws.Retryer { return aws.NopRetryer{} }))
	if err != nil {
		t.Fatal(err)
	}
	cfg.HTTPClient = awsclient.HTTPClient(cfg.HTTPClient)
	roEC2 := ec2.NewFromConfig(cfg, func(o *ec2.Options) { o.BaseEndpoint = aws.String(p.API) })
	roELB := elbv2.NewFromConfig(cfg, func(o *elbv2.Options) { o.BaseEndpoint = aws.String(p.API) })
	if _, err := roEC2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{}); err != nil {
		t.Fatalf("read-only DescribeSecurityGroups: %v", err)
	}
	if _, err := roELB.DescribeLoadBalancers(ctx, &elbv2.DescribeLoadBalancersInput{}); err != nil {
		t.Fatalf("read-only DescribeLoadBalancers: %v", err)
	}
	_, err = roEC2.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("web"), Description: aws.String("d")})
	wantAPIError(t, err, "UnauthorizedOperation", http.StatusForbidden)
	_, err = roELB.CreateLoadBalancer(ctx, &elbv2.CreateLoadBalancerInput{Name: aws.String("web"), Type: elbtypes.LoadBalancerTypeEnumNetwork})
	wantAPIError(t, err, "AccessDenied", http.StatusForbidden)

	fullEC2, _ := p.clients(t)
	if _, err := fullEC2.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("web"), Description: aws.String("d")}); err != nil {
		t.Fatalf("the default key lost full access: %v", err)
	}
	groups, err := fullEC2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupNames: []string{"web"}})
	if err != nil || len(groups.SecurityGroups) != 1 {
		t.Fatalf("groups named web: %v, %v; want only the one the default key made", groups, err)
	}
	if n := metricValue(t, p, `moat_api_requests_total{action="CreateSecurityGroup",code="UnauthorizedOperation",service="ec2"}`); n != 1 {
		t.Errorf("refused CreateSecurityGroup counted %v times, want 1", n)
	}

	// Taking the profile out revokes the key at the next request.
	replaceFile(t, p.Creds, before)
	_, err = roEC2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{})
	wantAPIError(t, err, "AuthFailure", http.StatusUnauthorized)

	// A broken file, re-read on change or on SIGHUP, keeps the keys in use.
	replaceFile(t, p.Creds, []byte("[default]\naws_access_key_id = AKIAONLY\n"))
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the inventory reload after SIGHUP", func() bool { return strings.Contains(p.stderr.String(), "inventory reloaded") })
	if _, err := fullEC2.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{}); err != nil {
		t.Fatalf("a broken credentials file locked the default key out: %v", err)
	}
	if !strings.Contains(p.stderr.String(), "credentials reload failed") {
		t.Errorf("the broken credentials file was not reported:\n%s", p.stderr)
	}
}

// replaceFile writes data to path by rename, as a careful writer does.
func replaceFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path+".new", data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
}

// wantAPIError fails the test unless err is an API error with code and HTTP status.
func wantAPIError(t *testing.T, err error, code string, status int) {
	t.Helper()
	var apiErr smithy.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode() != code {
		t.Fatalf("want %s, got %v", code, err)
	}
	var respErr *awshttp.ResponseError
	if !errors.As(err, &respErr) || respErr.HTTPStatusCode() != status {
		t.Errorf("%s: want HTTP %d, got %v", code, status, err)
	}
}
