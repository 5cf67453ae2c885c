package reconcile_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	elbv2api "github.com/moatlb/moat/api/elbv2/v1beta1"
	"github.com/moatlb/moat/internal/controller/reconcile"
)

// createTargetGroup creates a target group by hand, as a user binding an existing one would
// have.
func (h *harness) createTargetGroup(name string, targetType elbtypes.TargetTypeEnum, port int32) string {
	h.t.Helper()
	out, err := h.env.ELB.CreateTargetGroup(h.ctx, &elbv2.CreateTargetGroupInput{Name: aws.String(name), Protocol: elbtypes.ProtocolEnumTcp,
		Port: aws.Int32(port), VpcId: aws.String(h.cfg.VPCID), TargetType: targetType})
	if err != nil {
		h.t.Fatal(err)
	}
	return aws.ToString(out.TargetGroups[0].TargetGroupArn)
}

// TestHandMadeTargetGroupBinding: a TargetGroupBinding made by hand binds an existing target
// group to a Service port: its endpoints are registered (and follow the EndpointSlice), its
// networking rules are written on the targets' group; deleted, it deregisters its targets and
// revokes its rules before its finalizer goes.
func TestHandMadeTargetGroupBinding(t *testing.T) {
	h := newHarness(t)
	h.start()
	arn := h.createTargetGroup("byhand", elbtypes.TargetTypeEnumIp, 9090)
	src := h.createGroup("lb-by-hand")

	// A plain ClusterIP Service: the Service controller leaves it alone.
	h.create(&corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "api", Namespace: h.ns},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "grpc", Port: 9000, TargetPort: intstr.FromInt32(9090), Protocol: corev1.ProtocolTCP}}},
	})
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "api-1", Namespace: h.ns, Labels: map[string]string{discoveryv1.LabelServiceName: "api"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: aws.String("grpc"), Port: aws.Int32(9090), Protocol: ptr(corev1.ProtocolTCP)}},
		Endpoints: []discoveryv1.Endpoint{
			{Addresses: []string{"198.18.1.10"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)}},
			{Addresses: []string{"198.18.2.10"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)}},
		},
	}
	h.create(es)
	tcp := elbv2api.NetworkingProtocolTCP
	port := intstr.FromInt32(9090)
	tgb := &elbv2api.TargetGroupBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "api-by-hand", Namespace: h.ns},
		Spec: elbv2api.TargetGroupBindingSpec{
			TargetGroupARN: arn,
			ServiceRef:     elbv2api.ServiceReference{Name: "api", Port: intstr.FromInt32(9000)},
			Networking: &elbv2api.TargetGroupBindingNetworking{Ingress: []elbv2api.NetworkingIngressRule{{
				From:  []elbv2api.NetworkingPeer{{SecurityGroup: &elbv2api.SecurityGroup{GroupID: src}}},
				Ports: []elbv2api.NetworkingPort{{Protocol: &tcp, Port: &port}},
			}}},
		},
	}
	h.create(tgb)

	rule := []string{"tcp 9090-9090 " + src + " [" + shared + "]"}
	eventually(t, 30*time.Second, func() error {
		if err := equalStrings(h.targets(arn), []string{"198.18.1.10:9090", "198.18.2.10:9090"}); err != nil {
			return fmt.Errorf("targets: %w", err)
		}
		return equalStrings(inbound(h.nodeGroup()), rule)
	})
	eventually(t, 10*time.Second, func() error {
		got := &elbv2api.TargetGroupBinding{}
		if err := k8s.Get(h.ctx, client.ObjectKeyFromObject(tgb), got); err != nil {
			return err
		}
		if !slices.Contains(got.Finalizers, reconcile.TargetGroupBindingFinalizer) {
			return fmt.Errorf("finalizers %v", got.Finalizers)
		}
		if got.Status.ObservedGeneration == nil || *got.Status.ObservedGeneration != got.Generation {
			return fmt.Errorf("observedGeneration %v, generation %d", got.Status.ObservedGeneration, got.Generation)
		}
		return nil
	})

	// The endpoints change: the targets follow.
	es.Endpoints = es.Endpoints[:1]
	if err := k8s.Update(h.ctx, es); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() error {
		return equalStrings(h.targets(arn), []string{"198.18.1.10:9090"})
	})

	// Deleted: targets deregistered (draining), rules revoked, then the object goes.
	if err := k8s.Delete(h.ctx, tgb); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() error {
		err := k8s.Get(h.ctx, client.ObjectKeyFromObject(tgb), &elbv2api.TargetGroupBinding{})
		if !apierrors.IsNotFound(err) {
			return fmt.Errorf("binding still there: %v", err)
		}
		return nil
	})
	if ts := h.targets(arn); len(ts) != 0 {
		t.Errorf("targets left registered: %v", ts)
	}
	if rules := inbound(h.nodeGroup()); len(rules) != 0 {
		t.Errorf("node rules left: %v", rules)
	}
}

