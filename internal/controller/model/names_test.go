package model

import "testing"

// The expected names come from the AWS Load Balancer Controller's own model-builder tests
// (pkg/service/model_builder_test.go, cluster "my-cluster") and from SPEC.md; users' tooling
// depends on them, so they are pinned here exactly.
func TestGeneratedNames(t *testing.T) {
	const (
		uidTLS = "bdca2bd0-bfc6-449a-88a3-03451f05f18c"
		uidSvc = "7ab4be33-11c2-4a7b-b655-7add8affab36"
	)
	tests := []struct {
		name, got, want string
	}{
		{"backend group", BackendSecurityGroupName("my-cluster"), "k8s-traffic-mycluster-4cbfcec96c"},
		{"managed group", ManagedSecurityGroupName("my-cluster", "default", "nlb-ip-svc-tls", uidTLS), "k8s-default-nlbipsvc-1da4b78715"},
		{"lb internal", LoadBalancerName("my-cluster", "default", "nlb-ip-svc-tls", uidTLS, SchemeInternal), "k8s-default-nlbipsvc-6b0ba8ff70"},
		{"lb internet-facing", LoadBalancerName("my-cluster", "default", "nlb-ip-svc-tls", uidTLS, SchemeInternetFacing), "k8s-default-nlbipsvc-4d831c6ca6"},
		{"lb other uid", LoadBalancerName("my-cluster", "default", "nlb-ip-svc", uidSvc, SchemeInternal), "k8s-default-nlbipsvc-518cdfc227"},
		{"lb other uid internet-facing", LoadBalancerName("my-cluster", "default", "nlb-ip-svc-tls", uidSvc, SchemeInternetFacing), "k8s-default-nlbipsvc-33e41aa671"},
		{"tg ip tcp", TargetGroupName("my-cluster", "default", "nlb-ip-svc-tls", uidTLS, 80, 80, TargetTypeIP, ProtocolTCP, ProtocolTCP, 10), "k8s-default-nlbipsvc-d4818dcd51"},
		{"tg name not hashed", TargetGroupName("my-cluster", "default", "manual-security-groups", uidTLS, 80, 80, TargetTypeIP, ProtocolTCP, ProtocolTCP, 10), "k8s-default-manualse-d4818dcd51"},
		{"tg http hc port 80", TargetGroupName("my-cluster", "default", "nlb-ip-svc", uidSvc, 80, 80, TargetTypeIP, ProtocolTCP, ProtocolHTTP, 10), "k8s-default-nlbipsvc-62f81639fc"},
		{"tg http hc port 83", TargetGroupName("my-cluster", "default", "nlb-ip-svc", uidSvc, 80, 83, TargetTypeIP, ProtocolTCP, ProtocolHTTP, 10), "k8s-default-nlbipsvc-3ede6b28b6"},
		{"tg target port 8883", TargetGroupName("my-cluster", "default", "nlb-ip-svc-tls", uidSvc, 8883, 83, TargetTypeIP, ProtocolTCP, ProtocolHTTP, 10), "k8s-default-nlbipsvc-77ea0c7734"},
		{"sanitized and truncated", generatedName("kube-system", "my_very.long-name", "x"), "k8s-kubesyst-myverylo-" + hash("x")[:10]},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: got %s, want %s", tt.name, tt.got, tt.want)
		}
	}
}
