package awsapi

import (
	"context"
	"strconv"

	"github.com/moatlb/moat/internal/awsapi/wire"
	"github.com/moatlb/moat/internal/cloud"
)

func (s *Server) ec2Handlers() map[string]handler {
	return map[string]handler{
		"CreateSecurityGroup":                        ec2op(s.createSecurityGroup),
		"DescribeSecurityGroups":                     ec2op(s.describeSecurityGroups),
		"DeleteSecurityGroup":                        ec2op(s.deleteSecurityGroup),
		"AuthorizeSecurityGroupIngress":              ec2op(s.authorizeIngress),
		"AuthorizeSecurityGroupEgress":               ec2op(s.authorizeEgress),
		"RevokeSecurityGroupIngress":                 ec2op(s.revokeIngress),
		"RevokeSecurityGroupEgress":                  ec2op(s.revokeEgress),
		"UpdateSecurityGroupRuleDescriptionsIngress": ec2op(s.updateDescriptionsIngress),
		"UpdateSecurityGroupRuleDescriptionsEgress":  ec2op(s.updateDescriptionsEgress),
		"DescribeSecurityGroupRules":                 ec2op(s.describeSecurityGroupRules),
		"CreateTags":                                 ec2op(s.createTags),
		"CreateVpc":                                  ec2op(s.createVpc),
		"DeleteVpc":                                  ec2op(s.deleteVpc),
		"DescribeVpcAttribute":                       ec2op(s.describeVpcAttribute),
		"ModifyVpcAttribute":                         ec2op(s.modifyVpcAttribute),
		"CreateSubnet":                               ec2op(s.createSubnet),
		"DeleteSubnet":                               ec2op(s.deleteSubnet),
		"ModifySubnetAttribute":                      ec2op(s.modifySubnetAttribute),
		"AssociateVpcCidrBlock":                      ec2op(s.associateVpcCidrBlock),
		"DisassociateVpcCidrBlock":                   ec2op(s.disassociateVpcCidrBlock),
		"AssociateSubnetCidrBlock":                   ec2op(s.associateSubnetCidrBlock),
		"DisassociateSubnetCidrBlock":                ec2op(s.disassociateSubnetCidrBlock),
		"DeleteTags":                                 ec2op(s.deleteTags),
		"DescribeVpcs":                               ec2op(s.describeVpcs),
		"DescribeSubnets":                            ec2op(s.describeSubnets),
		"DescribeRouteTables":                        ec2op(s.describeRouteTables),
		"DescribeAvailabilityZones":                  ec2op(s.describeAvailabilityZones),
		"DescribeInstances":                          ec2op(s.describeInstances),
		"DescribeNetworkInterfaces":                  ec2op(s.describeNetworkInterfaces),
		"ModifyNetworkInterfaceAttribute":            ec2op(s.modifyNetworkInterfaceAttribute),
		"DescribeManagedPrefixLists":                 ec2op(s.describeManagedPrefixLists),
		"GetManagedPrefixListEntries":                ec2op(s.getManagedPrefixListEntries),
	}
}

func ec2op[In any](fn func(ctx context.Context, in *In) (any, error)) handler {
	return op(wire.FlatLists, fn)
}

// Request pieces shared by several EC2 actions (ec2Query wire names).

type ec2Filter struct {
	Name   string
	Values []string `query:"Value"`
}

type ec2Tag struct {
	Key   string `xml:"key"`
	Value string `xml:"value"`
}

type ec2TagSpec struct {
	ResourceType string
	Tags         []ec2Tag `query:"Tag"`
}

type ec2Permission struct {
	IpProtocol       string
	FromPort, ToPort *int
	IpRanges         []struct{ CidrIp, Description string }
	Ipv6Ranges       []struct{ CidrIpv6, Description string }
	Groups           []struct{ GroupId, GroupName, UserId, VpcId, Description string }
	PrefixListIds    []struct{ PrefixListId, Description string }
}

func filters(in []ec2Filter) []cloud.Filter {
	out := make([]cloud.Filter, len(in))
	for i, f := range in {
		out[i] = cloud.Filter{Name: f.Name, Values: f.Values}
	}
	return out
}

