// Package explain answers "what happens to a flow from this client to that address and port, and
// why": through a load balancer (its listener, its security groups, the target the data plane
// picks and the backend groups between them) or straight to an instance (the instance firewall).
//
// The verdict is never computed here: it is the data plane's own decision (Decide, the function
// the listener sockets decide every new flow with) or the instance firewall's (Program.Judge,
// over the matches the kernel table is built from). This package only names the rules behind a
// decision and the change that would turn a drop into an admission, so an explanation cannot
// drift from what moat does.
package explain

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/moatlb/moat/internal/cloud"
	"github.com/moatlb/moat/internal/dataplane"
	"github.com/moatlb/moat/internal/firewall"
	"github.com/moatlb/moat/internal/secgroup"
	"github.com/moatlb/moat/internal/sgresolve"
)

// Query is a question: a flow from a client address to To, "host:port", where host is a load
// balancer's DNS name or address, or an instance's private address or ID.
type Query struct {
	From     string
	To       string
	Protocol string `json:",omitempty"` // tcp (the default) or udp
}

// Verdicts: what happens to the flow.
const (
	Allowed = "allowed"
	// DroppedByLoadBalancerGroup: no inbound rule of the load balancer's groups admits the client;
	// its packets are dropped (a TCP client times out).
	DroppedByLoadBalancerGroup = "dropped_by_load_balancer_group"
	// DroppedByTargetGroup: the security groups between the load balancer and its targets (the load
	// balancer's outbound rules, the targets' inbound ones) keep every target out, or, straight to
	// an instance, no inbound rule of its groups admits the client.
	DroppedByTargetGroup = "dropped_by_target_group"
	// NoHealthyTarget: no target may take the flow (none registered in the zone, or all draining);
	// the load balancer resets it.
	NoHealthyTarget = "no_healthy_target"
	// NoListener: nothing listens on that port of the load balancer.
	NoListener = "no_listener"
)

// Answer is the explanation of a query: one path per address the destination names (a load
// balancer's DNS name names an address per zone).
type Answer struct {
	Query Query
	Paths []Path
}

// Path is what happens to the flow at one destination address.
type Path struct {
	To      string // address:port
	Verdict string
	Steps   []Step
	// Fix is the change that would admit the flow, as an AWS CLI command or an instruction;
	// empty when it is allowed.
	Fix string `json:",omitempty"`
}

// Step is one stage the flow passes or is stopped at.
type Step struct {
	Stage  string // listener, load-balancer-groups, target, backend-groups, instance-groups
	Result string // pass, drop, note
	Detail string
	Rule   *Rule `json:",omitempty"` // the rule that admits the flow at this stage
}

// Step results.
const (
	Pass = "pass"
	Drop = "drop"
	Note = "note"
)

// Rule is a security-group rule as an explanation names it.
type Rule struct {
	GroupID, GroupName string
	Direction          string // inbound, outbound
	Protocol           string
	FromPort, ToPort   int
	Peer               string // CIDR, group ID or prefix list ID
	Description        string `json:",omitempty"`
}

func (r Rule) String() string {
	ports := ""
	if r.FromPort >= 0 && (r.Protocol == "tcp" || r.Protocol == "udp") {
		ports = " " + strconv.Itoa(r.FromPort)
		if r.ToPort != r.FromPort {
			ports += "-" + strconv.Itoa(r.ToPort)
		}
	}
	proto := r.Protocol
	if proto == "-1" {
		proto = "all traffic"
	}
	dir := "from"
	if r.Direction == "outbound" {
		dir = "to"
	}
	return fmt.Sprintf("%s (%s) %s %s%s %s %s", r.GroupID, r.GroupName, r.Direction, proto, ports, dir, r.Peer)
}

// Facts are what an explanation is made of: the state, its groups resolved, and the data plane's
// and the firewall's decisions.
type Facts struct {
	State    cloud.State
	Resolver *sgresolve.Resolver
	// Decide is the data plane's decision for a new flow to a listener socket
	// (dataplane.Userspace.Decide).
	Decide func(client, lb netip.AddrPort, network string) (dataplane.Decision, bool)
	// Firewall is how this host's instance firewall treats unadmitted flows (Off when it does not
	// run), and Local says which addresses it protects.
	Firewall firewall.Mode
	Local    func(netip.Addr) bool
}

