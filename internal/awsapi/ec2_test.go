package awsapi_test

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/moatlb/moat/internal/cloud"
)

func (e *env) createGroup(t *testing.T, name string, tags ...types.Tag) string {
	t.Helper()
	in := &ec2.CreateSecurityGroupInput{GroupName: aws.String(name), Description: aws.String("group " + name)}
	if len(tags) > 0 {
		in.TagSpecifications = []types.TagSpecification{{ResourceType: types.ResourceTypeSecurityGroup, Tags: tags}}
	}
	out, err := e.EC2.CreateSecurityGroup(e.ctx, in)
	if err != nil {
		t.Fatalf("create group %s: %v", name, err)
	}
	return *out.GroupId
}

func (e *env) group(t *testing.T, id string) types.SecurityGroup {
	t.Helper()
	out, err := e.EC2.DescribeSecurityGroups(e.ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: []string{id}})
	if err != nil {
		t.Fatalf("describe %s: %v", id, err)
	}
	if len(out.SecurityGroups) != 1 {
		t.Fatalf("describe %s: %d groups", id, len(out.SecurityGroups))
	}
	return out.SecurityGroups[0]
}

func tcp(from, to int32, cidrs ...string) types.IpPermission {
	p := types.IpPermission{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(from), ToPort: aws.Int32(to)}
	for _, c := range cidrs {
		p.IpRanges = append(p.IpRanges, types.IpRange{CidrIp: aws.String(c)})
	}
	return p
}

// ruleCount counts the rules (permission × peer) a described permission list holds.
func ruleCount(perms []types.IpPermission) int {
	n := 0
	for _, p := range perms {
		n += len(p.IpRanges) + len(p.Ipv6Ranges) + len(p.UserIdGroupPairs) + len(p.PrefixListIds)
	}
	return n
}

