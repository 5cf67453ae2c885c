package model

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/moatlb/moat/internal/controller/annotations"
	"github.com/moatlb/moat/internal/nlbattr"
)

// portGroup is the Service ports served by one listener: one port, or a TCP and a UDP port
// with the same number merged into TCP_UDP.
type portGroup struct {
	ports []corev1.ServicePort
	index int // index of ports[0] in spec.ports
}

// buildListeners builds one listener, target group and TargetGroupBinding per port group,
// as the AWS controller's buildListeners does.
func (t *task) buildListeners() error {
	groups, err := t.groupPorts()
	if err != nil {
		return err
	}
	tls, err := t.buildTLSConfig()
	if err != nil {
		return err
	}
	quic, _ := t.p.StringList(annotations.QUICEnabledPorts)
	for _, g := range groups {
		port := g.ports[0]
		proto := servicePortProtocol(port)
		if len(g.ports) > 1 {
			proto = ProtocolTCPUDP
		}
		if slices.Contains(quic, port.Name) || slices.Contains(quic, strconv.Itoa(int(port.Port))) {
			switch proto {
			case ProtocolUDP:
				proto = ProtocolQUIC
			case ProtocolTCPUDP:
				proto = ProtocolTCPQUIC
			default:
				return invalid(t.p, annotations.QUICEnabledPorts, "port %d is %s: only UDP and TCP_UDP listeners can be upgraded to QUIC", port.Port, proto)
			}
		}
		listenerProto := proto
		if proto == ProtocolTCP && tls.covers(port) {
			listenerProto = ProtocolTLS
			if tls.backendProtocol == "ssl" {
				proto = ProtocolTLS
			}
		}
		tg, err := t.buildTargetGroup(port, g.index, proto)
		if err != nil {
			return err
		}
		attrs, err := t.buildListenerAttributes(port.Port, listenerProto)
		if err != nil {
			return err
		}
		id := strconv.Itoa(int(port.Port))
		l := Listener{
			ResourceID:      id,
			LoadBalancerARN: LoadBalancerARNRef,
			Port:            port.Port,
			Protocol:        listenerProto,
			DefaultActions: []Action{{
				Type:          "forward",
				ForwardConfig: &ForwardConfig{TargetGroups: []TargetGroupTuple{{TargetGroupARN: TargetGroupARNRef(tg.ResourceID)}}},
			}},
			Attributes: attrs,
			Tags:       t.resourceTags(id),
		}
		if listenerProto == ProtocolTLS {
			if l.ALPNPolicy, err = t.buildALPNPolicy(); err != nil {
				return err
			}
			l.Certificates, l.SSLPolicy = tls.certificates, tls.sslPolicy
		}
		t.stack.Listeners = append(t.stack.Listeners, l)
	}
	slices.SortFunc(t.stack.Listeners, func(a, b Listener) int { return int(a.Port) - int(b.Port) })
	return nil
}

// groupPorts groups Service ports by number. With gate EnableTCPUDPListener or the
// enable-tcp-udp-listener annotation (which wins), a TCP and a UDP port with the same number
// become one TCP_UDP group. Without it the AWS controller would build two listeners on one port,
// which AWS refuses; moat refuses the Service instead, pointing at the annotation.
func (t *task) groupPorts() ([]portGroup, error) {
	merge := t.cfg.FeatureGates.Enabled(GateEnableTCPUDPListener)
	v, ok, err := t.p.Bool(annotations.EnableTCPUDPListener)
	if err != nil {
		return nil, fromAnnotation(err)
	}
	if ok {
		merge = v
	}
	var groups []portGroup
	byNumber := map[int32]int{}
	for i, port := range t.svc.Spec.Ports {
		field := fmt.Sprintf("spec.ports[%d]", i)
		switch servicePortProtocol(port) {
		case ProtocolTCP, ProtocolUDP:
		default:
			return nil, fieldError(field, "protocol %s is not supported by network load balancers (TCP or UDP)", port.Protocol)
		}
		j, seen := byNumber[port.Port]
		if !seen {
			byNumber[port.Port] = len(groups)
			groups = append(groups, portGroup{ports: []corev1.ServicePort{port}, index: i})
			continue
		}
		first := groups[j].ports[0]
		switch {
		case servicePortProtocol(first) == servicePortProtocol(port) || len(groups[j].ports) > 1:
			return nil, fieldError(field, "port %d/%s is declared twice", port.Port, servicePortProtocol(port))
		case !merge:
			return nil, &Error{Kind: KindInvalid, Annotation: annotations.Key(annotations.EnableTCPUDPListener), Field: field,
				Reason: fmt.Sprintf("port %d is used by both TCP and UDP: set the annotation to \"true\" (or feature gate %s) to serve both with one TCP_UDP listener", port.Port, GateEnableTCPUDPListener)}
		}
		groups[j].ports = append(groups[j].ports, port)
	}
	return groups, nil
}

