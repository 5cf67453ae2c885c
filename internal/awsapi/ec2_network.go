package awsapi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
	"slices"
	"strings"

	"github.com/moatlb/moat/internal/awsapi/wire"
	"github.com/moatlb/moat/internal/cloud"
)

// The read-only view of the inventory: VPCs, subnets, route tables, zones, instances, interfaces
// and prefix lists, with the fields that load balancer controllers read.

type describeByIDIn struct {
	VpcIds              []string    `query:"VpcId"`
	SubnetIds           []string    `query:"SubnetId"`
	InstanceIds         []string    `query:"InstanceId"`
	NetworkInterfaceIds []string    `query:"NetworkInterfaceId"`
	RouteTableIds       []string    `query:"RouteTableId"`
	PrefixListIds       []string    `query:"PrefixListId"`
	ZoneNames           []string    `query:"ZoneName"`
	ZoneIds             []string    `query:"ZoneId"`
	Filters             []ec2Filter `query:"Filter"`
	MaxResults          int
	NextToken           string
}

type ec2CidrAssociation struct {
	AssociationID  string `xml:"associationId"`
	CidrBlock      string `xml:"cidrBlock"`
	CidrBlockState struct {
		State string `xml:"state"`
	} `xml:"cidrBlockState"`
}

// ec2IPv6Association is an IPv6 CIDR block of a VPC or subnet (VpcIpv6CidrBlockAssociation,
// SubnetIpv6CidrBlockAssociation); the VPC's also says where the block comes from.
type ec2IPv6Association struct {
	AssociationID      string `xml:"associationId"`
	Ipv6CidrBlock      string `xml:"ipv6CidrBlock"`
	Ipv6CidrBlockState struct {
		State string `xml:"state"`
	} `xml:"ipv6CidrBlockState"`
	NetworkBorderGroup   string `xml:"networkBorderGroup,omitempty"`
	Ipv6Pool             string `xml:"ipv6Pool,omitempty"`
	Ipv6AddressAttribute string `xml:"ipv6AddressAttribute"`
	IPSource             string `xml:"ipSource"`
}

// ipv6Associations lists cidr (none when empty) as associated. Unique local addresses
// (fc00::/7) are private space, as an IPAM pool would give; other blocks count as Amazon's
// public ones, which is what a VPC's Amazon-provided block is.
func ipv6Associations(prefix, id, cidr string) wire.Items[ec2IPv6Association] {
	out := wire.Items[ec2IPv6Association]{}
	if cidr == "" {
		return out
	}
	a := ec2IPv6Association{AssociationID: cloud.IPv6AssociationID(prefix, id, cidr), Ipv6CidrBlock: cidr,
		Ipv6AddressAttribute: "public", IPSource: "amazon"}
	if p, err := netip.ParsePrefix(cidr); err == nil && netip.MustParsePrefix("fc00::/7").Contains(p.Addr()) {
		a.Ipv6AddressAttribute, a.IPSource = "private", "none"
	}
	a.Ipv6CidrBlockState.State = "associated"
	return append(out, a)
}

type ec2VPC struct {
	VpcID                       string                         `xml:"vpcId"`
	OwnerID                     string                         `xml:"ownerId"`
	State                       string                         `xml:"state"`
	CidrBlock                   string                         `xml:"cidrBlock"`
	CidrBlockAssociationSet     wire.Items[ec2CidrAssociation] `xml:"cidrBlockAssociationSet"`
	Ipv6CidrBlockAssociationSet wire.Items[ec2IPv6Association] `xml:"ipv6CidrBlockAssociationSet"`
	IsDefault                   bool                           `xml:"isDefault"`
	InstanceTenancy             string                         `xml:"instanceTenancy"`
	TagSet                      wire.Items[ec2Tag]             `xml:"tagSet"`
}

func (s *Server) describeVpcs(_ context.Context, in *describeByIDIn) (any, error) {
	vpcs, err := s.cloud.DescribeVPCs(in.VpcIds, filters(in.Filters))
	if err != nil {
		return nil, err
	}
	out := wire.Items[ec2VPC]{}
	for _, v := range vpcs {
		out = append(out, s.vpcOut(v))
	}
	return struct {
		VpcSet wire.Items[ec2VPC] `xml:"vpcSet"`
	}{out}, nil
}