// TestTargetGroupBindingValidation: the CRD's validation (OpenAPI and CEL rules) refuses what the
// AWS controller's webhook refuses.
func TestTargetGroupBindingValidation(t *testing.T) {
	h := newHarness(t)
	arn := "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/k8s-x/0123456789abcdef"
	valid := func(name string) *elbv2api.TargetGroupBinding {
		ip := elbv2api.TargetTypeIP
		return &elbv2api.TargetGroupBinding{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: h.ns},
			Spec: elbv2api.TargetGroupBindingSpec{
				TargetGroupARN: arn, TargetType: &ip,
				ServiceRef: elbv2api.ServiceReference{Name: "svc", Port: intstr.FromInt32(80)},
			},
		}
	}
	cases := []struct {
		name string
		edit func(*elbv2api.TargetGroupBinding)
		want string
	}{
		{"bad-arn", func(b *elbv2api.TargetGroupBinding) { b.Spec.TargetGroupARN = "not-an-arn" }, "spec.targetGroupARN"},
		{"bad-type", func(b *elbv2api.TargetGroupBinding) { b.Spec.TargetType = ptr(elbv2api.TargetType("lambda")) }, "spec.targetType"},
		{"bad-port", func(b *elbv2api.TargetGroupBinding) { b.Spec.ServiceRef.Port = intstr.FromInt32(70000) }, "port must be"},
		{"two-peers", func(b *elbv2api.TargetGroupBinding) {
			b.Spec.Networking = &elbv2api.TargetGroupBindingNetworking{Ingress: []elbv2api.NetworkingIngressRule{{
				From:  []elbv2api.NetworkingPeer{{IPBlock: &elbv2api.IPBlock{CIDR: "10.0.0.0/8"}, SecurityGroup: &elbv2api.SecurityGroup{GroupID: "sg-0123456789abcdef0"}}},
				Ports: []elbv2api.NetworkingPort{},
			}}}
		}, "exactly one of ipBlock and securityGroup"},
		{"bad-cidr", func(b *elbv2api.TargetGroupBinding) {
			b.Spec.Networking = &elbv2api.TargetGroupBindingNetworking{Ingress: []elbv2api.NetworkingIngressRule{{
				From:  []elbv2api.NetworkingPeer{{IPBlock: &elbv2api.IPBlock{CIDR: "10.0.0.300/8"}}},
				Ports: []elbv2api.NetworkingPort{},
			}}}
		}, "cidr must be"},
		{"node-selector-ip", func(b *elbv2api.TargetGroupBinding) {
			b.Spec.NodeSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"a": "b"}}
		}, "nodeSelector is only valid"},
		{"bad-vpc", func(b *elbv2api.TargetGroupBinding) { b.Spec.VpcID = "vpc-xyz" }, "spec.vpcID"},
	}
	for _, c := range cases {
		b := valid(c.name)
		c.edit(b)
		err := k8s.Create(h.ctx, b)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one mentioning %q", c.name, err, c.want)
		}
	}

	b := valid("immutable")
	b.Spec.VpcID = "vpc-0123456789abcdef0"
	h.create(b)
	for what, edit := range map[string]func(*elbv2api.TargetGroupBinding){
		"targetGroupARN is immutable": func(b *elbv2api.TargetGroupBinding) {
			b.Spec.TargetGroupARN = strings.Replace(arn, "0123456789abcdef", "fedcba9876543210", 1)
		},
		"targetType is immutable": func(b *elbv2api.TargetGroupBinding) { b.Spec.TargetType = ptr(elbv2api.TargetTypeInstance) },
		"vpcID is immutable":      func(b *elbv2api.TargetGroupBinding) { b.Spec.VpcID = "vpc-0123456789abcdef1" },
	} {
		cur := &elbv2api.TargetGroupBinding{}
		if err := k8s.Get(h.ctx, client.ObjectKeyFromObject(b), cur); err != nil {
			t.Fatal(err)
		}
		edit(cur)
		err := k8s.Update(h.ctx, cur)
		if err == nil || !strings.Contains(err.Error(), what) {
			t.Errorf("update: error %v, want %q", err, what)
		}
	}
}
