//go:build linux && !moat_portable

package kernel

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
)

// ipForward is the forwarding switch of the network namespace moat lb runs
// in (/proc/sys/net shows the reader's namespace).
const ipForward = "/proc/sys/net/ipv4/ip_forward"

// readHostNet reads net.ipv4.ip_forward and, when it is off, this host's
// IPv4 addresses.
func readHostNet() (hostNet, error) {
	v, err := os.ReadFile(ipForward)
	if err != nil {
		return hostNet{}, err
	}
	h := hostNet{forwarding: string(bytes.TrimSpace(v)) != "0"}
	if h.forwarding {
		return h, nil
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return hostNet{}, fmt.Errorf("list the host's addresses: %w", err)
	}
	h.local = map[netip.Addr]bool{}
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Unmap().Is4() {
			h.local[p.Addr().Unmap()] = true
		}
	}
	return h, nil
}
