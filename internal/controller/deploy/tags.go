package deploy

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"
	rgt "github.com/aws/aws-sdk-go-v2/service/resourcegroupstaggingapi"
	rgttypes "github.com/aws/aws-sdk-go-v2/service/resourcegroupstaggingapi/types"

	"github.com/moatlb/moat/internal/controller/model"
)

// describeTagsBatch is how many ARNs one DescribeTags call takes.
const describeTagsBatch = 20

// legacyTagKeys are the AWS controller's old tracking tags; they are never removed.
var legacyTagKeys = []string{"ingress.k8s.aws/cluster", "ingress.k8s.aws/stack", "ingress.k8s.aws/resource"}

// stackTags are the tags every resource of a stack carries.
func (d *Deployer) stackTags(stackID string) map[string]string {
	return map[string]string{model.TagCluster: d.opts.Model.ClusterName, model.TagStack: stackID}
}

func hasTags(tags, want map[string]string) bool {
	for k, v := range want {
		if got, ok := tags[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// tagDiff returns the tags to set (missing or different) and the keys to remove (present but
// not desired), leaving alone keys the controller does not own: external-managed, legacy and
// aws: keys.
func (d *Deployer) tagDiff(current, desired map[string]string) (set map[string]string, remove []string) {
	set = map[string]string{}
	for k, v := range desired {
		if cur, ok := current[k]; !ok || cur != v {
			set[k] = v
		}
	}
	for k := range current {
		if _, ok := desired[k]; ok || d.ignoredTagKey(k) {
			continue
		}
		remove = append(remove, k)
	}
	slices.Sort(remove)
	return set, remove
}

func (d *Deployer) ignoredTagKey(k string) bool {
	return strings.HasPrefix(strings.ToLower(k), "aws:") || slices.Contains(legacyTagKeys, k) ||
		slices.Contains(d.opts.Model.ExternalManagedTags, k)
}

// reconcileELBTags makes an ELBv2 resource's tags the desired ones, and the tag cache what they
// now are (or, when a call failed, unknown).
func (d *Deployer) reconcileELBTags(ctx context.Context, arn string, current, desired map[string]string) error {
	set, remove := d.tagDiff(current, desired)
	if len(set) == 0 && len(remove) == 0 {
		return nil
	}
	if len(set) > 0 {
		if _, err := d.elb.AddTags(ctx, &elbv2.AddTagsInput{ResourceArns: []string{arn}, Tags: elbTags(set)}); err != nil {
			d.tags.drop(arn)
			return fmt.Errorf("add tags: %w", err)
		}
	}
	if len(remove) > 0 {
		if _, err := d.elb.RemoveTags(ctx, &elbv2.RemoveTagsInput{ResourceArns: []string{arn}, TagKeys: remove}); err != nil {
			d.tags.drop(arn)
			return fmt.Errorf("remove tags: %w", err)
		}
	}
	now := make(map[string]string, len(current)+len(set))
	maps.Copy(now, current)
	maps.Copy(now, set)
	for _, k := range remove {
		delete(now, k)
	}
	d.tags.put(arn, now)
	return nil
}

// reconcileEC2Tags makes an EC2 resource's tags the desired ones.
func (d *Deployer) reconcileEC2Tags(ctx context.Context, id string, current, desired map[string]string) error {
	set, remove := d.tagDiff(current, desired)
	if len(set) > 0 {
		if _, err := d.ec2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{id}, Tags: ec2Tags(set)}); err != nil {
			return fmt.Errorf("create tags: %w", err)
		}
	}
	if len(remove) > 0 {
		tags := make([]ec2types.Tag, 0, len(remove))
		for _, k := range remove {
			tags = append(tags, ec2types.Tag{Key: aws.String(k)})
		}
		if _, err := d.ec2.DeleteTags(ctx, &ec2.DeleteTagsInput{Resources: []string{id}, Tags: tags}); err != nil {
			return fmt.Errorf("delete tags: %w", err)
		}
	}
	return nil
}

func elbTags(m map[string]string) []elbtypes.Tag {
	out := make([]elbtypes.Tag, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, elbtypes.Tag{Key: aws.String(k), Value: aws.String(m[k])})
	}
	return out
}

func ec2Tags(m map[string]string) []ec2types.Tag {
	out := make([]ec2types.Tag, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, ec2types.Tag{Key: aws.String(k), Value: aws.String(m[k])})
	}
	return out
}

