package deploy

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/go-logr/logr"

	"github.com/moatlb/moat/internal/controller/model"
)

// synthesizeSecurityGroups makes the stack's managed frontend group exist, with its tags and
// exactly its inbound rules, and returns its ID ("" when the stack has none) and the groups
// tagged for the stack that the stack no longer wants (deleted after the load balancer stops
// using them).
func (d *Deployer) synthesizeSecurityGroups(ctx context.Context, stack model.Stack) (string, []string, error) {
	existing, err := d.findGroups(ctx, tagFilters(d.stackTags(stack.ID))...)
	if err != nil {
		return "", nil, fail("find security groups", stack.ID, err)
	}
	want := stack.ManagedSecurityGroup
	var matched *ec2types.SecurityGroup
	var stale []string
	for i, g := range existing {
		tags := fromEC2Tags(g.Tags)
		if want != nil && matched == nil && tags[model.TagResource] == want.ResourceID {
			matched = &existing[i]
			continue
		}
		stale = append(stale, aws.ToString(g.GroupId))
	}
	if want == nil {
		return "", stale, nil
	}
	if matched == nil {
		sg, err := d.createSecurityGroup(ctx, want.GroupName, want.Description, want.Tags)
		if err != nil {
			return "", nil, fail("create security group", want.GroupName, err)
		}
		matched = &sg
	} else if err := d.reconcileEC2Tags(ctx, aws.ToString(matched.GroupId), fromEC2Tags(matched.Tags), want.Tags); err != nil {
		return "", nil, fail("tag security group", aws.ToString(matched.GroupId), err)
	}
	id := aws.ToString(matched.GroupId)
	if err := d.reconcileIngress(ctx, *matched, fromModel(want.Ingress), ownsAll, false); err != nil {
		return "", nil, fail("reconcile security group ingress", id, err)
	}
	return id, stale, nil
}

// createSecurityGroup creates a group with its tags. If a group of that name already exists in
// the VPC (created by a run that crashed before it could be found by its tags, or stripped of
// them), it is adopted and tagged.
func (d *Deployer) createSecurityGroup(ctx context.Context, name, description string, tags map[string]string) (ec2types.SecurityGroup, error) {
	out, err := d.ec2.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{
		GroupName:         aws.String(name),
		Description:       aws.String(description),
		VpcId:             aws.String(d.opts.Model.VPCID),
		TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeSecurityGroup, Tags: ec2Tags(tags)}},
	})
	if err == nil {
		logr.FromContextOrDiscard(ctx).Info("created security group", "name", name, "id", aws.ToString(out.GroupId))
		return ec2types.SecurityGroup{GroupId: out.GroupId, GroupName: aws.String(name), Tags: ec2Tags(tags)}, nil
	}
	if errorCode(err) != "InvalidGroup.Duplicate" {
		return ec2types.SecurityGroup{}, err
	}
	found, ferr := d.findGroups(ctx, filter("group-name", name))
	if ferr != nil || len(found) != 1 {
		return ec2types.SecurityGroup{}, fmt.Errorf("%w (and finding the existing group failed: %v)", err, ferr)
	}
	sg := found[0]
	if err := d.reconcileEC2Tags(ctx, aws.ToString(sg.GroupId), fromEC2Tags(sg.Tags), mergeTags(fromEC2Tags(sg.Tags), tags)); err != nil {
		return ec2types.SecurityGroup{}, err
	}
	logr.FromContextOrDiscard(ctx).Info("adopted security group", "name", name, "id", aws.ToString(sg.GroupId))
	return sg, nil
}

func mergeTags(base, over map[string]string) map[string]string {
	out := make(map[string]string, len(base)+len(over))
	for k, v := range base {
		out[k] = v
	}
	for k, v := range over {
		out[k] = v
	}
	return out
}

// deleteStaleGroups deletes security groups the stack no longer wants, after revoking the rules
// that other groups (target groups' interfaces) have from them.
func (d *Deployer) deleteStaleGroups(ctx context.Context, ids []string) error {
	for _, id := range ids {
		d.net.forgetSource(id)
		if err := d.revokeReferencing(ctx, id, ownedByBinding); err != nil {
			return fail("revoke rules from security group", id, err)
		}
		if err := d.deleteGroup(ctx, id); err != nil {
			return fail("delete security group", id, err)
		}
		logr.FromContextOrDiscard(ctx).Info("deleted security group", "id", id)
	}
	return nil
}

