package reconcile_test

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	elbv2api "github.com/moatlb/moat/api/elbv2/v1beta1"
	"github.com/moatlb/moat/internal/controller/annotations"
	"github.com/moatlb/moat/internal/controller/model"
	"github.com/moatlb/moat/internal/lbtest"
)

type lbtestCalls = lbtest.Calls

func ipTargets(svc *corev1.Service) {
	svc.Annotations[annotations.Key(annotations.TargetType)] = "ip"
}

func sourceRanges(ranges ...string) func(*corev1.Service) {
	return func(svc *corev1.Service) { svc.Spec.LoadBalancerSourceRanges = ranges }
}

// deployed is what a converged Service has in AWS and Kubernetes.
type deployed struct {
	svc      *corev1.Service
	lb       elbtypes.LoadBalancer
	frontend string
	backend  string
	tgs      map[int32]elbtypes.TargetGroup
}

// waitDeployed waits until the Service's status carries its load balancer's DNS name, and
// returns its stack.
func (h *harness) waitDeployed(name string) deployed {
	h.t.Helper()
	var d deployed
	eventually(h.t, 30*time.Second, func() error {
		d.svc = h.get(name)
		lb, ok := h.stackLB(name)
		if !ok {
			return fmt.Errorf("no load balancer for %s", name)
		}
		ing := d.svc.Status.LoadBalancer.Ingress
		if len(ing) != 1 || ing[0].Hostname != strings.ToLower(aws.ToString(lb.DNSName)) {
			return fmt.Errorf("status.loadBalancer.ingress %+v, want hostname %s", ing, aws.ToString(lb.DNSName))
		}
		d.lb = lb
		return nil
	})
	if len(d.lb.SecurityGroups) > 0 {
		d.frontend = d.lb.SecurityGroups[0]
	}
	if len(d.lb.SecurityGroups) > 1 {
		d.backend = d.lb.SecurityGroups[len(d.lb.SecurityGroups)-1]
	}
	d.tgs = h.stackTargetGroups(name)
	return d
}

