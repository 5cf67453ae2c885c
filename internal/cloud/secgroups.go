package cloud

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"

	"github.com/moatlb/moat/internal/secgroup"
	"github.com/moatlb/moat/internal/store"
)

// SecurityGroup is a set of allow rules attached to interfaces and load balancers.
type SecurityGroup struct {
	ID          string
	Name        string
	Description string
	VPCID       string
	Tags        Tags
	Ingress     []Rule
	Egress      []Rule
}

// Rule is one security-group rule: a protocol and port range, and exactly one peer (the source
// of an inbound rule, the destination of an outbound one).
type Rule struct {
	ID string
	// Protocol is normalised as EC2 answers it: "-1", "tcp", "udp", "icmp", "icmpv6" or a number.
	Protocol string
	// FromPort and ToPort are the port range for tcp and udp, the ICMP type and code for icmp and
	// icmpv6, and -1 for protocols without ports.
	FromPort, ToPort int
	CIDRv4           string `json:",omitempty"`
	CIDRv6           string `json:",omitempty"`
	GroupID          string `json:",omitempty"`
	PrefixListID     string `json:",omitempty"`
	Description      string `json:",omitempty"`
	Tags             Tags   `json:",omitempty"`
}

// Peer is the rule's single source or destination, as AWS's duplicate messages print it.
func (r Rule) Peer() string {
	return r.CIDRv4 + r.CIDRv6 + r.GroupID + r.PrefixListID
}

// HasPorts reports whether the protocol gives FromPort/ToPort a meaning.
func (r Rule) HasPorts() bool { return protocolHasPorts(r.Protocol) }

func protocolHasPorts(p string) bool {
	return p == "tcp" || p == "udp" || p == "icmp" || p == "icmpv6"
}

// sameRule is AWS's rule identity: protocol, ports and peer; the description does not count.
func sameRule(a, b Rule) bool {
	return a.Protocol == b.Protocol && a.FromPort == b.FromPort && a.ToPort == b.ToPort &&
		a.CIDRv4 == b.CIDRv4 && a.CIDRv6 == b.CIDRv6 && a.GroupID == b.GroupID && a.PrefixListID == b.PrefixListID
}

// describeRule renders a rule the way EC2's InvalidPermission messages do.
func describeRule(r Rule) string {
	proto := strings.ToUpper(r.Protocol)
	switch {
	case r.Protocol == "-1":
		return fmt.Sprintf("peer: %s, ALL, ALLOW", r.Peer())
	case !r.HasPorts():
		return fmt.Sprintf("peer: %s, protocol: %s, ALLOW", r.Peer(), r.Protocol)
	case r.Protocol == "icmp" || r.Protocol == "icmpv6":
		return fmt.Sprintf("peer: %s, %s, type: %d, code: %d, ALLOW", r.Peer(), proto, r.FromPort, r.ToPort)
	}
	return fmt.Sprintf("peer: %s, %s, from port: %d, to port: %d, ALLOW", r.Peer(), proto, r.FromPort, r.ToPort)
}

// Permission is an IpPermission of an Authorize or Revoke request: one protocol and port range
// with any number of peers. It expands to one Rule per peer.
type Permission struct {
	Protocol         string
	FromPort, ToPort *int
	CIDRv4           []Peer
	CIDRv6           []Peer
	Groups           []Peer
	PrefixLists      []Peer
}

// Peer is one peer of a Permission with its optional description.
type Peer struct {
	Value       string
	Description string
}

// Valid characters of group names, descriptions and rule descriptions (EC2's documented set).
var ec2TextPattern = regexp.MustCompile(`^[a-zA-Z0-9 ._\-:/()#,@\[\]+=&;{}!$*]*$`)

func checkRuleDescription(desc string) error {
	if len(desc) > 255 || !ec2TextPattern.MatchString(desc) {
		return errorf("InvalidParameterValue", "Invalid rule description. Valid descriptions are strings less than 256 characters from the following set:  a-zA-Z0-9. _-:/()#,@[]+=&;{}!$*")
	}
	return nil
}

