// Package firewall enforces EC2 security groups on instance interfaces: a
// new flow to (or from) an interface's private address is admitted only if an
// inbound (outbound) rule of one of the interface's groups allows it, as the
// hypervisor does on AWS. It is stateful — replies always pass, and an
// admitted flow outlives a later revoke — because the kernel's connection
// tracker decides what belongs to a flow.
//
// The pure half (this file) compiles interfaces and their resolved rules into
// per-interface match sets; the kernel half programs them into one nftables
// table, replaced in one transaction on every change, so there is never a
// window without rules.
package firewall

import (
	"cmp"
	"net/netip"
	"slices"

	"go4.org/netipx"

	"github.com/moatlb/moat/internal/secgroup"
)

// Mode is how the firewall treats a flow no rule admits.
type Mode string

// Modes of --instance-sg-mode.
const (
	Enforce Mode = "enforce" // drop it
	Audit   Mode = "audit"   // count it, let it through
	Off     Mode = "off"     // program nothing
)

// ParseMode checks a --instance-sg-mode value.
func ParseMode(s string) (Mode, bool) {
	switch m := Mode(s); m {
	case Enforce, Audit, Off:
		return m, true
	}
	return "", false
}

// Interface is one instance interface to protect: its private IPv4
// addresses and its groups' rules, with every peer (CIDR, prefix list,
// referenced group) resolved to prefixes by the caller.
type Interface struct {
	ID       string // eni-…
	Instance string // i-…, for metrics
	Addrs    []netip.Addr
	Inbound  []secgroup.Rule
	Outbound []secgroup.Rule
}

// Program is everything the firewall enforces. Flows that moat lb forwards,
// and its health checks, carry nftutil.MarkFlow: moat lb judged them with the
// load balancer's groups as their source before they left, as AWS judges a
// load balancer's traffic to its targets, so the firewall admits them
// whatever source address they carry (client IP preservation).
type Program struct {
	Mode       Mode
	Interfaces []Interface
	// SkipLoopback admits whatever crosses the loopback interface unjudged: traffic between a
	// host's own addresses never leaves the host, as on AWS traffic within an instance never
	// reaches its interface's groups. moat node sets it; moat lb cannot, because the instances
	// it protects live on loopback.
	SkipLoopback bool
	// Listeners are moat lb's listener sockets on this host whose denied clients the flow log
	// should name (see Listener). The firewall only logs them, it never drops them: that is the
	// data plane's job. Without a flow log, or in mode Off, they are left out.
	Listeners []Listener
}

// Listener is a load balancer listener's socket on this host. The data plane's socket filter
// drops the flows its groups deny before any process sees whose they were; the firewall logs
// the first packet of each new flow to the socket from outside Admit, so that the flow log
// names the client as it does for the data plane's own denials (ReasonListenerGroups).
type Listener struct {
	LoadBalancer, ID string // the data plane's IDs (ARNs)
	Addr             netip.AddrPort
	Protocol         int              // secgroup.ProtocolTCP or secgroup.ProtocolUDP
	Admit            []netipx.IPRange // the IPv4 clients the listener's groups admit
}

// ReasonListenerGroups is the flow log's reason for a listener's denial, as the data plane
// writes it: no rule of the load balancer's groups admits the client.
const ReasonListenerGroups = "security_group"

// listenerKey is how a logged packet finds its listener: protocol, destination address and port.
type listenerKey struct {
	protocol int
	addr     netip.AddrPort
}

// compileListeners keeps the IPv4 listeners (the table is IPv4's) whose groups deny someone, one
// per socket, in a stable order.
func compileListeners(ls []Listener) []Listener {
	var out []Listener
	seen := map[listenerKey]bool{}
	for _, l := range ls {
		l.Addr = netip.AddrPortFrom(l.Addr.Addr().Unmap(), l.Addr.Port())
		k := listenerKey{l.Protocol, l.Addr}
		everyone := len(l.Admit) == 1 && l.Admit[0].From() == netip.IPv4Unspecified() && l.Admit[0].To() == netip.AddrFrom4([4]byte{255, 255, 255, 255})
		if !l.Addr.Addr().Is4() || seen[k] || everyone || (l.Protocol != secgroup.ProtocolTCP && l.Protocol != secgroup.ProtocolUDP) {
			continue
		}
		seen[k] = true
		out = append(out, l)
	}
	slices.SortFunc(out, func(a, b Listener) int {
		return cmp.Or(a.Addr.Compare(b.Addr), cmp.Compare(a.Protocol, b.Protocol))
	})
	return out
}

// match is one compiled rule: a protocol, a port range and the peers it
// admits, the union of every rule with the same protocol and ports.
type match struct {
	protocol int // secgroup.ProtocolAll or an IP protocol number
	// ports is set for tcp and udp rules that do not cover every port.
	ports            bool
	fromPort, toPort uint16
	peers            []netipx.IPRange // IPv4
}

