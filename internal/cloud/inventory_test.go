package cloud

import (
	"fmt"
	"strings"
	"testing"
)

// TestInventoryIPv6 pins how the inventory takes IPv6 blocks: canonical, a subnet's inside its
// VPC's, and clear one-line errors for the rest (which leave nothing applied).
func TestInventoryIPv6(t *testing.T) {
	const vpc = "vpcs:\n  - {name: v, cidr: 10.0.0.0/16%s}\nsubnets:\n  - {name: s, vpc: v, zone: a, cidr: 10.0.1.0/24%s}\n"
	cases := []struct {
		name, vpc6, subnet6 string
		err                 string // empty: applies
	}{
		{"both canonicalised", "2001:DB8:0:100::/56", "2001:db8:0:101::5/64", ""},
		{"IPv4-only", "", "", ""},
		{"a VPC block without subnet blocks", "2001:db8:0:100::/56", "", ""},
		{"subnet block without a VPC block", "", "2001:db8:0:101::/64", "needs an ipv6Cidr on vpc v"},
		{"subnet block outside the VPC's", "2001:db8:0:100::/56", "2001:db8:0:201::/64", "not inside vpc v"},
		{"subnet block larger than the VPC's", "2001:db8:0:100::/56", "2001:db8::/48", "not inside vpc v"},
		{"an IPv4 CIDR as the VPC's block", "10.1.0.0/16", "", `ipv6Cidr "10.1.0.0/16" is not an IPv6 CIDR`},
		{"a subnet block longer than /64", "2001:db8:0:100::/56", "2001:db8:0:101::/80", "/64 or shorter"},
		{"not a CIDR", "2001:db8:0:100::/56", "2001:db8:0:101::", "is not an IPv6 CIDR"},
	}
	field := func(s string) string {
		if s == "" {
			return ""
		}
		return `, ipv6Cidr: "` + s + `"`
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newTestCloud(t, Config{Region: "us-east-1"})
			inv, err := ParseInventory(fmt.Appendf(nil, vpc, field(tc.vpc6), field(tc.subnet6)))
			if err != nil {
				t.Fatal(err)
			}
			err = c.ApplyInventory(inv)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || strings.Contains(err.Error(), "\n") {
					t.Fatalf("apply: %v, want a one-line error containing %q", err, tc.err)
				}
				if vpcs, _ := c.DescribeVPCs(nil, nil); len(vpcs) != 1 {
					t.Errorf("a refused inventory left %d VPCs, want the default one", len(vpcs))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			sns, err := c.DescribeSubnets(nil, []Filter{{Name: "cidr-block", Values: []string{"10.0.1.0/24"}}})
			if err != nil || len(sns) != 1 {
				t.Fatalf("subnet: %v, %v", sns, err)
			}
			if want := map[string]string{"2001:db8:0:101::5/64": "2001:db8:0:101::/64"}[tc.subnet6]; sns[0].IPv6CIDR != want {
				t.Errorf("subnet block %q, want %q", sns[0].IPv6CIDR, want)
			}
			vpcs, err := c.DescribeVPCs([]string{sns[0].VPCID}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if want := strings.ToLower(tc.vpc6); vpcs[0].IPv6CIDR != want {
				t.Errorf("VPC block %q, want %q", vpcs[0].IPv6CIDR, want)
			}
		})
	}
}

// TestInventorySecondaryCIDRs: a VPC's subnets may lie in any of its IPv4 blocks (as a derived
// inventory puts its nodes in one and its load balancers on loopback in another), and the
// association filter finds a VPC by a secondary block.
func TestInventorySecondaryCIDRs(t *testing.T) {
	const vpc = "vpcs:\n  - {name: v, cidr: 127.0.0.0/8, secondaryCidrs: [10.77.0.0/16]}\nsubnets:\n  - {name: s, vpc: v, zone: a, cidr: %s}\n"
	for _, tc := range []struct{ subnet, err string }{
		{"127.1.0.0/16", ""},
		{"10.77.1.0/24", ""},
		{"10.78.1.0/24", "not inside vpc v (127.0.0.0/8, 10.77.0.0/16)"},
		{"10.0.0.0/8", "not inside vpc v"}, // larger than the block it starts in
	} {
		c := newTestCloud(t, Config{Region: "us-east-1"})
		inv, err := ParseInventory(fmt.Appendf(nil, vpc, tc.subnet))
		if err != nil {
			t.Fatal(err)
		}
		err = c.ApplyInventory(inv)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("subnet %s: %v, want an error containing %q", tc.subnet, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("subnet %s: %v", tc.subnet, err)
		}
		vpcs, err := c.DescribeVPCs(nil, []Filter{{Name: "cidr-block-association.cidr-block", Values: []string{"10.77.0.0/16"}}})
		if err != nil || len(vpcs) != 1 || vpcs[0].CIDR != "127.0.0.0/8" || len(vpcs[0].SecondaryCIDRs) != 1 {
			t.Fatalf("VPC by its secondary block: %+v, %v", vpcs, err)
		}
		if vpcs, _ := c.DescribeVPCs(nil, []Filter{{Name: "cidr", Values: []string{"10.77.0.0/16"}}}); len(vpcs) != 0 {
			t.Errorf("filter cidr (the primary block) matched a secondary block: %+v", vpcs)
		}
	}
}
