package deploy

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"
	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/moatlb/moat/internal/controller/model"
)

// targetsBatch is how many targets one Register/DeregisterTargets call carries.
const targetsBatch = 200

// clusterTagPrefix is the prefix of the kubernetes.io/cluster/<name> tag.
const clusterTagPrefix = "kubernetes.io/cluster/"

// Binding is one TargetGroupBinding: the targets its target group must have, and the rules its
// targets' security groups must allow (model.Networking, every token a literal).
type Binding struct {
	// Key is "<namespace>/<name>" of the TargetGroupBinding; rules are aggregated across all
	// bindings by key.
	Key            string
	TargetGroupARN string
	TargetType     model.TargetType
	Networking     *model.Networking
	Targets        []Target
}

// ReconcileBinding makes a binding's target group hold exactly its targets and writes the rules
// its networking asks for on the security groups of the targets' interfaces (aggregated with
// every other binding's, see Options.Bindings). It serves TargetGroupBindings made by hand; the
// bindings of a Service's stack are reconciled by Deploy.
func (d *Deployer) ReconcileBinding(ctx context.Context, b Binding) ([]Condition, error) {
	perms, conds, err := d.bindingPermissions(ctx, b)
	if err != nil {
		return conds, fail("resolve target security groups", b.Key, err)
	}
	if err := d.reconcileNetworking(ctx, func(n *networking) { n.byBinding[b.Key] = perms }); err != nil {
		return conds, err
	}
	return conds, fail("register targets", b.Key, d.reconcileTargets(ctx, b.TargetGroupARN, b.Targets))
}

// CleanupBinding removes a binding's rules (what no other binding needs) and, when
// targetGroupARN is set, deregisters all its targets.
func (d *Deployer) CleanupBinding(ctx context.Context, key, targetGroupARN string) error {
	if targetGroupARN != "" {
		err := d.reconcileTargets(ctx, targetGroupARN, nil)
		if err != nil && errorCode(err) != "TargetGroupNotFound" {
			return fail("deregister targets", key, err)
		}
	}
	return d.reconcileNetworking(ctx, func(n *networking) { delete(n.byBinding, key) })
}

// reconcileTargets registers the missing targets (including draining ones wanted again) and
// deregisters the extra ones (not those already draining).
func (d *Deployer) reconcileTargets(ctx context.Context, tgARN string, desired []Target) error {
	out, err := d.elb.DescribeTargetHealth(ctx, &elbv2.DescribeTargetHealthInput{TargetGroupArn: aws.String(tgARN)})
	if err != nil {
		return fmt.Errorf("describe target health %s: %w", tgARN, err)
	}
	type key struct {
		id   string
		port int32
	}
	have := map[key]bool{}
	var extra []elbtypes.TargetDescription
	want := map[key]bool{}
	for _, t := range desired {
		want[key{t.ID, t.Port}] = true
	}
	for _, h := range out.TargetHealthDescriptions {
		if h.Target == nil {
			continue
		}
		k := key{aws.ToString(h.Target.Id), aws.ToInt32(h.Target.Port)}
		// A draining target is not registered: wanted again, it is registered again (which
		// cancels the draining), as the AWS controller does.
		if h.TargetHealth != nil && h.TargetHealth.State == elbtypes.TargetHealthStateEnumDraining {
			continue
		}
		have[k] = true
		if !want[k] {
			extra = append(extra, elbtypes.TargetDescription{Id: h.Target.Id, Port: h.Target.Port, AvailabilityZone: h.Target.AvailabilityZone})
		}
	}
	var missing []elbtypes.TargetDescription
	seen := map[key]bool{}
	for _, t := range desired {
		k := key{t.ID, t.Port}
		if have[k] || seen[k] {
			continue
		}
		seen[k] = true
		td := elbtypes.TargetDescription{Id: aws.String(t.ID), Port: aws.Int32(t.Port)}
		if t.AZ != "" {
			td.AvailabilityZone = aws.String(t.AZ)
		}
		missing = append(missing, td)
	}
	for start := 0; start < len(missing); start += targetsBatch {
		batch := missing[start:min(start+targetsBatch, len(missing))]
		if _, err := d.elb.RegisterTargets(ctx, &elbv2.RegisterTargetsInput{TargetGroupArn: aws.String(tgARN), Targets: batch}); err != nil {
			return fmt.Errorf("register targets in %s: %w", tgARN, err)
		}
	}
	for start := 0; start < len(extra); start += targetsBatch {
		batch := extra[start:min(start+targetsBatch, len(extra))]
		if _, err := d.elb.DeregisterTargets(ctx, &elbv2.DeregisterTargetsInput{TargetGroupArn: aws.String(tgARN), Targets: batch}); err != nil {
			return fmt.Errorf("deregister targets from %s: %w", tgARN, err)
		}
	}
	if len(missing)+len(extra) > 0 {
		logr.FromContextOrDiscard(ctx).Info("reconciled targets", "targetGroup", tgARN, "registered", len(missing), "deregistered", len(extra))
	}
	return nil
}

