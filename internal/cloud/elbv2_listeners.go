package cloud

import (
	"net/netip"
	"slices"
	"strings"

	"github.com/moatlb/moat/internal/nlbattr"
	"github.com/moatlb/moat/internal/store"
)

// Listener is a port of a load balancer and the target group it forwards to. Network load
// balancer listeners have one rule, their default rule, whose only action is that forward.
type Listener struct {
	ARN             string
	ID              string // the last 16 hex digits of the ARN
	LoadBalancerARN string
	Port            int
	Protocol        string       // TCP, UDP, TCP_UDP or TLS
	TargetGroupARN  string       // the default action: forward to this group
	TLS             *ListenerTLS `json:",omitempty"` // TLS listeners only
	ActionOrder     int          `json:",omitempty"` // the default action's Order as given; 0 answers 1, as AWS
	RuleARN         string       // the default rule's ARN, fixed for the listener's life
	Attributes      map[string]string
	Tags            Tags
	RuleTags        Tags
}

// Action is a listener action as requests carry it. moat's listeners take one: forward, to
// TargetGroupARN or to the single group of ForwardConfig.
type Action struct {
	Type           string
	TargetGroupARN string
	Order          *int
	ForwardConfig  *ForwardConfig
}

// ForwardConfig is a forward action's list of weighted target groups.
type ForwardConfig struct {
	TargetGroups      []WeightedTargetGroup
	StickinessEnabled *bool
}

// WeightedTargetGroup is one target group of a ForwardConfig.
type WeightedTargetGroup struct {
	TargetGroupARN string
	Weight         *int
}

// CreateListenerInput is CreateListener's request.
type CreateListenerInput struct {
	LoadBalancerARN string
	Protocol        string
	Port            *int
	DefaultActions  []Action
	Tags            []Tag
	// TLS members, for TLS listeners only.
	SslPolicy    string
	Certificates []string
	AlpnPolicy   []string
}

// ModifyListenerInput is ModifyListener's request: absent (empty, nil) members stay as they are.
type ModifyListenerInput struct {
	ListenerARN    string
	Protocol       string
	Port           *int
	DefaultActions []Action
	SslPolicy      string
	Certificates   []string
	AlpnPolicy     []string
}

// ListenerRule is a listener rule. A network load balancer listener has only its default rule.
type ListenerRule struct {
	ARN            string
	ListenerARN    string
	Priority       string
	IsDefault      bool
	TargetGroupARN string
	ActionOrder    int
}

func listenerNotFound(arn string) *Error {
	return errorf("ListenerNotFound", "Listener '%s' not found", arn)
}

func loadListener(tx store.Tx, arn string) (Listener, error) {
	l, err := store.Load[Listener](tx, bucketListeners, arn)
	if err == store.ErrNotFound {
		return l, listenerNotFound(arn)
	}
	return l, err
}

// listenerOfRule returns the listener whose default rule has this ARN.
func listenerOfRule(tx store.Tx, ruleARN string) (Listener, error) {
	if err := checkARN("ruleArns", kindRule, ruleARN); err != nil {
		return Listener{}, err
	}
	notFound := errorf("RuleNotFound", "Rule '%s' not found", ruleARN)
	prefix, rest, _ := strings.Cut(ruleARN, ":"+kindRule+"/")
	rest = rest[:strings.LastIndex(rest, "/")]
	l, err := store.Load[Listener](tx, bucketListeners, prefix+":"+kindListener+"/"+rest)
	if err == store.ErrNotFound || (err == nil && l.RuleARN != ruleARN) {
		return Listener{}, notFound
	}
	return l, err
}

// checkListenerProtocol accepts the listener protocols moat serves.
func checkListenerProtocol(p string) error {
	if err := checkEnum("protocol", p, elbProtocols...); err != nil {
		return err
	}
	switch p {
	case "TCP", "UDP", "TCP_UDP", "TLS":
		return nil
	}
	return errorf("UnsupportedProtocol", "Protocol '%s' is not supported for load balancers of type 'network': use TCP, TLS, UDP or TCP_UDP", p)
}

// forwardTarget returns the target group of the single forward action moat's listeners take, and
// the action's Order as given (0 when it was not).
func forwardTarget(actions []Action) (string, int, error) {
	if len(actions) == 0 {
		return "", 0, missingError("defaultActions")
	}
	if len(actions) > 1 {
		return "", 0, errorf("InvalidLoadBalancerAction", "A Network Load Balancer listener takes exactly one default action, a forward to one target group")
	}
	a := actions[0]
	if err := checkRange("defaultActions.member.1.order", a.Order, 1, 50000); err != nil {
		return "", 0, err
	}
	arn, err := forwardGroup(a)
	if a.Order == nil || err != nil {
		return arn, 0, err
	}
	return arn, *a.Order, nil
}

