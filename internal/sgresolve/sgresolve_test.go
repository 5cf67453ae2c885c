package sgresolve

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/moatlb/moat/internal/cloud"
	"github.com/moatlb/moat/internal/firewall"
	"github.com/moatlb/moat/internal/secgroup"
)

// world: node-a and node-b carry the nodes' group, which admits the load balancer's backend
// group, the members of group sg-peers, an office prefix list and one CIDR; m1 and m2 carry
// sg-peers; a load balancer carries the backend group.
func world() cloud.State {
	allOut := cloud.Rule{Protocol: "-1", FromPort: -1, ToPort: -1, CIDRv4: "0.0.0.0/0"}
	return cloud.State{
		ELBSnapshot: cloud.ELBSnapshot{LoadBalancers: []cloud.LoadBalancer{{
			ARN: "lb", SecurityGroups: []string{"sg-front", "sg-back"},
			Zones: []cloud.LoadBalancerZone{{Address: "198.18.1.100", IPv6Address: "2001:db8:0:1::100"}, {Address: "198.18.2.100"}},
		}}},
		SecurityGroups: []cloud.SecurityGroup{
			{ID: "sg-nodes", Ingress: []cloud.Rule{
				{Protocol: "tcp", FromPort: 30000, ToPort: 32767, GroupID: "sg-back"},
				{Protocol: "tcp", FromPort: 22, ToPort: 22, GroupID: "sg-peers"},
				{Protocol: "udp", FromPort: 53, ToPort: 53, PrefixListID: "pl-office"},
				{Protocol: "icmp", FromPort: 8, ToPort: -1, CIDRv4: "198.18.0.0/24"},
				{Protocol: "tcp", FromPort: 1, ToPort: 1, GroupID: "sg-nobody"},
				{Protocol: "tcp", FromPort: 2, ToPort: 2, PrefixListID: "pl-gone"},
			}, Egress: []cloud.Rule{allOut}},
			{ID: "sg-peers", Egress: []cloud.Rule{allOut}},
			{ID: "sg-back", Egress: []cloud.Rule{allOut}},
			{ID: "sg-front"},
		},
		Interfaces: []cloud.NetworkInterface{
			{ID: "eni-a", PrivateIPs: []string{"198.18.1.10"}, Groups: []string{"sg-nodes"}, InstanceID: "i-a"},
			{ID: "eni-b", PrivateIPs: []string{"198.18.2.10"}, Groups: []string{"sg-nodes"}, InstanceID: "i-b"},
			{ID: "eni-m1", PrivateIPs: []string{"198.18.1.11"}, Groups: []string{"sg-peers"}, InstanceID: "i-m1"},
			{ID: "eni-m2", PrivateIPs: []string{"198.18.1.12", "198.18.1.22"}, Groups: []string{"sg-peers"}, InstanceID: "i-m2"},
			{ID: "eni-free", PrivateIPs: []string{"198.18.1.50"}, Groups: []string{"sg-nodes"}},
		},
		PrefixLists: []cloud.PrefixList{{ID: "pl-office", Entries: []cloud.PrefixListEntry{{CIDR: "198.18.0.4/31"}, {CIDR: "198.18.0.9/24"}}}},
	}
}

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