func tagsIn(in []ec2Tag) []cloud.Tag {
	out := make([]cloud.Tag, len(in))
	for i, t := range in {
		out[i] = cloud.Tag{Key: t.Key, Value: t.Value}
	}
	return out
}

// specTags returns the tags of the specifications for resourceType; a specification for another
// type is an error, as on EC2.
func specTags(specs []ec2TagSpec, resourceType string) ([]cloud.Tag, error) {
	var out []cloud.Tag
	for _, s := range specs {
		if s.ResourceType != resourceType {
			return nil, &cloud.Error{Code: "InvalidParameterValue", Message: "'" + s.ResourceType + "' is not a valid taggable resource type for this operation."}
		}
		out = append(out, tagsIn(s.Tags)...)
	}
	return out, nil
}

func tagsOut(t cloud.Tags) wire.Items[ec2Tag] {
	out := wire.Items[ec2Tag]{}
	for _, tag := range t.List() {
		out = append(out, ec2Tag{tag.Key, tag.Value})
	}
	return out
}

func permissionsIn(in []ec2Permission) []cloud.Permission {
	out := make([]cloud.Permission, len(in))
	for i, p := range in {
		cp := cloud.Permission{Protocol: p.IpProtocol, FromPort: p.FromPort, ToPort: p.ToPort}
		for _, r := range p.IpRanges {
			cp.CIDRv4 = append(cp.CIDRv4, cloud.Peer{Value: r.CidrIp, Description: r.Description})
		}
		for _, r := range p.Ipv6Ranges {
			cp.CIDRv6 = append(cp.CIDRv6, cloud.Peer{Value: r.CidrIpv6, Description: r.Description})
		}
		for _, g := range p.Groups {
			ref := g.GroupId
			if ref == "" {
				ref = g.GroupName
			}
			cp.Groups = append(cp.Groups, cloud.Peer{Value: ref, Description: g.Description})
		}
		for _, pl := range p.PrefixListIds {
			cp.PrefixLists = append(cp.PrefixLists, cloud.Peer{Value: pl.PrefixListId, Description: pl.Description})
		}
		out[i] = cp
	}
	return out
}

// Reply shapes (ec2Query: lowerCamel names, <item> lists).

type ec2IPPermission struct {
	IpProtocol    string                       `xml:"ipProtocol"`
	FromPort      *int                         `xml:"fromPort,omitempty"`
	ToPort        *int                         `xml:"toPort,omitempty"`
	Groups        wire.Items[ec2GroupPair]     `xml:"groups"`
	IpRanges      wire.Items[ec2IPRange]       `xml:"ipRanges"`
	Ipv6Ranges    wire.Items[ec2IPv6Range]     `xml:"ipv6Ranges"`
	PrefixListIds wire.Items[ec2PrefixListRef] `xml:"prefixListIds"`
}

type ec2GroupPair struct {
	UserID      string `xml:"userId"`
	GroupID     string `xml:"groupId"`
	VpcID       string `xml:"vpcId,omitempty"`
	Description string `xml:"description,omitempty"`
}

type ec2IPRange struct {
	CidrIP      string `xml:"cidrIp"`
	Description string `xml:"description,omitempty"`
}

type ec2IPv6Range struct {
	CidrIPv6    string `xml:"cidrIpv6"`
	Description string `xml:"description,omitempty"`
}

type ec2PrefixListRef struct {
	PrefixListID string `xml:"prefixListId"`
	Description  string `xml:"description,omitempty"`
}

type ec2SecurityGroup struct {
	OwnerID             string                      `xml:"ownerId"`
	GroupID             string                      `xml:"groupId"`
	GroupName           string                      `xml:"groupName"`
	GroupDescription    string                      `xml:"groupDescription"`
	VpcID               string                      `xml:"vpcId"`
	SecurityGroupArn    string                      `xml:"securityGroupArn"`
	IpPermissions       wire.Items[ec2IPPermission] `xml:"ipPermissions"`
	IpPermissionsEgress wire.Items[ec2IPPermission] `xml:"ipPermissionsEgress"`
	TagSet              wire.Items[ec2Tag]          `xml:"tagSet"`
}

