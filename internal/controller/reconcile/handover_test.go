package reconcile_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	elbv2api "github.com/moatlb/moat/api/elbv2/v1beta1"
)

// The AWS Load Balancer Controller's names, written out here rather than taken from moat's code,
// so that the hand-over tests check moat against that controller and not against itself
// (shared/reference/lbc-behaviour.md §0, §2.5, §4).
const (
	lbcServiceFinalizer = "service.k8s.aws/resources"
	lbcBindingFinalizer = "elbv2.k8s.aws/resources"
	lbcStackNamespace   = "service.k8s.aws/stack-namespace"
	lbcStackName        = "service.k8s.aws/stack-name"
	lbcCheckpoint       = "elbv2.k8s.aws/checkpoint"
)

// TestCreateCostsOneReconcile: a new Service costs one reconcile, reading the API no more than
// the AWS controller does for a create (20 reads), and ends as that controller leaves it: the
// status has the hostname and a port status per Service port; each binding has its target
// group's protocol and the binding finalizer.
func TestCreateCostsOneReconcile(t *testing.T) {
	h := newHarness(t)
	h.create(h.endpointSlice("web", []string{"198.18.1.10", "198.18.2.10"}))
	h.start()
	h.settle(500 * time.Millisecond)
	before := h.env.Calls(t)
	h.create(h.service("web", ipTargets))
	// Wait on Kubernetes only: the test's own AWS reads would count with the controller's.
	eventually(t, 30*time.Second, func() error {
		if ing := h.get("web").Status.LoadBalancer.Ingress; len(ing) == 0 {
			return fmt.Errorf("no status yet")
		}
		return nil
	})
	h.settle(time.Second)
	calls := h.env.Calls(t).Since(before)
	d := h.waitDeployed("web")
	reads := calls.Total() - calls.Mutating().Total()
	t.Logf("create calls: %s", calls)
	if reads > 20 {
		t.Errorf("a create read the API %d times, more than the AWS controller's 20: %s", reads, calls)
	}
	if n := calls.Count("CreateLoadBalancer"); n != 1 {
		t.Errorf("%d CreateLoadBalancer calls", n)
	}

	ing := d.svc.Status.LoadBalancer.Ingress
	wantPorts := []corev1.PortStatus{{Port: 80, Protocol: corev1.ProtocolTCP}, {Port: 443, Protocol: corev1.ProtocolTCP}}
	if len(ing) != 1 || !slices.Equal(portStrings(ing[0].Ports), portStrings(wantPorts)) {
		t.Errorf("status ingress %+v, want the hostname with ports %v", ing, wantPorts)
	}
	for _, b := range h.bindings("web") {
		if b.Spec.TargetGroupProtocol == nil || *b.Spec.TargetGroupProtocol != "TCP" {
			t.Errorf("binding %s: targetGroupProtocol %v, want TCP", b.Name, b.Spec.TargetGroupProtocol)
		}
		if !slices.Contains(b.Finalizers, lbcBindingFinalizer) {
			t.Errorf("binding %s: finalizers %v, want %s", b.Name, b.Finalizers, lbcBindingFinalizer)
		}
	}
}

func portStrings(ps []corev1.PortStatus) []string {
	var out []string
	for _, p := range ps {
		out = append(out, fmt.Sprintf("%d/%s", p.Port, p.Protocol))
	}
	slices.Sort(out)
	return out
}

// bindings lists a Service's TargetGroupBindings by the AWS controller's stack labels.
func (h *harness) bindings(svc string) []elbv2api.TargetGroupBinding {
	h.t.Helper()
	var list elbv2api.TargetGroupBindingList
	if err := k8s.List(h.ctx, &list, client.InNamespace(h.ns), client.MatchingLabels{lbcStackNamespace: h.ns, lbcStackName: svc}); err != nil {
		h.t.Fatal(err)
	}
	return list.Items
}

