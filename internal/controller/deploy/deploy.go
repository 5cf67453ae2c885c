package deploy

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	"github.com/go-logr/logr"

	"github.com/moatlb/moat/internal/controller/model"
)

// Deploy makes AWS match the stack, in the AWS controller's synthesizer order: the managed
// security group, target groups, the load balancer, listeners, then the bindings (targets and
// rules on the targets' groups); then, in reverse, what the stack no longer has: stale target
// groups and security groups, and the claim on the shared backend group. An empty stack (no load
// balancer) deletes everything the Service owned. A failure is returned as is, with what was done
// left in place: the next deploy carries on from there.
func (d *Deployer) Deploy(ctx context.Context, stack model.Stack, targets Targets) (res Result, err error) {
	defer func() {
		if err != nil {
			// The memoized backend group may be what failed (deleted out of band): look it up
			// again next time.
			d.backend.mu.Lock()
			d.backend.id = ""
			d.backend.mu.Unlock()
		}
	}()
	if stack.ID == "" {
		return Result{}, fail("deploy", "", fmt.Errorf("stack has no ID"))
	}
	if stack.LoadBalancer == nil {
		return Result{}, d.Delete(ctx, stack.ID)
	}
	log := logr.FromContextOrDiscard(ctx).WithValues("stack", stack.ID)
	ctx = logr.NewContext(ctx, log)
	refs := map[string]string{}

	if stack.BackendSecurityGroup != nil {
		// Keep the group claimed while this stack uses it (Resolve claims it too).
		d.backend.mu.Lock()
		d.backend.claims[stack.ID] = true
		d.backend.mu.Unlock()
	}

	managedID, staleGroups, err := d.synthesizeSecurityGroups(ctx, stack)
	if err != nil {
		return Result{}, err
	}
	if managedID != "" {
		refs[model.ManagedSecurityGroupIDRef.Ref] = managedID
	}

	staleTGs, err := d.synthesizeTargetGroups(ctx, stack, refs)
	if err != nil {
		return Result{}, err
	}

	lb, hadBackend, err := d.synthesizeLoadBalancer(ctx, stack, refs)
	if err != nil {
		return Result{}, err
	}
	refs[model.LoadBalancerARNRef.Ref] = aws.ToString(lb.LoadBalancerArn)

	if err := d.synthesizeListeners(ctx, stack, aws.ToString(lb.LoadBalancerArn), refs); err != nil {
		return Result{}, err
	}

	conds, err := d.deployBindings(ctx, stack, refs, targets)
	if err != nil {
		return Result{Conditions: conds}, err
	}

	// Post-synthesis, in reverse order: target groups no listener uses any more, then
	// security groups the load balancer no longer has.
	for _, arn := range staleTGs {
		if err := d.deleteTargetGroup(ctx, arn); err != nil {
			return Result{Conditions: conds}, err
		}
	}
	if err := d.deleteStaleGroups(ctx, staleGroups); err != nil {
		return Result{Conditions: conds}, err
	}
	if stack.BackendSecurityGroup == nil {
		if err := d.releaseBackendSecurityGroup(ctx, stack.ID, hadBackend); err != nil {
			return Result{Conditions: conds}, err
		}
	}

	res = Result{
		DNSName:         strings.ToLower(aws.ToString(lb.DNSName)),
		LoadBalancerARN: aws.ToString(lb.LoadBalancerArn),
		TargetGroupARNs: map[string]string{},
		Conditions:      conds,
	}
	for _, tg := range stack.TargetGroups {
		res.TargetGroupARNs[tg.ResourceID] = refs[model.TargetGroupARNRef(tg.ResourceID).Ref]
	}
	res.SecurityGroups, _ = resolveAll(refs, stack.LoadBalancer.SecurityGroups)
	return res, nil
}

// resolve returns a token's value: its literal, or the value a synthesizer recorded for its
// reference.
func resolve(refs map[string]string, t model.Token) (string, error) {
	if !t.IsRef() {
		return t.Literal, nil
	}
	v, ok := refs[t.Ref]
	if !ok {
		return "", fmt.Errorf("unresolved reference %s", t.Ref)
	}
	return v, nil
}

