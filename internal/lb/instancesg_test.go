package lb

import (
	"errors"
	"net/netip"
	"path/filepath"
	"slices"
	"testing"

	"github.com/moatlb/moat/internal/cloud"
	"github.com/moatlb/moat/internal/firewall"
	"github.com/moatlb/moat/internal/secgroup"
	"github.com/moatlb/moat/internal/store"
)

// TestFirewallReferencedGroupInUse: as on AWS, a group that another group's rule references, or
// that an interface carries, cannot be deleted (DependencyViolation), so the firewall goes on
// admitting its members; once it is let go and deleted, they are admitted no more.
func TestFirewallReferencedGroupInUse(t *testing.T) {
	st, err := store.OpenBolt(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	c := cloud.New(st, cloud.Config{Region: "us-east-1", AccountID: "123456789012"})
	if err := c.ApplyInventory(cloud.DefaultInventory()); err != nil {
		t.Fatal(err)
	}
	groups, _, err := c.DescribeSecurityGroups(nil, []string{"moat-nodes"}, nil, cloud.Page{})
	if err != nil || len(groups) != 1 {
		t.Fatalf("the nodes' group: %v %v", groups, err)
	}
	nodes := groups[0]
	members, err := c.CreateSecurityGroup("members", "members", nodes.VPCID, nil)
	if err != nil {
		t.Fatal(err)
	}
	nodeB := netip.MustParseAddr("127.2.0.10")
	enis, err := c.DescribeNetworkInterfaces(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var eniB string
	for _, e := range enis {
		if slices.Contains(e.PrivateIPs, nodeB.String()) {
			eniB = e.ID
		}
	}
	if err := c.ModifyNetworkInterfaceGroups(eniB, []string{nodes.ID, members.ID}); err != nil {
		t.Fatal(err)
	}
	port := 30080
	perm := []cloud.Permission{{Protocol: "tcp", FromPort: &port, ToPort: &port, Groups: []cloud.Peer{{Value: members.ID}}}}
	if _, _, err := c.AuthorizeRules(cloud.GroupRef{ID: nodes.ID}, false, perm, nil); err != nil {
		t.Fatal(err)
	}
	// admitsNodeB: does node-a's firewall program admit node-b on the NodePort?
	admitsNodeB := func() bool {
		s, err := c.State()
		if err != nil {
			t.Fatal(err)
		}
		p := desiredFirewall(s, newNetwork(s), firewall.Enforce, func(netip.Addr) bool { return true })
		for _, ifc := range p.Interfaces {
			if slices.Contains(ifc.Addrs, netip.MustParseAddr("127.1.0.10")) {
				return slices.ContainsFunc(ifc.Inbound, func(r secgroup.Rule) bool {
					return r.Matches(6, uint16(port)) && slices.ContainsFunc(r.Sources, func(p netip.Prefix) bool { return p.Contains(nodeB) })
				})
			}
		}
		t.Fatal("no program for node-a")
		return false
	}
	if !admitsNodeB() {
		t.Fatal("the rule referencing the members' group does not admit node-b, a member")
	}
	inUse := func(when string) {
		t.Helper()
		_, err := c.DeleteSecurityGroup(cloud.GroupRef{ID: members.ID})
		if ce := (*cloud.Error)(nil); !errors.As(err, &ce) || ce.Code != "DependencyViolation" {
			t.Fatalf("deleting the members' group %s: %v, want DependencyViolation", when, err)
		}
	}
	inUse("while a rule references it")
	if !admitsNodeB() {
		t.Fatal("the refused delete changed what node-a admits")
	}
	if _, _, err := c.RevokeRules(cloud.GroupRef{ID: nodes.ID}, false, perm, nil); err != nil {
		t.Fatal(err)
	}
	if admitsNodeB() {
		t.Fatal("node-b is admitted after the revoke")
	}
	inUse("while node-b's interface carries it")
	if err := c.ModifyNetworkInterfaceGroups(eniB, []string{nodes.ID}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeleteSecurityGroup(cloud.GroupRef{ID: members.ID}); err != nil {
		t.Fatalf("deleting the members' group once nothing uses it: %v", err)
	}
}

// TestFirewallStaleReference: a rule whose referenced group is not in the state (a stale rule, as
// AWS keeps when a peered VPC's group goes) admits no one: it fails closed.
func TestFirewallStaleReference(t *testing.T) {
	s := state()
	s.SecurityGroups = slices.DeleteFunc(s.SecurityGroups, func(g cloud.SecurityGroup) bool { return g.ID == "sg-back" })
	s.LoadBalancers[0].SecurityGroups = []string{"sg-front"}
	local := func(a netip.Addr) bool { return a == netip.MustParseAddr("127.1.0.10") }
	p := desiredFirewall(s, newNetwork(s), firewall.Enforce, local)
	if len(p.Interfaces) != 1 || len(p.Interfaces[0].Inbound) != 1 || len(p.Interfaces[0].Inbound[0].Sources) != 0 {
		t.Fatalf("program %+v, want node-a's rule referencing the gone group with no sources", p)
	}
}
