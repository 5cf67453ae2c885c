package sgresolve

import (
	"net"
	"net/netip"
)

// HostAddrs reports which addresses are this host's (in its network namespace): those on its
// interfaces, and all of 127.0.0.0/8, which Linux delivers locally.
func HostAddrs() func(netip.Addr) bool {
	local := map[netip.Addr]bool{}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil {
				local[p.Addr().Unmap()] = true
			}
		}
	}
	return func(a netip.Addr) bool {
		a = a.Unmap()
		return local[a] || a.Is4() && a.IsLoopback()
	}
}