// InvalidQueryError is a query that names no client, destination or protocol moat knows.
type InvalidQueryError struct{ Message string }

func (e *InvalidQueryError) Error() string { return e.Message }

func invalid(format string, args ...any) error {
	return &InvalidQueryError{fmt.Sprintf(format, args...)}
}

// Explain answers q from f.
func Explain(f Facts, q Query) (Answer, error) {
	q.Protocol = strings.ToLower(q.Protocol)
	if q.Protocol == "" {
		q.Protocol = "tcp"
	}
	if q.Protocol != "tcp" && q.Protocol != "udp" {
		return Answer{}, invalid("protocol %q: give tcp or udp", q.Protocol)
	}
	from, err := netip.ParseAddr(q.From)
	if err != nil {
		return Answer{}, invalid("from %q is not an IP address", q.From)
	}
	from = from.Unmap()
	host, portText, err := net.SplitHostPort(q.To)
	if err != nil {
		return Answer{}, invalid("to %q: give host:port (a load balancer's DNS name or address, or an instance's address or ID, and a port)", q.To)
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil || port == 0 {
		return Answer{}, invalid("to %q: the port must be 1-65535", q.To)
	}
	e := explainer{f: f, from: from, port: uint16(port), network: q.Protocol}
	e.protocol = secgroup.ProtocolTCP
	if q.Protocol == "udp" {
		e.protocol = secgroup.ProtocolUDP
	}
	a := Answer{Query: q}
	if lb, addrs, ok := e.loadBalancer(host); ok {
		if len(addrs) == 0 {
			return Answer{}, invalid("load balancer %s has no address of %s's family", lb.Name, from)
		}
		for _, addr := range addrs {
			a.Paths = append(a.Paths, e.throughLoadBalancer(lb, addr))
		}
		return a, nil
	}
	if eni, addr, ok := e.instance(host); ok {
		a.Paths = append(a.Paths, e.direct(eni, addr))
		return a, nil
	}
	return Answer{}, invalid("to %q: no load balancer or instance has that name, ID or address", q.To)
}

type explainer struct {
	f        Facts
	from     netip.Addr
	port     uint16
	network  string // tcp or udp
	protocol int    // secgroup's number of network
}

// loadBalancer finds the load balancer host names and the addresses of it to explain: the one
// given, or every zone's address of the client's family for a DNS name.
func (e *explainer) loadBalancer(host string) (cloud.LoadBalancer, []netip.Addr, bool) {
	if a, err := netip.ParseAddr(host); err == nil {
		a = a.Unmap()
		for _, lb := range e.f.State.LoadBalancers {
			for _, z := range lb.Zones {
				if z.Address == a.String() || z.IPv6Address == a.String() {
					return lb, []netip.Addr{a}, true
				}
			}
		}
		return cloud.LoadBalancer{}, nil, false
	}
	name := strings.TrimSuffix(strings.ToLower(host), ".")
	for _, lb := range e.f.State.LoadBalancers {
		if strings.ToLower(lb.DNSName) != name {
			continue
		}
		var addrs []netip.Addr
		for _, z := range lb.Zones {
			for _, s := range []string{z.Address, z.IPv6Address} {
				if a, err := netip.ParseAddr(s); err == nil && a.Is4() == e.from.Is4() {
					addrs = append(addrs, a)
				}
			}
		}
		return lb, addrs, true
	}
	return cloud.LoadBalancer{}, nil, false
}

// instance finds the instance interface host names: by private address or instance ID.
func (e *explainer) instance(host string) (cloud.NetworkInterface, netip.Addr, bool) {
	if a, err := netip.ParseAddr(host); err == nil {
		a = a.Unmap()
		for _, eni := range e.f.State.Interfaces {
			if eni.InstanceID != "" && slices.Contains(eni.PrivateIPs, a.String()) {
				return eni, a, true
			}
		}
		return cloud.NetworkInterface{}, netip.Addr{}, false
	}
	for _, inst := range e.f.State.Instances {
		if inst.ID != host {
			continue
		}
		a, err := netip.ParseAddr(inst.PrivateIP)
		if err != nil {
			break
		}
		for _, eni := range e.f.State.Interfaces {
			if eni.ID == inst.InterfaceID {
				return eni, a, true
			}
		}
	}
	return cloud.NetworkInterface{}, netip.Addr{}, false
}

// listens reports whether a listener of protocol serves flows of the query's network.
func (e *explainer) listens(protocol string) bool {
	switch protocol {
	case "TCP_UDP":
		return true
	case "UDP":
		return e.network == "udp"
	}
	return e.network == "tcp" // TCP, TLS
}

func (e *explainer) throughLoadBalancer(lb cloud.LoadBalancer, addr netip.Addr) Path {
	to := netip.AddrPortFrom(addr, e.port)
	p := Path{To: to.String()}
	var listener *cloud.Listener
	for _, l := range e.f.State.Listeners {
		if l.LoadBalancerARN == lb.ARN && l.Port == int(e.port) && e.listens(l.Protocol) {
			listener = &l
			break
		}
	}
	if listener == nil {
		p.Verdict = NoListener
		p.Steps = append(p.Steps, Step{Stage: "listener", Result: Drop, Detail: fmt.Sprintf("load balancer %s has no %s listener on port %d", lb.Name, e.network, e.port)})
		p.Fix = fmt.Sprintf("aws elbv2 create-listener --load-balancer-arn %s --protocol %s --port %d --default-actions Type=forward,TargetGroupArn=<target group ARN>",
			lb.ARN, strings.ToUpper(e.network), e.port)
		return p
	}
	d, ok := e.f.Decide(netip.AddrPortFrom(e.from, 0), to, e.network)
	if !ok {
		p.Verdict = NoListener
		p.Steps = append(p.Steps, Step{Stage: "listener", Result: Drop,
			Detail: fmt.Sprintf("listener %s %d is not served on %s (see the load balancer's state and moat lb's log)", listener.Protocol, listener.Port, addr)})
		return p
	}
	p.Steps = append(p.Steps, Step{Stage: "listener", Result: Pass, Detail: fmt.Sprintf("%s %d of %s (%s), zone %s", listener.Protocol, listener.Port, lb.Name, listener.ARN, d.Zone)})

	// The load balancer's groups, judged by the data plane.
	switch {
	case len(lb.SecurityGroups) == 0:
		p.Steps = append(p.Steps, Step{Stage: "load-balancer-groups", Result: Pass, Detail: "the load balancer has no security groups: every client is admitted"})
	case d.Denied == dataplane.DenySecurityGroup:
		p.Verdict = DroppedByLoadBalancerGroup
		p.Steps = append(p.Steps, Step{Stage: "load-balancer-groups", Result: Drop,
			Detail: fmt.Sprintf("no inbound rule of %s admits %s on %s %d", e.groupNames(lb.SecurityGroups), e.from, e.network, e.port)})
		p.Fix = e.authorizeIngress(lb.SecurityGroups[0], e.port, "--cidr "+prefixOf(e.from))
		return p
	default:
		step := Step{Stage: "load-balancer-groups", Result: Pass, Detail: fmt.Sprintf("%s is admitted", e.from)}
		if g, r, ok := e.f.Resolver.Admitting(lb.SecurityGroups, false, e.protocol, e.port, e.from); ok {
			step.Rule = ruleOf(g, r, "inbound")
			step.Detail += " by " + step.Rule.String()
		}
		p.Steps = append(p.Steps, step)
	}

	if d.Denied == dataplane.DenyNoTarget {
		return e.noTarget(p, lb, d)
	}
	p.Verdict = Allowed
	t := d.Target
	detail := fmt.Sprintf("target %s port %d (%s, zone %s), %s", t.ID, t.Port, t.Addr, t.Zone, healthText(t.Health))
	if len(d.Eligible) > 1 {
		detail += fmt.Sprintf("; flows are spread over %d eligible targets", len(d.Eligible))
	}
	p.Steps = append(p.Steps, Step{Stage: "target", Result: Pass, Detail: detail})
	if d.FailingOpen {
		p.Steps = append(p.Steps, Step{Stage: "target", Result: Note, Detail: "too few targets are healthy: the load balancer fails open and sends flows to every target, healthy or not"})
	}
	steps, _ := e.backend(lb, *t)
	p.Steps = append(p.Steps, steps...)
	return p
}

// noTarget explains a flow the data plane admitted but has no target for: the backend groups
// keep every target out, or there is no target to take it.
func (e *explainer) noTarget(p Path, lb cloud.LoadBalancer, d dataplane.Decision) Path {
	var blocked []dataplane.DecidedTarget
	for _, t := range d.InScope {
		if !t.Draining && !t.TrafficAllowed {
			blocked = append(blocked, t)
		}
	}
	scope := "zone " + d.Zone
	if d.CrossZone {
		scope = "any enabled zone"
	}
	if len(blocked) == 0 {
		p.Verdict = NoHealthyTarget
		why := fmt.Sprintf("no target is registered in %s", scope)
		if len(d.InScope) > 0 {
			why = fmt.Sprintf("every target in %s is draining (deregistered)", scope)
		}
		p.Steps = append(p.Steps, Step{Stage: "target", Result: Drop, Detail: why + ": the load balancer resets the flow"})
		p.Fix = fmt.Sprintf("aws elbv2 register-targets --target-group-arn %s --targets Id=<target in %s>", d.TargetGroupID, scope)
		return p
	}
	p.Verdict = DroppedByTargetGroup
	p.Steps = append(p.Steps, Step{Stage: "target", Result: Drop,
		Detail: fmt.Sprintf("the security groups keep the load balancer from all %d targets in %s: the load balancer resets the flow", len(blocked), scope)})
	var fixes []string
	for _, t := range blocked {
		steps, fix := e.backend(lb, t)
		p.Steps = append(p.Steps, steps...)
		if fix != "" {
			fixes = append(fixes, fix)
		}
	}
	p.Fix = strings.Join(slices.Compact(fixes), "\n")
	return p
}

// backend explains the backend decision for target t: the load balancer's outbound rules must
// allow the target's address and port, and the target interface's inbound rules must admit the
// load balancer (its group, or its address of the target's family). It returns the steps, and
// for a target kept out, the change that would let the load balancer in.
func (e *explainer) backend(lb cloud.LoadBalancer, t dataplane.DecidedTarget) ([]Step, string) {
	var steps []Step
	target := t.Addr.Addr().Unmap()
	if len(lb.SecurityGroups) > 0 {
		if g, r, ok := e.f.Resolver.Admitting(lb.SecurityGroups, true, e.protocol, t.Port, target); ok {
			rule := ruleOf(g, r, "outbound")
			steps = append(steps, Step{Stage: "backend-groups", Result: Pass, Detail: fmt.Sprintf("the load balancer may send to %s by %s", t.Addr, rule), Rule: rule})
		} else {
			steps = append(steps, Step{Stage: "backend-groups", Result: Drop,
				Detail: fmt.Sprintf("no outbound rule of %s allows %s %d to %s", e.groupNames(lb.SecurityGroups), e.network, t.Port, target)})
			return steps, e.authorizeEgress(lb.SecurityGroups[0], t.Port, prefixOf(target))
		}
	}
	eni, ok := e.interfaceOf(target)
	if !ok {
		steps = append(steps, Step{Stage: "backend-groups", Result: Pass, Detail: fmt.Sprintf("%s is no instance interface moat knows: no group guards it", target)})
		return steps, ""
	}
	var lbAddrs []netip.Addr
	for _, z := range lb.Zones {
		for _, s := range []string{z.Address, z.IPv6Address} {
			if a, err := netip.ParseAddr(s); err == nil && a.Is4() == target.Is4() {
				lbAddrs = append(lbAddrs, a)
			}
		}
	}
	for _, a := range lbAddrs {
		if g, r, ok := e.f.Resolver.Admitting(eni.Groups, false, e.protocol, t.Port, a); ok {
			rule := ruleOf(g, r, "inbound")
			steps = append(steps, Step{Stage: "backend-groups", Result: Pass,
				Detail: fmt.Sprintf("target %s (%s) admits the load balancer by %s", t.ID, eni.ID, rule), Rule: rule})
			return steps, ""
		}
	}
	steps = append(steps, Step{Stage: "backend-groups", Result: Drop,
		Detail: fmt.Sprintf("no inbound rule of target %s's groups %s admits the load balancer on %s %d", t.ID, e.groupNames(eni.Groups), e.network, t.Port)})
	if len(eni.Groups) == 0 {
		return steps, ""
	}
	var source string
	switch {
	case len(lb.SecurityGroups) > 0:
		source = "--source-group " + lb.SecurityGroups[0]
	case len(lbAddrs) > 0:
		source = "--cidr " + prefixOf(lbAddrs[0])
	default:
		return steps, ""
	}
	return steps, e.authorizeIngress(eni.Groups[0], t.Port, source)
}

// direct explains a flow straight to an instance's address: the instance firewall's judgement of
// the interface's groups.
func (e *explainer) direct(eni cloud.NetworkInterface, addr netip.Addr) Path {
	p := Path{To: netip.AddrPortFrom(addr, e.port).String()}
	program := sgresolve.Firewall(e.f.State, e.f.Resolver, firewall.Enforce, func(c cloud.NetworkInterface, a netip.Addr) bool { return c.ID == eni.ID && a == addr })
	j := program.Judge(e.from, addr, e.protocol, e.port)
	enforced := e.f.Local != nil && e.f.Local(addr) && e.f.Firewall != firewall.Off && e.f.Firewall != ""
	where := "the instance firewall of the host that carries it (moat node, or moat lb where the instance's address is on its host)"
	if enforced {
		where = fmt.Sprintf("this moat lb's instance firewall (%s mode)", e.f.Firewall)
	}
	if j.Admitted {
		p.Verdict = Allowed
		step := Step{Stage: "instance-groups", Result: Pass, Detail: fmt.Sprintf("%s (%s) admits %s", eni.InstanceID, eni.ID, e.from)}
		if g, r, ok := e.f.Resolver.Admitting(eni.Groups, false, e.protocol, e.port, e.from); ok {
			step.Rule = ruleOf(g, r, "inbound")
			step.Detail += " by " + step.Rule.String()
		}
		p.Steps = append(p.Steps, step, Step{Stage: "instance-groups", Result: Note, Detail: "judged by " + where})
		return p
	}
	drop := Step{Stage: "instance-groups", Result: Drop,
		Detail: fmt.Sprintf("no inbound rule of %s's groups %s admits %s on %s %d", eni.InstanceID, e.groupNames(eni.Groups), e.from, e.network, e.port)}
	if enforced && e.f.Firewall == firewall.Audit {
		p.Verdict = Allowed
		drop.Result = Note
		drop.Detail += ": the firewall is in audit mode, so the flow passes and is logged as would_deny"
	} else {
		p.Verdict = DroppedByTargetGroup
		drop.Detail += ", judged by " + where
	}
	p.Steps = append(p.Steps, drop)
	if len(eni.Groups) > 0 {
		p.Fix = e.authorizeIngress(eni.Groups[0], e.port, "--cidr "+prefixOf(e.from))
	}
	return p
}

func (e *explainer) interfaceOf(a netip.Addr) (cloud.NetworkInterface, bool) {
	for _, eni := range e.f.State.Interfaces {
		if slices.Contains(eni.PrivateIPs, a.String()) {
			return eni, true
		}
	}
	return cloud.NetworkInterface{}, false
}

// groupNames lists groups as "sg-1 (web), sg-2 (db)".
func (e *explainer) groupNames(ids []string) string {
	if len(ids) == 0 {
		return "(none)"
	}
	names := make([]string, len(ids))
	for i, id := range ids {
		g, _ := e.f.Resolver.Group(id)
		names[i] = fmt.Sprintf("%s (%s)", id, g.Name)
	}
	return strings.Join(names, ", ")
}

func (e *explainer) authorizeIngress(group string, port uint16, source string) string {
	return fmt.Sprintf("aws ec2 authorize-security-group-ingress --group-id %s --protocol %s --port %d %s", group, e.network, port, source)
}

func (e *explainer) authorizeEgress(group string, port uint16, cidr string) string {
	return fmt.Sprintf("aws ec2 authorize-security-group-egress --group-id %s --ip-permissions IpProtocol=%s,FromPort=%d,ToPort=%d,IpRanges=[{CidrIp=%s}]", group, e.network, port, port, cidr)
}

func ruleOf(g cloud.SecurityGroup, r cloud.Rule, direction string) *Rule {
	return &Rule{GroupID: g.ID, GroupName: g.Name, Direction: direction, Protocol: r.Protocol, FromPort: r.FromPort, ToPort: r.ToPort, Peer: r.Peer(), Description: r.Description}
}

func healthText(h dataplane.Health) string {
	if h.Reason == "" {
		return h.State
	}
	return h.State + " (" + h.Reason + ")"
}

func prefixOf(a netip.Addr) string { return netip.PrefixFrom(a, a.BitLen()).String() }

// IsInvalid reports whether err is a query moat cannot answer (the caller's fault).
func IsInvalid(err error) bool {
	_, ok := errors.AsType[*InvalidQueryError](err)
	return ok
}
