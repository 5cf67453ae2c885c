package cloud

import (
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
	"slices"

	"github.com/moatlb/moat/internal/store"
)

// IPv6AssociationID is the association ID of a VPC's or subnet's IPv6 block: derived from the
// resource and the block, so it is stable, and a block associated again gets a new one.
func IPv6AssociationID(kind, id, cidr string) string {
	sum := sha256.Sum256([]byte(id + "/" + cidr))
	return kind + "-cidr-assoc-" + hex.EncodeToString(sum[:])[:17]
}

// amazonIPv6Block is the /56 moat gives a VPC that asks for an Amazon-provided block: from the
// documentation range 2001:db8::/32, derived from the VPC's ID, so it is public-looking and routes
// nowhere.
func amazonIPv6Block(vpcID string) netip.Prefix {
	sum := sha256.Sum256([]byte("ipv6/" + vpcID))
	var a [16]byte
	a[0], a[1], a[2], a[3] = 0x20, 0x01, 0x0d, 0xb8
	copy(a[4:7], sum[:3])
	return netip.PrefixFrom(netip.AddrFrom16(a), 56)
}

// vpcIPv6Block checks a block given for a VPC: /44 to /60 in steps of 4, as AWS takes for
// addresses from a pool.
func vpcIPv6Block(cidr string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(cidr)
	if err != nil || !p.Addr().Is6() || p.Addr().Is4In6() {
		return netip.Prefix{}, errorf("InvalidParameterValue", "Value (%s) for parameter ipv6CidrBlock is invalid. This is not a valid IPv6 CIDR block.", cidr)
	}
	if p.Bits() < 44 || p.Bits() > 60 || p.Bits()%4 != 0 {
		return netip.Prefix{}, errorf("InvalidVpc.Range", "The IPv6 CIDR '%s' is invalid: a VPC's IPv6 block is a /44 to a /60, in steps of 4.", cidr)
	}
	return p.Masked(), nil
}

// AssociateVPCIPv6 gives a VPC its IPv6 block: the one given, or an Amazon-provided /56. moat's
// VPCs take one IPv6 block.
func (c *Cloud) AssociateVPCIPv6(vpcID, cidr string, amazonProvided bool) (VPC, error) {
	if (cidr == "") == !amazonProvided {
		return VPC{}, errorf("InvalidParameterCombination", "Give exactly one of ipv6CidrBlock or amazonProvidedIpv6CidrBlock.")
	}
	var block netip.Prefix
	if cidr != "" {
		var err error
		if block, err = vpcIPv6Block(cidr); err != nil {
			return VPC{}, err
		}
	}
	var v VPC
	err := c.store.Update(func(tx store.Tx) (err error) {
		if v, err = loadVPC(tx, vpcID); err != nil {
			return err
		}
		if v.IPv6CIDR != "" {
			return errorf("CidrLimitExceeded", "The VPC %s has an IPv6 block already (%s): moat's VPCs take one.", vpcID, v.IPv6CIDR)
		}
		if amazonProvided {
			block = amazonIPv6Block(v.ID)
		}
		v.IPv6CIDR = block.String()
		return store.Save(tx, bucketVPCs, v.ID, v)
	})
	return v, err
}

// DisassociateVPCIPv6 removes a VPC's IPv6 block, refused while a subnet of the VPC has one.
func (c *Cloud) DisassociateVPCIPv6(associationID string) (VPC, error) {
	var v VPC
	err := c.store.Update(func(tx store.Tx) error {
		vpcs, err := store.List[VPC](tx, bucketVPCs)
		if err != nil {
			return err
		}
		i := slices.IndexFunc(vpcs, func(v VPC) bool {
			return v.IPv6CIDR != "" && IPv6AssociationID("vpc", v.ID, v.IPv6CIDR) == associationID
		})
		if i < 0 {
			return errorf("InvalidVpcCidrBlockAssociationID.NotFound", "The vpc CIDR block association ID '%s' does not exist", associationID)
		}
		v = vpcs[i]
		subnets, err := store.List[Subnet](tx, bucketSubnets)
		if err != nil {
			return err
		}
		if slices.ContainsFunc(subnets, func(s Subnet) bool { return s.VPCID == v.ID && s.IPv6CIDR != "" }) {
			return errorf("DependencyViolation", "The IPv6 CIDR block %s of %s is used by its subnets: disassociate theirs first.", v.IPv6CIDR, v.ID)
		}
		saved := v
		saved.IPv6CIDR = ""
		return store.Save(tx, bucketVPCs, v.ID, saved)
	})
	return v, err
}