func TestCreateSecurityGroup(t *testing.T) {
	e := newEnv(t)
	out, err := e.EC2.CreateSecurityGroup(e.ctx, &ec2.CreateSecurityGroupInput{
		GroupName:   aws.String("web"),
		Description: aws.String("web servers"),
		TagSpecifications: []types.TagSpecification{{
			ResourceType: types.ResourceTypeSecurityGroup,
			Tags:         []types.Tag{{Key: aws.String("elbv2.k8s.aws/cluster"), Value: aws.String("demo")}, {Key: aws.String("empty"), Value: aws.String("")}},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	id := *out.GroupId
	if !strings.HasPrefix(id, "sg-") || len(id) != 20 {
		t.Errorf("group id %q: want sg- and 17 hex digits", id)
	}
	if want := "arn:aws:ec2:us-east-1:123456789012:security-group/" + id; aws.ToString(out.SecurityGroupArn) != want {
		t.Errorf("arn %q, want %q", aws.ToString(out.SecurityGroupArn), want)
	}
	if len(out.Tags) != 2 {
		t.Errorf("create returned tags %v", out.Tags)
	}

	sg := e.group(t, id)
	if aws.ToString(sg.GroupName) != "web" || aws.ToString(sg.Description) != "web servers" || aws.ToString(sg.OwnerId) != "123456789012" {
		t.Errorf("described %+v", sg)
	}
	vpcs := must[*ec2.DescribeVpcsOutput](t)(e.EC2.DescribeVpcs(e.ctx, &ec2.DescribeVpcsInput{}))
	if aws.ToString(sg.VpcId) != aws.ToString(vpcs.Vpcs[0].VpcId) {
		t.Errorf("group in %s, want the default VPC %s", aws.ToString(sg.VpcId), aws.ToString(vpcs.Vpcs[0].VpcId))
	}
	if len(sg.IpPermissions) != 0 {
		t.Errorf("a new group has inbound rules: %+v", sg.IpPermissions)
	}
	if len(sg.IpPermissionsEgress) != 1 || aws.ToString(sg.IpPermissionsEgress[0].IpProtocol) != "-1" ||
		aws.ToString(sg.IpPermissionsEgress[0].IpRanges[0].CidrIp) != "0.0.0.0/0" || sg.IpPermissionsEgress[0].FromPort != nil {
		t.Errorf("a new group must have one allow-all outbound rule, has %+v", sg.IpPermissionsEgress)
	}
}

func TestCreateSecurityGroupErrors(t *testing.T) {
	e := newEnv(t)
	e.createGroup(t, "taken")
	cases := []struct {
		name       string
		group, vpc string
		desc       *string
		code       string
	}{
		{"duplicate name", "taken", "", aws.String("d"), "InvalidGroup.Duplicate"},
		{"duplicate name ignores case", "TAKEN", "", aws.String("d"), "InvalidGroup.Duplicate"},
		{"empty description", "nodesc", "", aws.String(""), "MissingParameter"},
		{"missing name", "", "", aws.String("d"), "MissingParameter"},
		{"sg- prefix", "sg-lookalike", "", aws.String("d"), "InvalidParameterValue"},
		{"name too long", strings.Repeat("n", 256), "", aws.String("d"), "InvalidParameterValue"},
		{"invalid characters", "naïve", "", aws.String("d"), "InvalidParameterValue"},
		{"unknown vpc", "x", "vpc-0000000000000000f", aws.String("d"), "InvalidVpcID.NotFound"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := &ec2.CreateSecurityGroupInput{GroupName: aws.String(tc.group), Description: tc.desc}
			if tc.vpc != "" {
				in.VpcId = aws.String(tc.vpc)
			}
			_, err := e.EC2.CreateSecurityGroup(e.ctx, in)
			wantCode(t, err, tc.code)
		})
	}
	_, err := e.EC2.CreateSecurityGroup(e.ctx, &ec2.CreateSecurityGroupInput{
		GroupName: aws.String("badtags"), Description: aws.String("d"),
		TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeInstance, Tags: []types.Tag{{Key: aws.String("k"), Value: aws.String("v")}}}},
	})
	wantCode(t, err, "InvalidParameterValue")
	groups := must[*ec2.DescribeSecurityGroupsOutput](t)(e.EC2.DescribeSecurityGroups(e.ctx, &ec2.DescribeSecurityGroupsInput{
		Filters: []types.Filter{{Name: aws.String("group-name"), Values: []string{"badtags", "nodesc", "x"}}},
	}))
	if len(groups.SecurityGroups) != 0 {
		t.Errorf("failed creates left groups behind: %+v", groups.SecurityGroups)
	}
}

func TestAuthorizeIngress(t *testing.T) {
	e := newEnv(t)
	id := e.createGroup(t, "front")
	peer := e.createGroup(t, "backend")
	out, err := e.EC2.AuthorizeSecurityGroupIngress(e.ctx, &ec2.AuthorizeSecurityGroupIngressInput{
		GroupId: aws.String(id),
		IpPermissions: []types.IpPermission{
			{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(80), ToPort: aws.Int32(80),
				IpRanges:   []types.IpRange{{CidrIp: aws.String("10.0.0.18/8"), Description: aws.String("kubernetes.io/rule/nlb/client=10.0.0.0/8")}, {CidrIp: aws.String("127.0.0.2/32")}},
				Ipv6Ranges: []types.Ipv6Range{{CidrIpv6: aws.String("2001:db8::1/32")}}},
			{IpProtocol: aws.String("6"), FromPort: aws.Int32(443), ToPort: aws.Int32(443),
				UserIdGroupPairs: []types.UserIdGroupPair{{GroupId: aws.String(peer), Description: aws.String("from backend")}}},
			{IpProtocol: aws.String("icmp"), FromPort: aws.Int32(3), ToPort: aws.Int32(4), IpRanges: []types.IpRange{{CidrIp: aws.String("0.0.0.0/0")}}},
			{IpProtocol: aws.String("-1"), IpRanges: []types.IpRange{{CidrIp: aws.String("192.168.1.0/24")}}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !aws.ToBool(out.Return) || len(out.SecurityGroupRules) != 6 {
		t.Fatalf("authorize returned %v with %d rules, want 6", aws.ToBool(out.Return), len(out.SecurityGroupRules))
	}
	for _, r := range out.SecurityGroupRules {
		if !strings.HasPrefix(aws.ToString(r.SecurityGroupRuleId), "sgr-") || aws.ToString(r.GroupId) != id || aws.ToBool(r.IsEgress) {
			t.Errorf("rule %+v", r)
		}
	}
	if got := aws.ToString(out.SecurityGroupRules[0].CidrIpv4); got != "10.0.0.0/8" {
		t.Errorf("CIDR not canonicalised: %s", got)
	}
	if got := aws.ToString(out.SecurityGroupRules[2].CidrIpv6); got != "2001:db8::/32" {
		t.Errorf("IPv6 CIDR not canonicalised: %s", got)
	}
	if got := aws.ToString(out.SecurityGroupRules[3].IpProtocol); got != "tcp" {
		t.Errorf("protocol 6 answered as %q, want tcp", got)
	}

	sg := e.group(t, id)
	if len(sg.IpPermissions) != 4 || ruleCount(sg.IpPermissions) != 6 {
		t.Fatalf("want 6 rules in 4 permissions, got %+v", sg.IpPermissions)
	}
	p80 := sg.IpPermissions[0]
	if len(p80.IpRanges) != 2 || len(p80.Ipv6Ranges) != 1 || aws.ToString(p80.IpRanges[0].Description) != "kubernetes.io/rule/nlb/client=10.0.0.0/8" {
		t.Errorf("port 80 permission %+v", p80)
	}
	if pair := sg.IpPermissions[1].UserIdGroupPairs; len(pair) != 1 || aws.ToString(pair[0].GroupId) != peer || aws.ToString(pair[0].UserId) != "123456789012" {
		t.Errorf("group pair %+v", pair)
	}
	if all := sg.IpPermissions[3]; aws.ToString(all.IpProtocol) != "-1" || all.FromPort != nil || all.ToPort != nil {
		t.Errorf("-1 permission must have no ports: %+v", all)
	}
}

func TestAuthorizeIngressErrors(t *testing.T) {
	e := newEnv(t)
	id := e.createGroup(t, "front")
	must[*ec2.AuthorizeSecurityGroupIngressOutput](t)(e.EC2.AuthorizeSecurityGroupIngress(e.ctx, &ec2.AuthorizeSecurityGroupIngressInput{
		GroupId: aws.String(id), IpPermissions: []types.IpPermission{tcp(22, 22, "0.0.0.0/0")},
	}))
	cases := []struct {
		name  string
		group string
		perms []types.IpPermission
		code  string
	}{
		{"duplicate", id, []types.IpPermission{tcp(22, 22, "0.0.0.0/0")}, "InvalidPermission.Duplicate"},
		{"duplicate by protocol number", id, []types.IpPermission{{IpProtocol: aws.String("6"), FromPort: aws.Int32(22), ToPort: aws.Int32(22), IpRanges: []types.IpRange{{CidrIp: aws.String("0.0.0.0/0")}}}}, "InvalidPermission.Duplicate"},
		{"duplicate within the request", id, []types.IpPermission{tcp(23, 23, "1.2.3.4/32", "1.2.3.4/32")}, "InvalidPermission.Duplicate"},
		{"bad cidr", id, []types.IpPermission{tcp(80, 80, "10.0.0.0/33")}, "InvalidParameterValue"},
		{"not a cidr", id, []types.IpPermission{tcp(80, 80, "ten")}, "InvalidParameterValue"},
		{"ipv6 in cidrIp", id, []types.IpPermission{tcp(80, 80, "::/0")}, "InvalidParameterValue"},
		{"port too large", id, []types.IpPermission{tcp(80, 65536, "10.0.0.0/8")}, "InvalidParameterValue"},
		{"reversed ports", id, []types.IpPermission{tcp(90, 80, "10.0.0.0/8")}, "InvalidParameterValue"},
		{"tcp without ports", id, []types.IpPermission{{IpProtocol: aws.String("tcp"), IpRanges: []types.IpRange{{CidrIp: aws.String("10.0.0.0/8")}}}}, "InvalidParameterValue"},
		{"unknown protocol", id, []types.IpPermission{{IpProtocol: aws.String("sctpx"), IpRanges: []types.IpRange{{CidrIp: aws.String("10.0.0.0/8")}}}}, "InvalidParameterValue"},
		{"protocol out of range", id, []types.IpPermission{{IpProtocol: aws.String("256"), IpRanges: []types.IpRange{{CidrIp: aws.String("10.0.0.0/8")}}}}, "InvalidParameterValue"},
		{"icmp code without type", id, []types.IpPermission{{IpProtocol: aws.String("icmp"), FromPort: aws.Int32(-1), ToPort: aws.Int32(4), IpRanges: []types.IpRange{{CidrIp: aws.String("10.0.0.0/8")}}}}, "InvalidParameterValue"},
		{"no peer", id, []types.IpPermission{{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(1), ToPort: aws.Int32(2)}}, "MissingParameter"},
		{"unknown referenced group", id, []types.IpPermission{{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(1), ToPort: aws.Int32(2), UserIdGroupPairs: []types.UserIdGroupPair{{GroupId: aws.String("sg-0123456789abcdef0")}}}}, "InvalidGroup.NotFound"},
		{"unknown prefix list", id, []types.IpPermission{{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(1), ToPort: aws.Int32(2), PrefixListIds: []types.PrefixListId{{PrefixListId: aws.String("pl-0123456789abcdef0")}}}}, "InvalidPrefixListID.NotFound"},
		{"unknown group", "sg-0123456789abcdef0", []types.IpPermission{tcp(80, 80, "10.0.0.0/8")}, "InvalidGroup.NotFound"},
		{"malformed group id", "sg-xyz", []types.IpPermission{tcp(80, 80, "10.0.0.0/8")}, "InvalidGroupId.Malformed"},
		{"description with bad characters", id, []types.IpPermission{{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(1), ToPort: aws.Int32(2), IpRanges: []types.IpRange{{CidrIp: aws.String("10.0.0.0/8"), Description: aws.String("naïve")}}}}, "InvalidParameterValue"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// A valid permission rides along: the request is all or nothing, so it must not be added.
			perms := append([]types.IpPermission{tcp(8080, 8080, "10.9.9.9/32")}, tc.perms...)
			_, err := e.EC2.AuthorizeSecurityGroupIngress(e.ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: aws.String(tc.group), IpPermissions: perms})
			wantCode(t, err, tc.code)
			if n := ruleCount(e.group(t, id).IpPermissions); n != 1 {
				t.Errorf("a failed authorize changed the group: %d rules", n)
			}
		})
	}

	_, err := e.EC2.AuthorizeSecurityGroupIngress(e.ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: aws.String(id), IpPermissions: []types.IpPermission{tcp(22, 22, "0.0.0.0/0")}})
	if !strings.Contains(err.Error(), `the specified rule "peer: 0.0.0.0/0, TCP, from port: 22, to port: 22, ALLOW" already exists`) {
		t.Errorf("duplicate message not AWS's: %v", err)
	}
}

func TestRulesPerGroupLimit(t *testing.T) {
	e := newEnv(t)
	id := e.createGroup(t, "full")
	var cidrs []string
	for i := range 60 {
		cidrs = append(cidrs, fmt.Sprintf("10.0.%d.0/24", i))
	}
	must[*ec2.AuthorizeSecurityGroupIngressOutput](t)(e.EC2.AuthorizeSecurityGroupIngress(e.ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: aws.String(id), IpPermissions: []types.IpPermission{tcp(80, 80, cidrs...)}}))
	_, err := e.EC2.AuthorizeSecurityGroupIngress(e.ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: aws.String(id), IpPermissions: []types.IpPermission{tcp(81, 81, "10.1.0.0/16")}})
	wantCode(t, err, "RulesPerSecurityGroupLimitExceeded")
	// IPv6 rules have their own 60.
	must[*ec2.AuthorizeSecurityGroupIngressOutput](t)(e.EC2.AuthorizeSecurityGroupIngress(e.ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: aws.String(id), IpPermissions: []types.IpPermission{{
		IpProtocol: aws.String("tcp"), FromPort: aws.Int32(80), ToPort: aws.Int32(80), Ipv6Ranges: []types.Ipv6Range{{CidrIpv6: aws.String("::/0")}},
	}}}))
	if n := ruleCount(e.group(t, id).IpPermissions); n != 61 {
		t.Errorf("%d rules, want 61", n)
	}
}

