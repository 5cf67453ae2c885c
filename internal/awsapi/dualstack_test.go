package awsapi_test

import (
	"maps"
	"net/netip"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	"github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"

	"github.com/moatlb/moat/internal/cloud"
)

// dualstackInventory adds, beside the default inventory, a VPC with an IPv6 block, two subnets
// with IPv6 CIDRs and one without. No traffic flows in these tests: the addresses only need to
// be well-formed.
const dualstackInventory = `
vpcs:
  - {name: dual, cidr: 10.20.0.0/16, ipv6Cidr: "2001:DB8:20::/56"}
subnets:
  - {name: dual-a, vpc: dual, zone: a, cidr: 10.20.1.0/24, ipv6Cidr: "2001:db8:20:1::/64"}
  - {name: dual-b, vpc: dual, zone: b, cidr: 10.20.2.0/24, ipv6Cidr: "2001:db8:20:2::/64"}
  - {name: v4-c, vpc: dual, zone: c, cidr: 10.20.3.0/24}
`

// dualstackEnv is newEnv with dualstackInventory applied; it returns the dual VPC's ID and its
// subnets by inventory name.
func dualstackEnv(t *testing.T) (*env, string, map[string]ec2types.Subnet) {
	t.Helper()
	e := newEnv(t)
	inv, err := cloud.ParseInventory([]byte(dualstackInventory))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Cloud.ApplyInventory(inv); err != nil {
		t.Fatal(err)
	}
	vpcs := must[*ec2.DescribeVpcsOutput](t)(e.EC2.DescribeVpcs(e.ctx, &ec2.DescribeVpcsInput{Filters: []ec2types.Filter{{Name: aws.String("cidr"), Values: []string{"10.20.0.0/16"}}}}))
	if len(vpcs.Vpcs) != 1 {
		t.Fatalf("%d VPCs with CIDR 10.20.0.0/16", len(vpcs.Vpcs))
	}
	vpc := aws.ToString(vpcs.Vpcs[0].VpcId)
	out := must[*ec2.DescribeSubnetsOutput](t)(e.EC2.DescribeSubnets(e.ctx, &ec2.DescribeSubnetsInput{Filters: []ec2types.Filter{{Name: aws.String("vpc-id"), Values: []string{vpc}}}}))
	byName := map[string]ec2types.Subnet{}
	for _, s := range out.Subnets {
		byName[map[string]string{"10.20.1.0/24": "dual-a", "10.20.2.0/24": "dual-b", "10.20.3.0/24": "v4-c"}[aws.ToString(s.CidrBlock)]] = s
	}
	if len(byName) != 3 {
		t.Fatalf("subnets of the dual VPC: %v", byName)
	}
	return e, vpc, byName
}

// DescribeVpcs and DescribeSubnets answer the IPv6 blocks in EC2's shapes, as aws-sdk-go-v2
// decodes them: one associated block where the inventory gives one (canonical), an empty set
// where it does not.
func TestDualstackInventoryWire(t *testing.T) {
	e, vpc, sns := dualstackEnv(t)
	vpcs := must[*ec2.DescribeVpcsOutput](t)(e.EC2.DescribeVpcs(e.ctx, &ec2.DescribeVpcsInput{}))
	for _, v := range vpcs.Vpcs {
		if aws.ToString(v.VpcId) != vpc {
			if len(v.Ipv6CidrBlockAssociationSet) != 0 {
				t.Errorf("IPv4-only VPC %s answers IPv6 blocks %+v", aws.ToString(v.VpcId), v.Ipv6CidrBlockAssociationSet)
			}
			continue
		}
		if len(v.Ipv6CidrBlockAssociationSet) != 1 {
			t.Fatalf("VPC %s has %d IPv6 blocks, want 1", vpc, len(v.Ipv6CidrBlockAssociationSet))
		}
		a := v.Ipv6CidrBlockAssociationSet[0]
		if aws.ToString(a.Ipv6CidrBlock) != "2001:db8:20::/56" || a.Ipv6CidrBlockState == nil || a.Ipv6CidrBlockState.State != ec2types.VpcCidrBlockStateCodeAssociated ||
			aws.ToString(a.NetworkBorderGroup) != "us-east-1" || aws.ToString(a.Ipv6Pool) != "Amazon" ||
			a.Ipv6AddressAttribute != ec2types.Ipv6AddressAttributePublic || a.IpSource != ec2types.IpSourceAmazon {
			t.Errorf("VPC IPv6 block %+v", a)
		}
		id := aws.ToString(a.AssociationId)
		if !strings.HasPrefix(id, "vpc-cidr-assoc-") || id == aws.ToString(v.CidrBlockAssociationSet[0].AssociationId) {
			t.Errorf("IPv6 association ID %q: want vpc-cidr-assoc-…, apart from the IPv4 block's %q", id, aws.ToString(v.CidrBlockAssociationSet[0].AssociationId))
		}
	}
	for name, want := range map[string]string{"dual-a": "2001:db8:20:1::/64", "dual-b": "2001:db8:20:2::/64", "v4-c": ""} {
		s := sns[name]
		if want == "" {
			if len(s.Ipv6CidrBlockAssociationSet) != 0 {
				t.Errorf("%s: IPv6 blocks %+v, want none", name, s.Ipv6CidrBlockAssociationSet)
			}
			continue
		}
		if len(s.Ipv6CidrBlockAssociationSet) != 1 {
			t.Fatalf("%s: %d IPv6 blocks, want 1", name, len(s.Ipv6CidrBlockAssociationSet))
		}
		a := s.Ipv6CidrBlockAssociationSet[0]
		if aws.ToString(a.Ipv6CidrBlock) != want || a.Ipv6CidrBlockState == nil || a.Ipv6CidrBlockState.State != ec2types.SubnetCidrBlockStateCodeAssociated ||
			!strings.HasPrefix(aws.ToString(a.AssociationId), "subnet-cidr-assoc-") {
			t.Errorf("%s: IPv6 block %+v, want %s associated", name, a, want)
		}
		if aws.ToBool(s.AssignIpv6AddressOnCreation) || aws.ToBool(s.Ipv6Native) {
			t.Errorf("%s: assignIpv6AddressOnCreation %v, ipv6Native %v; want false", name, aws.ToBool(s.AssignIpv6AddressOnCreation), aws.ToBool(s.Ipv6Native))
		}
	}
}