// compiled is an interface's firewall: its addresses and both directions.
type compiled struct {
	id, instance string
	addrs        []netip.Addr // IPv4
	in, out      []match
}

// compile turns the program's interfaces into match lists, merging rules
// with the same protocol and ports. IPv6 addresses and peers are left out:
// the firewall enforces IPv4. An address can be one interface's only (the
// kernel refuses a table that sends it two ways): where a program gives it to
// several, the first interface keeps it, and shared lists it.
func compile(ifaces []Interface) (out []compiled, shared []netip.Addr) {
	owner := map[netip.Addr]bool{}
	for _, ifc := range ifaces {
		c := compiled{id: ifc.ID, instance: ifc.Instance, in: compileRules(ifc.Inbound), out: compileRules(ifc.Outbound)}
		for _, a := range ifc.Addrs {
			if a = a.Unmap(); a.Is4() {
				c.addrs = append(c.addrs, a)
			}
		}
		slices.SortFunc(c.addrs, netip.Addr.Compare)
		c.addrs = slices.Compact(c.addrs)
		c.addrs = slices.DeleteFunc(c.addrs, func(a netip.Addr) bool {
			if owner[a] {
				shared = append(shared, a)
				return true
			}
			owner[a] = true
			return false
		})
		if len(c.addrs) > 0 {
			out = append(out, c)
		}
	}
	return out, shared
}

type matchKey struct {
	protocol         int
	ports            bool
	fromPort, toPort uint16
}

func compileRules(rules []secgroup.Rule) []match {
	sets := map[matchKey]*netipx.IPSetBuilder{}
	for _, r := range rules {
		k := matchKey{protocol: r.Protocol}
		// A negative bound is open, as secgroup.Rule says: -1 to 80 is 0-80.
		from, to := max(r.FromPort, 0), r.ToPort
		if to < 0 || to > 65535 {
			to = 65535
		}
		if (r.Protocol == secgroup.ProtocolTCP || r.Protocol == secgroup.ProtocolUDP) && (from > 0 || to < 65535) {
			k.ports, k.fromPort, k.toPort = true, uint16(min(from, 65535)), uint16(to)
		}
		b := sets[k]
		if b == nil {
			b = &netipx.IPSetBuilder{}
			sets[k] = b
		}
		for _, p := range r.Sources {
			if p.IsValid() && p.Addr().Unmap().Is4() {
				b.AddPrefix(netip.PrefixFrom(p.Addr().Unmap(), min(p.Bits(), 32)).Masked())
			}
		}
	}
	var out []match
	for k, b := range sets {
		set, err := b.IPSet()
		if err != nil || len(set.Ranges()) == 0 {
			continue // a rule whose peers resolve to no address admits no one
		}
		out = append(out, match{protocol: k.protocol, ports: k.ports, fromPort: k.fromPort, toPort: k.toPort, peers: set.Ranges()})
	}
	slices.SortFunc(out, func(a, b match) int {
		return cmp.Or(cmp.Compare(a.protocol, b.protocol), cmp.Compare(a.fromPort, b.fromPort), cmp.Compare(a.toPort, b.toPort))
	})
	return out
}

// Judgement is what the firewall does with the first packet of a new flow to an address.
type Judgement struct {
	// Interface and Instance own the address; both are empty when the program protects no
	// interface with it, so nothing is enforced there.
	Interface, Instance string
	Admitted            bool // a rule of the interface's groups admits the flow
}

// Judge reports what the program does with a new inbound flow (not one of moat lb's) from src
// to dst's port: it runs the matches compile gives the kernel table, so it judges as the table
// does.
func (p Program) Judge(src, dst netip.Addr, protocol int, port uint16) Judgement {
	ifaces, _ := compile(p.Interfaces)
	src, dst = src.Unmap(), dst.Unmap()
	for _, c := range ifaces {
		if _, ok := slices.BinarySearchFunc(c.addrs, dst, netip.Addr.Compare); !ok {
			continue
		}
		j := Judgement{Interface: c.id, Instance: c.instance}
		j.Admitted = slices.ContainsFunc(c.in, func(m match) bool { return m.admits(src, protocol, port) })
		return j
	}
	return Judgement{}
}

func (m match) admits(peer netip.Addr, protocol int, port uint16) bool {
	if m.protocol != secgroup.ProtocolAll && m.protocol != protocol {
		return false
	}
	if m.ports && (port < m.fromPort || port > m.toPort) {
		return false
	}
	return slices.ContainsFunc(m.peers, func(r netipx.IPRange) bool { return r.Contains(peer) })
}