// TestNLBStack: Services of class service.k8s.aws/nlb with two ports and two source ranges get
// an NLB with a frontend group of exactly one rule per (range × port), the shared backend group
// attached last, one target group per port holding the ready endpoints (ip: the EndpointSlice's
// addresses; instance: the nodes on their NodePorts), one aggregated rule from the backend group
// on the targets' interface group, the DNS name in their status and the finalizer.
func TestNLBStack(t *testing.T) {
	h := newHarness(t)
	h.start()

	h.create(h.endpointSlice("web-ip", []string{"198.18.1.10", "198.18.2.10"}, "198.18.1.11"))
	h.create(h.service("web-ip", ipTargets, sourceRanges("10.0.0.0/8", "192.168.0.0/16")))
	ip := h.waitDeployed("web-ip")

	if !slices.Contains(ip.svc.Finalizers, model.ServiceFinalizer) {
		t.Errorf("finalizers %v, want %s", ip.svc.Finalizers, model.ServiceFinalizer)
	}
	if ip.lb.Type != elbtypes.LoadBalancerTypeEnumNetwork || ip.lb.Scheme != elbtypes.LoadBalancerSchemeEnumInternal {
		t.Errorf("load balancer %s %s, want an internal network load balancer", ip.lb.Type, ip.lb.Scheme)
	}
	if ip.lb.State == nil || (ip.lb.State.Code != elbtypes.LoadBalancerStateEnumActive && ip.lb.State.Code != elbtypes.LoadBalancerStateEnumProvisioning) {
		t.Errorf("load balancer state %+v", ip.lb.State)
	}
	backend, ok := h.backendGroup()
	if !ok {
		t.Fatal("no backend group")
	}
	if len(ip.lb.SecurityGroups) != 2 || ip.backend != aws.ToString(backend.GroupId) {
		t.Fatalf("load balancer groups %v, want [frontend %s] (backend last)", ip.lb.SecurityGroups, aws.ToString(backend.GroupId))
	}
	if err := equalStrings(inbound(h.group(ip.frontend)), []string{
		"tcp 80-80 10.0.0.0/8", "tcp 80-80 192.168.0.0/16", "tcp 443-443 10.0.0.0/8", "tcp 443-443 192.168.0.0/16",
	}); err != nil {
		t.Errorf("frontend rules: %v", err)
	}
	if len(ip.tgs) != 2 {
		t.Fatalf("%d target groups, want 2", len(ip.tgs))
	}
	for port, want := range map[int32][]string{80: {"198.18.1.10:8080", "198.18.2.10:8080"}, 443: {"198.18.1.10:8443", "198.18.2.10:8443"}} {
		tg := ip.tgs[port]
		if tg.TargetType != elbtypes.TargetTypeEnumIp {
			t.Errorf("target group of %d has target type %s", port, tg.TargetType)
		}
		if err := equalStrings(h.targets(aws.ToString(tg.TargetGroupArn)), want); err != nil {
			t.Errorf("targets of %d: %v", port, err)
		}
	}
	eventually(t, 10*time.Second, func() error {
		return equalStrings(inbound(h.nodeGroup()), []string{"tcp 8080-8443 " + ip.backend + " [" + shared + "]"})
	})

	// The same in instance mode: the nodes (not the excluded one) on the NodePorts.
	h.create(h.service("web-inst", sourceRanges("10.0.0.0/8", "192.168.0.0/16")))
	inst := h.waitDeployed("web-inst")
	if inst.backend != ip.backend || len(inst.lb.SecurityGroups) != 2 {
		t.Fatalf("instance load balancer groups %v, want [frontend %s]", inst.lb.SecurityGroups, ip.backend)
	}
	if n := len(inbound(h.group(inst.frontend))); n != 4 {
		t.Errorf("instance frontend has %d rules, want 4", n)
	}
	var nodePorts []int32
	for _, p := range inst.svc.Spec.Ports {
		nodePorts = append(nodePorts, p.NodePort)
		tg := inst.tgs[p.Port]
		if tg.TargetType != elbtypes.TargetTypeEnumInstance || aws.ToInt32(tg.Port) != p.NodePort {
			t.Errorf("target group of %d: %s on %d, want instance on NodePort %d", p.Port, tg.TargetType, aws.ToInt32(tg.Port), p.NodePort)
		}
		var want []string
		for _, id := range h.instanceIDs() {
			want = append(want, fmt.Sprintf("%s:%d", id, p.NodePort))
		}
		if err := equalStrings(h.targets(aws.ToString(tg.TargetGroupArn)), want); err != nil {
			t.Errorf("targets of %d: %v", p.Port, err)
		}
	}
	eventually(t, 10*time.Second, func() error {
		return equalStrings(inbound(h.nodeGroup()), []string{fmt.Sprintf("tcp 8080-%d %s [%s]", slices.Max(nodePorts), ip.backend, shared)})
	})

	// One TargetGroupBinding object per target group, as the AWS controller keeps them.
	var tgbs elbv2api.TargetGroupBindingList
	if err := k8s.List(h.ctx, &tgbs, client.InNamespace(h.ns), client.MatchingLabels{model.LabelStackName: "web-inst"}); err != nil {
		t.Fatal(err)
	}
	if len(tgbs.Items) != 2 {
		t.Fatalf("%d target group bindings for web-inst, want 2", len(tgbs.Items))
	}
	for _, b := range tgbs.Items {
		port := b.Spec.ServiceRef.Port.IntVal
		if b.Spec.TargetGroupARN != aws.ToString(inst.tgs[port].TargetGroupArn) || b.Spec.Networking == nil ||
			b.Spec.Networking.Ingress[0].From[0].SecurityGroup.GroupID != ip.backend {
			t.Errorf("binding %s: %+v", b.Name, b.Spec)
		}
	}
	events := h.events("web-ip")
	if len(events) == 0 || !strings.HasPrefix(events[len(events)-1], "Normal SuccessfullyReconciled") {
		t.Errorf("events of web-ip: %q", events)
	}

	// Every stage is timed on the manager's registry.
	families, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	stages := map[string]bool{}
	for _, f := range families {
		if f.GetName() != "moat_controller_reconcile_stage_duration_seconds" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "stage" && m.GetHistogram().GetSampleCount() > 0 {
					stages[l.GetValue()] = true
				}
			}
		}
	}
	for _, s := range []string{"build", "targets", "deploy", "status"} {
		if !stages[s] {
			t.Errorf("no sample of stage %s in moat_controller_reconcile_stage_duration_seconds", s)
		}
	}
}

