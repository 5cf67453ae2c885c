package cloud

import (
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/moatlb/moat/internal/nlbattr"
	"github.com/moatlb/moat/internal/store"
)

// LoadBalancer is a network load balancer: one address per subnet (zone), listeners, and —
// if it was created with any — up to five security groups that filter its clients.
type LoadBalancer struct {
	ARN                   string
	Name                  string
	ID                    string // the 16 hex digits of the ARN and DNS name
	DNSName               string
	CanonicalHostedZoneID string
	Scheme                string // internet-facing or internal
	Type                  string // network
	VPCID                 string
	IPAddressType         string // ipv4 or dualstack
	State                 string // provisioning, active, active_impaired or failed
	StateReason           string `json:",omitempty"`
	CreatedTime           time.Time
	Zones                 []LoadBalancerZone
	// SecurityGroups are fixed in kind at creation: a load balancer created without groups can
	// never get any, one created with groups can never drop to none.
	SecurityGroups                  []string
	EnforceSecurityGroupPrivateLink string `json:",omitempty"` // on or off; empty without groups
	Attributes                      map[string]string
	Tags                            Tags
	// CapacityUnits is the reserved minimum capacity (0: none), set at CapacityModified.
	CapacityUnits    int       `json:",omitempty"`
	CapacityModified time.Time `json:",omitzero"`
}

// LoadBalancerZone is the load balancer's presence in one subnet: its address there.
type LoadBalancerZone struct {
	SubnetID    string
	Zone        string
	Address     string
	IPv6Address string `json:",omitempty"`
	// AddressRequested says the subnet mapping named the IPv4 address. AWS describes a zone's
	// IPv4 address only then; otherwise Terraform would see a change on every plan.
	AddressRequested bool `json:",omitempty"`
}

// Load balancer states, as State.Code reports them.
const (
	StateProvisioning   = "provisioning"
	StateActive         = "active"
	StateActiveImpaired = "active_impaired"
	StateFailed         = "failed"
)

// SubnetMapping places a load balancer in a subnet, optionally at a chosen address.
type SubnetMapping struct {
	SubnetID           string
	AllocationID       string
	PrivateIPv4Address string
	IPv6Address        string
	SourceNatIPv6      string
}

// CreateLoadBalancerInput is CreateLoadBalancer's request. Empty strings are absent members.
type CreateLoadBalancerInput struct {
	Name           string
	Type           string
	Scheme         string
	IPAddressType  string
	Subnets        []string
	SubnetMappings []SubnetMapping
	SecurityGroups []string
	Tags           []Tag
	// Members moat does not support for network load balancers; set, they are refused.
	CustomerOwnedIPv4Pool        string
	EnablePrefixForIPv6SourceNat string
	IPv4IpamPoolID               string
}

// lbNotFound is the error of an operation on one load balancer that does not exist.
func lbNotFound(arn string) *Error {
	return errorf("LoadBalancerNotFound", "Load balancer '%s' not found", arn)
}

func loadLB(tx store.Tx, arn string) (LoadBalancer, error) {
	return lookupLB(tx, arn, store.Load[LoadBalancer])
}

// peekLB is loadLB for readers: the load balancer is shared (see store.LoadShared).
func peekLB(tx store.Tx, arn string) (LoadBalancer, error) {
	return lookupLB(tx, arn, store.LoadShared[LoadBalancer])
}

func lookupLB(tx store.Tx, arn string, load func(store.Tx, string, string) (LoadBalancer, error)) (LoadBalancer, error) {
	lb, err := load(tx, bucketLoadBalancers, arn)
	if err == store.ErrNotFound {
		return lb, lbNotFound(arn)
	}
	return lb, err
}

