package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	"github.com/miekg/dns"
)

// TestTargetHealthFromAStandbyNode runs two nodes on one etcd store: node-a serves every zone and
// health-checks the target; node-b, started later for zone a only, stands by and checks nothing.
// DescribeTargetHealth through node-b answers as through node-a, healthy and then unhealthy once
// the target stops, and DNS through node-b picks the zones by that health as node-a's does.
func TestTargetHealthFromAStandbyNode(t *testing.T) {
	member := etcdMember(t)
	storeFlag := "--store=etcd://" + member.Endpoint
	serving := startLB(t, filepath.Join(t.TempDir(), "node-a"), storeFlag, "--node-name=node-a")
	waitFor(t, 30*time.Second, "node-a active for zone a", func() bool {
		return metricValue(t, serving, "moat_lb_zone_active", `zone="us-east-1a"`) == 1
	})
	standby := startLB(t, filepath.Join(t.TempDir(), "node-b"), storeFlag, "--node-name=node-b", "--zones=us-east-1a")
	waitFor(t, 30*time.Second, "node-b sees node-a holding zone a", func() bool {
		return metricValue(t, standby, "moat_lb_zone_holder", `zone="us-east-1a"`, `node="node-a"`) == 1
	})
	if metricValue(t, standby, "moat_lb_zone_active", `zone="us-east-1a"`) != 0 {
		t.Fatal("node-b serves zone a too")
	}

	target := startBackend(t, "127.1.0.50:0")
	st := createStack(t, serving, "shared-health", target.port(), freePort(t), "127.0.0.0/8", false)
	_, servingELB := serving.clients(t)
	_, standbyELB := standby.clients(t)

	// agree polls until both nodes describe the target as state and resolve the load balancer's
	// name to the same zones' addresses.
	agree := func(state string) {
		t.Helper()
		var a, b string
		var dnsA, dnsB []string
		waitFor(t, 60*time.Second, fmt.Sprintf("the target %s through both nodes", state), func() bool {
			a, b = describeHealth(t, servingELB, *st.tg.TargetGroupArn), describeHealth(t, standbyELB, *st.tg.TargetGroupArn)
			dnsA, dnsB = lookup(t, serving.DNS, *st.lb.DNSName, dns.TypeA), lookup(t, standby.DNS, *st.lb.DNSName, dns.TypeA)
			slices.Sort(dnsA)
			slices.Sort(dnsB)
			return a == b && strings.HasPrefix(a, state+" ") && slices.Equal(dnsA, dnsB)
		})
		t.Logf("%s through node-a and node-b: %q; DNS: %v", state, a, dnsB)
	}
	agree("healthy")
	healthyZones := lookup(t, standby.DNS, *st.lb.DNSName, dns.TypeA)
	if len(healthyZones) != 1 {
		t.Errorf("node-b resolves %s to %v with the target healthy, want zone a's address only", *st.lb.DNSName, healthyZones)
	}
	target.ln.Close()
	agree("unhealthy")
	if all := lookup(t, standby.DNS, *st.lb.DNSName, dns.TypeA); len(all) != 2 {
		t.Errorf("node-b resolves %s to %v with no target healthy, want both zones' addresses (fail open)", *st.lb.DNSName, all)
	}
}

// describeHealth is the one target's health as a node describes it: "state reason description".
func describeHealth(t *testing.T, elbc *elbv2.Client, arn string) string {
	t.Helper()
	out, err := elbc.DescribeTargetHealth(context.Background(), &elbv2.DescribeTargetHealthInput{TargetGroupArn: aws.String(arn)})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.TargetHealthDescriptions) != 1 {
		t.Fatalf("%d targets described, want 1", len(out.TargetHealthDescriptions))
	}
	h := out.TargetHealthDescriptions[0].TargetHealth
	return fmt.Sprintf("%s %s %s", h.State, h.Reason, aws.ToString(h.Description))
}