// createGroup creates a security group in the VPC, with a Name tag.
func (h *harness) createGroup(name string) string {
	h.t.Helper()
	out, err := h.env.EC2.CreateSecurityGroup(h.ctx, &ec2.CreateSecurityGroupInput{
		GroupName: aws.String(name), Description: aws.String(name), VpcId: aws.String(h.cfg.VPCID),
		TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeSecurityGroup,
			Tags: []ec2types.Tag{{Key: aws.String("Name"), Value: aws.String(name)}}}},
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return aws.ToString(out.GroupId)
}

// TestUserSecurityGroups: with the security-groups annotation (an ID and a Name tag) the load
// balancer gets exactly those groups, no group is created and no target rule written; with
// manage-backend-security-group-rules "true" the backend group is attached last and the rule
// is written.
func TestUserSecurityGroups(t *testing.T) {
	h := newHarness(t)
	teamA, teamB := h.createGroup("team-a"), h.createGroup("team-b")
	h.start()
	before := h.env.Calls(t)
	h.create(h.service("web", func(s *corev1.Service) {
		s.Annotations[annotations.Key(annotations.SecurityGroups)] = teamA + ",team-b"
	}))
	d := h.waitDeployed("web")
	if !slices.Equal(d.lb.SecurityGroups, []string{teamA, teamB}) {
		t.Errorf("load balancer groups %v, want exactly [%s %s]", d.lb.SecurityGroups, teamA, teamB)
	}
	if n := h.env.Calls(t).Since(before).Count("CreateSecurityGroup"); n != 0 {
		t.Errorf("%d security groups created, want none", n)
	}
	if _, ok := h.backendGroup(); ok {
		t.Error("a backend group exists")
	}
	if rules := inbound(h.nodeGroup()); len(rules) != 0 {
		t.Errorf("node rules %v, want none", rules)
	}
	for _, g := range []string{teamA, teamB} {
		if rules := inbound(h.group(g)); len(rules) != 0 {
			t.Errorf("the controller wrote rules %v on the user's group %s", rules, g)
		}
	}

	h.update("web", func(s *corev1.Service) {
		s.Annotations[annotations.Key(annotations.ManageBackendSecurityGroupRules)] = "true"
	})
	var backend string
	eventually(t, 30*time.Second, func() error {
		b, ok := h.backendGroup()
		if !ok {
			return fmt.Errorf("no backend group")
		}
		backend = aws.ToString(b.GroupId)
		lb, _ := h.stackLB("web")
		if !slices.Equal(lb.SecurityGroups, []string{teamA, teamB, backend}) {
			return fmt.Errorf("load balancer groups %v, want [%s %s %s]", lb.SecurityGroups, teamA, teamB, backend)
		}
		svc := h.get("web")
		return equalStrings(inbound(h.nodeGroup()), []string{
			fmt.Sprintf("tcp %d-%d %s [%s]", min(svc.Spec.Ports[0].NodePort, svc.Spec.Ports[1].NodePort),
				max(svc.Spec.Ports[0].NodePort, svc.Spec.Ports[1].NodePort), backend, shared)})
	})
}

// TestGateOff: with NLBSecurityGroup=false the NLB has no security groups; turned on again, the
// controller keeps that NLB as it is and never gives it groups (AWS cannot).
func TestGateOff(t *testing.T) {
	h := newHarness(t)
	c := h.start(withModel(func(m *model.Config) { m.FeatureGates[model.GateNLBSecurityGroup] = false }))
	h.create(h.service("legacy"))
	d := h.waitDeployed("legacy")
	if len(d.lb.SecurityGroups) != 0 {
		t.Fatalf("load balancer groups %v, want none", d.lb.SecurityGroups)
	}
	if gs := h.groups(filter("tag:elbv2.k8s.aws/cluster", cluster)); len(gs) != 0 {
		t.Errorf("%d security groups created, want none", len(gs))
	}
	if len(inbound(h.nodeGroup())) == 0 {
		t.Error("no CIDR rules on the node group for an NLB without groups")
	}
	c.stop()

	h.start()
	before := h.env.Calls(t)
	h.update("legacy", func(s *corev1.Service) { s.Annotations["example.com/touch"] = "1" })
	eventually(t, 30*time.Second, func() error {
		if h.env.Calls(t).Since(before).Count("DescribeLoadBalancers") == 0 {
			return fmt.Errorf("not reconciled yet")
		}
		return nil
	})
	h.settle(time.Second)
	lb, ok := h.stackLB("legacy")
	if !ok || aws.ToString(lb.LoadBalancerArn) != aws.ToString(d.lb.LoadBalancerArn) {
		t.Fatalf("load balancer replaced: %v", aws.ToString(lb.LoadBalancerArn))
	}
	if len(lb.SecurityGroups) != 0 {
		t.Errorf("load balancer groups %v, want none", lb.SecurityGroups)
	}
	calls := h.env.Calls(t).Since(before)
	if n := calls.Count("SetSecurityGroups") + calls.Count("CreateSecurityGroup"); n != 0 {
		t.Errorf("the controller tried to give the NLB groups: %s", calls)
	}
	if events := h.events("legacy"); slices.ContainsFunc(events, func(e string) bool { return strings.HasPrefix(e, "Warning") }) {
		t.Errorf("warnings: %q", events)
	}
}