// CreateLoadBalancer creates a network load balancer in state provisioning, with one address per
// subnet. A second call with the same name and settings returns the existing load balancer, as
// on AWS; the same name with other settings is DuplicateLoadBalancerName.
func (c *Cloud) CreateLoadBalancer(in CreateLoadBalancerInput) (LoadBalancer, error) {
	if err := validateELBName("Load balancer", in.Name); err != nil {
		return LoadBalancer{}, err
	}
	for _, err := range []error{
		checkEnum("type", in.Type, "application", "network", "gateway"),
		checkEnum("scheme", in.Scheme, "internet-facing", "internal"),
		checkEnum("ipAddressType", in.IPAddressType, "ipv4", "dualstack", "dualstack-without-public-ipv4"),
		checkEnum("enablePrefixForIpv6SourceNat", in.EnablePrefixForIPv6SourceNat, "on", "off"),
	} {
		if err != nil {
			return LoadBalancer{}, err
		}
	}
	switch in.Type {
	case "network":
	case "", "application":
		return LoadBalancer{}, errorf("InvalidConfigurationRequest", "moat serves Network Load Balancers only: Application Load Balancers are not supported. Specify Type=network (without a Type, AWS creates an Application Load Balancer).")
	default:
		return LoadBalancer{}, errorf("InvalidConfigurationRequest", "moat serves Network Load Balancers only: load balancers of type '%s' are not supported. Specify Type=network.", in.Type)
	}
	if in.Scheme == "" {
		in.Scheme = "internet-facing"
	}
	if in.IPAddressType == "" {
		in.IPAddressType = "ipv4"
	}
	switch {
	case in.CustomerOwnedIPv4Pool != "":
		return LoadBalancer{}, errorf("InvalidConfigurationRequest", "Customer-owned IPv4 pools are only supported by Application Load Balancers on Outposts")
	case in.IPv4IpamPoolID != "":
		return LoadBalancer{}, errorf("InvalidConfigurationRequest", "IPAM pools are only supported by Application Load Balancers")
	case in.EnablePrefixForIPv6SourceNat == "on":
		return LoadBalancer{}, sourceNATError(in.IPAddressType)
	}
	mappings, err := subnetMappings(in.Subnets, in.SubnetMappings, in.IPAddressType)
	if err != nil {
		return LoadBalancer{}, err
	}
	if err := validateELBTags(in.Tags); err != nil {
		return LoadBalancer{}, err
	}
	tags, err := c.addELBTags(nil, in.Tags)
	if err != nil {
		return LoadBalancer{}, err
	}
	groups := uniqueOrdered(in.SecurityGroups)
	if len(groups) > c.cfg.Quotas.SecurityGroupsPerLoadBalancer {
		return LoadBalancer{}, tooManyGroups(c.cfg.Quotas.SecurityGroupsPerLoadBalancer)
	}

	var lb LoadBalancer
	err = c.store.Update(func(tx store.Tx) error {
		lbs, err := c.lbIndex(tx)
		if err != nil {
			return err
		}
		if old, ok := lbs.withName(in.Name); ok {
			if sameLoadBalancer(old, in, mappings, groups) {
				lb = old
				return nil
			}
			return errorf("DuplicateLoadBalancerName", "A load balancer with the same name '%s' exists, but with different settings", in.Name)
		}
		if lbs.count() >= c.cfg.Quotas.LoadBalancers {
			return errorf("TooManyLoadBalancers", "The maximum number of load balancers (%d) has been reached", c.cfg.Quotas.LoadBalancers)
		}
		vpcID, zones, err := c.placeZones(tx, mappings, in.Scheme, in.IPAddressType, nil, "")
		if err != nil {
			return err
		}
		if err := checkLBGroups(tx, groups, vpcID); err != nil {
			return err
		}
		id := randomHex(16)
		lb = LoadBalancer{
			ARN:                   c.elbARN("loadbalancer/net/" + in.Name + "/" + id),
			Name:                  in.Name,
			ID:                    id,
			DNSName:               in.Name + "-" + id + ".elb." + c.cfg.Region + "." + c.cfg.DNSSuffix,
			CanonicalHostedZoneID: c.canonicalHostedZoneID(),
			Scheme:                in.Scheme,
			Type:                  "network",
			VPCID:                 vpcID,
			IPAddressType:         in.IPAddressType,
			State:                 StateProvisioning,
			CreatedTime:           c.cfg.Now().UTC(),
			Zones:                 zones,
			SecurityGroups:        groups,
			Attributes:            lbAttributeDefaults(in.Scheme),
			Tags:                  tags,
		}
		if len(groups) > 0 {
			lb.EnforceSecurityGroupPrivateLink = "on"
		}
		return store.Save(tx, bucketLoadBalancers, lb.ARN, lb)
	})
	if err != nil {
		return LoadBalancer{}, err
	}
	return lb, nil
}

