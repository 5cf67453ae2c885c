package cloud

import (
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/moatlb/moat/internal/store"
)

// Inventory declares the infrastructure moat lb serves that the API does not create: VPCs,
// subnets, instances with their interfaces, named security groups for those interfaces, and
// prefix lists. Resources are named; an ID is derived from the name unless given, so the same
// file always yields the same IDs.
type Inventory struct {
	VPCs           []InventoryVPC        `json:"vpcs"`
	Subnets        []InventorySubnet     `json:"subnets"`
	SecurityGroups []InventoryGroup      `json:"securityGroups"`
	Instances      []InventoryInstance   `json:"instances"`
	PrefixLists    []InventoryPrefixList `json:"prefixLists"`
}

// InventoryVPC declares a VPC.
type InventoryVPC struct {
	Name string `json:"name"`
	ID   string `json:"id,omitempty"`
	CIDR string `json:"cidr"`
	// SecondaryCIDRs are further IPv4 blocks, as an AWS VPC may have; subnets lie in any block.
	SecondaryCIDRs []string          `json:"secondaryCidrs,omitempty"`
	IPv6CIDR       string            `json:"ipv6Cidr,omitempty"`
	Default        bool              `json:"default,omitempty"`
	Tags           map[string]string `json:"tags,omitempty"`
}

// InventorySubnet declares a subnet; Zone is a letter (a → <region>a) or a full zone name.
// IPv6CIDR, inside its VPC's IPv6CIDR, lets dualstack load balancers take an IPv6 address there.
type InventorySubnet struct {
	Name                    string            `json:"name"`
	ID                      string            `json:"id,omitempty"`
	VPC                     string            `json:"vpc"`
	Zone                    string            `json:"zone"`
	CIDR                    string            `json:"cidr"`
	IPv6CIDR                string            `json:"ipv6Cidr,omitempty"`
	AvailableIPAddressCount int               `json:"availableIpAddressCount,omitempty"`
	Tags                    map[string]string `json:"tags,omitempty"`
}

// InventoryGroup declares a security group to create if it does not exist. Its rules are the
// API's to change; re-applying the inventory does not reset them.
type InventoryGroup struct {
	Name        string            `json:"name"`
	VPC         string            `json:"vpc"`
	Description string            `json:"description,omitempty"`
	Tags        map[string]string `json:"tags,omitempty"`
}

// InventoryInstance declares an instance and its primary interface. SecurityGroups (names or
// IDs) are attached when the interface is first created; later changes come from the API.
type InventoryInstance struct {
	Name           string            `json:"name"`
	ID             string            `json:"id,omitempty"`
	Subnet         string            `json:"subnet"`
	PrivateIP      string            `json:"privateIp"`
	SecurityGroups []string          `json:"securityGroups,omitempty"`
	State          string            `json:"state,omitempty"`
	Tags           map[string]string `json:"tags,omitempty"`
}

// InventoryPrefixList declares a managed prefix list.
type InventoryPrefixList struct {
	Name          string            `json:"name"`
	ID            string            `json:"id,omitempty"`
	AddressFamily string            `json:"addressFamily,omitempty"`
	MaxEntries    int               `json:"maxEntries,omitempty"`
	Entries       []PrefixListEntry `json:"entries"`
	Tags          map[string]string `json:"tags,omitempty"`
}

//go:embed default-inventory.yaml
var defaultInventoryYAML []byte

// DefaultInventory is the inventory used when none is given: it works on loopback, unprivileged.
func DefaultInventory() Inventory {
	inv, err := ParseInventory(defaultInventoryYAML)
	if err != nil {
		panic(fmt.Sprintf("default inventory: %v", err))
	}
	return inv
}

// DefaultInventoryYAML is the default inventory's source, a documented example of the format.
func DefaultInventoryYAML() []byte { return defaultInventoryYAML }

