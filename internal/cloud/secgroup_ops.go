package cloud

import (
	"encoding/base64"
	"slices"
	"strconv"
	"strings"

	"github.com/moatlb/moat/internal/store"
)

func defaultVPC(tx store.Tx) (string, error) {
	vpcs, err := store.ListShared[VPC](tx, bucketVPCs)
	if err != nil {
		return "", err
	}
	for _, v := range vpcs {
		if v.Default {
			return v.ID, nil
		}
	}
	return "", errorf("VPCIdNotSpecified", "No default VPC for this user. GroupName is only supported for EC2-Classic and default VPC.")
}

// validateEC2Tags applies EC2's tag rules: keys 1-128 characters not starting with aws:, values
// up to 256.
func validateEC2Tags(tags []Tag) error {
	for _, t := range tags {
		if t.Key == "" || len(t.Key) > 128 {
			return errorf("InvalidParameterValue", "Tag key must be between 1 and 128 characters: '%s'", t.Key)
		}
		if len(t.Value) > 256 {
			return errorf("InvalidParameterValue", "Tag value for key '%s' exceeds 256 characters", t.Key)
		}
		if strings.HasPrefix(strings.ToLower(t.Key), "aws:") {
			return errorf("InvalidParameterValue", "Tag keys starting with 'aws:' are reserved for internal use")
		}
	}
	return nil
}

func (c *Cloud) mergeTags(existing Tags, add []Tag) (Tags, error) {
	if err := validateEC2Tags(add); err != nil {
		return nil, err
	}
	out, ok := c.upsertTags(existing, add)
	if !ok {
		return nil, errorf("TagLimitExceeded", "The maximum number of tags (%d) for a resource has been reached.", c.cfg.Quotas.TagsPerResource)
	}
	return out, nil
}

// CreateSecurityGroup creates a group with no inbound rules and one outbound rule allowing all
// traffic, as EC2 does. An empty vpcID means the default VPC.
func (c *Cloud) CreateSecurityGroup(name, description, vpcID string, tags []Tag) (SecurityGroup, error) {
	switch {
	case name == "":
		return SecurityGroup{}, errorf("MissingParameter", "The request must contain the parameter GroupName")
	case description == "":
		return SecurityGroup{}, errorf("MissingParameter", "The request must contain the parameter GroupDescription")
	case len(name) > 255 || !ec2TextPattern.MatchString(name):
		return SecurityGroup{}, errorf("InvalidParameterValue", "Value (%s) for parameter GroupName is invalid. Character sets beyond ASCII are not supported; names are up to 255 characters of a-zA-Z0-9 ._-:/()#,@[]+=&;{}!$*", name)
	case strings.HasPrefix(strings.ToLower(name), "sg-"):
		return SecurityGroup{}, errorf("InvalidParameterValue", "Group names may not be in the format sg-*")
	case len(description) > 255 || !ec2TextPattern.MatchString(description):
		return SecurityGroup{}, errorf("InvalidParameterValue", "Value (%s) for parameter GroupDescription is invalid. Character sets beyond ASCII are not supported.", description)
	}
	var sg SecurityGroup
	err := c.store.Update(func(tx store.Tx) error {
		if vpcID == "" {
			id, err := defaultVPC(tx)
			if err != nil {
				return err
			}
			vpcID = id
		}
		vpc, err := store.LoadShared[VPC](tx, bucketVPCs, vpcID)
		if err == store.ErrNotFound {
			return errorf("InvalidVpcID.NotFound", "The vpc ID '%s' does not exist", vpcID)
		} else if err != nil {
			return err
		}
		groups, err := c.groupIndex(tx)
		if err != nil {
			return err
		}
		if _, ok := groups.byNameIn(vpcID, name); ok {
			return errorf("InvalidGroup.Duplicate", "The security group '%s' already exists for VPC '%s'", name, vpcID)
		}
		if groups.countIn(vpcID) >= c.cfg.Quotas.SecurityGroupsPerVPC {
			return errorf("SecurityGroupLimitExceeded", "The maximum number of security groups for VPC '%s' has been reached.", vpcID)
		}
		t, err := c.mergeTags(nil, tags)
		if err != nil {
			return err
		}
		sg = SecurityGroup{ID: newID("sg"), Name: name, Description: description, VPCID: vpcID, Tags: t}
		sg.Egress = []Rule{{ID: newID("sgr"), Protocol: "-1", FromPort: -1, ToPort: -1, CIDRv4: "0.0.0.0/0"}}
		if vpc.IPv6CIDR != "" {
			sg.Egress = append(sg.Egress, Rule{ID: newID("sgr"), Protocol: "-1", FromPort: -1, ToPort: -1, CIDRv6: "::/0"})
		}
		return store.Save(tx, bucketSecurityGroups, sg.ID, sg)
	})
	return sg, err
}

