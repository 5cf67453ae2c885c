package awsapi_test

import (
	"fmt"
	"net/netip"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	"github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"

	"github.com/moatlb/moat/internal/cloud"
)

func TestCreateLoadBalancer(t *testing.T) {
	e := newEnv(t)
	sg := e.createGroup(t, "front")
	sns := e.subnets(t)
	before := time.Now().Add(-time.Second)
	lb := e.createLB(t, "web", func(in *elbv2.CreateLoadBalancerInput) {
		in.SecurityGroups = []string{sg}
		in.Tags = []types.Tag{{Key: aws.String("elbv2.k8s.aws/cluster"), Value: aws.String("demo")}}
	})

	arn := aws.ToString(lb.LoadBalancerArn)
	m := regexp.MustCompile(`^arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/net/web/([0-9a-f]{16})$`).FindStringSubmatch(arn)
	if m == nil {
		t.Fatalf("ARN %q does not have AWS's NLB format", arn)
	}
	if want := "web-" + m[1] + ".elb.us-east-1.moat.internal"; aws.ToString(lb.DNSName) != want {
		t.Errorf("DNS name %q, want %q", aws.ToString(lb.DNSName), want)
	}
	checks := map[string][2]string{
		"type":             {string(lb.Type), "network"},
		"scheme":           {string(lb.Scheme), "internet-facing"},
		"state":            {string(lb.State.Code), "provisioning"},
		"ip address type":  {string(lb.IpAddressType), "ipv4"},
		"hosted zone":      {aws.ToString(lb.CanonicalHostedZoneId), "Z26RNL4JYFTOTI"},
		"vpc":              {aws.ToString(lb.VpcId), e.vpcID(t)},
		"name":             {aws.ToString(lb.LoadBalancerName), "web"},
		"privatelink flag": {aws.ToString(lb.EnforceSecurityGroupInboundRulesOnPrivateLinkTraffic), "on"},
	}
	for what, c := range checks {
		if c[0] != c[1] {
			t.Errorf("%s = %q, want %q", what, c[0], c[1])
		}
	}
	if !slices.Equal(lb.SecurityGroups, []string{sg}) {
		t.Errorf("security groups %v, want [%s]", lb.SecurityGroups, sg)
	}
	if lb.CreatedTime == nil || lb.CreatedTime.Before(before) || lb.CreatedTime.After(time.Now().Add(time.Second)) {
		t.Errorf("created time %v is not now", lb.CreatedTime)
	}
	if len(lb.AvailabilityZones) != 2 {
		t.Fatalf("zones %+v, want one per subnet", lb.AvailabilityZones)
	}
	for i, z := range lb.AvailabilityZones {
		if aws.ToString(z.SubnetId) != sns[i].ID || aws.ToString(z.ZoneName) != sns[i].Zone {
			t.Errorf("zone %d is %s/%s, want %s/%s", i, aws.ToString(z.ZoneName), aws.ToString(z.SubnetId), sns[i].Zone, sns[i].ID)
		}
		// As AWS: no address is described where the subnet mapping asked for none.
		if len(z.LoadBalancerAddresses) != 0 {
			t.Errorf("zone %s describes addresses %+v that were not asked for", aws.ToString(z.ZoneName), z.LoadBalancerAddresses)
		}
		addr := e.addresses(t, arn)[i]
		if !netip.MustParsePrefix(sns[i].CIDR).Contains(addr) {
			t.Errorf("address %s is not in subnet %s", addr, sns[i].CIDR)
		}
		if addr.String() == "127.1.0.10" || addr.String() == "127.2.0.10" {
			t.Errorf("address %s is an instance's", addr)
		}
	}

	described := e.describeLB(t, arn)
	if aws.ToString(described.DNSName) != aws.ToString(lb.DNSName) || described.State.Code != types.LoadBalancerStateEnumProvisioning ||
		!reflect.DeepEqual(described.AvailabilityZones, lb.AvailabilityZones) {
		t.Errorf("describe differs from create: %+v", described)
	}
	tags := must[*elbv2.DescribeTagsOutput](t)(e.ELB.DescribeTags(e.ctx, &elbv2.DescribeTagsInput{ResourceArns: []string{arn}}))
	if len(tags.TagDescriptions) != 1 || len(tags.TagDescriptions[0].Tags) != 1 || aws.ToString(tags.TagDescriptions[0].Tags[0].Value) != "demo" {
		t.Errorf("tags %+v", tags.TagDescriptions)
	}
}

// addresses are a load balancer's IPv4 addresses, zone by zone, as moat holds them (AWS describes
// only those that were asked for).
func (e *env) addresses(t *testing.T, arn string) []netip.Addr {
	t.Helper()
	lbs, _, err := e.Cloud.DescribeLoadBalancers([]string{arn}, nil, cloud.ELBPage{})
	if err != nil || len(lbs) != 1 {
		t.Fatalf("load balancer %s: %v", arn, err)
	}
	var out []netip.Addr
	for _, z := range lbs[0].Zones {
		out = append(out, netip.MustParseAddr(z.Address))
	}
	return out
}

