package awsapi_test

import (
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"

	"github.com/moatlb/moat/internal/cloud"
)

// TestVPCLifecycle creates a VPC and subnets as a Terraform configuration does, checks AWS's range,
// overlap and zone rules, attributes and dependencies, and deletes everything again.
func TestVPCLifecycle(t *testing.T) {
	e := newEnv(t)
	vpc := must[*ec2.CreateVpcOutput](t)(e.EC2.CreateVpc(e.ctx, &ec2.CreateVpcInput{
		CidrBlock:         aws.String("127.50.0.0/16"),
		TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeVpc, Tags: []types.Tag{{Key: aws.String("Name"), Value: aws.String("tf")}}}},
	})).Vpc
	vpcID := aws.ToString(vpc.VpcId)
	if aws.ToString(vpc.CidrBlock) != "127.50.0.0/16" || vpc.State != types.VpcStateAvailable || aws.ToBool(vpc.IsDefault) || len(vpc.Tags) != 1 {
		t.Fatalf("created %+v", vpc)
	}
	described := must[*ec2.DescribeVpcsOutput](t)(e.EC2.DescribeVpcs(e.ctx, &ec2.DescribeVpcsInput{VpcIds: []string{vpcID}})).Vpcs
	if len(described) != 1 || aws.ToString(described[0].CidrBlock) != "127.50.0.0/16" {
		t.Fatalf("described %+v", described)
	}
	groups := must[*ec2.DescribeSecurityGroupsOutput](t)(e.EC2.DescribeSecurityGroups(e.ctx, &ec2.DescribeSecurityGroupsInput{
		Filters: []types.Filter{{Name: aws.String("vpc-id"), Values: []string{vpcID}}},
	})).SecurityGroups
	if len(groups) != 1 || aws.ToString(groups[0].GroupName) != "default" {
		t.Fatalf("the new VPC's groups: %+v", groups)
	}

	for _, cidr := range []string{"127.50.0.0/8", "127.50.0.0/29", "not-a-cidr"} {
		_, err := e.EC2.CreateVpc(e.ctx, &ec2.CreateVpcInput{CidrBlock: aws.String(cidr)})
		if code := errorCode(err); code != "InvalidVpc.Range" && code != "InvalidParameterValue" {
			t.Errorf("CreateVpc %s: %v", cidr, err)
		}
	}

	attr := func(name types.VpcAttributeName) bool {
		t.Helper()
		out := must[*ec2.DescribeVpcAttributeOutput](t)(e.EC2.DescribeVpcAttribute(e.ctx, &ec2.DescribeVpcAttributeInput{VpcId: aws.String(vpcID), Attribute: name}))
		switch name {
		case types.VpcAttributeNameEnableDnsSupport:
			return aws.ToBool(out.EnableDnsSupport.Value)
		case types.VpcAttributeNameEnableDnsHostnames:
			return aws.ToBool(out.EnableDnsHostnames.Value)
		}
		return aws.ToBool(out.EnableNetworkAddressUsageMetrics.Value)
	}
	if !attr(types.VpcAttributeNameEnableDnsSupport) || attr(types.VpcAttributeNameEnableDnsHostnames) {
		t.Error("a new VPC's DNS attributes are not AWS's defaults (support on, host names off)")
	}
	must[*ec2.ModifyVpcAttributeOutput](t)(e.EC2.ModifyVpcAttribute(e.ctx, &ec2.ModifyVpcAttributeInput{VpcId: aws.String(vpcID), EnableDnsHostnames: &types.AttributeBooleanValue{Value: aws.Bool(true)}}))
	if !attr(types.VpcAttributeNameEnableDnsHostnames) {
		t.Error("enableDnsHostnames did not read back as set")
	}
	_, err := e.EC2.ModifyVpcAttribute(e.ctx, &ec2.ModifyVpcAttributeInput{VpcId: aws.String(vpcID),
		EnableDnsHostnames: &types.AttributeBooleanValue{Value: aws.Bool(true)}, EnableDnsSupport: &types.AttributeBooleanValue{Value: aws.Bool(true)}})
	wantCode(t, err, "InvalidParameterCombination")

	subnet := func(cidr, zone string) (*types.Subnet, error) {
		out, err := e.EC2.CreateSubnet(e.ctx, &ec2.CreateSubnetInput{VpcId: aws.String(vpcID), CidrBlock: aws.String(cidr), AvailabilityZone: aws.String(zone)})
		if err != nil {
			return nil, err
		}
		return out.Subnet, nil
	}
	a := must[*types.Subnet](t)(subnet("127.50.1.0/24", "us-east-1a"))
	b := must[*types.Subnet](t)(subnet("127.50.2.0/24", "us-east-1b"))
	if aws.ToInt32(a.AvailableIpAddressCount) != 251 || aws.ToString(a.AvailabilityZoneId) != "use1-az1" || aws.ToString(b.AvailabilityZone) != "us-east-1b" {
		t.Errorf("subnets %+v %+v", a, b)
	}
	for _, tc := range []struct{ cidr, zone, code string }{
		{"127.50.1.128/25", "us-east-1a", "InvalidSubnet.Conflict"},
		{"127.51.0.0/24", "us-east-1a", "InvalidSubnet.Range"},
		{"127.50.3.0/29", "us-east-1a", "InvalidSubnet.Range"},
		{"127.50.3.0/24", "eu-west-1a", "InvalidParameterValue"},
	} {
		_, err := subnet(tc.cidr, tc.zone)
		if errorCode(err) != tc.code {
			t.Errorf("CreateSubnet %s in %s: %v, want %s", tc.cidr, tc.zone, err, tc.code)
		}
	}
	must[*ec2.ModifySubnetAttributeOutput](t)(e.EC2.ModifySubnetAttribute(e.ctx, &ec2.ModifySubnetAttributeInput{SubnetId: a.SubnetId, MapPublicIpOnLaunch: &types.AttributeBooleanValue{Value: aws.Bool(true)}}))
	if got := must[*ec2.DescribeSubnetsOutput](t)(e.EC2.DescribeSubnets(e.ctx, &ec2.DescribeSubnetsInput{SubnetIds: []string{aws.ToString(a.SubnetId)}})).Subnets[0]; !aws.ToBool(got.MapPublicIpOnLaunch) {
		t.Error("mapPublicIpOnLaunch did not read back as set")
	}

	// A load balancer in the new subnets gets its addresses from them, and holds them.
	lb := must[*elbv2.CreateLoadBalancerOutput](t)(e.ELB.CreateLoadBalancer(e.ctx, &elbv2.CreateLoadBalancerInput{
		Name: aws.String("tf"), Type: "network", Scheme: "internal", Subnets: []string{aws.ToString(a.SubnetId), aws.ToString(b.SubnetId)},
	})).LoadBalancers[0]
	if aws.ToString(lb.VpcId) != vpcID {
		t.Errorf("load balancer in %s, want %s", aws.ToString(lb.VpcId), vpcID)
	}
	_, err = e.EC2.DeleteSubnet(e.ctx, &ec2.DeleteSubnetInput{SubnetId: a.SubnetId})
	wantCode(t, err, "DependencyViolation")
	_, err = e.EC2.DeleteVpc(e.ctx, &ec2.DeleteVpcInput{VpcId: aws.String(vpcID)})
	wantCode(t, err, "DependencyViolation")

	must[*elbv2.DeleteLoadBalancerOutput](t)(e.ELB.DeleteLoadBalancer(e.ctx, &elbv2.DeleteLoadBalancerInput{LoadBalancerArn: lb.LoadBalancerArn}))
	for _, sn := range []*types.Subnet{a, b} {
		must[*ec2.DeleteSubnetOutput](t)(e.EC2.DeleteSubnet(e.ctx, &ec2.DeleteSubnetInput{SubnetId: sn.SubnetId}))
	}
	must[*ec2.DeleteVpcOutput](t)(e.EC2.DeleteVpc(e.ctx, &ec2.DeleteVpcInput{VpcId: aws.String(vpcID)}))
	_, err = e.EC2.DescribeVpcs(e.ctx, &ec2.DescribeVpcsInput{VpcIds: []string{vpcID}})
	wantCode(t, err, "InvalidVpcID.NotFound")
	left := must[*ec2.DescribeSecurityGroupsOutput](t)(e.EC2.DescribeSecurityGroups(e.ctx, &ec2.DescribeSecurityGroupsInput{
		Filters: []types.Filter{{Name: aws.String("vpc-id"), Values: []string{vpcID}}},
	})).SecurityGroups
	if len(left) != 0 {
		t.Errorf("the deleted VPC's groups remain: %+v", left)
	}
}

