package up

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/moatlb/moat/internal/cloud"
)

// How moat up derives moat lb's inventory from an existing cluster's Nodes (nodeInventory), when
// it drives that cluster and the user gave no inventory (docs/architecture.md, "moat up on an
// existing cluster"):
//
//   - one instance per Node, with the Node's first IPv4 InternalIP as its private IP. Its ID is
//     the one in an AWS providerID (aws:///<zone>/<i-…>), else i- and 17 hex digits of a hash of
//     the Node's name, so that it is the same on every run. moat controller finds instances by
//     providerID, else by private IP, so either way it registers the Node;
//   - zones from the label topology.kubernetes.io/zone, or <region>a for a Node without one. Zone
//     names that are not <region><letter> (a kind cluster labelled zone-1, zone-2, or another
//     region's zones) become <region>a, b, … in sorted order;
//   - one VPC, "moat", with an IPv4 block for every /16 that holds a Node (a kind or k3d Docker
//     network is one /16) and 127.0.0.0/8 for the load balancers;
//   - per zone, a subnet for its Nodes: the smallest prefix of at most /24 that holds them. If that
//     prefix would also hold another zone's Node (Nodes of several zones on one network, as on a
//     kind cluster labelled by hand) or span more than a /16, each Node gets a /32 subnet instead;
//     these subnets carry no load balancer role tags, so moat controller places no load balancer
//     there;
//   - per zone, a load balancer subnet on loopback, as in moat lb's default inventory: moat-<letter>
//     on 127.<n>.0.0/16 (a → 1, b → 2, …), tagged for internal and internet-facing load
//     balancers. The host reaches these addresses without privileges or routes; moat lb's
//     userspace proxy connects from them to the Nodes' addresses from the host's own address on
//     that network (the kernel refuses a loopback source elsewhere), which the Nodes can answer.
//
// Clients inside the cluster cannot reach the host's loopback: the load balancers serve the host.

// zoneLabel is the well-known label with a Node's zone.
const zoneLabel = corev1.LabelTopologyZone

// nodesGroup is the security group of the derived instances, as in the default inventory.
const nodesGroup = "moat-nodes"

// skippedNode is a Node that got no instance, and why.
type skippedNode struct{ name, reason string }

// nodeInstance is a Node kept for the inventory.
type nodeInstance struct {
	node *corev1.Node
	addr netip.Addr
	zone string // as labelled; "" when not
}

