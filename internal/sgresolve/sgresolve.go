// Package sgresolve resolves security groups against the resources that carry them: a rule's
// peer (a CIDR, a prefix list or a referenced group) becomes the address prefixes it names, and
// the instance interfaces a host protects become the instance firewall's program.
//
// It is the one place where moat decides what a rule admits: moat lb feeds it its store's state
// (for its load balancers' policies and for the instances on its own host), moat node the
// answers of moat lb's API (for the instances on its host), so both get the same rules from the
// same resources. Everything but HostAddrs, which reads the host's interfaces, is pure.
package sgresolve

import (
	"net/netip"

	"github.com/moatlb/moat/internal/cloud"
	"github.com/moatlb/moat/internal/firewall"
	"github.com/moatlb/moat/internal/secgroup"
)

// Resolver indexes the groups of a state and the addresses that carry them.
type Resolver struct {
	groups      map[string]cloud.SecurityGroup
	members     map[string][]netip.Prefix // group ID -> addresses of the interfaces and load balancers carrying it
	prefixLists map[string][]netip.Prefix
}

// New indexes st. It reads the security groups, the interfaces, the load balancers (their
// addresses and groups) and the prefix lists; the rest of st is not needed.
func New(st cloud.State) *Resolver {
	r := &Resolver{groups: map[string]cloud.SecurityGroup{}, members: map[string][]netip.Prefix{}, prefixLists: map[string][]netip.Prefix{}}
	for _, g := range st.SecurityGroups {
		r.groups[g.ID] = g
	}
	carry := func(groups []string, addr string) {
		a, err := netip.ParseAddr(addr)
		if err != nil {
			return
		}
		for _, g := range groups {
			r.members[g] = append(r.members[g], netip.PrefixFrom(a, a.BitLen()))
		}
	}
	for _, eni := range st.Interfaces {
		for _, ip := range eni.PrivateIPs {
			carry(eni.Groups, ip)
		}
	}
	// A load balancer's interfaces carry its groups: rules that reference them admit its
	// addresses, IPv6 ones too.
	for _, lb := range st.LoadBalancers {
		for _, z := range lb.Zones {
			carry(lb.SecurityGroups, z.Address)
			carry(lb.SecurityGroups, z.IPv6Address)
		}
	}
	for _, pl := range st.PrefixLists {
		for _, e := range pl.Entries {
			if p, err := netip.ParsePrefix(e.CIDR); err == nil {
				r.prefixLists[pl.ID] = append(r.prefixLists[pl.ID], p.Masked())
			}
		}
	}
	return r
}

// Rules returns the inbound (or outbound) rules of groups with their peers resolved to
// prefixes. A rule whose peer names nothing (a group no address carries, an unknown prefix list,
// a CIDR that does not parse) admits no one.
func (r *Resolver) Rules(groups []string, egress bool) []secgroup.Rule {
	var out []secgroup.Rule
	for _, id := range groups {
		for _, rule := range r.groupRules(id, egress) {
			if sr, ok := r.resolve(rule); ok {
				out = append(out, sr)
			}
		}
	}
	return out
}

// Admitting returns the first rule of groups, in their order, that admits peer for protocol and
// port (a source for inbound rules, a destination for outbound ones), and its group: the rule
// to name when telling why a flow is allowed. It resolves and compiles each rule as Rules and
// secgroup.Compile do for the data plane.
func (r *Resolver) Admitting(groups []string, egress bool, protocol int, port uint16, peer netip.Addr) (cloud.SecurityGroup, cloud.Rule, bool) {
	for _, id := range groups {
		for _, rule := range r.groupRules(id, egress) {
			if sr, ok := r.resolve(rule); ok && secgroup.Compile([]secgroup.Rule{sr}, protocol, port).Allows(peer) {
				return r.groups[id], rule, true
			}
		}
	}
	return cloud.SecurityGroup{}, cloud.Rule{}, false
}

// Group returns the group with ID id, if the state has it.
func (r *Resolver) Group(id string) (cloud.SecurityGroup, bool) {
	g, ok := r.groups[id]
	return g, ok
}

func (r *Resolver) groupRules(id string, egress bool) []cloud.Rule {
	if egress {
		return r.groups[id].Egress
	}
	return r.groups[id].Ingress
}

// resolve turns rule's peer into prefixes; false for a protocol secgroup does not know.
func (r *Resolver) resolve(rule cloud.Rule) (secgroup.Rule, bool) {
	proto, err := secgroup.ParseProtocol(rule.Protocol)
	if err != nil {
		return secgroup.Rule{}, false
	}
	sr := secgroup.Rule{Protocol: proto, FromPort: rule.FromPort, ToPort: rule.ToPort}
	switch {
	case rule.CIDRv4 != "" || rule.CIDRv6 != "":
		if p, err := netip.ParsePrefix(rule.CIDRv4 + rule.CIDRv6); err == nil {
			sr.Sources = []netip.Prefix{p}
		}
	case rule.GroupID != "":
		sr.Sources = r.members[rule.GroupID]
	default:
		sr.Sources = r.prefixLists[rule.PrefixListID]
	}
	return sr, true
}

// Firewall is the instance firewall's program for the instance interfaces that protect selects,
// with the addresses it selects: each interface's groups' rules, peers resolved as for the load
// balancers (a referenced group means the addresses of the interfaces and load balancers
// carrying it). Interfaces attached to no instance are left out.
func Firewall(st cloud.State, r *Resolver, mode firewall.Mode, protect func(eni cloud.NetworkInterface, addr netip.Addr) bool) firewall.Program {
	p := firewall.Program{Mode: mode}
	if mode == firewall.Off {
		return p
	}
	for _, eni := range st.Interfaces {
		if eni.InstanceID == "" {
			continue
		}
		var addrs []netip.Addr
		for _, ip := range eni.PrivateIPs {
			if a, err := netip.ParseAddr(ip); err == nil && protect(eni, a) {
				addrs = append(addrs, a)
			}
		}
		if len(addrs) == 0 {
			continue
		}
		p.Interfaces = append(p.Interfaces, firewall.Interface{ID: eni.ID, Instance: eni.InstanceID, Addrs: addrs,
			Inbound: r.Rules(eni.Groups, false), Outbound: r.Rules(eni.Groups, true)})
	}
	return p
}
