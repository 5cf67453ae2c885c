package model

import (
	"fmt"
	"maps"
	"regexp"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/moatlb/moat/internal/controller/annotations"
	"github.com/moatlb/moat/internal/nlbattr"
)

const (
	tgAttrProxyProtocolV2  = "proxy_protocol_v2.enabled"
	tgAttrPreserveClientIP = "preserve_client_ip.enabled"
	healthCheckTrafficPort = "traffic-port"
)

// buildTargetGroup builds the target group of a listener from its (first) Service port, and
// its TargetGroupBinding.
func (t *task) buildTargetGroup(port corev1.ServicePort, index int, proto Protocol) (*TargetGroup, error) {
	field := fmt.Sprintf("spec.ports[%d]", index)
	targetType, err := t.buildTargetType(port, field)
	if err != nil {
		return nil, err
	}
	hc, err := t.buildHealthCheck(targetType)
	if err != nil {
		return nil, err
	}
	attrs, preserveClientIP, err := t.buildTargetGroupAttributes(port, targetType)
	if err != nil {
		return nil, err
	}
	tgPort := targetGroupPort(port, targetType)
	if tgPort == 0 {
		if targetType == TargetTypeIP {
			return nil, fieldError(field, "TargetGroup port is empty. Are you using the correct service type?")
		}
		return nil, fieldError(field+".nodePort", "TargetGroup port is empty. When using Instance targets, your service be must of type 'NodePort' or 'LoadBalancer'")
	}
	ipType, err := t.targetGroupIPAddressType()
	if err != nil {
		return nil, err
	}
	id := fmt.Sprintf("%s/%s:%d", t.svc.Namespace, t.svc.Name, port.Port)
	tg := TargetGroup{
		ResourceID:    id,
		Name:          TargetGroupName(t.cfg.ClusterName, t.svc.Namespace, t.svc.Name, string(t.svc.UID), tgPort, port.Port, targetType, proto, hc.Protocol, hc.IntervalSeconds),
		TargetType:    targetType,
		Port:          tgPort,
		Protocol:      proto,
		IPAddressType: ipType,
		HealthCheck:   hc,
		Attributes:    attrs,
		Tags:          t.resourceTags(id),
	}
	tgb, err := t.buildTargetGroupBinding(tg, port, preserveClientIP)
	if err != nil {
		return nil, err
	}
	t.stack.TargetGroups = append(t.stack.TargetGroups, tg)
	t.stack.TargetGroupBindings = append(t.stack.TargetGroupBindings, tgb)
	return &t.stack.TargetGroups[len(t.stack.TargetGroups)-1], nil
}

// buildTargetType: nlb-ip or nlb-target-type ip give ip targets (the latter needs gate
// EnableIPTargetType); otherwise instance targets, which need a NodePort.
func (t *task) buildTargetType(port corev1.ServicePort, field string) (TargetType, error) {
	lbType, _ := t.p.String(annotations.LoadBalancerType)
	raw := string(t.cfg.DefaultTargetType)
	if v, ok := t.p.String(annotations.TargetType); ok {
		raw = v
	}
	if raw == string(TargetTypeIP) && !t.cfg.FeatureGates.Enabled(GateEnableIPTargetType) {
		return "", invalid(t.p, annotations.TargetType, "unsupported targetType: ip when feature gate %s is off", GateEnableIPTargetType)
	}
	if lbType == LoadBalancerTypeNLBIP || raw == string(TargetTypeIP) {
		return TargetTypeIP, nil
	}
	if raw != string(TargetTypeInstance) {
		return "", invalid(t.p, annotations.TargetType, "must be %q or %q", TargetTypeInstance, TargetTypeIP)
	}
	if t.svc.Spec.Type == corev1.ServiceTypeClusterIP {
		return "", fieldError("spec.type", "unsupported service type %q for load balancer target type %q", t.svc.Spec.Type, raw)
	}
	if port.NodePort == 0 && t.svc.Spec.AllocateLoadBalancerNodePorts != nil && !*t.svc.Spec.AllocateLoadBalancerNodePorts {
		return "", fieldError(field+".nodePort", "unable to support instance target type with an unallocated NodePort (spec.allocateLoadBalancerNodePorts is false)")
	}
	return TargetTypeInstance, nil
}

// targetGroupPort is the NodePort for instance targets; for ip targets the numeric
// targetPort, or 1 when it is named (the target group's port is not in the data path).
func targetGroupPort(port corev1.ServicePort, targetType TargetType) int32 {
	if targetType == TargetTypeInstance {
		return port.NodePort
	}
	if port.TargetPort.Type == intstr.Int {
		if port.TargetPort.IntVal == 0 {
			return port.Port // the API server defaults targetPort to port
		}
		return port.TargetPort.IntVal
	}
	return 1
}