// nodeInventory derives moat lb's inventory from a cluster's Nodes (see above). It returns the
// Nodes it skipped, with the reason, and an error when no Node is left.
func nodeInventory(nodes []corev1.Node, region string) (cloud.Inventory, []skippedNode, error) {
	var kept []nodeInstance
	var skipped []skippedNode
	for i := range nodes {
		n := &nodes[i]
		addr, reason := nodeIPv4(n)
		if reason != "" {
			skipped = append(skipped, skippedNode{n.Name, reason})
			continue
		}
		kept = append(kept, nodeInstance{node: n, addr: addr, zone: n.Labels[zoneLabel]})
	}
	slices.SortFunc(skipped, func(a, b skippedNode) int { return strings.Compare(a.name, b.name) })
	if len(kept) == 0 {
		if len(nodes) == 0 {
			return cloud.Inventory{}, nil, errors.New("the cluster has no Nodes to derive moat lb's instances from")
		}
		var why []string
		for _, s := range skipped {
			why = append(why, s.name+": "+s.reason)
		}
		return cloud.Inventory{}, skipped, fmt.Errorf("no Node can be an instance of moat lb (%s)", strings.Join(why, "; "))
	}
	slices.SortFunc(kept, func(a, b nodeInstance) int { return strings.Compare(a.node.Name, b.node.Name) })
	zoneOf, err := regionZones(kept, region)
	if err != nil {
		return cloud.Inventory{}, skipped, err
	}

	inv := cloud.Inventory{
		SecurityGroups: []cloud.InventoryGroup{{Name: nodesGroup, VPC: "moat", Description: "Security group of the cluster's nodes", Tags: map[string]string{"Name": nodesGroup}}},
		Instances:      []cloud.InventoryInstance{},
		PrefixLists:    []cloud.InventoryPrefixList{},
	}
	var blocks []netip.Prefix // the /16s holding Nodes
	byZone := map[string][]nodeInstance{}
	for _, k := range kept {
		if b := netip.PrefixFrom(k.addr, 16).Masked(); !slices.Contains(blocks, b) {
			blocks = append(blocks, b)
		}
		byZone[zoneOf[k.zone]] = append(byZone[zoneOf[k.zone]], k)
	}
	vpc := cloud.InventoryVPC{Name: "moat", CIDR: blocks[0].String(), Default: true, Tags: map[string]string{"Name": "moat"}}
	for _, b := range blocks[1:] {
		vpc.SecondaryCIDRs = append(vpc.SecondaryCIDRs, b.String())
	}
	vpc.SecondaryCIDRs = append(vpc.SecondaryCIDRs, "127.0.0.0/8")
	inv.VPCs = []cloud.InventoryVPC{vpc}

	zones := make([]string, 0, len(byZone))
	for z := range byZone {
		zones = append(zones, z)
	}
	slices.Sort(zones)
	for _, z := range zones {
		letter := strings.TrimPrefix(z, region)
		lbName := "moat-" + letter
		inv.Subnets = append(inv.Subnets, cloud.InventorySubnet{
			Name: lbName, VPC: "moat", Zone: z, CIDR: fmt.Sprintf("127.%d.0.0/16", letter[0]-'a'+1), AvailableIPAddressCount: 65000,
			Tags: map[string]string{"Name": lbName, "kubernetes.io/role/elb": "1", "kubernetes.io/role/internal-elb": "1"},
		})
		members := byZone[z]
		if cover, ok := zoneCover(members, kept, zoneOf); ok {
			nodesName := "moat-nodes-" + letter
			inv.Subnets = append(inv.Subnets, nodeSubnet(nodesName, z, cover))
			for _, m := range members {
				inv.Instances = append(inv.Instances, instanceOf(m, nodesName))
			}
			continue
		}
		for _, m := range members {
			name := "moat-node-" + m.node.Name
			inv.Subnets = append(inv.Subnets, nodeSubnet(name, z, netip.PrefixFrom(m.addr, 32)))
			inv.Instances = append(inv.Instances, instanceOf(m, name))
		}
	}
	return inv, skipped, nil
}

// nodeIPv4 is the Node's first IPv4 InternalIP, or why it has none moat lb can use.
func nodeIPv4(n *corev1.Node) (netip.Addr, string) {
	var others []string
	for _, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		ip, err := netip.ParseAddr(a.Address)
		switch {
		case err != nil:
			others = append(others, fmt.Sprintf("%q", a.Address))
		case ip.Unmap().Is4() && ip.IsLoopback():
			return netip.Addr{}, fmt.Sprintf("its InternalIP %s is on loopback, where moat lb's load balancers are", ip)
		case ip.Unmap().Is4():
			return ip.Unmap(), ""
		default:
			others = append(others, ip.String())
		}
	}
	if len(others) == 0 {
		return netip.Addr{}, "no InternalIP in its status"
	}
	return netip.Addr{}, fmt.Sprintf("no IPv4 InternalIP (has %s): the derived VPC is IPv4", strings.Join(others, ", "))
}

// regionZones maps the Nodes' zone labels ("" for none) to zones of region: as they are when all
// are <region><letter>, else <region>a, b, … in sorted order.
func regionZones(kept []nodeInstance, region string) (map[string]string, error) {
	var labels []string
	for _, k := range kept {
		if !slices.Contains(labels, k.zone) {
			labels = append(labels, k.zone)
		}
	}
	slices.Sort(labels)
	inRegion := func(z string) bool {
		rest, ok := strings.CutPrefix(z, region)
		return ok && len(rest) == 1 && rest[0] >= 'a' && rest[0] <= 'z'
	}
	out := map[string]string{}
	if !slices.ContainsFunc(labels, func(z string) bool { return z != "" && !inRegion(z) }) {
		for _, z := range labels {
			out[z] = z
		}
		if _, ok := out[""]; ok {
			out[""] = region + "a"
		}
		return out, nil
	}
	if len(labels) > 26 {
		return nil, fmt.Errorf("the Nodes are in %d zones; a derived inventory maps them to %sa…z", len(labels), region)
	}
	for i, z := range labels {
		out[z] = region + string(rune('a'+i))
	}
	return out, nil
}