// forwardGroup returns the one target group a forward action names.
func forwardGroup(a Action) (string, error) {
	if a.Type == "" {
		return "", missingError("defaultActions.member.1.type")
	}
	if err := checkEnum("defaultActions.member.1.type", a.Type, "forward", "authenticate-oidc", "authenticate-cognito", "redirect", "fixed-response", "jwt-validation"); err != nil {
		return "", err
	}
	if a.Type != "forward" {
		return "", errorf("InvalidLoadBalancerAction", "Action type '%s' is not supported by Network Load Balancers: use forward", a.Type)
	}
	arn := a.TargetGroupARN
	if fc := a.ForwardConfig; fc != nil && len(fc.TargetGroups) > 0 {
		if len(fc.TargetGroups) != 1 {
			return "", errorf("InvalidLoadBalancerAction", "A Network Load Balancer forward action takes exactly one target group, not %d", len(fc.TargetGroups))
		}
		w := fc.TargetGroups[0]
		if err := checkRange("defaultActions.member.1.forwardConfig.targetGroups.member.1.weight", w.Weight, 0, 999); err != nil {
			return "", err
		}
		if arn != "" && w.TargetGroupARN != arn {
			return "", errorf("InvalidLoadBalancerAction", "The target group of TargetGroupArn and of ForwardConfig must be the same")
		}
		arn = w.TargetGroupARN
	}
	if fc := a.ForwardConfig; fc != nil && fc.StickinessEnabled != nil && *fc.StickinessEnabled {
		return "", errorf("InvalidLoadBalancerAction", "Target group stickiness is not supported by Network Load Balancers")
	}
	if arn == "" {
		return "", errorf("InvalidLoadBalancerAction", "A forward action must specify a target group")
	}
	if err := checkARN("defaultActions.member.1.targetGroupArn", kindTargetGroup, arn); err != nil {
		return "", err
	}
	return arn, nil
}

// listenerTargetProtocols is which target group protocols each listener protocol forwards to.
var listenerTargetProtocols = map[string][]string{
	"TCP":     {"TCP", "TCP_UDP"},
	"TLS":     {"TCP", "TLS"},
	"UDP":     {"UDP", "TCP_UDP"},
	"TCP_UDP": {"TCP_UDP"},
}

// checkForward validates forwarding from a listener of lb with protocol to the target group.
func (c *Cloud) checkForward(tx store.Tx, lb LoadBalancer, protocol, tgARN string) error {
	tg, err := peekTG(tx, tgARN)
	if err != nil {
		return err
	}
	if tg.VPCID != lb.VPCID {
		return errorf("InvalidConfigurationRequest", "Target group '%s' is in VPC '%s', not in the load balancer's VPC '%s'", tgARN, tg.VPCID, lb.VPCID)
	}
	if !slices.Contains(listenerTargetProtocols[protocol], tg.Protocol) {
		return errorf("IncompatibleProtocols", "Listener protocol '%s' is not compatible with target group protocol '%s': a %s listener forwards to %s target groups", protocol, tg.Protocol, protocol, strings.Join(listenerTargetProtocols[protocol], " or "))
	}
	if lb.IPAddressType == "dualstack" && protocol != "TCP" && protocol != "TLS" {
		return errorf("InvalidConfigurationRequest", "A dualstack load balancer cannot have %s listeners", protocol)
	}
	users, err := c.tgUsers(tx)
	if err != nil {
		return err
	}
	for _, other := range users(tgARN) {
		if other != lb.ARN {
			return errorf("TargetGroupAssociationLimit", "The following target groups cannot be associated with more than one load balancer: '%s'", tgARN)
		}
	}
	return nil
}

// listenerAttributeDefaults are a listener's attributes for its protocol: TCP listeners have an
// idle timeout.
func listenerAttributeDefaults(protocol string, old map[string]string) map[string]string {
	out := map[string]string{}
	if protocol != "UDP" {
		out["tcp.idle_timeout.seconds"] = "350"
		if v, ok := old["tcp.idle_timeout.seconds"]; ok {
			out["tcp.idle_timeout.seconds"] = v
		}
	}
	return out
}

