package deploy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	corev1 "k8s.io/api/core/v1"

	"github.com/moatlb/moat/internal/controller/annotations"
	"github.com/moatlb/moat/internal/controller/model"
)

// Build resolves what the Service's model needs (Resolve) and builds its desired stack. An
// error from the model (a *model.Error, FailedBuildModel) means the Service is wrong; any other
// error is a failed look-up, worth a retry.
func (d *Deployer) Build(ctx context.Context, svc *corev1.Service) (model.Stack, error) {
	in, err := d.Resolve(ctx, svc)
	if err != nil {
		return model.Stack{}, err
	}
	return model.Build(svc, d.opts.Model, in)
}

// Resolve looks up in AWS the facts model.Prepare says the build needs: the load balancer
// already tagged for the Service, the subnets (by annotation, from that load balancer, or
// discovered by role tag), the VPC's CIDRs, the IDs of security groups named by Name tag, the
// shared backend group (found by its tags, or created), and the sizes of prefix lists. Prepare's
// errors (*model.Error) are returned as they are.
func (d *Deployer) Resolve(ctx context.Context, svc *corev1.Service) (model.Resolved, error) {
	if svc == nil {
		return model.Resolved{}, errors.New("resolve: no Service")
	}
	stackID := svc.Namespace + "/" + svc.Name
	existing, err := d.ExistingLoadBalancer(ctx, stackID)
	if err != nil {
		return model.Resolved{}, err
	}
	plan, err := model.Prepare(svc, d.opts.Model, existing)
	if err != nil {
		return model.Resolved{}, err
	}
	in := model.Resolved{ExistingLoadBalancer: existing}
	if !plan.Selected {
		return in, nil
	}
	if in.Subnets, err = d.resolveSubnets(ctx, plan.Subnets); err != nil {
		return model.Resolved{}, fail("resolve subnets", stackID, err)
	}
	if plan.SecurityGroupMode == model.SecurityGroupsNone {
		if in.VPC, err = d.resolveVPC(ctx); err != nil {
			return model.Resolved{}, fail("describe VPC", d.opts.Model.VPCID, err)
		}
	}
	if len(plan.SecurityGroupNames) > 0 {
		if in.SecurityGroupsByName, err = d.resolveGroupNames(ctx, plan.SecurityGroupNames); err != nil {
			return model.Resolved{}, fail("resolve security groups", stackID, err)
		}
	}
	if plan.SecurityGroupMode == model.SecurityGroupsManaged {
		lists, _ := annotations.New(svc.Annotations).StringList(annotations.SecurityGroupPrefixLists)
		if in.PrefixListMaxEntries, err = d.resolvePrefixLists(ctx, lists); err != nil {
			return model.Resolved{}, fail("resolve prefix lists", stackID, err)
		}
	}
	if plan.BackendSecurityGroup != nil {
		if in.BackendSecurityGroupID, err = d.backendSecurityGroup(ctx, stackID, plan.BackendSecurityGroup); err != nil {
			return model.Resolved{}, err
		}
	}
	return in, nil
}

// ExistingLoadBalancer returns the load balancer tagged for the stack ("<namespace>/<name>"),
// or nil.
func (d *Deployer) ExistingLoadBalancer(ctx context.Context, stackID string) (*model.ExistingLoadBalancer, error) {
	lbs, err := d.listLoadBalancers(ctx, d.stackTags(stackID))
	if err != nil {
		return nil, fail("find load balancer", stackID, err)
	}
	if len(lbs) == 0 {
		return nil, nil
	}
	lb := lbs[0]
	for _, l := range lbs {
		if l.Tags[model.TagResource] == model.ResourceIDLoadBalancer {
			lb = l
			break
		}
	}
	out := &model.ExistingLoadBalancer{Scheme: model.Scheme(lb.Scheme), SecurityGroups: slices.Clone(lb.SecurityGroups)}
	for _, az := range lb.AvailabilityZones {
		out.SubnetIDs = append(out.SubnetIDs, aws.ToString(az.SubnetId))
	}
	return out, nil
}

