package deploy

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"

	"github.com/aws/aws-sdk-go-v2/aws"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"
	"github.com/go-logr/logr"

	"github.com/moatlb/moat/internal/controller/model"
)

// --- target groups ---

// synthesizeTargetGroups creates the stack's missing target groups and updates the others
// (health check, attributes, tags). A target group whose type, port, protocol or address type
// changed is replaced: the new one (its name hashes those fields, so it differs) is created now,
// and the old one is returned for deletion once no listener uses it, with those the stack no
// longer has.
func (d *Deployer) synthesizeTargetGroups(ctx context.Context, stack model.Stack, refs map[string]string) ([]string, error) {
	existing, err := d.listTargetGroups(ctx, d.stackTags(stack.ID))
	if err != nil {
		return nil, fail("find target groups", stack.ID, err)
	}
	byResource := map[string][]targetGroup{}
	for _, tg := range existing {
		id := tg.Tags[model.TagResource]
		byResource[id] = append(byResource[id], tg)
	}
	var stale []string
	for _, want := range stack.TargetGroups {
		var match *targetGroup
		for i, tg := range byResource[want.ResourceID] {
			if match == nil && !targetGroupNeedsReplacement(tg, want) {
				match = &byResource[want.ResourceID][i]
				continue
			}
			stale = append(stale, aws.ToString(tg.TargetGroupArn))
		}
		delete(byResource, want.ResourceID)
		var arn string
		if match == nil {
			if arn, err = d.createTargetGroup(ctx, want); err != nil {
				return nil, fail("create target group", want.Name, err)
			}
		} else {
			arn = aws.ToString(match.TargetGroupArn)
			if err := d.updateTargetGroup(ctx, *match, want); err != nil {
				return nil, fail("update target group", arn, err)
			}
		}
		refs[model.TargetGroupARNRef(want.ResourceID).Ref] = arn
	}
	for _, id := range sortedKeys(byResource) {
		for _, tg := range byResource[id] {
			stale = append(stale, aws.ToString(tg.TargetGroupArn))
		}
	}
	return stale, nil
}

func targetGroupNeedsReplacement(tg targetGroup, want model.TargetGroup) bool {
	return string(tg.TargetType) != string(want.TargetType) || aws.ToInt32(tg.Port) != want.Port ||
		string(tg.Protocol) != string(want.Protocol) ||
		(tg.IpAddressType != "" && string(tg.IpAddressType) != string(want.IPAddressType))
}

func isHTTP(p model.Protocol) bool { return p == model.ProtocolHTTP || p == model.ProtocolHTTPS }

func (d *Deployer) createTargetGroup(ctx context.Context, want model.TargetGroup) (string, error) {
	hc := want.HealthCheck
	in := &elbv2.CreateTargetGroupInput{
		Name:                       aws.String(want.Name),
		Protocol:                   elbtypes.ProtocolEnum(want.Protocol),
		Port:                       aws.Int32(want.Port),
		VpcId:                      aws.String(d.opts.Model.VPCID),
		TargetType:                 elbtypes.TargetTypeEnum(want.TargetType),
		HealthCheckProtocol:        elbtypes.ProtocolEnum(hc.Protocol),
		HealthCheckPort:            aws.String(hc.Port.String()),
		HealthCheckIntervalSeconds: aws.Int32(hc.IntervalSeconds),
		HealthCheckTimeoutSeconds:  aws.Int32(hc.TimeoutSeconds),
		HealthyThresholdCount:      aws.Int32(hc.HealthyThresholdCount),
		UnhealthyThresholdCount:    aws.Int32(hc.UnhealthyThresholdCount),
		Tags:                       elbTags(want.Tags),
	}
	if want.IPAddressType != "" {
		in.IpAddressType = elbtypes.TargetGroupIpAddressTypeEnum(want.IPAddressType)
	}
	if isHTTP(hc.Protocol) {
		in.HealthCheckPath = aws.String(hc.Path)
		if hc.Matcher != nil {
			in.Matcher = &elbtypes.Matcher{HttpCode: aws.String(hc.Matcher.HTTPCode)}
		}
	}
	out, err := d.elb.CreateTargetGroup(ctx, in)
	if err != nil {
		return "", err
	}
	if len(out.TargetGroups) != 1 {
		return "", fmt.Errorf("CreateTargetGroup returned %d target groups", len(out.TargetGroups))
	}
	arn := aws.ToString(out.TargetGroups[0].TargetGroupArn)
	d.tags.put(arn, maps.Clone(want.Tags))
	logr.FromContextOrDiscard(ctx).Info("created target group", "name", want.Name, "arn", arn)
	if err := d.reconcileTargetGroupAttributes(ctx, arn, want.Attributes); err != nil {
		return "", err
	}
	return arn, nil
}

