package model

import (
	corev1 "k8s.io/api/core/v1"

	"github.com/moatlb/moat/internal/controller/annotations"
)

// Values of the aws-load-balancer-type annotation that hand a Service to this controller.
const (
	LoadBalancerTypeNLBIP    = "nlb-ip"
	LoadBalancerTypeExternal = "external"
)

// Selected reports whether the controller owns the Service, as the AWS controller decides
// (IsServiceSupported): not being deleted; with gate ServiceTypeLoadBalancerOnly, of type
// LoadBalancer; then either spec.loadBalancerClass equal to the configured class, or no class
// and annotation aws-load-balancer-type "nlb-ip", or "external" together with
// aws-load-balancer-nlb-target-type "ip" or "instance". A Service with another class is left
// alone whatever its annotations.
func Selected(svc *corev1.Service, cfg Config) bool {
	if svc == nil || svc.DeletionTimestamp != nil {
		return false
	}
	if cfg.FeatureGates.Enabled(GateServiceTypeLoadBalancerOnly) && svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
		return false
	}
	class := cfg.LoadBalancerClass
	if class == "" {
		class = DefaultLoadBalancerClass
	}
	if svc.Spec.LoadBalancerClass != nil {
		return *svc.Spec.LoadBalancerClass == class
	}
	p := annotations.New(svc.Annotations)
	lbType, _ := p.String(annotations.LoadBalancerType)
	if lbType == LoadBalancerTypeNLBIP {
		return true
	}
	targetType, _ := p.String(annotations.TargetType)
	return lbType == LoadBalancerTypeExternal && (targetType == string(TargetTypeIP) || targetType == string(TargetTypeInstance))
}
