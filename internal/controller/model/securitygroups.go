package model

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/moatlb/moat/internal/controller/annotations"
)

// ManagedSecurityGroupDescription is the managed frontend group's description.
const ManagedSecurityGroupDescription = "[k8s] Managed SecurityGroup for LoadBalancer"

// sgDecision is the outcome of the AWS controller's buildLoadBalancerSecurityGroups decision.
type sgDecision struct {
	mode       SecurityGroupMode
	userGroups []string // entries of the security-groups annotation (IDs or Name tags)
	// backend: the shared backend group is attached last and is the source of backend rules.
	backend bool
}

// decideSecurityGroups follows lbc-behaviour.md §2.1: an existing load balancer without groups
// stays without; gate NLBSecurityGroup off or disable-nlb-sg gives none (a conflict if the
// existing load balancer has groups); no security-groups annotation gives a managed frontend
// group plus the backend group (if enabled); otherwise the named groups, plus the backend group
// when backend rules are managed.
func (t *task) decideSecurityGroups() error {
	existing := t.in.ExistingLoadBalancer
	disabled, _, err := t.p.Bool(annotations.DisableNLBSecurityGroup)
	if err != nil {
		return fromAnnotation(err)
	}
	manage, manageSet, err := t.p.Bool(annotations.ManageBackendSecurityGroupRules)
	if err != nil {
		return fromAnnotation(err)
	}
	switch {
	case existing != nil && len(existing.SecurityGroups) == 0:
		t.sg = sgDecision{mode: SecurityGroupsNone}
	case !t.cfg.FeatureGates.Enabled(GateNLBSecurityGroup) || disabled:
		if existing != nil {
			why := "feature gate NLBSecurityGroup is off"
			suffix := ""
			if disabled {
				why, suffix = "security groups are disabled by annotation", annotations.DisableNLBSecurityGroup
			}
			return kindError(KindConflict, suffix, "conflicting security groups configuration: %s but the existing load balancer has security groups, which AWS cannot remove", why)
		}
		t.sg = sgDecision{mode: SecurityGroupsNone}
	default:
		groups, _ := t.p.StringList(annotations.SecurityGroups)
		if len(groups) == 0 {
			t.sg = sgDecision{mode: SecurityGroupsManaged, backend: t.cfg.EnableBackendSecurityGroup}
			break
		}
		if !manageSet {
			manage = t.cfg.EnableManageBackendSecurityGroupRules
		}
		if manage && !t.cfg.EnableBackendSecurityGroup {
			return kindError(KindConflict, annotations.ManageBackendSecurityGroupRules,
				"backendSG feature is required to manage worker node SG rules when frontendSG is manually specified (--enable-backend-security-group is false)")
		}
		t.sg = sgDecision{mode: SecurityGroupsUser, userGroups: groups, backend: manage}
	}
	return nil
}

// buildSecurityGroups returns the load balancer's groups in order, creating the managed group
// and recording the source of backend rules.
func (t *task) buildSecurityGroups() ([]Token, error) {
	var groups []Token
	switch t.sg.mode {
	case SecurityGroupsNone:
		return nil, nil
	case SecurityGroupsManaged:
		sg, err := t.buildManagedSecurityGroup()
		if err != nil {
			return nil, err
		}
		t.stack.ManagedSecurityGroup = sg
		groups = append(groups, ManagedSecurityGroupIDRef)
		if !t.sg.backend {
			// Without the backend group, node rules come from the managed group itself.
			src := ManagedSecurityGroupIDRef
			t.backendSource = &src
		}
	case SecurityGroupsUser:
		ids, err := t.resolveUserSecurityGroups()
		if err != nil {
			return nil, err
		}
		for _, id := range ids {
			groups = append(groups, Literal(id))
		}
	}
	if t.sg.backend {
		id := t.cfg.BackendSecurityGroup
		if id == "" {
			id = t.in.BackendSecurityGroupID
		}
		if id == "" {
			return nil, missing("the backend security group's ID was not resolved (Resolved.BackendSecurityGroupID)")
		}
		if slices.ContainsFunc(groups, func(g Token) bool { return g.Literal == id }) {
			return nil, kindError(KindConflict, annotations.SecurityGroups, "security group %s is the cluster's shared backend group and cannot also be a frontend group", id)
		}
		t.stack.BackendSecurityGroup = backendSecurityGroup(t.cfg, id)
		src := Literal(id)
		t.backendSource = &src
		groups = append(groups, src)
	}
	if limit := t.cfg.Quotas.securityGroupsPerLoadBalancer(); len(groups) > limit {
		suffix := annotations.SecurityGroups
		if t.sg.mode == SecurityGroupsManaged {
			suffix = ""
		}
		return nil, kindError(KindQuota, suffix, "the load balancer would have %d security groups; AWS allows %d", len(groups), limit)
	}
	return groups, nil
}