func (d *Deployer) updateTargetGroup(ctx context.Context, tg targetGroup, want model.TargetGroup) error {
	arn := aws.ToString(tg.TargetGroupArn)
	if err := d.reconcileELBTags(ctx, arn, tg.Tags, want.Tags); err != nil {
		return err
	}
	if in := healthCheckChange(tg.TargetGroup, want.HealthCheck); in != nil {
		in.TargetGroupArn = aws.String(arn)
		if _, err := d.elb.ModifyTargetGroup(ctx, in); err != nil {
			return fmt.Errorf("modify health check: %w", err)
		}
		logr.FromContextOrDiscard(ctx).Info("modified target group health check", "arn", arn)
	}
	return d.reconcileTargetGroupAttributes(ctx, arn, want.Attributes)
}

// healthCheckChange returns the ModifyTargetGroup request that makes the health check the
// desired one, or nil when it already is.
func healthCheckChange(tg elbtypes.TargetGroup, hc model.HealthCheck) *elbv2.ModifyTargetGroupInput {
	same := string(tg.HealthCheckProtocol) == string(hc.Protocol) &&
		aws.ToString(tg.HealthCheckPort) == hc.Port.String() &&
		aws.ToInt32(tg.HealthCheckIntervalSeconds) == hc.IntervalSeconds &&
		aws.ToInt32(tg.HealthCheckTimeoutSeconds) == hc.TimeoutSeconds &&
		aws.ToInt32(tg.HealthyThresholdCount) == hc.HealthyThresholdCount &&
		aws.ToInt32(tg.UnhealthyThresholdCount) == hc.UnhealthyThresholdCount
	if isHTTP(hc.Protocol) {
		same = same && aws.ToString(tg.HealthCheckPath) == hc.Path
		if hc.Matcher != nil {
			same = same && tg.Matcher != nil && aws.ToString(tg.Matcher.HttpCode) == hc.Matcher.HTTPCode
		}
	}
	if same {
		return nil
	}
	in := &elbv2.ModifyTargetGroupInput{
		HealthCheckProtocol:        elbtypes.ProtocolEnum(hc.Protocol),
		HealthCheckPort:            aws.String(hc.Port.String()),
		HealthCheckIntervalSeconds: aws.Int32(hc.IntervalSeconds),
		HealthCheckTimeoutSeconds:  aws.Int32(hc.TimeoutSeconds),
		HealthyThresholdCount:      aws.Int32(hc.HealthyThresholdCount),
		UnhealthyThresholdCount:    aws.Int32(hc.UnhealthyThresholdCount),
	}
	if isHTTP(hc.Protocol) {
		in.HealthCheckPath = aws.String(hc.Path)
		if hc.Matcher != nil {
			in.Matcher = &elbtypes.Matcher{HttpCode: aws.String(hc.Matcher.HTTPCode)}
		}
	}
	return in
}

// attributeChanges returns the desired attributes whose current value differs. Attributes the
// stack does not set are left as they are, as the AWS controller does.
func attributeChanges(desired []model.Attribute, current map[string]string) map[string]string {
	out := map[string]string{}
	for _, a := range desired {
		if v, ok := current[a.Key]; !ok || v != a.Value {
			out[a.Key] = a.Value
		}
	}
	return out
}

