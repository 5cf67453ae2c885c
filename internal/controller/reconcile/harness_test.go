package reconcile_test

import (
	"cmp"
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/moatlb/moat/internal/cloud"
	"github.com/moatlb/moat/internal/controller/deploy"
	"github.com/moatlb/moat/internal/controller/model"
	"github.com/moatlb/moat/internal/controller/reconcile"
	"github.com/moatlb/moat/internal/lbtest"
)

const cluster = "my-cluster"

// harness is one test's world: its own namespace on the suite's API server, its own moat API
// (lbtest: a fresh store with the default inventory), and the controllers it starts.
type harness struct {
	t   *testing.T
	ctx context.Context
	ns  string
	env *lbtest.Env
	cfg model.Config
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	env := lbtest.Start(t, lbtest.WithInventory(testInventory(t)))
	h := &harness{t: t, ctx: context.Background(), env: env}
	h.cfg = model.DefaultConfig(cluster, env.VPCID(t))
	h.cfg.Region = lbtest.Region
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "t-"}}
	if err := k8s.Create(h.ctx, ns); err != nil {
		t.Fatal(err)
	}
	h.ns = ns.Name
	ensureNodes(t, env)
	return h
}

// testInventory is testdata/inventory.yaml.
func testInventory(t testing.TB) cloud.Inventory {
	t.Helper()
	inv, err := cloud.LoadInventory(filepath.Join("testdata", "inventory.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return inv
}

// controller is a running manager with the reconcilers.
type controller struct {
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// stop stops the manager and waits until it has.
func (c *controller) stop() {
	c.once.Do(func() {
		c.cancel()
		<-c.done
	})
}

// startOptions adjust a controller.
type startOptions struct {
	model func(*model.Config)
	aws   func(cfg *aws.Config, kill func())
	// rest is the connection to the API server (default: the suite's, as cluster admin).
	rest *rest.Config
	// leaderElectionNamespace turns leader election on, with its Lease there.
	leaderElectionNamespace string
}

// start runs the controllers on the test's namespace until stop or the end of the test.
func (h *harness) start(opts ...func(*startOptions)) *controller {
	h.t.Helper()
	var o startOptions
	for _, f := range opts {
		f(&o)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &controller{cancel: cancel, done: make(chan error, 1)}
	mcfg := h.cfg
	mcfg.FeatureGates = model.FeatureGates{}
	for k, v := range h.cfg.FeatureGates {
		mcfg.FeatureGates[k] = v
	}
	if o.model != nil {
		o.model(&mcfg)
	}
	awsCfg := h.env.Config.Copy()
	if o.aws != nil {
		o.aws(&awsCfg, cancel)
	}
	cfg := restCfg
	if o.rest != nil {
		cfg = o.rest
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  scheme,
		LeaderElection:          o.leaderElectionNamespace != "",
		LeaderElectionNamespace: o.leaderElectionNamespace,
		LeaderElectionID:        "moat-test-" + h.ns,
		Logger:                  testLogger().WithValues("test", h.t.Name()),
		Metrics:                 metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress:  "0",
		Cache:                   cache.Options{DefaultNamespaces: map[string]cache.Config{h.ns: {}}},
	})
	if err != nil {
		h.t.Fatal(err)
	}
	err = reconcile.Setup(ctx, mgr, reconcile.Config{
		Model:              mcfg,
		AWS:                awsCfg,
		DeleteRetry:        deploy.Backoff{Interval: 100 * time.Millisecond, Timeout: 10 * time.Second},
		SkipNameValidation: true,
	})
	if err != nil {
		h.t.Fatal(err)
	}
	go func() { c.done <- mgr.Start(ctx) }()
	h.t.Cleanup(c.stop)
	return c
}

func withModel(f func(*model.Config)) func(*startOptions) {
	return func(o *startOptions) { o.model = f }
}

// --- Kubernetes objects ---------------------------------------------------------------------

// service returns a selector-less LoadBalancer Service of class service.k8s.aws/nlb with ports
// http 80→8080 and https 443→8443.
func (h *harness) service(name string, edit ...func(*corev1.Service)) *corev1.Service {
	class := model.DefaultLoadBalancerClass
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: h.ns, Annotations: map[string]string{}},
		Spec: corev1.ServiceSpec{
			Type:              corev1.ServiceTypeLoadBalancer,
			LoadBalancerClass: &class,
			Ports: []corev1.ServicePort{
				{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP},
				{Name: "https", Port: 443, TargetPort: intstr.FromInt32(8443), Protocol: corev1.ProtocolTCP},
			},
		},
	}
	for _, e := range edit {
		e(svc)
	}
	return svc
}

func (h *harness) create(obj client.Object) {
	h.t.Helper()
	if err := k8s.Create(h.ctx, obj); err != nil {
		h.t.Fatalf("create %T %s: %v", obj, obj.GetName(), err)
	}
}

func (h *harness) get(name string) *corev1.Service {
	h.t.Helper()
	svc := &corev1.Service{}
	if err := k8s.Get(h.ctx, types.NamespacedName{Namespace: h.ns, Name: name}, svc); err != nil {
		h.t.Fatal(err)
	}
	return svc
}

// update applies edit to the Service, retrying on conflicts with the controller.
func (h *harness) update(name string, edit func(*corev1.Service)) {
	h.t.Helper()
	eventually(h.t, 10*time.Second, func() error {
		svc := h.get(name)
		if svc.Annotations == nil {
			svc.Annotations = map[string]string{}
		}
		edit(svc)
		return k8s.Update(h.ctx, svc)
	})
}

// endpointSlice is the EndpointSlice of a selector-less Service: ready endpoints on http 8080
// and https 8443, plus terminating ones (never registered).
func (h *harness) endpointSlice(svc string, ready []string, terminating ...string) *discoveryv1.EndpointSlice {
	yes, no := true, false
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: svc + "-1", Namespace: h.ns, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports: []discoveryv1.EndpointPort{
			{Name: aws.String("http"), Port: aws.Int32(8080), Protocol: ptr(corev1.ProtocolTCP)},
			{Name: aws.String("https"), Port: aws.Int32(8443), Protocol: ptr(corev1.ProtocolTCP)},
		},
	}
	for _, a := range ready {
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{a}, Conditions: discoveryv1.EndpointConditions{Ready: &yes}})
	}
	for _, a := range terminating {
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{a}, Conditions: discoveryv1.EndpointConditions{Ready: &no, Terminating: &yes}})
	}
	return es
}