func TestLoadBalancerAddresses(t *testing.T) {
	e := newEnv(t)
	sns := e.subnets(t)
	internal := e.createLB(t, "internal", func(in *elbv2.CreateLoadBalancerInput) {
		in.Scheme = types.LoadBalancerSchemeEnumInternal
		in.Subnets = nil
		in.SubnetMappings = []types.SubnetMapping{{SubnetId: aws.String(sns[0].ID), PrivateIPv4Address: aws.String("127.1.3.3")}, {SubnetId: aws.String(sns[1].ID)}}
	})
	if len(internal.SecurityGroups) != 0 || internal.EnforceSecurityGroupInboundRulesOnPrivateLinkTraffic != nil {
		t.Errorf("a load balancer created without groups reports groups %v / %v", internal.SecurityGroups, aws.ToString(internal.EnforceSecurityGroupInboundRulesOnPrivateLinkTraffic))
	}
	a := internal.AvailabilityZones[0].LoadBalancerAddresses[0]
	if aws.ToString(a.IpAddress) != "127.1.3.3" || aws.ToString(a.PrivateIPv4Address) != "127.1.3.3" {
		t.Errorf("requested address not used or not reported as private: %+v", a)
	}
	if b := internal.AvailabilityZones[1].LoadBalancerAddresses; len(b) != 0 {
		t.Errorf("the zone whose mapping named no address describes %+v", b)
	}

	// Every load balancer gets addresses of its own.
	seen := map[netip.Addr]string{}
	for _, a := range e.addresses(t, aws.ToString(internal.LoadBalancerArn)) {
		seen[a] = "internal"
	}
	for i := range 5 {
		lb := e.createLB(t, fmt.Sprintf("lb%d", i))
		for _, ip := range e.addresses(t, aws.ToString(lb.LoadBalancerArn)) {
			if other, dup := seen[ip]; dup {
				t.Errorf("address %s given to lb%d and %s", ip, i, other)
			}
			seen[ip] = fmt.Sprintf("lb%d", i)
		}
	}

	// A deleted load balancer's address may be used again.
	must[*elbv2.DeleteLoadBalancerOutput](t)(e.ELB.DeleteLoadBalancer(e.ctx, &elbv2.DeleteLoadBalancerInput{LoadBalancerArn: internal.LoadBalancerArn}))
	again := e.createLB(t, "again", func(in *elbv2.CreateLoadBalancerInput) {
		in.Scheme = types.LoadBalancerSchemeEnumInternal
		in.Subnets = nil
		in.SubnetMappings = []types.SubnetMapping{{SubnetId: aws.String(sns[0].ID), PrivateIPv4Address: aws.String("127.1.3.3")}}
	})
	if len(again.AvailabilityZones) != 1 || aws.ToString(again.AvailabilityZones[0].LoadBalancerAddresses[0].IpAddress) != "127.1.3.3" {
		t.Errorf("freed address not reused: %+v", again.AvailabilityZones)
	}
}

func TestCreateLoadBalancerIdempotent(t *testing.T) {
	e := newEnv(t)
	sg := e.createGroup(t, "front")
	withGroup := func(in *elbv2.CreateLoadBalancerInput) { in.SecurityGroups = []string{sg} }
	first := e.createLB(t, "web", withGroup)
	second := e.createLB(t, "web", withGroup)
	if aws.ToString(first.LoadBalancerArn) != aws.ToString(second.LoadBalancerArn) {
		t.Errorf("same name and settings made a second load balancer: %s, %s", aws.ToString(first.LoadBalancerArn), aws.ToString(second.LoadBalancerArn))
	}
	_, err := e.ELB.CreateLoadBalancer(e.ctx, &elbv2.CreateLoadBalancerInput{
		Name: aws.String("web"), Type: types.LoadBalancerTypeEnumNetwork, Subnets: e.subnetIDs(t), Scheme: types.LoadBalancerSchemeEnumInternal, SecurityGroups: []string{sg},
	})
	wantCode(t, err, "DuplicateLoadBalancerName")
	if names := e.lbNames(t); !slices.Equal(names, []string{"web"}) {
		t.Errorf("load balancers %v, want [web]", names)
	}
}

