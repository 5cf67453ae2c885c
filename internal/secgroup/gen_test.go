package secgroup

import (
	"math/rand/v2"
	"net/netip"

	"go4.org/netipx"
)

// refAllows is the specification of Compile+Allows, written to be obviously
// right rather than fast: a linear scan of the rules, straight from AWS's
// documented semantics.
func refAllows(rules []Rule, protocol int, port uint16, addr netip.Addr) bool {
	if !addr.IsValid() {
		return false
	}
	addr = addr.Unmap().WithZone("")
	for _, r := range rules {
		if r.Protocol != ProtocolAll {
			if r.Protocol != protocol {
				continue
			}
			if protocol == ProtocolTCP || protocol == ProtocolUDP {
				from, to := r.FromPort, r.ToPort
				if from < 0 {
					from = 0
				}
				if to < 0 {
					to = 65535
				}
				if int(port) < from || int(port) > to {
					continue
				}
			}
		}
		for _, src := range r.Sources {
			if src.IsValid() && src.Addr().Is4In6() && src.Bits() >= 96 {
				src = netip.PrefixFrom(src.Addr().Unmap(), src.Bits()-96)
			}
			if src.IsValid() && src.Contains(addr) {
				return true
			}
		}
	}
	return false
}

// caseGen draws random rule sets and queries. Sources are biased into
// 127.0.0.0/8, so that the same cases can be replayed with real sockets on
// loopback, and towards overlaps and shared boundaries, where bugs live.
type caseGen struct{ r *rand.Rand }

func newCaseGen(seed uint64) caseGen { return caseGen{rand.New(rand.NewPCG(seed, 0x5ec9))} }

var protocolChoices = []int{ProtocolAll, ProtocolTCP, ProtocolUDP, ProtocolICMP, ProtocolICMPv6, 47, ProtocolTCP, ProtocolUDP}

func (g caseGen) protocol() int {
	if g.r.IntN(10) == 0 {
		return g.r.IntN(256)
	}
	return protocolChoices[g.r.IntN(len(protocolChoices))]
}

func clampPort(p int) int { return max(0, min(65535, p)) }

// ports returns a rule's port range around the endpoint's port hot.
func (g caseGen) ports(hot int) (from, to int) {
	switch g.r.IntN(9) {
	case 0:
		return -1, -1
	case 1:
		return hot, hot
	case 2:
		k := g.r.IntN(3)
		return clampPort(hot - k), clampPort(hot + g.r.IntN(3))
	case 3:
		return 0, 65535
	case 4: // just misses
		if g.r.IntN(2) == 0 {
			return clampPort(hot + 1), clampPort(hot + 10)
		}
		return clampPort(hot - 10), clampPort(hot - 1)
	case 5: // inverted: covers nothing
		return clampPort(hot + 1), clampPort(hot - 1)
	case 6:
		return -1, hot
	case 7:
		return hot, -1
	}
	a, b := g.r.IntN(65536), g.r.IntN(65536)
	return min(a, b), max(a, b)
}

func (g caseGen) v4(a, b, c, d int) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(a), byte(b), byte(c), byte(d)})
}

// loopback is a random 127.x.y.z address a test client can bind to.
func (g caseGen) loopback() netip.Addr {
	return g.v4(127, g.r.IntN(4), g.r.IntN(256), 1+g.r.IntN(254))
}

func (g caseGen) prefix() netip.Prefix {
	switch n := g.r.IntN(100); {
	case n < 60: // inside 127.0.0.0/8, clustered so that prefixes overlap
		return netip.PrefixFrom(g.loopback(), 8+g.r.IntN(25)) // not masked on purpose
	case n < 68:
		return netip.PrefixFrom(g.v4(g.r.IntN(256), g.r.IntN(256), g.r.IntN(256), g.r.IntN(256)), g.r.IntN(33))
	case n < 71:
		return netip.MustParsePrefix("0.0.0.0/0")
	case n < 74:
		return netip.MustParsePrefix("::1/128")
	case n < 76:
		return netip.MustParsePrefix("::/0")
	case n < 85:
		var b [16]byte
		b[0], b[1], b[2], b[3] = 0x20, 0x01, 0x0d, 0xb8
		for i := 4; i < 16; i++ {
			b[i] = byte(g.r.IntN(4))
		}
		return netip.PrefixFrom(netip.AddrFrom16(b), 32+g.r.IntN(97))
	case n < 92: // 4-in-6 mapped sources
		a := g.loopback().As16()
		return netip.PrefixFrom(netip.AddrFrom16(a), 90+g.r.IntN(39))
	case n < 95:
		return netip.Prefix{} // invalid: ignored
	}
	var b [16]byte
	for i := range b {
		b[i] = byte(g.r.IntN(256))
	}
	return netip.PrefixFrom(netip.AddrFrom16(b), g.r.IntN(129))
}

// rules draws up to max rules for an endpoint whose port is hot.
func (g caseGen) rules(hot, maxRules int) []Rule {
	rules := make([]Rule, g.r.IntN(maxRules+1))
	for i := range rules {
		r := Rule{Protocol: g.protocol()}
		r.FromPort, r.ToPort = g.ports(hot)
		r.Sources = make([]netip.Prefix, g.r.IntN(5))
		for j := range r.Sources {
			r.Sources[j] = g.prefix()
		}
		rules[i] = r
	}
	return rules
}

// endpoint draws the (protocol, port) a query is compiled for.
func (g caseGen) endpoint(rules []Rule, hot int) (int, uint16) {
	proto := ProtocolTCP
	switch g.r.IntN(10) {
	case 0, 1, 2:
		proto = ProtocolUDP
	case 3:
		proto = ProtocolICMP
	case 4:
		proto = g.protocol()
	}
	port := hot
	if g.r.IntN(3) == 0 && len(rules) > 0 {
		r := rules[g.r.IntN(len(rules))]
		port = clampPort([]int{r.FromPort - 1, r.FromPort, r.ToPort, r.ToPort + 1, g.r.IntN(65536)}[g.r.IntN(5)])
	}
	return proto, uint16(port)
}

// addr draws a client address: mostly at or next to a source boundary.
func (g caseGen) addr(rules []Rule) netip.Addr {
	var srcs []netip.Prefix
	for _, r := range rules {
		for _, s := range r.Sources {
			if s.IsValid() {
				srcs = append(srcs, s)
			}
		}
	}
	var a netip.Addr
	if len(srcs) > 0 && g.r.IntN(4) != 0 {
		rg := netipx.RangeOfPrefix(srcs[g.r.IntN(len(srcs))].Masked())
		switch g.r.IntN(4) {
		case 0:
			a = rg.From()
		case 1:
			a = rg.To()
		case 2:
			a = rg.From().Prev()
		default:
			a = rg.To().Next()
		}
		if !a.IsValid() {
			a = rg.From()
		}
	} else {
		switch g.r.IntN(3) {
		case 0:
			a = g.loopback()
		case 1:
			a = netip.IPv6Loopback()
		default:
			a = g.v4(g.r.IntN(256), g.r.IntN(256), g.r.IntN(256), g.r.IntN(256))
		}
	}
	switch g.r.IntN(8) {
	case 0: // as a dual-stack socket reports an IPv4 client
		if a.Is4() {
			a = netip.AddrFrom16(a.As16())
		}
	case 1:
		if a.Is6() && !a.Is4In6() {
			a = a.WithZone("lo")
		}
	}
	return a
}