func ptr[T any](v T) *T { return &v }

// events lists the Events of an object, as "Type Reason: message".
func (h *harness) events(name string) []string {
	h.t.Helper()
	var list corev1.EventList
	if err := k8s.List(h.ctx, &list, client.InNamespace(h.ns)); err != nil {
		h.t.Fatal(err)
	}
	var out []string
	ours := func(e corev1.Event) bool {
		// The API server reports on Services too (e.g. ClusterIP repair); only ours count.
		return slices.Contains([]string{"service", "targetGroupBinding"}, cmp.Or(e.ReportingController, e.Source.Component))
	}
	for _, e := range list.Items {
		if e.InvolvedObject.Name == name && ours(e) {
			n := max(e.Count, 1)
			if e.Series != nil {
				n = max(n, e.Series.Count)
			}
			for range n {
				out = append(out, e.Type+" "+e.Reason+": "+e.Message)
			}
		}
	}
	sort.Strings(out)
	return out
}

// Nodes stand in for the inventory's instances (no kubelet runs here): node-a names its
// instance by providerID, node-b only by its InternalIP, and node-x is excluded from load
// balancers (its providerID names no instance: registering it would fail).
func ensureNodes(t *testing.T, env *lbtest.Env) {
	t.Helper()
	ctx := context.Background()
	ids := map[string]string{}
	out, err := env.EC2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range out.Reservations {
		for _, i := range r.Instances {
			ids[aws.ToString(i.PrivateIpAddress)] = aws.ToString(i.InstanceId)
		}
	}
	nodes := []struct {
		node corev1.Node
		ip   string
	}{
		{corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}, Spec: corev1.NodeSpec{ProviderID: "aws:///us-east-1a/" + ids["198.18.1.10"]}}, "198.18.1.10"},
		{corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-b"}}, "198.18.2.10"},
		{corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-x", Labels: map[string]string{"node.kubernetes.io/exclude-from-external-load-balancers": ""}},
			Spec: corev1.NodeSpec{ProviderID: "aws:///us-east-1a/i-0000000000000dead"}}, "198.18.1.99"},
	}
	for _, n := range nodes {
		node := n.node
		err := k8s.Create(ctx, &node)
		if apierrors.IsAlreadyExists(err) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: n.ip}}
		node.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}
		if err := k8s.Status().Update(ctx, &node); err != nil {
			t.Fatal(err)
		}
	}
}

// --- AWS state ------------------------------------------------------------------------------

func (h *harness) instanceIDs() []string { return h.env.InstanceIDs(h.t) }

