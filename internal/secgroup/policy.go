package secgroup

import (
	"cmp"
	"encoding/binary"
	"net/netip"
	"slices"

	"go4.org/netipx"
)

// Policy is the compiled admission decision for one (protocol, port)
// endpoint: the union of the sources of every rule that matches the endpoint,
// kept as sorted, disjoint, non-adjacent address ranges per family. Compiling
// once per listener moves all the rule work to configuration time and leaves
// a binary search per flow.
//
// A Policy is immutable and safe for concurrent use; a rule change compiles a
// new Policy that the data plane swaps in (an atomic.Pointer is enough). The
// nil and zero Policy deny everything, which is the safe default for an
// endpoint whose rules are not known yet.
type Policy struct {
	all bool
	v4  []range4
	v6  []range6
}

type range4 struct{ lo, hi uint32 }

// u128 is an IPv6 address as a number, so ranges compare with two integer
// comparisons instead of netip.Addr's general (zone-aware) ordering.
type u128 struct{ hi, lo uint64 }

type range6 struct{ lo, hi u128 }

func (a u128) less(b u128) bool { return a.hi < b.hi || (a.hi == b.hi && a.lo < b.lo) }

func (a u128) next() u128 {
	if a.lo == ^uint64(0) {
		return u128{a.hi + 1, 0}
	}
	return u128{a.hi, a.lo + 1}
}

var maxU128 = u128{^uint64(0), ^uint64(0)}

func u128From(a netip.Addr) u128 {
	b := a.As16()
	return u128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
}

func (a u128) addr() netip.Addr {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], a.hi)
	binary.BigEndian.PutUint64(b[8:], a.lo)
	return netip.AddrFrom16(b)
}

func u32From(a netip.Addr) uint32 {
	b := a.As4()
	return binary.BigEndian.Uint32(b[:])
}

