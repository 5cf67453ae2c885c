package dataplane

import (
	"maps"
	"net"
	"net/netip"
	"slices"
	"syscall"
	"testing"
	"time"
)

func TestStickinessSourceIP(t *testing.T) { stickiness(t, ipv4Net()) }

// stickiness: with source-IP stickiness one client's flows all land on one target, without it
// they spread over both; either way the targets see the load balancer's address (client IP
// preservation is off).
func stickiness(t *testing.T, n lifetimeNet) {
	t.Parallel()
	h := newHarness(t)
	hcPort := freePort(t, n.targets[0], n.targets[1])
	a := newBackend(t, "a", n.targets[0], "zone-a", hcPort)
	b := newBackend(t, "b", n.targets[1], "zone-a", hcPort)
	stickyPort, spreadPort := freePort(t, n.lb), freePort(t, n.lb)
	sticky := group("sticky", hcPort, a.cfg(), b.cfg())
	sticky.StickinessSourceIP = true
	h.apply(LoadBalancer{ID: "lb", Zones: []Zone{{"zone-a", n.lb}}, Listeners: []Listener{
		{ID: "sticky", Protocol: TCP, Port: stickyPort, TargetGroup: sticky},
		{ID: "spread", Protocol: TCP, Port: spreadPort, TargetGroup: group("spread", hcPort, a.cfg(), b.cfg())},
	}})
	for _, c := range []struct {
		listener string
		port     uint16
		want     int
	}{{"sticky", stickyPort, 1}, {"spread", spreadPort, 2}} {
		cl, _ := connect(t, n.client, ap(n.lb, c.port))
		inKernel := h.e.kernel != nil && kernelCarries(t, h.e, addrPortOf(cl.c.LocalAddr()), syscall.IPPROTO_TCP)
		if proxied := h.metric("moat_dataplane_proxied_flows_total", "listener", c.listener); *kernelTests && (!inKernel || proxied != 0) {
			t.Fatalf("%s: the kernel does not carry the flow (in conntrack: %v, proxied flows: %v)", c.listener, inKernel, proxied)
		}
		cl.c.Close()
		if got := names(t, n.client, ap(n.lb, c.port), 20); len(got) != c.want {
			t.Errorf("%s: 20 connections from one client landed on %v, want %d target(s)", c.listener, got, c.want)
		}
	}
	for _, r := range append(a.echo.records(), b.echo.records()...) {
		if r.remote.Addr() != n.lb {
			t.Errorf("a target saw %v, want the load balancer's %v", r.remote, n.lb)
		}
	}
}

func TestZonesAndCrossZone(t *testing.T) {
	t.Parallel()
	n := newNet()
	h := newHarness(t)
	hcPort := freePort(t, n.inA(0), n.inB(0))
	a := newBackend(t, "a", n.inA(0), "zone-a", hcPort)
	b := newBackend(t, "b", n.inB(0), "zone-b", hcPort)
	c := newBackend(t, "c", n.inB(1), "zone-c", 0) // a zone the load balancer has not enabled
	port := freePort(t, n.lbA(), n.lbB())
	cfg := func(cross bool) LoadBalancer {
		return LoadBalancer{ID: "lb", Zones: n.zones(), CrossZone: cross, Listeners: []Listener{{
			ID: "l", Protocol: TCP, Port: port, TargetGroup: group("tg", hcPort, a.cfg(), b.cfg(), c.cfg()),
		}}}
	}
	h.apply(cfg(false))
	for _, z := range []struct {
		addr  netip.AddrPort
		want  string
		label string
	}{{ap(n.lbA(), port), "a", "zone-a"}, {ap(n.lbB(), port), "b", "zone-b"}} {
		got := names(t, client2, z.addr, 10)
		if len(got) != 1 || got[z.want] != 10 {
			t.Errorf("%s address: connections landed on %v, want only %s", z.label, got, z.want)
		}
	}
	if hl := h.health("tg", "c", c.echo.addr.Port()); hl.State != StateUnused || hl.Reason != ReasonNotInUse {
		t.Errorf("target in a disabled zone: %+v, want unused/%s", hl, ReasonNotInUse)
	}
	// Health checks come from the load balancer's address in the target's zone.
	waitFor(t, longWait, "the first health checks", func() bool {
		return len(a.hc.records()) > 0 && len(b.hc.records()) > 0
	})
	if ra, rb := a.hc.records()[0].remote.Addr(), b.hc.records()[0].remote.Addr(); ra != n.lbA() || rb != n.lbB() {
		t.Errorf("health checks came from %v (zone a) and %v (zone b), want %v and %v", ra, rb, n.lbA(), n.lbB())
	}

	h.apply(cfg(true))
	got := names(t, client2, ap(n.lbA(), port), 20)
	if keys := slices.Sorted(maps.Keys(got)); !slices.Equal(keys, []string{"a", "b"}) {
		t.Errorf("cross-zone: zone a's address reached %v, want a and b", got)
	}
}

