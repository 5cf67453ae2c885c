package lb

import (
	"crypto/tls"
	"log/slog"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/moatlb/moat/internal/cloud"
	"github.com/moatlb/moat/internal/dataplane"
	"github.com/moatlb/moat/internal/secgroup"
	"github.com/moatlb/moat/internal/sgresolve"
	"github.com/moatlb/moat/internal/tlspolicy"
)

// desiredConfig turns the control plane's state into the data plane's desired state: addresses,
// listeners with their compiled admission policies, target groups with their attributes, and for
// every target whether the load balancer's own traffic and health checks may reach it (the
// backend security-group decision). It is pure: everything it needs is in st (n indexes it), and now, which
// decides the deregistered targets whose delay is over: they leave the data plane (no flows, no
// health checks), as they leave the target group on AWS.
func desiredConfig(st cloud.State, n *network, now time.Time) dataplane.Config {
	tgs := map[string]cloud.TargetGroup{}
	for _, tg := range st.TargetGroups {
		tg.Targets = tg.CurrentTargets(now)
		tgs[tg.ARN] = tg
	}
	var cfg dataplane.Config
	for _, lb := range st.LoadBalancers {
		out := dataplane.LoadBalancer{ID: lb.ARN, CrossZone: lb.Attributes["load_balancing.cross_zone.enabled"] == "true"}
		var lbAddrs []netip.Addr
		for _, z := range lb.Zones {
			// A dualstack load balancer's zone is listed once per address (see dataplane.LoadBalancer).
			for _, s := range []string{z.Address, z.IPv6Address} {
				if a, err := netip.ParseAddr(s); err == nil {
					out.Zones = append(out.Zones, dataplane.Zone{Name: z.Zone, Addr: a})
					lbAddrs = append(lbAddrs, a)
				}
			}
		}
		for _, l := range n.listenersOf[lb.ARN] {
			tg, ok := tgs[l.TargetGroupARN]
			if !ok {
				continue
			}
			dl := dataplane.Listener{ID: l.ARN, Protocol: dataplane.Protocol(l.Protocol), Port: uint16(l.Port)}
			if secs, err := strconv.Atoi(l.Attributes["tcp.idle_timeout.seconds"]); err == nil {
				dl.TCPIdleTimeout = time.Duration(secs) * time.Second
			}
			if len(lb.SecurityGroups) > 0 {
				// A load balancer created without groups admits everyone: the policies stay nil.
				if l.Protocol != "UDP" {
					dl.AdmitTCP = n.policy(lb.SecurityGroups, false, secgroup.ProtocolTCP, uint16(l.Port))
				}
				if l.Protocol == "UDP" || l.Protocol == "TCP_UDP" {
					dl.AdmitUDP = n.policy(lb.SecurityGroups, false, secgroup.ProtocolUDP, uint16(l.Port))
				}
			}
			if l.TLS != nil {
				dl.TLS = n.listenerTLS(*l.TLS)
			}
			dl.TargetGroup = n.targetGroup(tg, lb, lbAddrs)
			out.Listeners = append(out.Listeners, dl)
		}
		cfg.LoadBalancers = append(cfg.LoadBalancers, out)
	}
	return cfg
}

// listenerTLS is a TLS listener's certificates (the default, then its certificate list; one
// that cannot be loaded is left out, and without its default certificate the listener cannot
// serve, which the data plane reports) and policies, which the API checked by name.
func (n *network) listenerTLS(t cloud.ListenerTLS) *dataplane.ListenerTLS {
	out := &dataplane.ListenerTLS{}
	for _, arn := range append([]string{t.DefaultCertificate}, t.ExtraCertificates...) {
		if pair, ok := n.keyPairs[arn]; ok {
			out.Certificates = append(out.Certificates, pair)
		} else if arn == t.DefaultCertificate {
			return out
		}
	}
	out.Policy, _ = tlspolicy.Lookup(t.SslPolicy)
	if len(t.AlpnPolicy) > 0 {
		out.ALPN, _ = tlspolicy.ALPN(t.AlpnPolicy[0])
	}
	return out
}