func addrFrom32(v uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

var allowAll = &Policy{
	all: true,
	v4:  []range4{{0, ^uint32(0)}},
	v6:  []range6{{u128{}, maxU128}},
}

// AllowAll returns the policy of a load balancer created without security
// groups, which on AWS admits every client on every listener.
func AllowAll() *Policy { return allowAll }

// Compile builds the admission policy of the endpoint (protocol, port) from
// the inbound rules of all the groups attached to a load balancer (AWS takes
// the union). A rule contributes its sources when Rule.Matches the endpoint;
// a TCP_UDP listener is two endpoints and is compiled twice. No rule, or no
// matching rule, means deny: groups are allow-only.
//
// A source that is an IPv4-mapped IPv6 prefix of /96 or longer is treated as
// the IPv4 prefix it maps, because Allows unmaps client addresses too; ::/0 and
// other shorter IPv6 prefixes stay IPv6 and so, as on AWS, do not admit IPv4
// clients. Compile costs O(s log s) in the number s of matching sources.
func Compile(rules []Rule, protocol int, port uint16) *Policy {
	var v4 []range4
	var v6 []range6
	for _, r := range rules {
		if !r.Matches(protocol, port) {
			continue
		}
		for _, src := range r.Sources {
			if !src.IsValid() {
				continue
			}
			src = src.Masked()
			a := src.Addr()
			if a.Is4In6() && src.Bits() >= 96 {
				src = netip.PrefixFrom(a.Unmap(), src.Bits()-96)
				a = src.Addr()
			}
			if a.Is4() {
				lo := u32From(a)
				v4 = append(v4, range4{lo, lo | hostMask32(src.Bits())})
			} else {
				lo := u128From(a)
				m := hostMask128(src.Bits())
				v6 = append(v6, range6{lo, u128{lo.hi | m.hi, lo.lo | m.lo}})
			}
		}
	}
	return &Policy{v4: merge4(v4), v6: merge6(v6)}
}

func hostMask32(bits int) uint32 {
	if bits <= 0 {
		return ^uint32(0)
	}
	return ^uint32(0) >> bits
}

func hostMask128(bits int) u128 {
	switch {
	case bits <= 0:
		return maxU128
	case bits < 64:
		return u128{^uint64(0) >> bits, ^uint64(0)}
	case bits < 128:
		return u128{0, ^uint64(0) >> (bits - 64)}
	}
	return u128{}
}

// merge4 sorts rs and coalesces overlapping and adjacent ranges in place, so
// that a lookup needs to look at one candidate range only.
func merge4(rs []range4) []range4 {
	if len(rs) == 0 {
		return nil
	}
	slices.SortFunc(rs, func(a, b range4) int { return cmp.Compare(a.lo, b.lo) })
	out := rs[:1]
	for _, r := range rs[1:] {
		last := &out[len(out)-1]
		if last.hi == ^uint32(0) || r.lo <= last.hi+1 {
			last.hi = max(last.hi, r.hi)
			continue
		}
		out = append(out, r)
	}
	return slices.Clip(out)
}

func merge6(rs []range6) []range6 {
	if len(rs) == 0 {
		return nil
	}
	slices.SortFunc(rs, func(a, b range6) int {
		switch {
		case a.lo.less(b.lo):
			return -1
		case b.lo.less(a.lo):
			return 1
		}
		return 0
	})
	out := rs[:1]
	for _, r := range rs[1:] {
		last := &out[len(out)-1]
		if last.hi == maxU128 || !last.hi.next().less(r.lo) {
			if last.hi.less(r.hi) {
				last.hi = r.hi
			}
			continue
		}
		out = append(out, r)
	}
	return slices.Clip(out)
}

// Allows reports whether a new flow from addr is admitted. An IPv4-mapped
// IPv6 address (what a dual-stack socket reports for an IPv4 client) is judged
// as the IPv4 address it is, and the zone is ignored. It is a binary search:
// about 14 comparisons for 10,000 disjoint ranges, and no allocation.
func (p *Policy) Allows(addr netip.Addr) bool {
	if p == nil || !addr.IsValid() {
		return false
	}
	if p.all {
		return true
	}
	addr = addr.Unmap()
	if addr.Is4() {
		return contains4(p.v4, u32From(addr))
	}
	return contains6(p.v6, u128From(addr))
}

func contains4(rs []range4, x uint32) bool {
	// Find the first range starting above x; only its predecessor can hold x.
	i, j := 0, len(rs)
	for i < j {
		h := int(uint(i+j) >> 1)
		if rs[h].lo <= x {
			i = h + 1
		} else {
			j = h
		}
	}
	return i > 0 && x <= rs[i-1].hi
}

func contains6(rs []range6, x u128) bool {
	i, j := 0, len(rs)
	for i < j {
		h := int(uint(i+j) >> 1)
		if !x.less(rs[h].lo) {
			i = h + 1
		} else {
			j = h
		}
	}
	return i > 0 && !rs[i-1].hi.less(x)
}

// Ranges returns the admitted addresses as sorted, disjoint, non-adjacent
// ranges per family: the input of the BPF filter generator, and a readable
// form for logs and debugging. AllowAll yields the two whole address spaces.
func (p *Policy) Ranges() (v4, v6 []netipx.IPRange) {
	if p == nil {
		return nil, nil
	}
	for _, r := range p.v4 {
		v4 = append(v4, netipx.IPRangeFrom(addrFrom32(r.lo), addrFrom32(r.hi)))
	}
	for _, r := range p.v6 {
		v6 = append(v6, netipx.IPRangeFrom(r.lo.addr(), r.hi.addr()))
	}
	return v4, v6
}

// With returns a policy that admits what p admits and also addrs, leaving p
// unchanged. It exists for UDP: one listening socket receives the datagrams
// of every flow, so a filter recompiled after a revoke would also cut the
// established flows of clients the new rules deny. Compiling the socket
// filter from newPolicy.With(activeClients...) keeps them flowing, while the
// data plane still judges new flows with newPolicy itself.
func (p *Policy) With(addrs ...netip.Addr) *Policy {
	if p != nil && p.all {
		return p
	}
	q := &Policy{}
	if p != nil {
		q.v4 = slices.Clone(p.v4)
		q.v6 = slices.Clone(p.v6)
	}
	for _, a := range addrs {
		if !a.IsValid() {
			continue
		}
		if a = a.Unmap(); a.Is4() {
			x := u32From(a)
			q.v4 = append(q.v4, range4{x, x})
		} else {
			x := u128From(a)
			q.v6 = append(q.v6, range6{x, x})
		}
	}
	q.v4, q.v6 = merge4(q.v4), merge6(q.v6)
	return q
}

// Equal reports whether p and q admit exactly the same clients, so that a
// rule change that does not affect an endpoint need not regenerate and
// re-attach its socket filter.
func (p *Policy) Equal(q *Policy) bool {
	if p == nil || q == nil {
		return p.isEmpty() && q.isEmpty()
	}
	return slices.Equal(p.v4, q.v4) && slices.Equal(p.v6, q.v6)
}

func (p *Policy) isEmpty() bool { return p == nil || (len(p.v4) == 0 && len(p.v6) == 0) }