// zoneAddrs returns each zone's IPv4 address, as moat holds it, and IPv6 address, as described
// (AWS describes the IPv4 one only where the mapping asked for it), checking that no zone
// describes more than one address entry.
func (e *env) zoneAddrs(t *testing.T, arn string, zones []types.AvailabilityZone) map[string][2]string {
	t.Helper()
	held := e.addresses(t, arn)
	out := map[string][2]string{}
	for i, z := range zones {
		if len(z.LoadBalancerAddresses) > 1 {
			t.Fatalf("zone %s has %d addresses, want at most 1", aws.ToString(z.ZoneName), len(z.LoadBalancerAddresses))
		}
		v6 := ""
		if len(z.LoadBalancerAddresses) == 1 {
			v6 = aws.ToString(z.LoadBalancerAddresses[0].IPv6Address)
		}
		out[aws.ToString(z.SubnetId)] = [2]string{held[i].String(), v6}
	}
	return out
}

// A dualstack load balancer gets, in each zone, an IPv4 and an IPv6 address from its subnet's
// blocks, kept across calls; SetIpAddressType switches between ipv4 (the IPv6 addresses go) and
// dualstack; subnets without an IPv6 block get AWS's ValidationError and change nothing.
func TestDualstackLoadBalancer(t *testing.T) {
	e, _, sns := dualstackEnv(t)
	a, b, c := aws.ToString(sns["dual-a"].SubnetId), aws.ToString(sns["dual-b"].SubnetId), aws.ToString(sns["v4-c"].SubnetId)
	cidrs := map[string][2]netip.Prefix{}
	for _, s := range sns {
		var v6 netip.Prefix
		if len(s.Ipv6CidrBlockAssociationSet) > 0 {
			v6 = netip.MustParsePrefix(aws.ToString(s.Ipv6CidrBlockAssociationSet[0].Ipv6CidrBlock))
		}
		cidrs[aws.ToString(s.SubnetId)] = [2]netip.Prefix{netip.MustParsePrefix(aws.ToString(s.CidrBlock)), v6}
	}
	create := func(name string, ipType types.IpAddressType, subnets ...string) (*elbv2.CreateLoadBalancerOutput, error) {
		return e.ELB.CreateLoadBalancer(e.ctx, &elbv2.CreateLoadBalancerInput{Name: aws.String(name), Type: types.LoadBalancerTypeEnumNetwork,
			Scheme: types.LoadBalancerSchemeEnumInternal, IpAddressType: ipType, Subnets: subnets})
	}
	// checkDualstack checks that every zone has an address of each family from its subnet.
	checkDualstack := func(what, arn string, zones []types.AvailabilityZone) map[string][2]string {
		t.Helper()
		got := e.zoneAddrs(t, arn, zones)
		for sn, addrs := range got {
			for i, s := range addrs {
				if a, err := netip.ParseAddr(s); err != nil || !cidrs[sn][i].Contains(a) {
					t.Errorf("%s: subnet %s answers address %q, want one in %s", what, sn, s, cidrs[sn][i])
				}
			}
		}
		return got
	}

	out := must[*elbv2.CreateLoadBalancerOutput](t)(create("ds", types.IpAddressTypeDualstack, a, b))
	lb := out.LoadBalancers[0]
	if lb.IpAddressType != types.IpAddressTypeDualstack {
		t.Errorf("ip address type %s", lb.IpAddressType)
	}
	created := checkDualstack("create", aws.ToString(lb.LoadBalancerArn), lb.AvailabilityZones)
	if created[a][1] != "2001:db8:20:1::64" {
		t.Errorf("zone a's IPv6 address %s, want 2001:db8:20:1::64 (the 100th of the subnet, as for IPv4)", created[a][1])
	}
	if got := e.zoneAddrs(t, aws.ToString(lb.LoadBalancerArn), e.describeLB(t, aws.ToString(lb.LoadBalancerArn)).AvailabilityZones); !maps.Equal(got, created) {
		t.Errorf("describe answers %v, create answered %v", got, created)
	}

	// Subnets without an IPv6 block: AWS's error, nothing made or changed.
	_, err := create("ds-bad", types.IpAddressTypeDualstack, a, c)
	wantCode(t, err, "ValidationError")
	wantMessage(t, err, "You must specify subnets with an associated IPv6 CIDR block.")
	if _, err := e.ELB.DescribeLoadBalancers(e.ctx, &elbv2.DescribeLoadBalancersInput{Names: []string{"ds-bad"}}); err == nil {
		t.Error("a refused dualstack create left a load balancer")
	}
	_, err = e.ELB.SetSubnets(e.ctx, &elbv2.SetSubnetsInput{LoadBalancerArn: lb.LoadBalancerArn, Subnets: []string{a, b, c}})
	wantCode(t, err, "ValidationError")
	v4 := must[*elbv2.CreateLoadBalancerOutput](t)(create("v4", types.IpAddressTypeIpv4, a, c)).LoadBalancers[0]
	_, err = e.ELB.SetIpAddressType(e.ctx, &elbv2.SetIpAddressTypeInput{LoadBalancerArn: v4.LoadBalancerArn, IpAddressType: types.IpAddressTypeDualstack})
	wantCode(t, err, "ValidationError")
	if got := e.describeLB(t, aws.ToString(v4.LoadBalancerArn)); got.IpAddressType != types.IpAddressTypeIpv4 {
		t.Errorf("a refused SetIpAddressType changed the type to %s", got.IpAddressType)
	}

	// Back to ipv4: the IPv6 addresses go, the IPv4 ones stay. Then dualstack again.
	ipv4 := must[*elbv2.SetIpAddressTypeOutput](t)(e.ELB.SetIpAddressType(e.ctx, &elbv2.SetIpAddressTypeInput{LoadBalancerArn: lb.LoadBalancerArn, IpAddressType: types.IpAddressTypeIpv4}))
	desc := e.describeLB(t, aws.ToString(lb.LoadBalancerArn))
	if ipv4.IpAddressType != types.IpAddressTypeIpv4 || desc.IpAddressType != types.IpAddressTypeIpv4 {
		t.Errorf("SetIpAddressType ipv4 answered %s, describe %s", ipv4.IpAddressType, desc.IpAddressType)
	}
	for sn, addrs := range e.zoneAddrs(t, aws.ToString(lb.LoadBalancerArn), desc.AvailabilityZones) {
		if addrs != [2]string{created[sn][0], ""} {
			t.Errorf("after ipv4, subnet %s has addresses %q, want %q and no IPv6 one", sn, addrs, created[sn][0])
		}
	}
	again := must[*elbv2.SetIpAddressTypeOutput](t)(e.ELB.SetIpAddressType(e.ctx, &elbv2.SetIpAddressTypeInput{LoadBalancerArn: lb.LoadBalancerArn, IpAddressType: types.IpAddressTypeDualstack}))
	if again.IpAddressType != types.IpAddressTypeDualstack {
		t.Errorf("SetIpAddressType dualstack answered %s", again.IpAddressType)
	}
	checkDualstack("dualstack again", aws.ToString(lb.LoadBalancerArn), e.describeLB(t, aws.ToString(lb.LoadBalancerArn)).AvailabilityZones)

	// A chosen IPv6 address, for an internal load balancer: inside the subnet, or an error.
	chosen := must[*elbv2.CreateLoadBalancerOutput](t)(e.ELB.CreateLoadBalancer(e.ctx, &elbv2.CreateLoadBalancerInput{Name: aws.String("ds-chosen"),
		Type: types.LoadBalancerTypeEnumNetwork, Scheme: types.LoadBalancerSchemeEnumInternal, IpAddressType: types.IpAddressTypeDualstack,
		SubnetMappings: []types.SubnetMapping{{SubnetId: aws.String(a), IPv6Address: aws.String("2001:db8:20:1::abc")}}})).LoadBalancers[0]
	if got := e.zoneAddrs(t, aws.ToString(chosen.LoadBalancerArn), chosen.AvailabilityZones)[a][1]; got != "2001:db8:20:1::abc" {
		t.Errorf("chosen IPv6 address answered as %q", got)
	}
	_, err = e.ELB.CreateLoadBalancer(e.ctx, &elbv2.CreateLoadBalancerInput{Name: aws.String("ds-outside"),
		Type: types.LoadBalancerTypeEnumNetwork, Scheme: types.LoadBalancerSchemeEnumInternal, IpAddressType: types.IpAddressTypeDualstack,
		SubnetMappings: []types.SubnetMapping{{SubnetId: aws.String(a), IPv6Address: aws.String("2001:db8:20:2::abc")}}})
	wantCode(t, err, "InvalidConfigurationRequest")

	// What a dualstack load balancer cannot have here: UDP listeners, and the IPv6 source NAT
	// prefixes AWS would need for them.
	tg := e.createTG(t, "udp", func(in *elbv2.CreateTargetGroupInput) {
		in.Protocol, in.VpcId = types.ProtocolEnumUdp, sns["dual-a"].VpcId
	})
	_, err = e.ELB.CreateListener(e.ctx, &elbv2.CreateListenerInput{LoadBalancerArn: lb.LoadBalancerArn, Protocol: types.ProtocolEnumUdp, Port: aws.Int32(53),
		DefaultActions: forward(aws.ToString(tg.TargetGroupArn))})
	wantCode(t, err, "InvalidConfigurationRequest")
	for ipType, msg := range map[types.IpAddressType]string{types.IpAddressTypeDualstack: "moat does not support", types.IpAddressTypeIpv4: "dualstack"} {
		_, err = e.ELB.CreateLoadBalancer(e.ctx, &elbv2.CreateLoadBalancerInput{Name: aws.String("ds-nat"), Type: types.LoadBalancerTypeEnumNetwork,
			IpAddressType: ipType, Subnets: []string{a}, EnablePrefixForIpv6SourceNat: types.EnablePrefixForIpv6SourceNatEnumOn})
		wantCode(t, err, "InvalidConfigurationRequest")
		wantMessage(t, err, msg)
	}
}