func (d *Deployer) reconcileTargetGroupAttributes(ctx context.Context, arn string, desired []model.Attribute) error {
	return reconcileAttributes(ctx, "target group", arn, desired,
		func() ([]elbtypes.TargetGroupAttribute, error) {
			out, err := d.elb.DescribeTargetGroupAttributes(ctx, &elbv2.DescribeTargetGroupAttributesInput{TargetGroupArn: aws.String(arn)})
			if err != nil {
				return nil, err
			}
			return out.Attributes, nil
		},
		func(a elbtypes.TargetGroupAttribute) (*string, *string) { return a.Key, a.Value },
		func(k, v string) elbtypes.TargetGroupAttribute {
			return elbtypes.TargetGroupAttribute{Key: aws.String(k), Value: aws.String(v)}
		},
		func(attrs []elbtypes.TargetGroupAttribute) error {
			_, err := d.elb.ModifyTargetGroupAttributes(ctx, &elbv2.ModifyTargetGroupAttributesInput{TargetGroupArn: aws.String(arn), Attributes: attrs})
			return err
		})
}

// reconcileAttributes changes only the attributes of a resource whose current value differs from
// the desired one: read them with describe, write the difference (in key order) with modify.
// The three ELBv2 attribute kinds share this; only their SDK types differ.
func reconcileAttributes[A any](ctx context.Context, kind, arn string, desired []model.Attribute,
	describe func() ([]A, error), keyValue func(A) (*string, *string), attribute func(k, v string) A, modify func([]A) error) error {
	if len(desired) == 0 {
		return nil
	}
	got, err := describe()
	if err != nil {
		return fmt.Errorf("describe %s attributes: %w", kind, err)
	}
	current := map[string]string{}
	for _, a := range got {
		k, v := keyValue(a)
		current[aws.ToString(k)] = aws.ToString(v)
	}
	change := attributeChanges(desired, current)
	if len(change) == 0 {
		return nil
	}
	var attrs []A
	for _, k := range sortedKeys(change) {
		attrs = append(attrs, attribute(k, change[k]))
	}
	if err := modify(attrs); err != nil {
		return fmt.Errorf("modify %s attributes %v: %w", kind, change, err)
	}
	logr.FromContextOrDiscard(ctx).Info("modified attributes", "kind", kind, "arn", arn, "change", change)
	return nil
}

// --- load balancer ---

// synthesizeLoadBalancer creates the stack's load balancer or updates it in place (tags,
// security groups, subnets, IP address type, attributes). One whose scheme changed is deleted
// first and recreated, as AWS cannot change a scheme. It reports whether a load balancer of the
// stack may have had the shared backend group before (so that its release is checked).
func (d *Deployer) synthesizeLoadBalancer(ctx context.Context, stack model.Stack, refs map[string]string) (elbtypes.LoadBalancer, bool, error) {
	want := stack.LoadBalancer
	groups, err := resolveAll(refs, want.SecurityGroups)
	if err != nil {
		return elbtypes.LoadBalancer{}, false, fail("resolve load balancer security groups", want.Name, err)
	}
	existing, err := d.listLoadBalancers(ctx, d.stackTags(stack.ID))
	if err != nil {
		return elbtypes.LoadBalancer{}, false, fail("find load balancer", stack.ID, err)
	}
	d.backend.mu.Lock()
	backendID := d.backend.id
	d.backend.mu.Unlock()
	hadBackend := false
	var match *loadBalancer
	var remove []string
	for i, lb := range existing {
		// Whether the backend group may have been detached: it was (memoized), or, after a
		// restart, any group is being detached.
		hadBackend = hadBackend || (backendID != "" && slices.Contains(lb.SecurityGroups, backendID)) ||
			slices.ContainsFunc(lb.SecurityGroups, func(g string) bool { return !slices.Contains(groups, g) })
		if match == nil && lb.Tags[model.TagResource] == want.ResourceID && string(lb.Scheme) == string(want.Scheme) {
			match = &existing[i]
			continue
		}
		remove = append(remove, aws.ToString(lb.LoadBalancerArn))
	}
	// Delete first: a replacement may take the same name (the name annotation).
	for _, arn := range remove {
		if err := d.deleteLoadBalancer(ctx, arn); err != nil {
			return elbtypes.LoadBalancer{}, hadBackend, err
		}
	}
	if match == nil {
		lb, err := d.createLoadBalancer(ctx, want, groups)
		return lb, hadBackend, err
	}
	lb, err := d.updateLoadBalancer(ctx, *match, want, groups)
	return lb, hadBackend, err
}