func TestRevokeIngress(t *testing.T) {
	e := newEnv(t)
	id := e.createGroup(t, "front")
	added := must[*ec2.AuthorizeSecurityGroupIngressOutput](t)(e.EC2.AuthorizeSecurityGroupIngress(e.ctx, &ec2.AuthorizeSecurityGroupIngressInput{
		GroupId: aws.String(id), IpPermissions: []types.IpPermission{tcp(80, 80, "10.0.0.0/8", "172.16.0.0/12"), tcp(443, 443, "0.0.0.0/0")},
	}))

	// A revoke that names one missing rule revokes nothing.
	_, err := e.EC2.RevokeSecurityGroupIngress(e.ctx, &ec2.RevokeSecurityGroupIngressInput{GroupId: aws.String(id), IpPermissions: []types.IpPermission{tcp(80, 80, "10.0.0.0/8"), tcp(81, 81, "10.0.0.0/8")}})
	wantCode(t, err, "InvalidPermission.NotFound")
	if n := ruleCount(e.group(t, id).IpPermissions); n != 3 {
		t.Fatalf("failed revoke removed rules: %d left", n)
	}

	// Exact match, description ignored, CIDR canonicalised before matching.
	out := must[*ec2.RevokeSecurityGroupIngressOutput](t)(e.EC2.RevokeSecurityGroupIngress(e.ctx, &ec2.RevokeSecurityGroupIngressInput{GroupId: aws.String(id), IpPermissions: []types.IpPermission{{
		IpProtocol: aws.String("TCP"), FromPort: aws.Int32(80), ToPort: aws.Int32(80), IpRanges: []types.IpRange{{CidrIp: aws.String("10.1.2.3/8"), Description: aws.String("ignored")}},
	}}}))
	if len(out.RevokedSecurityGroupRules) != 1 || aws.ToString(out.RevokedSecurityGroupRules[0].CidrIpv4) != "10.0.0.0/8" {
		t.Errorf("revoked %+v", out.RevokedSecurityGroupRules)
	}

	// By rule ID.
	ruleID := aws.ToString(added.SecurityGroupRules[2].SecurityGroupRuleId)
	must[*ec2.RevokeSecurityGroupIngressOutput](t)(e.EC2.RevokeSecurityGroupIngress(e.ctx, &ec2.RevokeSecurityGroupIngressInput{GroupId: aws.String(id), SecurityGroupRuleIds: []string{ruleID}}))
	_, err = e.EC2.RevokeSecurityGroupIngress(e.ctx, &ec2.RevokeSecurityGroupIngressInput{GroupId: aws.String(id), SecurityGroupRuleIds: []string{ruleID}})
	wantCode(t, err, "InvalidSecurityGroupRuleId.NotFound")

	sg := e.group(t, id)
	if ruleCount(sg.IpPermissions) != 1 || aws.ToString(sg.IpPermissions[0].IpRanges[0].CidrIp) != "172.16.0.0/12" {
		t.Errorf("left %+v", sg.IpPermissions)
	}
}

