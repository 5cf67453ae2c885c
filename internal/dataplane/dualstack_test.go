package dataplane

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/moatlb/moat/internal/secgroup"
)

// A dualstack load balancer listens on both of a zone's addresses. IPv6 clients are judged by the
// IPv6 sources of the groups (the socket filter of an AF_INET6 socket drops the others' SYNs, as
// for IPv4), and reach IPv4 targets from the zone's IPv4 address, as AWS translates them; IPv4
// clients reach IPv6 targets the other way. On loopback ::1 is the only IPv6 address, so it is
// both the load balancer's IPv6 address and the IPv6 client here; test/e2e has more in network
// namespaces.
func TestDualstack(t *testing.T) {
	t.Parallel()
	lo := netip.IPv6Loopback()
	if ln, err := net.Listen("tcp6", "[::1]:0"); err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	} else {
		ln.Close()
	}
	n := newNet()
	h := newHarness(t)
	hcPort := freePort(t, n.inA(0))
	a := newBackend(t, "a", n.inA(0), "zone-a", hcPort)
	v6 := echoServer(t, ap(lo, 0), "v6", false)
	admit, deny6, toV6 := freePort(t, n.lbA(), lo), freePort(t, n.lbA(), lo), freePort(t, n.lbA(), lo)
	h.apply(LoadBalancer{ID: "lb", Zones: []Zone{{Name: "zone-a", Addr: n.lbA()}, {Name: "zone-a", Addr: lo}}, Listeners: []Listener{
		{ID: "admit", Protocol: TCP, Port: admit, AdmitTCP: policy("::1/128", "127.0.0.2/32"), TargetGroup: group("tg-a", hcPort, a.cfg())},
		{ID: "deny6", Protocol: TCP, Port: deny6, AdmitTCP: policy("2001:db8::/32", "127.0.0.0/8"), TargetGroup: group("tg-a", hcPort, a.cfg())},
		{ID: "to-v6", Protocol: TCP, Port: toV6, TargetGroup: group("tg-v6", 0, tgTarget("v6", v6.addr, "zone-a"))},
	}})

	// An admitted IPv6 client reaches the IPv4 target, which sees the zone's IPv4 address.
	c, name := connect(t, lo, ap(lo, admit))
	if name != "a" {
		t.Fatalf("IPv6 client landed on %q", name)
	}
	if err := c.echo("v6 to v4"); err != nil {
		t.Fatal(err)
	}
	if recs := a.echo.records(); len(recs) != 1 || recs[0].remote.Addr() != n.lbA() {
		t.Fatalf("target saw %v, want one flow from the zone's IPv4 address %v", recs, n.lbA())
	}
	if _, name := connect(t, client2, ap(n.lbA(), admit)); name != "a" {
		t.Fatalf("IPv4 client landed on %q", name)
	}

	// IPv6 rules that do not cover ::1 deny it; the IPv4 rule admits IPv4 clients, not ::1.
	if err := dialDenied(lo, ap(lo, deny6)); err != nil {
		t.Fatalf("denied IPv6 client: %v", err)
	}
	if secgroup.SocketFilters {
		waitFor(t, longWait, "the IPv6 filter drop to be counted", func() bool {
			return h.metric("moat_dataplane_listener_dropped_packets_total", "listener", "deny6", "protocol", "tcp") >= 1
		})
		if got := h.metric("moat_dataplane_denied_flows_total", "listener", "deny6"); got != 0 {
			t.Errorf("denied flows = %v, want 0: the kernel dropped the IPv6 SYN", got)
		}
	} else {
		waitFor(t, longWait, "the reset to be counted", func() bool {
			return h.metric("moat_dataplane_denied_flows_total", "listener", "deny6", "reason", DenySecurityGroup) == 1
		})
	}
	if _, name := connect(t, client3, ap(n.lbA(), deny6)); name != "a" {
		t.Fatalf("IPv4 client of the IPv4 rule landed on %q", name)
	}
	if recs := a.echo.records(); len(recs) != 3 {
		t.Errorf("target saw %d flows, want 3 (the denied one never reaches it): %v", len(recs), recs)
	}

	// IPv4 and IPv6 clients both reach an IPv6 target.
	for _, src := range []netip.AddrPort{ap(n.lbA(), toV6), ap(lo, toV6)} {
		client := client2
		if src.Addr().Is6() {
			client = lo
		}
		if _, name := connect(t, client, src); name != "v6" {
			t.Errorf("%s → %s landed on %q", client, src, name)
		}
	}
}