// AssociateSubnetIPv6 gives a subnet an IPv6 block: a /64 (to a /44) inside its VPC's block that
// overlaps no other subnet's.
func (c *Cloud) AssociateSubnetIPv6(subnetID, cidr string) (Subnet, error) {
	if cidr == "" {
		return Subnet{}, errorf("MissingParameter", "The request must contain the parameter ipv6CidrBlock")
	}
	var sn Subnet
	err := c.store.Update(func(tx store.Tx) (err error) {
		if sn, err = c.loadSubnet(tx, subnetID); err != nil {
			return err
		}
		v, err := loadVPC(tx, sn.VPCID)
		if err != nil {
			return err
		}
		subnets, err := store.List[Subnet](tx, bucketSubnets)
		if err != nil {
			return err
		}
		block, err := subnetIPv6Block(cidr, v, subnets, sn.ID)
		if err != nil {
			return err
		}
		if sn.IPv6CIDR != "" {
			return errorf("CidrLimitExceeded", "The subnet %s has an IPv6 block already (%s).", sn.ID, sn.IPv6CIDR)
		}
		sn.IPv6CIDR = block.String()
		return store.Save(tx, bucketSubnets, sn.ID, sn)
	})
	return sn, err
}

// subnetIPv6Block checks a subnet's IPv6 block against its VPC's and the other subnets'.
func subnetIPv6Block(cidr string, v VPC, subnets []Subnet, self string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(cidr)
	if err != nil || !p.Addr().Is6() || p.Addr().Is4In6() {
		return netip.Prefix{}, errorf("InvalidParameterValue", "Value (%s) for parameter ipv6CidrBlock is invalid. This is not a valid IPv6 CIDR block.", cidr)
	}
	p = p.Masked()
	if v.IPv6CIDR == "" {
		return netip.Prefix{}, errorf("InvalidParameterValue", "The VPC %s has no IPv6 CIDR block: associate one first.", v.ID)
	}
	vpcBlock := netip.MustParsePrefix(v.IPv6CIDR)
	if p.Bits() < 44 || p.Bits() > 64 || p.Bits() < vpcBlock.Bits() || !vpcBlock.Contains(p.Addr()) {
		return netip.Prefix{}, errorf("InvalidSubnet.Range", "The IPv6 CIDR '%s' is invalid: it must be a /44 to /64 inside %s.", cidr, v.IPv6CIDR)
	}
	for _, other := range subnets {
		if other.ID != self && other.VPCID == v.ID && other.IPv6CIDR != "" && netip.MustParsePrefix(other.IPv6CIDR).Overlaps(p) {
			return netip.Prefix{}, errorf("InvalidSubnet.Conflict", "The CIDR '%s' conflicts with another subnet", cidr)
		}
	}
	return p, nil
}

// DisassociateSubnetIPv6 removes a subnet's IPv6 block, refused while a dualstack load balancer
// or an instance with addresses there uses the subnet.
func (c *Cloud) DisassociateSubnetIPv6(associationID string) (Subnet, error) {
	var sn Subnet
	err := c.store.Update(func(tx store.Tx) error {
		subnets, err := store.List[Subnet](tx, bucketSubnets)
		if err != nil {
			return err
		}
		i := slices.IndexFunc(subnets, func(s Subnet) bool {
			return s.IPv6CIDR != "" && IPv6AssociationID("subnet", s.ID, s.IPv6CIDR) == associationID
		})
		if i < 0 {
			return errorf("InvalidSubnetCidrBlockAssociationID.NotFound", "The subnet CIDR block association ID '%s' does not exist", associationID)
		}
		sn = subnets[i]
		lbs, err := store.List[LoadBalancer](tx, bucketLoadBalancers)
		if err != nil {
			return err
		}
		for _, lb := range lbs {
			if slices.ContainsFunc(lb.Zones, func(z LoadBalancerZone) bool { return z.SubnetID == sn.ID && z.IPv6Address != "" }) {
				return errorf("DependencyViolation", "The IPv6 CIDR block %s of %s is used by load balancer %s.", sn.IPv6CIDR, sn.ID, lb.Name)
			}
		}
		saved := sn
		saved.IPv6CIDR, saved.AssignIPv6AddressOnCreation = "", false
		return store.Save(tx, bucketSubnets, sn.ID, saved)
	})
	return sn, err
}
