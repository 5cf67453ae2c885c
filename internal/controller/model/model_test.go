package model

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestConfigValidate(t *testing.T) {
	ok := DefaultConfig("my-cluster", "vpc-1")
	if err := ok.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	tests := []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"cluster name", func(c *Config) { c.ClusterName = "" }, "--cluster-name"},
		{"target type", func(c *Config) { c.DefaultTargetType = "pod" }, "--default-target-type"},
		{"scheme", func(c *Config) { c.DefaultScheme = "public" }, "--default-load-balancer-scheme"},
		{"backend group id", func(c *Config) { c.BackendSecurityGroup = "my-group" }, "--backend-security-group"},
		{"manage without backend", func(c *Config) {
			c.EnableManageBackendSecurityGroupRules, c.EnableBackendSecurityGroup = true, false
		}, "--enable-manage-backend-security-group-rules requires"},
		{"default tag externally managed", func(c *Config) {
			c.DefaultTags, c.ExternalManagedTags = map[string]string{"team": "x"}, []string{"team"}
		}, "--external-managed-tags"},
	}
	for _, tt := range tests {
		c := DefaultConfig("my-cluster", "vpc-1")
		tt.change(&c)
		err := c.Validate()
		e, isErr := AsError(err)
		if !isErr || e.Kind != KindConfig || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v", tt.name, err)
		}
		// A bad configuration builds nothing.
		if _, err := Build(testService(), c, defaultResolved()); err == nil {
			t.Errorf("%s: Build accepted the configuration", tt.name)
		}
	}
}

func TestFeatureGateDefaults(t *testing.T) {
	var g FeatureGates
	for gate, want := range map[string]bool{
		GateNLBSecurityGroup: true, GateEnableTCPUDPListener: false, GateEnableIPTargetType: true,
		GateNLBHealthCheckAdvancedConfig: true, GateServiceTypeLoadBalancerOnly: false,
		GateEnableDefaultTagsLowPriority: false, GateLBCapacityReservation: true,
	} {
		if g.Enabled(gate) != want {
			t.Errorf("%s default = %v", gate, !want)
		}
	}
	if (FeatureGates{GateNLBSecurityGroup: false}).Enabled(GateNLBSecurityGroup) {
		t.Error("override ignored")
	}
}

func TestTokenJSON(t *testing.T) {
	for _, tok := range []Token{Literal("sg-1"), ManagedSecurityGroupIDRef, TargetGroupARNRef("ns/name:80")} {
		b, err := json.Marshal(tok)
		if err != nil {
			t.Fatal(err)
		}
		var back Token
		if err := json.Unmarshal(b, &back); err != nil || back != tok {
			t.Errorf("%s: round trip gave %+v, %v", b, back, err)
		}
	}
	if b, _ := json.Marshal(ManagedSecurityGroupIDRef); string(b) != `{"$ref":"#/resources/AWS::EC2::SecurityGroup/ManagedLBSecurityGroup/status/groupID"}` {
		t.Errorf("ref marshals as %s", b)
	}
	var tok Token
	if err := json.Unmarshal([]byte(`{"x":"y"}`), &tok); err == nil {
		t.Error("accepted an object without $ref")
	}
}

func TestErrorsAreTyped(t *testing.T) {
	svc := testService()
	svc.Annotations = map[string]string{"service.beta.kubernetes.io/actions.TCP-80": `{"type":"forward"}`}
	_, err := Build(svc, DefaultConfig("my-cluster", "vpc-1"), defaultResolved())
	var e *Error
	if !errors.As(err, &e) || e.Kind != KindUnsupported || e.Annotation != "service.beta.kubernetes.io/actions.TCP-80" {
		t.Fatalf("got %#v", err)
	}
	if e.EventReason() != "FailedBuildModel" {
		t.Errorf("reason %q", e.EventReason())
	}
	if !strings.Contains(e.Error(), "actions.TCP-80") {
		t.Errorf("message does not name the annotation: %s", e)
	}
	if _, err := Build(nil, DefaultConfig("my-cluster", "vpc-1"), Resolved{}); err == nil {
		t.Error("nil Service built")
	}
}

// TestBuildDoesNotMutate checks that Build treats its inputs as read-only.
func TestBuildDoesNotMutate(t *testing.T) {
	svc := testService()
	svc.Annotations = map[string]string{"service.beta.kubernetes.io/aws-load-balancer-additional-resource-tags": "a=b"}
	cfg := DefaultConfig("my-cluster", "vpc-1")
	cfg.DefaultTags = map[string]string{"x": "y"}
	before, _ := json.Marshal([]any{svc, cfg})
	in := defaultResolved()
	for range 2 {
		if _, err := Build(svc, cfg, in); err != nil {
			t.Fatal(err)
		}
	}
	BackendSecurityGroupSpec(cfg)
	after, _ := json.Marshal([]any{svc, cfg})
	if string(before) != string(after) {
		t.Errorf("inputs changed:\n%s\n%s", before, after)
	}
}

func TestPrepareNotSelected(t *testing.T) {
	svc := testService()
	svc.Spec.LoadBalancerClass = nil
	plan, err := Prepare(svc, DefaultConfig("my-cluster", "vpc-1"), nil)
	if err != nil || plan.Selected {
		t.Errorf("got %+v, %v", plan, err)
	}
}

func testService() *corev1.Service {
	class := DefaultLoadBalancerClass
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop", UID: "uid-1"},
		Spec: corev1.ServiceSpec{
			Type:              corev1.ServiceTypeLoadBalancer,
			LoadBalancerClass: &class,
			Ports:             []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, NodePort: 30080}},
		},
	}
}
