package deploy_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/moatlb/moat/internal/cloud"
	"github.com/moatlb/moat/internal/controller/annotations"
	"github.com/moatlb/moat/internal/controller/deploy"
	"github.com/moatlb/moat/internal/controller/model"
	"github.com/moatlb/moat/internal/lbtest"
)

// TestCreate deploys a Service with two ports and two source ranges: the NLB gets the managed
// frontend group with exactly four rules and the backend group last, one target group and one
// listener per port, tracking tags everywhere, the nodes as targets, and one aggregated rule
// from the backend group on the nodes' group.
func TestCreate(t *testing.T) {
	f := newFixture(t)
	svc := webService("10.0.0.0/8", "203.0.113.0/24")
	stack := f.build(f.d, svc)
	res, err := f.d.Deploy(f.ctx, stack, f.nodeTargets(stack))
	if err != nil {
		t.Fatal(err)
	}

	lbs := f.loadBalancers()
	if len(lbs) != 1 {
		t.Fatalf("want 1 load balancer, got %d", len(lbs))
	}
	lb := lbs[0]
	if got, want := aws.ToString(lb.LoadBalancerName), stack.LoadBalancer.Name; got != want {
		t.Errorf("load balancer name %s, want %s", got, want)
	}
	if lb.Scheme != elbtypes.LoadBalancerSchemeEnumInternal || lb.Type != elbtypes.LoadBalancerTypeEnumNetwork {
		t.Errorf("scheme %s type %s, want internal network", lb.Scheme, lb.Type)
	}
	if res.DNSName == "" || res.DNSName != strings.ToLower(aws.ToString(lb.DNSName)) {
		t.Errorf("result DNS name %q, load balancer's %q", res.DNSName, aws.ToString(lb.DNSName))
	}
	wantTags := map[string]string{model.TagCluster: cluster, model.TagStack: "shop/web", model.TagResource: "LoadBalancer"}
	if got := f.elbTags(aws.ToString(lb.LoadBalancerArn)); !maps.Equal(got, wantTags) {
		t.Errorf("load balancer tags %v, want %v", got, wantTags)
	}

	// Security groups: managed frontend first, backend last.
	managed, ok := f.groupByName(model.ManagedSecurityGroupName(cluster, "shop", "web", string(svc.UID)))
	if !ok {
		t.Fatal("no managed security group")
	}
	backend, ok := f.backendGroup()
	if !ok {
		t.Fatal("no backend security group")
	}
	if aws.ToString(backend.GroupName) != "k8s-traffic-mycluster-4cbfcec96c" {
		t.Errorf("backend group name %s", aws.ToString(backend.GroupName))
	}
	wantStrings(t, "load balancer groups (ordered)", lb.SecurityGroups, []string{aws.ToString(managed.GroupId), aws.ToString(backend.GroupId)})
	if lb.SecurityGroups[1] != aws.ToString(backend.GroupId) {
		t.Errorf("backend group is not last: %v", lb.SecurityGroups)
	}
	wantStrings(t, "result groups", res.SecurityGroups, lb.SecurityGroups)
	wantStrings(t, "managed group rules", inbound(managed), []string{
		"tcp 80-80 10.0.0.0/8", "tcp 80-80 203.0.113.0/24", "tcp 443-443 10.0.0.0/8", "tcp 443-443 203.0.113.0/24",
	})
	if n := len(managed.IpPermissionsEgress); n == 0 {
		t.Error("managed group lost its default outbound rule")
	}
	if got, want := fromTags(managed.Tags), map[string]string{model.TagCluster: cluster, model.TagStack: "shop/web", model.TagResource: "ManagedLBSecurityGroup"}; !maps.Equal(got, want) {
		t.Errorf("managed group tags %v, want %v", got, want)
	}
	if len(backend.IpPermissions) != 0 {
		t.Errorf("backend group has inbound rules: %v", inbound(backend))
	}

	// Target groups, listeners, targets.
	tgs := f.targetGroups()
	if len(tgs) != 2 {
		t.Fatalf("want 2 target groups, got %d", len(tgs))
	}
	tgByPort := map[int32]elbtypes.TargetGroup{}
	for _, tg := range tgs {
		tgByPort[aws.ToInt32(tg.Port)] = tg
		if tg.Protocol != elbtypes.ProtocolEnumTcp || tg.TargetType != elbtypes.TargetTypeEnumInstance {
			t.Errorf("target group %s: %s %s", aws.ToString(tg.TargetGroupName), tg.Protocol, tg.TargetType)
		}
		if aws.ToInt32(tg.HealthCheckIntervalSeconds) != 10 || aws.ToInt32(tg.HealthyThresholdCount) != 3 {
			t.Errorf("target group %s health check: interval %d healthy %d", aws.ToString(tg.TargetGroupName), aws.ToInt32(tg.HealthCheckIntervalSeconds), aws.ToInt32(tg.HealthyThresholdCount))
		}
	}
	for i, port := range []int32{30080, 30443} {
		tg, ok := tgByPort[port]
		if !ok {
			t.Fatalf("no target group on port %d", port)
		}
		want := stack.TargetGroups[i]
		if aws.ToString(tg.TargetGroupName) != want.Name {
			t.Errorf("target group name %s, want %s", aws.ToString(tg.TargetGroupName), want.Name)
		}
		if got := f.elbTags(aws.ToString(tg.TargetGroupArn)); got[model.TagResource] != want.ResourceID || got[model.TagStack] != "shop/web" {
			t.Errorf("target group tags %v", got)
		}
		var wantTargets []string
		for _, id := range f.instances() {
			wantTargets = append(wantTargets, fmt.Sprintf("%s:%d", id, port))
		}
		wantStrings(t, "targets", f.targets(aws.ToString(tg.TargetGroupArn)), wantTargets)
	}
	ls := f.listeners(aws.ToString(lb.LoadBalancerArn))
	var got []string
	for _, l := range ls {
		got = append(got, fmt.Sprintf("%s:%d→%d", l.Protocol, aws.ToInt32(l.Port), aws.ToInt32(tgPortOf(tgs, l))))
		if tags := f.elbTags(aws.ToString(l.ListenerArn)); tags[model.TagResource] != fmt.Sprint(aws.ToInt32(l.Port)) {
			t.Errorf("listener tags %v", tags)
		}
	}
	wantStrings(t, "listeners", got, []string{"TCP:80→30080", "TCP:443→30443"})

	// One aggregated rule from the backend group on the nodes' group, covering both NodePorts
	// (the health checks use the traffic port).
	wantStrings(t, "node group rules", inbound(f.nodeGroup()), []string{
		"tcp 30080-30443 " + aws.ToString(backend.GroupId) + " [" + shared + "]",
	})
}

