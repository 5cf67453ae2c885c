package deploy_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"
	"github.com/aws/smithy-go/middleware"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/clock"

	"github.com/moatlb/moat/internal/controller/deploy"
	"github.com/moatlb/moat/internal/controller/model"
	"github.com/moatlb/moat/internal/lbtest"
)

const cluster = "my-cluster"

// fixture is a moat API with a Deployer for cluster my-cluster in its default VPC.
type fixture struct {
	t   *testing.T
	ctx context.Context
	env *lbtest.Env
	cfg model.Config
	d   *deploy.Deployer
	// clock, when set, times the tag caches of the Deployers made after.
	clock clock.Clock
}

func newFixture(t *testing.T, edit ...func(*model.Config)) *fixture {
	t.Helper()
	env := lbtest.Start(t)
	cfg := model.DefaultConfig(cluster, env.VPCID(t))
	cfg.Region = lbtest.Region
	for _, e := range edit {
		e(&cfg)
	}
	f := &fixture{t: t, ctx: context.Background(), env: env, cfg: cfg}
	f.d = f.deployer(env.Config)
	return f
}

// deployer returns a new Deployer (a fresh process: nothing in memory) calling AWS with cfg.
func (f *fixture) deployer(cfg aws.Config) *deploy.Deployer {
	f.t.Helper()
	d, err := deploy.NewFromConfig(cfg, deploy.Options{Model: f.cfg, DeleteRetry: deploy.Backoff{Interval: 10 * time.Millisecond, Timeout: 200 * time.Millisecond}, Clock: f.clock})
	if err != nil {
		f.t.Fatal(err)
	}
	return d
}

// webService is shop/web: two TCP ports (NodePorts 30080 and 30443) and the given source
// ranges, handed to the controller by its class.
func webService(ranges ...string) *corev1.Service {
	class := model.DefaultLoadBalancerClass
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop", UID: types.UID("5a6e0b2c-7f0e-4c55-9d0a-3c1f2b4e8a10"), Annotations: map[string]string{}},
		Spec: corev1.ServiceSpec{
			Type:              corev1.ServiceTypeLoadBalancer,
			LoadBalancerClass: &class,
			Ports: []corev1.ServicePort{
				{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP, NodePort: 30080},
				{Name: "https", Port: 443, TargetPort: intstr.FromInt32(8443), Protocol: corev1.ProtocolTCP, NodePort: 30443},
			},
			LoadBalancerSourceRanges: ranges,
		},
	}
}

// otherService is shop/api: one TCP port on NodePort 31000.
func otherService() *corev1.Service {
	svc := webService()
	svc.Name, svc.UID = "api", "0c6e2d7a-1111-4c55-9d0a-3c1f2b4e8a10"
	svc.Spec.Ports = []corev1.ServicePort{{Name: "grpc", Port: 9000, TargetPort: intstr.FromInt32(9000), Protocol: corev1.ProtocolTCP, NodePort: 31000}}
	return svc
}

// build resolves and builds a Service's stack.
func (f *fixture) build(d *deploy.Deployer, svc *corev1.Service) model.Stack {
	f.t.Helper()
	stack, err := d.Build(f.ctx, svc)
	if err != nil {
		f.t.Fatalf("build %s/%s: %v", svc.Namespace, svc.Name, err)
	}
	return stack
}

// instances returns the inventory's instance IDs.
func (f *fixture) instances() []string {
	f.t.Helper()
	ids := f.env.InstanceIDs(f.t)
	if len(ids) == 0 {
		f.t.Fatal("no instances in the inventory")
	}
	return ids
}

// nodeTargets registers every instance on each target group's NodePort.
func (f *fixture) nodeTargets(stack model.Stack) deploy.Targets {
	targets := deploy.Targets{}
	for _, tg := range stack.TargetGroups {
		for _, id := range f.instances() {
			targets[tg.ResourceID] = append(targets[tg.ResourceID], deploy.Target{ID: id, Port: tg.Port})
		}
	}
	return targets
}

// deploy builds and deploys a Service with node targets.
func (f *fixture) deploy(d *deploy.Deployer, svc *corev1.Service) deploy.Result {
	f.t.Helper()
	stack := f.build(d, svc)
	res, err := d.Deploy(f.ctx, stack, f.nodeTargets(stack))
	if err != nil {
		f.t.Fatalf("deploy %s: %v", stack.ID, err)
	}
	return res
}