// bindingPermissions computes, per security group of the targets' interfaces, the rules a
// binding needs (before aggregation).
func (d *Deployer) bindingPermissions(ctx context.Context, b Binding) (map[string][]rule, []Condition, error) {
	if b.Networking == nil || len(b.Networking.Ingress) == 0 || len(b.Targets) == 0 {
		return nil, nil, nil
	}
	groupsByTarget, missing, err := d.targetInterfaceGroups(ctx, b.TargetType, b.Targets)
	if err != nil {
		return nil, nil, err
	}
	var conds []Condition
	if len(missing) > 0 {
		conds = append(conds, Condition{Binding: b.Key, Reason: ReasonTargetInterfaceNotFound,
			Message: fmt.Sprintf("no network interface carries targets %s: no security group rules are written for them", strings.Join(missing, ", "))})
	}
	sgByTarget, err := d.chooseTargetGroups(ctx, groupsByTarget)
	if err != nil {
		return nil, conds, err
	}
	portsBySG := map[string][]int32{}
	for _, t := range b.Targets {
		if sg, ok := sgByTarget[t.ID]; ok {
			portsBySG[sg] = append(portsBySG[sg], t.Port)
		}
	}
	out := map[string][]rule{}
	for sg, ports := range portsBySG {
		rules, err := networkingRules(b.Networking, ports)
		if err != nil {
			return nil, conds, err
		}
		out[sg] = rules
	}
	return out, conds, nil
}

// networkingRules expands a binding's networking into rules: one per (peer, port); a missing
// port means all ports, a named port the ports of the targets.
func networkingRules(n *model.Networking, targetPorts []int32) ([]rule, error) {
	var out []rule
	for _, in := range n.Ingress {
		for _, peer := range in.From {
			for _, port := range in.Ports {
				base := rule{Protocol: normalizeProtocol(port.Protocol), Description: model.TargetGroupBindingRuleDescription}
				var ranges [][2]int32
				switch {
				case port.Port == nil:
					ranges = [][2]int32{{0, 65535}}
				case port.Port.Type == intstr.Int:
					ranges = [][2]int32{{port.Port.IntVal, port.Port.IntVal}}
				default: // named: the port each target is registered on
					for _, p := range targetPorts {
						ranges = append(ranges, [2]int32{p, p})
					}
				}
				for _, rg := range ranges {
					r := base
					r.From, r.To = rg[0], rg[1]
					switch {
					case peer.SecurityGroup != nil:
						if peer.SecurityGroup.GroupID.IsRef() {
							return nil, fmt.Errorf("networking peer %s is not resolved", peer.SecurityGroup.GroupID.Ref)
						}
						r.Group = peer.SecurityGroup.GroupID.Literal
					case peer.IPBlock != nil:
						c := canonicalCIDR(peer.IPBlock.CIDR)
						if p, err := netip.ParsePrefix(c); err == nil && p.Addr().Is6() {
							r.CIDRv6 = c
						} else {
							r.CIDRv4 = c
						}
					default:
						continue
					}
					out = append(out, r)
				}
			}
		}
	}
	return dedupeRules(out), nil
}

