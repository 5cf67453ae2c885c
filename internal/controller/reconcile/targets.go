package reconcile

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/moatlb/moat/internal/controller/deploy"
	"github.com/moatlb/moat/internal/controller/model"
)

// Node labels and taints that keep a node out of every target group, as the AWS controller's
// default traffic-proxy node selector and IsNodeSuitableAsTrafficProxy do. Readiness and
// cordoning are not among them: the AWS controller registers unready and cordoned nodes (since
// v2.4) and lets the target group's health check decide.
const (
	labelNodeRoleMaster               = "node-role.kubernetes.io/master"
	labelNodeExcludeBalancer          = "node.kubernetes.io/exclude-from-external-load-balancers"
	labelAlphaNodeExcludeBalancer     = "alpha.service-controller.kubernetes.io/exclude-balancer"
	labelEKSComputeType               = "eks.amazonaws.com/compute-type"
	taintToBeDeletedByClusterAutoscal = "ToBeDeletedByClusterAutoscaler"
	taintKarpenterDisrupted           = "karpenter.sh/disrupted"
)

// trafficProxySelector selects the nodes that may be instance targets.
var trafficProxySelector = func() labels.Selector {
	sel := labels.NewSelector()
	for _, key := range []string{labelNodeRoleMaster, labelNodeExcludeBalancer, labelAlphaNodeExcludeBalancer} {
		req, err := labels.NewRequirement(key, selection.DoesNotExist, nil)
		if err != nil {
			panic(err)
		}
		sel = sel.Add(*req)
	}
	req, err := labels.NewRequirement(labelEKSComputeType, selection.NotIn, []string{"fargate"})
	if err != nil {
		panic(err)
	}
	return sel.Add(*req)
}()

// nodeSuitable reports whether a node selected by the labels may take traffic: not about to be
// removed by the cluster autoscaler or Karpenter.
func nodeSuitable(n *corev1.Node) bool {
	for _, t := range n.Spec.Taints {
		if t.Key == taintToBeDeletedByClusterAutoscal || (t.Key == taintKarpenterDisrupted && t.Effect == corev1.TaintEffectNoSchedule) {
			return false
		}
	}
	return true
}

// serviceNameLabel links an EndpointSlice to its Service.
const serviceNameLabel = discoveryv1.LabelServiceName

// bindingTargets says which endpoints of a Service a binding registers.
type bindingTargets struct {
	TargetType model.TargetType
	// Port is the Service port: its number (spec.ports[].port) or its name.
	Port intstr.IntOrString
	// NodeSelector further restricts instance targets; nil selects every node.
	NodeSelector labels.Selector
	// IPv6 selects IPv6 endpoints for ip targets.
	IPv6 bool
}

// targetResolver turns a Service's endpoints into targets: ready pod addresses from its
// EndpointSlices (ip), or the instance IDs of its nodes on the NodePort (instance).
type targetResolver struct {
	client client.Reader
	ec2    deploy.EC2
	vpcID  string

	mu           sync.Mutex
	instanceByIP map[string]string
	vpcCIDRs     []netip.Prefix // nil until known
}

func newTargetResolver(c client.Reader, ec2 deploy.EC2, vpcID string) *targetResolver {
	return &targetResolver{client: c, ec2: ec2, vpcID: vpcID, instanceByIP: map[string]string{}}
}

// servicePort finds the Service port a binding names, by number or by name.
func servicePort(svc *corev1.Service, port intstr.IntOrString) (corev1.ServicePort, bool) {
	for _, p := range svc.Spec.Ports {
		if (port.Type == intstr.Int && p.Port == port.IntVal) || (port.Type == intstr.String && p.Name == port.StrVal) {
			return p, true
		}
	}
	return corev1.ServicePort{}, false
}

// resolve returns the targets of a binding, sorted.
func (t *targetResolver) resolve(ctx context.Context, svc *corev1.Service, b bindingTargets) ([]deploy.Target, error) {
	sp, ok := servicePort(svc, b.Port)
	if !ok {
		return nil, fmt.Errorf("service %s/%s has no port %s", svc.Namespace, svc.Name, b.Port.String())
	}
	var out []deploy.Target
	var err error
	if b.TargetType == model.TargetTypeInstance {
		out, err = t.instanceTargets(ctx, sp, b.NodeSelector)
	} else {
		out, err = t.ipTargets(ctx, svc, sp, b.IPv6)
	}
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b deploy.Target) int {
		if c := strings.Compare(a.ID, b.ID); c != 0 {
			return c
		}
		return int(a.Port - b.Port)
	})
	return slices.Compact(out), nil
}

// ipTargets: the first address of every ready, not terminating endpoint of the Service's
// EndpointSlices, on the port the slice gives for the Service port.
func (t *targetResolver) ipTargets(ctx context.Context, svc *corev1.Service, sp corev1.ServicePort, ipv6 bool) ([]deploy.Target, error) {
	var list discoveryv1.EndpointSliceList
	if err := t.client.List(ctx, &list, client.InNamespace(svc.Namespace), client.MatchingLabels{serviceNameLabel: svc.Name}); err != nil {
		return nil, fmt.Errorf("list endpoint slices of %s/%s: %w", svc.Namespace, svc.Name, err)
	}
	family := discoveryv1.AddressTypeIPv4
	if ipv6 {
		family = discoveryv1.AddressTypeIPv6
	}
	protocol := sp.Protocol
	if protocol == "" {
		protocol = corev1.ProtocolTCP
	}
	var out []deploy.Target
	for _, es := range list.Items {
		if es.AddressType != family {
			continue
		}
		var port int32
		for _, p := range es.Ports {
			pp := corev1.ProtocolTCP
			if p.Protocol != nil {
				pp = *p.Protocol
			}
			if aws.ToString(p.Name) == sp.Name && pp == protocol && p.Port != nil {
				port = *p.Port
				break
			}
		}
		if port == 0 {
			continue
		}
		for _, ep := range es.Endpoints {
			ready := ep.Conditions.Ready == nil || *ep.Conditions.Ready
			terminating := ep.Conditions.Terminating != nil && *ep.Conditions.Terminating
			if !ready || terminating || len(ep.Addresses) == 0 {
				continue
			}
			out = append(out, deploy.Target{ID: ep.Addresses[0], Port: port, AZ: t.zoneOf(ctx, ep.Addresses[0])})
		}
	}
	return out, nil
}

