package cloud

import (
	"net/netip"
	"regexp"
	"slices"
	"strings"

	"github.com/moatlb/moat/internal/store"
)

// VPCAttributes are ModifyVpcAttribute's switches. moat serves the same with any of them; they are
// kept so that tools which set them read back what they set.
type VPCAttributes struct {
	DNSSupport                 bool
	DNSHostnames               bool
	NetworkAddressUsageMetrics bool
}

// Attributes are the VPC's attributes: those set, or AWS's defaults (DNS support on; DNS host
// names on only in the default VPC).
func (v VPC) Attributes() VPCAttributes {
	if v.Attrs != nil {
		return *v.Attrs
	}
	return VPCAttributes{DNSSupport: true, DNSHostnames: v.Default}
}

// A VPC's or subnet's IPv4 block is a /16 to a /28, as on AWS. moat takes any IPv4 range, and so
// 127.0.0.0/8 too (which AWS refuses): there the load balancers' addresses are local to the host
// without privileges.
const minBlockBits, maxBlockBits = 16, 28

func parseBlock(cidr string) (netip.Prefix, *Error) {
	p, err := netip.ParsePrefix(cidr)
	if err != nil || !p.Addr().Is4() {
		return netip.Prefix{}, errorf("InvalidParameterValue", "Value (%s) for parameter cidrBlock is invalid. This is not a valid CIDR block.", cidr)
	}
	return p.Masked(), nil
}

// CreateVPC creates a VPC with its default security group, in one transaction, and with an
// Amazon-provided IPv6 block if asked.
func (c *Cloud) CreateVPC(cidr string, amazonIPv6 bool, tags []Tag) (VPC, error) {
	if cidr == "" {
		return VPC{}, errorf("MissingParameter", "The request must contain the parameter cidrBlock or ipv4IpamPoolId")
	}
	block, perr := parseBlock(cidr)
	if perr != nil {
		return VPC{}, perr
	}
	if block.Bits() < minBlockBits || block.Bits() > maxBlockBits {
		return VPC{}, errorf("InvalidVpc.Range", "The CIDR '%s' is invalid.", cidr)
	}
	if err := validateEC2Tags(tags); err != nil {
		return VPC{}, err
	}
	vpcTags, err := c.mergeTags(nil, tags)
	if err != nil {
		return VPC{}, err
	}
	v := VPC{ID: newID("vpc"), CIDR: block.String(), Tags: vpcTags}
	if amazonIPv6 {
		v.IPv6CIDR = amazonIPv6Block(v.ID).String()
	}
	err = c.store.Update(func(tx store.Tx) error {
		if err := store.Save(tx, bucketVPCs, v.ID, v); err != nil {
			return err
		}
		return c.ensureGroup(tx, "default", "default VPC security group", v.ID, nil)
	})
	if err != nil {
		return VPC{}, err
	}
	return v, nil
}

func vpcNotFound(id string) *Error {
	return errorf("InvalidVpcID.NotFound", "The vpc ID '%s' does not exist", id)
}

func loadVPC(tx store.Tx, id string) (VPC, error) {
	v, err := store.Load[VPC](tx, bucketVPCs, id)
	if err == store.ErrNotFound {
		return VPC{}, vpcNotFound(id)
	}
	return v, err
}

// DeleteVPC deletes a VPC and its default group. Subnets, interfaces, groups of its own and target
// groups in it are dependencies, as on AWS.
func (c *Cloud) DeleteVPC(id string) error {
	if id == "" {
		return errorf("MissingParameter", "The request must contain the parameter vpcId")
	}
	return c.store.Update(func(tx store.Tx) error {
		if _, err := loadVPC(tx, id); err != nil {
			return err
		}
		dependent := errorf("DependencyViolation", "The vpc '%s' has dependencies and cannot be deleted.", id)
		subnets, err := store.List[Subnet](tx, bucketSubnets)
		if err != nil {
			return err
		}
		if slices.ContainsFunc(subnets, func(s Subnet) bool { return s.VPCID == id }) {
			return dependent
		}
		ifaces, err := store.List[NetworkInterface](tx, bucketInterfaces)
		if err != nil {
			return err
		}
		if slices.ContainsFunc(ifaces, func(n NetworkInterface) bool { return n.VPCID == id }) {
			return dependent
		}
		tgs, err := store.List[TargetGroup](tx, bucketTargetGroups)
		if err != nil {
			return err
		}
		if slices.ContainsFunc(tgs, func(tg TargetGroup) bool { return tg.VPCID == id }) {
			return dependent
		}
		groups, err := store.List[SecurityGroup](tx, bucketSecurityGroups)
		if err != nil {
			return err
		}
		for _, g := range groups {
			if g.VPCID != id {
				continue
			}
			if g.Name != "default" {
				return dependent
			}
			if err := tx.Delete(bucketSecurityGroups, g.ID); err != nil {
				return err
			}
		}
		return tx.Delete(bucketVPCs, id)
	})
}