// targetInterfaceGroups returns the security groups of each target's interface: an instance's
// primary interface, or the interface carrying an IP address in the VPC. Targets no interface
// carries are returned in missing.
func (d *Deployer) targetInterfaceGroups(ctx context.Context, targetType model.TargetType, targets []Target) (map[string][]string, []string, error) {
	ids := make([]string, 0, len(targets))
	for _, t := range targets {
		if !slices.Contains(ids, t.ID) {
			ids = append(ids, t.ID)
		}
	}
	slices.Sort(ids)
	groups := map[string][]string{}
	for start := 0; start < len(ids); start += targetsBatch {
		batch := ids[start:min(start+targetsBatch, len(ids))]
		if targetType == model.TargetTypeInstance {
			in := &ec2.DescribeInstancesInput{Filters: []ec2types.Filter{filter("instance-id", batch...)}}
			p := ec2.NewDescribeInstancesPaginator(d.ec2, in)
			for p.HasMorePages() {
				page, err := p.NextPage(ctx)
				if err != nil {
					return nil, nil, fmt.Errorf("describe instances: %w", err)
				}
				for _, r := range page.Reservations {
					for _, inst := range r.Instances {
						groups[aws.ToString(inst.InstanceId)] = primaryInterfaceGroups(inst)
					}
				}
			}
			continue
		}
		in := &ec2.DescribeNetworkInterfacesInput{Filters: []ec2types.Filter{
			filter("vpc-id", d.opts.Model.VPCID), filter("addresses.private-ip-address", batch...)}}
		p := ec2.NewDescribeNetworkInterfacesPaginator(d.ec2, in)
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				return nil, nil, fmt.Errorf("describe network interfaces: %w", err)
			}
			for _, eni := range page.NetworkInterfaces {
				var sgs []string
				for _, g := range eni.Groups {
					sgs = append(sgs, aws.ToString(g.GroupId))
				}
				for _, a := range eni.PrivateIpAddresses {
					ip := aws.ToString(a.PrivateIpAddress)
					if _, seen := groups[ip]; !seen && slices.Contains(batch, ip) {
						groups[ip] = sgs
					}
				}
			}
		}
	}
	var missing []string
	for _, id := range ids {
		if len(groups[id]) == 0 {
			missing = append(missing, id)
			delete(groups, id)
		}
	}
	return groups, missing, nil
}

// primaryInterfaceGroups returns the groups of an instance's primary interface (device index 0).
func primaryInterfaceGroups(inst ec2types.Instance) []string {
	var sgs []string
	for _, eni := range inst.NetworkInterfaces {
		if eni.Attachment != nil && aws.ToInt32(eni.Attachment.DeviceIndex) != 0 {
			continue
		}
		for _, g := range eni.Groups {
			sgs = append(sgs, aws.ToString(g.GroupId))
		}
		return sgs
	}
	for _, g := range inst.SecurityGroups {
		sgs = append(sgs, aws.ToString(g.GroupId))
	}
	return sgs
}

// chooseTargetGroups picks, per target, the one group to write rules on: its only group, or the
// only one tagged kubernetes.io/cluster/<cluster> (and --service-target-eni-security-group-tags).
func (d *Deployer) chooseTargetGroups(ctx context.Context, groupsByTarget map[string][]string) (map[string]string, error) {
	var ambiguous []string
	for _, sgs := range groupsByTarget {
		if len(sgs) > 1 {
			for _, g := range sgs {
				if !slices.Contains(ambiguous, g) {
					ambiguous = append(ambiguous, g)
				}
			}
		}
	}
	tagsByGroup := map[string]map[string]string{}
	if len(ambiguous) > 0 {
		slices.Sort(ambiguous)
		out, err := d.ec2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: ambiguous})
		if err != nil {
			return nil, fmt.Errorf("describe target security groups: %w", err)
		}
		for _, g := range out.SecurityGroups {
			tagsByGroup[aws.ToString(g.GroupId)] = fromEC2Tags(g.Tags)
		}
	}
	clusterTag := clusterTagPrefix + d.opts.Model.ClusterName
	chosen := map[string]string{}
	for _, target := range sortedKeys(groupsByTarget) {
		sgs := groupsByTarget[target]
		if len(sgs) == 1 {
			chosen[target] = sgs[0]
			continue
		}
		var tagged []string
		for _, g := range sgs {
			tags := tagsByGroup[g]
			if _, ok := tags[clusterTag]; ok && hasTags(tags, d.opts.ServiceTargetENISGTags) {
				tagged = append(tagged, g)
			}
		}
		if len(tagged) != 1 {
			return nil, fmt.Errorf("expected exactly one securityGroup tagged with %s for target %s's interface, got %v (clusterName: %s)",
				clusterTag, target, tagged, d.opts.Model.ClusterName)
		}
		chosen[target] = tagged[0]
	}
	return chosen, nil
}