// TestHandOverFromAWSController: a Service whose stack the AWS controller made — the AWS
// resources, and in Kubernetes its finalizer, its status, and TargetGroupBindings as that
// controller writes them (its labels and finalizer, a checkpoint annotation, no owner) — is
// taken over by moat controller without a mutating call, and deleting the Service then leaves
// nothing in AWS and no object stuck on the other controller's finalizer.
func TestHandOverFromAWSController(t *testing.T) {
	h := newHarness(t)
	h.create(h.endpointSlice("web", []string{"198.18.1.10", "198.18.2.10"}))

	// The AWS state: moat builds the same as the AWS controller (checked by running that
	// controller against moat lb); the Kubernetes side is replaced below by that controller's.
	c := h.start()
	h.create(h.service("web", ipTargets))
	d := h.waitDeployed("web")
	h.settle(500 * time.Millisecond)
	c.stop()

	for _, b := range h.bindings("web") {
		b.Finalizers = nil
		if err := k8s.Update(h.ctx, &b); err != nil {
			t.Fatal(err)
		}
		if err := k8s.Delete(h.ctx, &b); client.IgnoreNotFound(err) != nil {
			t.Fatal(err)
		}
	}
	for port, tg := range d.tgs {
		targetPort := map[int32]int32{80: 8080, 443: 8443}[port]
		ip, tcp, ipv4 := elbv2api.TargetTypeIP, elbv2api.TargetGroupProtocol("TCP"), elbv2api.TargetGroupIPAddressTypeIPv4
		proto := elbv2api.NetworkingProtocolTCP
		h.create(&elbv2api.TargetGroupBinding{
			ObjectMeta: metav1.ObjectMeta{
				Name: aws.ToString(tg.TargetGroupName), Namespace: h.ns,
				Labels:      map[string]string{lbcStackNamespace: h.ns, lbcStackName: "web"},
				Annotations: map[string]string{lbcCheckpoint: "2yJ0bXDk6m8Hj8mF0yJ7QmR5c3n1uI6o0ZlW3tZ9a1c"},
				Finalizers:  []string{lbcBindingFinalizer},
			},
			Spec: elbv2api.TargetGroupBindingSpec{
				TargetGroupARN:      aws.ToString(tg.TargetGroupArn),
				TargetType:          &ip,
				TargetGroupProtocol: &tcp,
				ServiceRef:          elbv2api.ServiceReference{Name: "web", Port: intstr.FromInt32(port)},
				Networking: &elbv2api.TargetGroupBindingNetworking{Ingress: []elbv2api.NetworkingIngressRule{{
					From:  []elbv2api.NetworkingPeer{{SecurityGroup: &elbv2api.SecurityGroup{GroupID: d.backend}}},
					Ports: []elbv2api.NetworkingPort{{Protocol: &proto, Port: ptr(intstr.FromInt32(targetPort))}},
				}}},
				IPAddressType: &ipv4,
				VpcID:         aws.ToString(tg.VpcId),
			},
		})
	}
	svc := h.get("web")
	svc.Finalizers = []string{lbcServiceFinalizer}
	if err := k8s.Update(h.ctx, svc); err != nil {
		t.Fatal(err)
	}
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{Hostname: strings.ToLower(aws.ToString(d.lb.DNSName)),
		Ports: []corev1.PortStatus{{Port: 80, Protocol: corev1.ProtocolTCP}, {Port: 443, Protocol: corev1.ProtocolTCP}}}}
	if err := k8s.Status().Update(h.ctx, svc); err != nil {
		t.Fatal(err)
	}

	before := h.env.Calls(t)
	h.start()
	eventually(t, 30*time.Second, func() error {
		if h.env.Calls(t).Since(before).Count("DescribeLoadBalancers") == 0 {
			return fmt.Errorf("not reconciled yet")
		}
		return nil
	})
	h.settle(time.Second)
	if m := h.env.Calls(t).Since(before).Mutating(); m.Total() != 0 {
		t.Errorf("taking over the AWS controller's stack made mutating calls: %s", m)
	}
	if lb, ok := h.stackLB("web"); !ok || aws.ToString(lb.LoadBalancerArn) != aws.ToString(d.lb.LoadBalancerArn) {
		t.Fatalf("load balancer replaced or gone")
	}

	if err := k8s.Delete(h.ctx, h.get("web")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() error {
		err := k8s.Get(h.ctx, client.ObjectKeyFromObject(svc), &corev1.Service{})
		if !apierrors.IsNotFound(err) {
			return fmt.Errorf("service still there: %v", err)
		}
		if bs := h.bindings("web"); len(bs) != 0 {
			return fmt.Errorf("%d bindings left, first with finalizers %v", len(bs), bs[0].Finalizers)
		}
		return nil
	})
	if left := h.leftovers(); len(left) != 0 {
		t.Fatalf("left in AWS after the Service was deleted: %q", left)
	}
}