// ModifyVPCAttribute sets one attribute, as AWS takes one per call.
func (c *Cloud) ModifyVPCAttribute(id string, dnsSupport, dnsHostnames, addressUsageMetrics *bool) error {
	set := 0
	for _, v := range []*bool{dnsSupport, dnsHostnames, addressUsageMetrics} {
		if v != nil {
			set++
		}
	}
	if set != 1 {
		return errorf("InvalidParameterCombination", "Exactly one of enableDnsSupport, enableDnsHostnames or enableNetworkAddressUsageMetrics must be given.")
	}
	return c.store.Update(func(tx store.Tx) error {
		v, err := loadVPC(tx, id)
		if err != nil {
			return err
		}
		attrs := v.Attributes()
		switch {
		case dnsSupport != nil:
			attrs.DNSSupport = *dnsSupport
		case dnsHostnames != nil:
			attrs.DNSHostnames = *dnsHostnames
		default:
			attrs.NetworkAddressUsageMetrics = *addressUsageMetrics
		}
		if attrs.DNSHostnames && !attrs.DNSSupport {
			return errorf("InvalidParameterValue", "DNS hostnames need DNS support: enableDnsSupport is false in %s.", id)
		}
		v.Attrs = &attrs
		return store.Save(tx, bucketVPCs, id, v)
	})
}

// DescribeVPCAttribute answers one attribute of a VPC.
func (c *Cloud) DescribeVPCAttribute(id, attribute string) (bool, error) {
	if attribute == "" {
		return false, errorf("MissingParameter", "The request must contain the parameter attribute")
	}
	var v VPC
	if err := c.store.View(func(tx store.Tx) (err error) {
		v, err = loadVPC(tx, id)
		return err
	}); err != nil {
		return false, err
	}
	attrs := v.Attributes()
	switch attribute {
	case "enableDnsSupport":
		return attrs.DNSSupport, nil
	case "enableDnsHostnames":
		return attrs.DNSHostnames, nil
	case "enableNetworkAddressUsageMetrics":
		return attrs.NetworkAddressUsageMetrics, nil
	}
	return false, errorf("InvalidParameterValue", "Value (%s) for parameter attribute is invalid. Unknown attribute.", attribute)
}

// CreateSubnetInput is CreateSubnet's request.
type CreateSubnetInput struct {
	VPCID, CIDR  string
	IPv6CIDR     string
	Zone, ZoneID string
	Tags         []Tag
}

var zoneLetter = regexp.MustCompile(`^[a-f]$`)

// CreateSubnet creates a subnet: a /16 to /28 inside its VPC's block that overlaps none of the
// VPC's other subnets, in one of the region's zones (a to f; the first zone in use when none is
// named). AWS reserves five addresses of each subnet.
func (c *Cloud) CreateSubnet(in CreateSubnetInput) (Subnet, error) {
	if in.VPCID == "" {
		return Subnet{}, errorf("MissingParameter", "The request must contain the parameter vpcId")
	}
	if in.CIDR == "" {
		return Subnet{}, errorf("MissingParameter", "The request must contain the parameter cidrBlock")
	}
	block, perr := parseBlock(in.CIDR)
	if perr != nil {
		return Subnet{}, perr
	}
	if err := validateEC2Tags(in.Tags); err != nil {
		return Subnet{}, err
	}
	tags, err := c.mergeTags(nil, in.Tags)
	if err != nil {
		return Subnet{}, err
	}
	var sn Subnet
	err = c.store.Update(func(tx store.Tx) error {
		v, err := loadVPC(tx, in.VPCID)
		if err != nil {
			return err
		}
		if block.Bits() < minBlockBits || block.Bits() > maxBlockBits || !v.containsIPv4Block(block) {
			return errorf("InvalidSubnet.Range", "The CIDR '%s' is invalid.", in.CIDR)
		}
		subnets, err := store.List[Subnet](tx, bucketSubnets)
		if err != nil {
			return err
		}
		for _, other := range subnets {
			if other.VPCID == v.ID && netip.MustParsePrefix(other.CIDR).Overlaps(block) {
				return errorf("InvalidSubnet.Conflict", "The CIDR '%s' conflicts with another subnet", in.CIDR)
			}
		}
		zone, err := c.subnetZone(in.Zone, in.ZoneID, subnets)
		if err != nil {
			return err
		}
		var block6 netip.Prefix
		if in.IPv6CIDR != "" {
			if block6, err = subnetIPv6Block(in.IPv6CIDR, v, subnets, ""); err != nil {
				return err
			}
		}
		sn = Subnet{
			ID: newID("subnet"), VPCID: v.ID, Zone: zone, ZoneID: zoneID(c.cfg.Region, zone), CIDR: block.String(),
			IPv6CIDR: prefixString(block6), AvailableIPAddressCount: 1<<(32-block.Bits()) - 5, FromAPI: true, Tags: tags,
		}
		return store.Save(tx, bucketSubnets, sn.ID, sn)
	})
	if err != nil {
		return Subnet{}, err
	}
	return sn, nil
}

