package deploy

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/moatlb/moat/internal/controller/model"
)

// rule is one security-group rule: a protocol and port range and exactly one peer. EC2 groups
// the rules with the same protocol and ports into one IpPermission; rules are compared one by one,
// as the AWS controller re-expands them.
type rule struct {
	Protocol   string // "tcp", "udp", "icmp", "icmpv6", "-1" or a protocol number
	From, To   int32  // -1 for protocols without ports
	CIDRv4     string
	CIDRv6     string
	PrefixList string
	Group      string
	// Description is not part of a rule's identity (EC2 ignores it for duplicates and revokes).
	Description string
}

// covers reports whether r allows everything o allows: same protocol and peer, and a port
// range that contains o's.
func (r rule) covers(o rule) bool {
	return r.Protocol == o.Protocol && r.CIDRv4 == o.CIDRv4 && r.CIDRv6 == o.CIDRv6 && r.PrefixList == o.PrefixList &&
		r.Group == o.Group && r.From <= o.From && o.To <= r.To
}

// key is the rule's identity: protocol, ports and peer.
func (r rule) key() string {
	return fmt.Sprintf("%s|%d|%d|%s|%s|%s|%s", r.Protocol, r.From, r.To, r.CIDRv4, r.CIDRv6, r.PrefixList, r.Group)
}

func (r rule) String() string {
	peer := r.CIDRv4 + r.CIDRv6 + r.PrefixList + r.Group
	if r.Protocol == "-1" {
		return "all from " + peer
	}
	return fmt.Sprintf("%s %d-%d from %s", r.Protocol, r.From, r.To, peer)
}

// normalizeProtocol spells a protocol as EC2 answers it.
func normalizeProtocol(p string) string {
	switch strings.ToLower(p) {
	case "tcp", "6":
		return "tcp"
	case "udp", "17":
		return "udp"
	case "icmp", "1":
		return "icmp"
	case "icmpv6", "58":
		return "icmpv6"
	case "-1", "all", "":
		return "-1"
	}
	return strings.ToLower(p)
}

func hasPorts(proto string) bool {
	return proto == "tcp" || proto == "udp" || proto == "icmp" || proto == "icmpv6"
}

func canonicalCIDR(c string) string {
	p, err := netip.ParsePrefix(strings.TrimSpace(c))
	if err != nil {
		return c
	}
	return p.Masked().String()
}

// expand turns an IpPermission into its rules.
func expand(p ec2types.IpPermission) []rule {
	base := rule{Protocol: normalizeProtocol(aws.ToString(p.IpProtocol)), From: -1, To: -1}
	if hasPorts(base.Protocol) {
		base.From, base.To = aws.ToInt32(p.FromPort), aws.ToInt32(p.ToPort)
		if p.FromPort == nil {
			base.From = -1
		}
		if p.ToPort == nil {
			base.To = -1
		}
	}
	var out []rule
	for _, r := range p.IpRanges {
		x := base
		x.CIDRv4, x.Description = canonicalCIDR(aws.ToString(r.CidrIp)), aws.ToString(r.Description)
		out = append(out, x)
	}
	for _, r := range p.Ipv6Ranges {
		x := base
		x.CIDRv6, x.Description = canonicalCIDR(aws.ToString(r.CidrIpv6)), aws.ToString(r.Description)
		out = append(out, x)
	}
	for _, r := range p.PrefixListIds {
		x := base
		x.PrefixList, x.Description = aws.ToString(r.PrefixListId), aws.ToString(r.Description)
		out = append(out, x)
	}
	for _, r := range p.UserIdGroupPairs {
		x := base
		x.Group, x.Description = aws.ToString(r.GroupId), aws.ToString(r.Description)
		out = append(out, x)
	}
	return out
}

func expandAll(perms []ec2types.IpPermission) []rule {
	var out []rule
	for _, p := range perms {
		out = append(out, expand(p)...)
	}
	return out
}