// TestUpdateAndDelete: a change of source ranges and ports updates the rules of the same
// frontend group on the same load balancer; deleting the Service removes everything it owned,
// then its finalizer; the backend group goes with the last NLB.
func TestUpdateAndDelete(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.create(h.service("web", sourceRanges("10.0.0.0/8", "192.168.0.0/16")))
	h.create(h.service("api", sourceRanges("10.0.0.0/8")))
	web := h.waitDeployed("web")
	h.waitDeployed("api")

	h.update("web", func(s *corev1.Service) {
		s.Spec.LoadBalancerSourceRanges = []string{"172.16.0.0/12"}
		s.Spec.Ports[1].Port = 8443
	})
	eventually(t, 30*time.Second, func() error {
		lb, ok := h.stackLB("web")
		if !ok || aws.ToString(lb.LoadBalancerArn) != aws.ToString(web.lb.LoadBalancerArn) {
			return fmt.Errorf("load balancer replaced")
		}
		if !slices.Equal(lb.SecurityGroups, web.lb.SecurityGroups) {
			return fmt.Errorf("groups %v, want %v", lb.SecurityGroups, web.lb.SecurityGroups)
		}
		if err := equalStrings(inbound(h.group(web.frontend)), []string{"tcp 80-80 172.16.0.0/12", "tcp 8443-8443 172.16.0.0/12"}); err != nil {
			return fmt.Errorf("frontend rules: %w", err)
		}
		tgs := h.stackTargetGroups("web")
		if _, ok := tgs[8443]; !ok || len(tgs) != 2 {
			return fmt.Errorf("target groups for ports %v, want 80 and 8443", slices.Collect(maps.Keys(tgs)))
		}
		return nil
	})

	for _, name := range []string{"web", "api"} {
		svc := h.get(name)
		if err := k8s.Delete(h.ctx, svc); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, func() error {
			err := k8s.Get(h.ctx, client.ObjectKeyFromObject(svc), &corev1.Service{})
			if !apierrors.IsNotFound(err) {
				return fmt.Errorf("service %s still there (finalizer not removed): %v", name, err)
			}
			return nil
		})
		if _, ok := h.stackLB(name); ok {
			t.Errorf("load balancer of %s left", name)
		}
		if tgs := h.stackTargetGroups(name); len(tgs) != 0 {
			t.Errorf("target groups of %s left", name)
		}
		_, backendLeft := h.backendGroup()
		if name == "web" && !backendLeft {
			t.Error("backend group deleted while api's NLB uses it")
		}
	}
	if left := h.leftovers(); len(left) != 0 {
		t.Errorf("left in AWS: %q", left)
	}
	var tgbs elbv2api.TargetGroupBindingList
	if err := k8s.List(h.ctx, &tgbs, client.InNamespace(h.ns)); err != nil {
		t.Fatal(err)
	}
	if len(tgbs.Items) != 0 {
		t.Errorf("%d target group bindings left", len(tgbs.Items))
	}
}