// ParseInventory reads an inventory from YAML (or JSON). Unknown fields are errors, so a typo
// does not silently drop a resource.
func ParseInventory(data []byte) (Inventory, error) {
	var inv Inventory
	if err := yaml.UnmarshalStrict(data, &inv); err != nil {
		return inv, fmt.Errorf("parse inventory: %w", err)
	}
	return inv, nil
}

// LoadInventory reads an inventory file.
func LoadInventory(path string) (Inventory, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Inventory{}, err
	}
	return ParseInventory(data)
}

// derivedID makes a stable EC2-style ID from a resource's kind and name.
func derivedID(prefix, name string) string {
	sum := sha256.Sum256([]byte(prefix + "/" + name))
	return prefix + "-" + hex.EncodeToString(sum[:])[:17]
}

func idOr(id, prefix, name string) string {
	if id != "" {
		return id
	}
	return derivedID(prefix, name)
}

// ApplyInventory creates or updates the declared resources in one transaction: all of them, or
// none if the file is inconsistent. Tags and security groups that the API has changed are kept;
// declared tags are set on top.
func (c *Cloud) ApplyInventory(inv Inventory) error {
	return c.store.Update(func(tx store.Tx) error {
		vpcIDs := map[string]string{} // name or ID -> ID
		vpcs, vpcCIDRs6 := map[string]VPC{}, map[string]netip.Prefix{}
		for _, v := range inv.VPCs {
			id := idOr(v.ID, "vpc", v.Name)
			var blocks []string
			for _, c := range append([]string{v.CIDR}, v.SecondaryCIDRs...) {
				cidr, err := netip.ParsePrefix(c)
				if err != nil || !cidr.Addr().Is4() {
					return fmt.Errorf("inventory: vpc %s: cidr %q is not an IPv4 CIDR", v.Name, c)
				}
				blocks = append(blocks, cidr.Masked().String())
			}
			cidr6, err := parseIPv6CIDR(v.IPv6CIDR)
			if err != nil {
				return fmt.Errorf("inventory: vpc %s: %w", v.Name, err)
			}
			vpcIDs[v.Name], vpcIDs[id] = id, id
			old, _ := store.Load[VPC](tx, bucketVPCs, id)
			rec := VPC{ID: id, CIDR: blocks[0], SecondaryCIDRs: blocks[1:], IPv6CIDR: prefixString(cidr6), Default: v.Default, Attrs: old.Attrs, Tags: mergeMaps(old.Tags, v.Tags)}
			vpcs[id], vpcCIDRs6[id] = rec, cidr6
			if err := store.Save(tx, bucketVPCs, id, rec); err != nil {
				return err
			}
			if err := c.ensureGroup(tx, "default", "default VPC security group", id, nil); err != nil {
				return err
			}
		}
		subnets := map[string]Subnet{}
		for _, s := range inv.Subnets {
			vpc, ok := vpcIDs[s.VPC]
			if !ok {
				return fmt.Errorf("inventory: subnet %s: unknown vpc %q", s.Name, s.VPC)
			}
			cidr, err := netip.ParsePrefix(s.CIDR)
			if err != nil || !cidr.Addr().Is4() || !vpcs[vpc].containsIPv4Block(cidr) {
				return fmt.Errorf("inventory: subnet %s: cidr %q is not inside vpc %s (%s)", s.Name, s.CIDR, s.VPC, strings.Join(append([]string{vpcs[vpc].CIDR}, vpcs[vpc].SecondaryCIDRs...), ", "))
			}
			cidr6, err := parseIPv6CIDR(s.IPv6CIDR)
			switch {
			case err != nil:
				return fmt.Errorf("inventory: subnet %s: %w", s.Name, err)
			case cidr6.IsValid() && !vpcCIDRs6[vpc].IsValid():
				return fmt.Errorf("inventory: subnet %s: ipv6Cidr %q needs an ipv6Cidr on vpc %s", s.Name, s.IPv6CIDR, s.VPC)
			case cidr6.IsValid() && (!vpcCIDRs6[vpc].Contains(cidr6.Addr()) || cidr6.Bits() < vpcCIDRs6[vpc].Bits()):
				return fmt.Errorf("inventory: subnet %s: ipv6Cidr %q is not inside vpc %s (%s)", s.Name, s.IPv6CIDR, s.VPC, vpcCIDRs6[vpc])
			}
			zone := s.Zone
			if len(zone) == 1 {
				zone = c.cfg.Region + zone
			}
			if !strings.HasPrefix(zone, c.cfg.Region) {
				return fmt.Errorf("inventory: subnet %s: zone %q is not in region %s", s.Name, s.Zone, c.cfg.Region)
			}
			id := idOr(s.ID, "subnet", s.Name)
			old, _ := store.Load[Subnet](tx, bucketSubnets, id)
			count := s.AvailableIPAddressCount
			if count == 0 {
				count = 1<<(32-cidr.Bits()) - 5 // AWS reserves five addresses per subnet
			}
			rec := Subnet{ID: id, VPCID: vpc, Zone: zone, ZoneID: zoneID(c.cfg.Region, zone), CIDR: cidr.Masked().String(), IPv6CIDR: prefixString(cidr6), AvailableIPAddressCount: count,
				MapPublicIPOnLaunch: old.MapPublicIPOnLaunch, AssignIPv6AddressOnCreation: old.AssignIPv6AddressOnCreation, Tags: mergeMaps(old.Tags, s.Tags)}
			subnets[s.Name], subnets[id] = rec, rec
			if err := store.Save(tx, bucketSubnets, id, rec); err != nil {
				return err
			}
		}
		for _, g := range inv.SecurityGroups {
			vpc, ok := vpcIDs[g.VPC]
			if !ok {
				return fmt.Errorf("inventory: security group %s: unknown vpc %q", g.Name, g.VPC)
			}
			desc := g.Description
			if desc == "" {
				desc = g.Name
			}
			if err := c.ensureGroup(tx, g.Name, desc, vpc, g.Tags); err != nil {
				return err
			}
		}
		for _, in := range inv.Instances {
			if err := c.applyInstance(tx, in, subnets); err != nil {
				return err
			}
		}
		for _, p := range inv.PrefixLists {
			if err := applyPrefixList(tx, p); err != nil {
				return err
			}
		}
		return nil
	})
}

