// Package secgroup is moat's security-group rule model and the admission
// decision the data plane takes for every new flow.
//
// A load balancer listener is an endpoint (protocol, port) known when the
// listener is configured, so the union of the inbound rules of the load
// balancer's groups is compiled once per endpoint into a Policy: a sorted set
// of disjoint address ranges. The per-flow check is then a binary search
// (O(log n) in the number of rules), never a scan of the rules, which is what
// keeps the decision off the data plane's profile as rule sets grow.
//
// The package also turns a Policy into a classic BPF socket filter, so that a
// listening TCP socket drops the SYNs of denied clients in the kernel. That is
// how moat gets AWS's "silent drop" (the client times out) without privileges;
// when a policy is too large for a filter, the data plane falls back to
// accept-and-reset (the client sees a reset instead). SocketFilter documents
// what clients observe in each case, and AttachFilter what the data plane
// must do on every accepted connection.
//
// Everything except AttachFilter, DetachFilter and AttachPolicy is pure: no
// I/O, no clock, no globals, so callers can compile policies anywhere and
// swap them atomically.
package secgroup

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Protocol numbers as AWS normalises them. ProtocolAll (-1) is AWS's "all
// protocols, all ports"; the others are IP protocol numbers.
const (
	ProtocolAll    = -1
	ProtocolICMP   = 1
	ProtocolTCP    = 6
	ProtocolUDP    = 17
	ProtocolICMPv6 = 58
)

// Rule is one inbound security-group rule with its source already resolved to
// address prefixes: a referenced group becomes the /32 or /128 of each private
// IP carrying that group, a prefix list becomes its entries. Resolving is the
// caller's job because it needs the store; keeping it out of here keeps the
// decision pure and testable.
type Rule struct {
	// Protocol is ProtocolAll or an IP protocol number (0-255).
	Protocol int
	// FromPort and ToPort are an inclusive port range for tcp and udp. A
	// negative bound is open (-1/-1 means every port). They are ignored for
	// ProtocolAll and for every other protocol: for icmp and icmpv6 AWS
	// stores the ICMP type and code there, which say nothing about ports.
	FromPort, ToPort int
	// Sources are the client prefixes the rule admits. Non-canonical
	// prefixes (10.0.0.18/8) are masked; invalid ones are ignored.
	Sources []netip.Prefix
}

// Matches reports whether r applies to flows of the given protocol to the
// given port, following AWS: the protocol is -1 or equal, and for tcp and udp
// the port range covers port. The source is not considered.
func (r Rule) Matches(protocol int, port uint16) bool {
	if r.Protocol == ProtocolAll {
		return true
	}
	if r.Protocol != protocol {
		return false
	}
	if protocol != ProtocolTCP && protocol != ProtocolUDP {
		return true
	}
	from, to := r.FromPort, r.ToPort
	if from < 0 {
		from = 0
	}
	if to < 0 {
		to = 65535
	}
	return from <= int(port) && int(port) <= to
}

// ParseProtocol normalises an AWS IpProtocol value the way EC2 does: the names
// tcp, udp, icmp and icmpv6 (any case) and their numbers map to the number,
// "-1" and "all" to ProtocolAll, and any other number 0-255 to itself. The API
// layer shares it so that rules compare equal however the client spelled them.
func ParseProtocol(s string) (int, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "tcp":
		return ProtocolTCP, nil
	case "udp":
		return ProtocolUDP, nil
	case "icmp":
		return ProtocolICMP, nil
	case "icmpv6":
		return ProtocolICMPv6, nil
	case "-1", "all":
		return ProtocolAll, nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 0 || n > 255 {
		return 0, fmt.Errorf("invalid IP protocol %q: want tcp, udp, icmp, icmpv6, -1 or a number 0-255", s)
	}
	return n, nil
}

// ProtocolName is the inverse of ParseProtocol in the form EC2 answers with:
// "tcp", "udp", "icmp", "icmpv6", "-1", or the decimal number.
func ProtocolName(p int) string {
	switch p {
	case ProtocolTCP:
		return "tcp"
	case ProtocolUDP:
		return "udp"
	case ProtocolICMP:
		return "icmp"
	case ProtocolICMPv6:
		return "icmpv6"
	case ProtocolAll:
		return "-1"
	}
	return strconv.Itoa(p)
}