func TestEgressRules(t *testing.T) {
	e := newEnv(t)
	id := e.createGroup(t, "lb")
	allOut := types.IpPermission{IpProtocol: aws.String("-1"), IpRanges: []types.IpRange{{CidrIp: aws.String("0.0.0.0/0")}}}
	must[*ec2.RevokeSecurityGroupEgressOutput](t)(e.EC2.RevokeSecurityGroupEgress(e.ctx, &ec2.RevokeSecurityGroupEgressInput{GroupId: aws.String(id), IpPermissions: []types.IpPermission{allOut}}))
	if sg := e.group(t, id); len(sg.IpPermissionsEgress) != 0 {
		t.Fatalf("egress left: %+v", sg.IpPermissionsEgress)
	}
	must[*ec2.AuthorizeSecurityGroupEgressOutput](t)(e.EC2.AuthorizeSecurityGroupEgress(e.ctx, &ec2.AuthorizeSecurityGroupEgressInput{GroupId: aws.String(id), IpPermissions: []types.IpPermission{tcp(8080, 8080, "127.1.0.0/16")}}))
	_, err := e.EC2.AuthorizeSecurityGroupEgress(e.ctx, &ec2.AuthorizeSecurityGroupEgressInput{GroupId: aws.String(id), IpPermissions: []types.IpPermission{tcp(8080, 8080, "127.1.0.0/16")}})
	wantCode(t, err, "InvalidPermission.Duplicate")
	rules := must[*ec2.DescribeSecurityGroupRulesOutput](t)(e.EC2.DescribeSecurityGroupRules(e.ctx, &ec2.DescribeSecurityGroupRulesInput{Filters: []types.Filter{{Name: aws.String("group-id"), Values: []string{id}}}}))
	if len(rules.SecurityGroupRules) != 1 || !aws.ToBool(rules.SecurityGroupRules[0].IsEgress) || aws.ToInt32(rules.SecurityGroupRules[0].FromPort) != 8080 {
		t.Errorf("rules %+v", rules.SecurityGroupRules)
	}
}

func TestDescribeSecurityGroupsFiltersAndPages(t *testing.T) {
	e := newEnv(t)
	var ids []string
	for i := range 12 {
		tag := types.Tag{Key: aws.String("elbv2.k8s.aws/cluster"), Value: aws.String(fmt.Sprintf("c%d", i%3))}
		stack := types.Tag{Key: aws.String("service.k8s.aws/stack"), Value: aws.String(fmt.Sprintf("s%d", i%6))}
		ids = append(ids, e.createGroup(t, fmt.Sprintf("g%02d", i), tag, stack))
	}
	count := func(filters ...types.Filter) int {
		out := must[*ec2.DescribeSecurityGroupsOutput](t)(e.EC2.DescribeSecurityGroups(e.ctx, &ec2.DescribeSecurityGroupsInput{Filters: filters}))
		return len(out.SecurityGroups)
	}
	f := func(name string, values ...string) types.Filter {
		return types.Filter{Name: aws.String(name), Values: values}
	}
	vpc := aws.ToString(e.group(t, ids[0]).VpcId)
	for _, tc := range []struct {
		filters []types.Filter
		want    int
	}{
		{[]types.Filter{f("tag:elbv2.k8s.aws/cluster", "c1")}, 4},
		{[]types.Filter{f("tag:elbv2.k8s.aws/cluster", "c1", "c2")}, 8},
		{[]types.Filter{f("tag-key", "elbv2.k8s.aws/cluster")}, 12},
		{[]types.Filter{f("tag:elbv2.k8s.aws/cluster", "c1"), f("group-name", "g01", "g02")}, 1},
		// Two tag filters, the narrower first or last: both hold for every group answered.
		{[]types.Filter{f("tag:elbv2.k8s.aws/cluster", "c1"), f("tag:service.k8s.aws/stack", "s1")}, 2},
		{[]types.Filter{f("tag:service.k8s.aws/stack", "s1", "s2"), f("tag:elbv2.k8s.aws/cluster", "c1", "c2")}, 4},
		{[]types.Filter{f("tag:service.k8s.aws/stack", "s1"), f("tag:elbv2.k8s.aws/cluster", "c2")}, 0},
		{[]types.Filter{f("group-name", "g1*")}, 2},
		{[]types.Filter{f("group-id", ids[3])}, 1},
		{[]types.Filter{f("vpc-id", vpc), f("tag-key", "elbv2.k8s.aws/cluster")}, 12},
		{[]types.Filter{f("vpc-id", "vpc-00000000000000000")}, 0},
	} {
		if got := count(tc.filters...); got != tc.want {
			t.Errorf("filters %v: %d groups, want %d", tc.filters, got, tc.want)
		}
	}
	_, err := e.EC2.DescribeSecurityGroups(e.ctx, &ec2.DescribeSecurityGroupsInput{Filters: []types.Filter{f("no-such-filter", "x")}})
	wantCode(t, err, "InvalidParameterValue")

	var seen []string
	pages := ec2.NewDescribeSecurityGroupsPaginator(e.EC2, &ec2.DescribeSecurityGroupsInput{MaxResults: aws.Int32(5), Filters: []types.Filter{f("tag-key", "elbv2.k8s.aws/cluster")}})
	n := 0
	for pages.HasMorePages() {
		page := must[*ec2.DescribeSecurityGroupsOutput](t)(pages.NextPage(e.ctx))
		n++
		for _, g := range page.SecurityGroups {
			seen = append(seen, aws.ToString(g.GroupId))
		}
	}
	slices.Sort(seen)
	slices.Sort(ids)
	if n != 3 || !slices.Equal(seen, ids) {
		t.Errorf("%d pages with %v, want 3 pages with %v", n, seen, ids)
	}
	_, err = e.EC2.DescribeSecurityGroups(e.ctx, &ec2.DescribeSecurityGroupsInput{MaxResults: aws.Int32(2)})
	wantCode(t, err, "InvalidParameterValue")
	_, err = e.EC2.DescribeSecurityGroups(e.ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: []string{ids[0]}, MaxResults: aws.Int32(5)})
	wantCode(t, err, "InvalidParameterCombination")
	_, err = e.EC2.DescribeSecurityGroups(e.ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: []string{ids[0], "sg-0123456789abcdef0"}})
	wantCode(t, err, "InvalidGroup.NotFound")
	_, err = e.EC2.DescribeSecurityGroups(e.ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: []string{"banana"}})
	wantCode(t, err, "InvalidGroupId.Malformed")
	byName := must[*ec2.DescribeSecurityGroupsOutput](t)(e.EC2.DescribeSecurityGroups(e.ctx, &ec2.DescribeSecurityGroupsInput{GroupNames: []string{"g05"}}))
	if len(byName.SecurityGroups) != 1 || aws.ToString(byName.SecurityGroups[0].GroupName) != "g05" {
		t.Errorf("by name: %+v", byName.SecurityGroups)
	}
}

