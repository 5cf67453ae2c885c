//go:build linux && !moat_portable

package kernel

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
)

// forwardingFile is, by family, the forwarding switch of the network
// namespace moat lb runs in (/proc/sys/net shows the reader's namespace).
var forwardingFile = [families]string{"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"}

// readHostNet reads each family's forwarding switch and, when one is off,
// this host's addresses. A host without IPv6 has no IPv6 switch: off.
func readHostNet() (hostNet, error) {
	var h hostNet
	for f, name := range forwardingFile {
		v, err := os.ReadFile(name)
		if errors.Is(err, fs.ErrNotExist) && family(f) == ipv6 {
			h.noIPv6 = true
			continue
		}
		if err != nil {
			return hostNet{}, err
		}
		h.forwarding[f] = string(bytes.TrimSpace(v)) != "0"
	}
	if h.forwarding == [families]bool{true, true} {
		return h, nil
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return hostNet{}, fmt.Errorf("list the host's addresses: %w", err)
	}
	h.local = map[netip.Addr]bool{}
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			h.local[p.Addr().Unmap()] = true
		}
	}
	return h, nil
}
