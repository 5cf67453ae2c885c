package model

import (
	"fmt"
	"maps"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/moatlb/moat/internal/controller/annotations"
	"github.com/moatlb/moat/internal/nlbattr"
)

const (
	lbAttrDeletionProtection = "deletion_protection.enabled"
	lbAttrCrossZone          = "load_balancing.cross_zone.enabled"
	lbAttrAccessLogsEnabled  = "access_logs.s3.enabled"
	lbAttrAccessLogsBucket   = "access_logs.s3.bucket"
	lbAttrAccessLogsPrefix   = "access_logs.s3.prefix"
)

func (t *task) buildLoadBalancer() error {
	if err := t.checkSubnets(); err != nil {
		return err
	}
	attrs, err := t.buildLoadBalancerAttributes()
	if err != nil {
		return err
	}
	capacity, err := t.buildMinimumCapacity()
	if err != nil {
		return err
	}
	groups, err := t.buildSecurityGroups()
	if err != nil {
		return err
	}
	mappings, sourceNat, err := t.buildSubnetMappings()
	if err != nil {
		return err
	}
	name, err := t.buildLoadBalancerName()
	if err != nil {
		return err
	}
	privateLink, _, err := t.p.Enum(annotations.InboundSGRulesOnPrivateLinkTraffic, "on", "off")
	if err != nil {
		return fromAnnotation(err)
	}
	t.stack.LoadBalancer = &LoadBalancer{
		ResourceID:                              ResourceIDLoadBalancer,
		Name:                                    name,
		Type:                                    "network",
		Scheme:                                  t.scheme,
		IPAddressType:                           t.ipType,
		SubnetMapping:                           mappings,
		SecurityGroups:                          groups,
		SecurityGroupsInboundRulesOnPrivateLink: privateLink,
		EnablePrefixForIPv6SourceNat:            sourceNat,
		MinimumCapacity:                         capacity,
		Attributes:                              attrs,
		Tags:                                    t.resourceTags(ResourceIDLoadBalancer),
	}
	return nil
}

func (t *task) checkSubnets() error {
	if len(t.in.Subnets) == 0 {
		return missing("no subnets were resolved for the load balancer (Resolved.Subnets)")
	}
	for i, s := range t.in.Subnets {
		if s.ID == "" {
			return missing("resolved subnet %d has no ID", i)
		}
		if t.ipType == IPAddressTypeDualStack && len(s.IPv6CIDRs) == 0 {
			return invalid(t.p, annotations.IPAddressType, "subnet %s has no IPv6 CIDR, which a dualstack load balancer needs", s.ID)
		}
	}
	return nil
}

// buildLoadBalancerAttributes merges the attributes annotation with the deprecated
// access-log and cross-zone annotations; the deprecated ones win, as in the AWS controller.
func (t *task) buildLoadBalancerAttributes() ([]Attribute, error) {
	attrs, _, err := t.p.StringMap(annotations.LoadBalancerAttributes)
	if err != nil {
		return nil, fromAnnotation(err)
	}
	if attrs == nil {
		attrs = map[string]string{}
	}
	if err := checkAttributes(t.p, annotations.LoadBalancerAttributes, attrs, nlbattr.LoadBalancer, "network load balancer"); err != nil {
		return nil, err
	}
	specific := map[string]string{}
	logs, ok, err := t.p.Bool(annotations.AccessLogEnabled)
	if err != nil {
		return nil, fromAnnotation(err)
	}
	if ok && logs {
		specific[lbAttrAccessLogsEnabled] = "true"
		if v, ok := t.p.String(annotations.AccessLogS3BucketName); ok {
			specific[lbAttrAccessLogsBucket] = v
		}
		if v, ok := t.p.String(annotations.AccessLogS3BucketPrefix); ok {
			specific[lbAttrAccessLogsPrefix] = v
		}
	}
	crossZone, ok, err := t.p.Bool(annotations.CrossZoneLoadBalancingEnabled)
	if err != nil {
		return nil, fromAnnotation(err)
	}
	if ok {
		specific[lbAttrCrossZone] = strconv.FormatBool(crossZone)
	}
	maps.Copy(attrs, specific)
	if on, _ := parseBool(attrs[lbAttrAccessLogsEnabled]); on && attrs[lbAttrAccessLogsBucket] == "" {
		suffix := annotations.LoadBalancerAttributes
		if _, ok := specific[lbAttrAccessLogsEnabled]; ok {
			suffix = annotations.AccessLogS3BucketName
		}
		return nil, kindError(KindInvalid, suffix, "access logs are enabled but no S3 bucket is named (%s)", lbAttrAccessLogsBucket)
	}
	return sortedAttributes(attrs), nil
}