// sameLoadBalancer reports whether a create request asks for what old already is.
func sameLoadBalancer(old LoadBalancer, in CreateLoadBalancerInput, mappings []SubnetMapping, groups []string) bool {
	if old.Type != in.Type || old.Scheme != in.Scheme || old.IPAddressType != in.IPAddressType || len(old.Zones) != len(mappings) {
		return false
	}
	if !slices.Equal(dedupe(old.SecurityGroups), dedupe(groups)) {
		return false
	}
	for _, m := range mappings {
		i := slices.IndexFunc(old.Zones, func(z LoadBalancerZone) bool { return z.SubnetID == m.SubnetID })
		if i < 0 || (m.PrivateIPv4Address != "" && m.PrivateIPv4Address != old.Zones[i].Address) {
			return false
		}
	}
	return true
}

func tooManyGroups(limit int) *Error {
	return errorf("InvalidConfigurationRequest", "A Network Load Balancer can have at most %d security groups", limit)
}

// uniqueOrdered drops repeated values, keeping the first of each in order.
func uniqueOrdered(in []string) []string {
	var out []string
	for _, v := range in {
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}

// subnetMappings turns the Subnets or SubnetMappings of a request for a load balancer of
// ipType into mappings.
func subnetMappings(subnets []string, mappings []SubnetMapping, ipType string) ([]SubnetMapping, error) {
	switch {
	case len(subnets) > 0 && len(mappings) > 0:
		return nil, errorf("ValidationError", "You can specify subnets or subnet mappings, but not both")
	case len(subnets) == 0 && len(mappings) == 0:
		return nil, errorf("ValidationError", "You must specify subnets or subnet mappings: a Network Load Balancer needs at least one subnet")
	}
	if len(mappings) == 0 {
		for _, s := range subnets {
			mappings = append(mappings, SubnetMapping{SubnetID: s})
		}
	}
	for _, m := range mappings {
		switch {
		case m.SubnetID == "":
			return nil, missingError("subnetMappings.member.subnetId")
		case m.AllocationID != "":
			return nil, errorf("AllocationIdNotFound", "Allocation ID '%s' not found: moat has no Elastic IP addresses; leave AllocationId out and the load balancer gets an address from the subnet", m.AllocationID)
		case m.SourceNatIPv6 != "":
			return nil, sourceNATError(ipType)
		}
	}
	return mappings, nil
}

// sourceNATError answers a request for IPv6 source NAT prefixes, which AWS gives only to
// dualstack load balancers (for their UDP listeners) and moat does not provide.
func sourceNATError(ipType string) *Error {
	if ipType != "dualstack" {
		return errorf("InvalidConfigurationRequest", "IPv6 prefixes for source NAT need the dualstack IP address type")
	}
	return errorf("InvalidConfigurationRequest", "moat does not support IPv6 prefixes for source NAT (EnablePrefixForIpv6SourceNat, SourceNatIpv6Prefix), so its dualstack load balancers have no UDP listeners")
}

// errNoIPv6Subnet is AWS's answer to a dualstack request with a subnet that has no IPv6 CIDR.
var errNoIPv6Subnet = errorf("ValidationError", "You must specify subnets with an associated IPv6 CIDR block.")

// checkLBGroups checks that every group exists and is in the load balancer's VPC.
func checkLBGroups(tx store.Tx, groups []string, vpcID string) error {
	for _, id := range groups {
		sg, err := loadGroup(tx, id)
		if err != nil {
			if _, ok := err.(*Error); ok {
				return errorf("InvalidSecurityGroup", "Security group '%s' does not exist", id)
			}
			return err
		}
		if sg.VPCID != vpcID {
			return errorf("InvalidSecurityGroup", "Security group '%s' is in VPC '%s', not in the load balancer's VPC '%s'", id, sg.VPCID, vpcID)
		}
	}
	return nil
}

// placeZones resolves the subnets of a create or SetSubnets request to zones with addresses.
// keep are the load balancer's current zones (SetSubnets): a subnet it keeps keeps its address.
// self is the load balancer's ARN, whose own addresses do not count as taken.
func (c *Cloud) placeZones(tx store.Tx, mappings []SubnetMapping, scheme, ipType string, keep []LoadBalancerZone, self string) (string, []LoadBalancerZone, error) {
	if ipType == "dualstack-without-public-ipv4" {
		return "", nil, errorf("InvalidConfigurationRequest", "The IP address type 'dualstack-without-public-ipv4' is only supported by Application Load Balancers")
	}
	used, err := c.usedAddresses(tx, self)
	if err != nil {
		return "", nil, err
	}
	vpcID := ""
	zones := make([]LoadBalancerZone, 0, len(mappings))
	seenZone := map[string]string{}
	for _, m := range mappings {
		sn, err := store.LoadShared[Subnet](tx, bucketSubnets, m.SubnetID)
		if err == store.ErrNotFound {
			return "", nil, errorf("SubnetNotFound", "The subnet ID '%s' was not found", m.SubnetID)
		} else if err != nil {
			return "", nil, err
		}
		if vpcID == "" {
			vpcID = sn.VPCID
		} else if sn.VPCID != vpcID {
			return "", nil, errorf("InvalidConfigurationRequest", "The subnets must all be in the same VPC: subnet '%s' is in '%s', not '%s'", sn.ID, sn.VPCID, vpcID)
		}
		if other, ok := seenZone[sn.Zone]; ok {
			return "", nil, errorf("InvalidConfigurationRequest", "You cannot specify more than one subnet per Availability Zone: subnets '%s' and '%s' are both in '%s'", other, sn.ID, sn.Zone)
		}
		seenZone[sn.Zone] = sn.ID
		if ipType == "dualstack" && sn.IPv6CIDR == "" {
			return "", nil, errNoIPv6Subnet
		}
		zone := LoadBalancerZone{SubnetID: sn.ID, Zone: sn.Zone, AddressRequested: m.PrivateIPv4Address != ""}
		if i := slices.IndexFunc(keep, func(z LoadBalancerZone) bool { return z.SubnetID == sn.ID }); i >= 0 {
			zone = keep[i]
			if m.PrivateIPv4Address != "" && m.PrivateIPv4Address != zone.Address {
				return "", nil, errorf("InvalidConfigurationRequest", "The private IPv4 address of subnet '%s' is %s and cannot be changed", sn.ID, zone.Address)
			}
		}
		cidr, err := netip.ParsePrefix(sn.CIDR)
		if err != nil {
			return "", nil, err
		}
		if zone.Address == "" {
			addr, err := pickAddress(cidr, m.PrivateIPv4Address, used, scheme, sn.ID)
			if err != nil {
				return "", nil, err
			}
			zone.Address = addr.String()
			used[addr] = true
		}
		if ipType != "dualstack" {
			if m.IPv6Address != "" {
				return "", nil, errorf("InvalidConfigurationRequest", "An IPv6 address can only be specified for a dualstack load balancer")
			}
			zone.IPv6Address = ""
		} else if zone.IPv6Address == "" {
			cidr6, err := netip.ParsePrefix(sn.IPv6CIDR)
			if err != nil {
				return "", nil, err
			}
			addr, err := pickAddress(cidr6, m.IPv6Address, used, "internal", sn.ID)
			if err != nil {
				return "", nil, err
			}
			zone.IPv6Address = addr.String()
			used[addr] = true
		}
		zones = append(zones, zone)
	}
	slices.SortFunc(zones, func(a, b LoadBalancerZone) int { return strings.Compare(a.Zone, b.Zone) })
	return vpcID, zones, nil
}

// pickAddress returns the requested address after checking it, or a free one from the subnet.
func pickAddress(cidr netip.Prefix, requested string, used map[netip.Addr]bool, scheme, subnetID string) (netip.Addr, error) {
	if requested == "" {
		addr, ok := allocateAddress(cidr, used)
		if !ok {
			return netip.Addr{}, errorf("InvalidSubnet", "Subnet '%s' has no free address left", subnetID)
		}
		return addr, nil
	}
	if scheme != "internal" {
		return netip.Addr{}, errorf("InvalidConfigurationRequest", "Private IPv4 addresses can only be specified for internal load balancers")
	}
	addr, err := netip.ParseAddr(requested)
	switch {
	case err != nil || addr.Is4() != cidr.Addr().Is4():
		return netip.Addr{}, errorf("InvalidConfigurationRequest", "'%s' is not a valid IP address for subnet '%s'", requested, subnetID)
	case !cidr.Contains(addr) || reservedAddress(cidr, addr):
		return netip.Addr{}, errorf("InvalidConfigurationRequest", "The IP address '%s' is not a usable address of subnet '%s' (%s)", requested, subnetID, cidr)
	case used[addr]:
		return netip.Addr{}, errorf("InvalidConfigurationRequest", "The IP address '%s' is already in use", requested)
	}
	return addr, nil
}

// reservedAddress reports whether addr is one AWS keeps for itself: the first four addresses of a
// subnet and, in IPv4, the last.
func reservedAddress(cidr netip.Prefix, addr netip.Addr) bool {
	first := cidr.Masked().Addr()
	for range 4 {
		if addr == first {
			return true
		}
		first = first.Next()
	}
	return addr.Is4() && lastAddress(cidr) == addr
}

// lastAddress is the highest address of an IPv4 prefix (its broadcast address).
func lastAddress(cidr netip.Prefix) netip.Addr {
	b := cidr.Masked().Addr().As4()
	host := uint32(1)<<(32-cidr.Bits()) - 1
	v := (uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// allocateAddress picks a free address of the subnet: from the 100th address up (the low ones are
// where inventories put instances), then from the bottom, skipping AWS's reserved addresses.
func allocateAddress(cidr netip.Prefix, used map[netip.Addr]bool) (netip.Addr, bool) {
	cidr = cidr.Masked()
	start := cidr.Addr()
	if cidr.Addr().Is6() || cidr.Bits() < 25 {
		for range 100 {
			start = start.Next()
		}
	}
	free := func(a netip.Addr) bool { return !used[a] && !reservedAddress(cidr, a) }
	for a := start; a.IsValid() && cidr.Contains(a); a = a.Next() {
		if free(a) {
			return a, true
		}
	}
	for a := cidr.Addr(); a.IsValid() && a != start; a = a.Next() {
		if free(a) {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// usedAddresses is every address held by an instance, an interface or a load balancer other than
// self: a load balancer never takes one of them.
func (c *Cloud) usedAddresses(tx store.Tx, self string) (map[netip.Addr]bool, error) {
	used := map[netip.Addr]bool{}
	add := func(s string) {
		if a, err := netip.ParseAddr(s); err == nil {
			used[a] = true
		}
	}
	instances, err := store.ListShared[Instance](tx, bucketInstances)
	if err != nil {
		return nil, err
	}
	for _, in := range instances {
		add(in.PrivateIP)
	}
	enis, err := store.ListShared[NetworkInterface](tx, bucketInterfaces)
	if err != nil {
		return nil, err
	}
	for _, eni := range enis {
		for _, ip := range eni.PrivateIPs {
			add(ip)
		}
	}
	lbs, err := c.lbIndex(tx)
	if err != nil {
		return nil, err
	}
	for _, e := range lbs.addrs.entries() {
		if e.value.holder != self {
			used[e.value.addr] = true
		}
	}
	return used, nil
}

// DescribeLoadBalancers lists load balancers, all of them or those named by ARN (at most 20) or
// by name; any that does not exist is LoadBalancerNotFound.
func (c *Cloud) DescribeLoadBalancers(arns, names []string, page ELBPage) ([]LoadBalancer, string, error) {
	switch {
	case len(arns) > 0 && len(names) > 0:
		return nil, "", errorf("ValidationError", "Load balancer names and load balancer ARNs cannot be specified at the same time")
	case len(arns) > 20:
		return nil, "", validationError("loadBalancerArns", strings.Join(arns, ", "), "Member must have length less than or equal to 20")
	}
	for _, arn := range arns {
		if err := checkARN("loadBalancerArns", kindLoadBalancer, arn); err != nil {
			return nil, "", err
		}
	}
	var lbs *lbIndex
	if err := c.store.View(func(tx store.Tx) (err error) {
		lbs, err = c.lbIndex(tx)
		return err
	}); err != nil {
		return nil, "", err
	}
	if len(arns) == 0 && len(names) == 0 {
		return elbPage(lbs.all(), func(lb LoadBalancer) string { return lb.ARN }, page)
	}
	var out []LoadBalancer
	var missing []string
	for _, want := range dedupe(append(slices.Clone(arns), names...)) {
		lb, ok := lbs.named(want)
		if !ok {
			missing = append(missing, want)
			continue
		}
		if !slices.ContainsFunc(out, func(o LoadBalancer) bool { return o.ARN == lb.ARN }) {
			out = append(out, lb)
		}
	}
	if len(missing) > 0 {
		return nil, "", errorf("LoadBalancerNotFound", "Load balancers '[%s]' not found", strings.Join(missing, ", "))
	}
	slices.SortFunc(out, func(a, b LoadBalancer) int { return strings.Compare(a.ARN, b.ARN) })
	return elbPage(out, func(lb LoadBalancer) string { return lb.ARN }, page)
}

// DeleteLoadBalancer deletes a load balancer and its listeners; its target groups and their
// targets stay. Deleting one that does not exist succeeds, as on AWS; one with deletion
// protection on is OperationNotPermitted.
func (c *Cloud) DeleteLoadBalancer(arn string) error {
	if err := checkARN("loadBalancerArn", kindLoadBalancer, arn); err != nil {
		return err
	}
	return c.store.Update(func(tx store.Tx) error {
		lb, err := store.LoadShared[LoadBalancer](tx, bucketLoadBalancers, arn)
		if err == store.ErrNotFound {
			return nil
		} else if err != nil {
			return err
		}
		if lb.Attributes["deletion_protection.enabled"] == "true" {
			return errorf("OperationNotPermitted", "Load balancer '%s' cannot be deleted because deletion protection is enabled", arn)
		}
		listeners, err := c.listenerIndex(tx)
		if err != nil {
			return err
		}
		for _, l := range listeners.of(arn) {
			if err := tx.Delete(bucketListeners, l.ARN); err != nil {
				return err
			}
		}
		return tx.Delete(bucketLoadBalancers, arn)
	})
}

// SetSecurityGroups replaces the groups of a load balancer that was created with groups; enforce
// (on, off or empty for unchanged) is EnforceSecurityGroupInboundRulesOnPrivateLinkTraffic.
func (c *Cloud) SetSecurityGroups(arn string, groups []string, enforce string) (LoadBalancer, error) {
	if err := checkARN("loadBalancerArn", kindLoadBalancer, arn); err != nil {
		return LoadBalancer{}, err
	}
	if groups == nil {
		return LoadBalancer{}, missingError("securityGroups")
	}
	if err := checkEnum("enforceSecurityGroupInboundRulesOnPrivateLinkTraffic", enforce, "on", "off"); err != nil {
		return LoadBalancer{}, err
	}
	groups = uniqueOrdered(groups)
	var lb LoadBalancer
	err := c.store.Update(func(tx store.Tx) (err error) {
		if lb, err = loadLB(tx, arn); err != nil {
			return err
		}
		switch {
		case len(lb.SecurityGroups) == 0:
			return errorf("InvalidConfigurationRequest", "You cannot set security groups on a Network Load Balancer which was created without any security groups.")
		case len(groups) == 0:
			return errorf("InvalidConfigurationRequest", "You cannot remove all security groups from a Network Load Balancer which was created with security groups.")
		case len(groups) > c.cfg.Quotas.SecurityGroupsPerLoadBalancer:
			return tooManyGroups(c.cfg.Quotas.SecurityGroupsPerLoadBalancer)
		}
		if err := checkLBGroups(tx, groups, lb.VPCID); err != nil {
			return err
		}
		lb.SecurityGroups = groups
		if enforce != "" {
			lb.EnforceSecurityGroupPrivateLink = enforce
		}
		return store.Save(tx, bucketLoadBalancers, lb.ARN, lb)
	})
	if err != nil {
		return LoadBalancer{}, err
	}
	return lb, nil
}

// SetSubnets replaces the subnets of a load balancer. Subnets it keeps keep their addresses, new
// ones get addresses as at creation. ipType, if not empty, changes the IP address type too.
func (c *Cloud) SetSubnets(arn string, subnets []string, mappings []SubnetMapping, ipType, enablePrefix string) (LoadBalancer, error) {
	if err := checkARN("loadBalancerArn", kindLoadBalancer, arn); err != nil {
		return LoadBalancer{}, err
	}
	for _, err := range []error{
		checkEnum("ipAddressType", ipType, "ipv4", "dualstack", "dualstack-without-public-ipv4"),
		checkEnum("enablePrefixForIpv6SourceNat", enablePrefix, "on", "off"),
	} {
		if err != nil {
			return LoadBalancer{}, err
		}
	}
	var lb LoadBalancer
	err := c.store.Update(func(tx store.Tx) (err error) {
		if lb, err = loadLB(tx, arn); err != nil {
			return err
		}
		if ipType == "" {
			ipType = lb.IPAddressType
		}
		if enablePrefix == "on" {
			return sourceNATError(ipType)
		}
		mappings, err := subnetMappings(subnets, mappings, ipType)
		if err != nil {
			return err
		}
		if err := c.checkDualstackListeners(tx, lb, ipType); err != nil {
			return err
		}
		vpcID, zones, err := c.placeZones(tx, mappings, lb.Scheme, ipType, lb.Zones, lb.ARN)
		if err != nil {
			return err
		}
		if vpcID != lb.VPCID {
			return errorf("InvalidConfigurationRequest", "The subnets must be in the load balancer's VPC '%s'", lb.VPCID)
		}
		lb.Zones, lb.IPAddressType = zones, ipType
		return store.Save(tx, bucketLoadBalancers, lb.ARN, lb)
	})
	if err != nil {
		return LoadBalancer{}, err
	}
	return lb, nil
}

// SetIPAddressType changes a load balancer between ipv4 and dualstack (which needs IPv6 subnets).
func (c *Cloud) SetIPAddressType(arn, ipType string) (LoadBalancer, error) {
	if err := checkARN("loadBalancerArn", kindLoadBalancer, arn); err != nil {
		return LoadBalancer{}, err
	}
	if ipType == "" {
		return LoadBalancer{}, missingError("ipAddressType")
	}
	if err := checkEnum("ipAddressType", ipType, "ipv4", "dualstack", "dualstack-without-public-ipv4"); err != nil {
		return LoadBalancer{}, err
	}
	var lb LoadBalancer
	err := c.store.Update(func(tx store.Tx) (err error) {
		if lb, err = loadLB(tx, arn); err != nil {
			return err
		}
		if err := c.checkDualstackListeners(tx, lb, ipType); err != nil {
			return err
		}
		var mappings []SubnetMapping
		for _, z := range lb.Zones {
			mappings = append(mappings, SubnetMapping{SubnetID: z.SubnetID})
		}
		_, zones, err := c.placeZones(tx, mappings, lb.Scheme, ipType, lb.Zones, lb.ARN)
		if err != nil {
			return err
		}
		lb.Zones, lb.IPAddressType = zones, ipType
		return store.Save(tx, bucketLoadBalancers, lb.ARN, lb)
	})
	if err != nil {
		return LoadBalancer{}, err
	}
	return lb, nil
}

// checkDualstackListeners refuses dualstack for a load balancer with UDP listeners, as AWS does.
func (c *Cloud) checkDualstackListeners(tx store.Tx, lb LoadBalancer, ipType string) error {
	if ipType != "dualstack" {
		return nil
	}
	listeners, err := c.listenerIndex(tx)
	if err != nil {
		return err
	}
	for _, l := range listeners.of(lb.ARN) {
		if l.Protocol == "UDP" || l.Protocol == "TCP_UDP" {
			return errorf("InvalidConfigurationRequest", "A load balancer with %s listeners cannot use the dualstack IP address type", l.Protocol)
		}
	}
	return nil
}

// SetLoadBalancerState records the state the data plane reports for a load balancer:
// provisioning, active, active_impaired (with a reason) or failed.
func (c *Cloud) SetLoadBalancerState(arn, code, reason string) error {
	if !slices.Contains([]string{StateProvisioning, StateActive, StateActiveImpaired, StateFailed}, code) {
		return errorf("ValidationError", "Load balancer state '%s' is not one of provisioning, active, active_impaired, failed", code)
	}
	return c.store.Update(func(tx store.Tx) error {
		lb, err := loadLB(tx, arn)
		if err != nil {
			return err
		}
		if lb.State == code && lb.StateReason == reason {
			return nil
		}
		lb.State, lb.StateReason = code, reason
		return store.Save(tx, bucketLoadBalancers, lb.ARN, lb)
	})
}

// albOnlyAttributes are load balancer attributes of Application Load Balancers only.
var albOnlyAttributes = []string{
	"idle_timeout.timeout_seconds", "client_keep_alive.seconds",
	"connection_logs.s3.enabled", "connection_logs.s3.bucket", "connection_logs.s3.prefix",
	"health_check_logs.s3.enabled", "health_check_logs.s3.bucket", "health_check_logs.s3.prefix",
	"routing.http.desync_mitigation_mode", "routing.http.drop_invalid_header_fields.enabled",
	"routing.http.preserve_host_header.enabled", "routing.http.x_amzn_tls_version_and_cipher_suite.enabled",
	"routing.http.xff_client_port.enabled", "routing.http.xff_header_processing.mode",
	"routing.http2.enabled", "waf.fail_open.enabled",
}

func lbAttributeDefaults(scheme string) map[string]string {
	return map[string]string{
		"deletion_protection.enabled":            "false",
		"load_balancing.cross_zone.enabled":      "false",
		"access_logs.s3.enabled":                 "false",
		"access_logs.s3.bucket":                  "",
		"access_logs.s3.prefix":                  "",
		"ipv6.deny_all_igw_traffic":              boolString(scheme == "internal"),
		"zonal_shift.config.enabled":             "false",
		"dns_record.client_routing_policy":       "any_availability_zone",
		"secondary_ips.auto_assigned.per_subnet": "0",
	}
}

func boolString(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

// LoadBalancerAttributes returns a load balancer's attributes, sorted by key.
func (c *Cloud) LoadBalancerAttributes(arn string) ([]Attribute, error) {
	if err := checkARN("loadBalancerArn", kindLoadBalancer, arn); err != nil {
		return nil, err
	}
	var lb LoadBalancer
	err := c.store.View(func(tx store.Tx) (err error) {
		lb, err = peekLB(tx, arn)
		return err
	})
	if err != nil {
		return nil, err
	}
	return attrList(lb.Attributes), nil
}

// ModifyLoadBalancerAttributes changes some attributes and returns all of them. If any key or
// value is not valid, nothing changes.
func (c *Cloud) ModifyLoadBalancerAttributes(arn string, attrs []Attribute) ([]Attribute, error) {
	if err := checkARN("loadBalancerArn", kindLoadBalancer, arn); err != nil {
		return nil, err
	}
	var lb LoadBalancer
	err := c.store.Update(func(tx store.Tx) (err error) {
		if lb, err = loadLB(tx, arn); err != nil {
			return err
		}
		next, err := modifyAttributes(lb.Attributes, attrs, attributeCheck(nlbattr.LoadBalancer, albOnlyAttributes, "Load balancer"))
		if err != nil {
			return err
		}
		if next["secondary_ips.auto_assigned.per_subnet"] < lb.Attributes["secondary_ips.auto_assigned.per_subnet"] {
			return errorf("InvalidConfigurationRequest", "The value of 'secondary_ips.auto_assigned.per_subnet' cannot be decreased")
		}
		if next["access_logs.s3.enabled"] == "true" && next["access_logs.s3.bucket"] == "" {
			return errorf("InvalidConfigurationRequest", "The value of 'access_logs.s3.bucket' cannot be empty when access logs are enabled")
		}
		lb.Attributes = next
		return store.Save(tx, bucketLoadBalancers, lb.ARN, lb)
	})
	if err != nil {
		return nil, err
	}
	return attrList(lb.Attributes), nil
}