// stackLB returns the load balancer tagged for the Service, if any (failing on duplicates).
func (h *harness) stackLB(name string) (elbtypes.LoadBalancer, bool) {
	h.t.Helper()
	var found []elbtypes.LoadBalancer
	for _, lb := range h.loadBalancers() {
		if tags, ok := h.elbTagsIfExists(aws.ToString(lb.LoadBalancerArn)); ok && tags[model.TagStack] == h.ns+"/"+name {
			found = append(found, lb)
		}
	}
	if len(found) > 1 {
		h.t.Fatalf("%d load balancers for %s", len(found), name)
	}
	if len(found) == 0 {
		return elbtypes.LoadBalancer{}, false
	}
	return found[0], true
}

func (h *harness) loadBalancers() []elbtypes.LoadBalancer { return h.env.LoadBalancers(h.t) }

func (h *harness) elbTags(arn string) map[string]string {
	h.t.Helper()
	tags, ok := h.elbTagsIfExists(arn)
	if !ok {
		h.t.Fatalf("%s not found", arn)
	}
	return tags
}

// elbTagsIfExists returns a resource's tags, or false when it no longer exists.
func (h *harness) elbTagsIfExists(arn string) (map[string]string, bool) {
	return h.env.ELBTags(h.t, arn)
}

// stackTargetGroups returns the Service's target groups by the port they serve.
func (h *harness) stackTargetGroups(name string) map[int32]elbtypes.TargetGroup {
	h.t.Helper()
	out := map[int32]elbtypes.TargetGroup{}
	for _, tg := range h.targetGroups() {
		tags, ok := h.elbTagsIfExists(aws.ToString(tg.TargetGroupArn))
		if !ok {
			continue // deleted since listed
		}
		if tags[model.TagStack] != h.ns+"/"+name {
			continue
		}
		var port int32
		fmt.Sscanf(tags[model.TagResource][strings.LastIndexByte(tags[model.TagResource], ':')+1:], "%d", &port)
		if _, dup := out[port]; dup {
			h.t.Fatalf("two target groups for %s port %d", name, port)
		}
		out[port] = tg
	}
	return out
}

func (h *harness) targetGroups() []elbtypes.TargetGroup { return h.env.TargetGroups(h.t) }

// targets lists a target group's targets as "id:port", without the draining ones.
func (h *harness) targets(arn string) []string {
	h.t.Helper()
	out, err := h.env.ELB.DescribeTargetHealth(h.ctx, &elbv2.DescribeTargetHealthInput{TargetGroupArn: aws.String(arn)})
	if err != nil {
		h.t.Fatal(err)
	}
	var ts []string
	for _, d := range out.TargetHealthDescriptions {
		if d.TargetHealth != nil && d.TargetHealth.State == elbtypes.TargetHealthStateEnumDraining {
			continue
		}
		ts = append(ts, fmt.Sprintf("%s:%d", aws.ToString(d.Target.Id), aws.ToInt32(d.Target.Port)))
	}
	sort.Strings(ts)
	return ts
}

func (h *harness) groups(filters ...ec2types.Filter) []ec2types.SecurityGroup {
	return h.env.Groups(h.t, filters...)
}

func (h *harness) group(id string) ec2types.SecurityGroup { return h.env.Group(h.t, id) }

var filter = lbtest.Filter

func (h *harness) nodeGroup() ec2types.SecurityGroup { return h.env.NodeGroup(h.t) }

// backendGroup returns the cluster's backend group, if it exists.
func (h *harness) backendGroup() (ec2types.SecurityGroup, bool) {
	return h.env.BackendGroup(h.t, cluster)
}

var inbound = lbtest.Inbound

const shared = model.TargetGroupBindingRuleDescription

// leftovers lists everything of the cluster still in AWS: load balancers, target groups,
// security groups tagged for the cluster, and the bindings' rules on the node group.
func (h *harness) leftovers() []string { return h.env.Leftovers(h.t, cluster) }

func equalStrings(got, want []string) error {
	got, want = slices.Clone(got), slices.Clone(want)
	sort.Strings(got)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		return fmt.Errorf("\n got  %q\n want %q", got, want)
	}
	return nil
}

// settle waits until the controllers have stopped calling the API (no request for quiet).
func (h *harness) settle(quiet time.Duration) {
	h.t.Helper()
	last := h.env.Calls(h.t).Total()
	stable := time.Now()
	deadline := time.Now().Add(60 * time.Second)
	for time.Since(stable) < quiet {
		if time.Now().After(deadline) {
			h.t.Fatalf("the controllers kept calling the API for a minute: %s", h.env.Calls(h.t))
		}
		time.Sleep(50 * time.Millisecond)
		if n := h.env.Calls(h.t).Total(); n != last {
			last, stable = n, time.Now()
		}
	}
}