func subnetMappings(ms []model.SubnetMapping) []elbtypes.SubnetMapping {
	out := make([]elbtypes.SubnetMapping, 0, len(ms))
	for _, m := range ms {
		sm := elbtypes.SubnetMapping{SubnetId: aws.String(m.SubnetID)}
		if m.AllocationID != "" {
			sm.AllocationId = aws.String(m.AllocationID)
		}
		if m.PrivateIPv4Address != "" {
			sm.PrivateIPv4Address = aws.String(m.PrivateIPv4Address)
		}
		if m.IPv6Address != "" {
			sm.IPv6Address = aws.String(m.IPv6Address)
		}
		if m.SourceNatIPv6Prefix != "" {
			sm.SourceNatIpv6Prefix = aws.String(m.SourceNatIPv6Prefix)
		}
		out = append(out, sm)
	}
	return out
}

func (d *Deployer) createLoadBalancer(ctx context.Context, want *model.LoadBalancer, groups []string) (elbtypes.LoadBalancer, error) {
	in := &elbv2.CreateLoadBalancerInput{
		Name:           aws.String(want.Name),
		Type:           elbtypes.LoadBalancerTypeEnumNetwork,
		Scheme:         elbtypes.LoadBalancerSchemeEnum(want.Scheme),
		IpAddressType:  elbtypes.IpAddressType(want.IPAddressType),
		SubnetMappings: subnetMappings(want.SubnetMapping),
		SecurityGroups: groups,
		Tags:           elbTags(want.Tags),
	}
	if want.EnablePrefixForIPv6SourceNat != "" {
		in.EnablePrefixForIpv6SourceNat = elbtypes.EnablePrefixForIpv6SourceNatEnum(want.EnablePrefixForIPv6SourceNat)
	}
	out, err := d.elb.CreateLoadBalancer(ctx, in)
	if err != nil {
		return elbtypes.LoadBalancer{}, fail("create load balancer", want.Name, err)
	}
	if len(out.LoadBalancers) != 1 {
		return elbtypes.LoadBalancer{}, fail("create load balancer", want.Name, fmt.Errorf("got %d load balancers", len(out.LoadBalancers)))
	}
	lb := out.LoadBalancers[0]
	arn := aws.ToString(lb.LoadBalancerArn)
	d.tags.put(arn, maps.Clone(want.Tags))
	logr.FromContextOrDiscard(ctx).Info("created load balancer", "name", want.Name, "arn", arn)
	if err := d.reconcileLoadBalancerAttributes(ctx, arn, want.Attributes); err != nil {
		return lb, fail("load balancer attributes", arn, err)
	}
	if err := d.reconcileCapacity(ctx, arn, want.MinimumCapacity); err != nil {
		return lb, fail("load balancer capacity reservation", arn, err)
	}
	if pl := want.SecurityGroupsInboundRulesOnPrivateLink; pl != "" && len(groups) > 0 && aws.ToString(lb.EnforceSecurityGroupInboundRulesOnPrivateLinkTraffic) != pl {
		if err := d.setSecurityGroups(ctx, arn, groups, pl); err != nil {
			return lb, err
		}
	}
	return lb, nil
}

func (d *Deployer) setSecurityGroups(ctx context.Context, arn string, groups []string, privateLink string) error {
	in := &elbv2.SetSecurityGroupsInput{LoadBalancerArn: aws.String(arn), SecurityGroups: groups}
	if privateLink != "" {
		in.EnforceSecurityGroupInboundRulesOnPrivateLinkTraffic = elbtypes.EnforceSecurityGroupInboundRulesOnPrivateLinkTrafficEnum(privateLink)
	}
	if _, err := d.elb.SetSecurityGroups(ctx, in); err != nil {
		return fail("set load balancer security groups", arn, err)
	}
	logr.FromContextOrDiscard(ctx).Info("set load balancer security groups", "arn", arn, "groups", groups)
	return nil
}