// TestNoOpResync: once converged, a reconcile (an unrelated annotation) and a restarted
// controller (a resync of everything) make no mutating API call, write nothing to Kubernetes
// and emit no Event.
func TestNoOpResync(t *testing.T) {
	h := newHarness(t)
	c := h.start()
	h.create(h.endpointSlice("ip", []string{"198.18.1.10", "198.18.2.10"}))
	h.create(h.service("ip", ipTargets, sourceRanges("10.0.0.0/8")))
	h.create(h.service("inst"))
	h.waitDeployed("ip")
	h.waitDeployed("inst")
	h.settle(time.Second)

	check := func(what string, before lbtestCalls, events map[string][]string, rv map[string]string) {
		t.Helper()
		if m := h.env.Calls(t).Since(before).Mutating(); m.Total() != 0 {
			t.Errorf("%s: mutating calls %s", what, m)
		}
		for name, evs := range events {
			if got := h.events(name); !slices.Equal(got, evs) {
				t.Errorf("%s: events of %s\n got  %q\n want %q", what, name, got, evs)
			}
			if got := h.get(name).ResourceVersion; got != rv[name] {
				t.Errorf("%s: %s was written (resourceVersion %s → %s)", what, name, rv[name], got)
			}
		}
	}
	snapshot := func() (lbtestCalls, map[string][]string, map[string]string) {
		ev, rv := map[string][]string{}, map[string]string{}
		for _, n := range []string{"ip", "inst"} {
			ev[n], rv[n] = h.events(n), h.get(n).ResourceVersion
		}
		return h.env.Calls(t), ev, rv
	}

	calls, ev, _ := snapshot()
	h.update("inst", func(s *corev1.Service) { s.Annotations["example.com/touch"] = "1" })
	_, _, rv := snapshot()
	eventually(t, 30*time.Second, func() error {
		if h.env.Calls(t).Since(calls).Count("DescribeLoadBalancers") == 0 {
			return fmt.Errorf("not reconciled yet")
		}
		return nil
	})
	h.settle(time.Second)
	check("reconcile of an unchanged Service", calls, ev, rv)

	c.stop()
	calls, ev, rv = snapshot()
	h.start()
	eventually(t, 30*time.Second, func() error {
		if h.env.Calls(t).Since(calls).Count("DescribeLoadBalancers") < 2 {
			return fmt.Errorf("not reconciled yet")
		}
		return nil
	})
	h.settle(time.Second)
	check("restarted controller", calls, ev, rv)
}

// TestBadAnnotation: a Service with an invalid annotation gets one Warning FailedBuildModel
// naming the annotation, and nothing is created in AWS; fixed, it is deployed.
func TestBadAnnotation(t *testing.T) {
	h := newHarness(t)
	h.start()
	before := h.env.Calls(t)
	scheme := annotations.Key(annotations.Scheme)
	h.create(h.service("bad", func(s *corev1.Service) { s.Annotations[scheme] = "sideways" }))
	warning := func() error {
		evs := h.events("bad")
		n := 0
		for _, e := range evs {
			if strings.HasPrefix(e, "Warning FailedBuildModel") && strings.Contains(e, scheme) {
				n++
			}
		}
		if n != 1 {
			return fmt.Errorf("want one Warning FailedBuildModel naming %s, got %q", scheme, evs)
		}
		return nil
	}
	eventually(t, 30*time.Second, warning)
	h.update("bad", func(s *corev1.Service) { s.Annotations["example.com/touch"] = "1" })
	h.settle(time.Second)
	if err := warning(); err != nil {
		t.Errorf("after another reconcile: %v", err)
	}
	if m := h.env.Calls(t).Since(before).Mutating(); m.Total() != 0 {
		t.Errorf("mutating calls for a bad Service: %s", m)
	}
	if lbs := h.loadBalancers(); len(lbs) != 0 {
		t.Errorf("%d load balancers", len(lbs))
	}

	// Not implemented by moat: refused the same way.
	cert := annotations.Key(annotations.ActionsPrefix + "TCP-80")
	h.update("bad", func(s *corev1.Service) {
		s.Annotations[scheme] = "internal"
		s.Annotations[cert] = `{"type":"forward","forwardConfig":{"targetGroups":[{"serviceName":"canary","servicePort":80,"weight":10}]}}`
	})
	eventually(t, 30*time.Second, func() error {
		if !slices.ContainsFunc(h.events("bad"), func(e string) bool {
			return strings.HasPrefix(e, "Warning FailedBuildModel") && strings.Contains(e, cert)
		}) {
			return fmt.Errorf("no warning naming %s: %q", cert, h.events("bad"))
		}
		return nil
	})
	if m := h.env.Calls(t).Since(before).Mutating(); m.Total() != 0 {
		t.Errorf("mutating calls for an unsupported annotation: %s", m)
	}

	h.update("bad", func(s *corev1.Service) { delete(s.Annotations, cert) })
	h.waitDeployed("bad")
	eventually(t, 10*time.Second, func() error {
		evs := h.events("bad")
		if !slices.ContainsFunc(evs, func(e string) bool { return strings.HasPrefix(e, "Normal SuccessfullyReconciled") }) {
			return fmt.Errorf("events %q", evs)
		}
		return nil
	})
}