type ec2Rule struct {
	SecurityGroupRuleID  string             `xml:"securityGroupRuleId"`
	GroupID              string             `xml:"groupId"`
	GroupOwnerID         string             `xml:"groupOwnerId"`
	IsEgress             bool               `xml:"isEgress"`
	IpProtocol           string             `xml:"ipProtocol"`
	FromPort             int                `xml:"fromPort"`
	ToPort               int                `xml:"toPort"`
	CidrIPv4             string             `xml:"cidrIpv4,omitempty"`
	CidrIPv6             string             `xml:"cidrIpv6,omitempty"`
	PrefixListID         string             `xml:"prefixListId,omitempty"`
	ReferencedGroupInfo  *ec2ReferencedInfo `xml:"referencedGroupInfo,omitempty"`
	Description          string             `xml:"description,omitempty"`
	TagSet               wire.Items[ec2Tag] `xml:"tagSet"`
	SecurityGroupRuleArn string             `xml:"securityGroupRuleArn"`
}

type ec2ReferencedInfo struct {
	GroupID string `xml:"groupId"`
	UserID  string `xml:"userId"`
}

type ec2RevokedRule struct {
	SecurityGroupRuleID string `xml:"securityGroupRuleId"`
	GroupID             string `xml:"groupId"`
	IsEgress            bool   `xml:"isEgress"`
	IpProtocol          string `xml:"ipProtocol"`
	FromPort            int    `xml:"fromPort"`
	ToPort              int    `xml:"toPort"`
	CidrIPv4            string `xml:"cidrIpv4,omitempty"`
	CidrIPv6            string `xml:"cidrIpv6,omitempty"`
	PrefixListID        string `xml:"prefixListId,omitempty"`
	ReferencedGroupID   string `xml:"referencedGroupId,omitempty"`
	Description         string `xml:"description,omitempty"`
}

func (s *Server) arn(resource string) string {
	cfg := s.cloud.Config()
	return "arn:aws:ec2:" + cfg.Region + ":" + cfg.AccountID + ":" + resource
}

// groupPermissions folds rules into IpPermissions the way EC2 describes them: rules with the same
// protocol and ports share one permission, in the order they were first added.
func (s *Server) groupPermissions(rules []cloud.Rule, vpcID string) wire.Items[ec2IPPermission] {
	out := wire.Items[ec2IPPermission]{}
	index := map[[3]string]int{}
	for _, r := range rules {
		key := [3]string{r.Protocol, strconv.Itoa(r.FromPort), strconv.Itoa(r.ToPort)}
		i, ok := index[key]
		if !ok {
			p := ec2IPPermission{IpProtocol: r.Protocol, Groups: wire.Items[ec2GroupPair]{}, IpRanges: wire.Items[ec2IPRange]{}, Ipv6Ranges: wire.Items[ec2IPv6Range]{}, PrefixListIds: wire.Items[ec2PrefixListRef]{}}
			if r.HasPorts() {
				from, to := r.FromPort, r.ToPort
				p.FromPort, p.ToPort = &from, &to
			}
			i = len(out)
			index[key] = i
			out = append(out, p)
		}
		p := &out[i]
		switch {
		case r.CIDRv4 != "":
			p.IpRanges = append(p.IpRanges, ec2IPRange{r.CIDRv4, r.Description})
		case r.CIDRv6 != "":
			p.Ipv6Ranges = append(p.Ipv6Ranges, ec2IPv6Range{r.CIDRv6, r.Description})
		case r.GroupID != "":
			p.Groups = append(p.Groups, ec2GroupPair{UserID: s.cloud.Config().AccountID, GroupID: r.GroupID, VpcID: vpcID, Description: r.Description})
		default:
			p.PrefixListIds = append(p.PrefixListIds, ec2PrefixListRef{r.PrefixListID, r.Description})
		}
	}
	return out
}

