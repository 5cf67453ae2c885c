package lb

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/moatlb/moat/internal/cloud"
	"github.com/moatlb/moat/internal/dataplane"
	"github.com/moatlb/moat/internal/firewall"
)

// state is a small world: one NLB with a frontend group and a backend group, one listener on 80
// forwarding to instance targets on two nodes whose group admits the backend group on 30080.
func state() cloud.State {
	allOut := cloud.Rule{Protocol: "-1", FromPort: -1, ToPort: -1, CIDRv4: "0.0.0.0/0"}
	return cloud.State{
		ELBSnapshot: cloud.ELBSnapshot{
			LoadBalancers: []cloud.LoadBalancer{{
				ARN: "lb", SecurityGroups: []string{"sg-front", "sg-back"},
				Zones:      []cloud.LoadBalancerZone{{SubnetID: "subnet-a", Zone: "us-east-1a", Address: "127.1.0.100"}, {SubnetID: "subnet-b", Zone: "us-east-1b", Address: "127.2.0.100"}},
				Attributes: map[string]string{"load_balancing.cross_zone.enabled": "false"},
			}},
			Listeners: []cloud.Listener{{ARN: "l80", LoadBalancerARN: "lb", Port: 80, Protocol: "TCP", TargetGroupARN: "tg", Attributes: map[string]string{"tcp.idle_timeout.seconds": "400"}}},
			TargetGroups: []cloud.TargetGroup{{
				ARN: "tg", Protocol: "TCP", TargetType: "instance", Port: 30080,
				HealthCheck: cloud.HealthCheck{Protocol: "HTTP", Port: "traffic-port", Path: "/healthz", Matcher: "200", IntervalSeconds: 10, TimeoutSeconds: 6, HealthyThreshold: 3, UnhealthyThreshold: 2},
				Attributes: map[string]string{"proxy_protocol_v2.enabled": "true", "preserve_client_ip.enabled": "true", "stickiness.enabled": "true", "stickiness.type": "source_ip", "deregistration_delay.connection_termination.enabled": "false", "target_health_state.unhealthy.connection_termination.enabled": "true",
					"target_group_health.unhealthy_state_routing.minimum_healthy_targets.count": "2", "target_group_health.unhealthy_state_routing.minimum_healthy_targets.percentage": "off"},
				Targets: []cloud.Target{{ID: "i-a", Port: 30080}, {ID: "i-b", Port: 30080}, {ID: "i-stopped", Port: 30080}},
			}},
		},
		SecurityGroups: []cloud.SecurityGroup{
			{ID: "sg-front", Ingress: []cloud.Rule{
				{Protocol: "tcp", FromPort: 80, ToPort: 80, CIDRv4: "127.0.0.2/32"},
				{Protocol: "tcp", FromPort: 80, ToPort: 80, PrefixListID: "pl-office"},
			}, Egress: []cloud.Rule{allOut}},
			{ID: "sg-back", Egress: []cloud.Rule{allOut}},
			{ID: "sg-nodes", Ingress: []cloud.Rule{{Protocol: "tcp", FromPort: 30000, ToPort: 32767, GroupID: "sg-back"}}, Egress: []cloud.Rule{allOut}},
			{ID: "sg-other", Egress: []cloud.Rule{allOut}},
		},
		Interfaces: []cloud.NetworkInterface{
			{ID: "eni-a", PrivateIPs: []string{"127.1.0.10"}, Groups: []string{"sg-nodes"}, InstanceID: "i-a"},
			{ID: "eni-b", PrivateIPs: []string{"127.2.0.10"}, Groups: []string{"sg-other"}, InstanceID: "i-b"},
		},
		Instances: []cloud.Instance{
			{ID: "i-a", SubnetID: "subnet-a", PrivateIP: "127.1.0.10", InterfaceID: "eni-a", State: "running"},
			{ID: "i-b", SubnetID: "subnet-b", PrivateIP: "127.2.0.10", InterfaceID: "eni-b", State: "running"},
			{ID: "i-stopped", SubnetID: "subnet-b", PrivateIP: "127.2.0.11", State: "stopped"},
		},
		PrefixLists: []cloud.PrefixList{{ID: "pl-office", Entries: []cloud.PrefixListEntry{{CIDR: "127.0.0.4/31"}}}},
		Subnets:     []cloud.Subnet{{ID: "subnet-a", Zone: "us-east-1a"}, {ID: "subnet-b", Zone: "us-east-1b"}},
	}
}