func (s *Server) vpcOut(v cloud.VPC) ec2VPC {
	// The primary block's association takes the VPC's own hex; a secondary block's, a hash of
	// the VPC and the block, so that it is stable.
	assocs := wire.Items[ec2CidrAssociation]{}
	for i, block := range append([]string{v.CIDR}, v.SecondaryCIDRs...) {
		id := "vpc-cidr-assoc-" + strings.TrimPrefix(v.ID, "vpc-")
		if i > 0 {
			sum := sha256.Sum256([]byte(v.ID + "/" + block))
			id = "vpc-cidr-assoc-" + hex.EncodeToString(sum[:])[:17]
		}
		a := ec2CidrAssociation{AssociationID: id, CidrBlock: block}
		a.CidrBlockState.State = "associated"
		assocs = append(assocs, a)
	}
	v6 := ipv6Associations("vpc", v.ID, v.IPv6CIDR)
	for i := range v6 {
		v6[i].NetworkBorderGroup = s.cloud.Config().Region
		if v6[i].IPSource == "amazon" {
			v6[i].Ipv6Pool = "Amazon"
		}
	}
	return ec2VPC{
		VpcID: v.ID, OwnerID: s.cloud.Config().AccountID, State: "available", CidrBlock: v.CIDR,
		CidrBlockAssociationSet: assocs, Ipv6CidrBlockAssociationSet: v6,
		IsDefault: v.Default, InstanceTenancy: "default", TagSet: tagsOut(v.Tags),
	}
}

type ec2Subnet struct {
	SubnetID                    string                         `xml:"subnetId"`
	SubnetArn                   string                         `xml:"subnetArn"`
	VpcID                       string                         `xml:"vpcId"`
	OwnerID                     string                         `xml:"ownerId"`
	State                       string                         `xml:"state"`
	CidrBlock                   string                         `xml:"cidrBlock"`
	Ipv6CidrBlockAssociationSet wire.Items[ec2IPv6Association] `xml:"ipv6CidrBlockAssociationSet"`
	AvailabilityZone            string                         `xml:"availabilityZone"`
	AvailabilityZoneID          string                         `xml:"availabilityZoneId"`
	AvailableIPAddressCount     int                            `xml:"availableIpAddressCount"`
	DefaultForAz                bool                           `xml:"defaultForAz"`
	MapPublicIPOnLaunch         bool                           `xml:"mapPublicIpOnLaunch"`
	AssignIpv6AddressOnCreation bool                           `xml:"assignIpv6AddressOnCreation"`
	Ipv6Native                  bool                           `xml:"ipv6Native"`
	EnableDns64                 bool                           `xml:"enableDns64"`
	// What AWS answers for a subnet nobody changed, which moat's are: Terraform reads them into
	// its state, so leaving them out shows a change on every plan.
	PrivateDNSNameOptionsOnLaunch ec2PrivateDNSNameOptions `xml:"privateDnsNameOptionsOnLaunch"`
	BlockPublicAccessStates       ec2BlockPublicAccess     `xml:"blockPublicAccessStates"`
	TagSet                        wire.Items[ec2Tag]       `xml:"tagSet"`
}

type ec2PrivateDNSNameOptions struct {
	HostnameType                    string `xml:"hostnameType"`
	EnableResourceNameDNSARecord    bool   `xml:"enableResourceNameDnsARecord"`
	EnableResourceNameDNSAAAARecord bool   `xml:"enableResourceNameDnsAAAARecord"`
}

type ec2BlockPublicAccess struct {
	InternetGatewayBlockMode string `xml:"internetGatewayBlockMode"`
}

func (s *Server) describeSubnets(_ context.Context, in *describeByIDIn) (any, error) {
	subnets, err := s.cloud.DescribeSubnets(in.SubnetIds, filters(in.Filters))
	if err != nil {
		return nil, err
	}
	out := wire.Items[ec2Subnet]{}
	for _, sn := range subnets {
		out = append(out, s.subnetOut(sn))
	}
	return struct {
		SubnetSet wire.Items[ec2Subnet] `xml:"subnetSet"`
	}{out}, nil
}