func TestCreateLoadBalancerErrors(t *testing.T) {
	e := newEnv(t)
	sns := e.subnets(t)
	ids := e.subnetIDs(t)
	var groups []string
	for i := range 6 {
		groups = append(groups, e.createGroup(t, fmt.Sprintf("g%d", i)))
	}
	e.createLB(t, "existing")
	manyTags := make([]types.Tag, 51)
	for i := range manyTags {
		manyTags[i] = types.Tag{Key: aws.String(fmt.Sprintf("k%d", i)), Value: aws.String("v")}
	}
	mapping := func(subnet, ip string) []types.SubnetMapping {
		return []types.SubnetMapping{{SubnetId: aws.String(subnet), PrivateIPv4Address: aws.String(ip)}}
	}
	cases := []struct {
		name string
		edit func(*elbv2.CreateLoadBalancerInput)
		code string
		msg  string
	}{
		{"no type means application", func(in *elbv2.CreateLoadBalancerInput) { in.Type = "" }, "InvalidConfigurationRequest", "Network Load Balancers only"},
		{"application", func(in *elbv2.CreateLoadBalancerInput) { in.Type = types.LoadBalancerTypeEnumApplication }, "InvalidConfigurationRequest", "Network Load Balancers only"},
		{"gateway", func(in *elbv2.CreateLoadBalancerInput) { in.Type = types.LoadBalancerTypeEnumGateway }, "InvalidConfigurationRequest", "Type=network"},
		{"unknown type", func(in *elbv2.CreateLoadBalancerInput) { in.Type = "classic" }, "ValidationError", "enum value set"},
		{"unknown scheme", func(in *elbv2.CreateLoadBalancerInput) { in.Scheme = "public" }, "ValidationError", "enum value set"},
		{"name too long", func(in *elbv2.CreateLoadBalancerInput) { in.Name = aws.String(strings.Repeat("a", 33)) }, "ValidationError", "32"},
		{"name with underscore", func(in *elbv2.CreateLoadBalancerInput) { in.Name = aws.String("a_b") }, "ValidationError", "alphanumeric"},
		{"name starts with hyphen", func(in *elbv2.CreateLoadBalancerInput) { in.Name = aws.String("-ab") }, "ValidationError", "'-'"},
		{"name ends with hyphen", func(in *elbv2.CreateLoadBalancerInput) { in.Name = aws.String("ab-") }, "ValidationError", "'-'"},
		{"name starts with internal-", func(in *elbv2.CreateLoadBalancerInput) { in.Name = aws.String("internal-ab") }, "ValidationError", "internal-"},
		{"no subnets", func(in *elbv2.CreateLoadBalancerInput) { in.Subnets = nil }, "ValidationError", "subnet"},
		{"subnets and mappings", func(in *elbv2.CreateLoadBalancerInput) { in.SubnetMappings = mapping(sns[0].ID, "127.1.3.3") }, "ValidationError", "not both"},
		{"unknown subnet", func(in *elbv2.CreateLoadBalancerInput) { in.Subnets = []string{"subnet-0123456789abcdef0"} }, "SubnetNotFound", "subnet-0123456789abcdef0"},
		{"two subnets in one zone", func(in *elbv2.CreateLoadBalancerInput) { in.Subnets = []string{ids[0], ids[0]} }, "InvalidConfigurationRequest", "Availability Zone"},
		{"unknown group", func(in *elbv2.CreateLoadBalancerInput) { in.SecurityGroups = []string{"sg-0123456789abcdef0"} }, "InvalidSecurityGroup", "sg-0123456789abcdef0"},
		{"malformed group", func(in *elbv2.CreateLoadBalancerInput) { in.SecurityGroups = []string{"web"} }, "InvalidSecurityGroup", "web"},
		{"six groups", func(in *elbv2.CreateLoadBalancerInput) { in.SecurityGroups = groups }, "InvalidConfigurationRequest", "5 security groups"},
		{"dualstack without IPv6 subnets", func(in *elbv2.CreateLoadBalancerInput) { in.IpAddressType = types.IpAddressTypeDualstack }, "ValidationError", "IPv6 CIDR block"},
		{"dualstack without public IPv4", func(in *elbv2.CreateLoadBalancerInput) {
			in.IpAddressType = types.IpAddressTypeDualstackWithoutPublicIpv4
		}, "InvalidConfigurationRequest", "Application Load Balancers"},
		{"private address on internet-facing", func(in *elbv2.CreateLoadBalancerInput) {
			in.Subnets, in.SubnetMappings = nil, mapping(sns[0].ID, "127.1.3.3")
		}, "InvalidConfigurationRequest", "internal"},
		{"private address outside the subnet", func(in *elbv2.CreateLoadBalancerInput) {
			in.Scheme, in.Subnets, in.SubnetMappings = types.LoadBalancerSchemeEnumInternal, nil, mapping(sns[0].ID, "127.2.3.3")
		}, "InvalidConfigurationRequest", "127.2.3.3"},
		{"private address reserved by AWS", func(in *elbv2.CreateLoadBalancerInput) {
			in.Scheme, in.Subnets, in.SubnetMappings = types.LoadBalancerSchemeEnumInternal, nil, mapping(sns[0].ID, "127.1.0.1")
		}, "InvalidConfigurationRequest", "127.1.0.1"},
		{"private address of an instance", func(in *elbv2.CreateLoadBalancerInput) {
			in.Scheme, in.Subnets, in.SubnetMappings = types.LoadBalancerSchemeEnumInternal, nil, mapping(sns[0].ID, "127.1.0.10")
		}, "InvalidConfigurationRequest", "in use"},
		{"elastic IP", func(in *elbv2.CreateLoadBalancerInput) {
			in.Subnets, in.SubnetMappings = nil, []types.SubnetMapping{{SubnetId: aws.String(ids[0]), AllocationId: aws.String("eipalloc-1")}}
		}, "AllocationIdNotFound", "eipalloc-1"},
		{"duplicate tag keys", func(in *elbv2.CreateLoadBalancerInput) {
			in.Tags = []types.Tag{{Key: aws.String("k"), Value: aws.String("1")}, {Key: aws.String("k"), Value: aws.String("2")}}
		}, "DuplicateTagKeys", "k"},
		{"too many tags", func(in *elbv2.CreateLoadBalancerInput) { in.Tags = manyTags }, "TooManyTags", "50"},
		{"bad tag key", func(in *elbv2.CreateLoadBalancerInput) {
			in.Tags = []types.Tag{{Key: aws.String("a*b"), Value: aws.String("")}}
		}, "ValidationError", "a*b"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := &elbv2.CreateLoadBalancerInput{Name: aws.String("failing"), Type: types.LoadBalancerTypeEnumNetwork, Subnets: ids}
			tc.edit(in)
			_, err := e.ELB.CreateLoadBalancer(e.ctx, in)
			wantCode(t, err, tc.code)
			wantMessage(t, err, tc.msg)
		})
	}
	// The SDKs check required members themselves; the server must too.
	if status, body := e.post(t, "elasticloadbalancing", "Action=CreateLoadBalancer&Version=2015-12-01&Type=network&Subnets.member.1="+ids[0]); status != 400 || !strings.Contains(body, "<Code>ValidationError</Code>") {
		t.Errorf("create without a name: %d %s", status, body)
	}
	if names := e.lbNames(t); !slices.Equal(names, []string{"existing"}) {
		t.Errorf("failed creates left load balancers behind: %v", names)
	}

	q := newEnv(t, withQuotas(func(q *cloud.Quotas) { q.LoadBalancers = 1 }))
	q.createLB(t, "one")
	_, err := q.ELB.CreateLoadBalancer(q.ctx, &elbv2.CreateLoadBalancerInput{Name: aws.String("two"), Type: types.LoadBalancerTypeEnumNetwork, Subnets: q.subnetIDs(t)})
	wantCode(t, err, "TooManyLoadBalancers")
}