func TestDesiredConfig(t *testing.T) {
	cfg := desiredConfig(state(), newNetwork(state()), time.Now())
	if len(cfg.LoadBalancers) != 1 || len(cfg.LoadBalancers[0].Zones) != 2 || cfg.LoadBalancers[0].CrossZone {
		t.Fatalf("load balancers %+v", cfg.LoadBalancers)
	}
	l := cfg.LoadBalancers[0].Listeners[0]
	if l.Protocol != dataplane.TCP || l.Port != 80 || l.TCPIdleTimeout.Seconds() != 400 || l.AdmitUDP != nil {
		t.Errorf("listener %+v", l)
	}
	for addr, want := range map[string]bool{"127.0.0.2": true, "127.0.0.3": false, "127.0.0.4": true, "127.0.0.5": true, "127.0.0.6": false} {
		if got := l.AdmitTCP.Allows(netip.MustParseAddr(addr)); got != want {
			t.Errorf("client %s admitted %v, want %v", addr, got, want)
		}
	}
	tg := l.TargetGroup
	if !tg.ProxyProtocolV2 || !tg.PreserveClientIP || !tg.StickinessSourceIP || tg.TerminateOnDeregistration || !tg.TerminateOnUnhealthy ||
		tg.MinHealthyTargets != 2 || tg.MinHealthyPercent != 0 {
		t.Errorf("attributes %+v", tg)
	}
	if hc := tg.HealthCheck; hc.Protocol != "HTTP" || hc.Port != 0 || hc.Path != "/healthz" || hc.Interval.Seconds() != 10 || hc.HealthyThreshold != 3 {
		t.Errorf("health check %+v", hc)
	}
	if len(tg.Targets) != 2 {
		t.Fatalf("targets %+v: the stopped instance must not be served", tg.Targets)
	}
	a, b := tg.Targets[0], tg.Targets[1]
	if a.Addr != netip.MustParseAddr("127.1.0.10") || a.Zone != "us-east-1a" || b.Zone != "us-east-1b" {
		t.Errorf("targets %+v", tg.Targets)
	}
	// Node a's group admits the backend group; node b's group admits nothing.
	if !a.TrafficAllowed || !a.HealthCheckAllowed || b.TrafficAllowed || b.HealthCheckAllowed {
		t.Errorf("backend enforcement: a %v/%v, b %v/%v", a.TrafficAllowed, a.HealthCheckAllowed, b.TrafficAllowed, b.HealthCheckAllowed)
	}
}

func TestDesiredConfigEgressAndGrouplessLoadBalancers(t *testing.T) {
	st := state()
	// Outbound rules of the load balancer's groups govern its traffic to targets.
	st.SecurityGroups[0].Egress = nil
	st.SecurityGroups[1].Egress = []cloud.Rule{{Protocol: "tcp", FromPort: 443, ToPort: 443, CIDRv4: "0.0.0.0/0"}}
	if a := desiredConfig(st, newNetwork(st), time.Now()).LoadBalancers[0].Listeners[0].TargetGroup.Targets[0]; a.TrafficAllowed {
		t.Error("an outbound rule set without port 30080 let traffic reach the target")
	}

	st = state()
	st.LoadBalancers[0].SecurityGroups = nil
	st.SecurityGroups[2].Ingress = []cloud.Rule{{Protocol: "tcp", FromPort: 30080, ToPort: 30080, CIDRv4: "127.0.0.0/8"}}
	l := desiredConfig(st, newNetwork(st), time.Now()).LoadBalancers[0].Listeners[0]
	if l.AdmitTCP != nil || l.AdmitUDP != nil {
		t.Error("a load balancer without groups must admit everyone (nil policies)")
	}
	if a := l.TargetGroup.Targets[0]; !a.TrafficAllowed {
		t.Error("a node rule admitting the VPC CIDR must admit a group-less load balancer's traffic")
	}
}

func TestDesiredConfigUDPAndIPTargets(t *testing.T) {
	st := state()
	st.Listeners[0].Protocol = "TCP_UDP"
	st.TargetGroups[0].Protocol = "TCP_UDP"
	st.TargetGroups[0].TargetType = "ip"
	st.TargetGroups[0].Targets = []cloud.Target{{ID: "127.1.0.10", Port: 30080, AvailabilityZone: "us-east-1a"}, {ID: "127.1.0.50", Port: 8080, AvailabilityZone: "us-east-1a"}}
	st.SecurityGroups[0].Ingress = append(st.SecurityGroups[0].Ingress, cloud.Rule{Protocol: "udp", FromPort: 80, ToPort: 80, CIDRv4: "127.0.0.3/32"})
	l := desiredConfig(st, newNetwork(st), time.Now()).LoadBalancers[0].Listeners[0]
	if !l.AdmitUDP.Allows(netip.MustParseAddr("127.0.0.3")) || l.AdmitUDP.Allows(netip.MustParseAddr("127.0.0.2")) || l.AdmitTCP.Allows(netip.MustParseAddr("127.0.0.3")) {
		t.Error("TCP_UDP listener policies are not per protocol")
	}
	pod, free := l.TargetGroup.Targets[0], l.TargetGroup.Targets[1]
	// The node group admits only TCP from the backend group, so a TCP_UDP target there is unreachable.
	if pod.TrafficAllowed || !pod.HealthCheckAllowed {
		t.Errorf("ip target on a node interface: traffic %v, health %v", pod.TrafficAllowed, pod.HealthCheckAllowed)
	}
	if !free.TrafficAllowed || free.Addr != netip.MustParseAddr("127.1.0.50") {
		t.Errorf("an ip target no interface carries has no groups to enforce: %+v", free)
	}
}

