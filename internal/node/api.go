package node

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/moatlb/moat/internal/cloud"
)

// reader reads what the firewall of this host's instances depends on from moat lb's API, with
// read actions only (a read-only key suffices).
type reader struct {
	ec2 *ec2.Client
}

func newReader(cfg aws.Config) *reader {
	return &reader{ec2: ec2.NewFromConfig(cfg)}
}

// read returns the resources that resolve the rules of the interfaces that protect selects:
// every interface (any may carry a referenced group; the load balancers' own interfaces carry
// theirs, as on AWS), the groups of the selected interfaces, and — only when those groups' rules
// need them — the prefix lists named. Anything failing fails the whole read: a partial
// answer must never become a program.
func (r *reader) read(ctx context.Context, protect func(cloud.NetworkInterface, netip.Addr) bool) (cloud.State, error) {
	var st cloud.State
	enis := ec2.NewDescribeNetworkInterfacesPaginator(r.ec2, &ec2.DescribeNetworkInterfacesInput{})
	for enis.HasMorePages() {
		page, err := enis.NextPage(ctx)
		if err != nil {
			return st, fmt.Errorf("DescribeNetworkInterfaces: %w", err)
		}
		for _, n := range page.NetworkInterfaces {
			st.Interfaces = append(st.Interfaces, interfaceFrom(n))
		}
	}
	var mine []string
	seen := map[string]bool{}
	for _, eni := range st.Interfaces {
		if eni.InstanceID == "" || !protects(eni, protect) {
			continue
		}
		for _, g := range eni.Groups {
			if !seen[g] {
				seen[g] = true
				mine = append(mine, g)
			}
		}
	}
	if len(mine) == 0 {
		return st, nil
	}
	// A filter, not GroupIds: a group deleted between two calls is left out rather than failing
	// the read.
	groups := ec2.NewDescribeSecurityGroupsPaginator(r.ec2, &ec2.DescribeSecurityGroupsInput{
		Filters: []ec2types.Filter{{Name: aws.String("group-id"), Values: mine}}})
	for groups.HasMorePages() {
		page, err := groups.NextPage(ctx)
		if err != nil {
			return st, fmt.Errorf("DescribeSecurityGroups: %w", err)
		}
		for _, g := range page.SecurityGroups {
			st.SecurityGroups = append(st.SecurityGroups, groupFrom(g))
		}
	}
	refLists := referencedPrefixLists(st.SecurityGroups)
	if len(refLists) > 0 {
		var found []ec2types.ManagedPrefixList
		lists := ec2.NewDescribeManagedPrefixListsPaginator(r.ec2, &ec2.DescribeManagedPrefixListsInput{
			Filters: []ec2types.Filter{{Name: aws.String("prefix-list-id"), Values: refLists}}})
		for lists.HasMorePages() {
			page, err := lists.NextPage(ctx)
			if err != nil {
				return st, fmt.Errorf("DescribeManagedPrefixLists: %w", err)
			}
			found = append(found, page.PrefixLists...)
		}
		for _, pl := range found {
			out := cloud.PrefixList{ID: aws.ToString(pl.PrefixListId), Name: aws.ToString(pl.PrefixListName)}
			entries := ec2.NewGetManagedPrefixListEntriesPaginator(r.ec2, &ec2.GetManagedPrefixListEntriesInput{PrefixListId: pl.PrefixListId})
			for entries.HasMorePages() {
				page, err := entries.NextPage(ctx)
				if err != nil {
					return st, fmt.Errorf("GetManagedPrefixListEntries %s: %w", out.ID, err)
				}
				for _, e := range page.Entries {
					out.Entries = append(out.Entries, cloud.PrefixListEntry{CIDR: aws.ToString(e.Cidr)})
				}
			}
			st.PrefixLists = append(st.PrefixLists, out)
		}
	}
	return st, nil
}

func protects(eni cloud.NetworkInterface, protect func(cloud.NetworkInterface, netip.Addr) bool) bool {
	for _, ip := range eni.PrivateIPs {
		if a, err := netip.ParseAddr(ip); err == nil && protect(eni, a) {
			return true
		}
	}
	return false
}