func TestDeleteSecurityGroup(t *testing.T) {
	e := newEnv(t)
	target := e.createGroup(t, "target")
	source := e.createGroup(t, "source")
	must[*ec2.AuthorizeSecurityGroupIngressOutput](t)(e.EC2.AuthorizeSecurityGroupIngress(e.ctx, &ec2.AuthorizeSecurityGroupIngressInput{
		GroupId: aws.String(target), IpPermissions: []types.IpPermission{{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(80), ToPort: aws.Int32(80), UserIdGroupPairs: []types.UserIdGroupPair{{GroupId: aws.String(source)}}}},
	}))
	_, err := e.EC2.DeleteSecurityGroup(e.ctx, &ec2.DeleteSecurityGroupInput{GroupId: aws.String(source)})
	wantCode(t, err, "DependencyViolation")

	// A group on an instance's interface cannot go either.
	nodes := must[*ec2.DescribeSecurityGroupsOutput](t)(e.EC2.DescribeSecurityGroups(e.ctx, &ec2.DescribeSecurityGroupsInput{Filters: []types.Filter{{Name: aws.String("group-name"), Values: []string{"moat-nodes"}}}}))
	_, err = e.EC2.DeleteSecurityGroup(e.ctx, &ec2.DeleteSecurityGroupInput{GroupId: nodes.SecurityGroups[0].GroupId})
	wantCode(t, err, "DependencyViolation")
	defaults := must[*ec2.DescribeSecurityGroupsOutput](t)(e.EC2.DescribeSecurityGroups(e.ctx, &ec2.DescribeSecurityGroupsInput{GroupNames: []string{"default"}}))
	_, err = e.EC2.DeleteSecurityGroup(e.ctx, &ec2.DeleteSecurityGroupInput{GroupId: defaults.SecurityGroups[0].GroupId})
	wantCode(t, err, "CannotDelete")

	must[*ec2.DeleteSecurityGroupOutput](t)(e.EC2.DeleteSecurityGroup(e.ctx, &ec2.DeleteSecurityGroupInput{GroupId: aws.String(target)}))
	must[*ec2.DeleteSecurityGroupOutput](t)(e.EC2.DeleteSecurityGroup(e.ctx, &ec2.DeleteSecurityGroupInput{GroupName: aws.String("source")}))
	_, err = e.EC2.DescribeSecurityGroups(e.ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: []string{target}})
	wantCode(t, err, "InvalidGroup.NotFound")
	_, err = e.EC2.DeleteSecurityGroup(e.ctx, &ec2.DeleteSecurityGroupInput{GroupId: aws.String(target)})
	wantCode(t, err, "InvalidGroup.NotFound")
}

func TestTags(t *testing.T) {
	e := newEnv(t)
	id := e.createGroup(t, "tagged", types.Tag{Key: aws.String("a"), Value: aws.String("1")})
	must[*ec2.CreateTagsOutput](t)(e.EC2.CreateTags(e.ctx, &ec2.CreateTagsInput{Resources: []string{id}, Tags: []types.Tag{{Key: aws.String("b"), Value: aws.String("2")}, {Key: aws.String("a"), Value: aws.String("3")}}}))
	tags := map[string]string{}
	for _, tag := range e.group(t, id).Tags {
		tags[*tag.Key] = *tag.Value
	}
	if tags["a"] != "3" || tags["b"] != "2" || len(tags) != 2 {
		t.Errorf("tags %v", tags)
	}
	// With a value, only a matching tag goes.
	must[*ec2.DeleteTagsOutput](t)(e.EC2.DeleteTags(e.ctx, &ec2.DeleteTagsInput{Resources: []string{id}, Tags: []types.Tag{{Key: aws.String("a"), Value: aws.String("wrong")}, {Key: aws.String("b")}}}))
	if got := e.group(t, id).Tags; len(got) != 1 || *got[0].Key != "a" {
		t.Errorf("after delete: %v", got)
	}
	_, err := e.EC2.CreateTags(e.ctx, &ec2.CreateTagsInput{Resources: []string{id}, Tags: []types.Tag{{Key: aws.String("aws:reserved"), Value: aws.String("x")}}})
	wantCode(t, err, "InvalidParameterValue")
	_, err = e.EC2.CreateTags(e.ctx, &ec2.CreateTagsInput{Resources: []string{"sg-0123456789abcdef0"}, Tags: []types.Tag{{Key: aws.String("k"), Value: aws.String("v")}}})
	wantCode(t, err, "InvalidGroup.NotFound")
	var many []types.Tag
	for i := range 50 {
		many = append(many, types.Tag{Key: aws.String(fmt.Sprintf("k%d", i)), Value: aws.String("v")})
	}
	_, err = e.EC2.CreateTags(e.ctx, &ec2.CreateTagsInput{Resources: []string{id}, Tags: many})
	wantCode(t, err, "TagLimitExceeded")
}