func TestDescribeLoadBalancers(t *testing.T) {
	e := newEnv(t)
	var arns []string
	for i := range 5 {
		arns = append(arns, aws.ToString(e.createLB(t, fmt.Sprintf("lb-%d", i)).LoadBalancerArn))
	}
	byName := must[*elbv2.DescribeLoadBalancersOutput](t)(e.ELB.DescribeLoadBalancers(e.ctx, &elbv2.DescribeLoadBalancersInput{Names: []string{"lb-3", "lb-1"}}))
	if len(byName.LoadBalancers) != 2 {
		t.Errorf("by name: %d load balancers, want 2", len(byName.LoadBalancers))
	}
	byARN := must[*elbv2.DescribeLoadBalancersOutput](t)(e.ELB.DescribeLoadBalancers(e.ctx, &elbv2.DescribeLoadBalancersInput{LoadBalancerArns: arns[2:3]}))
	if len(byARN.LoadBalancers) != 1 || aws.ToString(byARN.LoadBalancers[0].LoadBalancerName) != "lb-2" {
		t.Errorf("by ARN: %+v", byARN.LoadBalancers)
	}

	var paged []string
	pages := 0
	p := elbv2.NewDescribeLoadBalancersPaginator(e.ELB, &elbv2.DescribeLoadBalancersInput{PageSize: aws.Int32(2)})
	for p.HasMorePages() {
		out := must[*elbv2.DescribeLoadBalancersOutput](t)(p.NextPage(e.ctx))
		pages++
		for _, lb := range out.LoadBalancers {
			paged = append(paged, aws.ToString(lb.LoadBalancerName))
		}
	}
	if pages != 3 || !slices.Equal(paged, []string{"lb-0", "lb-1", "lb-2", "lb-3", "lb-4"}) {
		t.Errorf("paginated %d pages: %v", pages, paged)
	}

	_, err := e.ELB.DescribeLoadBalancers(e.ctx, &elbv2.DescribeLoadBalancersInput{Names: []string{"lb-1", "nope"}})
	wantCode(t, err, "LoadBalancerNotFound")
	wantMessage(t, err, "Load balancers '[nope]' not found")
	_, err = e.ELB.DescribeLoadBalancers(e.ctx, &elbv2.DescribeLoadBalancersInput{LoadBalancerArns: []string{strings.Replace(arns[0], "lb-0", "gone", 1)}})
	wantCode(t, err, "LoadBalancerNotFound")
	_, err = e.ELB.DescribeLoadBalancers(e.ctx, &elbv2.DescribeLoadBalancersInput{LoadBalancerArns: []string{"not-an-arn"}})
	wantCode(t, err, "ValidationError")
	for _, size := range []int32{0, 401} {
		_, err = e.ELB.DescribeLoadBalancers(e.ctx, &elbv2.DescribeLoadBalancersInput{PageSize: aws.Int32(size)})
		wantCode(t, err, "ValidationError")
	}
	_, err = e.ELB.DescribeLoadBalancers(e.ctx, &elbv2.DescribeLoadBalancersInput{Names: []string{"lb-1"}, LoadBalancerArns: arns[:1]})
	wantCode(t, err, "ValidationError")
}