// TestDesiredConfigDualstack: a dualstack load balancer listens on each zone's IPv6 address too;
// its listener's policy admits IPv6 clients by the groups' IPv6 sources (ranges, ::/0, prefix
// list entries, and the IPv6 addresses of load balancers carrying a referenced group), and a
// target's group must admit the load balancer's address of the target's own family.
func TestDesiredConfigDualstack(t *testing.T) {
	st := state()
	lb := &st.LoadBalancers[0]
	lb.IPAddressType = "dualstack"
	lb.Zones[0].IPv6Address, lb.Zones[1].IPv6Address = "2001:db8:0:1::64", "2001:db8:0:2::64"
	st.LoadBalancers = append(st.LoadBalancers, cloud.LoadBalancer{ARN: "lb-peer", SecurityGroups: []string{"sg-peer"}, IPAddressType: "dualstack",
		Zones: []cloud.LoadBalancerZone{{Zone: "us-east-1a", Address: "127.1.0.101", IPv6Address: "2001:db8:0:1::65"}}})
	st.SecurityGroups = append(st.SecurityGroups, cloud.SecurityGroup{ID: "sg-peer"})
	st.SecurityGroups[0].Ingress = append(st.SecurityGroups[0].Ingress,
		cloud.Rule{Protocol: "tcp", FromPort: 80, ToPort: 80, CIDRv6: "2001:db8:100::/48"},
		cloud.Rule{Protocol: "tcp", FromPort: 80, ToPort: 80, PrefixListID: "pl-v6"},
		cloud.Rule{Protocol: "tcp", FromPort: 80, ToPort: 80, GroupID: "sg-peer"},
		cloud.Rule{Protocol: "tcp", FromPort: 443, ToPort: 443, CIDRv6: "::/0"}, // another port: admits no one on 80
	)
	st.PrefixLists = append(st.PrefixLists, cloud.PrefixList{ID: "pl-v6", AddressFamily: "IPv6", Entries: []cloud.PrefixListEntry{{CIDR: "2001:db8:200::/64"}}})
	cfg := desiredConfig(st, newNetwork(st), time.Now())
	var zones []string
	for _, z := range cfg.LoadBalancers[0].Zones {
		zones = append(zones, z.Name+" "+z.Addr.String())
	}
	if want := []string{"us-east-1a 127.1.0.100", "us-east-1a 2001:db8:0:1::64", "us-east-1b 127.2.0.100", "us-east-1b 2001:db8:0:2::64"}; !slices.Equal(zones, want) {
		t.Errorf("zones %q, want %q", zones, want)
	}
	l := cfg.LoadBalancers[0].Listeners[0]
	for addr, want := range map[string]bool{
		"2001:db8:100:5::1": true, "2001:db8:200::7": true, "2001:db8:0:1::65": true, "127.1.0.101": true, "127.0.0.2": true,
		"2001:db8:300::1": false, "2001:db8:0:1::66": false, "::1": false, "::ffff:127.0.0.3": false, "127.0.0.3": false,
	} {
		if got := l.AdmitTCP.Allows(netip.MustParseAddr(addr)); got != want {
			t.Errorf("client %s admitted %v, want %v", addr, got, want)
		}
	}
	st.SecurityGroups[0].Ingress = append(st.SecurityGroups[0].Ingress, cloud.Rule{Protocol: "tcp", FromPort: 80, ToPort: 80, CIDRv6: "::/0"})
	l = desiredConfig(st, newNetwork(st), time.Now()).LoadBalancers[0].Listeners[0]
	if !l.AdmitTCP.Allows(netip.MustParseAddr("2001:db8:300::1")) || !l.AdmitTCP.Allows(netip.MustParseAddr("::1")) || l.AdmitTCP.Allows(netip.MustParseAddr("127.0.0.3")) {
		t.Error("::/0 must admit every IPv6 client and no IPv4 one")
	}

	// Node a's group admits the backend group, which the load balancer's addresses of both
	// families carry: its IPv4 target is reachable. A node group admitting only ::/0 does not
	// admit the IPv4 address the load balancer's traffic to an IPv4 target comes from.
	if a := l.TargetGroup.Targets[0]; !a.TrafficAllowed || !a.HealthCheckAllowed {
		t.Errorf("IPv4 target behind a dualstack load balancer: traffic %v, health %v", a.TrafficAllowed, a.HealthCheckAllowed)
	}
	st.SecurityGroups[2].Ingress = []cloud.Rule{{Protocol: "tcp", FromPort: 30000, ToPort: 32767, CIDRv6: "::/0"}}
	if a := desiredConfig(st, newNetwork(st), time.Now()).LoadBalancers[0].Listeners[0].TargetGroup.Targets[0]; a.TrafficAllowed || a.HealthCheckAllowed {
		t.Errorf("a node group admitting only ::/0 let the load balancer reach an IPv4 target: traffic %v, health %v", a.TrafficAllowed, a.HealthCheckAllowed)
	}
}