// Every kind of peer resolves to the addresses it names: a group to its members' private IPs
// (every one of an interface's) and to the addresses (both families) of the load balancers
// carrying it, a
// prefix list to its entries (masked), a CIDR to itself; a group or list that names nothing
// admits no one.
func TestRules(t *testing.T) {
	r := New(world())
	got := r.Rules([]string{"sg-nodes"}, false)
	want := []secgroup.Rule{
		{Protocol: secgroup.ProtocolTCP, FromPort: 30000, ToPort: 32767, Sources: prefixes("198.18.1.100/32", "2001:db8:0:1::100/128", "198.18.2.100/32")},
		{Protocol: secgroup.ProtocolTCP, FromPort: 22, ToPort: 22, Sources: prefixes("198.18.1.11/32", "198.18.1.12/32", "198.18.1.22/32")},
		{Protocol: secgroup.ProtocolUDP, FromPort: 53, ToPort: 53, Sources: prefixes("198.18.0.4/31", "198.18.0.0/24")},
		{Protocol: secgroup.ProtocolICMP, FromPort: 8, ToPort: -1, Sources: prefixes("198.18.0.0/24")},
		{Protocol: secgroup.ProtocolTCP, FromPort: 1, ToPort: 1},
		{Protocol: secgroup.ProtocolTCP, FromPort: 2, ToPort: 2},
	}
	if len(got) != len(want) {
		t.Fatalf("rules %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i].Protocol != want[i].Protocol || got[i].FromPort != want[i].FromPort || got[i].ToPort != want[i].ToPort || !slices.Equal(got[i].Sources, want[i].Sources) {
			t.Errorf("rule %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	if out := r.Rules([]string{"sg-nodes"}, true); len(out) != 1 || out[0].Protocol != secgroup.ProtocolAll || !slices.Equal(out[0].Sources, prefixes("0.0.0.0/0")) {
		t.Errorf("outbound %+v, want allow-all", out)
	}
	if out := r.Rules([]string{"sg-unknown"}, false); len(out) != 0 {
		t.Errorf("an unknown group has rules %+v", out)
	}
}

// A rule that came from a bad answer (moat node reads them from the API) is never a crash: a
// CIDR that does not parse admits no one, an unknown protocol is left out.
func TestRulesBadInput(t *testing.T) {
	st := cloud.State{SecurityGroups: []cloud.SecurityGroup{{ID: "sg", Ingress: []cloud.Rule{
		{Protocol: "tcp", FromPort: 80, ToPort: 80, CIDRv4: "not-a-cidr"},
		{Protocol: "bogus", CIDRv4: "0.0.0.0/0"},
	}}}}
	got := New(st).Rules([]string{"sg"}, false)
	if len(got) != 1 || len(got[0].Sources) != 0 {
		t.Errorf("rules %+v, want one rule admitting no one", got)
	}
}

// Firewall protects the interfaces (and only the addresses) that protect selects, attached to
// an instance; mode off programs nothing.
func TestFirewall(t *testing.T) {
	st := world()
	local := func(_ cloud.NetworkInterface, a netip.Addr) bool {
		return a == netip.MustParseAddr("198.18.1.12") || a == netip.MustParseAddr("198.18.1.10") || a == netip.MustParseAddr("198.18.1.50")
	}
	p := Firewall(st, New(st), firewall.Enforce, local)
	if p.Mode != firewall.Enforce || len(p.Interfaces) != 2 {
		t.Fatalf("program %+v, want node-a and m2 (eni-free has no instance)", p)
	}
	a, m2 := p.Interfaces[0], p.Interfaces[1]
	if a.ID != "eni-a" || a.Instance != "i-a" || !slices.Equal(a.Addrs, []netip.Addr{netip.MustParseAddr("198.18.1.10")}) || len(a.Inbound) != 6 || len(a.Outbound) != 1 {
		t.Errorf("node-a %+v", a)
	}
	if m2.ID != "eni-m2" || !slices.Equal(m2.Addrs, []netip.Addr{netip.MustParseAddr("198.18.1.12")}) || len(m2.Inbound) != 0 {
		t.Errorf("m2 %+v, want its one local address and no inbound rule", m2)
	}
	byInstance := func(eni cloud.NetworkInterface, _ netip.Addr) bool { return eni.InstanceID == "i-b" }
	if p := Firewall(st, New(st), firewall.Audit, byInstance); len(p.Interfaces) != 1 || p.Interfaces[0].ID != "eni-b" || p.Mode != firewall.Audit {
		t.Errorf("by instance: %+v", p)
	}
	if off := Firewall(st, New(st), firewall.Off, local); len(off.Interfaces) != 0 {
		t.Errorf("mode off programs %d interfaces", len(off.Interfaces))
	}
}
