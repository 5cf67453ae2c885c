package dataplane

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/moatlb/moat/internal/secgroup"
)

// plan is the pure half of Apply: a Config validated and resolved into the
// listening sockets and target groups it asks for, with NLB's defaults
// filled in. What cannot be served for reasons the Config alone shows
// (conflicting listeners, a bad protocol or address) is in failed; the rest
// is for the engine to bind and reconcile.
type plan struct {
	sockets   []*desiredSocket // in Config order: the first listener to want a socket gets it
	groups    map[string]*desiredGroup
	listeners map[string]*listenerState
	failed    []*ListenerError
}

// desiredSocket is a listening socket the Config asks for, and its route
// (whose target group and metrics the engine fills in).
type desiredSocket struct {
	key      sockKey
	route    *route
	tgID     string
	listener *listenerState
}

type desiredGroup struct {
	set     *tgSettings
	targets []Target
}

type listenerState struct {
	lbID string
	errs []*ListenerError
}

func planConfig(cfg Config) *plan {
	p := &plan{groups: map[string]*desiredGroup{}, listeners: map[string]*listenerState{}}
	taken := map[sockKey]bool{}
	for _, lb := range cfg.LoadBalancers {
		zones := make(map[string]zoneAddrs, len(lb.Zones))
		var zoneOrder, badZones []string
		var addrs []Zone // every address to listen on, in Config order
		for _, z := range lb.Zones {
			if !z.Addr.IsValid() {
				badZones = append(badZones, z.Name)
				continue
			}
			za, seen := zones[z.Name]
			if !seen {
				zoneOrder = append(zoneOrder, z.Name)
			}
			a := z.Addr.Unmap()
			if za.of(a).IsValid() {
				continue // a second address of one family in a zone: the first one serves
			}
			zones[z.Name] = za.with(a)
			addrs = append(addrs, Zone{Name: z.Name, Addr: a})
		}
		for _, l := range lb.Listeners {
			ls := &listenerState{lbID: lb.ID}
			p.listeners[l.ID] = ls
			fail := func(network string, addr netip.AddrPort, err error) {
				e := &ListenerError{LoadBalancerID: lb.ID, ListenerID: l.ID, Network: network, Addr: addr, Err: err}
				ls.errs = append(ls.errs, e)
				p.failed = append(p.failed, e)
			}
			for _, z := range badZones {
				fail("", netip.AddrPort{}, fmt.Errorf("zone %q has no valid load balancer address", z))
			}
			var networks []string
			var tlsr *tlsRoute
			switch l.Protocol {
			case TCP:
				networks = []string{"tcp"}
			case TLS:
				networks = []string{"tcp"}
				var err error
				if tlsr, err = newTLSRoute(l.TLS); err != nil {
					fail("", netip.AddrPort{}, err)
					continue
				}
			case UDP:
				networks = []string{"udp"}
			case TCPUDP:
				networks = []string{"tcp", "udp"}
			default:
				fail("", netip.AddrPort{}, fmt.Errorf("unsupported listener protocol %q", l.Protocol))
				continue
			}
			if l.Port == 0 {
				fail("", netip.AddrPort{}, errors.New("listener port 0"))
				continue
			}
			tg := l.TargetGroup
			if _, ok := p.groups[tg.ID]; !ok {
				p.groups[tg.ID] = &desiredGroup{set: newSettings(tg, zones, zoneOrder, l.Port), targets: tg.Targets}
			}
			for _, z := range addrs {
				for _, network := range networks {
					key := sockKey{addr: z.Addr, port: l.Port, network: network}
					if taken[key] {
						fail(network, key.addrPort(), ErrListenerConflict)
						continue
					}
					taken[key] = true
					r := newRoute(lb, l, z.Name, zones[z.Name], network)
					r.tls = tlsr
					p.sockets = append(p.sockets, &desiredSocket{key: key, route: r, tgID: tg.ID, listener: ls})
				}
			}
		}
	}
	return p
}

// zoneAddrs are a load balancer's addresses in one zone: IPv4, and IPv6 when it is dualstack.
type zoneAddrs struct{ v4, v6 netip.Addr }

// of returns the zone's address of a's family, or the zero Addr when it has none. The load
// balancer's traffic to a target leaves from there: an IPv6 client's flow to an IPv4 target
// comes from the zone's IPv4 address, as AWS translates it.
func (z zoneAddrs) of(a netip.Addr) netip.Addr {
	if a.Unmap().Is4() {
		return z.v4
	}
	return z.v6
}

// with returns z with a as its address of a's family.
func (z zoneAddrs) with(a netip.Addr) zoneAddrs {
	if a = a.Unmap(); a.Is4() {
		z.v4 = a
	} else {
		z.v6 = a
	}
	return z
}

// upstreamSource is the address a flow from client, arrived on the load balancer's address
// local, leaves from to target: the client's own when it is preserved (a loopback client of the
// target's family, see the package doc), else local or, when local is of the other family (a
// dualstack load balancer's IPv6 client and an IPv4 target), the load balancer's address of the
// target's family in the route's zone: AWS translates such flows, never preserving the client's
// address. The zero Addr, when the load balancer has no address of the target's family or the
// source would be a loopback address leaving the host (see sourceToward), lets the kernel choose.
func (r *route) upstreamSource(preserve bool, client, local, target netip.Addr) netip.Addr {
	target = target.Unmap()
	switch {
	case preserve && client.IsLoopback() && client.Is4() == target.Is4():
		return sourceToward(client, target)
	case local.Is4() == target.Is4():
		return sourceToward(local, target)
	}
	return sourceToward(r.local.of(target), target)
}

// sourceToward is src, or the zero Addr (the kernel chooses) when src is a loopback address and
// target is not: the kernel refuses a loopback source on any other interface (connect fails with
// EINVAL), so a load balancer on loopback reaches targets on the host's other networks (a kind
// cluster's nodes on a Docker bridge) from the host's own address on that network.
func sourceToward(src, target netip.Addr) netip.Addr {
	if src.IsLoopback() && !target.Unmap().IsLoopback() {
		return netip.Addr{}
	}
	return src
}

// newRoute is a listener's route on one of its sockets, with defaults: no
// policy admits everyone, idle timeouts are NLB's.
func newRoute(lb LoadBalancer, l Listener, zone string, local zoneAddrs, network string) *route {
	r := &route{
		lbID: lb.ID, listenerID: l.ID, proto: network, zone: zone, local: local, crossZone: lb.CrossZone,
		policy: l.AdmitTCP, idle: l.TCPIdleTimeout,
	}
	if network == "udp" {
		r.policy, r.idle = l.AdmitUDP, l.UDPIdleTimeout
	}
	if r.policy == nil {
		r.policy = secgroup.AllowAll()
	}
	if r.idle <= 0 {
		r.idle = DefaultTCPIdleTimeout
		if network == "udp" {
			r.idle = DefaultUDPIdleTimeout
		}
	}
	return r
}

// newSettings resolves a target group's settings: the first listener that
// references the group gives the zones (its load balancer's) and the port
// for the health check's Host header.
func newSettings(tg TargetGroup, zones map[string]zoneAddrs, zoneOrder []string, port uint16) *tgSettings {
	set := &tgSettings{TargetGroup: tg, hc: tg.HealthCheck.withDefaults(), zones: zones, zoneOrder: zoneOrder, hostPort: port}
	set.Targets = nil
	set.match, set.matchErr = parseMatcher(set.hc.Matcher)
	return set
}