// network indexes the state's security groups (the resolver, shared with the instance
// firewall and moat node) and what the data plane needs to find targets' interfaces.
type network struct {
	*sgresolve.Resolver
	instances  map[string]cloud.Instance
	interfaces map[string]cloud.NetworkInterface
	byAddr     map[netip.Addr]cloud.NetworkInterface
	zoneOf     map[string]string // subnet ID -> zone
	// listenersOf are the listeners by load balancer ARN, in the state's order: looking them up
	// per load balancer must not scan every listener (thousands of each).
	listenersOf map[string][]cloud.Listener
	// policies memoises compiled decisions: every target of a group behind the same load
	// balancer (and every interface with the same groups) asks the same question.
	policies map[policyKey]*secgroup.Policy
	// keyPairs are the certificates that load, by ARN (see keyPairCache).
	keyPairs map[string]tls.Certificate
}

type policyKey struct {
	groups   string // the group IDs, joined
	egress   bool
	protocol int
	port     uint16
}

// policy is the compiled decision of groups' inbound (or outbound) rules for protocol and port.
func (n *network) policy(groups []string, egress bool, protocol int, port uint16) *secgroup.Policy {
	key := policyKey{strings.Join(groups, ","), egress, protocol, port}
	p, ok := n.policies[key]
	if !ok {
		p = secgroup.Compile(n.Rules(groups, egress), protocol, port)
		n.policies[key] = p
	}
	return p
}

func newNetwork(st cloud.State) *network {
	n := &network{
		Resolver:  sgresolve.New(st),
		instances: map[string]cloud.Instance{}, interfaces: map[string]cloud.NetworkInterface{}, byAddr: map[netip.Addr]cloud.NetworkInterface{}, zoneOf: map[string]string{},
		policies: map[policyKey]*secgroup.Policy{}, listenersOf: map[string][]cloud.Listener{},
	}
	for _, l := range st.Listeners {
		n.listenersOf[l.LoadBalancerARN] = append(n.listenersOf[l.LoadBalancerARN], l)
	}
	for _, eni := range st.Interfaces {
		n.interfaces[eni.ID] = eni
		for _, ip := range eni.PrivateIPs {
			if a, err := netip.ParseAddr(ip); err == nil {
				n.byAddr[a] = eni
			}
		}
	}
	for _, i := range st.Instances {
		n.instances[i.ID] = i
	}
	for _, s := range st.Subnets {
		n.zoneOf[s.ID] = s.Zone
	}
	return n
}

// reachable is the backend security-group decision for the load balancer's own traffic to a
// target: the load balancer's outbound rules must allow the target address and port, and the
// inbound rules of the target interface's groups must admit one of the load balancer's addresses
// of the target's family, which its traffic there comes from (a rule referencing the load
// balancer's group does, as on AWS). A load balancer without groups may send anywhere. A target
// no interface carries (an ip target outside the inventory) has no groups to enforce.
func (n *network) reachable(lb cloud.LoadBalancer, lbAddrs []netip.Addr, eni *cloud.NetworkInterface, target netip.Addr, protocol int, port uint16) bool {
	if len(lb.SecurityGroups) > 0 && !n.policy(lb.SecurityGroups, true, protocol, port).Allows(target) {
		return false
	}
	if eni == nil {
		return true
	}
	in := n.policy(eni.Groups, false, protocol, port)
	return slices.ContainsFunc(lbAddrs, func(a netip.Addr) bool { return a.Is4() == target.Unmap().Is4() && in.Allows(a) })
}

// trafficProtocols are the IP protocols a target group's traffic uses: a TCP_UDP group needs
// both allowed.
func trafficProtocols(tgProtocol string) []int {
	switch tgProtocol {
	case "UDP":
		return []int{secgroup.ProtocolUDP}
	case "TCP_UDP":
		return []int{secgroup.ProtocolTCP, secgroup.ProtocolUDP}
	}
	return []int{secgroup.ProtocolTCP}
}