// TestStackAdoptableByAWSController: what moat controller leaves for a Service carries what the
// AWS controller looks for to adopt it (lbc-behaviour.md §0, §3, §4): the Service finalizer and
// status, the tracking tags on every AWS resource, and bindings with that controller's labels,
// finalizer and spec fields.
func TestStackAdoptableByAWSController(t *testing.T) {
	h := newHarness(t)
	h.create(h.endpointSlice("web", []string{"198.18.1.10"}))
	h.start()
	h.create(h.service("web", ipTargets))
	d := h.waitDeployed("web")
	h.settle(500 * time.Millisecond)

	if !slices.Contains(d.svc.Finalizers, lbcServiceFinalizer) {
		t.Errorf("service finalizers %v, want %s", d.svc.Finalizers, lbcServiceFinalizer)
	}
	tracking := func(what, arn string, tags map[string]string, resource string) {
		want := map[string]string{"elbv2.k8s.aws/cluster": cluster, "service.k8s.aws/stack": h.ns + "/web", "service.k8s.aws/resource": resource}
		for k, v := range want {
			if tags[k] != v {
				t.Errorf("%s %s: tag %s=%q, want %q", what, arn, k, tags[k], v)
			}
		}
	}
	tracking("load balancer", aws.ToString(d.lb.LoadBalancerArn), h.elbTags(aws.ToString(d.lb.LoadBalancerArn)), "LoadBalancer")
	for port, tg := range d.tgs {
		tracking("target group", aws.ToString(tg.TargetGroupArn), h.elbTags(aws.ToString(tg.TargetGroupArn)), fmt.Sprintf("%s/web:%d", h.ns, port))
	}
	frontendTags := map[string]string{}
	for _, tag := range h.group(d.frontend).Tags {
		frontendTags[aws.ToString(tag.Key)] = aws.ToString(tag.Value)
	}
	tracking("security group", d.frontend, frontendTags, "ManagedLBSecurityGroup")

	bs := h.bindings("web")
	if len(bs) != 2 {
		t.Fatalf("%d bindings with the AWS controller's stack labels, want 2", len(bs))
	}
	for _, b := range bs {
		tg, ok := d.tgs[b.Spec.ServiceRef.Port.IntVal]
		switch {
		case !ok || b.Spec.TargetGroupARN != aws.ToString(tg.TargetGroupArn):
			t.Errorf("binding %s: target group %s for port %v", b.Name, b.Spec.TargetGroupARN, b.Spec.ServiceRef.Port)
		case b.Name != aws.ToString(tg.TargetGroupName):
			t.Errorf("binding %s, want the target group's name %s", b.Name, aws.ToString(tg.TargetGroupName))
		case !slices.Contains(b.Finalizers, lbcBindingFinalizer):
			t.Errorf("binding %s: finalizers %v", b.Name, b.Finalizers)
		case b.Spec.TargetType == nil || *b.Spec.TargetType != elbv2api.TargetTypeIP,
			b.Spec.TargetGroupProtocol == nil || *b.Spec.TargetGroupProtocol != "TCP",
			b.Spec.IPAddressType == nil || *b.Spec.IPAddressType != elbv2api.TargetGroupIPAddressTypeIPv4,
			b.Spec.VpcID != aws.ToString(tg.VpcId):
			t.Errorf("binding %s: spec %+v lacks a field the AWS controller compares", b.Name, b.Spec)
		case b.Spec.Networking == nil || len(b.Spec.Networking.Ingress) != 1 || len(b.Spec.Networking.Ingress[0].From) != 1 ||
			b.Spec.Networking.Ingress[0].From[0].SecurityGroup == nil || b.Spec.Networking.Ingress[0].From[0].SecurityGroup.GroupID != d.backend:
			t.Errorf("binding %s: networking %+v, want one rule from the backend group %s", b.Name, b.Spec.Networking, d.backend)
		}
	}
}
