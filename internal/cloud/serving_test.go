package cloud

import (
	"slices"
	"testing"

	"github.com/moatlb/moat/internal/store"
)

// health is a fixed health report, standing in for the data plane.
type health map[string]string // target ID -> state

func (h health) TargetHealth(_ string, id string, _ int) (TargetHealth, bool) {
	s, ok := h[id]
	return TargetHealth{State: s}, ok
}

// TestResolveNameHealthyZones pins which zones DNS answers with: those with enough healthy
// targets (dns_failover thresholds), all when none qualifies, and per-zone names always.
func TestResolveNameHealthyZones(t *testing.T) {
	c := newTestCloud(t, Config{})
	lb := LoadBalancer{ARN: "lb", DNSName: "web-0123456789abcdef.elb.us-east-1.moat.internal", Attributes: map[string]string{},
		Zones: []LoadBalancerZone{{Zone: "us-east-1a", Address: "127.1.0.100"}, {Zone: "us-east-1b", Address: "127.2.0.100"}}}
	tg := TargetGroup{ARN: "tg", Attributes: map[string]string{}, Targets: []Target{
		{ID: "a1", AvailabilityZone: "us-east-1a"}, {ID: "a2", AvailabilityZone: "us-east-1a"}, {ID: "b1", AvailabilityZone: "us-east-1b"},
	}}
	save := func() {
		t.Helper()
		if err := c.store.Update(func(tx store.Tx) error {
			if err := store.Save(tx, bucketLoadBalancers, lb.ARN, lb); err != nil {
				return err
			}
			if err := store.Save(tx, bucketListeners, "l", Listener{ARN: "l", LoadBalancerARN: "lb", TargetGroupARN: "tg"}); err != nil {
				return err
			}
			return store.Save(tx, bucketTargetGroups, tg.ARN, tg)
		}); err != nil {
			t.Fatal(err)
		}
	}
	resolve := func(name string) []string {
		t.Helper()
		addrs, ok := c.ResolveName(name)
		if !ok {
			t.Fatalf("%s does not resolve", name)
		}
		var out []string
		for _, a := range addrs {
			out = append(out, a.String())
		}
		return out
	}
	both := []string{"127.1.0.100", "127.2.0.100"}
	save()
	for _, tc := range []struct {
		name   string
		health health
		attrs  map[string]string
		cross  bool
		want   []string
	}{
		{"no reporter answer: every zone", health{}, nil, false, both},
		{"zone a healthy", health{"a1": "healthy", "b1": "unhealthy"}, nil, false, []string{"127.1.0.100"}},
		{"none healthy: every zone", health{"a1": "unhealthy", "b1": "unhealthy"}, nil, false, both},
		{"count 2: only a qualifies", health{"a1": "healthy", "a2": "healthy", "b1": "healthy"},
			map[string]string{"target_group_health.dns_failover.minimum_healthy_targets.count": "2"}, false, []string{"127.1.0.100"}},
		{"percentage 100: a is half healthy", health{"a1": "healthy", "a2": "unhealthy", "b1": "healthy"},
			map[string]string{"target_group_health.dns_failover.minimum_healthy_targets.percentage": "100"}, false, []string{"127.2.0.100"}},
		{"cross-zone: a healthy target makes every zone healthy", health{"a1": "healthy"}, nil, true, both},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c.SetHealthReporter(tc.health)
			tg.Attributes = map[string]string{}
			for k, v := range tc.attrs {
				tg.Attributes[k] = v
			}
			lb.Attributes = map[string]string{"load_balancing.cross_zone.enabled": map[bool]string{true: "true", false: "false"}[tc.cross]}
			save()
			if got := resolve(lb.DNSName); !slices.Equal(got, tc.want) {
				t.Errorf("resolved to %v, want %v", got, tc.want)
			}
		})
	}
	c.SetHealthReporter(health{"a1": "healthy"})
	if got := resolve("us-east-1b." + lb.DNSName); !slices.Equal(got, []string{"127.2.0.100"}) {
		t.Errorf("per-zone name resolved to %v", got)
	}
	if _, ok := c.ResolveName("gone-0123456789abcdef.elb.us-east-1.moat.internal"); ok {
		t.Error("an unknown name resolved")
	}

	// Only zones some node serves: healthy zone a, which nobody serves, is left out, and the
	// served zone b answers although its target is not healthy.
	c.SetServedZones(func(zone string) bool { return zone == "us-east-1b" })
	if got := resolve(lb.DNSName); !slices.Equal(got, []string{"127.2.0.100"}) {
		t.Errorf("with only zone b served, resolved to %v", got)
	}
	if addrs, ok := c.ResolveName("us-east-1a." + lb.DNSName); ok || len(addrs) > 0 {
		t.Errorf("zone a, served by no node, resolved to %v", addrs)
	}
	c.SetServedZones(func(string) bool { return false })
	if addrs, ok := c.ResolveName(lb.DNSName); !ok || len(addrs) > 0 {
		t.Errorf("with no zone served, resolved to %v, %v; want the name, without addresses", addrs, ok)
	}
}

// A dualstack load balancer's IPv6 addresses follow the same zone selection as its IPv4 ones:
// DNS answers A and AAAA records for the same zones.
func TestResolveNameDualstack(t *testing.T) {
	c := newTestCloud(t, Config{})
	lb := LoadBalancer{ARN: "lb", DNSName: "ds-0123456789abcdef.elb.us-east-1.moat.internal", IPAddressType: "dualstack", Attributes: map[string]string{},
		Zones: []LoadBalancerZone{
			{Zone: "us-east-1a", Address: "127.1.0.100", IPv6Address: "2001:db8:0:1::64"},
			{Zone: "us-east-1b", Address: "127.2.0.100", IPv6Address: "2001:db8:0:2::64"},
		}}
	tg := TargetGroup{ARN: "tg", Attributes: map[string]string{}, Targets: []Target{{ID: "a1", AvailabilityZone: "us-east-1a"}, {ID: "b1", AvailabilityZone: "us-east-1b"}}}
	if err := c.store.Update(func(tx store.Tx) error {
		if err := store.Save(tx, bucketLoadBalancers, lb.ARN, lb); err != nil {
			return err
		}
		if err := store.Save(tx, bucketListeners, "l", Listener{ARN: "l", LoadBalancerARN: "lb", TargetGroupARN: "tg"}); err != nil {
			return err
		}
		return store.Save(tx, bucketTargetGroups, tg.ARN, tg)
	}); err != nil {
		t.Fatal(err)
	}
	c.SetHealthReporter(health{"a1": "unhealthy", "b1": "healthy"})
	for name, want := range map[string][]string{
		lb.DNSName:                 {"127.2.0.100", "2001:db8:0:2::64"},
		"us-east-1a." + lb.DNSName: {"127.1.0.100", "2001:db8:0:1::64"},
	} {
		addrs, ok := c.ResolveName(name)
		var got []string
		for _, a := range addrs {
			got = append(got, a.String())
		}
		if !ok || !slices.Equal(got, want) {
			t.Errorf("%s resolved to %v (%v), want %v", name, got, ok, want)
		}
	}
}