// TestSourceNATDescribed: a load balancer created with EnablePrefixForIpv6SourceNat=off, as the
// AWS controller creates every dualstack one, is described and set with that value, so that a
// client comparing it after the create finds no drift (the AWS controller calls SetSubnets on
// every resync when the field is missing).
func TestSourceNATDescribed(t *testing.T) {
	e, _, sns := dualstackEnv(t)
	a, b := aws.ToString(sns["dual-a"].SubnetId), aws.ToString(sns["dual-b"].SubnetId)
	out := must[*elbv2.CreateLoadBalancerOutput](t)(e.ELB.CreateLoadBalancer(e.ctx, &elbv2.CreateLoadBalancerInput{Name: aws.String("ds-off"),
		Type: types.LoadBalancerTypeEnumNetwork, IpAddressType: types.IpAddressTypeDualstack, Subnets: []string{a},
		EnablePrefixForIpv6SourceNat: types.EnablePrefixForIpv6SourceNatEnumOff}))
	arn := aws.ToString(out.LoadBalancers[0].LoadBalancerArn)
	if got := out.LoadBalancers[0].EnablePrefixForIpv6SourceNat; got != types.EnablePrefixForIpv6SourceNatEnumOff {
		t.Errorf("create answers EnablePrefixForIpv6SourceNat %q, want off", got)
	}
	if got := e.describeLB(t, arn).EnablePrefixForIpv6SourceNat; got != types.EnablePrefixForIpv6SourceNatEnumOff {
		t.Errorf("describe answers EnablePrefixForIpv6SourceNat %q, want off", got)
	}
	set := must[*elbv2.SetSubnetsOutput](t)(e.ELB.SetSubnets(e.ctx, &elbv2.SetSubnetsInput{LoadBalancerArn: aws.String(arn),
		Subnets: []string{a, b}, EnablePrefixForIpv6SourceNat: types.EnablePrefixForIpv6SourceNatEnumOff}))
	if set.EnablePrefixForIpv6SourceNat != types.EnablePrefixForIpv6SourceNatEnumOff || len(set.AvailabilityZones) != 2 {
		t.Errorf("SetSubnets answers EnablePrefixForIpv6SourceNat %q and %d zones, want off and 2", set.EnablePrefixForIpv6SourceNat, len(set.AvailabilityZones))
	}
}
