package lbtest

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"
	"github.com/aws/smithy-go"
)

// What the tests of AWS clients (the controller's deploy and reconcile stages) read back from
// moat lb: each call fails the test on an API error.

// Filter is an EC2 Describe filter.
func Filter(name string, values ...string) ec2types.Filter {
	return ec2types.Filter{Name: aws.String(name), Values: values}
}

// InstanceIDs lists the inventory's instances, sorted.
func (e *Env) InstanceIDs(t testing.TB) []string {
	t.Helper()
	out, err := e.EC2.DescribeInstances(context.Background(), &ec2.DescribeInstancesInput{})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range out.Reservations {
		for _, i := range r.Instances {
			ids = append(ids, aws.ToString(i.InstanceId))
		}
	}
	sort.Strings(ids)
	return ids
}

// LoadBalancers lists every load balancer.
func (e *Env) LoadBalancers(t testing.TB) []elbtypes.LoadBalancer {
	t.Helper()
	out, err := e.ELB.DescribeLoadBalancers(context.Background(), &elbv2.DescribeLoadBalancersInput{})
	if err != nil {
		t.Fatal(err)
	}
	return out.LoadBalancers
}

// TargetGroups lists every target group.
func (e *Env) TargetGroups(t testing.TB) []elbtypes.TargetGroup {
	t.Helper()
	out, err := e.ELB.DescribeTargetGroups(context.Background(), &elbv2.DescribeTargetGroupsInput{})
	if err != nil {
		t.Fatal(err)
	}
	return out.TargetGroups
}

// ELBTags returns an ELBv2 resource's tags, or false when it does not exist (any more).
func (e *Env) ELBTags(t testing.TB, arn string) (map[string]string, bool) {
	t.Helper()
	out, err := e.ELB.DescribeTags(context.Background(), &elbv2.DescribeTagsInput{ResourceArns: []string{arn}})
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) && strings.HasSuffix(apiErr.ErrorCode(), "NotFound") {
		return nil, false
	}
	if err != nil {
		t.Fatal(err)
	}
	tags := map[string]string{}
	for _, td := range out.TagDescriptions {
		for _, tag := range td.Tags {
			tags[aws.ToString(tag.Key)] = aws.ToString(tag.Value)
		}
	}
	return tags, true
}

// Groups lists the security groups matching filters.
func (e *Env) Groups(t testing.TB, filters ...ec2types.Filter) []ec2types.SecurityGroup {
	t.Helper()
	out, err := e.EC2.DescribeSecurityGroups(context.Background(), &ec2.DescribeSecurityGroupsInput{Filters: filters})
	if err != nil {
		t.Fatal(err)
	}
	return out.SecurityGroups
}

// Group returns the security group with this ID.
func (e *Env) Group(t testing.TB, id string) ec2types.SecurityGroup {
	t.Helper()
	out, err := e.EC2.DescribeSecurityGroups(context.Background(), &ec2.DescribeSecurityGroupsInput{GroupIds: []string{id}})
	if err != nil {
		t.Fatal(err)
	}
	return out.SecurityGroups[0]
}

// OneGroup returns the only group matching filters, false when none does; more is a failure.
func (e *Env) OneGroup(t testing.TB, filters ...ec2types.Filter) (ec2types.SecurityGroup, bool) {
	t.Helper()
	gs := e.Groups(t, filters...)
	if len(gs) > 1 {
		t.Fatalf("%d groups match %v", len(gs), filters)
	}
	if len(gs) == 0 {
		return ec2types.SecurityGroup{}, false
	}
	return gs[0], true
}

// NodeGroup is the default inventory's group on the nodes' interfaces, moat-nodes.
func (e *Env) NodeGroup(t testing.TB) ec2types.SecurityGroup {
	t.Helper()
	g, ok := e.OneGroup(t, Filter("group-name", "moat-nodes"))
	if !ok {
		t.Fatal("no group moat-nodes")
	}
	return g
}

// BackendGroup returns the cluster's shared backend group, if it exists.
func (e *Env) BackendGroup(t testing.TB, cluster string) (ec2types.SecurityGroup, bool) {
	t.Helper()
	return e.OneGroup(t, Filter("tag:elbv2.k8s.aws/cluster", cluster), Filter("tag:elbv2.k8s.aws/resource", "backend-sg"))
}

// Leftovers lists everything of the cluster still in moat lb: load balancers, target groups,
// security groups tagged for the cluster, and rules on the node group. Empty after a clean delete.
func (e *Env) Leftovers(t testing.TB, cluster string) []string {
	t.Helper()
	var out []string
	for _, lb := range e.LoadBalancers(t) {
		out = append(out, "load balancer "+aws.ToString(lb.LoadBalancerName))
	}
	for _, tg := range e.TargetGroups(t) {
		out = append(out, "target group "+aws.ToString(tg.TargetGroupName))
	}
	for _, g := range e.Groups(t, Filter("tag:elbv2.k8s.aws/cluster", cluster)) {
		out = append(out, "security group "+aws.ToString(g.GroupName))
	}
	for _, r := range Inbound(e.NodeGroup(t)) {
		out = append(out, "node rule "+r)
	}
	return out
}

// Inbound lists a group's inbound rules one by one, as "proto from-to peer [description]",
// sorted: EC2 groups rules by protocol and ports, tests want to compare them flat.
func Inbound(g ec2types.SecurityGroup) []string {
	var out []string
	for _, p := range g.IpPermissions {
		ports := fmt.Sprintf("%s %d-%d", aws.ToString(p.IpProtocol), aws.ToInt32(p.FromPort), aws.ToInt32(p.ToPort))
		add := func(peer, desc string) {
			s := ports + " " + peer
			if desc != "" {
				s += " [" + desc + "]"
			}
			out = append(out, s)
		}
		for _, r := range p.IpRanges {
			add(aws.ToString(r.CidrIp), aws.ToString(r.Description))
		}
		for _, r := range p.Ipv6Ranges {
			add(aws.ToString(r.CidrIpv6), aws.ToString(r.Description))
		}
		for _, r := range p.PrefixListIds {
			add(aws.ToString(r.PrefixListId), aws.ToString(r.Description))
		}
		for _, r := range p.UserIdGroupPairs {
			add(aws.ToString(r.GroupId), aws.ToString(r.Description))
		}
	}
	sort.Strings(out)
	return out
}