// zoneCover is the smallest prefix of at most /24 holding the members' addresses, and whether it
// can be their zone's subnet: it holds no other zone's Node and spans at most a /16.
func zoneCover(members, all []nodeInstance, zoneOf map[string]string) (netip.Prefix, bool) {
	bits := 24
	cover := netip.PrefixFrom(members[0].addr, bits).Masked()
	for slices.ContainsFunc(members, func(m nodeInstance) bool { return !cover.Contains(m.addr) }) {
		bits--
		cover = netip.PrefixFrom(members[0].addr, bits).Masked()
	}
	if bits < 16 {
		return cover, false
	}
	zone := zoneOf[members[0].zone]
	return cover, !slices.ContainsFunc(all, func(o nodeInstance) bool { return zoneOf[o.zone] != zone && cover.Contains(o.addr) })
}

func nodeSubnet(name, zone string, cidr netip.Prefix) cloud.InventorySubnet {
	// AWS keeps five addresses of a subnet; the count must stay positive for a /32 too.
	return cloud.InventorySubnet{Name: name, VPC: "moat", Zone: zone, CIDR: cidr.String(), AvailableIPAddressCount: max(1<<(32-cidr.Bits())-5, 1),
		Tags: map[string]string{"Name": name}}
}

func instanceOf(m nodeInstance, subnet string) cloud.InventoryInstance {
	return cloud.InventoryInstance{
		Name: m.node.Name, ID: nodeInstanceID(m.node), Subnet: subnet, PrivateIP: m.addr.String(),
		SecurityGroups: []string{nodesGroup}, Tags: map[string]string{"Name": m.node.Name},
	}
}

// nodeInstanceID is the instance ID in an AWS providerID (aws:///<zone>/<i-…>), else one derived
// from the Node's name, in AWS's format (i- and 17 hex digits).
func nodeInstanceID(n *corev1.Node) string {
	if rest, ok := strings.CutPrefix(n.Spec.ProviderID, "aws:///"); ok {
		if _, id, ok := strings.Cut(rest, "/"); ok && strings.HasPrefix(id, "i-") && !strings.Contains(id, "/") {
			return id
		}
	}
	sum := sha256.Sum256([]byte("node/" + n.Name))
	return "i-" + hex.EncodeToString(sum[:])[:17]
}

// deriveInventory lists the cluster's Nodes, derives moat lb's inventory from them and writes it
// to <state-dir>/inventory.yaml, where moat lb reads it (and re-reads it on SIGHUP) and the user
// can see it. It returns the file's path, or "" when no Node can be an instance: moat lb then
// serves its default inventory, which ip targets (pod addresses) do not need, and moat up says
// why instance targets will not register.
func deriveInventory(ctx context.Context, kube client.Client, stateDir string, p *progress) (string, error) {
	var nodes corev1.NodeList
	if err := kube.List(ctx, &nodes); err != nil {
		return "", fmt.Errorf("list Nodes, to derive moat lb's inventory: %w", err)
	}
	inv, skipped, err := nodeInventory(nodes.Items, region)
	for _, s := range skipped {
		p.detail(fmt.Sprintf("Node %s is no instance of moat lb: %s", s.name, s.reason))
	}
	if err != nil {
		p.step("no inventory derived from the Nodes: %v. moat lb serves its default inventory: ip targets work, instance targets find no instance (write an inventory and pass --inventory)", err)
		return "", nil
	}
	data, err := yaml.Marshal(inv)
	if err != nil {
		return "", err
	}
	path := filepath.Join(stateDir, "inventory.yaml")
	header := "# Derived by moat up from the cluster's Nodes; rewritten on every start. To keep your own,\n# copy it elsewhere and pass --inventory.\n"
	if err := os.WriteFile(path, append([]byte(header), data...), 0o600); err != nil {
		return "", err
	}
	var blocks []string
	for _, v := range inv.VPCs {
		blocks = append(append(blocks, v.CIDR), v.SecondaryCIDRs...)
	}
	p.step("derived moat lb's inventory from %d Nodes: VPC blocks %s, %s", len(inv.Instances), strings.Join(blocks, ", "), path)
	return path, nil
}