func (s *Server) subnetOut(sn cloud.Subnet) ec2Subnet {
	return ec2Subnet{
		SubnetID: sn.ID, SubnetArn: s.arn("subnet/" + sn.ID), VpcID: sn.VPCID, OwnerID: s.cloud.Config().AccountID,
		State: "available", CidrBlock: sn.CIDR, Ipv6CidrBlockAssociationSet: ipv6Associations("subnet", sn.ID, sn.IPv6CIDR),
		AvailabilityZone: sn.Zone, AvailabilityZoneID: sn.ZoneID,
		AvailableIPAddressCount: sn.AvailableIPAddressCount, MapPublicIPOnLaunch: sn.MapPublicIPOnLaunch,
		AssignIpv6AddressOnCreation: sn.AssignIPv6AddressOnCreation, TagSet: tagsOut(sn.Tags),
		PrivateDNSNameOptionsOnLaunch: ec2PrivateDNSNameOptions{HostnameType: "ip-name"},
		BlockPublicAccessStates:       ec2BlockPublicAccess{InternetGatewayBlockMode: "off"},
	}
}

type ec2Route struct {
	DestinationCidrBlock string `xml:"destinationCidrBlock"`
	GatewayID            string `xml:"gatewayId"`
	State                string `xml:"state"`
	Origin               string `xml:"origin"`
}

type ec2RouteTableAssociation struct {
	RouteTableAssociationID string `xml:"routeTableAssociationId"`
	RouteTableID            string `xml:"routeTableId"`
	Main                    bool   `xml:"main"`
}

type ec2RouteTable struct {
	RouteTableID   string                               `xml:"routeTableId"`
	VpcID          string                               `xml:"vpcId"`
	OwnerID        string                               `xml:"ownerId"`
	RouteSet       wire.Items[ec2Route]                 `xml:"routeSet"`
	AssociationSet wire.Items[ec2RouteTableAssociation] `xml:"associationSet"`
	TagSet         wire.Items[ec2Tag]                   `xml:"tagSet"`
}