// targetPort is the port targets receive traffic on, as the TargetGroupBinding sees it: the
// NodePort for instance targets, else the (possibly named) targetPort.
func targetPort(port corev1.ServicePort, targetType TargetType) intstr.IntOrString {
	if targetType == TargetTypeInstance {
		return intstr.FromInt32(port.NodePort)
	}
	if port.TargetPort.Type == intstr.Int && port.TargetPort.IntVal == 0 {
		return intstr.FromInt32(port.Port)
	}
	return port.TargetPort
}

func (t *task) targetGroupIPAddressType() (IPAddressType, error) {
	for _, f := range t.svc.Spec.IPFamilies {
		if f == corev1.IPv6Protocol {
			if t.ipType != IPAddressTypeDualStack {
				return "", &Error{Kind: KindInvalid, Annotation: annotations.Key(annotations.IPAddressType), Field: "spec.ipFamilies",
					Reason: "unsupported IPv6 configuration, lb not dual-stack: an IPv6 Service needs a dualstack load balancer"}
			}
			return IPAddressTypeIPv6, nil
		}
	}
	return IPAddressTypeIPv4, nil
}

// healthCheckDefaults are the AWS controller's health-check defaults; instance targets with
// externalTrafficPolicy Local check kube-proxy's health port instead.
type healthCheckDefaults struct {
	protocol           Protocol
	port               string
	path               string
	interval, timeout  int32
	healthy, unhealthy int32
}

func (t *task) healthCheckDefaults(targetType TargetType) healthCheckDefaults {
	if targetType == TargetTypeInstance && t.svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal &&
		t.svc.Spec.Type == corev1.ServiceTypeLoadBalancer {
		return healthCheckDefaults{ProtocolHTTP, strconv.Itoa(int(t.svc.Spec.HealthCheckNodePort)), "/healthz", 10, 6, 2, 2}
	}
	return healthCheckDefaults{ProtocolTCP, healthCheckTrafficPort, "/", 10, 10, 3, 3}
}

var httpCodes = regexp.MustCompile(`^\d{3}(-\d{3})?(,\d{3}(-\d{3})?)*$`)

func (t *task) buildHealthCheck(targetType TargetType) (HealthCheck, error) {
	d := t.healthCheckDefaults(targetType)
	hc := HealthCheck{Protocol: d.protocol}
	if raw, ok := t.p.String(annotations.HealthCheckProtocol); ok {
		switch p := Protocol(strings.ToUpper(raw)); p {
		case ProtocolTCP, ProtocolHTTP, ProtocolHTTPS:
			hc.Protocol = p
		default:
			return HealthCheck{}, invalid(t.p, annotations.HealthCheckProtocol, "unsupported health check protocol: must be TCP, HTTP or HTTPS")
		}
	}
	http := hc.Protocol != ProtocolTCP
	if http {
		hc.Path = d.path
		if v, ok := t.p.String(annotations.HealthCheckPath); ok {
			hc.Path = v
		}
		if !strings.HasPrefix(hc.Path, "/") || len(hc.Path) > 1024 {
			return HealthCheck{}, invalid(t.p, annotations.HealthCheckPath, "a health check path starts with / and has at most 1024 characters")
		}
		if t.cfg.FeatureGates.Enabled(GateNLBHealthCheckAdvancedConfig) {
			codes := "200-399"
			if v, ok := t.p.String(annotations.HealthCheckSuccessCodes); ok {
				codes = v
			}
			if err := checkHTTPCodes(codes); err != nil {
				return HealthCheck{}, invalid(t.p, annotations.HealthCheckSuccessCodes, "%s", err)
			}
			hc.Matcher = &Matcher{HTTPCode: codes}
		}
	}
	port, err := t.buildHealthCheckPort(d.port, targetType)
	if err != nil {
		return HealthCheck{}, err
	}
	hc.Port = port
	ints := []struct {
		suffix  string
		dst     *int32
		def     int32
		lo, hi  int32
		enabled bool
	}{
		{annotations.HealthCheckInterval, &hc.IntervalSeconds, d.interval, 5, 300, true},
		{annotations.HealthCheckTimeout, &hc.TimeoutSeconds, d.timeout, 2, 120, t.cfg.FeatureGates.Enabled(GateNLBHealthCheckAdvancedConfig)},
		{annotations.HealthCheckHealthyThreshold, &hc.HealthyThresholdCount, d.healthy, 2, 10, true},
		{annotations.HealthCheckUnhealthyThreshold, &hc.UnhealthyThresholdCount, d.unhealthy, 2, 10, true},
	}
	for _, f := range ints {
		*f.dst = f.def
		if !f.enabled {
			continue
		}
		v, ok, err := t.p.Int32(f.suffix)
		if err != nil {
			return HealthCheck{}, fromAnnotation(err)
		}
		if !ok {
			continue
		}
		if v < f.lo || v > f.hi {
			return HealthCheck{}, invalid(t.p, f.suffix, "must be from %d to %d", f.lo, f.hi)
		}
		*f.dst = v
	}
	return hc, nil
}

