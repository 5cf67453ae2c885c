package model

import (
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/moatlb/moat/internal/controller/annotations"
)

// buildTargetGroupBinding builds the TargetGroupBinding of a target group: which Service port's
// endpoints to register, and which rules to write on the targets' security groups.
func (t *task) buildTargetGroupBinding(tg TargetGroup, port corev1.ServicePort, preserveClientIP bool) (TargetGroupBinding, error) {
	var nodeSelector map[string]string
	if tg.TargetType == TargetTypeInstance {
		labels, _, err := t.p.StringMap(annotations.TargetNodeLabels)
		if err != nil {
			return TargetGroupBinding{}, fromAnnotation(err)
		}
		if len(labels) > 0 {
			nodeSelector = labels
		}
	}
	multiCluster, _, err := t.p.Bool(annotations.MultiClusterTargetGroup)
	if err != nil {
		return TargetGroupBinding{}, fromAnnotation(err)
	}
	tgPort := targetPort(port, tg.TargetType)
	var networking *Networking
	if len(t.stack.LoadBalancer.SecurityGroups) == 0 {
		networking, err = t.legacyNetworking(tgPort, tg.HealthCheck.Port, tg.Protocol, tg.IPAddressType, preserveClientIP)
	} else {
		networking = t.securityGroupNetworking(tgPort, tg.HealthCheck.Port, tg.Protocol)
	}
	if err != nil {
		return TargetGroupBinding{}, err
	}
	return TargetGroupBinding{
		ResourceID: tg.ResourceID,
		Name:       tg.Name,
		Namespace:  t.svc.Namespace,
		Labels:     map[string]string{LabelStackNamespace: t.svc.Namespace, LabelStackName: t.svc.Name},
		Spec: TargetGroupBindingSpec{
			TargetGroupARN:          TargetGroupARNRef(tg.ResourceID),
			TargetType:              tg.TargetType,
			ServiceRef:              ServiceReference{Name: t.svc.Name, Port: intstr.FromInt32(port.Port)},
			Networking:              networking,
			NodeSelector:            nodeSelector,
			IPAddressType:           tg.IPAddressType,
			VPCID:                   t.cfg.VPCID,
			MultiClusterTargetGroup: multiCluster,
			TargetGroupProtocol:     tg.Protocol,
		},
	}, nil
}

func udpLike(p Protocol) bool {
	return p == ProtocolUDP || p == ProtocolQUIC || p == ProtocolTCPUDP || p == ProtocolTCPQUIC
}

func networkingPort(protocol string, port *intstr.IntOrString) NetworkingPort {
	if port != nil {
		p := *port
		port = &p
	}
	return NetworkingPort{Protocol: protocol, Port: port}
}

// securityGroupNetworking: one rule from the backend group (or, without it, the managed
// group) on the traffic port and the health-check port; none when backend rules are not
// managed. With --disable-restricted-sg-rules the rule opens all ports.
func (t *task) securityGroupNetworking(tgPort, hcPort intstr.IntOrString, proto Protocol) *Networking {
	if t.backendSource == nil {
		return nil
	}
	var ports []NetworkingPort
	if t.cfg.DisableRestrictedSGRules {
		ports = append(ports, networkingPort("TCP", nil))
		if udpLike(proto) {
			ports = append(ports, networkingPort("UDP", nil))
		}
	} else {
		hcIsTraffic := hcPort.String() == healthCheckTrafficPort
		hcInt := hcPort.Type == intstr.Int
		switch proto {
		case ProtocolTCP, ProtocolTLS:
			ports = append(ports, networkingPort("TCP", &tgPort))
		default: // UDP, QUIC, TCP_UDP, TCP_QUIC
			ports = append(ports, networkingPort("UDP", &tgPort))
			if proto == ProtocolTCPUDP || proto == ProtocolTCPQUIC || hcIsTraffic || (hcInt && hcPort.IntValue() == tgPort.IntValue()) {
				ports = append(ports, networkingPort("TCP", &tgPort))
			}
		}
		if !hcIsTraffic && hcInt && hcPort.IntValue() != tgPort.IntValue() {
			ports = append(ports, networkingPort("TCP", &hcPort))
		}
	}
	src := *t.backendSource
	return &Networking{Ingress: []NetworkingIngressRule{{
		From:  []NetworkingPeer{{SecurityGroup: &PeerSecurityGroup{GroupID: src}}},
		Ports: ports,
	}}}
}