func (d *Deployer) updateLoadBalancer(ctx context.Context, lb loadBalancer, want *model.LoadBalancer, groups []string) (elbtypes.LoadBalancer, error) {
	arn := aws.ToString(lb.LoadBalancerArn)
	log := logr.FromContextOrDiscard(ctx)
	if err := d.reconcileELBTags(ctx, arn, lb.Tags, want.Tags); err != nil {
		return lb.LoadBalancer, fail("tag load balancer", arn, err)
	}
	pl := want.SecurityGroupsInboundRulesOnPrivateLink
	plDrift := pl != "" && len(groups) > 0 && aws.ToString(lb.EnforceSecurityGroupInboundRulesOnPrivateLinkTraffic) != pl
	if !sameSet(lb.SecurityGroups, groups) || plDrift {
		if len(lb.SecurityGroups) == 0 && len(groups) > 0 {
			return lb.LoadBalancer, fail("set load balancer security groups", arn,
				fmt.Errorf("the load balancer was created without security groups and AWS cannot add them: %v", groups))
		}
		if err := d.setSecurityGroups(ctx, arn, groups, pl); err != nil {
			return lb.LoadBalancer, err
		}
		lb.SecurityGroups = groups
	}
	var current []string
	for _, az := range lb.AvailabilityZones {
		current = append(current, aws.ToString(az.SubnetId))
	}
	var desired []string
	for _, m := range want.SubnetMapping {
		desired = append(desired, m.SubnetID)
	}
	// The source NAT setting travels with the subnets (SetSubnets), as the AWS controller sends it.
	sourceNAT := want.EnablePrefixForIPv6SourceNat
	sourceNATDrift := sourceNAT != "" && string(lb.EnablePrefixForIpv6SourceNat) != sourceNAT
	if !sameSet(current, desired) || sourceNATDrift {
		in := &elbv2.SetSubnetsInput{LoadBalancerArn: aws.String(arn), SubnetMappings: subnetMappings(want.SubnetMapping)}
		if sourceNAT != "" {
			in.EnablePrefixForIpv6SourceNat = elbtypes.EnablePrefixForIpv6SourceNatEnum(sourceNAT)
		}
		if _, err := d.elb.SetSubnets(ctx, in); err != nil {
			return lb.LoadBalancer, fail("set load balancer subnets", arn, err)
		}
		log.Info("set load balancer subnets", "arn", arn, "subnets", desired, "enablePrefixForIpv6SourceNat", sourceNAT)
	}
	if want.IPAddressType != "" && string(lb.IpAddressType) != string(want.IPAddressType) {
		if _, err := d.elb.SetIpAddressType(ctx, &elbv2.SetIpAddressTypeInput{LoadBalancerArn: aws.String(arn), IpAddressType: elbtypes.IpAddressType(want.IPAddressType)}); err != nil {
			return lb.LoadBalancer, fail("set load balancer IP address type", arn, err)
		}
		log.Info("set load balancer IP address type", "arn", arn, "type", want.IPAddressType)
	}
	if err := d.reconcileLoadBalancerAttributes(ctx, arn, want.Attributes); err != nil {
		return lb.LoadBalancer, fail("load balancer attributes", arn, err)
	}
	if err := d.reconcileCapacity(ctx, arn, want.MinimumCapacity); err != nil {
		return lb.LoadBalancer, fail("load balancer capacity reservation", arn, err)
	}
	return lb.LoadBalancer, nil
}