func TestDraining(t *testing.T) {
	t.Parallel()
	n := newNet()
	h := newHarness(t)
	hcPort := freePort(t, n.inA(0), n.inA(1))
	a := newBackend(t, "a", n.inA(0), "zone-a", hcPort)
	b := newBackend(t, "b", n.inA(1), "zone-a", hcPort)
	termPort, keepPort := freePort(t, n.lbA()), freePort(t, n.lbA())
	cfg := func(drainA time.Time) LoadBalancer {
		ta := a.cfg()
		ta.DrainingUntil = drainA
		term := group("term", hcPort, ta, b.cfg())
		term.TerminateOnDeregistration = true
		return LoadBalancer{ID: "lb", Zones: n.zoneA(), Listeners: []Listener{
			{ID: "term", Protocol: TCP, Port: termPort, TargetGroup: term},
			{ID: "keep", Protocol: TCP, Port: keepPort, TargetGroup: group("keep", hcPort, ta, b.cfg())},
		}}
	}
	h.apply(cfg(time.Time{}))
	// A flow on target a through each listener.
	onA := func(port uint16) *client {
		for range 100 {
			c, name := connect(t, client2, ap(n.lbA(), port))
			if name == "a" {
				return c
			}
			c.c.Close()
		}
		t.Fatal("no connection landed on a")
		return nil
	}
	term, keep := onA(termPort), onA(keepPort)

	const delay = time.Second // deregistration_delay.timeout_seconds, a config value
	until := time.Now().Add(delay)
	h.apply(cfg(until))
	for _, tg := range []string{"term", "keep"} {
		if hl := h.health(tg, "a", a.echo.addr.Port()); hl.State != StateDraining || hl.Reason != ReasonDeregistrationInProgress {
			t.Errorf("%s: draining target health %+v", tg, hl)
		}
	}
	// No new flows to a; existing ones continue.
	if got := names(t, client2, ap(n.lbA(), termPort), 10); got["a"] != 0 {
		t.Errorf("draining target got new flows: %v", got)
	}
	for _, c := range []*client{term, keep} {
		if err := c.echo("draining"); err != nil {
			t.Fatalf("existing flow while draining: %v", err)
		}
	}
	// With connection termination, the flow is closed when draining ends.
	err := term.waitClosed(t, longWait)
	if time.Now().Before(until) {
		t.Errorf("flow closed %v before draining ended", time.Until(until))
	}
	if !isReset(err) {
		t.Errorf("terminated flow ended with %v, want a reset", err)
	}
	hl := h.health("term", "a", a.echo.addr.Port())
	if hl.State != StateUnused || hl.Reason != ReasonNotRegistered {
		t.Errorf("after draining: %+v, want unused/%s", hl, ReasonNotRegistered)
	}
	// Without it, the flow outlives the delay.
	if err := keep.echo("drained"); err != nil {
		t.Errorf("flow without connection termination after draining: %v", err)
	}
}