func fromEC2Tags(tags []ec2types.Tag) map[string]string {
	out := make(map[string]string, len(tags))
	for _, t := range tags {
		out[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	return out
}

// elbTagsOf returns the tags of each ARN: from the tag cache, or DescribeTags-ing those it has
// no fresh entry for, in batches. The maps are shared with the cache: do not modify them.
func (d *Deployer) elbTagsOf(ctx context.Context, arns []string) (map[string]map[string]string, error) {
	out := make(map[string]map[string]string, len(arns))
	var missing []string
	for _, arn := range arns {
		if tags, ok := d.tags.get(arn); ok {
			out[arn] = tags
		} else {
			missing = append(missing, arn)
		}
	}
	for start := 0; start < len(missing); start += describeTagsBatch {
		batch := missing[start:min(start+describeTagsBatch, len(missing))]
		since := d.tags.writeCount()
		resp, err := d.elb.DescribeTags(ctx, &elbv2.DescribeTagsInput{ResourceArns: batch})
		if err != nil {
			return nil, fmt.Errorf("describe tags: %w", err)
		}
		for _, td := range resp.TagDescriptions {
			tags := map[string]string{}
			for _, t := range td.Tags {
				tags[aws.ToString(t.Key)] = aws.ToString(t.Value)
			}
			arn := aws.ToString(td.ResourceArn)
			out[arn] = tags
			d.tags.fill(arn, tags, since)
		}
	}
	return out, nil
}

// loadBalancer is a load balancer with its tags.
type loadBalancer struct {
	elbtypes.LoadBalancer
	Tags map[string]string
}

// listLoadBalancers returns the network load balancers of the VPC that carry all of tags.
func (d *Deployer) listLoadBalancers(ctx context.Context, tags map[string]string) ([]loadBalancer, error) {
	var lbs []elbtypes.LoadBalancer
	var tagsOf map[string]map[string]string
	var err error
	if d.rgt != nil {
		if tagsOf, err = d.taggedResources(ctx, resourceTypeLoadBalancer, tags); err != nil {
			return nil, err
		}
		lbs, err = describeByARN(slices.Sorted(maps.Keys(tagsOf)), func(arns []string) ([]elbtypes.LoadBalancer, error) {
			out, err := d.elb.DescribeLoadBalancers(ctx, &elbv2.DescribeLoadBalancersInput{LoadBalancerArns: arns})
			if err != nil {
				return nil, fmt.Errorf("describe load balancers: %w", err)
			}
			return out.LoadBalancers, nil
		}, "LoadBalancerNotFound")
		if err != nil {
			return nil, err
		}
		lbs = slices.DeleteFunc(lbs, func(lb elbtypes.LoadBalancer) bool { return !d.ownLoadBalancer(lb) })
	} else if lbs, tagsOf, err = d.scanLoadBalancers(ctx); err != nil {
		return nil, err
	}
	var out []loadBalancer
	for _, lb := range lbs {
		if t := tagsOf[aws.ToString(lb.LoadBalancerArn)]; hasTags(t, tags) {
			out = append(out, loadBalancer{LoadBalancer: lb, Tags: t})
		}
	}
	return out, nil
}

// ownLoadBalancer says whether a load balancer is one the controller could manage: a network
// load balancer in its VPC.
func (d *Deployer) ownLoadBalancer(lb elbtypes.LoadBalancer) bool {
	return aws.ToString(lb.VpcId) == d.opts.Model.VPCID && lb.Type == elbtypes.LoadBalancerTypeEnumNetwork
}

// scanLoadBalancers returns every network load balancer of the VPC, with their tags from the
// tag cache where it has them: a scan of the whole region.
func (d *Deployer) scanLoadBalancers(ctx context.Context) ([]elbtypes.LoadBalancer, map[string]map[string]string, error) {
	var all []elbtypes.LoadBalancer
	p := elbv2.NewDescribeLoadBalancersPaginator(d.elb, &elbv2.DescribeLoadBalancersInput{})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, nil, fmt.Errorf("describe load balancers: %w", err)
		}
		for _, lb := range page.LoadBalancers {
			if d.ownLoadBalancer(lb) {
				all = append(all, lb)
			}
		}
	}
	arns := make([]string, 0, len(all))
	for _, lb := range all {
		arns = append(arns, aws.ToString(lb.LoadBalancerArn))
	}
	tagsOf, err := d.elbTagsOf(ctx, arns)
	return all, tagsOf, err
}

// targetGroup is a target group with its tags.
type targetGroup struct {
	elbtypes.TargetGroup
	Tags map[string]string
}