// reconcileCapacity sets the minimum capacity the minimum-load-balancer-capacity annotation asks
// for. Without the annotation the reservation is left as it is (no call is made).
func (d *Deployer) reconcileCapacity(ctx context.Context, arn string, want *model.Capacity) error {
	if want == nil {
		return nil
	}
	out, err := d.elb.DescribeCapacityReservation(ctx, &elbv2.DescribeCapacityReservationInput{LoadBalancerArn: aws.String(arn)})
	if err != nil {
		return fmt.Errorf("describe capacity reservation: %w", err)
	}
	if c := out.MinimumLoadBalancerCapacity; c != nil && aws.ToInt32(c.CapacityUnits) == want.CapacityUnits {
		return nil
	}
	if _, err := d.elb.ModifyCapacityReservation(ctx, &elbv2.ModifyCapacityReservationInput{LoadBalancerArn: aws.String(arn),
		MinimumLoadBalancerCapacity: &elbtypes.MinimumLoadBalancerCapacity{CapacityUnits: aws.Int32(want.CapacityUnits)}}); err != nil {
		return fmt.Errorf("modify capacity reservation: %w", err)
	}
	logr.FromContextOrDiscard(ctx).Info("modified load balancer capacity reservation", "arn", arn, "capacityUnits", want.CapacityUnits)
	return nil
}

func lbAttributes(m map[string]string) []elbtypes.LoadBalancerAttribute {
	var out []elbtypes.LoadBalancerAttribute
	for _, k := range sortedKeys(m) {
		out = append(out, elbtypes.LoadBalancerAttribute{Key: aws.String(k), Value: aws.String(m[k])})
	}
	return out
}

func (d *Deployer) reconcileLoadBalancerAttributes(ctx context.Context, arn string, desired []model.Attribute) error {
	return reconcileAttributes(ctx, "load balancer", arn, desired,
		func() ([]elbtypes.LoadBalancerAttribute, error) {
			out, err := d.elb.DescribeLoadBalancerAttributes(ctx, &elbv2.DescribeLoadBalancerAttributesInput{LoadBalancerArn: aws.String(arn)})
			if err != nil {
				return nil, err
			}
			return out.Attributes, nil
		},
		func(a elbtypes.LoadBalancerAttribute) (*string, *string) { return a.Key, a.Value },
		func(k, v string) elbtypes.LoadBalancerAttribute {
			return elbtypes.LoadBalancerAttribute{Key: aws.String(k), Value: aws.String(v)}
		},
		func(attrs []elbtypes.LoadBalancerAttribute) error {
			_, err := d.elb.ModifyLoadBalancerAttributes(ctx, &elbv2.ModifyLoadBalancerAttributesInput{LoadBalancerArn: aws.String(arn), Attributes: attrs})
			return err
		})
}

// --- listeners ---