// subnetZone resolves a subnet's zone from its name or ID.
func (c *Cloud) subnetZone(name, id string, subnets []Subnet) (string, error) {
	region := c.cfg.Region
	if name != "" && id != "" {
		return "", errorf("InvalidParameterCombination", "Only one of availabilityZone or availabilityZoneId may be given.")
	}
	if id != "" {
		for _, letter := range "abcdef" {
			if zone := region + string(letter); zoneID(region, zone) == id {
				return zone, nil
			}
		}
		return "", errorf("InvalidParameterValue", "Value (%s) for parameter availabilityZoneId is invalid. Subnets can currently only be created in the zones %s[a-f].", id, region)
	}
	if name == "" {
		if len(subnets) == 0 {
			return region + "a", nil
		}
		return slices.MinFunc(subnets, func(a, b Subnet) int { return strings.Compare(a.Zone, b.Zone) }).Zone, nil
	}
	if len(name) != len(region)+1 || name[:len(region)] != region || !zoneLetter.MatchString(name[len(region):]) {
		return "", errorf("InvalidParameterValue", "Value (%s) for parameter availabilityZone is invalid. Subnets can currently only be created in the zones %s[a-f].", name, region)
	}
	return name, nil
}

// DeleteSubnet deletes a subnet that no load balancer, interface or instance uses.
func (c *Cloud) DeleteSubnet(id string) error {
	if id == "" {
		return errorf("MissingParameter", "The request must contain the parameter subnetId")
	}
	return c.store.Update(func(tx store.Tx) error {
		if _, err := c.loadSubnet(tx, id); err != nil {
			return err
		}
		dependent := errorf("DependencyViolation", "The subnet '%s' has dependencies and cannot be deleted.", id)
		lbs, err := store.List[LoadBalancer](tx, bucketLoadBalancers)
		if err != nil {
			return err
		}
		for _, lb := range lbs {
			if slices.ContainsFunc(lb.Zones, func(z LoadBalancerZone) bool { return z.SubnetID == id }) {
				return dependent
			}
		}
		ifaces, err := store.List[NetworkInterface](tx, bucketInterfaces)
		if err != nil {
			return err
		}
		if slices.ContainsFunc(ifaces, func(n NetworkInterface) bool { return n.SubnetID == id }) {
			return dependent
		}
		instances, err := store.List[Instance](tx, bucketInstances)
		if err != nil {
			return err
		}
		if slices.ContainsFunc(instances, func(i Instance) bool { return i.SubnetID == id }) {
			return dependent
		}
		return tx.Delete(bucketSubnets, id)
	})
}

// ModifySubnetAttribute sets the subnet attributes Terraform manages. moat serves the same with
// either value; they are kept so that they read back as set.
func (c *Cloud) ModifySubnetAttribute(id string, mapPublicIP, assignIPv6 *bool) error {
	if mapPublicIP == nil && assignIPv6 == nil {
		return errorf("MissingParameter", "The request must contain an attribute to modify")
	}
	return c.store.Update(func(tx store.Tx) error {
		sn, err := c.loadSubnet(tx, id)
		if err != nil {
			return err
		}
		if mapPublicIP != nil {
			sn.MapPublicIPOnLaunch = *mapPublicIP
		}
		if assignIPv6 != nil {
			if *assignIPv6 && sn.IPv6CIDR == "" {
				return errorf("InvalidParameterValue", "The subnet %s has no IPv6 CIDR block, so it cannot assign IPv6 addresses on creation.", id)
			}
			sn.AssignIPv6AddressOnCreation = *assignIPv6
		}
		return store.Save(tx, bucketSubnets, id, sn)
	})
}

func (c *Cloud) loadSubnet(tx store.Tx, id string) (Subnet, error) {
	sn, err := store.Load[Subnet](tx, bucketSubnets, id)
	if err == store.ErrNotFound {
		return Subnet{}, errorf("InvalidSubnetID.NotFound", "The subnet ID '%s' does not exist", id)
	}
	return sn, err
}
