package dataplane

import (
	"cmp"
	"net/netip"
	"slices"
	"syscall"
)

// admit is the data plane's decision for a new flow from client to local, where the route
// listens: the listener's security groups first, then a target. It returns the target with the
// group settings it was chosen under, or why there is none (DenySecurityGroup, DenyNoTarget). The TCP and UDP sockets decide every flow
// with it, and Decide answers with it, so what moat explain says is what the sockets do.
func (r *route) admit(u *Userspace, client, local netip.AddrPort, proto byte) (*target, *tgSettings, string) {
	if !r.policy.Allows(client.Addr()) {
		return nil, nil, DenySecurityGroup
	}
	sel := r.tg.sel.Load()
	t := sel.scope(r.zone, r.crossZone).pick(flowHash(u.seed, client, local, proto, sel.set.StickinessSourceIP))
	if t == nil {
		return nil, nil, DenyNoTarget
	}
	return t, sel.set, ""
}

// Decision is what the data plane does now with a new flow to a load balancer address and port.
type Decision struct {
	LoadBalancerID, ListenerID, TargetGroupID string
	// Zone is the zone of the load balancer address the flow reaches.
	Zone string
	// Denied is empty for an admitted flow, else DenySecurityGroup or DenyNoTarget. Flow-limit
	// denials depend on the flows open at the instant and are not predicted.
	Denied string
	// Target is the target an admitted flow goes to, with its health. The kernel fast path
	// spreads flows over the same Eligible targets by its own hash, so for a flow it carries
	// another of them may be chosen.
	Target *DecidedTarget
	// Eligible are the targets new flows in the scope (the zone, or every zone with cross-zone
	// on) may go to; InScope is every registered target in the scope, with what keeps one out.
	Eligible, InScope []DecidedTarget
	FailingOpen       bool // too few candidates are healthy: flows go to all of them
	CrossZone         bool
}

// DecidedTarget is a target as a decision sees it.
type DecidedTarget struct {
	ID             string
	Port           uint16
	Addr           netip.AddrPort
	Zone           string
	Health         Health
	Draining       bool
	TrafficAllowed bool // the backend security-group decision (Target.TrafficAllowed)
}

// Decide reports what the engine does with a new flow from client to the listener socket at lb
// (network "tcp" or "udp"); false when no listener listens there. A client port of 0 stands for
// any: the target then is the one a flow from port 0 would get.
func (u *Userspace) Decide(client, lb netip.AddrPort, network string) (Decision, bool) {
	key := sockKey{addr: lb.Addr(), port: lb.Port(), network: network}
	u.mu.Lock()
	s := u.sockets[key]
	u.mu.Unlock()
	var r *route
	switch s := s.(type) {
	case *tcpSocket:
		r = s.r.Load()
	case *udpSocket:
		r = s.r.Load()
	}
	if r == nil {
		return Decision{}, false
	}
	proto := byte(syscall.IPPROTO_TCP)
	if network == "udp" {
		proto = syscall.IPPROTO_UDP
	}
	d := Decision{LoadBalancerID: r.lbID, ListenerID: r.listenerID, TargetGroupID: r.tg.id, Zone: r.zone, CrossZone: r.crossZone}
	t, _, denied := r.admit(u, client, lb, proto)
	d.Denied = denied
	cands := r.tg.sel.Load().scope(r.zone, r.crossZone)
	d.FailingOpen = cands != nil && len(cands.all) > 0 && cands.failingOpen()
	for _, e := range cands.eligible() {
		d.Eligible = append(d.Eligible, r.tg.decided(e))
	}
	if t != nil {
		dt := r.tg.decided(t)
		d.Target = &dt
	}
	d.InScope = r.tg.inScope(r.zone, r.crossZone)
	return d, true
}

func (g *targetGroup) decided(t *target) DecidedTarget {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.decidedLocked(t)
}

func (g *targetGroup) decidedLocked(t *target) DecidedTarget {
	return DecidedTarget{ID: t.key.id, Port: t.key.port, Addr: t.addr, Zone: t.cfg.Zone, Health: t.reportedLocked(),
		Draining: !t.cfg.DrainingUntil.IsZero(), TrafficAllowed: t.cfg.TrafficAllowed}
}

// inScope is every registered target in use that a flow of the zone (or of every zone) could
// be balanced to, were it reachable and not draining: those the backend groups keep out too.
func (g *targetGroup) inScope(zone string, crossZone bool) []DecidedTarget {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []DecidedTarget
	for _, t := range g.targets {
		if !t.inUse {
			continue
		}
		if !crossZone && t.cfg.Zone != "" && t.cfg.Zone != zoneAll && t.cfg.Zone != zone {
			continue
		}
		out = append(out, g.decidedLocked(t))
	}
	slices.SortFunc(out, func(a, b DecidedTarget) int { return cmp.Or(cmp.Compare(a.ID, b.ID), cmp.Compare(a.Port, b.Port)) })
	return out
}
