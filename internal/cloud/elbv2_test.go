package cloud

import (
	"net/netip"
	"testing"
	"time"

	"github.com/moatlb/moat/internal/store"
	"github.com/moatlb/moat/internal/storetest"
)

func TestAllocateAddress(t *testing.T) {
	used := func(ips ...string) map[netip.Addr]bool {
		m := map[netip.Addr]bool{}
		for _, ip := range ips {
			m[netip.MustParseAddr(ip)] = true
		}
		return m
	}
	cases := []struct {
		name string
		cidr string
		used map[netip.Addr]bool
		want string
	}{
		{"large subnet starts at the 100th address", "127.1.0.0/16", used(), "127.1.0.100"},
		{"skips used addresses", "127.1.0.0/16", used("127.1.0.100", "127.1.0.101"), "127.1.0.102"},
		{"small subnet starts after the reserved ones", "10.0.0.0/28", used(), "10.0.0.4"},
		{"small subnet skips the broadcast address", "10.0.0.0/28", used("10.0.0.4", "10.0.0.5", "10.0.0.6", "10.0.0.7", "10.0.0.8", "10.0.0.9", "10.0.0.10", "10.0.0.11", "10.0.0.12", "10.0.0.13"), "10.0.0.14"},
		{"full small subnet", "10.0.0.0/28", used("10.0.0.4", "10.0.0.5", "10.0.0.6", "10.0.0.7", "10.0.0.8", "10.0.0.9", "10.0.0.10", "10.0.0.11", "10.0.0.12", "10.0.0.13", "10.0.0.14"), ""},
		{"wraps to the bottom when the top is full", "10.0.0.0/24", func() map[netip.Addr]bool {
			m := map[netip.Addr]bool{}
			for a := netip.MustParseAddr("10.0.0.100"); a != netip.MustParseAddr("10.0.1.0"); a = a.Next() {
				m[a] = true
			}
			return m
		}(), "10.0.0.4"},
		{"IPv6", "fd00:1::/64", used(), "fd00:1::64"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := allocateAddress(netip.MustParsePrefix(tc.cidr), tc.used)
			if tc.want == "" {
				if ok {
					t.Fatalf("allocated %s from a full subnet", got)
				}
				return
			}
			if !ok || got.String() != tc.want {
				t.Fatalf("allocated %v (%v), want %s", got, ok, tc.want)
			}
		})
	}
}

func TestReservedAddress(t *testing.T) {
	cidr := netip.MustParsePrefix("10.0.1.0/24")
	for ip, want := range map[string]bool{"10.0.1.0": true, "10.0.1.3": true, "10.0.1.4": false, "10.0.1.254": false, "10.0.1.255": true} {
		if got := reservedAddress(cidr, netip.MustParseAddr(ip)); got != want {
			t.Errorf("reserved(%s) = %v, want %v", ip, got, want)
		}
	}
}

func TestARNs(t *testing.T) {
	for arn, kind := range map[string]string{
		"arn:aws:elasticloadbalancing:us-east-1:1:loadbalancer/net/a/0123456789abcdef":                                 kindLoadBalancer,
		"arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/a/0123456789abcdef":                                      kindTargetGroup,
		"arn:aws:elasticloadbalancing:us-east-1:1:listener/net/a/0123456789abcdef/0123456789abcdef":                    kindListener,
		"arn:aws:elasticloadbalancing:us-east-1:1:listener-rule/net/a/0123456789abcdef/0123456789abcdef/0123456789abc": kindRule,
	} {
		for _, k := range []string{kindLoadBalancer, kindTargetGroup, kindListener, kindRule} {
			if got := validARN(k, arn); got != (k == kind) {
				t.Errorf("validARN(%s, %s) = %v", k, arn, got)
			}
		}
	}
	for _, bad := range []string{"", "web", "arn:aws:ec2:us-east-1:1:vpc/vpc-1", "arn:aws:elasticloadbalancing:us-east-1:1:loadbalancer/net//x"} {
		if validARN(kindLoadBalancer, bad) {
			t.Errorf("%q accepted as a load balancer ARN", bad)
		}
	}
}

func TestCurrentTargets(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tg := TargetGroup{Targets: []Target{
		{ID: "registered", Port: 80},
		{ID: "draining", Port: 80, DrainingUntil: now.Add(time.Second)},
		{ID: "gone", Port: 80, DrainingUntil: now},
	}}
	got := tg.CurrentTargets(now)
	if len(got) != 2 || got[0].ID != "registered" || got[1].ID != "draining" || !got[1].Draining(now) || got[0].Draining(now) {
		t.Errorf("current targets %+v", got)
	}
}

