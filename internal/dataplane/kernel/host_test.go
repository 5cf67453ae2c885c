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
	lb6 := netip.MustParseAddrPort("[2001:db8::1]:80")
	remote6 := netip.MustParseAddrPort("[2001:db8:1::5]:8080")
	local6 := netip.MustParseAddrPort("[2001:db8::2]:8080")
	on := hostNet{forwarding: [families]bool{true, true}}
	off := hostNet{local: map[netip.Addr]bool{lb.Addr(): true, local.Addr(): true, lb6.Addr(): true, local6.Addr(): true}}
	only4 := hostNet{forwarding: [families]bool{ipv4: true}, local: off.local}
	only6 := hostNet{forwarding: [families]bool{ipv6: true}, local: off.local}
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
		{"IPv6 forwarded target, forwarding on", on, sock(lb6, remote6), true},
		{"IPv6 forwarded target, only IPv4 forwarding on", only4, sock(lb6, remote6), false},
		{"IPv4 forwarded target, only IPv6 forwarding on", only6, sock(lb, remote), false},
		{"IPv6 forwarded target, only IPv6 forwarding on", only6, sock(lb6, remote6), true},
		{"IPv6 target on this host, forwarding off", off, sock(lb6, local6), true},
		{"IPv6 loopback target", on, sock(lb6, netip.MustParseAddrPort("[::1]:8080")), false},
	} {
		if got := c.h.ingress(c.s); got != c.want {
			t.Errorf("%s: ingress %v, want %v", c.name, got, c.want)
		}
	}
}