func TestDeleteLoadBalancer(t *testing.T) {
	e := newEnv(t)
	lb := e.createLB(t, "web")
	tg := e.createTG(t, "web-tg")
	l := e.createListener(t, aws.ToString(lb.LoadBalancerArn), aws.ToString(tg.TargetGroupArn), 80, types.ProtocolEnumTcp)
	must[*elbv2.RegisterTargetsOutput](t)(e.ELB.RegisterTargets(e.ctx, &elbv2.RegisterTargetsInput{
		TargetGroupArn: tg.TargetGroupArn, Targets: []types.TargetDescription{{Id: aws.String(e.instanceID(t, "127.1.0.10"))}},
	}))

	// Deletion protection keeps it.
	must[*elbv2.ModifyLoadBalancerAttributesOutput](t)(e.ELB.ModifyLoadBalancerAttributes(e.ctx, &elbv2.ModifyLoadBalancerAttributesInput{
		LoadBalancerArn: lb.LoadBalancerArn, Attributes: []types.LoadBalancerAttribute{{Key: aws.String("deletion_protection.enabled"), Value: aws.String("true")}},
	}))
	_, err := e.ELB.DeleteLoadBalancer(e.ctx, &elbv2.DeleteLoadBalancerInput{LoadBalancerArn: lb.LoadBalancerArn})
	wantCode(t, err, "OperationNotPermitted")
	e.describeLB(t, aws.ToString(lb.LoadBalancerArn))
	must[*elbv2.ModifyLoadBalancerAttributesOutput](t)(e.ELB.ModifyLoadBalancerAttributes(e.ctx, &elbv2.ModifyLoadBalancerAttributesInput{
		LoadBalancerArn: lb.LoadBalancerArn, Attributes: []types.LoadBalancerAttribute{{Key: aws.String("deletion_protection.enabled"), Value: aws.String("false")}},
	}))

	must[*elbv2.DeleteLoadBalancerOutput](t)(e.ELB.DeleteLoadBalancer(e.ctx, &elbv2.DeleteLoadBalancerInput{LoadBalancerArn: lb.LoadBalancerArn}))
	_, err = e.ELB.DescribeLoadBalancers(e.ctx, &elbv2.DescribeLoadBalancersInput{LoadBalancerArns: []string{aws.ToString(lb.LoadBalancerArn)}})
	wantCode(t, err, "LoadBalancerNotFound")
	_, err = e.ELB.DescribeListeners(e.ctx, &elbv2.DescribeListenersInput{ListenerArns: []string{aws.ToString(l.ListenerArn)}})
	wantCode(t, err, "ListenerNotFound")
	// The target group and its targets stay, and no longer belong to a load balancer.
	kept := e.describeTG(t, aws.ToString(tg.TargetGroupArn))
	if len(kept.LoadBalancerArns) != 0 {
		t.Errorf("target group still lists load balancers %v", kept.LoadBalancerArns)
	}
	health := must[*elbv2.DescribeTargetHealthOutput](t)(e.ELB.DescribeTargetHealth(e.ctx, &elbv2.DescribeTargetHealthInput{TargetGroupArn: tg.TargetGroupArn}))
	if len(health.TargetHealthDescriptions) != 1 || health.TargetHealthDescriptions[0].TargetHealth.Reason != types.TargetHealthReasonEnumNotInUse {
		t.Errorf("targets after delete: %+v", health.TargetHealthDescriptions)
	}
	// Deleting again succeeds, as on AWS.
	must[*elbv2.DeleteLoadBalancerOutput](t)(e.ELB.DeleteLoadBalancer(e.ctx, &elbv2.DeleteLoadBalancerInput{LoadBalancerArn: lb.LoadBalancerArn}))
	_, err = e.ELB.DeleteLoadBalancer(e.ctx, &elbv2.DeleteLoadBalancerInput{LoadBalancerArn: aws.String("arn:aws:ec2:us-east-1:123456789012:vpc/vpc-1")})
	wantCode(t, err, "ValidationError")
}

// instanceID returns the ID of the default inventory's instance with this private address.
func (e *env) instanceID(t *testing.T, ip string) string {
	t.Helper()
	out := must[*ec2.DescribeInstancesOutput](t)(e.EC2.DescribeInstances(e.ctx, &ec2.DescribeInstancesInput{}))
	for _, r := range out.Reservations {
		for _, in := range r.Instances {
			if aws.ToString(in.PrivateIpAddress) == ip {
				return aws.ToString(in.InstanceId)
			}
		}
	}
	t.Fatalf("no instance at %s", ip)
	return ""
}