// buildMinimumCapacity reads the capacity reservation (gate LBCapacityReservation).
func (t *task) buildMinimumCapacity() (*Capacity, error) {
	if !t.cfg.FeatureGates.Enabled(GateLBCapacityReservation) {
		return nil, nil
	}
	m, ok, err := t.p.StringMap(annotations.MinimumLoadBalancerCapacity)
	if err != nil || !ok {
		return nil, fromAnnotation(err)
	}
	for k := range m {
		if k != "CapacityUnits" {
			return nil, invalid(t.p, annotations.MinimumLoadBalancerCapacity, "unknown key %q: the only key is CapacityUnits", k)
		}
	}
	raw, ok := m["CapacityUnits"]
	if !ok {
		return nil, invalid(t.p, annotations.MinimumLoadBalancerCapacity, "CapacityUnits=<n> is required")
	}
	n, err := strconv.ParseInt(strings.TrimSpace(raw), 10, 32)
	if err != nil || n <= 0 {
		return nil, invalid(t.p, annotations.MinimumLoadBalancerCapacity, "CapacityUnits must be a positive integer")
	}
	return &Capacity{CapacityUnits: int32(n)}, nil
}

var lbNamePattern = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?$`)

// buildLoadBalancerName: the name annotation (checked as AWS checks names), else the
// generated k8s-<ns>-<name>-<hash>.
func (t *task) buildLoadBalancerName() (string, error) {
	name, ok := t.p.String(annotations.LoadBalancerName)
	if !ok {
		return LoadBalancerName(t.cfg.ClusterName, t.svc.Namespace, t.svc.Name, string(t.svc.UID), t.scheme), nil
	}
	switch {
	case len(name) > 32:
		return "", invalid(t.p, annotations.LoadBalancerName, "load balancer name cannot be longer than 32 characters")
	case !lbNamePattern.MatchString(name):
		return "", invalid(t.p, annotations.LoadBalancerName, "a load balancer name has only letters, digits and hyphens, and neither starts nor ends with a hyphen")
	case strings.HasPrefix(name, "internal-"):
		return "", invalid(t.p, annotations.LoadBalancerName, "a load balancer name cannot start with \"internal-\"")
	}
	return name, nil
}

// buildSubnetMappings pairs each subnet with its EIP allocation, private IPv4 address, IPv6
// address and source-NAT prefix, as the annotations give them.
func (t *task) buildSubnetMappings() ([]SubnetMapping, string, error) {
	subnets := t.in.Subnets
	eips, eipsSet := t.p.StringList(annotations.EIPAllocations)
	if eipsSet {
		if t.scheme != SchemeInternetFacing {
			return nil, "", kindError(KindInvalid, annotations.EIPAllocations, "EIP allocations can only be set for internet facing load balancers")
		}
		if len(eips) != len(subnets) {
			return nil, "", kindError(KindInvalid, annotations.EIPAllocations, "count of EIP allocations (%d) and subnets (%d) must match", len(eips), len(subnets))
		}
		for _, e := range eips {
			if !strings.HasPrefix(e, "eipalloc-") {
				return nil, "", invalid(t.p, annotations.EIPAllocations, "%q is not an allocation ID (eipalloc-...)", e)
			}
		}
	}
	v4, v4Set, err := t.addressesPerSubnet(annotations.PrivateIPv4Addresses, "private IPv4 addresses", false)
	if err != nil {
		return nil, "", err
	}
	if v4Set && t.scheme != SchemeInternal {
		return nil, "", kindError(KindInvalid, annotations.PrivateIPv4Addresses, "private IPv4 addresses can only be set for internal load balancers")
	}
	v6, v6Set, err := t.addressesPerSubnet(annotations.IPv6Addresses, "IPv6 addresses", true)
	if err != nil {
		return nil, "", err
	}
	sourceNat, natPrefixes, err := t.buildSourceNat()
	if err != nil {
		return nil, "", err
	}
	mappings := make([]SubnetMapping, 0, len(subnets))
	for i, s := range subnets {
		m := SubnetMapping{SubnetID: s.ID}
		if eipsSet {
			m.AllocationID = eips[i]
		}
		if v4Set {
			m.PrivateIPv4Address = v4[i]
		}
		if v6Set {
			m.IPv6Address = v6[i]
		}
		if natPrefixes != nil {
			m.SourceNatIPv6Prefix = natPrefixes[i]
		}
		mappings = append(mappings, m)
	}
	return mappings, sourceNat, nil
}

// addressesPerSubnet reads a list of fixed addresses: as many as subnets, and exactly one
// inside each subnet; it returns them in subnet order.
func (t *task) addressesPerSubnet(suffix, what string, v6 bool) ([]string, bool, error) {
	raw, ok := t.p.StringList(suffix)
	if !ok {
		return nil, false, nil
	}
	if v6 && t.ipType != IPAddressTypeDualStack {
		return nil, true, kindError(KindInvalid, suffix, "IPv6 addresses can only be set for dualstack load balancers")
	}
	if len(raw) != len(t.in.Subnets) {
		return nil, true, kindError(KindInvalid, suffix, "count of %s (%d) and subnets (%d) must match", what, len(raw), len(t.in.Subnets))
	}
	addrs := make([]netip.Addr, 0, len(raw))
	for _, r := range raw {
		a, err := netip.ParseAddr(r)
		if err != nil || a.Is6() != v6 || a.Is4In6() {
			return nil, true, invalid(t.p, suffix, "%q is not a valid %s address", r, family(v6))
		}
		addrs = append(addrs, a)
	}
	out := make([]string, len(t.in.Subnets))
	for i, s := range t.in.Subnets {
		cidrs := []string{s.IPv4CIDR}
		if v6 {
			cidrs = s.IPv6CIDRs
		}
		var inside []netip.Addr
		for _, a := range addrs {
			if containedIn(a, cidrs) {
				inside = append(inside, a)
			}
		}
		if len(inside) != 1 {
			return nil, true, kindError(KindInvalid, suffix, "expect one %s configured for subnet %s, found %d", strings.TrimSuffix(what, "es"), s.ID, len(inside))
		}
		out[i] = inside[0].String()
	}
	return out, true, nil
}

// buildSourceNat reads the IPv6 source-NAT annotations (dualstack load balancers with UDP).
func (t *task) buildSourceNat() (string, []string, error) {
	enable, enableSet, err := t.p.Enum(annotations.EnablePrefixForIPv6SourceNat, "on", "off")
	if err != nil {
		return "", nil, fromAnnotation(err)
	}
	if enable == "on" {
		if t.ipType != IPAddressTypeDualStack {
			return "", nil, kindError(KindInvalid, annotations.EnablePrefixForIPv6SourceNat, "enable-prefix-for-ipv6-source-nat annotation is only applicable to Network Load Balancers using Dualstack IP address type")
		}
	}
	prefixes, ok := t.p.StringList(annotations.SourceNatIPv6Prefixes)
	if !ok {
		if !enableSet {
			return "", nil, nil
		}
		return enable, nil, nil
	}
	switch {
	case t.ipType != IPAddressTypeDualStack:
		return "", nil, kindError(KindInvalid, annotations.SourceNatIPv6Prefixes, "source-nat-ipv6-prefixes annotation can only be set for Network Load Balancers using Dualstack IP address type")
	case enable != "on":
		return "", nil, kindError(KindInvalid, annotations.SourceNatIPv6Prefixes, "source-nat-ipv6-prefixes annotation is only applicable if enable-prefix-for-ipv6-source-nat annotation is set to on")
	case len(prefixes) != len(t.in.Subnets):
		return "", nil, kindError(KindInvalid, annotations.SourceNatIPv6Prefixes, "number of values in source-nat-ipv6-prefixes (%d) must match the number of subnets (%d)", len(prefixes), len(t.in.Subnets))
	}
	for i, raw := range prefixes {
		if raw == "auto_assigned" {
			continue
		}
		pfx, err := netip.ParsePrefix(raw)
		if err != nil || !pfx.Addr().Is6() || pfx.Addr().Is4In6() {
			return "", nil, invalid(t.p, annotations.SourceNatIPv6Prefixes, "%q is not an IPv6 CIDR or auto_assigned", raw)
		}
		if pfx.Bits() != 80 {
			return "", nil, invalid(t.p, annotations.SourceNatIPv6Prefixes, "%q: prefix length must be 80", raw)
		}
		if !containedIn(pfx.Addr(), t.in.Subnets[i].IPv6CIDRs) {
			return "", nil, invalid(t.p, annotations.SourceNatIPv6Prefixes, "%q is not within subnet %s's IPv6 CIDRs", raw, t.in.Subnets[i].ID)
		}
	}
	return enable, prefixes, nil
}

func family(v6 bool) string {
	if v6 {
		return "IPv6"
	}
	return "IPv4"
}

func containedIn(a netip.Addr, cidrs []string) bool {
	for _, c := range cidrs {
		if p, err := netip.ParsePrefix(c); err == nil && p.Contains(a) {
			return true
		}
	}
	return false
}

// checkAttributes validates attributes against what AWS accepts, naming the annotation.
func checkAttributes(p annotations.Parser, suffix string, attrs map[string]string, checks map[string]nlbattr.Check, what string) error {
	for _, k := range slices.Sorted(maps.Keys(attrs)) {
		check, ok := checks[k]
		if !ok {
			return invalid(p, suffix, "%q is not a %s attribute", k, what)
		}
		if msg := check(attrs[k]); msg != "" {
			return invalid(p, suffix, "%s=%q: the value must be %s", k, attrs[k], msg)
		}
	}
	return nil
}

func sortedAttributes(m map[string]string) []Attribute {
	if len(m) == 0 {
		return nil
	}
	out := make([]Attribute, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, Attribute{Key: k, Value: m[k]})
	}
	return out
}

func parseBool(s string) (bool, error) { return strconv.ParseBool(s) }

// validateTag checks a tag as AWS does.
func validateTag(k, v string) error {
	switch {
	case len(k) == 0 || len(k) > 128:
		return fmt.Errorf("tag key %q must have 1 to 128 characters", k)
	case len(v) > 256:
		return fmt.Errorf("tag %q: the value must have at most 256 characters", k)
	case strings.HasPrefix(strings.ToLower(k), "aws:"):
		return fmt.Errorf("tag key %q: the aws: prefix is reserved", k)
	}
	return nil
}