// TestIPv6Blocks: a VPC gets an Amazon-provided /56 and its subnets /64s inside it, as a dualstack
// Terraform configuration asks; blocks in use cannot be taken away, and association IDs name
// what they associate.
func TestIPv6Blocks(t *testing.T) {
	e := newEnv(t)
	vpc := must[*ec2.CreateVpcOutput](t)(e.EC2.CreateVpc(e.ctx, &ec2.CreateVpcInput{CidrBlock: aws.String("127.80.0.0/16")})).Vpc
	assoc := must[*ec2.AssociateVpcCidrBlockOutput](t)(e.EC2.AssociateVpcCidrBlock(e.ctx, &ec2.AssociateVpcCidrBlockInput{VpcId: vpc.VpcId, AmazonProvidedIpv6CidrBlock: aws.Bool(true)}))
	block := aws.ToString(assoc.Ipv6CidrBlockAssociation.Ipv6CidrBlock)
	if !strings.HasPrefix(block, "2001:db8:") || !strings.HasSuffix(block, "/56") {
		t.Fatalf("Amazon-provided block %q", block)
	}
	described := must[*ec2.DescribeVpcsOutput](t)(e.EC2.DescribeVpcs(e.ctx, &ec2.DescribeVpcsInput{VpcIds: []string{aws.ToString(vpc.VpcId)}})).Vpcs[0]
	if len(described.Ipv6CidrBlockAssociationSet) != 1 || aws.ToString(described.Ipv6CidrBlockAssociationSet[0].AssociationId) != aws.ToString(assoc.Ipv6CidrBlockAssociation.AssociationId) ||
		described.Ipv6CidrBlockAssociationSet[0].Ipv6CidrBlockState.State != types.VpcCidrBlockStateCodeAssociated {
		t.Fatalf("described %+v", described.Ipv6CidrBlockAssociationSet)
	}
	_, err := e.EC2.AssociateVpcCidrBlock(e.ctx, &ec2.AssociateVpcCidrBlockInput{VpcId: vpc.VpcId, AmazonProvidedIpv6CidrBlock: aws.Bool(true)})
	wantCode(t, err, "CidrLimitExceeded")

	first := strings.TrimSuffix(block, "/56")
	first = strings.TrimSuffix(first, "::") + "::/64"
	sn := must[*ec2.CreateSubnetOutput](t)(e.EC2.CreateSubnet(e.ctx, &ec2.CreateSubnetInput{VpcId: vpc.VpcId, CidrBlock: aws.String("127.80.1.0/24"), AvailabilityZone: aws.String("us-east-1a")})).Subnet
	sub := must[*ec2.AssociateSubnetCidrBlockOutput](t)(e.EC2.AssociateSubnetCidrBlock(e.ctx, &ec2.AssociateSubnetCidrBlockInput{SubnetId: sn.SubnetId, Ipv6CidrBlock: aws.String(first)}))
	if aws.ToString(sub.Ipv6CidrBlockAssociation.Ipv6CidrBlock) != first {
		t.Fatalf("subnet block %+v", sub.Ipv6CidrBlockAssociation)
	}
	for _, tc := range []struct{ cidr, code string }{
		{first, "InvalidSubnet.Conflict"},
		{"2001:db9::/64", "InvalidSubnet.Range"},
		{"not-a-block", "InvalidParameterValue"},
	} {
		_, err := e.EC2.CreateSubnet(e.ctx, &ec2.CreateSubnetInput{VpcId: vpc.VpcId, CidrBlock: aws.String("127.80.2.0/24"), Ipv6CidrBlock: aws.String(tc.cidr), AvailabilityZone: aws.String("us-east-1b")})
		if errorCode(err) != tc.code {
			t.Errorf("CreateSubnet with IPv6 %s: %v, want %s", tc.cidr, err, tc.code)
		}
	}

	// A dualstack load balancer in the subnet holds its block.
	lb := must[*elbv2.CreateLoadBalancerOutput](t)(e.ELB.CreateLoadBalancer(e.ctx, &elbv2.CreateLoadBalancerInput{
		Name: aws.String("v6"), Type: "network", Scheme: "internal", IpAddressType: "dualstack", Subnets: []string{aws.ToString(sn.SubnetId)},
	})).LoadBalancers[0]
	_, err = e.EC2.DisassociateVpcCidrBlock(e.ctx, &ec2.DisassociateVpcCidrBlockInput{AssociationId: assoc.Ipv6CidrBlockAssociation.AssociationId})
	wantCode(t, err, "DependencyViolation")
	_, err = e.EC2.DisassociateSubnetCidrBlock(e.ctx, &ec2.DisassociateSubnetCidrBlockInput{AssociationId: sub.Ipv6CidrBlockAssociation.AssociationId})
	wantCode(t, err, "DependencyViolation")
	must[*elbv2.DeleteLoadBalancerOutput](t)(e.ELB.DeleteLoadBalancer(e.ctx, &elbv2.DeleteLoadBalancerInput{LoadBalancerArn: lb.LoadBalancerArn}))
	must[*ec2.DisassociateSubnetCidrBlockOutput](t)(e.EC2.DisassociateSubnetCidrBlock(e.ctx, &ec2.DisassociateSubnetCidrBlockInput{AssociationId: sub.Ipv6CidrBlockAssociation.AssociationId}))
	must[*ec2.DisassociateVpcCidrBlockOutput](t)(e.EC2.DisassociateVpcCidrBlock(e.ctx, &ec2.DisassociateVpcCidrBlockInput{AssociationId: assoc.Ipv6CidrBlockAssociation.AssociationId}))
	_, err = e.EC2.DisassociateVpcCidrBlock(e.ctx, &ec2.DisassociateVpcCidrBlockInput{AssociationId: assoc.Ipv6CidrBlockAssociation.AssociationId})
	wantCode(t, err, "InvalidVpcCidrBlockAssociationID.NotFound")
	if got := must[*ec2.DescribeSubnetsOutput](t)(e.EC2.DescribeSubnets(e.ctx, &ec2.DescribeSubnetsInput{SubnetIds: []string{aws.ToString(sn.SubnetId)}})).Subnets[0]; len(got.Ipv6CidrBlockAssociationSet) != 0 {
		t.Errorf("the subnet still has %+v", got.Ipv6CidrBlockAssociationSet)
	}
}