func tgPortOf(tgs []elbtypes.TargetGroup, l elbtypes.Listener) *int32 {
	for _, a := range l.DefaultActions {
		arn := aws.ToString(a.TargetGroupArn)
		if arn == "" && a.ForwardConfig != nil && len(a.ForwardConfig.TargetGroups) > 0 {
			arn = aws.ToString(a.ForwardConfig.TargetGroups[0].TargetGroupArn)
		}
		for _, tg := range tgs {
			if aws.ToString(tg.TargetGroupArn) == arn {
				return tg.Port
			}
		}
	}
	return aws.Int32(0)
}

func fromTags(tags []ec2types.Tag) map[string]string {
	out := map[string]string{}
	for _, t := range tags {
		out[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	return out
}

// TestNoOpResync: deploying the same Service again makes no mutating call at all.
func TestNoOpResync(t *testing.T) {
	f := newFixture(t)
	svc := webService("10.0.0.0/8", "203.0.113.0/24")
	first := f.deploy(f.d, svc)
	for _, d := range []struct {
		name  string
		fresh bool
	}{{"same process", false}, {"restarted controller", true}} {
		t.Run(d.name, func(t *testing.T) {
			dep := f.d
			if d.fresh {
				dep = f.deployer(f.env.Config)
			}
			before := f.env.Calls(t)
			again := f.deploy(dep, svc)
			calls := f.env.Calls(t).Since(before)
			if m := calls.Mutating(); m.Total() != 0 {
				t.Fatalf("no-op resync made mutating calls: %s", m)
			}
			if again.DNSName != first.DNSName {
				t.Errorf("DNS name changed: %s → %s", first.DNSName, again.DNSName)
			}
			t.Logf("resync calls: %s", calls)
		})
	}
}

// TestRepeatedResyncs: ten resyncs of twenty load balancers, as a controller's periodic resync
// makes them, make no mutating call. Every comparison the deployer makes after a create must find
// what it asked for; one field the API leaves out is a mutating call per load balancer per resync.
func TestRepeatedResyncs(t *testing.T) {
	f := newFixture(t)
	var services []*corev1.Service
	for i := range 20 {
		svc := webService("10.0.0.0/8")
		svc.Name, svc.UID = fmt.Sprintf("web-%02d", i), types.UID(fmt.Sprintf("5a6e0b2c-7f0e-4c55-9d0a-%012d", i))
		services = append(services, svc)
		f.deploy(f.d, svc)
	}
	if n := len(f.loadBalancers()); n != 20 {
		t.Fatalf("%d load balancers, want 20", n)
	}
	before := f.env.Calls(t)
	for range 10 {
		for _, svc := range services {
			f.deploy(f.d, svc)
		}
	}
	if m := f.env.Calls(t).Since(before).Mutating(); m.Total() != 0 {
		t.Fatalf("10 resyncs of 20 load balancers made mutating calls: %s", m)
	}
}

// TestUpdate changes the source ranges and a port: the frontend rules change in place
// (authorize new, revoke old), the port's target group is replaced and its listener recreated,
// the node rule's range follows; the load balancer and its groups stay.
func TestUpdate(t *testing.T) {
	f := newFixture(t)
	first := f.deploy(f.d, webService("10.0.0.0/8", "203.0.113.0/24"))
	managedID := first.SecurityGroups[0]
	backendID := first.SecurityGroups[1]
	tg80 := first.TargetGroupARNs["shop/web:80"]

	svc := webService("10.0.0.0/8", "198.51.100.0/24")
	svc.Spec.Ports[1].Port = 8443
	svc.Spec.Ports[1].NodePort = 31443
	before := f.env.Calls(t)
	res := f.deploy(f.d, svc)
	calls := f.env.Calls(t).Since(before).Mutating()
	t.Logf("update calls: %s", calls)

	if res.LoadBalancerARN != first.LoadBalancerARN || !slices.Equal(res.SecurityGroups, first.SecurityGroups) {
		t.Errorf("load balancer or groups changed: %v %v → %v %v", first.LoadBalancerARN, first.SecurityGroups, res.LoadBalancerARN, res.SecurityGroups)
	}
	if res.TargetGroupARNs["shop/web:80"] != tg80 {
		t.Error("the unchanged port's target group was replaced")
	}
	wantStrings(t, "managed group rules", inbound(f.group(managedID)), []string{
		"tcp 80-80 10.0.0.0/8", "tcp 80-80 198.51.100.0/24", "tcp 8443-8443 10.0.0.0/8", "tcp 8443-8443 198.51.100.0/24",
	})
	tgs := f.targetGroups()
	var ports []string
	for _, tg := range tgs {
		ports = append(ports, fmt.Sprint(aws.ToInt32(tg.Port)))
	}
	wantStrings(t, "target group ports", ports, []string{"30080", "31443"})
	var ls []string
	for _, l := range f.listeners(res.LoadBalancerARN) {
		ls = append(ls, fmt.Sprintf("%d→%d", aws.ToInt32(l.Port), aws.ToInt32(tgPortOf(tgs, l))))
	}
	wantStrings(t, "listeners", ls, []string{"80→30080", "8443→31443"})
	wantStrings(t, "node group rules", inbound(f.nodeGroup()), []string{"tcp 30080-31443 " + backendID + " [" + shared + "]"})

	for _, action := range []string{"CreateLoadBalancer", "DeleteLoadBalancer", "SetSecurityGroups", "SetSubnets", "SetIpAddressType",
		"CreateSecurityGroup", "DeleteSecurityGroup", "ModifyLoadBalancerAttributes", "AddTags", "RemoveTags", "CreateTags", "DeleteTags"} {
		if n := calls.Count(action); n != 0 {
			t.Errorf("update called %s %d times", action, n)
		}
	}
	for action, want := range map[string]int{
		"AuthorizeSecurityGroupIngress": 2, // managed group, node group
		"RevokeSecurityGroupIngress":    2,
		"CreateTargetGroup":             1,
		"DeleteTargetGroup":             1,
		"CreateListener":                1,
		"DeleteListener":                1,
	} {
		if n := calls.Count(action); n != want {
			t.Errorf("update called %s %d times, want %d", action, n, want)
		}
	}

	// Only the health check changes: modified in place.
	svc.Annotations[annotations.Key(annotations.HealthCheckHealthyThreshold)] = "5"
	before = f.env.Calls(t)
	f.deploy(f.d, svc)
	calls = f.env.Calls(t).Since(before).Mutating()
	if calls.Total() != 2 || calls.Count("ModifyTargetGroup") != 2 {
		t.Errorf("health-check change: want 2 ModifyTargetGroup, got %s", calls)
	}
}

// TestSecurityGroupsAnnotation: with groups named by annotation the load balancer gets exactly
// those, no group is created and no target rule written; with
// manage-backend-security-group-rules the backend group is attached last and rules written.
func TestSecurityGroupsAnnotation(t *testing.T) {
	f := newFixture(t)
	var ids []string
	for _, name := range []string{"team-a", "team-b"} {
		out, err := f.env.EC2.CreateSecurityGroup(f.ctx, &ec2.CreateSecurityGroupInput{
			GroupName: aws.String(name), Description: aws.String("team group"), VpcId: aws.String(f.cfg.VPCID),
			TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeSecurityGroup, Tags: []ec2types.Tag{{Key: aws.String("Name"), Value: aws.String(name)}}}},
		})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, aws.ToString(out.GroupId))
	}
	svc := webService("10.0.0.0/8")
	svc.Annotations[annotations.Key(annotations.SecurityGroups)] = ids[0] + ",team-b"

	before := f.env.Calls(t)
	res := f.deploy(f.d, svc)
	calls := f.env.Calls(t).Since(before)
	if !slices.Equal(res.SecurityGroups, ids) {
		t.Errorf("load balancer groups %v, want %v", res.SecurityGroups, ids)
	}
	lb := f.loadBalancers()[0]
	if !slices.Equal(lb.SecurityGroups, ids) {
		t.Errorf("AWS load balancer groups %v, want %v", lb.SecurityGroups, ids)
	}
	if n := calls.Count("CreateSecurityGroup"); n != 0 {
		t.Errorf("created %d security groups", n)
	}
	if _, ok := f.backendGroup(); ok {
		t.Error("a backend group exists")
	}
	if rules := inbound(f.nodeGroup()); len(rules) != 0 {
		t.Errorf("node group has rules: %v", rules)
	}
	for _, id := range ids {
		if rules := inbound(f.group(id)); len(rules) != 0 {
			t.Errorf("user group %s was given rules: %v", id, rules)
		}
	}

	// manage-backend-security-group-rules: the backend group is attached last, rules written.
	svc.Annotations[annotations.Key(annotations.ManageBackendSecurityGroupRules)] = "true"
	res = f.deploy(f.d, svc)
	backend, ok := f.backendGroup()
	if !ok {
		t.Fatal("no backend group")
	}
	want := append(slices.Clone(ids), aws.ToString(backend.GroupId))
	if !slices.Equal(res.SecurityGroups, want) {
		t.Errorf("load balancer groups %v, want %v", res.SecurityGroups, want)
	}
	wantStrings(t, "AWS load balancer groups", f.loadBalancers()[0].SecurityGroups, want)
	wantStrings(t, "node group rules", inbound(f.nodeGroup()), []string{"tcp 30080-30443 " + aws.ToString(backend.GroupId) + " [" + shared + "]"})

	// Back to unmanaged: rules revoked, backend group detached and deleted.
	delete(svc.Annotations, annotations.Key(annotations.ManageBackendSecurityGroupRules))
	res = f.deploy(f.d, svc)
	if !slices.Equal(res.SecurityGroups, ids) {
		t.Errorf("load balancer groups %v, want %v", res.SecurityGroups, ids)
	}
	if rules := inbound(f.nodeGroup()); len(rules) != 0 {
		t.Errorf("node group keeps rules: %v", rules)
	}
	if _, ok := f.backendGroup(); ok {
		t.Error("the backend group was not deleted when no load balancer used it any more")
	}
}

