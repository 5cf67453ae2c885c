package kernel

import (
	"net/netip"
	"testing"
)

// TestIngress: which sockets' flows from other hosts the kernel may take.
func TestIngress(t *testing.T) {
	lb := netip.MustParseAddrPort("198.51.100.1:80")
	local := netip.MustParseAddrPort("198.51.100.2:8080")
	remote := netip.MustParseAddrPort("203.0.113.5:8080")
	loop := netip.MustParseAddrPort("127.1.0.10:8080")
	sock := func(addr netip.AddrPort, targets ...netip.AddrPort) Socket {
		return Socket{Key: Key{TCP, addr}, Forward: &Forward{AdmitAll: true, Targets: targets}}
	}
	on := hostNet{forwarding: true}
	off := hostNet{local: map[netip.Addr]bool{lb.Addr(): true, local.Addr(): true}}
	for _, c := range []struct {
		name string
		h    hostNet
		s    Socket
		want bool
	}{
		{"forwarded target, forwarding on", on, sock(lb, remote), true},
		{"forwarded target, forwarding off", off, sock(lb, remote), false},
		{"target on this host, forwarding off", off, sock(lb, local), true},
		{"one forwarded target among local ones, forwarding off", off, sock(lb, local, remote), false},
		{"loopback target: a martian from an interface", on, sock(lb, remote, loop), false},
		{"loopback load balancer address", on, sock(netip.MustParseAddrPort("127.1.0.100:80"), remote), false},
		{"no new flows", on, Socket{Key: Key{TCP, lb}}, false},
	} {
		if got := c.h.ingress(c.s); got != c.want {
			t.Errorf("%s: ingress %v, want %v", c.name, got, c.want)
		}
	}
}