func TestInventoryDescribes(t *testing.T) {
	e := newEnv(t)
	vpcs := must[*ec2.DescribeVpcsOutput](t)(e.EC2.DescribeVpcs(e.ctx, &ec2.DescribeVpcsInput{}))
	if len(vpcs.Vpcs) != 1 || aws.ToString(vpcs.Vpcs[0].CidrBlock) != "127.0.0.0/8" || !aws.ToBool(vpcs.Vpcs[0].IsDefault) ||
		vpcs.Vpcs[0].CidrBlockAssociationSet[0].CidrBlockState.State != types.VpcCidrBlockStateCodeAssociated {
		t.Fatalf("vpcs %+v", vpcs.Vpcs)
	}
	vpcID := aws.ToString(vpcs.Vpcs[0].VpcId)
	subnets := must[*ec2.DescribeSubnetsOutput](t)(e.EC2.DescribeSubnets(e.ctx, &ec2.DescribeSubnetsInput{Filters: []types.Filter{
		{Name: aws.String("vpc-id"), Values: []string{vpcID}}, {Name: aws.String("tag:kubernetes.io/role/internal-elb"), Values: []string{"", "1"}},
	}}))
	if len(subnets.Subnets) != 2 {
		t.Fatalf("subnets %+v", subnets.Subnets)
	}
	zones := map[string]string{}
	for _, s := range subnets.Subnets {
		zones[aws.ToString(s.AvailabilityZone)] = aws.ToString(s.CidrBlock)
		if aws.ToInt32(s.AvailableIpAddressCount) < 8 || aws.ToString(s.AvailabilityZoneId) == "" {
			t.Errorf("subnet %+v", s)
		}
	}
	if zones["us-east-1a"] != "127.1.0.0/16" || zones["us-east-1b"] != "127.2.0.0/16" {
		t.Errorf("zones %v", zones)
	}
	_, err := e.EC2.DescribeSubnets(e.ctx, &ec2.DescribeSubnetsInput{SubnetIds: []string{"subnet-00000000000000000"}})
	wantCode(t, err, "InvalidSubnetID.NotFound")

	azs := must[*ec2.DescribeAvailabilityZonesOutput](t)(e.EC2.DescribeAvailabilityZones(e.ctx, &ec2.DescribeAvailabilityZonesInput{}))
	if len(azs.AvailabilityZones) != 2 || aws.ToString(azs.AvailabilityZones[0].ZoneId) != "use1-az1" || aws.ToString(azs.AvailabilityZones[0].ZoneType) != "availability-zone" {
		t.Errorf("zones %+v", azs.AvailabilityZones)
	}
	rts := must[*ec2.DescribeRouteTablesOutput](t)(e.EC2.DescribeRouteTables(e.ctx, &ec2.DescribeRouteTablesInput{Filters: []types.Filter{{Name: aws.String("vpc-id"), Values: []string{vpcID}}}}))
	if len(rts.RouteTables) != 1 || !aws.ToBool(rts.RouteTables[0].Associations[0].Main) {
		t.Errorf("route tables %+v", rts.RouteTables)
	}
	// Terraform finds a VPC's main route table with association.main.
	for value, want := range map[string]int{"true": 1, "false": 0} {
		rts := must[*ec2.DescribeRouteTablesOutput](t)(e.EC2.DescribeRouteTables(e.ctx, &ec2.DescribeRouteTablesInput{Filters: []types.Filter{
			{Name: aws.String("vpc-id"), Values: []string{vpcID}}, {Name: aws.String("association.main"), Values: []string{value}}}}))
		if len(rts.RouteTables) != want {
			t.Errorf("association.main=%s: %d route tables, want %d", value, len(rts.RouteTables), want)
		}
	}
	// A subnet nobody changed answers AWS's defaults for what Terraform reads into its state.
	if s := subnets.Subnets[0]; s.PrivateDnsNameOptionsOnLaunch == nil || s.PrivateDnsNameOptionsOnLaunch.HostnameType != types.HostnameTypeIpName ||
		aws.ToBool(s.EnableDns64) || s.BlockPublicAccessStates == nil || s.BlockPublicAccessStates.InternetGatewayBlockMode != types.BlockPublicAccessModeOff {
		t.Errorf("subnet defaults: private DNS %+v, DNS64 %v, block public access %+v", s.PrivateDnsNameOptionsOnLaunch, aws.ToBool(s.EnableDns64), s.BlockPublicAccessStates)
	}

	insts := must[*ec2.DescribeInstancesOutput](t)(e.EC2.DescribeInstances(e.ctx, &ec2.DescribeInstancesInput{}))
	if len(insts.Reservations) != 2 {
		t.Fatalf("reservations %+v", insts.Reservations)
	}
	inst := insts.Reservations[0].Instances[0]
	if inst.State.Name != types.InstanceStateNameRunning || len(inst.NetworkInterfaces) != 1 || aws.ToInt32(inst.NetworkInterfaces[0].Attachment.DeviceIndex) != 0 ||
		len(inst.NetworkInterfaces[0].Groups) != 1 || aws.ToString(inst.NetworkInterfaces[0].Groups[0].GroupName) != "moat-nodes" {
		t.Errorf("instance %+v", inst)
	}
	eniID := aws.ToString(inst.NetworkInterfaces[0].NetworkInterfaceId)
	byIP := must[*ec2.DescribeNetworkInterfacesOutput](t)(e.EC2.DescribeNetworkInterfaces(e.ctx, &ec2.DescribeNetworkInterfacesInput{Filters: []types.Filter{
		{Name: aws.String("vpc-id"), Values: []string{vpcID}}, {Name: aws.String("addresses.private-ip-address"), Values: []string{aws.ToString(inst.PrivateIpAddress)}},
	}}))
	if len(byIP.NetworkInterfaces) != 1 || aws.ToString(byIP.NetworkInterfaces[0].NetworkInterfaceId) != eniID {
		t.Fatalf("interfaces by ip %+v", byIP.NetworkInterfaces)
	}

	extra := e.createGroup(t, "extra")
	must[*ec2.ModifyNetworkInterfaceAttributeOutput](t)(e.EC2.ModifyNetworkInterfaceAttribute(e.ctx, &ec2.ModifyNetworkInterfaceAttributeInput{NetworkInterfaceId: aws.String(eniID), Groups: []string{extra}}))
	enis := must[*ec2.DescribeNetworkInterfacesOutput](t)(e.EC2.DescribeNetworkInterfaces(e.ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{eniID}}))
	if g := enis.NetworkInterfaces[0].Groups; len(g) != 1 || aws.ToString(g[0].GroupId) != extra {
		t.Errorf("groups after modify: %+v", g)
	}
	six := []string{}
	for i := range 6 {
		six = append(six, e.createGroup(t, fmt.Sprintf("six%d", i)))
	}
	_, err = e.EC2.ModifyNetworkInterfaceAttribute(e.ctx, &ec2.ModifyNetworkInterfaceAttributeInput{NetworkInterfaceId: aws.String(eniID), Groups: six})
	wantCode(t, err, "SecurityGroupsPerInterfaceLimitExceeded")
	_, err = e.EC2.DeleteSecurityGroup(e.ctx, &ec2.DeleteSecurityGroupInput{GroupId: aws.String(extra)})
	wantCode(t, err, "DependencyViolation")
}