// describeRouteTables answers with one main route table per VPC holding only the local route:
// moat's networks have no internet gateway, so controllers that look for one treat every subnet
// as private, and moat serves both schemes from them (SPEC §5).
func (s *Server) describeRouteTables(_ context.Context, in *describeByIDIn) (any, error) {
	var vpcIDs []string
	var rest []cloud.Filter
	mainOnly := true // association.main: each VPC's one table is its main one
	for _, f := range filters(in.Filters) {
		switch f.Name {
		case "vpc-id":
			vpcIDs = append(vpcIDs, f.Values...)
		case "association.main":
			mainOnly = mainOnly && contains(f.Values, "true")
		case "association.subnet-id":
		default:
			rest = append(rest, f)
		}
	}
	vpcs, err := s.cloud.DescribeVPCs(nil, nil)
	if err != nil {
		return nil, err
	}
	out := wire.Items[ec2RouteTable]{}
	for _, v := range vpcs {
		if len(vpcIDs) > 0 && !contains(vpcIDs, v.ID) {
			continue
		}
		id := "rtb-" + strings.TrimPrefix(v.ID, "vpc-")
		if len(in.RouteTableIds) > 0 && !contains(in.RouteTableIds, id) {
			continue
		}
		if len(rest) > 0 {
			return nil, &cloud.Error{Code: "InvalidParameterValue", Message: "The filter '" + rest[0].Name + "' is invalid"}
		}
		if !mainOnly {
			continue
		}
		out = append(out, ec2RouteTable{
			RouteTableID: id, VpcID: v.ID, OwnerID: s.cloud.Config().AccountID,
			RouteSet:       wire.Items[ec2Route]{{DestinationCidrBlock: v.CIDR, GatewayID: "local", State: "active", Origin: "CreateRouteTable"}},
			AssociationSet: wire.Items[ec2RouteTableAssociation]{{RouteTableAssociationID: "rtbassoc-" + strings.TrimPrefix(v.ID, "vpc-"), RouteTableID: id, Main: true}},
			TagSet:         wire.Items[ec2Tag]{},
		})
	}
	return struct {
		RouteTableSet wire.Items[ec2RouteTable] `xml:"routeTableSet"`
	}{out}, nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

type ec2AvailabilityZone struct {
	ZoneName           string `xml:"zoneName"`
	ZoneID             string `xml:"zoneId"`
	ZoneState          string `xml:"zoneState"`
	ZoneType           string `xml:"zoneType"`
	RegionName         string `xml:"regionName"`
	OptInStatus        string `xml:"optInStatus"`
	GroupName          string `xml:"groupName"`
	NetworkBorderGroup string `xml:"networkBorderGroup"`
}

func (s *Server) describeAvailabilityZones(_ context.Context, in *describeByIDIn) (any, error) {
	zones, err := s.cloud.DescribeAvailabilityZones(in.ZoneNames, in.ZoneIds)
	if err != nil {
		return nil, err
	}
	region := s.cloud.Config().Region
	out := wire.Items[ec2AvailabilityZone]{}
	for _, z := range zones {
		out = append(out, ec2AvailabilityZone{ZoneName: z.Name, ZoneID: z.ID, ZoneState: "available", ZoneType: "availability-zone", RegionName: region, OptInStatus: "opt-in-not-required", GroupName: region, NetworkBorderGroup: region})
	}
	return struct {
		AvailabilityZoneInfo wire.Items[ec2AvailabilityZone] `xml:"availabilityZoneInfo"`
	}{out}, nil
}

type ec2GroupIdentifier struct {
	GroupID   string `xml:"groupId"`
	GroupName string `xml:"groupName"`
}

type ec2PrivateIP struct {
	PrivateIPAddress string `xml:"privateIpAddress"`
	Primary          bool   `xml:"primary"`
}

type ec2Attachment struct {
	AttachmentID string `xml:"attachmentId"`
	InstanceID   string `xml:"instanceId,omitempty"`
	DeviceIndex  int    `xml:"deviceIndex"`
	Status       string `xml:"status"`
}

type ec2NetworkInterface struct {
	NetworkInterfaceID    string                         `xml:"networkInterfaceId"`
	SubnetID              string                         `xml:"subnetId"`
	VpcID                 string                         `xml:"vpcId"`
	AvailabilityZone      string                         `xml:"availabilityZone,omitempty"`
	Description           string                         `xml:"description"`
	OwnerID               string                         `xml:"ownerId"`
	Status                string                         `xml:"status"`
	InterfaceType         string                         `xml:"interfaceType"`
	RequesterID           string                         `xml:"requesterId,omitempty"`
	RequesterManaged      bool                           `xml:"requesterManaged"`
	PrivateIPAddress      string                         `xml:"privateIpAddress"`
	PrivateIPAddressesSet wire.Items[ec2PrivateIP]       `xml:"privateIpAddressesSet"`
	GroupSet              wire.Items[ec2GroupIdentifier] `xml:"groupSet"`
	Attachment            *ec2Attachment                 `xml:"attachment,omitempty"`
	TagSet                wire.Items[ec2Tag]             `xml:"tagSet"`
}

func (s *Server) interfaceOut(eni cloud.NetworkInterface, names map[string]string) ec2NetworkInterface {
	out := ec2NetworkInterface{
		NetworkInterfaceID: eni.ID, SubnetID: eni.SubnetID, VpcID: eni.VPCID, Description: eni.Description,
		OwnerID: s.cloud.Config().AccountID, Status: "in-use", InterfaceType: eni.Type(),
		RequesterID: eni.RequesterID, RequesterManaged: eni.RequesterID != "",
		PrivateIPAddressesSet: wire.Items[ec2PrivateIP]{}, GroupSet: wire.Items[ec2GroupIdentifier]{}, TagSet: tagsOut(eni.Tags),
	}
	for i, ip := range eni.PrivateIPs {
		if i == 0 {
			out.PrivateIPAddress = ip
		}
		out.PrivateIPAddressesSet = append(out.PrivateIPAddressesSet, ec2PrivateIP{ip, i == 0})
	}
	for _, g := range eni.Groups {
		out.GroupSet = append(out.GroupSet, ec2GroupIdentifier{g, names[g]})
	}
	if eni.InstanceID != "" {
		out.Attachment = &ec2Attachment{AttachmentID: "eni-attach-" + strings.TrimPrefix(eni.ID, "eni-"), InstanceID: eni.InstanceID, DeviceIndex: 0, Status: "attached"}
	}
	return out
}

// groupNames returns the names of the interfaces' groups, by ID.
func (s *Server) groupNames(enis []cloud.NetworkInterface) (map[string]string, error) {
	var ids []string
	for _, eni := range enis {
		ids = append(ids, eni.Groups...)
	}
	slices.Sort(ids)
	return s.cloud.GroupNames(slices.Compact(ids))
}

func (s *Server) describeNetworkInterfaces(_ context.Context, in *describeByIDIn) (any, error) {
	enis, err := s.cloud.DescribeNetworkInterfaces(in.NetworkInterfaceIds, filters(in.Filters))
	if err != nil {
		return nil, err
	}
	names, err := s.groupNames(enis)
	if err != nil {
		return nil, err
	}
	out := wire.Items[ec2NetworkInterface]{}
	for _, eni := range enis {
		out = append(out, s.interfaceOut(eni, names))
	}
	return struct {
		NetworkInterfaceSet wire.Items[ec2NetworkInterface] `xml:"networkInterfaceSet"`
	}{out}, nil
}

type ec2Instance struct {
	InstanceID       string           `xml:"instanceId"`
	ImageID          string           `xml:"imageId"`
	InstanceState    ec2InstanceState `xml:"instanceState"`
	InstanceType     string           `xml:"instanceType"`
	PrivateIPAddress string           `xml:"privateIpAddress"`
	SubnetID         string           `xml:"subnetId"`
	VpcID            string           `xml:"vpcId"`
	Placement        struct {
		AvailabilityZone string `xml:"availabilityZone"`
	} `xml:"placement"`
	GroupSet            wire.Items[ec2GroupIdentifier]  `xml:"groupSet"`
	NetworkInterfaceSet wire.Items[ec2NetworkInterface] `xml:"networkInterfaceSet"`
	TagSet              wire.Items[ec2Tag]              `xml:"tagSet"`
}

type ec2InstanceState struct {
	Code int    `xml:"code"`
	Name string `xml:"name"`
}

var instanceStateCodes = map[string]int{"pending": 0, "running": 16, "shutting-down": 32, "terminated": 48, "stopping": 64, "stopped": 80}

type ec2Reservation struct {
	ReservationID string                  `xml:"reservationId"`
	OwnerID       string                  `xml:"ownerId"`
	InstancesSet  wire.Items[ec2Instance] `xml:"instancesSet"`
}

func (s *Server) describeInstances(_ context.Context, in *describeByIDIn) (any, error) {
	instances, err := s.cloud.DescribeInstances(in.InstanceIds, filters(in.Filters))
	if err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(instances))
	for _, i := range instances {
		ids = append(ids, i.ID)
	}
	enis, err := s.cloud.InstanceInterfaces(ids)
	if err != nil {
		return nil, err
	}
	names, err := s.groupNames(enis)
	if err != nil {
		return nil, err
	}
	out := wire.Items[ec2Reservation]{}
	for _, i := range instances {
		inst := ec2Instance{
			InstanceID: i.ID, ImageID: "ami-00000000000000000", InstanceState: ec2InstanceState{instanceStateCodes[i.State], i.State},
			InstanceType: "moat.node", PrivateIPAddress: i.PrivateIP, SubnetID: i.SubnetID,
			GroupSet: wire.Items[ec2GroupIdentifier]{}, NetworkInterfaceSet: wire.Items[ec2NetworkInterface]{}, TagSet: tagsOut(i.Tags),
		}
		for _, eni := range enis {
			if eni.InstanceID != i.ID {
				continue
			}
			e := s.interfaceOut(eni, names)
			inst.VpcID = eni.VPCID
			inst.NetworkInterfaceSet = append(inst.NetworkInterfaceSet, e)
			if eni.ID == i.InterfaceID {
				inst.GroupSet = e.GroupSet
			}
		}
		if sn, err := s.cloud.DescribeSubnets([]string{i.SubnetID}, nil); err == nil && len(sn) == 1 {
			inst.Placement.AvailabilityZone = sn[0].Zone
		}
		out = append(out, ec2Reservation{ReservationID: "r-" + strings.TrimPrefix(i.ID, "i-"), OwnerID: s.cloud.Config().AccountID, InstancesSet: wire.Items[ec2Instance]{inst}})
	}
	return struct {
		ReservationSet wire.Items[ec2Reservation] `xml:"reservationSet"`
	}{out}, nil
}

