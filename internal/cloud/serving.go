package cloud

import (
	"net/netip"
	"strings"

	"github.com/moatlb/moat/internal/store"
)

// ResolveName returns the addresses of a load balancer DNS name: <dns-name> gives the address in
// every zone, <zone>.<dns-name> the address in that zone. ok is false when no load balancer has
// the name.
func (c *Cloud) ResolveName(name string) (addrs []netip.Addr, ok bool) {
	var lbs []LoadBalancer
	if err := c.store.View(func(tx store.Tx) (err error) {
		lbs, err = store.List[LoadBalancer](tx, bucketLoadBalancers)
		return err
	}); err != nil {
		return nil, false
	}
	name = strings.ToLower(name)
	for _, lb := range lbs {
		dnsName := strings.ToLower(lb.DNSName)
		zone, perZone := strings.CutSuffix(name, "."+dnsName)
		if name != dnsName && !perZone {
			continue
		}
		for _, z := range lb.Zones {
			if perZone && z.Zone != zone {
				continue
			}
			for _, s := range []string{z.Address, z.IPv6Address} {
				if a, err := netip.ParseAddr(s); err == nil {
					addrs = append(addrs, a)
				}
			}
		}
		return addrs, !perZone || len(addrs) > 0
	}
	return nil, false
}

// Provisioning returns the ARNs of load balancers still in the provisioning state.
func (c *Cloud) Provisioning() ([]string, error) {
	var arns []string
	err := c.store.View(func(tx store.Tx) error {
		lbs, err := store.List[LoadBalancer](tx, bucketLoadBalancers)
		for _, lb := range lbs {
			if lb.State == "provisioning" {
				arns = append(arns, lb.ARN)
			}
		}
		return err
	})
	return arns, err
}

// State is everything the data plane needs at one instant: the load balancers with their
// listeners and target groups, and the network that decides who may reach them — security
// groups, the interfaces and instances carrying them, prefix lists and subnets.
type State struct {
	ELBSnapshot
	SecurityGroups []SecurityGroup
	Interfaces     []NetworkInterface
	Instances      []Instance
	PrefixLists    []PrefixList
	Subnets        []Subnet
}

// State reads the data plane's desired state in one transaction.
func (c *Cloud) State() (State, error) {
	var st State
	err := c.store.View(func(tx store.Tx) (err error) {
		if st.ELBSnapshot, err = c.elbSnapshot(tx); err != nil {
			return err
		}
		if st.SecurityGroups, err = store.List[SecurityGroup](tx, bucketSecurityGroups); err != nil {
			return err
		}
		if st.Interfaces, err = store.List[NetworkInterface](tx, bucketInterfaces); err != nil {
			return err
		}
		if st.Instances, err = store.List[Instance](tx, bucketInstances); err != nil {
			return err
		}
		if st.PrefixLists, err = store.List[PrefixList](tx, bucketPrefixLists); err != nil {
			return err
		}
		st.Subnets, err = store.List[Subnet](tx, bucketSubnets)
		return err
	})
	return st, err
}
