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
	if in.Ipv4IpamPoolId != "" {
		return nil, &cloud.Error{Code: "InvalidParameterValue", Message: "moat has no IPAM pools: give CidrBlock."}
	}
	tags, err := specTags(in.TagSpecifications, "vpc")
	if err != nil {
		return nil, err
	}
	v, err := s.cloud.CreateVPC(in.CidrBlock, in.AmazonProvidedIpv6CidrBlock, tags)
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
	tags, err := specTags(in.TagSpecifications, "subnet")
	if err != nil {
		return nil, err
	}
	sn, err := s.cloud.CreateSubnet(cloud.CreateSubnetInput{VPCID: in.VpcId, CIDR: in.CidrBlock, IPv6CIDR: in.Ipv6CidrBlock, Zone: in.AvailabilityZone, ZoneID: in.AvailabilityZoneId, Tags: tags})
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

type associateVpcCidrBlockIn struct {
	VpcId                       string
	CidrBlock                   string
	Ipv6CidrBlock               string
	AmazonProvidedIpv6CidrBlock bool
}

// associationOut is an IPv6 block as Associate/Disassociate answer it: on its way.
func (s *Server) associationOut(kind, id, cidr, state string) ec2IPv6Association {
	a := ipv6Associations(kind, id, cidr)[0]
	a.Ipv6CidrBlockState.State = state
	if kind == "vpc" {
		a.NetworkBorderGroup = s.cloud.Config().Region
	}
	return a
}

func (s *Server) associateVpcCidrBlock(_ context.Context, in *associateVpcCidrBlockIn) (any, error) {
	if in.CidrBlock != "" {
		return nil, &cloud.Error{Code: "CidrLimitExceeded", Message: "moat's VPCs have one IPv4 block: give an IPv6 block."}
	}
	v, err := s.cloud.AssociateVPCIPv6(in.VpcId, in.Ipv6CidrBlock, in.AmazonProvidedIpv6CidrBlock)
	if err != nil {
		return nil, err
	}
	return struct {
		VpcID       string             `xml:"vpcId"`
		Association ec2IPv6Association `xml:"ipv6CidrBlockAssociation"`
	}{v.ID, s.associationOut("vpc", v.ID, v.IPv6CIDR, "associating")}, nil
}

type associationIDIn struct {
	AssociationId string
}

func (s *Server) disassociateVpcCidrBlock(_ context.Context, in *associationIDIn) (any, error) {
	v, err := s.cloud.DisassociateVPCIPv6(in.AssociationId)
	if err != nil {
		return nil, err
	}
	return struct {
		VpcID       string             `xml:"vpcId"`
		Association ec2IPv6Association `xml:"ipv6CidrBlockAssociation"`
	}{v.ID, s.associationOut("vpc", v.ID, v.IPv6CIDR, "disassociating")}, nil
}

type associateSubnetCidrBlockIn struct {
	SubnetId      string
	Ipv6CidrBlock string
}

func (s *Server) associateSubnetCidrBlock(_ context.Context, in *associateSubnetCidrBlockIn) (any, error) {
	sn, err := s.cloud.AssociateSubnetIPv6(in.SubnetId, in.Ipv6CidrBlock)
	if err != nil {
		return nil, err
	}
	return struct {
		SubnetID    string             `xml:"subnetId"`
		Association ec2IPv6Association `xml:"ipv6CidrBlockAssociation"`
	}{sn.ID, s.associationOut("subnet", sn.ID, sn.IPv6CIDR, "associating")}, nil
}

func (s *Server) disassociateSubnetCidrBlock(_ context.Context, in *associationIDIn) (any, error) {
	sn, err := s.cloud.DisassociateSubnetIPv6(in.AssociationId)
	if err != nil {
		return nil, err
	}
	return struct {
		SubnetID    string             `xml:"subnetId"`
		Association ec2IPv6Association `xml:"ipv6CidrBlockAssociation"`
	}{sn.ID, s.associationOut("subnet", sn.ID, sn.IPv6CIDR, "disassociating")}, nil
}
