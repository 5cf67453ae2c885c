package awsapi

import (
	"context"

	"github.com/moatlb/moat/internal/cloud"
)

// VPCs and subnets by API, as infrastructure-as-code tools create them.

type createVpcIn struct {
	CidrBlock                   string
	AmazonProvidedIpv6CidrBlock bool
	Ipv4IpamPoolId              string
	TagSpecifications           []ec2TagSpec `query:"TagSpecification"`
}

func (s *Server) createVpc(_ context.Context, in *createVpcIn) (any, error) {
	if in.AmazonProvidedIpv6CidrBlock || in.Ipv4IpamPoolId != "" {
		return nil, &cloud.Error{Code: "InvalidParameterValue", Message: "moat assigns no Amazon-provided IPv6 blocks and has no IPAM pools: give CidrBlock."}
	}
	tags, err := specTags(in.TagSpecifications, "vpc")
	if err != nil {
		return nil, err
	}
	v, err := s.cloud.CreateVPC(in.CidrBlock, tags)
	if err != nil {
		return nil, err
	}
	return struct {
		Vpc ec2VPC `xml:"vpc"`
	}{s.vpcOut(v)}, nil
}

type vpcIDIn struct {
	VpcId string
}

func (s *Server) deleteVpc(_ context.Context, in *vpcIDIn) (any, error) {
	return returnTrue(s.cloud.DeleteVPC(in.VpcId))
}

type ec2BoolValue struct {
	Value *bool
}

type modifyVpcAttributeIn struct {
	VpcId                            string
	EnableDnsSupport                 ec2BoolValue
	EnableDnsHostnames               ec2BoolValue
	EnableNetworkAddressUsageMetrics ec2BoolValue
}

func (s *Server) modifyVpcAttribute(_ context.Context, in *modifyVpcAttributeIn) (any, error) {
	return returnTrue(s.cloud.ModifyVPCAttribute(in.VpcId, in.EnableDnsSupport.Value, in.EnableDnsHostnames.Value, in.EnableNetworkAddressUsageMetrics.Value))
}

type describeVpcAttributeIn struct {
	VpcId     string
	Attribute string
}

type ec2AttributeBool struct {
	Value bool `xml:"value"`
}

func (s *Server) describeVpcAttribute(_ context.Context, in *describeVpcAttributeIn) (any, error) {
	value, err := s.cloud.DescribeVPCAttribute(in.VpcId, in.Attribute)
	if err != nil {
		return nil, err
	}
	out := struct {
		VpcID                            string            `xml:"vpcId"`
		EnableDnsSupport                 *ec2AttributeBool `xml:"enableDnsSupport,omitempty"`
		EnableDnsHostnames               *ec2AttributeBool `xml:"enableDnsHostnames,omitempty"`
		EnableNetworkAddressUsageMetrics *ec2AttributeBool `xml:"enableNetworkAddressUsageMetrics,omitempty"`
	}{VpcID: in.VpcId}
	answer := &ec2AttributeBool{value}
	switch in.Attribute {
	case "enableDnsSupport":
		out.EnableDnsSupport = answer
	case "enableDnsHostnames":
		out.EnableDnsHostnames = answer
	default:
		out.EnableNetworkAddressUsageMetrics = answer
	}
	return out, nil
}

type createSubnetIn struct {
	VpcId              string
	CidrBlock          string
	AvailabilityZone   string
	AvailabilityZoneId string
	Ipv6CidrBlock      string
	TagSpecifications  []ec2TagSpec `query:"TagSpecification"`
}

func (s *Server) createSubnet(_ context.Context, in *createSubnetIn) (any, error) {
	if in.Ipv6CidrBlock != "" {
		return nil, &cloud.Error{Code: "InvalidParameterValue", Message: "moat's API-made subnets are IPv4: declare IPv6 subnets in the inventory."}
	}
	tags, err := specTags(in.TagSpecifications, "subnet")
	if err != nil {
		return nil, err
	}
	sn, err := s.cloud.CreateSubnet(cloud.CreateSubnetInput{VPCID: in.VpcId, CIDR: in.CidrBlock, Zone: in.AvailabilityZone, ZoneID: in.AvailabilityZoneId, Tags: tags})
	if err != nil {
		return nil, err
	}
	return struct {
		Subnet ec2Subnet `xml:"subnet"`
	}{s.subnetOut(sn)}, nil
}

type subnetIDIn struct {
	SubnetId string
}

func (s *Server) deleteSubnet(_ context.Context, in *subnetIDIn) (any, error) {
	return returnTrue(s.cloud.DeleteSubnet(in.SubnetId))
}

type modifySubnetAttributeIn struct {
	SubnetId                    string
	MapPublicIpOnLaunch         ec2BoolValue
	AssignIpv6AddressOnCreation ec2BoolValue
}

func (s *Server) modifySubnetAttribute(_ context.Context, in *modifySubnetAttributeIn) (any, error) {
	return returnTrue(s.cloud.ModifySubnetAttribute(in.SubnetId, in.MapPublicIpOnLaunch.Value, in.AssignIpv6AddressOnCreation.Value))
}