// expand validates a permission and returns its rules. tx resolves referenced groups and prefix
// lists; vpcID is the VPC of the group being changed.
func expandPermission(tx store.Tx, p Permission, vpcID string) ([]Rule, error) {
	proto, err := secgroup.ParseProtocol(p.Protocol)
	if err != nil || p.Protocol == "" {
		return nil, errorf("InvalidParameterValue", "Invalid value '%s' for IP protocol. Unknown protocol.", p.Protocol)
	}
	base := Rule{Protocol: secgroup.ProtocolName(proto), FromPort: -1, ToPort: -1}
	switch base.Protocol {
	case "tcp", "udp":
		if p.FromPort == nil || p.ToPort == nil {
			return nil, errorf("InvalidParameterValue", "Invalid value for portRange. Must specify both from and to ports with TCP/UDP.")
		}
		from, to := *p.FromPort, *p.ToPort
		if from < 0 || from > 65535 || to < 0 || to > 65535 {
			return nil, errorf("InvalidParameterValue", "Invalid value for portRange. Ports must be between 0 and 65535 (from %d to %d).", from, to)
		}
		if from > to {
			return nil, errorf("InvalidParameterValue", "Invalid TCP/UDP port range: from port %d is greater than to port %d.", from, to)
		}
		base.FromPort, base.ToPort = from, to
	case "icmp", "icmpv6":
		if base.Protocol == "icmp" && (p.FromPort == nil || p.ToPort == nil) {
			return nil, errorf("InvalidParameterValue", "Invalid value for portRange. Must specify both ICMP type and code (FromPort and ToPort), or -1 for all.")
		}
		if p.FromPort != nil {
			base.FromPort = *p.FromPort
		}
		if p.ToPort != nil {
			base.ToPort = *p.ToPort
		}
		if base.FromPort < -1 || base.FromPort > 255 || base.ToPort < -1 || base.ToPort > 255 {
			return nil, errorf("InvalidParameterValue", "Invalid value for ICMP type or code: type %d, code %d; each must be -1 or 0-255.", base.FromPort, base.ToPort)
		}
		if base.FromPort == -1 && base.ToPort != -1 {
			return nil, errorf("InvalidParameterValue", "Invalid value for ICMP code %d: when the type is -1 (all), the code must be -1.", base.ToPort)
		}
	}

	var rules []Rule
	add := func(r Rule, desc string) error {
		if err := checkRuleDescription(desc); err != nil {
			return err
		}
		r.Description = desc
		rules = append(rules, r)
		return nil
	}
	for _, peer := range p.CIDRv4 {
		pfx, err := netip.ParsePrefix(strings.TrimSpace(peer.Value))
		if err != nil || !pfx.Addr().Is4() {
			return nil, errorf("InvalidParameterValue", "Value (%s) for parameter cidrIp is invalid. This is not a valid CIDR block.", peer.Value)
		}
		r := base
		r.CIDRv4 = pfx.Masked().String()
		if err := add(r, peer.Description); err != nil {
			return nil, err
		}
	}
	for _, peer := range p.CIDRv6 {
		pfx, err := netip.ParsePrefix(strings.TrimSpace(peer.Value))
		if err != nil || !pfx.Addr().Is6() || pfx.Addr().Is4In6() {
			return nil, errorf("InvalidParameterValue", "Value (%s) for parameter cidrIpv6 is invalid. This is not a valid IPv6 CIDR block.", peer.Value)
		}
		r := base
		r.CIDRv6 = pfx.Masked().String()
		if err := add(r, peer.Description); err != nil {
			return nil, err
		}
	}
	for _, peer := range p.Groups {
		sg, err := peekGroup(tx, peer.Value)
		if err != nil {
			return nil, err
		}
		if sg.VPCID != vpcID {
			return nil, errorf("InvalidGroup.NotFound", "You have specified two resources that belong to different networks: security group %s is in %s, not %s.", sg.ID, sg.VPCID, vpcID)
		}
		r := base
		r.GroupID = sg.ID
		if err := add(r, peer.Description); err != nil {
			return nil, err
		}
	}
	for _, peer := range p.PrefixLists {
		if _, err := store.LoadShared[PrefixList](tx, bucketPrefixLists, peer.Value); err != nil {
			return nil, errorf("InvalidPrefixListID.NotFound", "The prefix list ID '%s' does not exist", peer.Value)
		}
		r := base
		r.PrefixListID = peer.Value
		if err := add(r, peer.Description); err != nil {
			return nil, err
		}
	}
	if len(rules) == 0 {
		return nil, errorf("MissingParameter", "The request must contain a source or destination for each IP permission: IpRanges, Ipv6Ranges, Groups (UserIdGroupPairs) or PrefixListIds.")
	}
	return rules, nil
}

var groupIDPattern = regexp.MustCompile(`^sg-[0-9a-f]{8}([0-9a-f]{9})?$`)

// loadGroup returns the group with this ID, or AWS's error for a malformed or unknown ID.
func loadGroup(tx store.Tx, id string) (SecurityGroup, error) {
	return lookupGroup(tx, id, store.Load[SecurityGroup])
}

// peekGroup is loadGroup for readers: the group is shared (see store.LoadShared).
func peekGroup(tx store.Tx, id string) (SecurityGroup, error) {
	return lookupGroup(tx, id, store.LoadShared[SecurityGroup])
}

func lookupGroup(tx store.Tx, id string, load func(store.Tx, string, string) (SecurityGroup, error)) (SecurityGroup, error) {
	if !groupIDPattern.MatchString(id) {
		return SecurityGroup{}, errorf("InvalidGroupId.Malformed", "Invalid id: \"%s\" (expecting \"sg-...\")", id)
	}
	sg, err := load(tx, bucketSecurityGroups, id)
	if err == store.ErrNotFound {
		return sg, errorf("InvalidGroup.NotFound", "The security group '%s' does not exist", id)
	}
	return sg, err
}

// GroupRef names a group by ID or, in the default VPC, by name, as EC2's GroupId/GroupName.
type GroupRef struct {
	ID   string
	Name string
}

func (c *Cloud) resolveGroup(tx store.Tx, ref GroupRef) (SecurityGroup, error) {
	sg, err := c.peekResolveGroup(tx, ref)
	if err != nil {
		return sg, err
	}
	return loadGroup(tx, sg.ID)
}

// peekResolveGroup is resolveGroup for readers: the group is shared (see store.LoadShared).
func (c *Cloud) peekResolveGroup(tx store.Tx, ref GroupRef) (SecurityGroup, error) {
	if ref.ID != "" {
		return peekGroup(tx, ref.ID)
	}
	if ref.Name == "" {
		return SecurityGroup{}, errorf("MissingParameter", "The request must contain the parameter groupId or groupName")
	}
	vpc, err := defaultVPC(tx)
	if err != nil {
		return SecurityGroup{}, err
	}
	groups, err := c.groupIndex(tx)
	if err != nil {
		return SecurityGroup{}, err
	}
	if sg, ok := groups.byNameIn(vpc, ref.Name); ok {
		return sg, nil
	}
	return SecurityGroup{}, errorf("InvalidGroup.NotFound", "The security group '%s' does not exist in default VPC '%s'", ref.Name, vpc)
}
