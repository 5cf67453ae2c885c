package lb

import (
	"net/netip"
	"slices"

	"github.com/moatlb/moat/internal/cloud"
)

// loopbackRange is local to every host without a route of moat's: addresses there bind as they are.
var loopbackRange = netip.MustParsePrefix("127.0.0.0/8")

// localRanges are the blocks of the subnets made by CreateSubnet outside 127.0.0.0/8. Their load
// balancers' addresses bind only once the block is local to the host, which moat lb makes it where
// it may (a local route on loopback). Inventory subnets are the operator's to route.
func localRanges(st cloud.State) []netip.Prefix {
	var out []netip.Prefix
	for _, sn := range st.Subnets {
		p, err := netip.ParsePrefix(sn.CIDR)
		if err != nil || !sn.FromAPI || loopbackRange.Overlaps(p) {
			continue
		}
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return out
}