type modifyNetworkInterfaceAttributeIn struct {
	NetworkInterfaceId string
	Groups             []string `query:"SecurityGroupId"`
}

func (s *Server) modifyNetworkInterfaceAttribute(_ context.Context, in *modifyNetworkInterfaceAttributeIn) (any, error) {
	if in.NetworkInterfaceId == "" {
		return nil, &cloud.Error{Code: "MissingParameter", Message: "The request must contain the parameter networkInterfaceId"}
	}
	if in.Groups == nil {
		return nil, &cloud.Error{Code: "InvalidParameterCombination", Message: "moat supports only the Groups (SecurityGroupId.N) attribute of ModifyNetworkInterfaceAttribute."}
	}
	return returnTrue(s.cloud.ModifyNetworkInterfaceGroups(in.NetworkInterfaceId, in.Groups))
}

type ec2PrefixList struct {
	PrefixListID   string             `xml:"prefixListId"`
	PrefixListName string             `xml:"prefixListName"`
	PrefixListArn  string             `xml:"prefixListArn"`
	AddressFamily  string             `xml:"addressFamily"`
	State          string             `xml:"state"`
	MaxEntries     int                `xml:"maxEntries"`
	Version        int                `xml:"version"`
	OwnerID        string             `xml:"ownerId"`
	TagSet         wire.Items[ec2Tag] `xml:"tagSet"`
}