// parseIPv6CIDR reads an optional IPv6 CIDR ("" is none), canonical. AWS's subnets get /64s
// and VPCs /56s; any IPv6 prefix up to /64 is taken, so that an inventory can lay out what it
// needs, and no longer one: AWS's smallest IPv6 subnet is a /64.
func parseIPv6CIDR(s string) (netip.Prefix, error) {
	if s == "" {
		return netip.Prefix{}, nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil || !p.Addr().Is6() || p.Addr().Is4In6() || p.Bits() > 64 {
		return netip.Prefix{}, fmt.Errorf("ipv6Cidr %q is not an IPv6 CIDR of /64 or shorter", s)
	}
	return p.Masked(), nil
}

// prefixString is p in canonical form, or "" for no prefix.
func prefixString(p netip.Prefix) string {
	if !p.IsValid() {
		return ""
	}
	return p.String()
}

func (c *Cloud) applyInstance(tx store.Tx, in InventoryInstance, subnets map[string]Subnet) error {
	sn, ok := subnets[in.Subnet]
	if !ok {
		return fmt.Errorf("inventory: instance %s: unknown subnet %q", in.Name, in.Subnet)
	}
	ip, err := netip.ParseAddr(in.PrivateIP)
	if err != nil || !netip.MustParsePrefix(sn.CIDR).Contains(ip) {
		return fmt.Errorf("inventory: instance %s: privateIp %q is not in subnet %s (%s)", in.Name, in.PrivateIP, in.Subnet, sn.CIDR)
	}
	id := idOr(in.ID, "i", in.Name)
	eniID := derivedID("eni", id)
	state := in.State
	if state == "" {
		state = "running"
	}
	old, _ := store.Load[Instance](tx, bucketInstances, id)
	rec := Instance{ID: id, SubnetID: sn.ID, PrivateIP: ip.String(), InterfaceID: eniID, State: state, Tags: mergeMaps(old.Tags, in.Tags)}
	if err := store.Save(tx, bucketInstances, id, rec); err != nil {
		return err
	}
	eni, err := store.Load[NetworkInterface](tx, bucketInterfaces, eniID)
	if err == store.ErrNotFound {
		groups := []string{}
		for _, g := range in.SecurityGroups {
			gid, err := c.groupByNameOrID(tx, g, sn.VPCID)
			if err != nil {
				return fmt.Errorf("inventory: instance %s: %w", in.Name, err)
			}
			groups = append(groups, gid)
		}
		if len(groups) == 0 {
			gid, err := c.groupByNameOrID(tx, "default", sn.VPCID)
			if err != nil {
				return err
			}
			groups = []string{gid}
		}
		eni = NetworkInterface{ID: eniID, Groups: groups, Description: "Primary network interface", Tags: Tags{}}
	} else if err != nil {
		return err
	}
	eni.SubnetID, eni.VPCID, eni.InstanceID = sn.ID, sn.VPCID, id
	eni.PrivateIPs = []string{ip.String()}
	return store.Save(tx, bucketInterfaces, eni.ID, eni)
}

func applyPrefixList(tx store.Tx, p InventoryPrefixList) error {
	family := p.AddressFamily
	if family == "" {
		family = "IPv4"
	}
	for _, e := range p.Entries {
		pfx, err := netip.ParsePrefix(e.CIDR)
		if err != nil || pfx.Addr().Is4() != (family == "IPv4") {
			return fmt.Errorf("inventory: prefix list %s: entry %q is not an %s CIDR", p.Name, e.CIDR, family)
		}
	}
	id := idOr(p.ID, "pl", p.Name)
	old, _ := store.Load[PrefixList](tx, bucketPrefixLists, id)
	maxEntries := max(p.MaxEntries, len(p.Entries), 1)
	rec := PrefixList{ID: id, Name: p.Name, AddressFamily: family, MaxEntries: maxEntries, Entries: p.Entries, Version: old.Version + 1, Tags: mergeMaps(old.Tags, p.Tags)}
	return store.Save(tx, bucketPrefixLists, id, rec)
}

// ensureGroup creates the named group in vpc unless one of that name exists. A VPC's "default"
// group admits traffic from its own members, as on AWS.
func (c *Cloud) ensureGroup(tx store.Tx, name, description, vpc string, tags map[string]string) error {
	if _, err := c.groupByNameOrID(tx, name, vpc); err == nil {
		return nil
	}
	id := derivedID("sg", vpc+"/"+name)
	sg := SecurityGroup{ID: id, Name: name, Description: description, VPCID: vpc, Tags: mergeMaps(nil, tags)}
	sg.Egress = []Rule{{ID: derivedID("sgr", id+"/egress"), Protocol: "-1", FromPort: -1, ToPort: -1, CIDRv4: "0.0.0.0/0"}}
	if name == "default" {
		sg.Ingress = []Rule{{ID: derivedID("sgr", id+"/self"), Protocol: "-1", FromPort: -1, ToPort: -1, GroupID: id}}
	}
	return store.Save(tx, bucketSecurityGroups, id, sg)
}

func (c *Cloud) groupByNameOrID(tx store.Tx, ref, vpc string) (string, error) {
	groups, err := store.List[SecurityGroup](tx, bucketSecurityGroups)
	if err != nil {
		return "", err
	}
	for _, g := range groups {
		if g.VPCID == vpc && (g.ID == ref || strings.EqualFold(g.Name, ref)) {
			return g.ID, nil
		}
	}
	return "", fmt.Errorf("security group %q not found in %s", ref, vpc)
}

func mergeMaps(old Tags, add map[string]string) Tags {
	out := Tags{}
	for k, v := range old {
		out[k] = v
	}
	for k, v := range add {
		out[k] = v
	}
	return out
}