// TestSecondaryIPv4Blocks: an inventory VPC's secondary IPv4 blocks reach aws-sdk-go-v2 in
// cidrBlockAssociationSet after the primary, each associated with its own stable association
// ID, and the association filter finds the VPC by any of them.
func TestSecondaryIPv4Blocks(t *testing.T) {
	e := newEnv(t)
	inv, err := cloud.ParseInventory([]byte("vpcs:\n  - {name: nodes, cidr: 10.77.0.0/16, secondaryCidrs: [127.0.0.0/8]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Cloud.ApplyInventory(inv); err != nil {
		t.Fatal(err)
	}
	vpcs := must[*ec2.DescribeVpcsOutput](t)(e.EC2.DescribeVpcs(e.ctx, &ec2.DescribeVpcsInput{
		Filters: []types.Filter{{Name: aws.String("cidr-block-association.cidr-block"), Values: []string{"127.0.0.0/8"}}, {Name: aws.String("cidr"), Values: []string{"10.77.0.0/16"}}},
	})).Vpcs
	if len(vpcs) != 1 {
		t.Fatalf("VPCs by their secondary block: %+v", vpcs)
	}
	v := vpcs[0]
	var blocks, ids []string
	for _, a := range v.CidrBlockAssociationSet {
		if a.CidrBlockState == nil || a.CidrBlockState.State != types.VpcCidrBlockStateCodeAssociated {
			t.Errorf("block %s not associated: %+v", aws.ToString(a.CidrBlock), a.CidrBlockState)
		}
		blocks, ids = append(blocks, aws.ToString(a.CidrBlock)), append(ids, aws.ToString(a.AssociationId))
	}
	if aws.ToString(v.CidrBlock) != "10.77.0.0/16" || strings.Join(blocks, " ") != "10.77.0.0/16 127.0.0.0/8" {
		t.Fatalf("VPC %s, blocks %v", aws.ToString(v.CidrBlock), blocks)
	}
	if ids[0] == ids[1] || !strings.HasPrefix(ids[1], "vpc-cidr-assoc-") || len(ids[1]) != len("vpc-cidr-assoc-")+17 {
		t.Errorf("association IDs %v", ids)
	}
}