// TestDrainedTargetsLeave: a deregistered target is in the data plane while it drains, with its
// deadline, and leaves it (no flows, no health checks) once its delay is over.
func TestDrainedTargetsLeave(t *testing.T) {
	now := time.Now()
	st := state()
	st.TargetGroups[0].Targets[0].DrainingUntil = now.Add(time.Minute)
	st.TargetGroups[0].Targets[1].DrainingUntil = now.Add(-time.Second)
	targets := desiredConfig(st, newNetwork(st), now).LoadBalancers[0].Listeners[0].TargetGroup.Targets
	var ids []string
	for _, tg := range targets {
		ids = append(ids, tg.ID)
		if tg.ID == "i-a" && !tg.DrainingUntil.Equal(now.Add(time.Minute)) {
			t.Errorf("draining target's deadline %v, want %v", tg.DrainingUntil, now.Add(time.Minute))
		}
	}
	if len(ids) != 1 || ids[0] != "i-a" {
		t.Fatalf("targets in the data plane %v, want only the draining i-a (i-b's delay is over, i-stopped is stopped)", ids)
	}
}

// TestDesiredFirewall: the firewall protects the instance interfaces on this host, with their
// groups' rules; a rule referencing the backend group admits the load balancer's addresses.
func TestDesiredFirewall(t *testing.T) {
	local := func(a netip.Addr) bool { return a == netip.MustParseAddr("127.1.0.10") }
	p := desiredFirewall(state(), newNetwork(state()), firewall.Enforce, local)
	if p.Mode != firewall.Enforce || len(p.Interfaces) != 1 {
		t.Fatalf("program %+v, want enforce with node-a's interface only", p)
	}
	ifc := p.Interfaces[0]
	if ifc.ID != "eni-a" || ifc.Instance != "i-a" || len(ifc.Addrs) != 1 || ifc.Addrs[0] != netip.MustParseAddr("127.1.0.10") {
		t.Fatalf("interface %+v", ifc)
	}
	if len(ifc.Inbound) != 1 {
		t.Fatalf("inbound rules %+v, want the backend group's", ifc.Inbound)
	}
	want := []netip.Prefix{netip.MustParsePrefix("127.1.0.100/32"), netip.MustParsePrefix("127.2.0.100/32")}
	if got := ifc.Inbound[0].Sources; !slices.Equal(got, want) {
		t.Errorf("the backend-group rule admits %v, want the load balancer's addresses %v", got, want)
	}
	if len(ifc.Outbound) != 1 || ifc.Outbound[0].Protocol != -1 {
		t.Errorf("outbound rules %+v, want allow-all", ifc.Outbound)
	}
	if off := desiredFirewall(state(), newNetwork(state()), firewall.Off, local); len(off.Interfaces) != 0 {
		t.Errorf("mode off programs %d interfaces", len(off.Interfaces))
	}
}

// BenchmarkDesiredConfig compiles a state of 1,000 copies of state()'s load balancer with 4
// listeners each, as a sync after every commit does.
func BenchmarkDesiredConfig(b *testing.B) {
	st := state()
	lb, l := st.LoadBalancers[0], st.Listeners[0]
	st.LoadBalancers, st.Listeners = nil, nil
	for i := range 1000 {
		lb.ARN = fmt.Sprint("lb-", i)
		st.LoadBalancers = append(st.LoadBalancers, lb)
		for p := range 4 {
			l.ARN, l.LoadBalancerARN, l.Port = fmt.Sprint("l-", i, "-", p), lb.ARN, 80+p
			st.Listeners = append(st.Listeners, l)
		}
	}
	now := time.Now()
	for b.Loop() {
		if cfg := desiredConfig(st, newNetwork(st), now); len(cfg.LoadBalancers) != 1000 {
			b.Fatalf("%d load balancers", len(cfg.LoadBalancers))
		}
	}
}
