//go:build linux

package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"
	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/moatlb/moat/internal/controller/deploy"
	"github.com/moatlb/moat/internal/controller/model"
)

// TestDualstackServiceAcrossNetworkNamespaces takes a dualstack Service — the AWS controller's
// aws-load-balancer-ip-address-type: dualstack, with one IPv4 and one IPv6 source range —
// through moat controller's model and deploy stages to moat lb in netnsWorld's namespaces, and
// then carries traffic: the load balancer gets an IPv6 address per zone and AAAA records, its
// managed group admits the IPv6 range, and of two IPv6 clients only the admitted one reaches the
// target; the IPv4 range is served too.
func TestDualstackServiceAcrossNetworkNamespaces(t *testing.T) {
	w := newNetnsWorld(t)
	ctx := context.Background()
	vpc, _ := vpcSubnets(t, w.ec2)
	d, err := deploy.NewFromConfig(w.lbProc.config(t), deploy.Options{Model: model.DefaultConfig("netns", aws.ToString(vpc))})
	if err != nil {
		t.Fatal(err)
	}
	class := model.DefaultLoadBalancerClass
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop", UID: "6b1f0c3d-2e4a-4b5c-8d9e-0f1a2b3c4d5e", Annotations: map[string]string{
			"service.beta.kubernetes.io/aws-load-balancer-ip-address-type":               "dualstack",
			"service.beta.kubernetes.io/aws-load-balancer-healthcheck-interval":          "5",
			"service.beta.kubernetes.io/aws-load-balancer-healthcheck-healthy-threshold": "2",
		}},
		Spec: corev1.ServiceSpec{
			Type:                     corev1.ServiceTypeLoadBalancer,
			LoadBalancerClass:        &class,
			Ports:                    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), NodePort: 8080, Protocol: corev1.ProtocolTCP}},
			LoadBalancerSourceRanges: []string{"198.18.0.2/32", "2001:db8::2/128"},
		},
	}
	stack, err := d.Build(ctx, svc)
	if err != nil {
		t.Fatal(err)
	}
	insts, err := w.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{})
	if err != nil {
		t.Fatal(err)
	}
	instance := aws.ToString(insts.Reservations[0].Instances[0].InstanceId)
	targets := deploy.Targets{}
	for _, tg := range stack.TargetGroups {
		targets[tg.ResourceID] = []deploy.Target{{ID: instance, Port: tg.Port}}
	}
	res, err := d.Deploy(ctx, stack, targets)
	if err != nil {
		t.Fatal(err)
	}

	out, err := w.elb.DescribeLoadBalancers(ctx, &elbv2.DescribeLoadBalancersInput{Names: []string{stack.LoadBalancer.Name}})
	if err != nil {
		t.Fatal(err)
	}
	lb := out.LoadBalancers[0]
	if lb.IpAddressType != elbtypes.IpAddressTypeDualstack {
		t.Fatalf("ip address type %s, want dualstack", lb.IpAddressType)
	}
	managed, err := w.ec2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: res.SecurityGroups[:1]})
	if err != nil {
		t.Fatal(err)
	}
	var v6 []string
	for _, p := range managed.SecurityGroups[0].IpPermissions {
		for _, r := range p.Ipv6Ranges {
			v6 = append(v6, aws.ToString(r.CidrIpv6))
		}
	}
	if len(v6) != 1 || v6[0] != "2001:db8::2/128" {
		t.Errorf("managed group's IPv6 ranges %v, want [2001:db8::2/128]", v6)
	}

	// Only the target's zone (b) has a healthy target; its IPv6 address is in AAAA.
	waitFor(t, 30*time.Second, "target healthy", func() bool {
		h, err := w.elb.DescribeTargetHealth(ctx, &elbv2.DescribeTargetHealthInput{TargetGroupArn: aws.String(res.TargetGroupARNs[stack.TargetGroups[0].ResourceID])})
		return err == nil && len(h.TargetHealthDescriptions) == 1 && h.TargetHealthDescriptions[0].TargetHealth.State == elbtypes.TargetHealthStateEnumHealthy
	})
	zoneB6 := w.lbProc.zoneAddress(t, lb, "us-east-1b", dns.TypeAAAA)
	if got := lookup(t, w.lbProc.DNS, aws.ToString(lb.DNSName), dns.TypeAAAA); len(got) != 1 || got[0] != zoneB6 {
		t.Errorf("AAAA %s: %v, want [%s]", aws.ToString(lb.DNSName), got, zoneB6)
	}

	front := "[" + zoneB6 + "]:80"
	if got, err := w.dial(front, "2001:db8::2"); err != nil || !strings.HasPrefix(got, "hello from 198.18.2.10:8080,") {
		t.Errorf("IPv6 client in the source ranges: %q, %v", got, err)
	}
	if out, err := w.dial(front, "2001:db8::3"); err == nil || !strings.Contains(out, "timeout") {
		t.Errorf("IPv6 client outside the source ranges: %q, %v; want a timeout", out, err)
	}
	if got, err := w.dial(w.lbProc.zoneAddress(t, lb, "us-east-1b", dns.TypeA)+":80", "198.18.0.2"); err != nil || !strings.HasPrefix(got, "hello from 198.18.2.10:8080,") {
		t.Errorf("IPv4 client in the source ranges: %q, %v", got, err)
	}
}