func (s *Server) securityGroupOut(sg cloud.SecurityGroup) ec2SecurityGroup {
	return ec2SecurityGroup{
		OwnerID:             s.cloud.Config().AccountID,
		GroupID:             sg.ID,
		GroupName:           sg.Name,
		GroupDescription:    sg.Description,
		VpcID:               sg.VPCID,
		SecurityGroupArn:    s.arn("security-group/" + sg.ID),
		IpPermissions:       s.groupPermissions(sg.Ingress, sg.VPCID),
		IpPermissionsEgress: s.groupPermissions(sg.Egress, sg.VPCID),
		TagSet:              tagsOut(sg.Tags),
	}
}

func (s *Server) ruleOut(groupID string, egress bool, r cloud.Rule) ec2Rule {
	out := ec2Rule{
		SecurityGroupRuleID:  r.ID,
		GroupID:              groupID,
		GroupOwnerID:         s.cloud.Config().AccountID,
		IsEgress:             egress,
		IpProtocol:           r.Protocol,
		FromPort:             r.FromPort,
		ToPort:               r.ToPort,
		CidrIPv4:             r.CIDRv4,
		CidrIPv6:             r.CIDRv6,
		PrefixListID:         r.PrefixListID,
		Description:          r.Description,
		TagSet:               tagsOut(r.Tags),
		SecurityGroupRuleArn: s.arn("security-group-rule/" + r.ID),
	}
	if r.GroupID != "" {
		out.ReferencedGroupInfo = &ec2ReferencedInfo{GroupID: r.GroupID, UserID: s.cloud.Config().AccountID}
	}
	return out
}

// Security groups.

type createSecurityGroupIn struct {
	GroupName         string
	GroupDescription  string
	VpcId             string
	TagSpecifications []ec2TagSpec `query:"TagSpecification"`
}

func (s *Server) createSecurityGroup(_ context.Context, in *createSecurityGroupIn) (any, error) {
	tags, err := specTags(in.TagSpecifications, "security-group")
	if err != nil {
		return nil, err
	}
	sg, err := s.cloud.CreateSecurityGroup(in.GroupName, in.GroupDescription, in.VpcId, tags)
	if err != nil {
		return nil, err
	}
	return struct {
		Return           bool               `xml:"return"`
		GroupID          string             `xml:"groupId"`
		SecurityGroupArn string             `xml:"securityGroupArn"`
		TagSet           wire.Items[ec2Tag] `xml:"tagSet,omitempty"`
	}{true, sg.ID, s.arn("security-group/" + sg.ID), tagsOut(sg.Tags)}, nil
}

type describeSecurityGroupsIn struct {
	GroupIds   []string    `query:"GroupId"`
	GroupNames []string    `query:"GroupName"`
	Filters    []ec2Filter `query:"Filter"`
	MaxResults int
	NextToken  string
}

func (s *Server) describeSecurityGroups(_ context.Context, in *describeSecurityGroupsIn) (any, error) {
	groups, next, err := s.cloud.DescribeSecurityGroups(in.GroupIds, in.GroupNames, filters(in.Filters), cloud.Page{MaxResults: in.MaxResults, NextToken: in.NextToken})
	if err != nil {
		return nil, err
	}
	out := wire.Items[ec2SecurityGroup]{}
	for _, sg := range groups {
		out = append(out, s.securityGroupOut(sg))
	}
	return struct {
		SecurityGroupInfo wire.Items[ec2SecurityGroup] `xml:"securityGroupInfo"`
		NextToken         string                       `xml:"nextToken,omitempty"`
	}{out, next}, nil
}

type deleteSecurityGroupIn struct {
	GroupId   string
	GroupName string
}

func (s *Server) deleteSecurityGroup(_ context.Context, in *deleteSecurityGroupIn) (any, error) {
	id, err := s.cloud.DeleteSecurityGroup(cloud.GroupRef{ID: in.GroupId, Name: in.GroupName})
	if err != nil {
		return nil, err
	}
	return struct {
		Return  bool   `xml:"return"`
		GroupID string `xml:"groupId"`
	}{true, id}, nil
}

