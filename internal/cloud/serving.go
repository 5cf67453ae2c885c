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