// listTargetGroups returns the target groups of the VPC that carry all of tags.
func (d *Deployer) listTargetGroups(ctx context.Context, tags map[string]string) ([]targetGroup, error) {
	var tgs []elbtypes.TargetGroup
	var tagsOf map[string]map[string]string
	var err error
	if d.rgt != nil {
		if tagsOf, err = d.taggedResources(ctx, resourceTypeTargetGroup, tags); err != nil {
			return nil, err
		}
		tgs, err = describeByARN(slices.Sorted(maps.Keys(tagsOf)), func(arns []string) ([]elbtypes.TargetGroup, error) {
			out, err := d.elb.DescribeTargetGroups(ctx, &elbv2.DescribeTargetGroupsInput{TargetGroupArns: arns})
			if err != nil {
				return nil, fmt.Errorf("describe target groups: %w", err)
			}
			return out.TargetGroups, nil
		}, "TargetGroupNotFound")
		if err != nil {
			return nil, err
		}
		tgs = slices.DeleteFunc(tgs, func(tg elbtypes.TargetGroup) bool { return aws.ToString(tg.VpcId) != d.opts.Model.VPCID })
	} else if tgs, tagsOf, err = d.scanTargetGroups(ctx); err != nil {
		return nil, err
	}
	var out []targetGroup
	for _, tg := range tgs {
		if t := tagsOf[aws.ToString(tg.TargetGroupArn)]; hasTags(t, tags) {
			out = append(out, targetGroup{TargetGroup: tg, Tags: t})
		}
	}
	return out, nil
}

// scanTargetGroups returns every target group of the VPC, with their tags from the tag cache
// where it has them: a scan of the whole region.
func (d *Deployer) scanTargetGroups(ctx context.Context) ([]elbtypes.TargetGroup, map[string]map[string]string, error) {
	var all []elbtypes.TargetGroup
	p := elbv2.NewDescribeTargetGroupsPaginator(d.elb, &elbv2.DescribeTargetGroupsInput{})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, nil, fmt.Errorf("describe target groups: %w", err)
		}
		for _, tg := range page.TargetGroups {
			if aws.ToString(tg.VpcId) == d.opts.Model.VPCID {
				all = append(all, tg)
			}
		}
	}
	arns := make([]string, 0, len(all))
	for _, tg := range all {
		arns = append(arns, aws.ToString(tg.TargetGroupArn))
	}
	tagsOf, err := d.elbTagsOf(ctx, arns)
	return all, tagsOf, err
}

// The Resource Groups Tagging API's names of the resource types the deployer finds by tags.
const (
	resourceTypeLoadBalancer = "elasticloadbalancing:loadbalancer"
	resourceTypeTargetGroup  = "elasticloadbalancing:targetgroup"
)

// taggedResources returns the resources of one type that carry all of tags, with their tags, by
// ARN, from the Resource Groups Tagging API; the answer fills the tag cache.
func (d *Deployer) taggedResources(ctx context.Context, resourceType string, tags map[string]string) (map[string]map[string]string, error) {
	in := &rgt.GetResourcesInput{ResourceTypeFilters: []string{resourceType}, ResourcesPerPage: aws.Int32(100)}
	for _, k := range slices.Sorted(maps.Keys(tags)) {
		in.TagFilters = append(in.TagFilters, rgttypes.TagFilter{Key: aws.String(k), Values: []string{tags[k]}})
	}
	since := d.tags.writeCount()
	out := map[string]map[string]string{}
	p := rgt.NewGetResourcesPaginator(d.rgt, in)
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("get resources by tags: %w", err)
		}
		for _, m := range page.ResourceTagMappingList {
			t := make(map[string]string, len(m.Tags))
			for _, tag := range m.Tags {
				t[aws.ToString(tag.Key)] = aws.ToString(tag.Value)
			}
			arn := aws.ToString(m.ResourceARN)
			out[arn] = t
			d.tags.fill(arn, t, since)
		}
	}
	return out, nil
}

// describeBatch is how many ARNs one DescribeLoadBalancers call takes (AWS's limit), and so one
// DescribeTargetGroups call too.
const describeBatch = 20

// describeByARN describes resources by ARN in batches. One deleted since its ARN was found fails
// its whole batch with the not-found error: that batch is described again one by one, without it.
func describeByARN[T any](arns []string, describe func([]string) ([]T, error), notFoundCode string) ([]T, error) {
	var out []T
	for batch := range slices.Chunk(arns, describeBatch) {
		got, err := describe(batch)
		switch {
		case err == nil:
			out = append(out, got...)
		case errorCode(err) != notFoundCode:
			return nil, err
		case len(batch) > 1:
			for _, arn := range batch {
				one, err := describe([]string{arn})
				if err != nil && errorCode(err) != notFoundCode {
					return nil, err
				}
				out = append(out, one...)
			}
		}
	}
	return out, nil
}
