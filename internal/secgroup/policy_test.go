package secgroup

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"go4.org/netipx"
)

func pfx(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

func TestCompileAllows(t *testing.T) {
	tcp := func(from, to int, srcs ...string) Rule {
		return Rule{Protocol: ProtocolTCP, FromPort: from, ToPort: to, Sources: pfx(srcs...)}
	}
	tests := []struct {
		name     string
		rules    []Rule
		protocol int
		port     uint16
		allow    []string
		deny     []string
	}{
		{
			name:     "no rules deny everything",
			protocol: ProtocolTCP, port: 80,
			deny: []string{"127.0.0.1", "0.0.0.0", "255.255.255.255", "::1", "::"},
		},
		{
			name:     "protocol -1 matches any protocol and port",
			rules:    []Rule{{Protocol: ProtocolAll, FromPort: 22, ToPort: 22, Sources: pfx("10.0.0.0/8")}},
			protocol: ProtocolUDP, port: 53,
			allow: []string{"10.0.0.0", "10.255.255.255"},
			deny:  []string{"9.255.255.255", "11.0.0.0"},
		},
		{
			name:     "port range edges are inclusive",
			rules:    []Rule{tcp(8000, 8080, "0.0.0.0/0")},
			protocol: ProtocolTCP, port: 8080,
			allow: []string{"1.2.3.4"},
		},
		{
			name:     "port just above the range",
			rules:    []Rule{tcp(8000, 8080, "0.0.0.0/0")},
			protocol: ProtocolTCP, port: 8081,
			deny: []string{"1.2.3.4"},
		},
		{
			name:     "port just below the range",
			rules:    []Rule{tcp(8000, 8080, "0.0.0.0/0")},
			protocol: ProtocolTCP, port: 7999,
			deny: []string{"1.2.3.4"},
		},
		{
			name:     "-1 ports mean all ports",
			rules:    []Rule{tcp(-1, -1, "0.0.0.0/0")},
			protocol: ProtocolTCP, port: 65535,
			allow: []string{"1.2.3.4"},
		},
		{
			name:     "inverted range covers nothing",
			rules:    []Rule{tcp(81, 79, "0.0.0.0/0")},
			protocol: ProtocolTCP, port: 80,
			deny: []string{"1.2.3.4"},
		},
		{
			name:     "tcp rule does not admit udp",
			rules:    []Rule{tcp(53, 53, "0.0.0.0/0")},
			protocol: ProtocolUDP, port: 53,
			deny: []string{"1.2.3.4"},
		},
		{
			name:     "icmp rule does not admit tcp, whatever its type and code",
			rules:    []Rule{{Protocol: ProtocolICMP, FromPort: -1, ToPort: -1, Sources: pfx("0.0.0.0/0", "::/0")}},
			protocol: ProtocolTCP, port: 80,
			deny: []string{"1.2.3.4", "::1"},
		},
		{
			name:     "icmp endpoint ignores type and code",
			rules:    []Rule{{Protocol: ProtocolICMP, FromPort: 3, ToPort: 4, Sources: pfx("0.0.0.0/0")}},
			protocol: ProtocolICMP, port: 0,
			allow: []string{"1.2.3.4"},
		},
		{
			name:     "other protocol numbers ignore ports",
			rules:    []Rule{{Protocol: 47, FromPort: 1, ToPort: 1, Sources: pfx("0.0.0.0/0")}},
			protocol: 47, port: 9,
			allow: []string{"1.2.3.4"},
		},
		{
			name: "overlapping and adjacent CIDRs union",
			rules: []Rule{
				tcp(80, 80, "127.0.0.0/24", "127.0.0.128/25"),
				tcp(80, 80, "127.0.1.0/24"),
				tcp(0, 79, "127.0.2.0/24"),
				{Protocol: ProtocolAll, Sources: pfx("127.0.3.7/32")},
			},
			protocol: ProtocolTCP, port: 80,
			allow: []string{"127.0.0.0", "127.0.0.200", "127.0.1.255", "127.0.3.7"},
			deny:  []string{"126.255.255.255", "127.0.2.0", "127.0.3.6", "127.0.3.8"},
		},
		{
			name:     "non-canonical prefix is masked",
			rules:    []Rule{tcp(80, 80, "10.0.0.18/8")},
			protocol: ProtocolTCP, port: 80,
			allow: []string{"10.0.0.1", "10.200.0.0"},
		},
		{
			name:     "/0 covers the whole family, and only it",
			rules:    []Rule{tcp(80, 80, "0.0.0.0/0")},
			protocol: ProtocolTCP, port: 80,
			allow: []string{"0.0.0.0", "255.255.255.255", "::ffff:1.2.3.4"},
			deny:  []string{"::1", "::"},
		},
		{
			name:     "::/0 does not admit IPv4 or 4-in-6 clients",
			rules:    []Rule{tcp(80, 80, "::/0")},
			protocol: ProtocolTCP, port: 80,
			allow: []string{"::", "::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "fe80::1%lo"},
			deny:  []string{"127.0.0.1", "::ffff:127.0.0.1"},
		},
		{
			name:     "IPv6 prefixes",
			rules:    []Rule{tcp(80, 80, "2001:db8::/32", "::1/128")},
			protocol: ProtocolTCP, port: 80,
			allow: []string{"2001:db8::", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", "::1"},
			deny:  []string{"2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", "2001:db9::", "::2", "::"},
		},
		{
			name:     "4-in-6 client is judged as IPv4",
			rules:    []Rule{tcp(80, 80, "127.0.0.0/8")},
			protocol: ProtocolTCP, port: 80,
			allow: []string{"::ffff:127.0.0.1", "127.0.0.1"},
			deny:  []string{"::ffff:128.0.0.1"},
		},
		{
			name:     "4-in-6 source is an IPv4 source",
			rules:    []Rule{tcp(80, 80, "::ffff:127.0.0.0/104")},
			protocol: ProtocolTCP, port: 80,
			allow: []string{"127.1.2.3", "::ffff:127.1.2.3"},
			deny:  []string{"128.0.0.0"},
		},
		{
			name:     "invalid sources are ignored",
			rules:    []Rule{{Protocol: ProtocolAll, Sources: []netip.Prefix{{}}}},
			protocol: ProtocolTCP, port: 80,
			deny: []string{"0.0.0.0", "::"},
		},
		{
			name:     "address space ends",
			rules:    []Rule{tcp(80, 80, "0.0.0.0/32", "255.255.255.255/32", "::/128", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128")},
			protocol: ProtocolTCP, port: 80,
			allow: []string{"0.0.0.0", "255.255.255.255", "::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"},
			deny:  []string{"0.0.0.1", "255.255.255.254", "::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := Compile(tt.rules, tt.protocol, tt.port)
			for _, s := range tt.allow {
				if a := netip.MustParseAddr(s); !p.Allows(a) {
					t.Errorf("Allows(%s) = false, want true", s)
				}
			}
			for _, s := range tt.deny {
				if a := netip.MustParseAddr(s); p.Allows(a) {
					t.Errorf("Allows(%s) = true, want false", s)
				}
			}
			if p.Allows(netip.Addr{}) {
				t.Error("Allows(invalid) = true")
			}
		})
	}
}

func TestAllowAll(t *testing.T) {
	p := AllowAll()
	for _, s := range []string{"0.0.0.0", "127.0.0.1", "255.255.255.255", "::", "::1", "::ffff:1.2.3.4"} {
		if !p.Allows(netip.MustParseAddr(s)) {
			t.Errorf("AllowAll().Allows(%s) = false", s)
		}
	}
	v4, v6 := p.Ranges()
	want4 := []netipx.IPRange{netipx.MustParseIPRange("0.0.0.0-255.255.255.255")}
	want6 := []netipx.IPRange{netipx.MustParseIPRange("::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")}
	if !slices.Equal(v4, want4) || !slices.Equal(v6, want6) {
		t.Errorf("AllowAll().Ranges() = %v, %v", v4, v6)
	}
	if !p.Equal(Compile([]Rule{{Protocol: ProtocolAll, Sources: pfx("0.0.0.0/0", "::/0")}}, ProtocolTCP, 1)) {
		t.Error("AllowAll is not Equal to a policy admitting 0.0.0.0/0 and ::/0")
	}
	var nilPolicy *Policy
	if nilPolicy.Allows(netip.MustParseAddr("127.0.0.1")) || (&Policy{}).Allows(netip.MustParseAddr("::1")) {
		t.Error("nil or zero Policy admits a client")
	}
}

func TestRangesAndEqual(t *testing.T) {
	rules := []Rule{{Protocol: ProtocolTCP, FromPort: 80, ToPort: 80, Sources: pfx(
		"127.0.0.0/25", "127.0.0.128/25", "127.0.0.5/32", "127.0.2.0/24", "::1/128", "::2/127", "2001:db8::/32")}}
	p := Compile(rules, ProtocolTCP, 80)
	v4, v6 := p.Ranges()
	want4 := []netipx.IPRange{
		netipx.MustParseIPRange("127.0.0.0-127.0.0.255"),
		netipx.MustParseIPRange("127.0.2.0-127.0.2.255"),
	}
	want6 := []netipx.IPRange{
		netipx.MustParseIPRange("::1-::3"),
		netipx.MustParseIPRange("2001:db8::-2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"),
	}
	if !slices.Equal(v4, want4) || !slices.Equal(v6, want6) {
		t.Errorf("Ranges() = %v, %v; want %v, %v", v4, v6, want4, want6)
	}
	// The same addresses written differently compile to an Equal policy, and
	// an unrelated rule on another port changes nothing.
	q := Compile([]Rule{
		{Protocol: ProtocolAll, Sources: pfx("127.0.0.0/24", "127.0.2.0/24", "::1/128", "::2/128", "::3/128", "2001:db8::/32")},
		{Protocol: ProtocolTCP, FromPort: 81, ToPort: 81, Sources: pfx("10.0.0.0/8")},
	}, ProtocolTCP, 80)
	if !p.Equal(q) || !q.Equal(p) {
		t.Errorf("equivalent policies not Equal: %v vs %v", p, q)
	}
	if p.Equal(Compile(rules, ProtocolTCP, 81)) {
		t.Error("policy Equal to the empty one")
	}
	var nilPolicy *Policy
	if !nilPolicy.Equal(Compile(nil, ProtocolTCP, 80)) || nilPolicy.Equal(p) {
		t.Error("nil Policy equality")
	}
}

func TestWith(t *testing.T) {
	p := Compile([]Rule{{Protocol: ProtocolUDP, FromPort: 53, ToPort: 53, Sources: pfx("127.0.0.0/24")}}, ProtocolUDP, 53)
	extra := []netip.Addr{
		netip.MustParseAddr("127.0.1.0"),        // adjacent: merges
		netip.MustParseAddr("127.0.0.7"),        // already inside
		netip.MustParseAddr("::ffff:127.0.5.5"), // mapped: judged as IPv4
		netip.MustParseAddr("::1"),
		{},
	}
	q := p.With(extra...)
	checkInvariants(t, q)
	v4, v6 := q.Ranges()
	want4 := []netipx.IPRange{netipx.MustParseIPRange("127.0.0.0-127.0.1.0"), netipx.MustParseIPRange("127.0.5.5-127.0.5.5")}
	want6 := []netipx.IPRange{netipx.MustParseIPRange("::1-::1")}
	if !slices.Equal(v4, want4) || !slices.Equal(v6, want6) {
		t.Errorf("With: Ranges() = %v, %v; want %v, %v", v4, v6, want4, want6)
	}
	if p.Allows(netip.MustParseAddr("127.0.1.0")) || p.Allows(netip.MustParseAddr("::1")) {
		t.Error("With modified its receiver")
	}
	if AllowAll().With(extra...) != AllowAll() {
		t.Error("AllowAll().With is not AllowAll")
	}
	var nilPolicy *Policy
	if !nilPolicy.With(netip.MustParseAddr("10.0.0.1")).Allows(netip.MustParseAddr("10.0.0.1")) {
		t.Error("nil.With does not admit the address")
	}
}

// checkInvariants verifies what Allows' binary search relies on: ranges sorted,
// disjoint and not adjacent.
func checkInvariants(t testing.TB, p *Policy) {
	t.Helper()
	for i := 1; i < len(p.v4); i++ {
		if a, b := p.v4[i-1], p.v4[i]; a.lo > a.hi || a.hi == ^uint32(0) || a.hi+1 >= b.lo {
			t.Fatalf("v4 ranges %d, %d not sorted, disjoint and apart: %v", i-1, i, p.v4)
		}
	}
	for i := 1; i < len(p.v6); i++ {
		if a, b := p.v6[i-1], p.v6[i]; a.hi.less(a.lo) || a.hi == maxU128 || !a.hi.next().less(b.lo) {
			t.Fatalf("v6 ranges %d, %d not sorted, disjoint and apart", i-1, i)
		}
	}
}

// TestPolicyProperty compares Compile+Allows with the linear reference on
// thousands of seeded random cases. A failure names its case number; the
// seed makes it reproducible.
func TestPolicyProperty(t *testing.T) {
	const seed, cases, queries = 20260101, 5000, 25
	g := newCaseGen(seed)
	for c := range cases {
		hot := []int{80, 443, 53, 0, 65535, g.r.IntN(65536)}[g.r.IntN(6)]
		rules := g.rules(hot, 10)
		proto, port := g.endpoint(rules, hot)
		p := Compile(rules, proto, port)
		checkInvariants(t, p)
		for range queries {
			a := g.addr(rules)
			if got, want := p.Allows(a), refAllows(rules, proto, port, a); got != want {
				t.Fatalf("seed %d case %d: Compile(%v, %d, %d).Allows(%v) = %v, reference says %v",
					seed, c, rules, proto, port, a, got, want)
			}
		}
	}
}

// FuzzPolicy checks Compile+Allows, and the socket filter run in bpf.VM,
// against the reference on rule sets decoded from arbitrary bytes.
func FuzzPolicy(f *testing.F) {
	f.Add([]byte("\x06\x00\x50\x00\x50\x01\x00\x7f\x00\x00\x01\x20"), uint8(6), uint16(80), []byte("\x7f\x00\x00\x01"))
	f.Add([]byte("\xff\xff\xff\xff\xff\x02\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x80\x00\x0a\x00\x00\x00\x08"), uint8(17), uint16(53), []byte("\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01"))
	f.Fuzz(func(t *testing.T, data []byte, proto uint8, port uint16, addr []byte) {
		rules := decodeRules(data)
		protocol := int(proto)
		if proto == 255 {
			protocol = ProtocolAll
		}
		a, _ := netip.AddrFromSlice(addr)
		p := Compile(rules, protocol, port)
		checkInvariants(t, p)
		// Judge the fuzzed address and its neighbours, which straddle boundaries.
		for _, x := range []netip.Addr{a, a.Prev(), a.Next()} {
			want := refAllows(rules, protocol, port, x)
			if got := p.Allows(x); got != want {
				t.Fatalf("Compile(%v, %d, %d).Allows(%v) = %v, reference says %v", rules, protocol, port, x, got, want)
			}
			if x.IsValid() {
				checkVM(t, p, x, want)
			}
		}
	})
}

// decodeRules turns fuzzer bytes into rules: per rule a protocol byte (255 is
// -1), two big-endian ports (65535 is -1), a source count, and per source a
// family byte, 4 or 16 address bytes and a prefix length.
func decodeRules(data []byte) []Rule {
	next := func(n int) []byte {
		if len(data) < n {
			data = nil
			return nil
		}
		b := data[:n]
		data = data[n:]
		return b
	}
	port := func(b []byte) int {
		v := int(b[0])<<8 | int(b[1])
		if v == 65535 {
			return -1
		}
		return v
	}
	var rules []Rule
	for len(data) >= 6 {
		h := next(6)
		r := Rule{Protocol: int(h[0]), FromPort: port(h[1:3]), ToPort: port(h[3:5])}
		if h[0] == 255 {
			r.Protocol = ProtocolAll
		}
		for range int(h[5] % 8) {
			fam := next(1)
			if fam == nil {
				break
			}
			n := 4
			if fam[0]&1 == 1 {
				n = 16
			}
			b := next(n + 1)
			if b == nil {
				break
			}
			ip, _ := netip.AddrFromSlice(b[:n])
			r.Sources = append(r.Sources, netip.PrefixFrom(ip, int(b[n])%(8*n+8))) // some lengths invalid on purpose
		}
		rules = append(rules, r)
	}
	return rules
}

// Benchmarks. Sources are random /8../32 IPv4 prefixes; queries mix hits and
// misses. ns/op for Allows should grow with log(rules), not with rules.

func benchRules(n int) []Rule {
	r := rand.New(rand.NewPCG(uint64(n), 7))
	rules := make([]Rule, n)
	for i := range rules {
		ip := netip.AddrFrom4([4]byte{byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))})
		rules[i] = Rule{Protocol: ProtocolTCP, FromPort: 80, ToPort: 80,
			Sources: []netip.Prefix{netip.PrefixFrom(ip, 8+r.IntN(25)).Masked()}}
	}
	return rules
}

func benchAddrs(rules []Rule) []netip.Addr {
	r := rand.New(rand.NewPCG(1, 2))
	addrs := make([]netip.Addr, 1024)
	for i := range addrs {
		if i%2 == 0 {
			addrs[i] = rules[r.IntN(len(rules))].Sources[0].Addr()
		} else {
			addrs[i] = netip.AddrFrom4([4]byte{byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))})
		}
	}
	return addrs
}

var benchSizes = []int{1, 60, 10000}

func BenchmarkAllows(b *testing.B) {
	for _, n := range benchSizes {
		rules := benchRules(n)
		p := Compile(rules, ProtocolTCP, 80)
		addrs := benchAddrs(rules)
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			i := 0
			for b.Loop() {
				p.Allows(addrs[i&1023])
				i++
			}
		})
	}
}

// BenchmarkReference is the linear scan that Allows replaces, for scale.
func BenchmarkReference(b *testing.B) {
	for _, n := range benchSizes {
		rules := benchRules(n)
		addrs := benchAddrs(rules)
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			i := 0
			for b.Loop() {
				refAllows(rules, ProtocolTCP, 80, addrs[i&1023])
				i++
			}
		})
	}
}

func BenchmarkCompile(b *testing.B) {
	for _, n := range benchSizes {
		rules := benchRules(n)
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			for b.Loop() {
				Compile(rules, ProtocolTCP, 80)
			}
		})
	}
}