func TestPrefixLists(t *testing.T) {
	e := newEnv(t)
	inv := cloud.DefaultInventory()
	inv.PrefixLists = []cloud.InventoryPrefixList{{Name: "office", MaxEntries: 10, Entries: []cloud.PrefixListEntry{{CIDR: "127.0.0.2/32", Description: "desk"}}}}
	if err := e.Cloud.ApplyInventory(inv); err != nil {
		t.Fatal(err)
	}
	lists := must[*ec2.DescribeManagedPrefixListsOutput](t)(e.EC2.DescribeManagedPrefixLists(e.ctx, &ec2.DescribeManagedPrefixListsInput{Filters: []types.Filter{{Name: aws.String("prefix-list-name"), Values: []string{"office"}}}}))
	if len(lists.PrefixLists) != 1 || aws.ToInt32(lists.PrefixLists[0].MaxEntries) != 10 {
		t.Fatalf("lists %+v", lists.PrefixLists)
	}
	plID := lists.PrefixLists[0].PrefixListId
	entries := must[*ec2.GetManagedPrefixListEntriesOutput](t)(e.EC2.GetManagedPrefixListEntries(e.ctx, &ec2.GetManagedPrefixListEntriesInput{PrefixListId: plID}))
	if len(entries.Entries) != 1 || aws.ToString(entries.Entries[0].Cidr) != "127.0.0.2/32" {
		t.Errorf("entries %+v", entries.Entries)
	}
	// A prefix list reference counts as its maximum entries against the 60-rule quota.
	id := e.createGroup(t, "office")
	perm := func(port int32) types.IpPermission {
		return types.IpPermission{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(port), ToPort: aws.Int32(port), PrefixListIds: []types.PrefixListId{{PrefixListId: plID}}}
	}
	for port := range int32(6) {
		must[*ec2.AuthorizeSecurityGroupIngressOutput](t)(e.EC2.AuthorizeSecurityGroupIngress(e.ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: aws.String(id), IpPermissions: []types.IpPermission{perm(port + 1)}}))
	}
	_, err := e.EC2.AuthorizeSecurityGroupIngress(e.ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: aws.String(id), IpPermissions: []types.IpPermission{perm(100)}})
	wantCode(t, err, "RulesPerSecurityGroupLimitExceeded")
}

func TestRequestErrors(t *testing.T) {
	e := newEnv(t)
	_, err := e.EC2.DescribeSecurityGroups(e.ctx, &ec2.DescribeSecurityGroupsInput{DryRun: aws.Bool(true)})
	wantCode(t, err, "DryRunOperation")

	wrongSecret := ec2.New(ec2.Options{Region: "us-east-1", BaseEndpoint: aws.String(e.URL), RetryMaxAttempts: 1,
		Credentials: credentials.NewStaticCredentialsProvider(testAccessKey, "not-the-secret", "")})
	_, err = wrongSecret.CreateSecurityGroup(e.ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("evil"), Description: aws.String("d")})
	wantCode(t, err, "AuthFailure")
	unknownKey := ec2.New(ec2.Options{Region: "us-east-1", BaseEndpoint: aws.String(e.URL), RetryMaxAttempts: 1,
		Credentials: credentials.NewStaticCredentialsProvider("AKIAUNKNOWN000000000", testSecret, "")})
	_, err = unknownKey.CreateSecurityGroup(e.ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("evil"), Description: aws.String("d")})
	wantCode(t, err, "AuthFailure")
	otherRegion := ec2.New(ec2.Options{Region: "eu-west-1", BaseEndpoint: aws.String(e.URL), RetryMaxAttempts: 1,
		Credentials: credentials.NewStaticCredentialsProvider(testAccessKey, testSecret, "")})
	_, err = otherRegion.CreateSecurityGroup(e.ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("evil"), Description: aws.String("d")})
	wantCode(t, err, "AuthFailure")
	if out := must[*ec2.DescribeSecurityGroupsOutput](t)(e.EC2.DescribeSecurityGroups(e.ctx, &ec2.DescribeSecurityGroupsInput{Filters: []types.Filter{{Name: aws.String("group-name"), Values: []string{"evil"}}}})); len(out.SecurityGroups) != 0 {
		t.Error("a rejected request created a group")
	}
}