// backendSecurityGroup returns the shared backend group's ID and records that stackID uses it.
// The auto-created group is found by its tags in the VPC, or created.
func (d *Deployer) backendSecurityGroup(ctx context.Context, stackID string, spec *model.BackendSecurityGroup) (string, error) {
	b := &d.backend
	b.mu.Lock()
	defer b.mu.Unlock()
	b.claims[stackID] = true
	if !spec.AutoCreated {
		return spec.GroupID, nil
	}
	if b.id != "" {
		return b.id, nil
	}
	found, err := d.findGroups(ctx, tagFilters(d.backendLookupTags())...)
	if err != nil {
		return "", fail("find backend security group", spec.GroupName, err)
	}
	if len(found) > 0 {
		slices.SortFunc(found, func(a, b ec2types.SecurityGroup) int {
			return strings.Compare(aws.ToString(a.GroupId), aws.ToString(b.GroupId))
		})
		sg := found[0]
		// Add missing tags (--default-tags may have changed); tags others added stay.
		if err := d.reconcileEC2Tags(ctx, aws.ToString(sg.GroupId), fromEC2Tags(sg.Tags), mergeTags(fromEC2Tags(sg.Tags), spec.Tags)); err != nil {
			return "", fail("tag backend security group", aws.ToString(sg.GroupId), err)
		}
		b.id = aws.ToString(sg.GroupId)
		return b.id, nil
	}
	sg, err := d.createSecurityGroup(ctx, spec.GroupName, spec.Description, spec.Tags)
	if err != nil {
		return "", fail("create backend security group", spec.GroupName, err)
	}
	b.id = aws.ToString(sg.GroupId)
	return b.id, nil
}

// backendLookupTags find the auto-created backend group, as the AWS controller looks it up
// (whatever --default-tags it was created with).
func (d *Deployer) backendLookupTags() map[string]string {
	return map[string]string{model.TagCluster: d.opts.Model.ClusterName, model.TagBackendSGResource: model.BackendSGResourceValue}
}

// releaseBackendSecurityGroup drops stackID's claim on the auto-created backend group and
// deletes the group when nothing needs it any more: no stack of this process claims it and no
// load balancer of the cluster has it. The rules target groups have from it go first (they would
// keep it from being deleted). force checks AWS even when this process never saw the group (after
// a restart); otherwise only a stack that claimed it, or whose load balancer had it, checks.
func (d *Deployer) releaseBackendSecurityGroup(ctx context.Context, stackID string, force bool) error {
	if d.opts.Model.BackendSecurityGroup != "" {
		return nil // given by flag: never deleted
	}
	b := &d.backend
	b.mu.Lock()
	defer b.mu.Unlock()
	claimed := b.claims[stackID]
	delete(b.claims, stackID)
	if len(b.claims) > 0 || (!claimed && !force) {
		return nil
	}
	spec := model.BackendSecurityGroupSpec(d.opts.Model)
	id := b.id
	if id == "" {
		found, err := d.findGroups(ctx, tagFilters(d.backendLookupTags())...)
		if err != nil {
			return fail("find backend security group", spec.GroupName, err)
		}
		if len(found) == 0 {
			return nil
		}
		id = aws.ToString(found[0].GroupId)
	}
	lbs, err := d.listLoadBalancers(ctx, map[string]string{model.TagCluster: d.opts.Model.ClusterName})
	if err != nil {
		return fail("list load balancers", d.opts.Model.ClusterName, err)
	}
	for _, lb := range lbs {
		if slices.Contains(lb.SecurityGroups, id) {
			return nil
		}
	}
	d.net.forgetSource(id)
	if err := d.revokeReferencing(ctx, id, ownedByBinding); err != nil {
		return fail("revoke rules from backend security group", id, err)
	}
	if err := d.deleteGroup(ctx, id); err != nil {
		return fail("delete backend security group", id, err)
	}
	b.id = ""
	logr.FromContextOrDiscard(ctx).Info("deleted backend security group", "id", id)
	return nil
}