// TestGateOff: with NLBSecurityGroup off the load balancer has no groups and the nodes get
// CIDR rules; turning the gate on again never gives that load balancer groups.
func TestGateOff(t *testing.T) {
	f := newFixture(t, func(c *model.Config) { c.FeatureGates = model.FeatureGates{model.GateNLBSecurityGroup: false} })
	svc := webService()
	res := f.deploy(f.d, svc)
	if len(res.SecurityGroups) != 0 || len(f.loadBalancers()[0].SecurityGroups) != 0 {
		t.Fatalf("load balancer has groups: %v", f.loadBalancers()[0].SecurityGroups)
	}
	if gs := f.groups(tagOrName("tag:elbv2.k8s.aws/cluster", cluster)); len(gs) != 0 {
		t.Errorf("security groups were created: %d", len(gs))
	}
	// Instance targets preserve the client IP: traffic from anywhere... internal: the VPC.
	wantStrings(t, "node group rules", inbound(f.nodeGroup()), []string{
		"tcp 30080-30080 127.0.0.0/8 [" + shared + "]", "tcp 30443-30443 127.0.0.0/8 [" + shared + "]",
	})

	// Gate on again (a new controller): the existing load balancer stays without groups.
	f.cfg.FeatureGates = nil
	d := f.deployer(f.env.Config)
	before := f.env.Calls(t)
	res = f.deploy(d, svc)
	calls := f.env.Calls(t).Since(before)
	if len(res.SecurityGroups) != 0 || len(f.loadBalancers()[0].SecurityGroups) != 0 {
		t.Fatalf("load balancer was given groups")
	}
	if m := calls.Mutating(); m.Total() != 0 {
		t.Errorf("gate on for an existing group-less load balancer made mutating calls: %s", m)
	}
	if _, ok := f.backendGroup(); ok {
		t.Error("a backend group was created")
	}
}