func toSubnet(s ec2types.Subnet) model.Subnet {
	out := model.Subnet{ID: aws.ToString(s.SubnetId), AvailabilityZone: aws.ToString(s.AvailabilityZone), IPv4CIDR: aws.ToString(s.CidrBlock)}
	for _, a := range s.Ipv6CidrBlockAssociationSet {
		if a.Ipv6CidrBlockState == nil || a.Ipv6CidrBlockState.State == ec2types.SubnetCidrBlockStateCodeAssociated {
			out.IPv6CIDRs = append(out.IPv6CIDRs, aws.ToString(a.Ipv6CidrBlock))
		}
	}
	return out
}

// resolveSubnets follows the plan's selection, as the AWS controller's subnet resolver does.
func (d *Deployer) resolveSubnets(ctx context.Context, sel model.SubnetSelection) ([]model.Subnet, error) {
	switch {
	case len(sel.NamesOrIDs) > 0:
		return d.subnetsByNameOrID(ctx, sel.NamesOrIDs)
	case len(sel.FromExistingLoadBalancer) > 0:
		out, err := d.ec2.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{SubnetIds: sel.FromExistingLoadBalancer})
		if err != nil {
			return nil, fmt.Errorf("describe subnets %v: %w", sel.FromExistingLoadBalancer, err)
		}
		var subnets []model.Subnet
		for _, s := range out.Subnets {
			subnets = append(subnets, toSubnet(s))
		}
		sortByZone(subnets)
		return subnets, nil
	}
	return d.discoverSubnets(ctx, sel)
}

func (d *Deployer) subnetsByNameOrID(ctx context.Context, refs []string) ([]model.Subnet, error) {
	var ids, names []string
	for _, r := range refs {
		if strings.HasPrefix(r, "subnet-") {
			ids = append(ids, r)
		} else {
			names = append(names, r)
		}
	}
	var found []ec2types.Subnet
	if len(ids) > 0 {
		out, err := d.ec2.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{SubnetIds: ids})
		if err != nil {
			return nil, fmt.Errorf("describe subnets %v: %w", ids, err)
		}
		found = append(found, out.Subnets...)
	}
	if len(names) > 0 {
		out, err := d.ec2.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{Filters: []ec2types.Filter{
			filter("vpc-id", d.opts.Model.VPCID), filter("tag:Name", names...)}})
		if err != nil {
			return nil, fmt.Errorf("describe subnets named %v: %w", names, err)
		}
		for _, name := range names {
			if !slices.ContainsFunc(out.Subnets, func(s ec2types.Subnet) bool { return fromEC2Tags(s.Tags)["Name"] == name }) {
				return nil, fmt.Errorf("no subnet in VPC %s is named %q (annotation %s)", d.opts.Model.VPCID, name, annotations.Key(annotations.Subnets))
			}
		}
		found = append(found, out.Subnets...)
	}
	var out []model.Subnet
	zones := map[string]string{}
	for _, s := range found {
		sn := toSubnet(s)
		if slices.ContainsFunc(out, func(o model.Subnet) bool { return o.ID == sn.ID }) {
			continue
		}
		if other, ok := zones[sn.AvailabilityZone]; ok {
			return nil, fmt.Errorf("subnets %s and %s are both in zone %s: a load balancer takes one subnet per zone (annotation %s)",
				other, sn.ID, sn.AvailabilityZone, annotations.Key(annotations.Subnets))
		}
		zones[sn.AvailabilityZone] = sn.ID
		out = append(out, sn)
	}
	return out, nil
}