// zoneOf is "all" for an address outside the VPC (an ip target the load balancer reaches
// through a peering or a gateway), as the AWS controller registers it; "" otherwise.
func (t *targetResolver) zoneOf(ctx context.Context, addr string) string {
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return ""
	}
	cidrs := t.vpcPrefixes(ctx)
	if cidrs == nil {
		return ""
	}
	for _, p := range cidrs {
		if p.Contains(ip) {
			return ""
		}
	}
	return "all"
}

// vpcPrefixes returns the VPC's CIDRs, looked up once; nil when unknown.
func (t *targetResolver) vpcPrefixes(ctx context.Context) []netip.Prefix {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.vpcCIDRs != nil {
		return t.vpcCIDRs
	}
	out, err := t.ec2.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{VpcIds: []string{t.vpcID}})
	if err != nil || len(out.Vpcs) != 1 {
		logr.FromContextOrDiscard(ctx).V(1).Info("cannot read the VPC's CIDRs; ip targets are registered without a zone", "vpc", t.vpcID, "error", err)
		return nil
	}
	cidrs := []netip.Prefix{}
	for _, a := range out.Vpcs[0].CidrBlockAssociationSet {
		if p, err := netip.ParsePrefix(aws.ToString(a.CidrBlock)); err == nil {
			cidrs = append(cidrs, p)
		}
	}
	for _, a := range out.Vpcs[0].Ipv6CidrBlockAssociationSet {
		if p, err := netip.ParsePrefix(aws.ToString(a.Ipv6CidrBlock)); err == nil {
			cidrs = append(cidrs, p)
		}
	}
	if p, err := netip.ParsePrefix(aws.ToString(out.Vpcs[0].CidrBlock)); err == nil && !slices.Contains(cidrs, p) {
		cidrs = append(cidrs, p)
	}
	t.vpcCIDRs = cidrs
	return cidrs
}

// instanceTargets: every node the selectors pick, by instance ID, on the Service port's
// NodePort.
func (t *targetResolver) instanceTargets(ctx context.Context, sp corev1.ServicePort, sel labels.Selector) ([]deploy.Target, error) {
	if sp.NodePort == 0 {
		return nil, fmt.Errorf("service port %d has no NodePort: instance targets need one", sp.Port)
	}
	var nodes corev1.NodeList
	if err := t.client.List(ctx, &nodes, client.MatchingLabelsSelector{Selector: trafficProxySelector}); err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	var out []deploy.Target
	for i := range nodes.Items {
		n := &nodes.Items[i]
		if !nodeSuitable(n) || (sel != nil && !sel.Matches(labels.Set(n.Labels))) {
			continue
		}
		id, err := t.instanceID(ctx, n)
		if err != nil {
			return nil, err
		}
		if id == "" {
			logr.FromContextOrDiscard(ctx).V(1).Info("node has no instance ID: not registered", "node", n.Name)
			continue
		}
		out = append(out, deploy.Target{ID: id, Port: sp.NodePort})
	}
	return out, nil
}

// instanceID is the node's EC2 instance ID: from spec.providerID (aws:///<zone>/<instance-id>),
// else the instance whose private address is the node's InternalIP. "" when there is none.
func (t *targetResolver) instanceID(ctx context.Context, n *corev1.Node) (string, error) {
	if id, ok := instanceIDFromProviderID(n.Spec.ProviderID); ok {
		return id, nil
	}
	var ip string
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			ip = a.Address
			break
		}
	}
	if ip == "" {
		return "", nil
	}
	t.mu.Lock()
	id, ok := t.instanceByIP[ip]
	t.mu.Unlock()
	if ok {
		return id, nil
	}
	out, err := t.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{Filters: []ec2types.Filter{
		{Name: aws.String("private-ip-address"), Values: []string{ip}},
		{Name: aws.String("vpc-id"), Values: []string{t.vpcID}},
	}})
	if err != nil {
		return "", fmt.Errorf("find the instance of node %s (%s): %w", n.Name, ip, err)
	}
	for _, r := range out.Reservations {
		for _, inst := range r.Instances {
			id = aws.ToString(inst.InstanceId)
		}
	}
	if id != "" {
		t.mu.Lock()
		t.instanceByIP[ip] = id
		t.mu.Unlock()
	}
	return id, nil
}

// instanceIDFromProviderID parses aws:///<zone>/<instance-id> (and aws://<zone>/<id>).
func instanceIDFromProviderID(providerID string) (string, bool) {
	rest, ok := strings.CutPrefix(providerID, "aws://")
	if !ok {
		return "", false
	}
	i := strings.LastIndexByte(rest, '/')
	id := rest[i+1:]
	if !strings.HasPrefix(id, "i-") {
		return "", false
	}
	return id, true
}