// legacyNetworking is the CIDR-based rule set of load balancers without security groups
// (lbc-behaviour.md §2.6): traffic from the load balancer's subnets, or from the source
// ranges (default all, or the VPC for internal load balancers) when the protocol carries UDP or
// the client IP is preserved; plus a health-check rule from the subnets when needed. The
// manage-backend-security-group-rules annotation (default true here) turns it off.
func (t *task) legacyNetworking(tgPort, hcPort intstr.IntOrString, proto Protocol, ipType IPAddressType, preserveClientIP bool) (*Networking, error) {
	manage, ok, err := t.p.Bool(annotations.ManageBackendSecurityGroupRules)
	if err != nil {
		return nil, fromAnnotation(err)
	}
	if ok && !manage {
		return nil, nil
	}
	subnetCIDRs := t.subnetCIDRs(ipType)
	source := subnetCIDRs
	defaultRangeUsed := false
	if udpLike(proto) || preserveClientIP {
		source = t.sourceRanges
		if len(source) == 0 {
			source, err = t.defaultSourceRanges(ipType)
			if err != nil {
				return nil, err
			}
			defaultRangeUsed = true
		}
	}
	var ports []NetworkingPort
	switch proto {
	case ProtocolTCPUDP, ProtocolTCPQUIC:
		ports = []NetworkingPort{networkingPort("TCP", &tgPort), networkingPort("UDP", &tgPort)}
	case ProtocolUDP, ProtocolQUIC:
		ports = []NetworkingPort{networkingPort("UDP", &tgPort)}
	default:
		ports = []NetworkingPort{networkingPort("TCP", &tgPort)}
	}
	n := &Networking{Ingress: []NetworkingIngressRule{{From: cidrPeers(source), Ports: ports}}}
	if hcSources := healthCheckSources(source, subnetCIDRs, tgPort, hcPort, proto, preserveClientIP, defaultRangeUsed); len(hcSources) > 0 {
		p := hcPort
		if hcPort.String() == healthCheckTrafficPort {
			p = tgPort
		}
		n.Ingress = append(n.Ingress, NetworkingIngressRule{From: cidrPeers(hcSources), Ports: []NetworkingPort{networkingPort("TCP", &p)}})
	}
	return n, nil
}

// healthCheckSources: the subnets, unless health checks use the traffic port of a non-UDP
// target group whose traffic rule already admits them (client IP not preserved, or the
// default range or an all-addresses range is open).
func healthCheckSources(source, subnetCIDRs []string, tgPort, hcPort intstr.IntOrString, proto Protocol, preserveClientIP, defaultRangeUsed bool) []string {
	if proto != ProtocolUDP && (hcPort.String() == healthCheckTrafficPort || hcPort.IntValue() == tgPort.IntValue()) {
		if !preserveClientIP || defaultRangeUsed || slices.Contains(source, "0.0.0.0/0") || slices.Contains(source, "::/0") {
			return nil
		}
	}
	return subnetCIDRs
}

func (t *task) subnetCIDRs(ipType IPAddressType) []string {
	var out []string
	for _, s := range t.in.Subnets {
		if ipType == IPAddressTypeIPv6 {
			out = append(out, s.IPv6CIDRs...)
		} else if s.IPv4CIDR != "" {
			out = append(out, s.IPv4CIDR)
		}
	}
	return out
}

// defaultSourceRanges: everyone, except for internal load balancers, which admit their VPC.
func (t *task) defaultSourceRanges(ipType IPAddressType) ([]string, error) {
	if t.scheme != SchemeInternal {
		if ipType == IPAddressTypeIPv6 {
			return []string{"::/0"}, nil
		}
		return []string{"0.0.0.0/0"}, nil
	}
	if t.in.VPC == nil {
		return nil, missing("the VPC's CIDRs were not resolved (Resolved.VPC); an internal load balancer without security groups admits its VPC")
	}
	if ipType == IPAddressTypeIPv6 {
		return slices.Clone(t.in.VPC.IPv6CIDRs), nil
	}
	return slices.Clone(t.in.VPC.IPv4CIDRs), nil
}

func cidrPeers(cidrs []string) []NetworkingPeer {
	peers := make([]NetworkingPeer, 0, len(cidrs))
	for _, c := range cidrs {
		peers = append(peers, NetworkingPeer{IPBlock: &IPBlock{CIDR: c}})
	}
	return peers
}