func TestSetSecurityGroups(t *testing.T) {
	e := newEnv(t)
	a, b, c := e.createGroup(t, "a"), e.createGroup(t, "b"), e.createGroup(t, "c")
	bare := e.createLB(t, "bare")
	_, err := e.ELB.SetSecurityGroups(e.ctx, &elbv2.SetSecurityGroupsInput{LoadBalancerArn: bare.LoadBalancerArn, SecurityGroups: []string{a}})
	wantCode(t, err, "InvalidConfigurationRequest")
	if msg := err.Error(); !strings.Contains(msg, "You cannot set security groups on a Network Load Balancer which was created without any security groups.") {
		t.Errorf("message %q is not AWS's", msg)
	}

	lb := e.createLB(t, "guarded", func(in *elbv2.CreateLoadBalancerInput) { in.SecurityGroups = []string{a} })
	arn := lb.LoadBalancerArn
	out := must[*elbv2.SetSecurityGroupsOutput](t)(e.ELB.SetSecurityGroups(e.ctx, &elbv2.SetSecurityGroupsInput{LoadBalancerArn: arn, SecurityGroups: []string{b, c}}))
	if !slices.Equal(out.SecurityGroupIds, []string{b, c}) || out.EnforceSecurityGroupInboundRulesOnPrivateLinkTraffic != types.EnforceSecurityGroupInboundRulesOnPrivateLinkTrafficEnumOn {
		t.Errorf("set groups answered %v / %s", out.SecurityGroupIds, out.EnforceSecurityGroupInboundRulesOnPrivateLinkTraffic)
	}
	out = must[*elbv2.SetSecurityGroupsOutput](t)(e.ELB.SetSecurityGroups(e.ctx, &elbv2.SetSecurityGroupsInput{
		LoadBalancerArn: arn, SecurityGroups: []string{b, c},
		EnforceSecurityGroupInboundRulesOnPrivateLinkTraffic: types.EnforceSecurityGroupInboundRulesOnPrivateLinkTrafficEnumOff,
	}))
	if out.EnforceSecurityGroupInboundRulesOnPrivateLinkTraffic != types.EnforceSecurityGroupInboundRulesOnPrivateLinkTrafficEnumOff {
		t.Errorf("PrivateLink flag %s, want off", out.EnforceSecurityGroupInboundRulesOnPrivateLinkTraffic)
	}

	var six []string
	for i := range 6 {
		six = append(six, e.createGroup(t, fmt.Sprintf("six-%d", i)))
	}
	cases := []struct {
		name   string
		groups []string
		flag   types.EnforceSecurityGroupInboundRulesOnPrivateLinkTrafficEnum
		code   string
	}{
		{"drop to none", []string{}, "", "InvalidConfigurationRequest"},
		{"six groups", six, "", "InvalidConfigurationRequest"},
		{"unknown group", []string{a, "sg-0123456789abcdef0"}, "", "InvalidSecurityGroup"},
		{"bad flag", []string{a}, "maybe", "ValidationError"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.ELB.SetSecurityGroups(e.ctx, &elbv2.SetSecurityGroupsInput{LoadBalancerArn: arn, SecurityGroups: tc.groups, EnforceSecurityGroupInboundRulesOnPrivateLinkTraffic: tc.flag})
			wantCode(t, err, tc.code)
		})
	}
	got := e.describeLB(t, aws.ToString(arn))
	if !slices.Equal(got.SecurityGroups, []string{b, c}) || aws.ToString(got.EnforceSecurityGroupInboundRulesOnPrivateLinkTraffic) != "off" {
		t.Errorf("failed calls changed the groups: %v / %s", got.SecurityGroups, aws.ToString(got.EnforceSecurityGroupInboundRulesOnPrivateLinkTraffic))
	}
	_, err = e.ELB.SetSecurityGroups(e.ctx, &elbv2.SetSecurityGroupsInput{LoadBalancerArn: aws.String(strings.Replace(aws.ToString(arn), "guarded", "gone", 1)), SecurityGroups: []string{a}})
	wantCode(t, err, "LoadBalancerNotFound")
}

// TestSetSecurityGroupsEmptyList sends the empty list as the SDKs put it on the wire,
// "SecurityGroups=", and checks it is read as an empty list (drop to none), not as an absent
// parameter (a missing required member).
func TestSetSecurityGroupsEmptyList(t *testing.T) {
	e := newEnv(t)
	sg := e.createGroup(t, "front")
	lb := e.createLB(t, "guarded", func(in *elbv2.CreateLoadBalancerInput) { in.SecurityGroups = []string{sg} })
	arn := aws.ToString(lb.LoadBalancerArn)
	status, body := e.post(t, "elasticloadbalancing", "Action=SetSecurityGroups&Version=2015-12-01&LoadBalancerArn="+arn+"&SecurityGroups=")
	if status != 400 || !strings.Contains(body, "<Code>InvalidConfigurationRequest</Code>") || !strings.Contains(body, "remove all security groups") {
		t.Errorf("empty list: %d %s", status, body)
	}
	status, body = e.post(t, "elasticloadbalancing", "Action=SetSecurityGroups&Version=2015-12-01&LoadBalancerArn="+arn)
	if status != 400 || !strings.Contains(body, "<Code>ValidationError</Code>") {
		t.Errorf("absent list: %d %s", status, body)
	}
	status, body = e.post(t, "elasticloadbalancing", "Action=SetSecurityGroups&Version=2015-12-01&LoadBalancerArn="+arn+"&SecurityGroups.member.1="+sg)
	if status != 200 || !strings.Contains(body, "<SecurityGroupIds><member>"+sg+"</member></SecurityGroupIds>") {
		t.Errorf("one group: %d %s", status, body)
	}
}

func TestSecurityGroupInUseByLoadBalancer(t *testing.T) {
	e := newEnv(t)
	sg := e.createGroup(t, "front")
	lb := e.createLB(t, "web", func(in *elbv2.CreateLoadBalancerInput) { in.SecurityGroups = []string{sg} })
	_, err := e.EC2.DeleteSecurityGroup(e.ctx, &ec2.DeleteSecurityGroupInput{GroupId: aws.String(sg)})
	wantCode(t, err, "DependencyViolation")
	must[*elbv2.DeleteLoadBalancerOutput](t)(e.ELB.DeleteLoadBalancer(e.ctx, &elbv2.DeleteLoadBalancerInput{LoadBalancerArn: lb.LoadBalancerArn}))
	must[*ec2.DeleteSecurityGroupOutput](t)(e.EC2.DeleteSecurityGroup(e.ctx, &ec2.DeleteSecurityGroupInput{GroupId: aws.String(sg)}))
}