// tlsConfig is what the TLS annotations say for the Service's listeners.
type tlsConfig struct {
	certificates    []string // ssl-cert: the first is the default certificate
	ports           []string // ssl-ports: names or numbers; none means every TCP port
	sslPolicy       string
	backendProtocol string
}

// covers reports whether a TCP port's listener is TLS: certificates are set and ssl-ports is
// empty or names the port, as in the AWS controller.
func (c tlsConfig) covers(port corev1.ServicePort) bool {
	return len(c.certificates) > 0 && (len(c.ports) == 0 || slices.Contains(c.ports, port.Name) ||
		slices.Contains(c.ports, strconv.Itoa(int(port.Port))))
}

// alpnPolicies are the ALPN policies AWS accepts, in the order of the AWS controller's message.
var alpnPolicies = []string{"None", "HTTP1Only", "HTTP2Only", "HTTP2Optional", "HTTP2Preferred"}

// buildTLSConfig reads the TLS annotations, with the AWS controller's check and message: every
// ssl-ports entry must name a Service port, even without certificates. The SSL policy's name is
// left to AWS, which refuses one it does not know.
func (t *task) buildTLSConfig() (tlsConfig, error) {
	var c tlsConfig
	c.certificates, _ = t.p.StringList(annotations.SSLCertificate)
	c.ports, _ = t.p.StringList(annotations.SSLPorts)
	var unused []string
	for _, e := range c.ports {
		if !slices.ContainsFunc(t.svc.Spec.Ports, func(p corev1.ServicePort) bool {
			return p.Name == e || strconv.Itoa(int(p.Port)) == e
		}) {
			unused = append(unused, e)
		}
	}
	if len(unused) > 0 {
		return c, invalid(t.p, annotations.SSLPorts, "Unused port in ssl-ports annotation %v", unused)
	}
	c.sslPolicy = t.cfg.DefaultSSLPolicy
	if v, ok := t.p.Lookup(annotations.SSLNegotiationPolicy); ok {
		c.sslPolicy = v
	}
	c.backendProtocol, _ = t.p.Lookup(annotations.BackendProtocol)
	return c, nil
}

// buildALPNPolicy reads alpn-policy for a TLS listener (other listeners ignore it, even when it
// is invalid, as in the AWS controller).
func (t *task) buildALPNPolicy() ([]string, error) {
	v, ok := t.p.Lookup(annotations.ALPNPolicy)
	if !ok {
		return nil, nil
	}
	if !slices.Contains(alpnPolicies, v) {
		return nil, invalid(t.p, annotations.ALPNPolicy, "invalid ALPN policy %s, policy must be one of [%s]", v, strings.Join(alpnPolicies, ", "))
	}
	return []string{v}, nil
}

// buildListenerAttributes reads listener-attributes.<PROTOCOL>-<port>.
func (t *task) buildListenerAttributes(port int32, proto Protocol) ([]Attribute, error) {
	suffix := fmt.Sprintf("%s.%s-%d", annotations.ListenerAttributesPrefix, proto, port)
	attrs, _, err := t.p.StringMap(suffix)
	if err != nil {
		return nil, fromAnnotation(err)
	}
	if err := checkAttributes(t.p, suffix, attrs, nlbattr.Listener, "network load balancer listener"); err != nil {
		return nil, err
	}
	if _, ok := attrs["tcp.idle_timeout.seconds"]; ok && (proto == ProtocolUDP || proto == ProtocolQUIC) {
		return nil, invalid(t.p, suffix, "tcp.idle_timeout.seconds does not apply to %s listeners", proto)
	}
	return sortedAttributes(attrs), nil
}

// servicePortProtocol is the port's protocol; the API server defaults an empty one to TCP.
func servicePortProtocol(p corev1.ServicePort) Protocol {
	if p.Protocol == "" {
		return ProtocolTCP
	}
	return Protocol(p.Protocol)
}