// networking holds the rules every binding needs per target security group, as the AWS
// controller's networking manager does, so that rules are aggregated across bindings and only
// what no binding needs is revoked.
type networking struct {
	mu sync.Mutex
	// byBinding: binding key → target security group → rules.
	byBinding map[string]map[string][]rule
	// byStack: stack ID → keys of its bindings.
	byStack map[string][]string
	// tracked are the groups rules were written on (or discovered); unused ones are cleaned.
	tracked    map[string]bool
	discovered bool
}

func newNetworking() *networking {
	return &networking{byBinding: map[string]map[string][]rule{}, byStack: map[string][]string{}, tracked: map[string]bool{}}
}

// forgetSource drops every rule whose source is group src (a group being deleted).
func (n *networking) forgetSource(src string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for key, perSG := range n.byBinding {
		for sg, rules := range perSG {
			n.byBinding[key][sg] = slices.DeleteFunc(slices.Clone(rules), func(r rule) bool { return r.Group == src })
		}
	}
}

// aggregate computes the rules per target group across all bindings: rules from a security
// group are merged into one port range per (protocol, source group); CIDR rules are kept one by
// one (restricted mode). With --disable-restricted-sg-rules identical rules are merged only.
func (n *networking) aggregate(restricted bool) map[string][]rule {
	perSG := map[string][]rule{}
	for _, key := range sortedKeys(n.byBinding) {
		for sg, rules := range n.byBinding[key] {
			perSG[sg] = append(perSG[sg], rules...)
		}
	}
	out := map[string][]rule{}
	for sg, rules := range perSG {
		if !restricted {
			out[sg] = dedupeRules(rules)
			continue
		}
		merged := map[string]rule{}
		var order []string
		var cidr []rule
		for _, r := range rules {
			if r.Group == "" {
				cidr = append(cidr, r)
				continue
			}
			k := r.Protocol + "|" + r.Group
			m, ok := merged[k]
			if !ok {
				merged[k] = r
				order = append(order, k)
				continue
			}
			m.From, m.To = min(m.From, r.From), max(m.To, r.To)
			merged[k] = m
		}
		var agg []rule
		for _, k := range order {
			agg = append(agg, merged[k])
		}
		out[sg] = append(agg, dedupeRules(cidr)...)
	}
	return out
}

// reconcileNetworking applies change to the bindings' rules and makes every target group's
// inbound rules match the aggregate. Rules are revoked only when the rules of every binding of
// the cluster are known; groups that no binding uses any more then lose the bindings' rules.
func (d *Deployer) reconcileNetworking(ctx context.Context, change func(*networking)) error {
	n := d.net
	n.mu.Lock()
	defer n.mu.Unlock()
	change(n)
	complete := true
	if d.opts.Bindings != nil {
		keys, err := d.opts.Bindings(ctx)
		if err != nil {
			return fail("list target group bindings", "", err)
		}
		for key := range n.byBinding {
			if !slices.Contains(keys, key) {
				delete(n.byBinding, key)
			}
		}
		for _, k := range keys {
			if _, ok := n.byBinding[k]; !ok {
				complete = false
			}
		}
	}
	desired := n.aggregate(!d.opts.Model.DisableRestrictedSGRules)
	for sg := range desired {
		n.tracked[sg] = true
	}
	if complete && !n.discovered {
		if err := d.discoverTargetGroups(ctx, n); err != nil {
			return err
		}
	}
	ids := sortedKeys(n.tracked)
	if !complete {
		ids = sortedKeys(desired)
	}
	if len(ids) == 0 {
		return nil
	}
	groups, err := d.describeExisting(ctx, ids)
	if err != nil {
		return fail("describe target security groups", "", err)
	}
	for _, id := range ids {
		sg, ok := groups[id]
		if !ok {
			delete(n.tracked, id)
			continue
		}
		if err := d.reconcileIngress(ctx, sg, desired[id], ownedByBinding, !complete); err != nil {
			return fail("reconcile target security group ingress", id, err)
		}
	}
	return nil
}