func TestProxyProtocolV2(t *testing.T) {
	t.Parallel()
	n := newNet()
	h := newHarness(t)
	a := echoServer(t, ap(n.inA(0), 0), "a", true)
	port := freePort(t, n.lbA())
	tg := group("tg", 0, tgTarget("a", a.addr, "zone-a")) // health checks on the traffic port
	tg.ProxyProtocolV2 = true
	h.apply(LoadBalancer{ID: "lb", Zones: n.zoneA(), Listeners: []Listener{{ID: "l", Protocol: TCP, Port: port, TargetGroup: tg}}})

	c, _ := connect(t, client2, ap(n.lbA(), port))
	if err := c.echo("after the header"); err != nil {
		t.Fatal(err)
	}
	clientAddr := addrPortOf(c.c.LocalAddr())
	waitFor(t, longWait, "a health check", func() bool {
		for _, r := range a.records() {
			if r.pp.local {
				return true
			}
		}
		return false
	})
	var proxied int
	for _, r := range a.records() {
		switch {
		case r.pp.local:
			if r.remote.Addr() != n.lbA() {
				t.Errorf("health check from %v, want %v", r.remote, n.lbA())
			}
		case r.pp.src == clientAddr && r.pp.dst == ap(n.lbA(), port):
			proxied++
		default:
			t.Errorf("unexpected PROXY header %+v", *r.pp)
		}
	}
	if proxied != 1 {
		t.Errorf("saw %d PROXY headers for %v → %v, want 1: %+v", proxied, clientAddr, ap(n.lbA(), port), a.records())
	}
}

func TestPreserveClientIP(t *testing.T) {
	t.Parallel()
	n := newNet()
	h := newHarness(t)
	hcPort := freePort(t, n.inA(0))
	a := newBackend(t, "a", n.inA(0), "zone-a", hcPort)
	u := newUDPEcho(t, n.inA(0), "a")
	keepPort, lbPort, udpPort := freePort(t, n.lbA()), freePort(t, n.lbA()), freePort(t, n.lbA())
	keep := group("keep", hcPort, a.cfg())
	keep.PreserveClientIP = true
	udp := group("udp", hcPort, tgTarget("a", u.addr, "zone-a"))
	udp.PreserveClientIP = true
	h.apply(LoadBalancer{ID: "lb", Zones: n.zoneA(), Listeners: []Listener{
		{ID: "keep", Protocol: TCP, Port: keepPort, TargetGroup: keep},
		{ID: "lb-ip", Protocol: TCP, Port: lbPort, TargetGroup: group("lb-ip", hcPort, a.cfg())},
		{ID: "udp", Protocol: UDP, Port: udpPort, TargetGroup: udp},
	}})
	connect(t, client2, ap(n.lbA(), keepPort))
	connect(t, client3, ap(n.lbA(), lbPort))
	if _, err := newUDPClient(t, client4, ap(n.lbA(), udpPort)).ask("x", longWait); err != nil {
		t.Fatal(err)
	}
	recs := a.echo.records()
	if len(recs) != 2 || recs[0].remote.Addr() != client2 || recs[1].remote.Addr() != n.lbA() {
		t.Errorf("backend saw %v, want %v (preserved) then %v (load balancer address)", recs, client2, n.lbA())
	}
	if got := u.received(); len(got) != 1 || got[0].Addr() != client4 {
		t.Errorf("UDP backend saw %v, want %v", got, client4)
	}
}

func TestIPv6(t *testing.T) {
	t.Parallel()
	lo := netip.IPv6Loopback()
	if ln, err := net.Listen("tcp6", "[::1]:0"); err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	} else {
		ln.Close()
	}
	h := newHarness(t)
	a := echoServer(t, ap(lo, 0), "a", true)
	port := freePort(t, lo)
	tg := group("tg", 0, tgTarget("a", a.addr, "zone-a"))
	tg.ProxyProtocolV2 = true
	h.apply(LoadBalancer{ID: "lb", Zones: []Zone{{"zone-a", lo}}, Listeners: []Listener{{
		ID: "l", Protocol: TCP, Port: port, AdmitTCP: policy("::1/128"), TargetGroup: tg,
	}}})
	c, _ := connect(t, lo, ap(lo, port))
	if err := c.echo("v6"); err != nil {
		t.Fatal(err)
	}
	want := ppInfo{src: addrPortOf(c.c.LocalAddr()), dst: ap(lo, port)}
	found := false
	for _, r := range a.records() {
		found = found || (!r.pp.local && *r.pp == want)
	}
	if !found {
		t.Errorf("no PROXY header %+v among %+v", want, a.records())
	}
}
