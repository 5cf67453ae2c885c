package cloud

import (
	"errors"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/moatlb/moat/internal/store"
)

// ResolveName returns the addresses of a load balancer DNS name: <dns-name> gives the address of
// every served zone (see SetServedZones) that has a healthy target (of every served zone when
// none has one, as AWS does), and <zone>.<dns-name> the address in that zone if it is served. ok
// is false when no load balancer has the name.
func (c *Cloud) ResolveName(name string) (addrs []netip.Addr, ok bool) {
	var lb LoadBalancer
	var used []TargetGroup // by its listeners
	zone, perZone := "", false
	err := c.store.View(func(tx store.Tx) error {
		lbs, err := c.lbIndex(tx)
		if err != nil {
			return err
		}
		name = strings.ToLower(name)
		var found bool
		lb, found = lbs.withDNSName(name)
		if !found {
			// <zone>.<dns-name>: zone names have no dots.
			var rest string
			if zone, rest, perZone = strings.Cut(name, "."); perZone {
				lb, found = lbs.withDNSName(rest)
			}
		}
		if !found {
			return errNoSuchName
		}
		listeners, err := c.listenerIndex(tx)
		if err != nil {
			return err
		}
		tgs, err := c.tgIndex(tx)
		if err != nil {
			return err
		}
		for _, l := range listeners.of(lb.ARN) {
			if tg, ok := tgs.named(l.TargetGroupARN); ok && !slices.ContainsFunc(used, func(u TargetGroup) bool { return u.ARN == tg.ARN }) {
				tg.Targets = tg.CurrentTargets(c.cfg.Now())
				used = append(used, tg)
			}
		}
		return nil
	})
	if err != nil {
		return nil, false
	}
	served := func(string) bool { return true }
	if s := c.served.Load(); s != nil {
		served = s.served
	}
	healthy := c.healthyZones(lb, used)
	someHealthy := slices.ContainsFunc(lb.Zones, func(z LoadBalancerZone) bool { return healthy[z.Zone] && served(z.Zone) })
	for _, z := range lb.Zones {
		if !served(z.Zone) || perZone && z.Zone != zone || !perZone && someHealthy && !healthy[z.Zone] {
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

// servedZones boxes the zone filter for an atomic pointer.
type servedZones struct{ served func(zone string) bool }

// SetServedZones makes DNS answer only with the zones served says a node serves (holds the zone's
// lease): an address nobody serves would only time out. Without it every zone is served.
func (c *Cloud) SetServedZones(served func(zone string) bool) {
	c.served.Store(&servedZones{served})
}

// errNoSuchName ends ResolveName's transaction for a name no load balancer has.
var errNoSuchName = errors.New("no such name")

// healthyZones are the zones of lb that DNS should answer with: per target group its listeners
// use (used), a zone is healthy when it has at least
// target_group_health.dns_failover.minimum_healthy_targets.count healthy targets (default 1) and
// that .percentage of its targets (default off). With cross-zone load balancing the thresholds
// apply to the group's targets in all zones, and a target outside the VPC (zone "all") counts in
// every zone.
func (c *Cloud) healthyZones(lb LoadBalancer, used []TargetGroup) map[string]bool {
	src := c.health.Load()
	if src == nil || src.HealthReporter == nil {
		return nil
	}
	crossZone := lb.Attributes["load_balancing.cross_zone.enabled"] == "true"
	healthyZones := map[string]bool{}
	now := c.cfg.Now()
	for _, tg := range used {
		minCount := max(AttributeInt(tg.Attributes["target_group_health.dns_failover.minimum_healthy_targets.count"], 1), 1)
		minPercent := AttributeInt(tg.Attributes["target_group_health.dns_failover.minimum_healthy_targets.percentage"], 0)
		healthy, total := map[string]int{}, map[string]int{}
		for _, t := range tg.Targets {
			if t.Draining(now) {
				continue
			}
			zones := []string{t.AvailabilityZone}
			if crossZone || t.AvailabilityZone == "all" {
				zones = nil
				for _, z := range lb.Zones {
					zones = append(zones, z.Zone)
				}
			}
			h, ok := src.TargetHealth(tg.ARN, t.ID, t.Port)
			for _, z := range zones {
				total[z]++
				if ok && h.State == "healthy" {
					healthy[z]++
				}
			}
		}
		for z, n := range healthy {
			if n >= minCount && n*100 >= minPercent*total[z] {
				healthyZones[z] = true
			}
		}
	}
	return healthyZones
}

// AttributeInt reads a numeric attribute value ("off", absent or malformed gives def), for the
// attributes that take a number or "off".
func AttributeInt(s string, def int) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return def
	}
	return n
}

// Provisioning returns the ARNs of load balancers still in the provisioning state.
func (c *Cloud) Provisioning() ([]string, error) {
	var arns []string
	err := c.store.View(func(tx store.Tx) error {
		lbs, err := store.ListShared[LoadBalancer](tx, bucketLoadBalancers)
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
// groups, the interfaces and instances carrying them, prefix lists and subnets. Its maps and
// slices are shared with the store's cache: read them, never write through them (see
// store.ListShared).
type State struct {
	ELBSnapshot
	SecurityGroups []SecurityGroup
	Interfaces     []NetworkInterface
	Instances      []Instance
	PrefixLists    []PrefixList
	Subnets        []Subnet
	// Certificates are the ACM certificates, private keys included, for TLS listeners.
	Certificates []Certificate
}

// State reads the data plane's desired state in one transaction.
func (c *Cloud) State() (State, error) {
	var st State
	err := c.store.View(func(tx store.Tx) (err error) {
		if st.ELBSnapshot, err = c.elbSnapshot(tx); err != nil {
			return err
		}
		groups, err := c.groupIndex(tx)
		if err != nil {
			return err
		}
		st.SecurityGroups = groups.all()
		if st.Interfaces, err = store.ListShared[NetworkInterface](tx, bucketInterfaces); err != nil {
			return err
		}
		if st.Instances, err = store.ListShared[Instance](tx, bucketInstances); err != nil {
			return err
		}
		if st.PrefixLists, err = store.ListShared[PrefixList](tx, bucketPrefixLists); err != nil {
			return err
		}
		if st.Subnets, err = store.ListShared[Subnet](tx, bucketSubnets); err != nil {
			return err
		}
		st.Certificates, err = store.ListShared[Certificate](tx, bucketCertificates)
		return err
	})
	return st, err
}
