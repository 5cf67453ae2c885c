package lbtest

import (
	"fmt"
	"sort"

	"github.com/aws/aws-sdk-go-v2/aws"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// Inbound lists a group's inbound rules one by one, as "proto from-to peer [description]",
// sorted: EC2 groups rules by protocol and ports, tests want to compare them flat.
func Inbound(g ec2types.SecurityGroup) []string {
	var out []string
	for _, p := range g.IpPermissions {
		ports := fmt.Sprintf("%s %d-%d", aws.ToString(p.IpProtocol), aws.ToInt32(p.FromPort), aws.ToInt32(p.ToPort))
		add := func(peer, desc string) {
			s := ports + " " + peer
			if desc != "" {
				s += " [" + desc + "]"
			}
			out = append(out, s)
		}
		for _, r := range p.IpRanges {
			add(aws.ToString(r.CidrIp), aws.ToString(r.Description))
		}
		for _, r := range p.Ipv6Ranges {
			add(aws.ToString(r.CidrIpv6), aws.ToString(r.Description))
		}
		for _, r := range p.PrefixListIds {
			add(aws.ToString(r.PrefixListId), aws.ToString(r.Description))
		}
		for _, r := range p.UserIdGroupPairs {
			add(aws.ToString(r.GroupId), aws.ToString(r.Description))
		}
	}
	sort.Strings(out)
	return out
}