// resolveUserSecurityGroups turns the annotation's IDs and Name tags into IDs: IDs first, in
// annotation order, then the groups found for each name (as the AWS controller's resolver
// orders them), without duplicates.
func (t *task) resolveUserSecurityGroups() ([]string, error) {
	var ids []string
	add := func(id string) {
		if !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	for _, g := range t.sg.userGroups {
		if isSecurityGroupID(g) {
			add(g)
		}
	}
	for _, g := range t.sg.userGroups {
		if isSecurityGroupID(g) {
			continue
		}
		found, ok := t.in.SecurityGroupsByName[g]
		if !ok {
			return nil, missing("security group name %q from annotation %s was not resolved (Resolved.SecurityGroupsByName)", g, annotations.Key(annotations.SecurityGroups))
		}
		if len(found) == 0 {
			return nil, invalid(t.p, annotations.SecurityGroups, "no security group in VPC %s has Name tag %q", t.cfg.VPCID, g)
		}
		for _, id := range found {
			add(id)
		}
	}
	return ids, nil
}

func isSecurityGroupID(s string) bool { return strings.HasPrefix(s, "sg-") }

// buildManagedSecurityGroup builds the frontend group the controller owns: one inbound rule
// per (Service port × source CIDR) and per (Service port × prefix list), on the listener port,
// with the port's protocol; ICMP path-MTU rules when asked.
func (t *task) buildManagedSecurityGroup() (*SecurityGroup, error) {
	perms, err := t.buildManagedIngress()
	if err != nil {
		return nil, err
	}
	return &SecurityGroup{
		ResourceID:  ResourceIDManagedSecurityGroup,
		GroupName:   ManagedSecurityGroupName(t.cfg.ClusterName, t.svc.Namespace, t.svc.Name, string(t.svc.UID)),
		Description: ManagedSecurityGroupDescription,
		Tags:        t.resourceTags(ResourceIDManagedSecurityGroup),
		Ingress:     perms,
	}, nil
}

func (t *task) buildManagedIngress() ([]IPPermission, error) {
	prefixLists, prefixListsSet := t.p.StringList(annotations.SecurityGroupPrefixLists)
	for _, pl := range prefixLists {
		if !strings.HasPrefix(pl, "pl-") {
			return nil, invalid(t.p, annotations.SecurityGroupPrefixLists, "%q is not a managed prefix list ID (pl-...)", pl)
		}
	}
	icmp, _, err := t.p.Enum(annotations.EnableICMPForPathMTUDiscovery, "on", "off")
	if err != nil {
		return nil, fromAnnotation(err)
	}
	cidrs := t.sourceRanges
	for _, c := range cidrs {
		if isIPv6CIDR(c) && t.ipType != IPAddressTypeDualStack {
			return nil, t.rangesError("unsupported v6 cidr %s when lb is not dualstack (set %s to dualstack)", c, annotations.Key(annotations.IPAddressType))
		}
	}
	if len(cidrs) == 0 && !prefixListsSet {
		// The default is open to all, internal or not.
		cidrs = []string{"0.0.0.0/0"}
		if t.ipType == IPAddressTypeDualStack {
			cidrs = append(cidrs, "::/0")
		}
	}
	var perms []IPPermission
	add := func(p IPPermission) {
		// EC2 holds each permission once; the AWS controller repeats the ICMP rule per port.
		if !slices.ContainsFunc(perms, func(q IPPermission) bool { return samePermission(p, q) }) {
			perms = append(perms, p)
		}
	}
	for _, port := range t.svc.Spec.Ports {
		proto := strings.ToLower(string(servicePortProtocol(port)))
		for _, c := range cidrs {
			if isIPv6CIDR(c) {
				add(IPPermission{IPProtocol: proto, FromPort: port.Port, ToPort: port.Port, IPv6Ranges: []IPv6Range{{CIDRIPv6: c}}})
				if icmp == "on" {
					add(IPPermission{IPProtocol: "icmpv6", FromPort: 2, ToPort: 0, IPv6Ranges: []IPv6Range{{CIDRIPv6: c}}})
				}
				continue
			}
			add(IPPermission{IPProtocol: proto, FromPort: port.Port, ToPort: port.Port, IPRanges: []IPRange{{CIDRIP: c}}})
			if icmp == "on" {
				add(IPPermission{IPProtocol: "icmp", FromPort: 3, ToPort: 4, IPRanges: []IPRange{{CIDRIP: c}}})
			}
		}
		for _, pl := range prefixLists {
			add(IPPermission{IPProtocol: proto, FromPort: port.Port, ToPort: port.Port, PrefixLists: []PrefixList{{ListID: pl}}})
		}
	}
	if err := t.checkRuleQuota(perms); err != nil {
		return nil, err
	}
	return perms, nil
}

// checkRuleQuota counts inbound rules as AWS does: IPv4 and IPv6 separately, a prefix list as
// its max entries when known.
func (t *task) checkRuleQuota(perms []IPPermission) error {
	var v4, v6 int
	for _, p := range perms {
		v4 += len(p.IPRanges)
		v6 += len(p.IPv6Ranges)
		for _, pl := range p.PrefixLists {
			if n := t.in.PrefixListMaxEntries[pl.ListID]; n > 0 {
				v4 += n
			} else {
				v4++
			}
		}
	}
	limit := t.cfg.Quotas.inboundRulesPerSecurityGroup()
	if v4 <= limit && v6 <= limit {
		return nil
	}
	n, family := v4, "IPv4"
	if v6 > limit {
		n, family = v6, "IPv6"
	}
	e := t.rangesError("the managed security group would have %d %s inbound rules (ports × source ranges); AWS allows %d per group: use fewer ranges, a prefix list (%s) or your own groups (%s)",
		n, family, limit, annotations.Key(annotations.SecurityGroupPrefixLists), annotations.Key(annotations.SecurityGroups))
	e.Kind, e.Value = KindQuota, ""
	return e
}

// rangesError is an error about the source ranges, naming where they came from.
func (t *task) rangesError(format string, args ...any) *Error {
	e := &Error{Kind: KindInvalid, Reason: fmt.Sprintf(format, args...)}
	if t.rangesFrom == annotations.Key(annotations.SourceRanges) {
		e.Annotation = t.rangesFrom
	} else if t.rangesFrom != "" {
		e.Field = t.rangesFrom
	}
	return e
}

func samePermission(a, b IPPermission) bool {
	return a.IPProtocol == b.IPProtocol && a.FromPort == b.FromPort && a.ToPort == b.ToPort &&
		slices.Equal(a.IPRanges, b.IPRanges) && slices.Equal(a.IPv6Ranges, b.IPv6Ranges) && slices.Equal(a.PrefixLists, b.PrefixLists)
}

func isIPv6CIDR(c string) bool {
	p, err := netip.ParsePrefix(c)
	return err == nil && p.Addr().Is6()
}