// CreateListener adds a listener to a load balancer, forwarding to one target group. One listener
// per port; the same port, protocol and target group again returns the existing listener.
func (c *Cloud) CreateListener(in CreateListenerInput) (Listener, error) {
	if err := checkARN("loadBalancerArn", kindLoadBalancer, in.LoadBalancerARN); err != nil {
		return Listener{}, err
	}
	if in.Protocol == "" {
		return Listener{}, errorf("ValidationError", "A listener protocol must be specified for Network Load Balancers")
	}
	if err := checkListenerProtocol(in.Protocol); err != nil {
		return Listener{}, err
	}
	if in.Port == nil {
		return Listener{}, errorf("ValidationError", "A listener port must be specified for Network Load Balancers")
	}
	if err := checkRange("port", in.Port, 1, 65535); err != nil {
		return Listener{}, err
	}
	tls, err := newListenerTLS(in.Protocol, in.SslPolicy, in.Certificates, in.AlpnPolicy)
	if err != nil {
		return Listener{}, err
	}
	tgARN, order, err := forwardTarget(in.DefaultActions)
	if err != nil {
		return Listener{}, err
	}
	if err := validateELBTags(in.Tags); err != nil {
		return Listener{}, err
	}
	tags, err := c.addELBTags(nil, in.Tags)
	if err != nil {
		return Listener{}, err
	}
	var l Listener
	err = c.store.Update(func(tx store.Tx) error {
		lb, err := peekLB(tx, in.LoadBalancerARN)
		if err != nil {
			return err
		}
		listeners, err := c.listenerIndex(tx)
		if err != nil {
			return err
		}
		ofLB := listeners.of(lb.ARN)
		for _, old := range ofLB {
			if old.Port != *in.Port {
				continue
			}
			if old.Protocol == in.Protocol && old.TargetGroupARN == tgARN && old.TLS.sameSettings(tls) {
				l = old
				return nil
			}
			return errorf("DuplicateListener", "A listener already exists on port %d of load balancer '%s'", *in.Port, lb.ARN)
		}
		if len(ofLB) >= c.cfg.Quotas.ListenersPerLoadBalancer {
			return errorf("TooManyListeners", "You've reached the limit of %d listeners for load balancer '%s'", c.cfg.Quotas.ListenersPerLoadBalancer, lb.ARN)
		}
		if err := c.checkForward(tx, lb, in.Protocol, tgARN); err != nil {
			return err
		}
		if err := c.checkCertificates(tx, tls.certificates()); err != nil {
			return err
		}
		id := randomHex(16)
		path := lb.Name + "/" + lb.ID + "/" + id
		l = Listener{
			ARN:             c.elbARN(kindListener + "/net/" + path),
			ID:              id,
			LoadBalancerARN: lb.ARN,
			Port:            *in.Port,
			Protocol:        in.Protocol,
			TargetGroupARN:  tgARN,
			TLS:             tls,
			ActionOrder:     order,
			Attributes:      listenerAttributeDefaults(in.Protocol, nil),
			Tags:            tags,
			RuleTags:        Tags{},
		}
		l.RuleARN = c.elbARN(kindRule + "/net/" + path + "/" + stableHex("rule/"+l.ARN))
		if err := c.checkPort(lb, "", l.Protocol, l.Port); err != nil {
			return err
		}
		return store.Save(tx, bucketListeners, l.ARN, l)
	})
	if err != nil {
		return Listener{}, err
	}
	return l, nil
}