// TestDelete deletes two Services: the first leaves the shared backend group (the second's load
// balancer uses it) and shrinks the node rule; the second deletes everything. Deleting again
// makes no mutating call.
func TestDelete(t *testing.T) {
	f := newFixture(t)
	web := f.deploy(f.d, webService("10.0.0.0/8", "203.0.113.0/24"))
	api := f.deploy(f.d, otherService())
	backendID := web.SecurityGroups[1]
	if api.SecurityGroups[1] != backendID {
		t.Fatalf("services use different backend groups: %s %s", backendID, api.SecurityGroups[1])
	}
	wantStrings(t, "node group rules", inbound(f.nodeGroup()), []string{"tcp 30080-31000 " + backendID + " [" + shared + "]"})

	before := f.env.Calls(t)
	if err := f.d.Delete(f.ctx, "shop/web"); err != nil {
		t.Fatal(err)
	}
	// Each of its two target groups has its targets deregistered (they drain) before it goes.
	if calls := f.env.Calls(t).Since(before); calls.Count("DeregisterTargets") != 2 || calls.Count("DeleteTargetGroup") != 2 {
		t.Errorf("delete of shop/web: %d DeregisterTargets and %d DeleteTargetGroup calls, want 2 and 2", calls.Count("DeregisterTargets"), calls.Count("DeleteTargetGroup"))
	}
	if _, ok := f.backendGroup(); !ok {
		t.Fatal("backend group deleted while shop/api uses it")
	}
	if _, ok := f.groupByName(model.ManagedSecurityGroupName(cluster, "shop", "web", "5a6e0b2c-7f0e-4c55-9d0a-3c1f2b4e8a10")); ok {
		t.Error("shop/web's managed group is left")
	}
	wantStrings(t, "node group rules", inbound(f.nodeGroup()), []string{"tcp 31000-31000 " + backendID + " [" + shared + "]"})
	if n := len(f.loadBalancers()); n != 1 {
		t.Errorf("%d load balancers left, want 1", n)
	}

	// The last Service goes, deleted by an empty stack from a restarted controller.
	d := f.deployer(f.env.Config)
	svc := otherService()
	now := svc.CreationTimestamp
	svc.DeletionTimestamp = &now
	svc.Finalizers = []string{model.ServiceFinalizer}
	stack := f.build(d, svc)
	if stack.LoadBalancer != nil {
		t.Fatal("a deleted Service built a load balancer")
	}
	if _, err := d.Deploy(f.ctx, stack, nil); err != nil {
		t.Fatal(err)
	}
	if left := f.leftovers(); len(left) != 0 {
		t.Fatalf("left after delete: %v", left)
	}

	before = f.env.Calls(t)
	for _, id := range []string{"shop/web", "shop/api"} {
		if err := d.Delete(f.ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if m := f.env.Calls(t).Since(before).Mutating(); m.Total() != 0 {
		t.Errorf("second delete made mutating calls: %s", m)
	}
}

// TestBindingsLister: a restarted controller that has not yet seen every binding the cluster has
// (Options.Bindings) never revokes target rules, so deleting one Service does not cut another's
// traffic; once it has seen them all, rules shrink to what the bindings need.
func TestBindingsLister(t *testing.T) {
	f := newFixture(t)
	web := f.deploy(f.d, webService("10.0.0.0/8"))
	f.deploy(f.d, otherService())
	backendID := web.SecurityGroups[1]
	var apiKeys []string
	for _, b := range f.build(f.d, otherService()).TargetGroupBindings {
		apiKeys = append(apiKeys, b.Namespace+"/"+b.Name)
	}

	restarted, err := deploy.NewFromConfig(f.env.Config, deploy.Options{Model: f.cfg,
		Bindings: func(context.Context) ([]string, error) { return apiKeys, nil }})
	if err != nil {
		t.Fatal(err)
	}
	if err := restarted.Delete(f.ctx, "shop/web"); err != nil {
		t.Fatal(err)
	}
	wantStrings(t, "node rules before shop/api is seen", inbound(f.nodeGroup()), []string{"tcp 30080-31000 " + backendID + " [" + shared + "]"})
	f.deploy(restarted, otherService())
	wantStrings(t, "node rules once every binding is known", inbound(f.nodeGroup()), []string{"tcp 31000-31000 " + backendID + " [" + shared + "]"})
}

// TestIPTargets: ip targets get rules on the group of the interface carrying their address;
// an address no interface carries (moat's local targets) is reported as a condition, and is
// still registered.
func TestIPTargets(t *testing.T) {
	f := newFixture(t)
	svc := webService()
	svc.Annotations[annotations.Key(annotations.TargetType)] = "ip"
	stack := f.build(f.d, svc)
	targets := deploy.Targets{
		"shop/web:80":  {{ID: "127.1.0.10", Port: 8080}, {ID: "127.0.0.77", Port: 8080}},
		"shop/web:443": {{ID: "127.2.0.10", Port: 8443}},
	}
	res, err := f.d.Deploy(f.ctx, stack, targets)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Conditions) != 1 || res.Conditions[0].Reason != deploy.ReasonTargetInterfaceNotFound ||
		res.Conditions[0].Binding != "shop/web:80" || !strings.Contains(res.Conditions[0].Message, "127.0.0.77") {
		t.Errorf("conditions %+v, want one TargetInterfaceNotFound for 127.0.0.77 on shop/web:80", res.Conditions)
	}
	wantStrings(t, "targets of :80", f.targets(res.TargetGroupARNs["shop/web:80"]), []string{"127.0.0.77:8080", "127.1.0.10:8080"})
	backendID := res.SecurityGroups[1]
	wantStrings(t, "node rules", inbound(f.nodeGroup()), []string{"tcp 8080-8443 " + backendID + " [" + shared + "]"})
}

// TestSchemeChange: a new scheme replaces the load balancer (AWS cannot change it); the groups,
// target groups and node rules stay.
func TestSchemeChange(t *testing.T) {
	f := newFixture(t)
	svc := webService("10.0.0.0/8")
	first := f.deploy(f.d, svc)
	svc.Annotations[annotations.Key(annotations.Scheme)] = "internet-facing"
	res := f.deploy(f.d, svc)
	lbs := f.loadBalancers()
	if len(lbs) != 1 || lbs[0].Scheme != elbtypes.LoadBalancerSchemeEnumInternetFacing {
		t.Fatalf("want one internet-facing load balancer, got %d", len(lbs))
	}
	if res.LoadBalancerARN == first.LoadBalancerARN || res.DNSName == first.DNSName {
		t.Error("the load balancer was not replaced")
	}
	if !slices.Equal(res.SecurityGroups, first.SecurityGroups) {
		t.Errorf("groups changed: %v → %v", first.SecurityGroups, res.SecurityGroups)
	}
	for id, arn := range first.TargetGroupARNs {
		if res.TargetGroupARNs[id] != arn {
			t.Errorf("target group %s replaced", id)
		}
	}
	if n := len(f.listeners(res.LoadBalancerARN)); n != 2 {
		t.Errorf("%d listeners, want 2", n)
	}
	wantStrings(t, "node rules", inbound(f.nodeGroup()), []string{"tcp 30080-30443 " + first.SecurityGroups[1] + " [" + shared + "]"})
}

// TestSwitchToUserGroups: adding the security-groups annotation to a Service with a managed
// group sets the load balancer's groups, then deletes the managed group and (no load balancer
// using it any more) the backend group with the node rules from it — even in a restarted
// controller that never saw the backend group.
func TestSwitchToUserGroups(t *testing.T) {
	f := newFixture(t)
	svc := webService("10.0.0.0/8")
	first := f.deploy(f.d, svc)
	out, err := f.env.EC2.CreateSecurityGroup(f.ctx, &ec2.CreateSecurityGroupInput{
		GroupName: aws.String("team"), Description: aws.String("team group"), VpcId: aws.String(f.cfg.VPCID)})
	if err != nil {
		t.Fatal(err)
	}
	user := aws.ToString(out.GroupId)
	svc.Annotations[annotations.Key(annotations.SecurityGroups)] = user
	res := f.deploy(f.deployer(f.env.Config), svc) // a restarted controller: nothing memoized
	if !slices.Equal(res.SecurityGroups, []string{user}) || !slices.Equal(f.loadBalancers()[0].SecurityGroups, []string{user}) {
		t.Fatalf("load balancer groups %v, want [%s]", f.loadBalancers()[0].SecurityGroups, user)
	}
	if res.LoadBalancerARN != first.LoadBalancerARN {
		t.Error("load balancer replaced")
	}
	if gs := f.groups(tagOrName("tag:elbv2.k8s.aws/cluster", cluster)); len(gs) != 0 {
		t.Errorf("%d cluster groups left (managed, backend)", len(gs))
	}
	if rules := inbound(f.nodeGroup()); len(rules) != 0 {
		t.Errorf("node rules left: %v", rules)
	}
}

// TestFrontendOptions: ICMP path-MTU rules on the managed group, and the PrivateLink
// enforcement flag set right after create; a resync is still a no-op.
func TestFrontendOptions(t *testing.T) {
	f := newFixture(t)
	svc := webService("10.0.0.0/8")
	svc.Annotations[annotations.Key(annotations.EnableICMPForPathMTUDiscovery)] = "on"
	svc.Annotations[annotations.Key(annotations.InboundSGRulesOnPrivateLinkTraffic)] = "off"
	svc.Annotations[annotations.Key(annotations.LoadBalancerAttributes)] = "load_balancing.cross_zone.enabled=true"
	res := f.deploy(f.d, svc)
	wantStrings(t, "managed group rules", inbound(f.group(res.SecurityGroups[0])), []string{
		"icmp 3-4 10.0.0.0/8", "tcp 443-443 10.0.0.0/8", "tcp 80-80 10.0.0.0/8",
	})
	lb := f.loadBalancers()[0]
	if got := aws.ToString(lb.EnforceSecurityGroupInboundRulesOnPrivateLinkTraffic); got != "off" {
		t.Errorf("PrivateLink enforcement %q, want off", got)
	}
	before := f.env.Calls(t)
	f.deploy(f.d, svc)
	if m := f.env.Calls(t).Since(before).Mutating(); m.Total() != 0 {
		t.Errorf("resync made mutating calls: %s", m)
	}
}

// TestConcurrentDeploys: one Deployer serves several Services' reconcilers at once: one backend
// group, and the node rule aggregates every binding.
func TestConcurrentDeploys(t *testing.T) {
	f := newFixture(t)
	third := otherService()
	third.Name, third.UID = "admin", "9d1c0b2c-2222-4c55-9d0a-3c1f2b4e8a10"
	third.Spec.Ports[0].NodePort = 32000
	svcs := []*corev1.Service{webService("10.0.0.0/8"), otherService(), third}
	errs := make(chan error, len(svcs))
	for _, svc := range svcs {
		go func() {
			stack, err := f.d.Build(f.ctx, svc)
			if err == nil {
				_, err = f.d.Deploy(f.ctx, stack, f.nodeTargets(stack))
			}
			errs <- err
		}()
	}
	for range svcs {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	backend, ok := f.backendGroup()
	if !ok {
		t.Fatal("no backend group")
	}
	if n := len(f.loadBalancers()); n != 3 {
		t.Fatalf("%d load balancers, want 3", n)
	}
	wantStrings(t, "node rules", inbound(f.nodeGroup()), []string{"tcp 30080-32000 " + aws.ToString(backend.GroupId) + " [" + shared + "]"})
}

// TestTargetGroupChoice: an interface with several groups gets the rules on the one tagged
// kubernetes.io/cluster/<cluster>, as the AWS controller chooses.
func TestTargetGroupChoice(t *testing.T) {
	inv := cloud.DefaultInventory()
	inv.SecurityGroups = append(inv.SecurityGroups, cloud.InventoryGroup{Name: "moat-cluster", VPC: "moat", Description: "cluster nodes",
		Tags: map[string]string{"Name": "moat-cluster", "kubernetes.io/cluster/" + cluster: "owned"}})
	for i := range inv.Instances {
		inv.Instances[i].SecurityGroups = []string{"moat-nodes", "moat-cluster"}
	}
	env := lbtest.Start(t, lbtest.WithInventory(inv))
	f := &fixture{t: t, ctx: context.Background(), env: env, cfg: model.DefaultConfig(cluster, env.VPCID(t))}
	f.d = f.deployer(env.Config)
	res := f.deploy(f.d, webService())
	if rules := inbound(f.nodeGroup()); len(rules) != 0 {
		t.Errorf("untagged node group got rules: %v", rules)
	}
	g, _ := f.groupByName("moat-cluster")
	wantStrings(t, "cluster group rules", inbound(g), []string{"tcp 30080-30443 " + res.SecurityGroups[1] + " [" + shared + "]"})
}

// TestPrefixLists: prefix lists named by annotation become frontend rules (and, without source
// ranges, no 0.0.0.0/0 default).
func TestPrefixLists(t *testing.T) {
	inv := cloud.DefaultInventory()
	inv.PrefixLists = []cloud.InventoryPrefixList{{Name: "office", MaxEntries: 5, Entries: []cloud.PrefixListEntry{{CIDR: "192.0.2.0/24"}}}}
	env := lbtest.Start(t, lbtest.WithInventory(inv))
	f := &fixture{t: t, ctx: context.Background(), env: env, cfg: model.DefaultConfig(cluster, env.VPCID(t))}
	f.d = f.deployer(env.Config)
	pls, err := env.EC2.DescribeManagedPrefixLists(f.ctx, &ec2.DescribeManagedPrefixListsInput{})
	if err != nil || len(pls.PrefixLists) != 1 {
		t.Fatalf("prefix lists: %v %v", pls, err)
	}
	pl := aws.ToString(pls.PrefixLists[0].PrefixListId)
	svc := webService()
	svc.Annotations[annotations.Key(annotations.SecurityGroupPrefixLists)] = pl
	res := f.deploy(f.d, svc)
	wantStrings(t, "managed group rules", inbound(f.group(res.SecurityGroups[0])), []string{"tcp 443-443 " + pl, "tcp 80-80 " + pl})
}

// TestSubnetsAnnotation: subnets named by Name tag; adding one later calls SetSubnets only.
func TestSubnetsAnnotation(t *testing.T) {
	f := newFixture(t)
	svc := webService("10.0.0.0/8")
	svc.Annotations[annotations.Key(annotations.Subnets)] = "moat-a"
	f.deploy(f.d, svc)
	if n := len(f.loadBalancers()[0].AvailabilityZones); n != 1 {
		t.Fatalf("load balancer in %d zones, want 1", n)
	}
	svc.Annotations[annotations.Key(annotations.Subnets)] = "moat-a,moat-b"
	before := f.env.Calls(t)
	f.deploy(f.d, svc)
	calls := f.env.Calls(t).Since(before).Mutating()
	if calls.Total() != 1 || calls.Count("SetSubnets") != 1 {
		t.Errorf("want one SetSubnets, got %s", calls)
	}
	if n := len(f.loadBalancers()[0].AvailabilityZones); n != 2 {
		t.Fatalf("load balancer in %d zones, want 2", n)
	}
}

// TestHandMadeBinding: a TargetGroupBinding made by hand (an existing target group bound to a
// Service) gets its targets and rules; cleaning it up removes both.
func TestHandMadeBinding(t *testing.T) {
	f := newFixture(t)
	tg, err := f.env.ELB.CreateTargetGroup(f.ctx, &elbv2.CreateTargetGroupInput{Name: aws.String("byhand"), Protocol: elbtypes.ProtocolEnumTcp,
		Port: aws.Int32(31500), VpcId: aws.String(f.cfg.VPCID), TargetType: elbtypes.TargetTypeEnumInstance})
	if err != nil {
		t.Fatal(err)
	}
	arn := aws.ToString(tg.TargetGroups[0].TargetGroupArn)
	src, err := f.env.EC2.CreateSecurityGroup(f.ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("lb"), Description: aws.String("lb"), VpcId: aws.String(f.cfg.VPCID)})
	if err != nil {
		t.Fatal(err)
	}
	port := intstr.FromInt32(31500)
	b := deploy.Binding{Key: "shop/byhand", TargetGroupARN: arn, TargetType: model.TargetTypeInstance,
		Networking: &model.Networking{Ingress: []model.NetworkingIngressRule{{
			From:  []model.NetworkingPeer{{SecurityGroup: &model.PeerSecurityGroup{GroupID: model.Literal(aws.ToString(src.GroupId))}}},
			Ports: []model.NetworkingPort{{Protocol: "TCP", Port: &port}},
		}}}}
	for _, id := range f.instances() {
		b.Targets = append(b.Targets, deploy.Target{ID: id, Port: 31500})
	}
	if _, err := f.d.ReconcileBinding(f.ctx, b); err != nil {
		t.Fatal(err)
	}
	if n := len(f.targets(arn)); n != len(b.Targets) {
		t.Errorf("%d targets registered, want %d", n, len(b.Targets))
	}
	wantStrings(t, "node rules", inbound(f.nodeGroup()), []string{"tcp 31500-31500 " + aws.ToString(src.GroupId) + " [" + shared + "]"})
	if err := f.d.CleanupBinding(f.ctx, b.Key, arn); err != nil {
		t.Fatal(err)
	}
	// Deregistered targets drain (deregistration_delay), as on AWS.
	health, err := f.env.ELB.DescribeTargetHealth(f.ctx, &elbv2.DescribeTargetHealthInput{TargetGroupArn: aws.String(arn)})
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range health.TargetHealthDescriptions {
		if h.TargetHealth.State != elbtypes.TargetHealthStateEnumDraining {
			t.Errorf("target %s is %s, want draining", aws.ToString(h.Target.Id), h.TargetHealth.State)
		}
	}
	if rules := inbound(f.nodeGroup()); len(rules) != 0 {
		t.Errorf("node rules left: %v", rules)
	}

	// Bound again: the draining targets are registered again.
	if _, err := f.d.ReconcileBinding(f.ctx, b); err != nil {
		t.Fatal(err)
	}
	health, err = f.env.ELB.DescribeTargetHealth(f.ctx, &elbv2.DescribeTargetHealthInput{TargetGroupArn: aws.String(arn)})
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range health.TargetHealthDescriptions {
		if h.TargetHealth.State == elbtypes.TargetHealthStateEnumDraining {
			t.Errorf("target %s still draining after registering it again", aws.ToString(h.Target.Id))
		}
	}
}

// TestCapacityReservation reserves the minimum capacity the annotation asks for, through moat
// lb's Describe/ModifyCapacityReservation, and a resync leaves it alone.
func TestCapacityReservation(t *testing.T) {
	f := newFixture(t)
	svc := webService("10.0.0.0/8")
	svc.Annotations["service.beta.kubernetes.io/aws-load-balancer-minimum-load-balancer-capacity"] = "CapacityUnits=3000"
	f.deploy(f.d, svc)
	arn := f.loadBalancers()[0].LoadBalancerArn
	got, err := f.env.ELB.DescribeCapacityReservation(f.ctx, &elbv2.DescribeCapacityReservationInput{LoadBalancerArn: arn})
	if err != nil {
		t.Fatal(err)
	}
	if got.MinimumLoadBalancerCapacity == nil || aws.ToInt32(got.MinimumLoadBalancerCapacity.CapacityUnits) != 3000 {
		t.Fatalf("reservation %+v, want 3000 units", got.MinimumLoadBalancerCapacity)
	}
	before := f.env.Calls(t)
	f.deploy(f.d, svc)
	if m := f.env.Calls(t).Since(before).Mutating(); m.Total() != 0 {
		t.Errorf("resync with a reservation made mutating calls: %s", m)
	}
}