func (s *Server) describeManagedPrefixLists(_ context.Context, in *describeByIDIn) (any, error) {
	lists, err := s.cloud.DescribePrefixLists(in.PrefixListIds, filters(in.Filters))
	if err != nil {
		return nil, err
	}
	out := wire.Items[ec2PrefixList]{}
	for _, p := range lists {
		out = append(out, ec2PrefixList{
			PrefixListID: p.ID, PrefixListName: p.Name, PrefixListArn: s.arn("prefix-list/" + p.ID), AddressFamily: p.AddressFamily,
			State: "create-complete", MaxEntries: p.MaxEntries, Version: p.Version, OwnerID: s.cloud.Config().AccountID, TagSet: tagsOut(p.Tags),
		})
	}
	return struct {
		PrefixListSet wire.Items[ec2PrefixList] `xml:"prefixListSet"`
	}{out}, nil
}

type getManagedPrefixListEntriesIn struct {
	PrefixListId string
	MaxResults   int
	NextToken    string
}

func (s *Server) getManagedPrefixListEntries(_ context.Context, in *getManagedPrefixListEntriesIn) (any, error) {
	if in.PrefixListId == "" {
		return nil, &cloud.Error{Code: "MissingParameter", Message: "The request must contain the parameter PrefixListId"}
	}
	lists, err := s.cloud.DescribePrefixLists([]string{in.PrefixListId}, nil)
	if err != nil {
		return nil, err
	}
	type entry struct {
		Cidr        string `xml:"cidr"`
		Description string `xml:"description,omitempty"`
	}
	out := wire.Items[entry]{}
	for _, e := range lists[0].Entries {
		out = append(out, entry{e.CIDR, e.Description})
	}
	return struct {
		EntrySet wire.Items[entry] `xml:"entrySet"`
	}{out}, nil
}