// synthesizeListeners makes the load balancer's listeners the stack's, matched by port: the
// extra ones are deleted first (freeing their ports), the missing ones created, the others
// modified where their protocol or target group differs; then tags and attributes.
func (d *Deployer) synthesizeListeners(ctx context.Context, stack model.Stack, lbARN string, refs map[string]string) error {
	var existing []elbtypes.Listener
	p := elbv2.NewDescribeListenersPaginator(d.elb, &elbv2.DescribeListenersInput{LoadBalancerArn: aws.String(lbARN)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return fail("describe listeners", lbARN, err)
		}
		existing = append(existing, page.Listeners...)
	}
	wanted := map[int32]model.Listener{}
	for _, l := range stack.Listeners {
		wanted[l.Port] = l
	}
	byPort := map[int32]elbtypes.Listener{}
	for _, l := range existing {
		port := aws.ToInt32(l.Port)
		if _, ok := wanted[port]; !ok {
			if _, err := d.elb.DeleteListener(ctx, &elbv2.DeleteListenerInput{ListenerArn: l.ListenerArn}); err != nil && errorCode(err) != "ListenerNotFound" {
				return fail("delete listener", aws.ToString(l.ListenerArn), err)
			}
			d.tags.drop(aws.ToString(l.ListenerArn))
			logr.FromContextOrDiscard(ctx).Info("deleted listener", "port", port)
			continue
		}
		byPort[port] = l
	}
	var arns []string
	for _, l := range byPort {
		arns = append(arns, aws.ToString(l.ListenerArn))
	}
	slices.Sort(arns)
	tags, err := d.elbTagsOf(ctx, arns)
	if err != nil {
		return fail("describe listener tags", lbARN, err)
	}
	for _, want := range stack.Listeners {
		actions, tgARNs, err := listenerActions(refs, want.DefaultActions)
		if err != nil {
			return fail("resolve listener", want.ResourceID, err)
		}
		cur, ok := byPort[want.Port]
		var arn string
		if !ok {
			in := &elbv2.CreateListenerInput{
				LoadBalancerArn: aws.String(lbARN),
				Port:            aws.Int32(want.Port),
				Protocol:        elbtypes.ProtocolEnum(want.Protocol),
				DefaultActions:  actions,
				Tags:            elbTags(want.Tags),
			}
			in.Certificates, in.SslPolicy, in.AlpnPolicy = listenerTLS(want)
			out, err := d.elb.CreateListener(ctx, in)
			if err != nil {
				return fail("create listener", strconv.Itoa(int(want.Port)), err)
			}
			arn = aws.ToString(out.Listeners[0].ListenerArn)
			d.tags.put(arn, maps.Clone(want.Tags))
			logr.FromContextOrDiscard(ctx).Info("created listener", "port", want.Port, "arn", arn)
		} else {
			arn = aws.ToString(cur.ListenerArn)
			if err := d.reconcileELBTags(ctx, arn, tags[arn], want.Tags); err != nil {
				return fail("tag listener", arn, err)
			}
			if string(cur.Protocol) != string(want.Protocol) || !slices.Equal(forwardTargets(cur.DefaultActions), tgARNs) || tlsDrift(cur, want) {
				in := &elbv2.ModifyListenerInput{
					ListenerArn:    aws.String(arn),
					Port:           aws.Int32(want.Port),
					Protocol:       elbtypes.ProtocolEnum(want.Protocol),
					DefaultActions: actions,
				}
				in.Certificates, in.SslPolicy, in.AlpnPolicy = listenerTLS(want)
				if _, err := d.elb.ModifyListener(ctx, in); err != nil {
					return fail("modify listener", arn, err)
				}
				logr.FromContextOrDiscard(ctx).Info("modified listener", "port", want.Port, "arn", arn)
			}
		}
		if want.Protocol == model.ProtocolTLS {
			// The AWS controller sets no attributes on TLS listeners; their extra certificates
			// are listener certificates.
			if err := d.reconcileExtraCertificates(ctx, arn, want.Certificates[1:]); err != nil {
				return fail("listener certificates", arn, err)
			}
			continue
		}
		if err := d.reconcileListenerAttributes(ctx, arn, want.Attributes); err != nil {
			return fail("listener attributes", arn, err)
		}
	}
	return nil
}

// listenerTLS is a listener's TLS settings as CreateListener and ModifyListener take them: the
// default certificate only (the others are added as listener certificates), the SSL policy and
// the ALPN policy; nothing for other protocols.
func listenerTLS(l model.Listener) ([]elbtypes.Certificate, *string, []string) {
	if l.Protocol != model.ProtocolTLS || len(l.Certificates) == 0 {
		return nil, nil, nil
	}
	return []elbtypes.Certificate{{CertificateArn: aws.String(l.Certificates[0])}}, aws.String(l.SSLPolicy), l.ALPNPolicy
}

// tlsDrift reports whether a TLS listener's default certificate, SSL policy or ALPN policy
// differs from the stack's.
func tlsDrift(cur elbtypes.Listener, want model.Listener) bool {
	if want.Protocol != model.ProtocolTLS {
		return false
	}
	var defaultCert string
	if len(cur.Certificates) > 0 {
		defaultCert = aws.ToString(cur.Certificates[0].CertificateArn)
	}
	return defaultCert != want.Certificates[0] || aws.ToString(cur.SslPolicy) != want.SSLPolicy ||
		(len(want.ALPNPolicy) > 0 && !slices.Equal(cur.AlpnPolicy, want.ALPNPolicy))
}