// discoverSubnets finds the VPC's subnets with the role tag, not reserved for another cluster,
// with enough free addresses, one per zone (this cluster's tagged subnet first, then the lowest
// ID).
func (d *Deployer) discoverSubnets(ctx context.Context, sel model.SubnetSelection) ([]model.Subnet, error) {
	in := &ec2.DescribeSubnetsInput{Filters: []ec2types.Filter{filter("vpc-id", d.opts.Model.VPCID), filter("tag:"+sel.RoleTag, "", "1")}}
	var all []ec2types.Subnet
	p := ec2.NewDescribeSubnetsPaginator(d.ec2, in)
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("describe subnets: %w", err)
		}
		all = append(all, page.Subnets...)
	}
	ours := clusterTagPrefix + d.opts.Model.ClusterName
	byZone := map[string]ec2types.Subnet{}
	better := func(a, b ec2types.Subnet) bool { // is a preferred to b?
		_, aTagged := fromEC2Tags(a.Tags)[ours]
		_, bTagged := fromEC2Tags(b.Tags)[ours]
		if aTagged != bTagged {
			return aTagged
		}
		return aws.ToString(a.SubnetId) < aws.ToString(b.SubnetId)
	}
	for _, s := range all {
		tags := fromEC2Tags(s.Tags)
		_, tagged := tags[ours]
		other := false
		for k := range tags {
			other = other || (strings.HasPrefix(k, clusterTagPrefix) && k != ours)
		}
		if other && !tagged {
			continue // another cluster's
		}
		if int(aws.ToInt32(s.AvailableIpAddressCount)) < sel.MinAvailableIPAddressCount {
			continue
		}
		zone := aws.ToString(s.AvailabilityZone)
		if cur, ok := byZone[zone]; !ok || better(s, cur) {
			byZone[zone] = s
		}
	}
	if len(byZone) == 0 {
		return nil, fmt.Errorf("unable to resolve at least one subnet: no subnet of VPC %s is tagged %s with %d free addresses (name subnets with annotation %s)",
			d.opts.Model.VPCID, sel.RoleTag, sel.MinAvailableIPAddressCount, annotations.Key(annotations.Subnets))
	}
	var out []model.Subnet
	for _, s := range byZone {
		out = append(out, toSubnet(s))
	}
	sortByZone(out)
	return out, nil
}

func sortByZone(s []model.Subnet) {
	slices.SortFunc(s, func(a, b model.Subnet) int {
		if c := strings.Compare(a.AvailabilityZone, b.AvailabilityZone); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
}

func (d *Deployer) resolveVPC(ctx context.Context) (*model.VPC, error) {
	out, err := d.ec2.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{VpcIds: []string{d.opts.Model.VPCID}})
	if err != nil {
		return nil, err
	}
	if len(out.Vpcs) != 1 {
		return nil, fmt.Errorf("VPC %s not found", d.opts.Model.VPCID)
	}
	v := out.Vpcs[0]
	vpc := &model.VPC{}
	for _, a := range v.CidrBlockAssociationSet {
		if a.CidrBlockState == nil || a.CidrBlockState.State == ec2types.VpcCidrBlockStateCodeAssociated {
			vpc.IPv4CIDRs = append(vpc.IPv4CIDRs, aws.ToString(a.CidrBlock))
		}
	}
	if len(vpc.IPv4CIDRs) == 0 && v.CidrBlock != nil {
		vpc.IPv4CIDRs = []string{aws.ToString(v.CidrBlock)}
	}
	for _, a := range v.Ipv6CidrBlockAssociationSet {
		vpc.IPv6CIDRs = append(vpc.IPv6CIDRs, aws.ToString(a.Ipv6CidrBlock))
	}
	return vpc, nil
}

// resolveGroupNames maps each Name tag to the IDs of the VPC's groups carrying it.
func (d *Deployer) resolveGroupNames(ctx context.Context, names []string) (map[string][]string, error) {
	groups, err := d.findGroups(ctx, filter("tag:Name", names...))
	if err != nil {
		return nil, err
	}
	out := make(map[string][]string, len(names))
	for _, name := range names {
		out[name] = []string{}
	}
	for _, g := range groups {
		name := fromEC2Tags(g.Tags)["Name"]
		if _, ok := out[name]; ok {
			out[name] = append(out[name], aws.ToString(g.GroupId))
		}
	}
	for _, name := range names {
		slices.Sort(out[name])
	}
	return out, nil
}

func (d *Deployer) resolvePrefixLists(ctx context.Context, ids []string) (map[string]int, error) {
	var valid []string
	for _, id := range ids {
		if strings.HasPrefix(id, "pl-") {
			valid = append(valid, id) // the build reports the others
		}
	}
	if len(valid) == 0 {
		return nil, nil
	}
	out, err := d.ec2.DescribeManagedPrefixLists(ctx, &ec2.DescribeManagedPrefixListsInput{PrefixListIds: valid})
	if err != nil {
		return nil, fmt.Errorf("describe managed prefix lists %v: %w", valid, err)
	}
	sizes := map[string]int{}
	for _, pl := range out.PrefixLists {
		sizes[aws.ToString(pl.PrefixListId)] = int(aws.ToInt32(pl.MaxEntries))
	}
	return sizes, nil
}
