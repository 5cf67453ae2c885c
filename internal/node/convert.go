package node

import (
	"github.com/aws/aws-sdk-go-v2/aws"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/moatlb/moat/internal/cloud"
)

// The API's answers become the cloud package's resources, the form sgresolve reads, so that
// moat node resolves rules with the same code as moat lb does from its store. Only what
// resolution needs is kept.

func interfaceFrom(n ec2types.NetworkInterface) cloud.NetworkInterface {
	out := cloud.NetworkInterface{ID: aws.ToString(n.NetworkInterfaceId), SubnetID: aws.ToString(n.SubnetId), VPCID: aws.ToString(n.VpcId)}
	for _, ip := range n.PrivateIpAddresses {
		if a := aws.ToString(ip.PrivateIpAddress); a != "" {
			out.PrivateIPs = append(out.PrivateIPs, a)
		}
	}
	if len(out.PrivateIPs) == 0 && aws.ToString(n.PrivateIpAddress) != "" {
		out.PrivateIPs = []string{aws.ToString(n.PrivateIpAddress)}
	}
	for _, g := range n.Groups {
		out.Groups = append(out.Groups, aws.ToString(g.GroupId))
	}
	if n.Attachment != nil {
		out.InstanceID = aws.ToString(n.Attachment.InstanceId)
	}
	return out
}

func groupFrom(g ec2types.SecurityGroup) cloud.SecurityGroup {
	return cloud.SecurityGroup{ID: aws.ToString(g.GroupId), Name: aws.ToString(g.GroupName), VPCID: aws.ToString(g.VpcId),
		Ingress: rulesFrom(g.IpPermissions), Egress: rulesFrom(g.IpPermissionsEgress)}
}

// rulesFrom splits permissions into rules of one peer each, as the store keeps them. A port
// the answer leaves out (all protocols) is -1, as the store has it.
func rulesFrom(perms []ec2types.IpPermission) []cloud.Rule {
	var out []cloud.Rule
	for _, p := range perms {
		base := cloud.Rule{Protocol: aws.ToString(p.IpProtocol), FromPort: -1, ToPort: -1}
		if p.FromPort != nil {
			base.FromPort = int(*p.FromPort)
		}
		if p.ToPort != nil {
			base.ToPort = int(*p.ToPort)
		}
		for _, r := range p.IpRanges {
			rule := base
			rule.CIDRv4 = aws.ToString(r.CidrIp)
			out = append(out, rule)
		}
		for _, r := range p.Ipv6Ranges {
			rule := base
			rule.CIDRv6 = aws.ToString(r.CidrIpv6)
			out = append(out, rule)
		}
		for _, r := range p.UserIdGroupPairs {
			rule := base
			rule.GroupID = aws.ToString(r.GroupId)
			out = append(out, rule)
		}
		for _, r := range p.PrefixListIds {
			rule := base
			rule.PrefixListID = aws.ToString(r.PrefixListId)
			out = append(out, rule)
		}
	}
	return out
}

// referencedPrefixLists returns the prefix lists that groups' rules name as peers.
func referencedPrefixLists(groups []cloud.SecurityGroup) []string {
	var out []string
	seen := map[string]bool{}
	for _, g := range groups {
		for _, rules := range [][]cloud.Rule{g.Ingress, g.Egress} {
			for _, r := range rules {
				if r.PrefixListID != "" && !seen[r.PrefixListID] {
					seen[r.PrefixListID] = true
					out = append(out, r.PrefixListID)
				}
			}
		}
	}
	return out
}