// securityGroupRulesIn is the input of the four Authorize/Revoke actions. The top-level CidrIp,
// IpProtocol, FromPort, ToPort and SourceSecurityGroupName are EC2's older ingress-only form.
type securityGroupRulesIn struct {
	GroupId                 string
	GroupName               string
	IpPermissions           []ec2Permission
	SecurityGroupRuleIds    []string     `query:"SecurityGroupRuleId"`
	TagSpecifications       []ec2TagSpec `query:"TagSpecification"`
	CidrIp                  string
	IpProtocol              string
	FromPort, ToPort        *int
	SourceSecurityGroupName string
}

func (in *securityGroupRulesIn) permissions(egress bool) ([]cloud.Permission, error) {
	if egress && in.GroupId == "" {
		return nil, &cloud.Error{Code: "MissingParameter", Message: "The request must contain the parameter groupId"}
	}
	perms := permissionsIn(in.IpPermissions)
	legacy := in.CidrIp != "" || in.IpProtocol != "" || in.SourceSecurityGroupName != "" || in.FromPort != nil || in.ToPort != nil
	if !legacy {
		return perms, nil
	}
	if egress {
		return nil, &cloud.Error{Code: "InvalidParameterCombination", Message: "The parameter CidrIp, IpProtocol, FromPort, ToPort or SourceSecurityGroupName is valid only for ingress; use IpPermissions."}
	}
	if len(perms) > 0 {
		return nil, &cloud.Error{Code: "InvalidParameterCombination", Message: "The parameter IpPermissions cannot be used with the parameters CidrIp, IpProtocol, FromPort, ToPort or SourceSecurityGroupName."}
	}
	p := cloud.Permission{Protocol: in.IpProtocol, FromPort: in.FromPort, ToPort: in.ToPort}
	if in.CidrIp != "" {
		p.CIDRv4 = []cloud.Peer{{Value: in.CidrIp}}
	}
	if in.SourceSecurityGroupName != "" {
		// The older form with a source group means every protocol and port from that group.
		p = cloud.Permission{Protocol: "-1", Groups: []cloud.Peer{{Value: in.SourceSecurityGroupName}}}
	}
	return []cloud.Permission{p}, nil
}

func (s *Server) authorizeIngress(_ context.Context, in *securityGroupRulesIn) (any, error) {
	return s.authorize(in, false)
}

func (s *Server) authorizeEgress(_ context.Context, in *securityGroupRulesIn) (any, error) {
	return s.authorize(in, true)
}

func (s *Server) authorize(in *securityGroupRulesIn, egress bool) (any, error) {
	perms, err := in.permissions(egress)
	if err != nil {
		return nil, err
	}
	tags, err := specTags(in.TagSpecifications, "security-group-rule")
	if err != nil {
		return nil, err
	}
	sg, added, err := s.cloud.AuthorizeRules(cloud.GroupRef{ID: in.GroupId, Name: in.GroupName}, egress, perms, tags)
	if err != nil {
		return nil, err
	}
	rules := wire.Items[ec2Rule]{}
	for _, r := range added {
		rules = append(rules, s.ruleOut(sg.ID, egress, r))
	}
	return struct {
		Return               bool                `xml:"return"`
		SecurityGroupRuleSet wire.Items[ec2Rule] `xml:"securityGroupRuleSet"`
	}{true, rules}, nil
}

func (s *Server) revokeIngress(_ context.Context, in *securityGroupRulesIn) (any, error) {
	return s.revoke(in, false)
}

func (s *Server) revokeEgress(_ context.Context, in *securityGroupRulesIn) (any, error) {
	return s.revoke(in, true)
}

