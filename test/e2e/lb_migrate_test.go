package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"

	"github.com/moatlb/moat/internal/etcdtest"
)

// describeAll is what a client reads of the state: every group, load balancer, target group
// and listener, as JSON.
func describeAll(t *testing.T, ec2c *ec2.Client, elbc *elasticloadbalancingv2.Client) string {
	t.Helper()
	ctx := context.Background()
	groups, err := ec2c.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{})
	if err != nil {
		t.Fatal(err)
	}
	lbs, err := elbc.DescribeLoadBalancers(ctx, &elasticloadbalancingv2.DescribeLoadBalancersInput{})
	if err != nil {
		t.Fatal(err)
	}
	tgs, err := elbc.DescribeTargetGroups(ctx, &elasticloadbalancingv2.DescribeTargetGroupsInput{})
	if err != nil {
		t.Fatal(err)
	}
	var listeners []elbtypes.Listener
	for _, lb := range lbs.LoadBalancers {
		out, err := elbc.DescribeListeners(ctx, &elasticloadbalancingv2.DescribeListenersInput{LoadBalancerArn: lb.LoadBalancerArn})
		if err != nil {
			t.Fatal(err)
		}
		listeners = append(listeners, out.Listeners...)
	}
	raw, err := json.MarshalIndent(map[string]any{"groups": groups.SecurityGroups, "loadBalancers": lbs.LoadBalancers, "targetGroups": tgs.TargetGroups, "listeners": listeners}, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}

// TestLBMigrateToEtcd: the state and credentials of a moat lb on its data dir, migrated into
// etcd with moat lb migrate, are what a moat lb --store on another data dir serves: the same
// clients' keys are accepted and every Describe answers as before. Migrating is refused while
// the moat lb runs, and into a root that holds state.
func TestLBMigrateToEtcd(t *testing.T) {
	bin, err := etcdtest.Binary()
	if err != nil {
		t.Skipf("no etcd binary (%v): run hack/kube-assets.sh", err)
	}
	member, err := etcdtest.Start(bin, filepath.Join(t.TempDir(), "etcd"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(member.Stop)
	storeURL := "etcd://" + member.Endpoint + "/migrated"

	dataDir := t.TempDir()
	p := startLB(t, dataDir, "--fast-path", "off")
	ec2c, elbc := p.clients(t)
	ctx := context.Background()
	vpc, subnetIDs := vpcSubnets(t, ec2c)
	group := createGroup(t, ec2c, "migrated", "migrate test")
	perm := types.IpPermission{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(443), ToPort: aws.Int32(443), IpRanges: []types.IpRange{{CidrIp: aws.String("10.0.0.0/8")}}}
	if _, err := ec2c.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: aws.String(group), IpPermissions: []types.IpPermission{perm}}); err != nil {
		t.Fatal(err)
	}
	tg, err := elbc.CreateTargetGroup(ctx, &elasticloadbalancingv2.CreateTargetGroupInput{Name: aws.String("migrated"), Protocol: elbtypes.ProtocolEnumTcp, Port: aws.Int32(8080), VpcId: vpc, TargetType: elbtypes.TargetTypeEnumIp})
	if err != nil {
		t.Fatal(err)
	}
	lb, err := elbc.CreateLoadBalancer(ctx, &elasticloadbalancingv2.CreateLoadBalancerInput{Name: aws.String("migrated"), Type: elbtypes.LoadBalancerTypeEnumNetwork, Scheme: elbtypes.LoadBalancerSchemeEnumInternal, Subnets: subnetIDs, SecurityGroups: []string{group}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := elbc.CreateListener(ctx, &elasticloadbalancingv2.CreateListenerInput{LoadBalancerArn: lb.LoadBalancers[0].LoadBalancerArn, Protocol: elbtypes.ProtocolEnumTcp, Port: aws.Int32(8443),
		DefaultActions: []elbtypes.Action{{Type: elbtypes.ActionTypeEnumForward, TargetGroupArn: tg.TargetGroups[0].TargetGroupArn}}}); err != nil {
		t.Fatal(err)
	}
	// What the data plane changes (the load balancer's state) must have settled.
	before := describeAll(t, ec2c, elbc)
	for deadline := time.Now().Add(30 * time.Second); ; {
		time.Sleep(200 * time.Millisecond)
		now := describeAll(t, ec2c, elbc)
		if now == before {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the state kept changing without requests")
		}
		before = now
	}

	migrate := func() (string, error) {
		out, err := exec.Command(moatBin, "lb", "migrate", "--data-dir", dataDir, "--to", storeURL).CombinedOutput()
		return string(out), err
	}
	if out, err := migrate(); err == nil {
		t.Fatalf("moat lb migrate while moat lb runs: %s; want it refused", out)
	} else {
		wantAll(t, "moat lb migrate while moat lb runs", out, "in use")
	}
	p.kill()
	out, err := migrate()
	if err != nil {
		t.Fatalf("moat lb migrate: %v\n%s", err, out)
	}
	wantAll(t, "moat lb migrate", out, "and the credentials", "--store "+storeURL)
	if out, err := migrate(); err == nil {
		t.Fatalf("a second moat lb migrate into the same root: %s; want it refused", out)
	} else {
		wantAll(t, "a second moat lb migrate", out, "holds state already")
	}

	// A node on another data dir: its keys can only come from the store.
	otherDir := t.TempDir()
	q := startLB(t, otherDir, "--fast-path", "off", "--store", storeURL)
	want, err := os.ReadFile(p.Creds)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(q.Creds); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("the etcd node's credentials file: %v\n%s\nwant the migrated data dir's\n%s", err, got, want)
	}
	cfg := p.config(t) // the old node's credentials file
	ec2c = ec2.NewFromConfig(cfg, func(o *ec2.Options) { o.BaseEndpoint = aws.String(q.API) })
	elbc = elasticloadbalancingv2.NewFromConfig(cfg, func(o *elasticloadbalancingv2.Options) { o.BaseEndpoint = aws.String(q.API) })
	var after string
	for deadline := time.Now().Add(60 * time.Second); ; {
		if after = describeAll(t, ec2c, elbc); after == before {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("moat lb on the migrated store describes\n%s\nwant what the data dir's moat lb described\n%s", after, before)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