// TestUpdateRuleDescriptions: descriptions change in place, by permission or by rule ID, keeping
// the rules' IDs, as Terraform updates them; a rule that does not exist changes nothing.
func TestUpdateRuleDescriptions(t *testing.T) {
	e := newEnv(t)
	id := e.createGroup(t, "front")
	added := must[*ec2.AuthorizeSecurityGroupIngressOutput](t)(e.EC2.AuthorizeSecurityGroupIngress(e.ctx, &ec2.AuthorizeSecurityGroupIngressInput{
		GroupId: aws.String(id), IpPermissions: []types.IpPermission{tcp(80, 80, "10.0.0.0/8"), tcp(443, 443, "0.0.0.0/0")},
	}))
	descriptions := func() map[string]string {
		out := map[string]string{}
		rules := must[*ec2.DescribeSecurityGroupRulesOutput](t)(e.EC2.DescribeSecurityGroupRules(e.ctx, &ec2.DescribeSecurityGroupRulesInput{
			Filters: []types.Filter{{Name: aws.String("group-id"), Values: []string{id}}},
		}))
		for _, r := range rules.SecurityGroupRules {
			if !aws.ToBool(r.IsEgress) {
				out[aws.ToString(r.SecurityGroupRuleId)] = aws.ToString(r.Description)
			}
		}
		return out
	}
	web, tls := aws.ToString(added.SecurityGroupRules[0].SecurityGroupRuleId), aws.ToString(added.SecurityGroupRules[1].SecurityGroupRuleId)

	web80 := tcp(80, 80)
	web80.IpRanges = []types.IpRange{{CidrIp: aws.String("10.0.0.0/8"), Description: aws.String("office")}}
	must[*ec2.UpdateSecurityGroupRuleDescriptionsIngressOutput](t)(e.EC2.UpdateSecurityGroupRuleDescriptionsIngress(e.ctx, &ec2.UpdateSecurityGroupRuleDescriptionsIngressInput{
		GroupId: aws.String(id), IpPermissions: []types.IpPermission{web80},
	}))
	must[*ec2.UpdateSecurityGroupRuleDescriptionsIngressOutput](t)(e.EC2.UpdateSecurityGroupRuleDescriptionsIngress(e.ctx, &ec2.UpdateSecurityGroupRuleDescriptionsIngressInput{
		GroupId: aws.String(id), SecurityGroupRuleDescriptions: []types.SecurityGroupRuleDescription{{SecurityGroupRuleId: aws.String(tls), Description: aws.String("anyone (TLS)")}},
	}))
	if got, want := descriptions(), map[string]string{web: "office", tls: "anyone (TLS)"}; !maps.Equal(got, want) {
		t.Fatalf("descriptions %v, want %v", got, want)
	}

	missing := tcp(81, 81)
	missing.IpRanges = []types.IpRange{{CidrIp: aws.String("10.0.0.0/8"), Description: aws.String("nobody")}}
	_, err := e.EC2.UpdateSecurityGroupRuleDescriptionsIngress(e.ctx, &ec2.UpdateSecurityGroupRuleDescriptionsIngressInput{
		GroupId: aws.String(id), IpPermissions: []types.IpPermission{web80, missing},
	})
	wantCode(t, err, "InvalidPermission.NotFound")
	_, err = e.EC2.UpdateSecurityGroupRuleDescriptionsIngress(e.ctx, &ec2.UpdateSecurityGroupRuleDescriptionsIngressInput{
		GroupId: aws.String(id), SecurityGroupRuleDescriptions: []types.SecurityGroupRuleDescription{{SecurityGroupRuleId: aws.String(tls), Description: aws.String("bad\x01")}},
	})
	wantCode(t, err, "InvalidParameterValue")
	_, err = e.EC2.UpdateSecurityGroupRuleDescriptionsEgress(e.ctx, &ec2.UpdateSecurityGroupRuleDescriptionsEgressInput{
		GroupId: aws.String(id), SecurityGroupRuleDescriptions: []types.SecurityGroupRuleDescription{{SecurityGroupRuleId: aws.String(web), Description: aws.String("x")}},
	})
	wantCode(t, err, "InvalidSecurityGroupRuleId.NotFound")
	if got, want := descriptions(), map[string]string{web: "office", tls: "anyone (TLS)"}; !maps.Equal(got, want) {
		t.Fatalf("failed updates changed descriptions: %v", got)
	}
}

// TestFilterSpellings: filter names as AWS takes them, both spellings where it takes both.
func TestFilterSpellings(t *testing.T) {
	e := newEnv(t)
	for _, name := range []string{"is-default", "isDefault"} {
		vpcs := must[*ec2.DescribeVpcsOutput](t)(e.EC2.DescribeVpcs(e.ctx, &ec2.DescribeVpcsInput{Filters: []types.Filter{{Name: aws.String(name), Values: []string{"true"}}}}))
		if len(vpcs.Vpcs) != 1 || !aws.ToBool(vpcs.Vpcs[0].IsDefault) {
			t.Errorf("%s=true: %+v", name, vpcs.Vpcs)
		}
	}
	attached := must[*ec2.DescribeNetworkInterfacesOutput](t)(e.EC2.DescribeNetworkInterfaces(e.ctx, &ec2.DescribeNetworkInterfacesInput{
		Filters: []types.Filter{{Name: aws.String("attachment.instance-owner-id"), Values: []string{"123456789012"}}},
	}))
	if len(attached.NetworkInterfaces) == 0 {
		t.Fatal("no interface is attached to an instance of the account")
	}
	for _, n := range attached.NetworkInterfaces {
		if n.Attachment == nil || aws.ToString(n.Attachment.InstanceId) == "" {
			t.Errorf("%s is not attached to an instance", aws.ToString(n.NetworkInterfaceId))
		}
	}
	other := must[*ec2.DescribeNetworkInterfacesOutput](t)(e.EC2.DescribeNetworkInterfaces(e.ctx, &ec2.DescribeNetworkInterfacesInput{
		Filters: []types.Filter{{Name: aws.String("attachment.instance-owner-id"), Values: []string{"210987654321"}}},
	}))
	if len(other.NetworkInterfaces) != 0 {
		t.Errorf("another account's filter matched %d interfaces", len(other.NetworkInterfaces))
	}
}