func checkHTTPCodes(codes string) error {
	if !httpCodes.MatchString(codes) {
		return fmt.Errorf("HTTP codes are codes or ranges such as 200, 200,202 or 200-299")
	}
	for _, part := range strings.FieldsFunc(codes, func(r rune) bool { return r == ',' || r == '-' }) {
		if n, _ := strconv.Atoi(part); n < 200 || n > 599 {
			return fmt.Errorf("HTTP codes must be from 200 to 599")
		}
	}
	return nil
}

// buildHealthCheckPort: "traffic-port", a number, or a Service port name (its NodePort for
// instance targets, its numeric targetPort for ip targets).
func (t *task) buildHealthCheckPort(def string, targetType TargetType) (intstr.IntOrString, error) {
	raw, set := t.p.String(annotations.HealthCheckPort)
	if !set {
		raw = def
	}
	if raw == healthCheckTrafficPort {
		return intstr.FromString(raw), nil
	}
	bad := func(format string, args ...any) error {
		if set {
			return invalid(t.p, annotations.HealthCheckPort, format, args...)
		}
		return fieldError("spec.healthCheckNodePort", format, args...)
	}
	port := intstr.Parse(raw)
	if port.Type == intstr.Int {
		if port.IntVal < 1 || port.IntVal > 65535 {
			return intstr.IntOrString{}, bad("health check port %d must be from 1 to 65535 (or traffic-port, or a Service port name)", port.IntVal)
		}
		return port, nil
	}
	for _, sp := range t.svc.Spec.Ports {
		if sp.Name != raw {
			continue
		}
		if targetType == TargetTypeInstance {
			if sp.NodePort == 0 {
				return intstr.IntOrString{}, bad("Service port %q has no NodePort", raw)
			}
			return intstr.FromInt32(sp.NodePort), nil
		}
		if sp.TargetPort.Type == intstr.Int {
			return targetPort(sp, targetType), nil
		}
		return intstr.IntOrString{}, bad("cannot use named healthCheckPort for IP TargetType when service's targetPort is a named port")
	}
	return intstr.IntOrString{}, bad("failed to resolve healthCheckPort: no Service port is named %q", raw)
}

// buildTargetGroupAttributes merges the base and per-port target-group-attributes
// annotations (non-empty per-port values win), then the proxy-protocol annotations, which win
// over both. proxy_protocol_v2.enabled is always emitted. It also returns whether the client
// IP is preserved: the attribute if set, else AWS's default (ip: false, instance: true).
func (t *task) buildTargetGroupAttributes(port corev1.ServicePort, targetType TargetType) ([]Attribute, bool, error) {
	attrs := map[string]string{tgAttrProxyProtocolV2: "false"}
	base, _, err := t.p.StringMap(annotations.TargetGroupAttributes)
	if err != nil {
		return nil, false, fromAnnotation(err)
	}
	if err := checkTargetGroupAttributes(t.p, annotations.TargetGroupAttributes, base, false); err != nil {
		return nil, false, err
	}
	maps.Copy(attrs, base)
	perPort := fmt.Sprintf("%s.%d", annotations.TargetGroupAttributes, port.Port)
	override, _, err := t.p.StringMap(perPort)
	if err != nil {
		return nil, false, fromAnnotation(err)
	}
	if err := checkTargetGroupAttributes(t.p, perPort, override, true); err != nil {
		return nil, false, err
	}
	for k, v := range override {
		if v != "" {
			attrs[k] = v
		}
	}
	if raw, ok := t.p.String(annotations.ProxyProtocolPerTargetGroup); ok {
		enabled := false
		for _, item := range annotations.SplitList(raw) {
			if _, err := strconv.Atoi(item); err != nil {
				return nil, false, invalid(t.p, annotations.ProxyProtocolPerTargetGroup, "invalid port number in proxy-protocol-per-target-group: %q", item)
			}
			if item == strconv.Itoa(int(port.Port)) {
				enabled = true
			}
		}
		attrs[tgAttrProxyProtocolV2] = strconv.FormatBool(enabled)
	}
	if raw, ok := t.p.String(annotations.ProxyProtocol); ok {
		if raw != "*" {
			return nil, false, invalid(t.p, annotations.ProxyProtocol, "only value currently supported is *")
		}
		attrs[tgAttrProxyProtocolV2] = "true"
	}
	if attrs[tgAttrProxyProtocolV2] == "" {
		delete(attrs, tgAttrProxyProtocolV2)
	}
	preserve := targetType == TargetTypeInstance
	if v, ok := attrs[tgAttrPreserveClientIP]; ok {
		preserve = v == "true"
	}
	return sortedAttributes(attrs), preserve, nil
}

func checkTargetGroupAttributes(p annotations.Parser, suffix string, attrs map[string]string, allowEmpty bool) error {
	checked := map[string]string{}
	for k, v := range attrs {
		if v == "" && (allowEmpty || k == tgAttrProxyProtocolV2) {
			// An empty per-port value keeps the base value; an empty PPv2 value keeps the default.
			if _, known := nlbattr.TargetGroup[k]; known {
				continue
			}
		}
		checked[k] = v
	}
	return checkAttributes(p, suffix, checked, nlbattr.TargetGroup, "network load balancer target group")
}