// upstreamSource picks where a flow leaves for its target: the preserved client address only
// within a family, else the arrival address, else the zone's address of the target's family.
func TestUpstreamSource(t *testing.T) {
	v4, v6 := netip.MustParseAddr("127.1.0.100"), netip.MustParseAddr("2001:db8:0:1::64")
	dual := &route{local: zoneAddrs{v4: v4, v6: v6}}
	only4 := &route{local: zoneAddrs{v4: v4}}
	t4, t6 := netip.MustParseAddr("127.1.0.10"), netip.MustParseAddr("2001:db8:0:1::10")
	for _, tc := range []struct {
		name                  string
		r                     *route
		preserve              bool
		client, local, target netip.Addr
		want                  netip.Addr
	}{
		{"preserved loopback client", dual, true, client2, v4, t4, client2},
		{"preserve needs loopback", dual, true, netip.MustParseAddr("198.18.0.2"), v4, t4, v4},
		{"preserve within a family only", dual, true, netip.IPv6Loopback(), v6, t4, v4},
		{"IPv6 client, IPv4 target", dual, false, netip.MustParseAddr("2001:db8::2"), v6, t4, v4},
		{"IPv4 client, IPv6 target", dual, false, client2, v4, t6, v6},
		{"IPv4-mapped target", dual, false, netip.MustParseAddr("2001:db8::2"), v6, netip.AddrFrom16(t4.As16()), v4},
		{"no address of the target's family", only4, false, client2, v4, t6, netip.Addr{}},
		{"a loopback client is not preserved off loopback", only4, true, client2, v4, netip.MustParseAddr("10.77.1.2"), netip.Addr{}},
		{"a loopback address does not leave the host", only4, false, netip.MustParseAddr("198.18.0.2"), v4, netip.MustParseAddr("10.77.1.2"), netip.Addr{}},
	} {
		if got := tc.r.upstreamSource(tc.preserve, tc.client, tc.local, tc.target); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

// The kernel fast path takes new flows only within a family (nftables NAT cannot translate
// between them): an IPv6 socket with IPv6 targets gets a Forward admitting the policy's IPv6
// ranges and hiding clients behind its own IPv6 address; a socket whose targets are of the other
// family is offered with no Forward, so its flows reach the userspace engine, which translates
// them; so is a loopback socket with a target on another network (NAT would keep a loopback
// source there, which the kernel drops).
func TestKernelSocketFamilies(t *testing.T) {
	lb4, lb6 := netip.MustParseAddr("127.1.0.100"), netip.MustParseAddr("2001:db8::100")
	t4, t6 := netip.MustParseAddr("127.1.0.10"), netip.MustParseAddr("2001:db8::10")
	pol := policy("127.0.0.2/32", "2001:db8::2/128")
	for _, c := range []struct {
		name      string
		lb        netip.Addr
		target    netip.Addr
		forwarded bool
	}{
		{"IPv4 to IPv4", lb4, t4, true},
		{"IPv6 to IPv6", lb6, t6, true},
		{"IPv6 to IPv4", lb6, t4, false},
		{"IPv4 to IPv6", lb4, t6, false},
		{"IPv6 to IPv4-mapped IPv4", lb6, netip.AddrFrom16(t4.As16()), false},
		{"loopback to another network", lb4, netip.MustParseAddr("10.77.1.2"), false},
	} {
		tg := &targetGroup{}
		tg.sel.Store(&selection{set: &tgSettings{}, cross: &candidates{all: []*target{{addr: netip.AddrPortFrom(c.target, 8080)}}}})
		r := &route{policy: pol, tg: tg, crossZone: true, idle: time.Minute}
		s, ok := kernelSocketFor(sockKey{addr: c.lb, port: 80, network: "tcp"}, r)
		if !ok {
			t.Fatalf("%s: the socket is not offered to the fast path", c.name)
		}
		if got := s.Forward != nil; got != c.forwarded {
			t.Errorf("%s: the kernel takes new flows: %v, want %v", c.name, got, c.forwarded)
			continue
		}
		if s.Forward == nil {
			continue
		}
		want := "127.0.0.2-127.0.0.2"
		if c.lb.Is6() {
			want = "2001:db8::2-2001:db8::2"
		}
		if len(s.Forward.Admit) != 1 || s.Forward.Admit[0].String() != want || s.Forward.SNAT != c.lb {
			t.Errorf("%s: admits %v, SNAT %v; want [%s] from %v", c.name, s.Forward.Admit, s.Forward.SNAT, want, c.lb)
		}
	}
}