// newTestCloud is a Cloud on a fresh store with the default inventory.
func newTestCloud(t *testing.T, cfg Config) *Cloud {
	t.Helper()
	st := storetest.Open(t)
	c := New(st, cfg)
	if err := c.ApplyInventory(DefaultInventory()); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestLoadBalancerRecord checks what the data plane reads from the store: addresses, zones and
// the state it sets itself.
func TestLoadBalancerRecord(t *testing.T) {
	c := newTestCloud(t, Config{DNSSuffix: "example.test", Region: "eu-north-1"})
	subnets, err := c.DescribeSubnets(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	lb, err := c.CreateLoadBalancer(CreateLoadBalancerInput{Name: "web", Type: "network", Subnets: []string{subnets[0].ID, subnets[1].ID}})
	if err != nil {
		t.Fatal(err)
	}
	if lb.State != StateProvisioning || len(lb.Zones) != 2 || lb.Zones[0].Address == "" || lb.Zones[0].Zone >= lb.Zones[1].Zone {
		t.Errorf("new load balancer %+v", lb)
	}
	if want := "web-" + lb.ID + ".elb.eu-north-1.example.test"; lb.DNSName != want {
		t.Errorf("DNS name %s, want %s", lb.DNSName, want)
	}
	if len(lb.CanonicalHostedZoneID) != 14 || lb.CanonicalHostedZoneID[0] != 'Z' {
		t.Errorf("hosted zone %q for a region without a known one", lb.CanonicalHostedZoneID)
	}
	if err := c.SetLoadBalancerState(lb.ARN, StateActive, ""); err != nil {
		t.Fatal(err)
	}
	err = c.store.View(func(tx store.Tx) error {
		got, err := store.Load[LoadBalancer](tx, bucketLoadBalancers, lb.ARN)
		if err == nil && (got.State != StateActive || got.Zones[0].Address != lb.Zones[0].Address) {
			t.Errorf("stored %+v", got)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// reporter answers for one target only.
type reporter struct{ id string }

func (r reporter) TargetHealth(tgARN, id string, port int) (TargetHealth, bool) {
	if id != r.id {
		return TargetHealth{}, false
	}
	return TargetHealth{State: "unhealthy", Reason: "Target.Timeout", Description: "Request timed out"}, true
}

func TestHealthReporter(t *testing.T) {
	c := newTestCloud(t, Config{})
	vpcs, _ := c.DescribeVPCs(nil, nil)
	subnets, _ := c.DescribeSubnets(nil, nil)
	port := 80
	lb, err := c.CreateLoadBalancer(CreateLoadBalancerInput{Name: "web", Type: "network", Subnets: []string{subnets[0].ID}})
	if err != nil {
		t.Fatal(err)
	}
	tg, err := c.CreateTargetGroup(CreateTargetGroupInput{Name: "web", Protocol: "TCP", Port: &port, VPCID: vpcs[0].ID, TargetType: "ip"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateListener(CreateListenerInput{LoadBalancerARN: lb.ARN, Protocol: "TCP", Port: &port, DefaultActions: []Action{{Type: "forward", TargetGroupARN: tg.ARN}}}); err != nil {
		t.Fatal(err)
	}
	if err := c.RegisterTargets(tg.ARN, []TargetInput{{ID: "127.1.0.50"}, {ID: "127.1.0.51"}}); err != nil {
		t.Fatal(err)
	}
	snap, err := c.State()
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.LoadBalancers) != 1 || len(snap.Listeners) != 1 || len(snap.TargetGroups) != 1 ||
		len(snap.TargetGroups[0].Targets) != 2 || len(snap.TargetGroups[0].LoadBalancerARNs) != 1 {
		t.Errorf("snapshot %+v", snap)
	}
	c.SetHealthReporter(reporter{"127.1.0.50"})
	descs, err := c.DescribeTargetHealth(tg.ARN, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, d := range descs {
		got[d.Target.ID] = d.Health.State + "/" + d.Health.Reason
	}
	if got["127.1.0.50"] != "unhealthy/Target.Timeout" || got["127.1.0.51"] != "initial/Elb.RegistrationInProgress" {
		t.Errorf("health %v", got)
	}
}