// discoverTargetGroups adds to the tracked groups those that may hold bindings' rules written
// before this process started: the VPC's groups tagged kubernetes.io/cluster/<cluster> (owned or
// shared), and the groups with rules from the cluster's own groups (backend and frontend).
func (d *Deployer) discoverTargetGroups(ctx context.Context, n *networking) error {
	tagged, err := d.findGroups(ctx, filter("tag:"+clusterTagPrefix+d.opts.Model.ClusterName, "owned", "shared"))
	if err != nil {
		return fail("discover target security groups", "", err)
	}
	for _, g := range tagged {
		n.tracked[aws.ToString(g.GroupId)] = true
	}
	own, err := d.findGroups(ctx, filter("tag:"+model.TagCluster, d.opts.Model.ClusterName))
	if err != nil {
		return fail("discover target security groups", "", err)
	}
	var sources []string
	for _, g := range own {
		sources = append(sources, aws.ToString(g.GroupId))
	}
	for start := 0; start < len(sources); start += targetsBatch {
		refs, err := d.findGroups(ctx, filter("ip-permission.group-id", sources[start:min(start+targetsBatch, len(sources))]...))
		if err != nil {
			return fail("discover target security groups", "", err)
		}
		for _, g := range refs {
			n.tracked[aws.ToString(g.GroupId)] = true
		}
	}
	n.discovered = true
	return nil
}

// describeExisting describes groups by ID, skipping those that no longer exist.
func (d *Deployer) describeExisting(ctx context.Context, ids []string) (map[string]ec2types.SecurityGroup, error) {
	out := map[string]ec2types.SecurityGroup{}
	resp, err := d.ec2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: ids})
	if err == nil {
		for _, g := range resp.SecurityGroups {
			out[aws.ToString(g.GroupId)] = g
		}
		return out, nil
	}
	if errorCode(err) != "InvalidGroup.NotFound" {
		return nil, err
	}
	for _, id := range ids {
		g, err := d.describeGroup(ctx, id)
		if errorCode(err) == "InvalidGroup.NotFound" {
			continue
		}
		if err != nil {
			return nil, err
		}
		out[id] = g
	}
	return out, nil
}

// deployBindings reconciles the networking and targets of a stack's bindings; bindings the
// stack had before and no longer has lose their rules.
func (d *Deployer) deployBindings(ctx context.Context, stack model.Stack, refs map[string]string, targets Targets) ([]Condition, error) {
	var conds []Condition
	perms := map[string]map[string][]rule{}
	bindings := make([]Binding, 0, len(stack.TargetGroupBindings))
	for _, tgb := range stack.TargetGroupBindings {
		tgARN, err := resolve(refs, tgb.Spec.TargetGroupARN)
		if err != nil {
			return nil, fail("resolve target group binding", tgb.ResourceID, err)
		}
		b := Binding{
			Key:            tgb.Namespace + "/" + tgb.Name,
			TargetGroupARN: tgARN,
			TargetType:     tgb.Spec.TargetType,
			Networking:     resolveNetworking(refs, tgb.Spec.Networking),
			Targets:        targets[tgb.ResourceID],
		}
		p, c, err := d.bindingPermissions(ctx, b)
		for i := range c {
			c[i].Binding = tgb.ResourceID
		}
		conds = append(conds, c...)
		if err != nil {
			return conds, fail("resolve target security groups", tgb.ResourceID, err)
		}
		perms[b.Key] = p
		bindings = append(bindings, b)
	}
	err := d.reconcileNetworking(ctx, func(n *networking) {
		for _, old := range n.byStack[stack.ID] {
			delete(n.byBinding, old)
		}
		maps.Copy(n.byBinding, perms)
		n.byStack[stack.ID] = slices.Sorted(maps.Keys(perms))
	})
	if err != nil {
		return conds, err
	}
	for i, b := range bindings {
		if err := d.reconcileTargets(ctx, b.TargetGroupARN, b.Targets); err != nil {
			return conds, fail("register targets", stack.TargetGroupBindings[i].ResourceID, err)
		}
	}
	return conds, nil
}

// resolveNetworking replaces the references of a binding's networking by their values.
func resolveNetworking(refs map[string]string, n *model.Networking) *model.Networking {
	if n == nil {
		return nil
	}
	out := &model.Networking{}
	for _, in := range n.Ingress {
		rule := model.NetworkingIngressRule{Ports: in.Ports}
		for _, p := range in.From {
			if p.SecurityGroup != nil && p.SecurityGroup.GroupID.IsRef() {
				if v, ok := refs[p.SecurityGroup.GroupID.Ref]; ok {
					p = model.NetworkingPeer{SecurityGroup: &model.PeerSecurityGroup{GroupID: model.Literal(v)}}
				}
			}
			rule.From = append(rule.From, p)
		}
		out.Ingress = append(out.Ingress, rule)
	}
	return out
}