// reconcileExtraCertificates makes a TLS listener's non-default certificates the wanted ones.
func (d *Deployer) reconcileExtraCertificates(ctx context.Context, arn string, want []string) error {
	var have []string
	p := elbv2.NewDescribeListenerCertificatesPaginator(d.elb, &elbv2.DescribeListenerCertificatesInput{ListenerArn: aws.String(arn)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return err
		}
		for _, c := range page.Certificates {
			if !aws.ToBool(c.IsDefault) {
				have = append(have, aws.ToString(c.CertificateArn))
			}
		}
	}
	certs := func(arns []string) []elbtypes.Certificate {
		var out []elbtypes.Certificate
		for _, a := range arns {
			out = append(out, elbtypes.Certificate{CertificateArn: aws.String(a)})
		}
		return out
	}
	var add, remove []string
	for _, a := range want {
		if !slices.Contains(have, a) && !slices.Contains(add, a) {
			add = append(add, a)
		}
	}
	for _, a := range have {
		if !slices.Contains(want, a) {
			remove = append(remove, a)
		}
	}
	if len(add) > 0 {
		if _, err := d.elb.AddListenerCertificates(ctx, &elbv2.AddListenerCertificatesInput{ListenerArn: aws.String(arn), Certificates: certs(add)}); err != nil {
			return err
		}
	}
	if len(remove) > 0 {
		if _, err := d.elb.RemoveListenerCertificates(ctx, &elbv2.RemoveListenerCertificatesInput{ListenerArn: aws.String(arn), Certificates: certs(remove)}); err != nil {
			return err
		}
	}
	if len(add)+len(remove) > 0 {
		logr.FromContextOrDiscard(ctx).Info("reconciled listener certificates", "arn", arn, "added", len(add), "removed", len(remove))
	}
	return nil
}

// listenerActions resolves a listener's forward actions, and returns the sorted target groups
// they forward to.
func listenerActions(refs map[string]string, actions []model.Action) ([]elbtypes.Action, []string, error) {
	var out []elbtypes.Action
	var arns []string
	for _, a := range actions {
		act := elbtypes.Action{Type: elbtypes.ActionTypeEnum(a.Type)}
		if a.ForwardConfig != nil {
			fc := &elbtypes.ForwardActionConfig{}
			for _, tg := range a.ForwardConfig.TargetGroups {
				arn, err := resolve(refs, tg.TargetGroupARN)
				if err != nil {
					return nil, nil, err
				}
				fc.TargetGroups = append(fc.TargetGroups, elbtypes.TargetGroupTuple{TargetGroupArn: aws.String(arn), Weight: tg.Weight})
				arns = append(arns, arn)
			}
			act.ForwardConfig = fc
			if len(fc.TargetGroups) == 1 {
				act.TargetGroupArn = fc.TargetGroups[0].TargetGroupArn
			}
		}
		out = append(out, act)
	}
	slices.Sort(arns)
	return out, arns, nil
}

// forwardTargets returns the sorted target groups a listener's actions forward to.
func forwardTargets(actions []elbtypes.Action) []string {
	set := map[string]bool{}
	for _, a := range actions {
		if a.ForwardConfig != nil && len(a.ForwardConfig.TargetGroups) > 0 {
			for _, tg := range a.ForwardConfig.TargetGroups {
				set[aws.ToString(tg.TargetGroupArn)] = true
			}
		} else if a.TargetGroupArn != nil {
			set[aws.ToString(a.TargetGroupArn)] = true
		}
	}
	return slices.Sorted(maps.Keys(set))
}

func (d *Deployer) reconcileListenerAttributes(ctx context.Context, arn string, desired []model.Attribute) error {
	return reconcileAttributes(ctx, "listener", arn, desired,
		func() ([]elbtypes.ListenerAttribute, error) {
			out, err := d.elb.DescribeListenerAttributes(ctx, &elbv2.DescribeListenerAttributesInput{ListenerArn: aws.String(arn)})
			if err != nil {
				return nil, err
			}
			return out.Attributes, nil
		},
		func(a elbtypes.ListenerAttribute) (*string, *string) { return a.Key, a.Value },
		func(k, v string) elbtypes.ListenerAttribute {
			return elbtypes.ListenerAttribute{Key: aws.String(k), Value: aws.String(v)}
		},
		func(attrs []elbtypes.ListenerAttribute) error {
			_, err := d.elb.ModifyListenerAttributes(ctx, &elbv2.ModifyListenerAttributesInput{ListenerArn: aws.String(arn), Attributes: attrs})
			return err
		})
}
