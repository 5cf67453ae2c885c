package model

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestSelected(t *testing.T) {
	const (
		typeKey   = "service.beta.kubernetes.io/aws-load-balancer-type"
		targetKey = "service.beta.kubernetes.io/aws-load-balancer-nlb-target-type"
	)
	class := func(s string) *string { return &s }
	now := metav1.Now()
	tests := []struct {
		name        string
		class       *string
		svcType     corev1.ServiceType
		annotations map[string]string
		deleting    bool
		gates       FeatureGates
		cfgClass    string
		want        bool
	}{
		{name: "class", class: class("service.k8s.aws/nlb"), want: true},
		{name: "class wins over annotations", class: class("service.k8s.aws/nlb"), annotations: map[string]string{typeKey: "nlb"}, want: true},
		{name: "other class", class: class("example.com/lb"), annotations: map[string]string{typeKey: "nlb-ip"}, want: false},
		{name: "custom class flag", class: class("example.com/lb"), cfgClass: "example.com/lb", want: true},
		{name: "default class under a custom flag", class: class("service.k8s.aws/nlb"), cfgClass: "example.com/lb", want: false},
		{name: "nlb-ip", annotations: map[string]string{typeKey: "nlb-ip"}, want: true},
		{name: "external ip", annotations: map[string]string{typeKey: "external", targetKey: "ip"}, want: true},
		{name: "external instance", annotations: map[string]string{typeKey: "external", targetKey: "instance"}, want: true},
		{name: "external without target type", annotations: map[string]string{typeKey: "external"}, want: false},
		{name: "external with bad target type", annotations: map[string]string{typeKey: "external", targetKey: "pod"}, want: false},
		{name: "in-tree nlb", annotations: map[string]string{typeKey: "nlb"}, want: false},
		{name: "target type alone", annotations: map[string]string{targetKey: "ip"}, want: false},
		{name: "nothing", want: false},
		{name: "other prefix", annotations: map[string]string{"service.kubernetes.io/aws-load-balancer-type": "nlb-ip"}, want: false},
		{name: "deleting", class: class("service.k8s.aws/nlb"), deleting: true, want: false},
		{name: "NodePort selected by default", svcType: corev1.ServiceTypeNodePort, annotations: map[string]string{typeKey: "nlb-ip"}, want: true},
		{name: "NodePort with ServiceTypeLoadBalancerOnly", svcType: corev1.ServiceTypeNodePort, annotations: map[string]string{typeKey: "nlb-ip"},
			gates: FeatureGates{GateServiceTypeLoadBalancerOnly: true}, want: false},
		{name: "LoadBalancer with ServiceTypeLoadBalancerOnly", class: class("service.k8s.aws/nlb"),
			gates: FeatureGates{GateServiceTypeLoadBalancerOnly: true}, want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc := &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop", Annotations: tt.annotations},
				Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, LoadBalancerClass: tt.class},
			}
			if tt.svcType != "" {
				svc.Spec.Type = tt.svcType
			}
			if tt.deleting {
				svc.DeletionTimestamp = &now
			}
			cfg := DefaultConfig("my-cluster", "vpc-1")
			cfg.FeatureGates = tt.gates
			if tt.cfgClass != "" {
				cfg.LoadBalancerClass = tt.cfgClass
			}
			if got := Selected(svc, cfg); got != tt.want {
				t.Errorf("Selected = %v, want %v", got, tt.want)
			}
		})
	}
	if Selected(nil, DefaultConfig("c", "v")) {
		t.Error("nil Service selected")
	}
}