func (s *Server) revoke(in *securityGroupRulesIn, egress bool) (any, error) {
	perms, err := in.permissions(egress)
	if err != nil {
		return nil, err
	}
	sg, revoked, err := s.cloud.RevokeRules(cloud.GroupRef{ID: in.GroupId, Name: in.GroupName}, egress, perms, in.SecurityGroupRuleIds)
	if err != nil {
		return nil, err
	}
	out := wire.Items[ec2RevokedRule]{}
	for _, r := range revoked {
		out = append(out, ec2RevokedRule{
			SecurityGroupRuleID: r.ID, GroupID: sg.ID, IsEgress: egress, IpProtocol: r.Protocol,
			FromPort: r.FromPort, ToPort: r.ToPort, CidrIPv4: r.CIDRv4, CidrIPv6: r.CIDRv6,
			PrefixListID: r.PrefixListID, ReferencedGroupID: r.GroupID, Description: r.Description,
		})
	}
	return struct {
		Return                      bool                       `xml:"return"`
		RevokedSecurityGroupRuleSet wire.Items[ec2RevokedRule] `xml:"revokedSecurityGroupRuleSet"`
	}{true, out}, nil
}

// ruleDescriptionsIn is the input of UpdateSecurityGroupRuleDescriptions{Ingress,Egress}.
type ruleDescriptionsIn struct {
	securityGroupRulesIn
	SecurityGroupRuleDescriptions []struct {
		SecurityGroupRuleId string
		Description         string
	} `query:"SecurityGroupRuleDescription"`
}

func (s *Server) updateDescriptionsIngress(_ context.Context, in *ruleDescriptionsIn) (any, error) {
	return s.updateDescriptions(in, false)
}

func (s *Server) updateDescriptionsEgress(_ context.Context, in *ruleDescriptionsIn) (any, error) {
	return s.updateDescriptions(in, true)
}

func (s *Server) updateDescriptions(in *ruleDescriptionsIn, egress bool) (any, error) {
	perms, err := in.permissions(egress)
	if err != nil {
		return nil, err
	}
	var byID []cloud.RuleDescription
	for _, d := range in.SecurityGroupRuleDescriptions {
		byID = append(byID, cloud.RuleDescription{RuleID: d.SecurityGroupRuleId, Description: d.Description})
	}
	return returnTrue(s.cloud.UpdateRuleDescriptions(cloud.GroupRef{ID: in.GroupId, Name: in.GroupName}, egress, perms, byID))
}

type describeSecurityGroupRulesIn struct {
	SecurityGroupRuleIds []string    `query:"SecurityGroupRuleId"`
	Filters              []ec2Filter `query:"Filter"`
	MaxResults           int
	NextToken            string
}

func (s *Server) describeSecurityGroupRules(_ context.Context, in *describeSecurityGroupRulesIn) (any, error) {
	rules, next, err := s.cloud.DescribeSecurityGroupRules(in.SecurityGroupRuleIds, filters(in.Filters), cloud.Page{MaxResults: in.MaxResults, NextToken: in.NextToken})
	if err != nil {
		return nil, err
	}
	out := wire.Items[ec2Rule]{}
	for _, r := range rules {
		out = append(out, s.ruleOut(r.GroupID, r.Egress, r.Rule))
	}
	return struct {
		SecurityGroupRuleSet wire.Items[ec2Rule] `xml:"securityGroupRuleSet"`
		NextToken            string              `xml:"nextToken,omitempty"`
	}{out, next}, nil
}

// Tags.

type tagsRequest struct {
	ResourceIds []string `query:"ResourceId"`
	Tags        []struct {
		Key   string
		Value *string
	} `query:"Tag"`
}

func (s *Server) createTags(_ context.Context, in *tagsRequest) (any, error) {
	tags := make([]cloud.Tag, len(in.Tags))
	for i, t := range in.Tags {
		tags[i].Key = t.Key
		if t.Value != nil {
			tags[i].Value = *t.Value
		}
	}
	return returnTrue(s.cloud.CreateTags(in.ResourceIds, tags))
}

func (s *Server) deleteTags(_ context.Context, in *tagsRequest) (any, error) {
	keys := make([]cloud.TagKey, len(in.Tags))
	for i, t := range in.Tags {
		keys[i] = cloud.TagKey{Key: t.Key, Value: t.Value}
	}
	return returnTrue(s.cloud.DeleteTags(in.ResourceIds, keys))
}

func returnTrue(err error) (any, error) {
	if err != nil {
		return nil, err
	}
	return struct {
		Return bool `xml:"return"`
	}{true}, nil
}