func (n *network) targetGroup(tg cloud.TargetGroup, lb cloud.LoadBalancer, lbAddrs []netip.Addr) dataplane.TargetGroup {
	attr := func(k string) bool { return tg.Attributes[k] == "true" }
	out := dataplane.TargetGroup{
		ID:                        tg.ARN,
		TLS:                       tg.Protocol == "TLS",
		ProxyProtocolV2:           attr("proxy_protocol_v2.enabled"),
		PreserveClientIP:          attr("preserve_client_ip.enabled"),
		StickinessSourceIP:        attr("stickiness.enabled") && tg.Attributes["stickiness.type"] == "source_ip",
		TerminateOnDeregistration: attr("deregistration_delay.connection_termination.enabled"),
		TerminateOnUnhealthy:      attr("target_health_state.unhealthy.connection_termination.enabled"),
		MinHealthyTargets:         cloud.AttributeInt(tg.Attributes["target_group_health.unhealthy_state_routing.minimum_healthy_targets.count"], 0),
		MinHealthyPercent:         cloud.AttributeInt(tg.Attributes["target_group_health.unhealthy_state_routing.minimum_healthy_targets.percentage"], 0),
		HealthCheck: dataplane.HealthCheck{
			Protocol: tg.HealthCheck.Protocol, Path: tg.HealthCheck.Path, Matcher: tg.HealthCheck.Matcher,
			Interval:           time.Duration(tg.HealthCheck.IntervalSeconds) * time.Second,
			Timeout:            time.Duration(tg.HealthCheck.TimeoutSeconds) * time.Second,
			HealthyThreshold:   tg.HealthCheck.HealthyThreshold,
			UnhealthyThreshold: tg.HealthCheck.UnhealthyThreshold,
		},
	}
	if p, err := strconv.Atoi(tg.HealthCheck.Port); err == nil {
		out.HealthCheck.Port = uint16(p)
	}
	for _, t := range tg.Targets {
		dt := dataplane.Target{ID: t.ID, Port: uint16(t.Port), Zone: t.AvailabilityZone, DrainingUntil: t.DrainingUntil}
		var eni *cloud.NetworkInterface
		if tg.TargetType == "instance" {
			inst, ok := n.instances[t.ID]
			if !ok || inst.State != "running" {
				continue
			}
			dt.Addr, _ = netip.ParseAddr(inst.PrivateIP)
			dt.Zone = n.zoneOf[inst.SubnetID]
			if e, ok := n.interfaces[inst.InterfaceID]; ok {
				eni = &e
			}
		} else {
			a, err := netip.ParseAddr(t.ID)
			if err != nil {
				continue
			}
			dt.Addr = a
			if e, ok := n.byAddr[a]; ok {
				eni = &e
			}
		}
		hcPort := dt.Port
		if out.HealthCheck.Port != 0 {
			hcPort = out.HealthCheck.Port
		}
		dt.TrafficAllowed = true
		for _, proto := range trafficProtocols(tg.Protocol) {
			dt.TrafficAllowed = dt.TrafficAllowed && n.reachable(lb, lbAddrs, eni, dt.Addr, proto, dt.Port)
		}
		// Health checks are TCP connections, also for HTTP(S) checks and UDP groups.
		dt.HealthCheckAllowed = n.reachable(lb, lbAddrs, eni, dt.Addr, secgroup.ProtocolTCP, hcPort)
		out.Targets = append(out.Targets, dt)
	}
	return out
}

// keyPairCache keeps certificates parsed between syncs: a sync compiles the whole state, and
// parsing every key pair each time would cost more than everything else for a few hundred TLS
// listeners. An entry is parsed again when its certificate is reimported.
type keyPairCache struct {
	entries map[string]keyPairEntry
}

type keyPairEntry struct {
	importedAt time.Time
	pair       tls.Certificate
	err        error
}

// keyPairs returns the certificates of st that load, by ARN, and forgets deleted ones.
func (c *keyPairCache) keyPairs(certs []cloud.Certificate, log *slog.Logger) map[string]tls.Certificate {
	next := make(map[string]keyPairEntry, len(certs))
	out := make(map[string]tls.Certificate, len(certs))
	for _, cert := range certs {
		e, ok := c.entries[cert.ARN]
		if !ok || !e.importedAt.Equal(cert.ImportedAt) {
			e = keyPairEntry{importedAt: cert.ImportedAt}
			if e.pair, e.err = cert.KeyPair(); e.err != nil {
				log.Error("certificate cannot be served", "arn", cert.ARN, "err", e.err)
			}
		}
		next[cert.ARN] = e
		if e.err == nil {
			out[cert.ARN] = e.pair
		}
	}
	c.entries = next
	return out
}
