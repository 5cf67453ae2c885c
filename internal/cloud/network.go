package cloud

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/moatlb/moat/internal/store"
)

// VPC is a virtual network, declared by the inventory or created by the API.
type VPC struct {
	ID   string
	CIDR string // the primary IPv4 block
	// SecondaryCIDRs are further IPv4 blocks, as an AWS VPC may have: an inventory can keep its
	// nodes' addresses and its load balancers' (on loopback) in one VPC.
	SecondaryCIDRs []string `json:",omitempty"`
	IPv6CIDR       string   `json:",omitempty"`
	// Default marks the VPC that calls without a VpcId (and GroupName look-ups) use.
	Default bool
	Attrs   *VPCAttributes `json:",omitempty"` // nil: AWS's defaults (see Attributes)
	Tags    Tags
}

// IPv4Blocks are the VPC's IPv4 CIDR blocks, the primary first.
func (v VPC) IPv4Blocks() []netip.Prefix {
	var out []netip.Prefix
	for _, c := range append([]string{v.CIDR}, v.SecondaryCIDRs...) {
		if p, err := netip.ParsePrefix(c); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// containsIPv4Block reports whether block lies within one of the VPC's IPv4 blocks.
func (v VPC) containsIPv4Block(block netip.Prefix) bool {
	return slices.ContainsFunc(v.IPv4Blocks(), func(p netip.Prefix) bool {
		return p.Contains(block.Addr()) && block.Bits() >= p.Bits()
	})
}

// Subnet is a VPC's address range in one zone; load balancer addresses are drawn from it.
type Subnet struct {
	ID                      string
	VPCID                   string
	Zone                    string
	ZoneID                  string
	CIDR                    string
	IPv6CIDR                string `json:",omitempty"`
	AvailableIPAddressCount int
	// FromAPI marks a subnet made by CreateSubnet: moat lb may route its range to loopback.
	FromAPI bool `json:",omitempty"`
	// Attributes that change nothing moat serves, kept to read back as set.
	MapPublicIPOnLaunch         bool `json:",omitempty"`
	AssignIPv6AddressOnCreation bool `json:",omitempty"`
	Tags                        Tags
}

// Instance is a machine (a Kubernetes node) with one primary network interface.
type Instance struct {
	ID          string
	SubnetID    string
	PrivateIP   string
	InterfaceID string
	State       string // running, stopped, terminated
	Tags        Tags
}

// NetworkInterface carries private addresses and up to five security groups: a rule whose source
// is a group admits the private addresses of the interfaces that carry it.
type NetworkInterface struct {
	ID          string
	SubnetID    string
	VPCID       string
	PrivateIPs  []string
	Groups      []string
	InstanceID  string `json:",omitempty"`
	Description string `json:",omitempty"`
	// A load balancer's interfaces are network_load_balancer, managed by amazon-elb; the
	// inventory's are plain ("").
	InterfaceType string `json:",omitempty"`
	RequesterID   string `json:",omitempty"`
	Tags          Tags
}

// Type is the interface's type as EC2 names it.
func (n NetworkInterface) Type() string {
	if n.InterfaceType == "" {
		return "interface"
	}
	return n.InterfaceType
}

// PrefixList is a managed prefix list: a named set of CIDRs that rules can reference.
type PrefixList struct {
	ID            string
	Name          string
	AddressFamily string // IPv4 or IPv6
	MaxEntries    int
	Entries       []PrefixListEntry
	Version       int
	Tags          Tags
}

// PrefixListEntry is one CIDR of a prefix list.
type PrefixListEntry struct {
	CIDR        string
	Description string `json:",omitempty"`
}

// describe loads every resource of a bucket, keeps those named by ids (all when ids is empty) and
// matching filters, and reports an id that does not exist with notFound. The resources are shared
// with the store's cache (see store.ListShared).
func describe[T any](c *Cloud, bucket string, ids []string, id func(T) string, match func(T, Filter) (bool, *Error), filters []Filter, notFound func(string) *Error) ([]T, error) {
	var all []T
	if err := c.store.View(func(tx store.Tx) (err error) {
		all, err = store.ListShared[T](tx, bucket)
		return err
	}); err != nil {
		return nil, err
	}
	return selectMatching(all, ids, id, match, filters, notFound)
}

// selectMatching keeps the resources of all named by ids (all when ids is empty) and matching
// filters, and reports an id that does not exist with notFound.
func selectMatching[T any](all []T, ids []string, id func(T) string, match func(T, Filter) (bool, *Error), filters []Filter, notFound func(string) *Error) ([]T, error) {
	byID := map[string]T{}
	for _, r := range all {
		byID[id(r)] = r
	}
	selected := all
	if len(ids) > 0 {
		selected = nil
		for _, want := range dedupe(ids) {
			r, ok := byID[want]
			if !ok {
				return nil, notFound(want)
			}
			selected = append(selected, r)
		}
	}
	out := selected[:0:0]
	for _, r := range selected {
		keep := true
		for _, f := range filters {
			ok, ferr := match(r, f)
			if ferr != nil {
				return nil, ferr
			}
			if !ok {
				keep = false
				break
			}
		}
		if keep {
			out = append(out, r)
		}
	}
	return out, nil
}

func dedupe(ids []string) []string {
	out := slices.Clone(ids)
	slices.Sort(out)
	return slices.Compact(out)
}

func unknownFilter(name string) *Error {
	return errorf("InvalidParameterValue", "The filter '%s' is invalid", name)
}

// DescribeVPCs lists VPCs by ID and filters (vpc-id, cidr, cidr-block-association.cidr-block,
// is-default or isDefault — AWS takes both —, state, owner-id, tags).
func (c *Cloud) DescribeVPCs(ids []string, filters []Filter) ([]VPC, error) {
	return describe(c, bucketVPCs, ids, func(v VPC) string { return v.ID }, func(v VPC, f Filter) (bool, *Error) {
		if m, ok := matchTagFilter(f, v.Tags); ok {
			return m, nil
		}
		switch f.Name {
		case "vpc-id":
			return matchValue(f.Values, v.ID), nil
		case "cidr":
			return matchValue(f.Values, v.CIDR), nil
		case "cidr-block-association.cidr-block":
			return slices.ContainsFunc(append([]string{v.CIDR}, v.SecondaryCIDRs...), func(c string) bool { return matchValue(f.Values, c) }), nil
		case "state":
			return matchValue(f.Values, "available"), nil
		case "is-default", "isDefault":
			return matchValue(f.Values, strconv.FormatBool(v.Default)), nil
		case "owner-id":
			return matchValue(f.Values, c.cfg.AccountID), nil
		}
		return false, unknownFilter(f.Name)
	}, filters, func(id string) *Error {
		return errorf("InvalidVpcID.NotFound", "The vpc ID '%s' does not exist", id)
	})
}

// DescribeSubnets lists subnets by ID and filters (subnet-id, vpc-id, availability-zone,
// cidr-block, tags).
func (c *Cloud) DescribeSubnets(ids []string, filters []Filter) ([]Subnet, error) {
	return describe(c, bucketSubnets, ids, func(s Subnet) string { return s.ID }, func(s Subnet, f Filter) (bool, *Error) {
		if m, ok := matchTagFilter(f, s.Tags); ok {
			return m, nil
		}
		switch f.Name {
		case "subnet-id":
			return matchValue(f.Values, s.ID), nil
		case "vpc-id":
			return matchValue(f.Values, s.VPCID), nil
		case "availability-zone", "availabilityZone":
			return matchValue(f.Values, s.Zone), nil
		case "availability-zone-id", "availabilityZoneId":
			return matchValue(f.Values, s.ZoneID), nil
		case "cidr-block", "cidr", "cidrBlock":
			return matchValue(f.Values, s.CIDR), nil
		case "state":
			return matchValue(f.Values, "available"), nil
		case "owner-id":
			return matchValue(f.Values, c.cfg.AccountID), nil
		}
		return false, unknownFilter(f.Name)
	}, filters, func(id string) *Error {
		return errorf("InvalidSubnetID.NotFound", "The subnet ID '%s' does not exist", id)
	})
}

// DescribeInstances lists instances by ID and filters.
func (c *Cloud) DescribeInstances(ids []string, filters []Filter) ([]Instance, error) {
	return describe(c, bucketInstances, ids, func(i Instance) string { return i.ID }, func(i Instance, f Filter) (bool, *Error) {
		if m, ok := matchTagFilter(f, i.Tags); ok {
			return m, nil
		}
		switch f.Name {
		case "instance-id":
			return matchValue(f.Values, i.ID), nil
		case "private-ip-address", "network-interface.addresses.private-ip-address":
			return matchValue(f.Values, i.PrivateIP), nil
		case "subnet-id":
			return matchValue(f.Values, i.SubnetID), nil
		case "instance-state-name":
			return matchValue(f.Values, i.State), nil
		case "vpc-id":
			sn, err := c.subnet(i.SubnetID)
			return err == nil && matchValue(f.Values, sn.VPCID), nil
		}
		return false, unknownFilter(f.Name)
	}, filters, func(id string) *Error {
		return errorf("InvalidInstanceID.NotFound", "The instance ID '%s' does not exist", id)
	})
}

// InstanceInterfaces returns the interfaces attached to the given instances. Load balancers'
// interfaces are attached to none, so only the interfaces bucket is read: DescribeInstances asks
// this on every call, and building every load balancer's interfaces was most of its cost.
func (c *Cloud) InstanceInterfaces(instanceIDs []string) ([]NetworkInterface, error) {
	wanted := make(map[string]bool, len(instanceIDs))
	for _, id := range instanceIDs {
		wanted[id] = true
	}
	var out []NetworkInterface
	err := c.store.View(func(tx store.Tx) error {
		ifaces, err := store.ListShared[NetworkInterface](tx, bucketInterfaces)
		for _, n := range ifaces {
			if n.InstanceID != "" && wanted[n.InstanceID] {
				out = append(out, n)
			}
		}
		return err
	})
	return out, err
}

// GroupNames returns the names of the groups among ids that exist, by ID.
func (c *Cloud) GroupNames(ids []string) (map[string]string, error) {
	names := make(map[string]string, len(ids))
	err := c.store.View(func(tx store.Tx) error {
		groups, err := c.groupIndex(tx)
		if err != nil {
			return err
		}
		for _, id := range ids {
			if sg, ok := groups.record(id); ok {
				names[id] = sg.Name
			}
		}
		return nil
	})
	return names, err
}

// DescribeNetworkInterfaces lists interfaces by ID and filters (vpc-id, subnet-id,
// addresses.private-ip-address, private-ip-address, group-id, attachment.instance-id,
// attachment.instance-owner-id, owner-id, tags).
//
// The load balancers' own interfaces are among them, as on AWS: one per zone, carrying the load
// balancer's groups and address, so that whoever resolves a group to its members' addresses
// through the API (moat node, the AWS controller) finds the load balancers too.
func (c *Cloud) DescribeNetworkInterfaces(ids []string, filters []Filter) ([]NetworkInterface, error) {
	var all []NetworkInterface
	if err := c.store.View(func(tx store.Tx) error {
		// Shared reads: moat node asks this every poll, and decoding every interface and load
		// balancer each time was the cost of the call. The shared slices are not changed.
		ifaces, err := store.ListShared[NetworkInterface](tx, bucketInterfaces)
		if err != nil {
			return err
		}
		lbs, err := store.ListShared[LoadBalancer](tx, bucketLoadBalancers)
		if err != nil {
			return err
		}
		all = append(slices.Clip(ifaces), loadBalancerInterfaces(lbs)...)
		return nil
	}); err != nil {
		return nil, err
	}
	return selectMatching(all, ids, func(n NetworkInterface) string { return n.ID }, func(n NetworkInterface, f Filter) (bool, *Error) {
		if m, ok := matchTagFilter(f, n.Tags); ok {
			return m, nil
		}
		switch f.Name {
		case "network-interface-id":
			return matchValue(f.Values, n.ID), nil
		case "vpc-id":
			return matchValue(f.Values, n.VPCID), nil
		case "subnet-id":
			return matchValue(f.Values, n.SubnetID), nil
		case "addresses.private-ip-address", "private-ip-address":
			return slices.ContainsFunc(n.PrivateIPs, func(ip string) bool { return matchValue(f.Values, ip) }), nil
		case "group-id":
			return slices.ContainsFunc(n.Groups, func(g string) bool { return matchValue(f.Values, g) }), nil
		case "attachment.instance-id":
			return matchValue(f.Values, n.InstanceID), nil
		case "attachment.instance-owner-id":
			return n.InstanceID != "" && matchValue(f.Values, c.cfg.AccountID), nil
		case "owner-id":
			return matchValue(f.Values, c.cfg.AccountID), nil
		case "ipv6-addresses.ipv6-address":
			return false, nil
		case "description":
			return matchValue(f.Values, n.Description), nil
		case "interface-type":
			return matchValue(f.Values, n.Type()), nil
		case "requester-managed":
			return matchValue(f.Values, strconv.FormatBool(n.RequesterID != "")), nil
		}
		return false, unknownFilter(f.Name)
	}, filters, func(id string) *Error {
		return errorf("InvalidNetworkInterfaceID.NotFound", "The networkInterface ID '%s' does not exist", id)
	})
}

// loadBalancerInterfaces are the interfaces AWS makes for network load balancers: one per zone,
// requester-managed by amazon-elb, described "ELB net/<name>/<id>", with the load balancer's
// groups and the zone's IPv4 address.
func loadBalancerInterfaces(lbs []LoadBalancer) []NetworkInterface {
	var out []NetworkInterface
	for _, lb := range lbs {
		for _, z := range lb.Zones {
			out = append(out, NetworkInterface{
				ID: derivedID("eni", lb.ARN+"/"+z.SubnetID), SubnetID: z.SubnetID, VPCID: lb.VPCID,
				PrivateIPs: []string{z.Address}, Groups: slices.Clone(lb.SecurityGroups),
				Description: "ELB net/" + lb.Name + "/" + lb.ID, InterfaceType: "network_load_balancer", RequesterID: "amazon-elb",
			})
		}
	}
	return out
}

// DescribePrefixLists lists managed prefix lists by ID and filters (prefix-list-id,
// prefix-list-name, owner-id).
func (c *Cloud) DescribePrefixLists(ids []string, filters []Filter) ([]PrefixList, error) {
	return describe(c, bucketPrefixLists, ids, func(p PrefixList) string { return p.ID }, func(p PrefixList, f Filter) (bool, *Error) {
		if m, ok := matchTagFilter(f, p.Tags); ok {
			return m, nil
		}
		switch f.Name {
		case "prefix-list-id":
			return matchValue(f.Values, p.ID), nil
		case "prefix-list-name":
			return matchValue(f.Values, p.Name), nil
		case "owner-id":
			return matchValue(f.Values, c.cfg.AccountID), nil
		}
		return false, unknownFilter(f.Name)
	}, filters, func(id string) *Error {
		return errorf("InvalidPrefixListID.NotFound", "The prefix list ID '%s' does not exist", id)
	})
}

func (c *Cloud) subnet(id string) (Subnet, error) {
	var sn Subnet
	err := c.store.View(func(tx store.Tx) (err error) {
		sn, err = store.LoadShared[Subnet](tx, bucketSubnets, id)
		return err
	})
	return sn, err
}

// ModifyNetworkInterfaceGroups replaces the security groups of an interface (EC2
// ModifyNetworkInterfaceAttribute with Groups). Every group must exist in the interface's VPC.
func (c *Cloud) ModifyNetworkInterfaceGroups(id string, groups []string) error {
	groups = dedupe(groups)
	if len(groups) == 0 {
		return errorf("InvalidParameterValue", "You must specify at least one security group")
	}
	if len(groups) > c.cfg.Quotas.SecurityGroupsPerInterface {
		return errorf("SecurityGroupsPerInterfaceLimitExceeded", "The maximum number of security groups per interface has been reached.")
	}
	return c.store.Update(func(tx store.Tx) error {
		eni, err := store.Load[NetworkInterface](tx, bucketInterfaces, id)
		if err == store.ErrNotFound {
			return errorf("InvalidNetworkInterfaceID.NotFound", "The networkInterface ID '%s' does not exist", id)
		} else if err != nil {
			return err
		}
		for _, g := range groups {
			sg, err := peekGroup(tx, g)
			if err != nil {
				return err
			}
			if sg.VPCID != eni.VPCID {
				return errorf("InvalidParameterValue", "Security group %s and interface %s belong to different networks.", g, id)
			}
		}
		eni.Groups = groups
		return store.Save(tx, bucketInterfaces, eni.ID, eni)
	})
}

// AvailabilityZone is a zone of the region, derived from the subnets that exist.
type AvailabilityZone struct {
	Name string
	ID   string
}

// DescribeAvailabilityZones lists the zones the inventory's subnets are in.
func (c *Cloud) DescribeAvailabilityZones(names, zoneIDs []string) ([]AvailabilityZone, error) {
	subnets, err := c.DescribeSubnets(nil, nil)
	if err != nil {
		return nil, err
	}
	seen := map[string]AvailabilityZone{}
	for _, s := range subnets {
		seen[s.Zone] = AvailabilityZone{Name: s.Zone, ID: s.ZoneID}
	}
	var out []AvailabilityZone
	for _, z := range seen {
		if (len(names) == 0 || slices.Contains(names, z.Name)) && (len(zoneIDs) == 0 || slices.Contains(zoneIDs, z.ID)) {
			out = append(out, z)
		}
	}
	slices.SortFunc(out, func(a, b AvailabilityZone) int { return strings.Compare(a.Name, b.Name) })
	for _, want := range append(slices.Clone(names), zoneIDs...) {
		if !slices.ContainsFunc(out, func(z AvailabilityZone) bool { return z.Name == want || z.ID == want }) {
			return nil, errorf("InvalidParameterValue", "The zone '%s' does not exist.", want)
		}
	}
	return out, nil
}

// zoneID derives AWS's zone ID form (use1-az1) from a region and zone letter.
func zoneID(region, zone string) string {
	parts := strings.Split(region, "-")
	abbrev := ""
	for i, p := range parts {
		if i == len(parts)-1 || len(p) == 0 {
			abbrev += p
			continue
		}
		if i == 0 {
			abbrev += p
		} else {
			abbrev += p[:1]
		}
	}
	letter := strings.TrimPrefix(zone, region)
	n := 1
	if len(letter) == 1 {
		n = int(letter[0]-'a') + 1
	}
	return abbrev + "-az" + strconv.Itoa(n)
}