func TestSetSubnetsAndIPAddressType(t *testing.T) {
	e := newEnv(t)
	ids := e.subnetIDs(t)
	lb := e.createLB(t, "web", func(in *elbv2.CreateLoadBalancerInput) { in.Subnets = ids[:1] })
	arn := lb.LoadBalancerArn
	kept := e.addresses(t, aws.ToString(arn))[0]

	out := must[*elbv2.SetSubnetsOutput](t)(e.ELB.SetSubnets(e.ctx, &elbv2.SetSubnetsInput{LoadBalancerArn: arn, Subnets: ids}))
	if len(out.AvailabilityZones) != 2 || out.IpAddressType != types.IpAddressTypeIpv4 {
		t.Fatalf("set subnets answered %+v", out)
	}
	if got := e.addresses(t, aws.ToString(arn))[0]; got != kept {
		t.Errorf("a kept subnet's address changed from %s to %s", kept, got)
	}
	if len(e.describeLB(t, aws.ToString(arn)).AvailabilityZones) != 2 {
		t.Errorf("describe does not show the new subnet")
	}
	_, err := e.ELB.SetSubnets(e.ctx, &elbv2.SetSubnetsInput{LoadBalancerArn: arn, Subnets: []string{"subnet-0123456789abcdef0"}})
	wantCode(t, err, "SubnetNotFound")
	_, err = e.ELB.SetSubnets(e.ctx, &elbv2.SetSubnetsInput{LoadBalancerArn: arn})
	wantCode(t, err, "ValidationError")

	ipOut := must[*elbv2.SetIpAddressTypeOutput](t)(e.ELB.SetIpAddressType(e.ctx, &elbv2.SetIpAddressTypeInput{LoadBalancerArn: arn, IpAddressType: types.IpAddressTypeIpv4}))
	if ipOut.IpAddressType != types.IpAddressTypeIpv4 {
		t.Errorf("ip address type %s", ipOut.IpAddressType)
	}
	_, err = e.ELB.SetIpAddressType(e.ctx, &elbv2.SetIpAddressTypeInput{LoadBalancerArn: arn, IpAddressType: types.IpAddressTypeDualstack})
	wantCode(t, err, "ValidationError")
	wantMessage(t, err, "IPv6 CIDR block")
	_, err = e.ELB.SetIpAddressType(e.ctx, &elbv2.SetIpAddressTypeInput{LoadBalancerArn: arn, IpAddressType: "ipv5"})
	wantCode(t, err, "ValidationError")
	if got := e.describeLB(t, aws.ToString(arn)); got.IpAddressType != types.IpAddressTypeIpv4 || len(got.AvailabilityZones) != 2 {
		t.Errorf("failed calls changed the load balancer: %+v", got)
	}
}

func TestLoadBalancerAttributes(t *testing.T) {
	e := newEnv(t)
	lb := e.createLB(t, "web")
	internal := e.createLB(t, "inside", func(in *elbv2.CreateLoadBalancerInput) { in.Scheme = types.LoadBalancerSchemeEnumInternal })
	got := attrs(must[*elbv2.DescribeLoadBalancerAttributesOutput](t)(e.ELB.DescribeLoadBalancerAttributes(e.ctx, &elbv2.DescribeLoadBalancerAttributesInput{LoadBalancerArn: lb.LoadBalancerArn})).Attributes)
	want := map[string]string{
		"deletion_protection.enabled":            "false",
		"load_balancing.cross_zone.enabled":      "false",
		"access_logs.s3.enabled":                 "false",
		"access_logs.s3.bucket":                  "",
		"access_logs.s3.prefix":                  "",
		"ipv6.deny_all_igw_traffic":              "false",
		"zonal_shift.config.enabled":             "false",
		"dns_record.client_routing_policy":       "any_availability_zone",
		"secondary_ips.auto_assigned.per_subnet": "0",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("defaults\n got %v\nwant %v", got, want)
	}
	inside := attrs(must[*elbv2.DescribeLoadBalancerAttributesOutput](t)(e.ELB.DescribeLoadBalancerAttributes(e.ctx, &elbv2.DescribeLoadBalancerAttributesInput{LoadBalancerArn: internal.LoadBalancerArn})).Attributes)
	if inside["ipv6.deny_all_igw_traffic"] != "true" {
		t.Errorf("an internal load balancer denies IGW traffic by default, got %q", inside["ipv6.deny_all_igw_traffic"])
	}

	modify := func(kv ...string) (map[string]string, error) {
		var list []types.LoadBalancerAttribute
		for i := 0; i < len(kv); i += 2 {
			list = append(list, types.LoadBalancerAttribute{Key: aws.String(kv[i]), Value: aws.String(kv[i+1])})
		}
		out, err := e.ELB.ModifyLoadBalancerAttributes(e.ctx, &elbv2.ModifyLoadBalancerAttributesInput{LoadBalancerArn: lb.LoadBalancerArn, Attributes: list})
		if err != nil {
			return nil, err
		}
		return attrs(out.Attributes), nil
	}
	all, err := modify("load_balancing.cross_zone.enabled", "true", "secondary_ips.auto_assigned.per_subnet", "2")
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != len(want) || all["load_balancing.cross_zone.enabled"] != "true" || all["secondary_ips.auto_assigned.per_subnet"] != "2" {
		t.Errorf("modify answered %v", all)
	}
	cases := []struct {
		name string
		kv   []string
		msg  string
	}{
		{"ALB key", []string{"idle_timeout.timeout_seconds", "60"}, "is not supported on load balancers with type 'network'"},
		{"unknown key", []string{"no.such.key", "1"}, "Key no.such.key not valid"},
		{"not a bool (with a valid change)", []string{"zonal_shift.config.enabled", "true", "deletion_protection.enabled", "yes"}, "deletion_protection.enabled"},
		{"routing policy", []string{"dns_record.client_routing_policy", "nearest"}, "nearest"},
		{"secondary IPs decrease", []string{"secondary_ips.auto_assigned.per_subnet", "1"}, "decreased"},
		{"secondary IPs range", []string{"secondary_ips.auto_assigned.per_subnet", "8"}, "0 to 7"},
		{"access logs without bucket", []string{"access_logs.s3.enabled", "true"}, "bucket"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := modify(tc.kv...)
			wantCode(t, err, "InvalidConfigurationRequest")
			wantMessage(t, err, tc.msg)
		})
	}
	if status, body := e.post(t, "elasticloadbalancing", "Action=ModifyLoadBalancerAttributes&Version=2015-12-01&LoadBalancerArn="+aws.ToString(lb.LoadBalancerArn)); status != 400 || !strings.Contains(body, "<Code>ValidationError</Code>") {
		t.Errorf("modify without attributes: %d %s", status, body)
	}
	after := attrs(must[*elbv2.DescribeLoadBalancerAttributesOutput](t)(e.ELB.DescribeLoadBalancerAttributes(e.ctx, &elbv2.DescribeLoadBalancerAttributesInput{LoadBalancerArn: lb.LoadBalancerArn})).Attributes)
	if fmt.Sprint(after) != fmt.Sprint(all) {
		t.Errorf("failed modifies changed attributes:\n got %v\nwant %v", after, all)
	}
	_, err = e.ELB.DescribeLoadBalancerAttributes(e.ctx, &elbv2.DescribeLoadBalancerAttributesInput{LoadBalancerArn: aws.String(strings.Replace(aws.ToString(lb.LoadBalancerArn), "/web/", "/gone/", 1))})
	wantCode(t, err, "LoadBalancerNotFound")
}