// Page asks for one page of a paginated Describe. MaxResults 0 means all.
type Page struct {
	MaxResults int
	NextToken  string
}

// paginate cuts items, sorted by key, at the page; tokens are the opaque encoding of the last key.
func paginate[T any](items []T, key func(T) string, p Page, lo, hi int) ([]T, string, error) {
	start := 0
	if p.NextToken != "" {
		raw, err := base64.RawURLEncoding.DecodeString(p.NextToken)
		if err != nil {
			return nil, "", errorf("InvalidParameterValue", "Invalid value '%s' for nextToken", p.NextToken)
		}
		start = len(items)
		for i, it := range items {
			if key(it) > string(raw) {
				start = i
				break
			}
		}
	}
	if p.MaxResults == 0 {
		return items[start:], "", nil
	}
	if p.MaxResults < lo || p.MaxResults > hi {
		return nil, "", errorf("InvalidParameterValue", "Value ( %d ) for parameter maxResults is invalid. Parameter must be between %d and %d.", p.MaxResults, lo, hi)
	}
	end := min(start+p.MaxResults, len(items))
	next := ""
	if end < len(items) {
		next = base64.RawURLEncoding.EncodeToString([]byte(key(items[end-1])))
	}
	return items[start:end], next, nil
}

// DescribeSecurityGroups lists groups by ID, by name (default VPC), and by filters, one page at a
// time when MaxResults is set.
func (c *Cloud) DescribeSecurityGroups(ids, names []string, filters []Filter, page Page) ([]SecurityGroup, string, error) {
	if (len(ids) > 0 || len(names) > 0) && (page.MaxResults != 0 || page.NextToken != "") {
		return nil, "", errorf("InvalidParameterCombination", "The parameter groupName or groupId cannot be used with the parameter maxResults")
	}
	var out []SecurityGroup
	err := c.store.View(func(tx store.Tx) error {
		var selected []SecurityGroup
		if len(ids) == 0 && len(names) == 0 {
			groups, err := c.groupIndex(tx)
			if err != nil {
				return err
			}
			selected = groups.candidates(filters)
		} else {
			for _, id := range dedupe(ids) {
				sg, err := peekGroup(tx, id)
				if err != nil {
					return err
				}
				selected = append(selected, sg)
			}
			for _, name := range dedupe(names) {
				sg, err := c.peekResolveGroup(tx, GroupRef{Name: name})
				if err != nil {
					return err
				}
				if !slices.ContainsFunc(selected, func(g SecurityGroup) bool { return g.ID == sg.ID }) {
					selected = append(selected, sg)
				}
			}
		}
		for _, sg := range selected {
			ok, err := c.matchGroup(tx, sg, filters)
			if err != nil {
				return err
			}
			if ok {
				out = append(out, sg)
			}
		}
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	return paginate(out, func(g SecurityGroup) string { return g.ID }, page, 5, 1000)
}

func (c *Cloud) matchGroup(tx store.Tx, sg SecurityGroup, filters []Filter) (bool, error) {
	for _, f := range filters {
		ok, err := c.matchGroupFilter(tx, sg, f)
		if err != nil || !ok {
			return false, err
		}
	}
	return true, nil
}

func (c *Cloud) matchGroupFilter(tx store.Tx, sg SecurityGroup, f Filter) (bool, error) {
	if m, ok := matchTagFilter(f, sg.Tags); ok {
		return m, nil
	}
	switch f.Name {
	case "group-id":
		return matchValue(f.Values, sg.ID), nil
	case "group-name":
		return matchValue(f.Values, sg.Name), nil
	case "vpc-id":
		return matchValue(f.Values, sg.VPCID), nil
	case "description":
		return matchValue(f.Values, sg.Description), nil
	case "owner-id":
		return matchValue(f.Values, c.cfg.AccountID), nil
	}
	rules := sg.Ingress
	name := f.Name
	if rest, ok := strings.CutPrefix(name, "egress."); ok {
		rules, name = sg.Egress, rest
	}
	field, ok := strings.CutPrefix(name, "ip-permission.")
	if !ok {
		return false, unknownFilter(f.Name)
	}
	var get func(Rule) (string, bool)
	switch field {
	case "cidr":
		get = func(r Rule) (string, bool) { return r.CIDRv4, r.CIDRv4 != "" }
	case "ipv6-cidr":
		get = func(r Rule) (string, bool) { return r.CIDRv6, r.CIDRv6 != "" }
	case "group-id":
		get = func(r Rule) (string, bool) { return r.GroupID, r.GroupID != "" }
	case "group-name":
		get = func(r Rule) (string, bool) {
			if r.GroupID == "" {
				return "", false
			}
			g, err := store.LoadShared[SecurityGroup](tx, bucketSecurityGroups, r.GroupID)
			return g.Name, err == nil
		}
	case "prefix-list-id":
		get = func(r Rule) (string, bool) { return r.PrefixListID, r.PrefixListID != "" }
	case "protocol":
		get = func(r Rule) (string, bool) { return r.Protocol, true }
	case "from-port":
		get = func(r Rule) (string, bool) { return strconv.Itoa(r.FromPort), true }
	case "to-port":
		get = func(r Rule) (string, bool) { return strconv.Itoa(r.ToPort), true }
	case "user-id":
		get = func(r Rule) (string, bool) { return c.cfg.AccountID, r.GroupID != "" }
	default:
		return false, unknownFilter(f.Name)
	}
	for _, r := range rules {
		if v, ok := get(r); ok && matchValue(f.Values, v) {
			return true, nil
		}
	}
	return false, nil
}

// DeleteSecurityGroup deletes a group that nothing uses: no load balancer, no interface and no
// other group's rule may reference it (DependencyViolation), and a VPC's default group stays.
func (c *Cloud) DeleteSecurityGroup(ref GroupRef) (string, error) {
	var id string
	err := c.store.Update(func(tx store.Tx) error {
		sg, err := c.peekResolveGroup(tx, ref)
		if err != nil {
			return err
		}
		id = sg.ID
		if sg.Name == "default" {
			return errorf("CannotDelete", "the specified group: \"%s\" name: \"default\" cannot be deleted by a user", sg.ID)
		}
		dependent := errorf("DependencyViolation", "resource %s has a dependent object", sg.ID)
		lbs, err := c.lbIndex(tx)
		if err != nil {
			return err
		}
		if lbs.groupInUse(sg.ID) {
			return dependent
		}
		enis, err := store.ListShared[NetworkInterface](tx, bucketInterfaces)
		if err != nil {
			return err
		}
		for _, eni := range enis {
			if slices.Contains(eni.Groups, sg.ID) {
				return dependent
			}
		}
		groups, err := c.groupIndex(tx)
		if err != nil {
			return err
		}
		if len(groups.referrersOf(sg.ID)) > 0 {
			return dependent
		}
		return tx.Delete(bucketSecurityGroups, sg.ID)
	})
	return id, err
}

// ruleWeight is how much of the rules-per-group quota a rule uses: a prefix list counts as its
// maximum number of entries, as on AWS.
func ruleWeight(tx store.Tx, r Rule) int {
	if r.PrefixListID == "" {
		return 1
	}
	pl, err := store.LoadShared[PrefixList](tx, bucketPrefixLists, r.PrefixListID)
	if err != nil || pl.MaxEntries < 1 {
		return 1
	}
	return pl.MaxEntries
}

// AuthorizeRules adds rules to a group's inbound (egress false) or outbound rules. All or
// nothing: a duplicate (of an existing rule or within the request) or a quota overflow adds none.
func (c *Cloud) AuthorizeRules(ref GroupRef, egress bool, perms []Permission, ruleTags []Tag) (SecurityGroup, []Rule, error) {
	if len(perms) == 0 {
		return SecurityGroup{}, nil, errorf("MissingParameter", "The request must contain the parameter ipPermissions")
	}
	if err := validateEC2Tags(ruleTags); err != nil {
		return SecurityGroup{}, nil, err
	}
	var sg SecurityGroup
	var added []Rule
	err := c.store.Update(func(tx store.Tx) (err error) {
		if sg, err = c.resolveGroup(tx, ref); err != nil {
			return err
		}
		rules := &sg.Ingress
		limit := c.cfg.Quotas.InboundRulesPerGroup
		if egress {
			rules, limit = &sg.Egress, c.cfg.Quotas.OutboundRulesPerGroup
		}
		for _, p := range perms {
			expanded, err := expandPermission(tx, p, sg.VPCID)
			if err != nil {
				return err
			}
			for _, r := range expanded {
				if slices.ContainsFunc(*rules, func(e Rule) bool { return sameRule(e, r) }) {
					return errorf("InvalidPermission.Duplicate", "the specified rule \"%s\" already exists", describeRule(r))
				}
				r.ID = newID("sgr")
				if len(ruleTags) > 0 {
					r.Tags, _ = c.mergeTags(nil, ruleTags)
				}
				*rules = append(*rules, r)
				added = append(added, r)
			}
		}
		// IPv4 and IPv6 rules have separate quotas on AWS.
		var v4, v6 int
		for _, r := range *rules {
			if r.CIDRv6 != "" {
				v6 += ruleWeight(tx, r)
			} else {
				v4 += ruleWeight(tx, r)
			}
		}
		if v4 > limit || v6 > limit {
			return errorf("RulesPerSecurityGroupLimitExceeded", "The maximum number of rules per security group has been reached.")
		}
		return store.Save(tx, bucketSecurityGroups, sg.ID, sg)
	})
	if err != nil {
		return SecurityGroup{}, nil, err
	}
	return sg, added, nil
}

// RevokeRules removes rules named by permission (matched exactly on protocol, ports and peer;
// descriptions ignored) or by rule ID. If any is not found, nothing is revoked.
func (c *Cloud) RevokeRules(ref GroupRef, egress bool, perms []Permission, ruleIDs []string) (SecurityGroup, []Rule, error) {
	if len(perms) == 0 && len(ruleIDs) == 0 {
		return SecurityGroup{}, nil, errorf("MissingParameter", "The request must contain the parameter ipPermissions or securityGroupRuleIds")
	}
	var sg SecurityGroup
	var revoked []Rule
	err := c.store.Update(func(tx store.Tx) (err error) {
		if sg, err = c.resolveGroup(tx, ref); err != nil {
			return err
		}
		rules := &sg.Ingress
		if egress {
			rules = &sg.Egress
		}
		take := func(match func(Rule) bool) bool {
			i := slices.IndexFunc(*rules, match)
			if i < 0 {
				return false
			}
			revoked = append(revoked, (*rules)[i])
			*rules = slices.Delete(*rules, i, i+1)
			return true
		}
		for _, p := range perms {
			expanded, err := expandPermission(tx, p, sg.VPCID)
			if err != nil {
				return err
			}
			for _, r := range expanded {
				if !take(func(e Rule) bool { return sameRule(e, r) }) {
					return errorf("InvalidPermission.NotFound", "The specified rule does not exist in this security group.")
				}
			}
		}
		for _, id := range ruleIDs {
			if !take(func(e Rule) bool { return e.ID == id }) {
				return errorf("InvalidSecurityGroupRuleId.NotFound", "The security group rule ID '%s' does not exist", id)
			}
		}
		return store.Save(tx, bucketSecurityGroups, sg.ID, sg)
	})
	if err != nil {
		return SecurityGroup{}, nil, err
	}
	return sg, revoked, nil
}

// RuleDescription names a rule by ID and gives its new description.
type RuleDescription struct {
	RuleID, Description string
}

// UpdateRuleDescriptions sets the descriptions of existing rules, named by permission (each peer
// carries its new description; none clears it) or by rule ID, without re-creating them. If any is
// not found, nothing changes.
func (c *Cloud) UpdateRuleDescriptions(ref GroupRef, egress bool, perms []Permission, byID []RuleDescription) error {
	if len(perms) == 0 && len(byID) == 0 {
		return errorf("MissingParameter", "The request must contain the parameter ipPermissions or securityGroupRuleDescriptions")
	}
	for _, d := range byID {
		if err := checkRuleDescription(d.Description); err != nil {
			return err
		}
	}
	return c.store.Update(func(tx store.Tx) error {
		sg, err := c.resolveGroup(tx, ref)
		if err != nil {
			return err
		}
		rules := sg.Ingress
		if egress {
			rules = sg.Egress
		}
		describe := func(match func(Rule) bool, description string, notFound *Error) error {
			i := slices.IndexFunc(rules, match)
			if i < 0 {
				return notFound
			}
			rules[i].Description = description
			return nil
		}
		for _, p := range perms {
			expanded, err := expandPermission(tx, p, sg.VPCID)
			if err != nil {
				return err
			}
			for _, r := range expanded {
				if err := describe(func(e Rule) bool { return sameRule(e, r) }, r.Description,
					errorf("InvalidPermission.NotFound", "The specified rule does not exist in this security group.")); err != nil {
					return err
				}
			}
		}
		for _, d := range byID {
			if err := describe(func(e Rule) bool { return e.ID == d.RuleID }, d.Description,
				errorf("InvalidSecurityGroupRuleId.NotFound", "The security group rule ID '%s' does not exist", d.RuleID)); err != nil {
				return err
			}
		}
		return store.Save(tx, bucketSecurityGroups, sg.ID, sg)
	})
}

// GroupRule is a rule with the group it belongs to, as DescribeSecurityGroupRules lists them.
type GroupRule struct {
	Rule
	GroupID string
	Egress  bool
}

// DescribeSecurityGroupRules lists rules one by one (not grouped), by ID and by filters group-id,
// security-group-rule-id, tag:<k> and tag-key.
func (c *Cloud) DescribeSecurityGroupRules(ids []string, filters []Filter, page Page) ([]GroupRule, string, error) {
	var all []GroupRule
	if err := c.store.View(func(tx store.Tx) error {
		groups, err := store.ListShared[SecurityGroup](tx, bucketSecurityGroups)
		for _, sg := range groups {
			for _, r := range sg.Ingress {
				all = append(all, GroupRule{Rule: r, GroupID: sg.ID})
			}
			for _, r := range sg.Egress {
				all = append(all, GroupRule{Rule: r, GroupID: sg.ID, Egress: true})
			}
		}
		return err
	}); err != nil {
		return nil, "", err
	}
	slices.SortFunc(all, func(a, b GroupRule) int { return strings.Compare(a.ID, b.ID) })
	var out []GroupRule
	for _, r := range all {
		if len(ids) > 0 && !slices.Contains(ids, r.ID) {
			continue
		}
		keep := true
		for _, f := range filters {
			m, isTag := matchTagFilter(f, r.Tags)
			switch {
			case isTag:
			case f.Name == "group-id":
				m = matchValue(f.Values, r.GroupID)
			case f.Name == "security-group-rule-id":
				m = matchValue(f.Values, r.ID)
			default:
				return nil, "", unknownFilter(f.Name)
			}
			keep = keep && m
		}
		if keep {
			out = append(out, r)
		}
	}
	for _, id := range ids {
		if !slices.ContainsFunc(all, func(r GroupRule) bool { return r.ID == id }) {
			return nil, "", errorf("InvalidSecurityGroupRuleId.NotFound", "The security group rule ID '%s' does not exist", id)
		}
	}
	return paginate(out, func(r GroupRule) string { return r.ID }, page, 5, 1000)
}