// fromModel turns the model's permissions into rules.
func fromModel(perms []model.IPPermission) []rule {
	var out []rule
	for _, p := range perms {
		base := rule{Protocol: normalizeProtocol(p.IPProtocol), From: p.FromPort, To: p.ToPort}
		if !hasPorts(base.Protocol) {
			base.From, base.To = -1, -1
		}
		for _, r := range p.IPRanges {
			x := base
			x.CIDRv4, x.Description = canonicalCIDR(r.CIDRIP), r.Description
			out = append(out, x)
		}
		for _, r := range p.IPv6Ranges {
			x := base
			x.CIDRv6, x.Description = canonicalCIDR(r.CIDRIPv6), r.Description
			out = append(out, x)
		}
		for _, r := range p.PrefixLists {
			x := base
			x.PrefixList, x.Description = r.ListID, r.Description
			out = append(out, x)
		}
	}
	return out
}

// permission is the IpPermission of one rule.
func (r rule) permission() ec2types.IpPermission {
	p := ec2types.IpPermission{IpProtocol: aws.String(r.Protocol)}
	if hasPorts(r.Protocol) {
		p.FromPort, p.ToPort = aws.Int32(r.From), aws.Int32(r.To)
	}
	desc := aws.String(r.Description)
	if r.Description == "" {
		desc = nil
	}
	switch {
	case r.CIDRv4 != "":
		p.IpRanges = []ec2types.IpRange{{CidrIp: aws.String(r.CIDRv4), Description: desc}}
	case r.CIDRv6 != "":
		p.Ipv6Ranges = []ec2types.Ipv6Range{{CidrIpv6: aws.String(r.CIDRv6), Description: desc}}
	case r.PrefixList != "":
		p.PrefixListIds = []ec2types.PrefixListId{{PrefixListId: aws.String(r.PrefixList), Description: desc}}
	case r.Group != "":
		p.UserIdGroupPairs = []ec2types.UserIdGroupPair{{GroupId: aws.String(r.Group), Description: desc}}
	}
	return p
}

func permissions(rules []rule) []ec2types.IpPermission {
	out := make([]ec2types.IpPermission, 0, len(rules))
	for _, r := range rules {
		out = append(out, r.permission())
	}
	return out
}

func dedupeRules(rules []rule) []rule {
	seen := map[string]bool{}
	var out []rule
	for _, r := range rules {
		if !seen[r.key()] {
			seen[r.key()] = true
			out = append(out, r)
		}
	}
	return out
}

// ingressDiff returns the desired rules the group lacks and the owned rules it has but should
// not. A desired rule that exists without the owner's description (a user's identical rule)
// satisfies it: EC2 would refuse a duplicate.
func ingressDiff(actual, desired []rule, owned func(rule) bool) (grant, revoke []rule) {
	have := map[string]bool{}
	for _, r := range actual {
		have[r.key()] = true
	}
	want := map[string]bool{}
	for _, r := range dedupeRules(desired) {
		want[r.key()] = true
		if !have[r.key()] {
			grant = append(grant, r)
		}
	}
	for _, r := range actual {
		if owned(r) && !want[r.key()] {
			revoke = append(revoke, r)
		}
	}
	return grant, revoke
}

// describeGroup returns one security group.
func (d *Deployer) describeGroup(ctx context.Context, id string) (ec2types.SecurityGroup, error) {
	out, err := d.ec2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: []string{id}})
	if err != nil {
		return ec2types.SecurityGroup{}, fmt.Errorf("describe security group %s: %w", id, err)
	}
	if len(out.SecurityGroups) != 1 {
		return ec2types.SecurityGroup{}, fmt.Errorf("describe security group %s: got %d groups", id, len(out.SecurityGroups))
	}
	return out.SecurityGroups[0], nil
}

// findGroups returns the VPC's security groups matching the filters (besides vpc-id).
func (d *Deployer) findGroups(ctx context.Context, filters ...ec2types.Filter) ([]ec2types.SecurityGroup, error) {
	in := &ec2.DescribeSecurityGroupsInput{Filters: append([]ec2types.Filter{filter("vpc-id", d.opts.Model.VPCID)}, filters...)}
	var out []ec2types.SecurityGroup
	for {
		resp, err := d.ec2.DescribeSecurityGroups(ctx, in)
		if err != nil {
			return nil, fmt.Errorf("describe security groups: %w", err)
		}
		out = append(out, resp.SecurityGroups...)
		if aws.ToString(resp.NextToken) == "" {
			return out, nil
		}
		in.NextToken = resp.NextToken
	}
}

func filter(name string, values ...string) ec2types.Filter {
	return ec2types.Filter{Name: aws.String(name), Values: values}
}