func resolveAll(refs map[string]string, tokens []model.Token) ([]string, error) {
	var out []string
	for _, t := range tokens {
		v, err := resolve(refs, t)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// Delete removes everything the stack ("<namespace>/<name>") owns — the bindings' rules, the
// load balancer (and with it its listeners), target groups and the managed security group — and
// deletes the shared backend group once no load balancer of the cluster uses it. It finds
// everything by tags, so it is idempotent and can be re-run after a crash at any point.
func (d *Deployer) Delete(ctx context.Context, stackID string) error {
	log := logr.FromContextOrDiscard(ctx).WithValues("stack", stackID)
	ctx = logr.NewContext(ctx, log)
	tags := d.stackTags(stackID)

	tgs, err := d.listTargetGroups(ctx, tags)
	if err != nil {
		return fail("find target groups", stackID, err)
	}
	groups, err := d.findGroups(ctx, tagFilters(tags)...)
	if err != nil {
		return fail("find security groups", stackID, err)
	}
	// The bindings' rules: drop them from the aggregate (revoked once every binding is known).
	ns, _, _ := strings.Cut(stackID, "/")
	err = d.reconcileNetworking(ctx, func(n *networking) {
		for _, key := range n.byStack[stackID] {
			delete(n.byBinding, key)
		}
		delete(n.byStack, stackID)
		for _, tg := range tgs {
			delete(n.byBinding, ns+"/"+aws.ToString(tg.TargetGroupName))
		}
	})
	if err != nil {
		return err
	}
	// Rules from the managed group (the source of target rules without a backend group) would
	// keep it from being deleted: revoke them now.
	for _, g := range groups {
		id := aws.ToString(g.GroupId)
		d.net.forgetSource(id)
		if err := d.revokeReferencing(ctx, id, ownedByBinding); err != nil {
			return fail("revoke rules from security group", id, err)
		}
	}

	lbs, err := d.listLoadBalancers(ctx, tags)
	if err != nil {
		return fail("find load balancer", stackID, err)
	}
	for _, lb := range lbs {
		if err := d.deleteLoadBalancer(ctx, aws.ToString(lb.LoadBalancerArn)); err != nil {
			return err
		}
	}
	for _, tg := range tgs {
		if err := d.deleteTargetGroup(ctx, aws.ToString(tg.TargetGroupArn)); err != nil {
			return err
		}
	}
	var ids []string
	for _, g := range groups {
		ids = append(ids, aws.ToString(g.GroupId))
	}
	if err := d.deleteStaleGroups(ctx, ids); err != nil {
		return err
	}
	return d.releaseBackendSecurityGroup(ctx, stackID, true)
}

// deleteLoadBalancer deletes a load balancer (its listeners go with it). Deletion protection set
// out of band is turned off first, as the AWS controller does.
func (d *Deployer) deleteLoadBalancer(ctx context.Context, arn string) error {
	del := func() error {
		_, err := d.elb.DeleteLoadBalancer(ctx, &elbv2.DeleteLoadBalancerInput{LoadBalancerArn: aws.String(arn)})
		return err
	}
	err := del()
	if errorCode(err) == "OperationNotPermitted" {
		if _, merr := d.elb.ModifyLoadBalancerAttributes(ctx, &elbv2.ModifyLoadBalancerAttributesInput{
			LoadBalancerArn: aws.String(arn), Attributes: lbAttributes(map[string]string{"deletion_protection.enabled": "false"})}); merr != nil {
			return fail("disable deletion protection", arn, merr)
		}
		err = del()
	}
	if err != nil && errorCode(err) != "LoadBalancerNotFound" {
		return fail("delete load balancer", arn, err)
	}
	// Its listeners' entries are never read again (ARNs are not reused) and expire.
	d.tags.drop(arn)
	logr.FromContextOrDiscard(ctx).Info("deleted load balancer", "arn", arn)
	return nil
}

// deleteTargetGroup deregisters a target group's targets, then deletes it, retrying while a
// listener that is going away still uses it. The targets go first, as the AWS controller's
// binding finalizer makes them go: each drains as a deregistered target does, rather than its
// flows ending with the target group.
func (d *Deployer) deleteTargetGroup(ctx context.Context, arn string) error {
	if err := d.reconcileTargets(ctx, arn, nil); err != nil {
		if errorCode(err) == "TargetGroupNotFound" {
			d.tags.drop(arn)
			return nil
		}
		return fail("deregister targets", arn, err)
	}
	err := retryOn(ctx, d.opts.DeleteRetry, func() error {
		_, err := d.elb.DeleteTargetGroup(ctx, &elbv2.DeleteTargetGroupInput{TargetGroupArn: aws.String(arn)})
		return err
	}, "ResourceInUse")
	if err != nil && errorCode(err) != "TargetGroupNotFound" {
		return fail("delete target group", arn, err)
	}
	d.tags.drop(arn)
	logr.FromContextOrDiscard(ctx).Info("deleted target group", "arn", arn)
	return nil
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}