func TestLoadBalancerState(t *testing.T) {
	e := newEnv(t)
	lb := e.createLB(t, "web")
	arn := aws.ToString(lb.LoadBalancerArn)
	if err := e.Cloud.SetLoadBalancerState(arn, cloud.StateActive, ""); err != nil {
		t.Fatal(err)
	}
	if got := e.describeLB(t, arn).State; got.Code != types.LoadBalancerStateEnumActive || got.Reason != nil {
		t.Errorf("state %s (%s), want active", got.Code, aws.ToString(got.Reason))
	}
	if err := e.Cloud.SetLoadBalancerState(arn, cloud.StateActiveImpaired, "listener :80 lost its socket"); err != nil {
		t.Fatal(err)
	}
	if got := e.describeLB(t, arn).State; got.Code != types.LoadBalancerStateEnumActiveImpaired || aws.ToString(got.Reason) != "listener :80 lost its socket" {
		t.Errorf("state %s (%s), want active_impaired with the reason", got.Code, aws.ToString(got.Reason))
	}
	if err := e.Cloud.SetLoadBalancerState(arn, "running", ""); err == nil {
		t.Error("an unknown state was accepted")
	}
	if err := e.Cloud.SetLoadBalancerState(arn+"0", cloud.StateActive, ""); err == nil {
		t.Error("a missing load balancer's state was set")
	}
}

// TestLoadBalancerInterfaces: a load balancer's own interfaces are described as AWS describes
// them (one per zone, requester-managed, "ELB net/<name>/<id>", its groups and address), so that
// resolving a group to its members through the API finds the load balancer.
func TestLoadBalancerInterfaces(t *testing.T) {
	e := newEnv(t)
	sg := e.createGroup(t, "front")
	lb := e.createLB(t, "web", func(in *elbv2.CreateLoadBalancerInput) { in.SecurityGroups = []string{sg} })
	out := must[*ec2.DescribeNetworkInterfacesOutput](t)(e.EC2.DescribeNetworkInterfaces(e.ctx, &ec2.DescribeNetworkInterfacesInput{
		Filters: []ec2types.Filter{{Name: aws.String("group-id"), Values: []string{sg}}},
	}))
	want := map[string]bool{}
	for _, a := range e.addresses(t, aws.ToString(lb.LoadBalancerArn)) {
		want[a.String()] = true
	}
	arnParts := strings.Split(aws.ToString(lb.LoadBalancerArn), "/")
	description := "ELB net/web/" + arnParts[len(arnParts)-1]
	if len(out.NetworkInterfaces) != len(want) {
		t.Fatalf("the group's members are %d interfaces, want the load balancer's %d", len(out.NetworkInterfaces), len(want))
	}
	for _, n := range out.NetworkInterfaces {
		if !want[aws.ToString(n.PrivateIpAddress)] || n.InterfaceType != ec2types.NetworkInterfaceTypeNetworkLoadBalancer ||
			!aws.ToBool(n.RequesterManaged) || aws.ToString(n.RequesterId) != "amazon-elb" || aws.ToString(n.Description) != description {
			t.Errorf("interface %+v", n)
		}
	}
	must[*elbv2.DeleteLoadBalancerOutput](t)(e.ELB.DeleteLoadBalancer(e.ctx, &elbv2.DeleteLoadBalancerInput{LoadBalancerArn: lb.LoadBalancerArn}))
	left := must[*ec2.DescribeNetworkInterfacesOutput](t)(e.EC2.DescribeNetworkInterfaces(e.ctx, &ec2.DescribeNetworkInterfacesInput{
		Filters: []ec2types.Filter{{Name: aws.String("interface-type"), Values: []string{"network_load_balancer"}}},
	}))
	if len(left.NetworkInterfaces) != 0 {
		t.Errorf("a deleted load balancer's interfaces remain: %+v", left.NetworkInterfaces)
	}
}