func (f *fixture) loadBalancers() []elbtypes.LoadBalancer { return f.env.LoadBalancers(f.t) }

func (f *fixture) elbTags(arn string) map[string]string {
	f.t.Helper()
	tags, ok := f.env.ELBTags(f.t, arn)
	if !ok {
		f.t.Fatalf("%s not found", arn)
	}
	return tags
}

func (f *fixture) targetGroups() []elbtypes.TargetGroup { return f.env.TargetGroups(f.t) }

func (f *fixture) listeners(lbARN string) []elbtypes.Listener {
	f.t.Helper()
	out, err := f.env.ELB.DescribeListeners(f.ctx, &elbv2.DescribeListenersInput{LoadBalancerArn: aws.String(lbARN)})
	if err != nil {
		f.t.Fatal(err)
	}
	return out.Listeners
}

func (f *fixture) targets(tgARN string) []string {
	f.t.Helper()
	out, err := f.env.ELB.DescribeTargetHealth(f.ctx, &elbv2.DescribeTargetHealthInput{TargetGroupArn: aws.String(tgARN)})
	if err != nil {
		f.t.Fatal(err)
	}
	var ts []string
	for _, h := range out.TargetHealthDescriptions {
		ts = append(ts, fmt.Sprintf("%s:%d", aws.ToString(h.Target.Id), aws.ToInt32(h.Target.Port)))
	}
	sort.Strings(ts)
	return ts
}

func (f *fixture) groups(filters ...ec2types.Filter) []ec2types.SecurityGroup {
	return f.env.Groups(f.t, filters...)
}

func (f *fixture) group(id string) ec2types.SecurityGroup { return f.env.Group(f.t, id) }

func (f *fixture) groupByName(name string) (ec2types.SecurityGroup, bool) {
	return f.env.OneGroup(f.t, tagOrName("group-name", name))
}

func (f *fixture) nodeGroup() ec2types.SecurityGroup { return f.env.NodeGroup(f.t) }

var tagOrName = lbtest.Filter

var inbound = lbtest.Inbound

func wantStrings(t *testing.T, what string, got, want []string) {
	t.Helper()
	got, want = slices.Clone(got), slices.Clone(want)
	sort.Strings(got)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Fatalf("%s:\n got  %q\n want %q", what, got, want)
	}
}

const shared = model.TargetGroupBindingRuleDescription

// backendGroup returns the cluster's backend group, if it exists.
func (f *fixture) backendGroup() (ec2types.SecurityGroup, bool) {
	return f.env.BackendGroup(f.t, cluster)
}

// leftovers lists everything of the cluster still in AWS: load balancers, target groups,
// security groups tagged for the cluster, and the bindings' rules on the node group.
func (f *fixture) leftovers() []string { return f.env.Leftovers(f.t, cluster) }

// crasher fails the n-th mutating call of the clients it is added to, before sending it
// (after=false) or after the server answered (after=true: the change is made, the caller never
// learns it), as a controller killed at that moment would.
type crasher struct {
	mu    sync.Mutex
	at    int
	after bool
	seen  int
}

var errCrash = errors.New("injected crash")

func (c *crasher) add(stack *middleware.Stack) error {
	return stack.Initialize.Add(middleware.InitializeMiddlewareFunc("crash", func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
		if !lbtest.IsMutating(middleware.GetOperationName(ctx)) {
			return next.HandleInitialize(ctx, in)
		}
		c.mu.Lock()
		c.seen++
		hit := c.seen == c.at
		c.mu.Unlock()
		if hit && !c.after {
			return middleware.InitializeOutput{}, middleware.Metadata{}, errCrash
		}
		out, md, err := next.HandleInitialize(ctx, in)
		if hit {
			return out, md, errCrash
		}
		return out, md, err
	}), middleware.After)
}

// crashingConfig returns the environment's config with c added to its clients.
func (f *fixture) crashingConfig(c *crasher) aws.Config {
	cfg := f.env.Config.Copy()
	cfg.APIOptions = append(slices.Clone(cfg.APIOptions), c.add)
	return cfg
}