// DescribeListeners lists the listeners of a load balancer, or those named by ARN (any missing
// is ListenerNotFound).
func (c *Cloud) DescribeListeners(lbARN string, arns []string, page ELBPage) ([]Listener, string, error) {
	switch {
	case lbARN == "" && len(arns) == 0:
		return nil, "", errorf("ValidationError", "You must specify either listener ARNs or a load balancer ARN")
	case lbARN != "" && len(arns) > 0:
		return nil, "", errorf("ValidationError", "Listener ARNs and a load balancer ARN cannot be specified at the same time")
	case lbARN != "":
		if err := checkARN("loadBalancerArn", kindLoadBalancer, lbARN); err != nil {
			return nil, "", err
		}
	}
	for _, arn := range arns {
		if err := checkARN("listenerArns", kindListener, arn); err != nil {
			return nil, "", err
		}
	}
	var out []Listener
	err := c.store.View(func(tx store.Tx) error {
		if lbARN != "" {
			if _, err := peekLB(tx, lbARN); err != nil {
				return err
			}
		}
		listeners, err := c.listenerIndex(tx)
		if err != nil {
			return err
		}
		if lbARN != "" {
			out = listeners.of(lbARN)
			return nil
		}
		for _, want := range dedupe(arns) {
			l, ok := listeners.record(want)
			if !ok {
				return errorf("ListenerNotFound", "One or more listeners not found")
			}
			out = append(out, l)
		}
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	return elbPage(out, func(l Listener) string { return l.ARN }, page)
}

// ModifyListener changes the port, protocol or default action of a listener; what the request
// leaves out stays.
func (c *Cloud) ModifyListener(in ModifyListenerInput) (Listener, error) {
	if err := checkARN("listenerArn", kindListener, in.ListenerARN); err != nil {
		return Listener{}, err
	}
	if in.Protocol != "" {
		if err := checkListenerProtocol(in.Protocol); err != nil {
			return Listener{}, err
		}
	}
	if err := checkRange("port", in.Port, 1, 65535); err != nil {
		return Listener{}, err
	}
	if err := checkTLSSettings(in.SslPolicy, in.Certificates, in.AlpnPolicy); err != nil {
		return Listener{}, err
	}
	tgARN, order := "", 0
	if in.DefaultActions != nil {
		var err error
		if tgARN, order, err = forwardTarget(in.DefaultActions); err != nil {
			return Listener{}, err
		}
	}
	var l Listener
	err := c.store.Update(func(tx store.Tx) (err error) {
		if l, err = loadListener(tx, in.ListenerARN); err != nil {
			return err
		}
		lb, err := peekLB(tx, l.LoadBalancerARN)
		if err != nil {
			return err
		}
		oldPort, oldProtocol := l.Port, l.Protocol
		if in.Port != nil && *in.Port != l.Port {
			listeners, err := c.listenerIndex(tx)
			if err != nil {
				return err
			}
			for _, other := range listeners.of(lb.ARN) {
				if other.ARN != l.ARN && other.Port == *in.Port {
					return errorf("DuplicateListener", "A listener already exists on port %d of load balancer '%s'", *in.Port, lb.ARN)
				}
			}
			l.Port = *in.Port
		}
		if in.Protocol != "" {
			l.Protocol = in.Protocol
		}
		if l.TLS, err = l.TLS.modified(l.Protocol, in.SslPolicy, in.Certificates, in.AlpnPolicy); err != nil {
			return err
		}
		if err := c.checkCertificates(tx, l.TLS.certificates()); err != nil {
			return err
		}
		if tgARN != "" {
			l.TargetGroupARN, l.ActionOrder = tgARN, order
		}
		if err := c.checkForward(tx, lb, l.Protocol, l.TargetGroupARN); err != nil {
			return err
		}
		servedProtocol := oldProtocol
		if l.Port != oldPort {
			servedProtocol = ""
		}
		if err := c.checkPort(lb, servedProtocol, l.Protocol, l.Port); err != nil {
			return err
		}
		l.Attributes = listenerAttributeDefaults(l.Protocol, l.Attributes)
		return store.Save(tx, bucketListeners, l.ARN, l)
	})
	if err != nil {
		return Listener{}, err
	}
	return l, nil
}

// DeleteListener deletes a listener; its target group stays.
func (c *Cloud) DeleteListener(arn string) error {
	if err := checkARN("listenerArn", kindListener, arn); err != nil {
		return err
	}
	return c.store.Update(func(tx store.Tx) error {
		if _, err := loadListener(tx, arn); err != nil {
			return err
		}
		return tx.Delete(bucketListeners, arn)
	})
}

// albListenerAttributes are listener attributes of Application Load Balancers only.
var albListenerAttributes = []string{
	"routing.http.request.x_amzn_mtls_clientcert_serial_number.header_name",
	"routing.http.request.x_amzn_mtls_clientcert_issuer.header_name",
	"routing.http.request.x_amzn_mtls_clientcert_subject.header_name",
	"routing.http.request.x_amzn_mtls_clientcert_validity.header_name",
	"routing.http.request.x_amzn_mtls_clientcert_leaf.header_name",
	"routing.http.request.x_amzn_mtls_clientcert.header_name",
	"routing.http.request.x_amzn_tls_version.header_name",
	"routing.http.request.x_amzn_tls_cipher_suite.header_name",
	"routing.http.response.server.enabled",
	"routing.http.response.strict_transport_security.header_value",
	"routing.http.response.access_control_allow_origin.header_value",
	"routing.http.response.access_control_allow_methods.header_value",
	"routing.http.response.access_control_allow_headers.header_value",
	"routing.http.response.access_control_allow_credentials.header_value",
	"routing.http.response.access_control_expose_headers.header_value",
	"routing.http.response.access_control_max_age.header_value",
	"routing.http.response.content_security_policy.header_value",
	"routing.http.response.x_content_type_options.header_value",
	"routing.http.response.x_frame_options.header_value",
}

// ListenerAttributes returns a listener's attributes, sorted by key.
func (c *Cloud) ListenerAttributes(arn string) ([]Attribute, error) {
	if err := checkARN("listenerArn", kindListener, arn); err != nil {
		return nil, err
	}
	var l Listener
	err := c.store.View(func(tx store.Tx) (err error) {
		l, err = loadListener(tx, arn)
		return err
	})
	if err != nil {
		return nil, err
	}
	return attrList(l.Attributes), nil
}

// ModifyListenerAttributes changes some attributes and returns all of them; if any change is not
// valid, nothing changes.
func (c *Cloud) ModifyListenerAttributes(arn string, attrs []Attribute) ([]Attribute, error) {
	if err := checkARN("listenerArn", kindListener, arn); err != nil {
		return nil, err
	}
	var l Listener
	err := c.store.Update(func(tx store.Tx) (err error) {
		if l, err = loadListener(tx, arn); err != nil {
			return err
		}
		next, err := modifyAttributes(l.Attributes, attrs, attributeCheck(nlbattr.Listener, albListenerAttributes, "Listener"))
		if err != nil {
			return err
		}
		if _, ok := next["tcp.idle_timeout.seconds"]; ok && l.Protocol == "UDP" {
			return errorf("InvalidConfigurationRequest", "Listener attribute 'tcp.idle_timeout.seconds' is not supported on UDP listeners")
		}
		l.Attributes = next
		return store.Save(tx, bucketListeners, l.ARN, l)
	})
	if err != nil {
		return nil, err
	}
	return attrList(l.Attributes), nil
}

// DescribeRules lists the rules of a listener, or the rules named by ARN. A network load
// balancer listener has one rule: its default rule, forwarding to its target group.
func (c *Cloud) DescribeRules(listenerARN string, ruleARNs []string, page ELBPage) ([]ListenerRule, string, error) {
	switch {
	case listenerARN == "" && len(ruleARNs) == 0:
		return nil, "", errorf("ValidationError", "You must specify either a listener ARN or rule ARNs")
	case listenerARN != "" && len(ruleARNs) > 0:
		return nil, "", errorf("ValidationError", "A listener ARN and rule ARNs cannot be specified at the same time")
	case listenerARN != "":
		if err := checkARN("listenerArn", kindListener, listenerARN); err != nil {
			return nil, "", err
		}
	}
	var out []ListenerRule
	err := c.store.View(func(tx store.Tx) error {
		var listeners []Listener
		if listenerARN != "" {
			l, err := loadListener(tx, listenerARN)
			if err != nil {
				return err
			}
			listeners = append(listeners, l)
		}
		for _, arn := range dedupe(ruleARNs) {
			l, err := listenerOfRule(tx, arn)
			if err != nil {
				return err
			}
			listeners = append(listeners, l)
		}
		for _, l := range listeners {
			out = append(out, ListenerRule{ARN: l.RuleARN, ListenerARN: l.ARN, Priority: "default", IsDefault: true, TargetGroupARN: l.TargetGroupARN, ActionOrder: l.ActionOrder})
		}
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	return elbPage(out, func(r ListenerRule) string { return r.ARN }, page)
}

// PortChecker says whether the data plane can serve protocol (TCP or UDP) on port at every one of
// addrs, by trying to bind them. moat lb sets it, so that a listener on a port that is taken or
// privileged fails at CreateListener rather than later.
type PortChecker func(addrs []netip.Addr, protocol string, port int) error

type portChecker struct{ PortChecker }

// SetPortChecker installs the data plane's check; without one every port is accepted.
func (c *Cloud) SetPortChecker(f PortChecker) { c.ports.Store(&portChecker{f}) }

// checkPort asks the port checker about the sockets a listener needs that it does not have yet:
// all of them for a new port, the added protocol when TCP becomes TCP_UDP on the same port.
func (c *Cloud) checkPort(lb LoadBalancer, servedProtocol, protocol string, port int) error {
	check := c.ports.Load()
	if check == nil || check.PortChecker == nil {
		return nil
	}
	var addrs []netip.Addr
	for _, z := range lb.Zones {
		if a, err := netip.ParseAddr(z.Address); err == nil {
			addrs = append(addrs, a)
		}
	}
	for _, p := range []string{"TCP", "UDP"} {
		needed := slices.Contains(transports(protocol), p)
		served := slices.Contains(transports(servedProtocol), p)
		if !needed || served {
			continue
		}
		if err := check.PortChecker(addrs, p, port); err != nil {
			return errorf("InvalidConfigurationRequest", "The load balancer cannot listen on %s port %d: %v", p, port, err)
		}
	}
	return nil
}