func tagFilters(tags map[string]string) []ec2types.Filter {
	var out []ec2types.Filter
	for _, k := range sortedKeys(tags) {
		out = append(out, filter("tag:"+k, tags[k]))
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// reconcileIngress makes the inbound rules of group sg that owned selects exactly desired:
// authorize what is missing (first, so traffic never lapses), then revoke what is extra, unless
// authorizeOnly. Outbound rules are never touched. A concurrent change (a duplicate or a rule
// already gone) is resolved by reading the group again once.
func (d *Deployer) reconcileIngress(ctx context.Context, sg ec2types.SecurityGroup, desired []rule, owned func(rule) bool, authorizeOnly bool) error {
	id := aws.ToString(sg.GroupId)
	for attempt := 0; ; attempt++ {
		have := expandAll(sg.IpPermissions)
		grant, revoke := ingressDiff(have, desired, owned)
		if authorizeOnly {
			// Only make sure the traffic is allowed: a rule of ours that already covers a
			// desired one (a wider aggregate written when every binding was known) stays
			// as it is, so that a restarted controller changes nothing.
			revoke = nil
			grant = slices.DeleteFunc(grant, func(r rule) bool {
				return slices.ContainsFunc(have, func(h rule) bool { return owned(h) && h.covers(r) })
			})
		}
		err := d.applyIngress(ctx, id, grant, revoke)
		if err == nil || attempt > 0 {
			return err
		}
		switch errorCode(err) {
		case "InvalidPermission.Duplicate", "InvalidPermission.NotFound":
		default:
			return err
		}
		if sg, err = d.describeGroup(ctx, id); err != nil {
			return err
		}
	}
}

func (d *Deployer) applyIngress(ctx context.Context, id string, grant, revoke []rule) error {
	authorize := func() error {
		if len(grant) == 0 {
			return nil
		}
		_, err := d.ec2.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: aws.String(id), IpPermissions: permissions(grant)})
		if err != nil {
			return fmt.Errorf("authorize ingress on %s (%v): %w", id, grant, err)
		}
		return nil
	}
	revokeAll := func() error {
		if len(revoke) == 0 {
			return nil
		}
		_, err := d.ec2.RevokeSecurityGroupIngress(ctx, &ec2.RevokeSecurityGroupIngressInput{GroupId: aws.String(id), IpPermissions: permissions(revoke)})
		if err != nil {
			return fmt.Errorf("revoke ingress on %s (%v): %w", id, revoke, err)
		}
		return nil
	}
	err := authorize()
	if errorCode(err) == "RulesPerSecurityGroupLimitExceeded" && len(revoke) > 0 {
		// Make room first.
		if err := revokeAll(); err != nil {
			return err
		}
		return authorize()
	}
	if err != nil {
		return err
	}
	return revokeAll()
}

// revokeReferencing revokes, from every group of the VPC, the inbound rules whose source is
// group src and that owned selects: the rules a group must lose before it can be deleted.
func (d *Deployer) revokeReferencing(ctx context.Context, src string, owned func(rule) bool) error {
	groups, err := d.findGroups(ctx, filter("ip-permission.group-id", src))
	if err != nil {
		return err
	}
	for _, g := range groups {
		var revoke []rule
		for _, r := range expandAll(g.IpPermissions) {
			if r.Group == src && owned(r) {
				revoke = append(revoke, r)
			}
		}
		if err := d.applyIngress(ctx, aws.ToString(g.GroupId), nil, revoke); err != nil && errorCode(err) != "InvalidPermission.NotFound" {
			return err
		}
	}
	return nil
}

// deleteGroup deletes a security group, retrying while a dependency (a load balancer's or an
// interface's attachment, another group's rule) is going away. A group already gone is fine.
func (d *Deployer) deleteGroup(ctx context.Context, id string) error {
	err := retryOn(ctx, d.opts.DeleteRetry, func() error {
		_, err := d.ec2.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupId: aws.String(id)})
		return err
	}, "DependencyViolation")
	if errorCode(err) == "InvalidGroup.NotFound" {
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete security group %s: %w", id, err)
	}
	return nil
}

func ownedByBinding(r rule) bool { return r.Description == model.TargetGroupBindingRuleDescription }

func ownsAll(rule) bool { return true }
