package dataplane

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/moatlb/moat/internal/flowlog"
	"github.com/moatlb/moat/internal/secgroup"
)

// group is a target group checked over TCP on hcPort every 30 s (NLB's
// default interval): tests that are not about health see at most the first
// check, and the load balancer fails open until targets are healthy.
func group(id string, hcPort uint16, targets ...Target) TargetGroup {
	return TargetGroup{
		ID:      id,
		Targets: targets,
		HealthCheck: HealthCheck{Protocol: HealthCheckTCP, Port: hcPort, Interval: 30 * time.Second,
			Timeout: 5 * time.Second, HealthyThreshold: 2, UnhealthyThreshold: 2},
		TerminateOnUnhealthy: true,
	}
}

func TestTCPAllowDeny(t *testing.T) {
	t.Parallel()
	n := newNet()
	h := newHarness(t)
	hcPort := freePort(t, n.inA(0))
	a := newBackend(t, "a", n.inA(0), "zone-a", hcPort)
	port := freePort(t, n.lbA())
	h.apply(LoadBalancer{ID: "lb", Zones: n.zoneA(), Listeners: []Listener{{
		ID: "l", Protocol: TCP, Port: port, AdmitTCP: policy("127.0.0.2/32"),
		TargetGroup: group("tg", hcPort, a.cfg()),
	}}})
	lbAddr := ap(n.lbA(), port)

	c, name := connect(t, client2, lbAddr)
	if name != "a" {
		t.Fatalf("landed on %q", name)
	}
	if err := c.echo("ping"); err != nil {
		t.Fatal(err)
	}

	// The denied client's SYN is dropped: its connect times out. Without
	// socket filters it is accepted and reset.
	if err := dialDenied(client3, lbAddr); err != nil {
		t.Fatalf("denied client: %v", err)
	}
	if secgroup.SocketFilters {
		waitFor(t, longWait, "the filter drop to be counted", func() bool {
			return h.metric("moat_dataplane_listener_dropped_packets_total", "listener", "l", "protocol", "tcp") >= 1
		})
	} else {
		waitFor(t, longWait, "the reset to be counted", func() bool {
			return h.metric("moat_dataplane_denied_flows_total", "listener", "l", "reason", DenySecurityGroup) == 1
		})
	}
	recs := a.echo.records()
	if len(recs) != 1 {
		t.Fatalf("backend saw %d connections, want 1 (the admitted one): %v", len(recs), recs)
	}
	if recs[0].remote.Addr() != n.lbA() {
		t.Errorf("backend saw source %v, want the zone address %v", recs[0].remote, n.lbA())
	}
	// The fast path's counters reach the metrics within a second.
	waitFor(t, longWait, "one new and one active flow", func() bool {
		return h.metric("moat_dataplane_new_flows_total", "listener", "l") == 1 &&
			h.metric("moat_dataplane_active_flows", "listener", "l") == 1
	})
	if got := h.metric("moat_dataplane_denied_flows_total", "listener", "l"); secgroup.SocketFilters && got != 0 {
		t.Errorf("denied flows = %v, want 0: the kernel dropped the denied SYN", got)
	}
	c.c.Close()
	waitFor(t, longWait, "the flow to end", func() bool {
		return h.metric("moat_dataplane_active_flows", "listener", "l") == 0
	})
	// "ping\n" both ways; "a\n" came from the target. The fast path counts
	// IP bytes: the payload and every segment's headers.
	in := h.metric("moat_dataplane_bytes_total", "listener", "l", "direction", "in")
	out := h.metric("moat_dataplane_bytes_total", "listener", "l", "direction", "out")
	if *kernelTests {
		if in < 5+3*40 || out < 7+3*40 {
			t.Errorf("bytes in, out = %v, %v; want at least the payload, 5 and 7, and three 40-byte headers each", in, out)
		}
	} else if in != 5 || out != 7 {
		t.Errorf("bytes in, out = %v, %v; want 5, 7", in, out)
	}
}

// bigPolicy admits client2 and 2,500 scattered addresses elsewhere: too many
// ranges for a socket filter, so the engine must fall back to accept-and-reset.
func bigPolicy(t *testing.T) *secgroup.Policy {
	srcs := []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}
	for i := range 2500 {
		srcs = append(srcs, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 7), byte(2 * (i & 127)), 1}), 32))
	}
	p := secgroup.Compile([]secgroup.Rule{{Protocol: secgroup.ProtocolAll, Sources: srcs}}, secgroup.ProtocolTCP, 1)
	if _, ok, err := secgroup.SocketFilter(p, unix.AF_INET); ok || err != nil {
		t.Fatalf("policy fits in a socket filter (ok=%v, err=%v): the test needs one that does not", ok, err)
	}
	return p
}

func TestTCPDenyByResetAndNoTarget(t *testing.T) {
	t.Parallel()
	n := newNet()
	h := newHarness(t)
	hcPort := freePort(t, n.inA(0))
	a := newBackend(t, "a", n.inA(0), "zone-a", hcPort)
	blocked := a.cfg()
	blocked.TrafficAllowed = false                                          // the backend groups forbid the load balancer's traffic
	down := tgTarget("down", ap(n.inA(1), freePort(t, n.inA(1))), "zone-a") // nothing listens
	ports := map[string]uint16{}
	for _, l := range []string{"l", "empty", "blocked", "down"} {
		ports[l] = freePort(t, n.lbA())
	}
	h.apply(LoadBalancer{ID: "lb", Zones: n.zoneA(), Listeners: []Listener{
		{ID: "l", Protocol: TCP, Port: ports["l"], AdmitTCP: bigPolicy(t), TargetGroup: group("tg", hcPort, a.cfg())},
		{ID: "empty", Protocol: TCP, Port: ports["empty"], TargetGroup: group("tg-empty", hcPort)},
		{ID: "blocked", Protocol: TCP, Port: ports["blocked"], TargetGroup: group("tg-blocked", hcPort, blocked)},
		{ID: "down", Protocol: TCP, Port: ports["down"], TargetGroup: group("tg-down", hcPort, down)},
	}})

	c, _ := connect(t, client2, ap(n.lbA(), ports["l"]))
	if err := c.echo("ping"); err != nil {
		t.Fatal(err)
	}

	// Without a filter the handshake completes; the data plane resets.
	for _, tc := range []struct{ listener, metric, reason string }{
		{"l", "moat_dataplane_denied_flows_total", DenySecurityGroup},
		{"empty", "moat_dataplane_denied_flows_total", DenyNoTarget},
		{"blocked", "moat_dataplane_denied_flows_total", DenyNoTarget},
		{"down", "moat_dataplane_target_connect_errors_total", ""},
	} {
		// The reset can beat the client's connect call to reporting success.
		conn, err := dialFrom(client3, ap(n.lbA(), ports[tc.listener]), 5*time.Second)
		if err == nil {
			conn.SetReadDeadline(time.Now().Add(longWait))
			_, err = conn.Read(make([]byte, 1))
			conn.Close()
		}
		labels := []string{"listener", tc.listener}
		if tc.reason != "" {
			labels = append(labels, "reason", tc.reason)
		}
		want := 1.0
		if tc.listener == "down" && *kernelTests {
			// The kernel carries the SYN to the target, whose reset reaches the client, as
			// through an NLB; the proxy, which never saw the flow, counts no connect error.
			want = 0
			if !isReset(err) && !errors.Is(err, syscall.ECONNREFUSED) {
				t.Errorf("%s: got %v, want the target's reset", tc.listener, err)
			}
		} else if !isReset(err) {
			t.Errorf("%s: got %v, want a reset", tc.listener, err)
		}
		if got := h.metric(tc.metric, labels...); got != want {
			t.Errorf("%s: %s%v = %v, want %v", tc.listener, tc.metric, labels, got, want)
		}
	}
	if recs := a.echo.records(); len(recs) != 1 {
		t.Errorf("backend saw %d connections, want 1", len(recs))
	}

	// One JSON line per denial.
	var entries []flowlog.Entry
	for _, line := range strings.Split(strings.TrimSpace(h.log.String()), "\n") {
		var e flowlog.Entry
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("flow log line %q: %v", line, err)
		}
		entries = append(entries, e)
	}
	want := []struct{ listener, reason string }{{"l", DenySecurityGroup}, {"empty", DenyNoTarget}, {"blocked", DenyNoTarget}}
	if len(entries) != len(want) {
		t.Fatalf("flow log has %d entries, want %d:\n%s", len(entries), len(want), h.log.String())
	}
	for i, w := range want {
		e := entries[i]
		if e.Action != flowlog.Deny || e.LoadBalancer != "lb" || e.Listener != w.listener || e.Reason != w.reason || e.Protocol != "tcp" ||
			!strings.HasPrefix(e.Client, "127.0.0.3:") || time.Since(e.Time) > time.Minute {
			t.Errorf("flow log entry %d = %+v, want listener %s, reason %s, client 127.0.0.3", i, e, w.listener, w.reason)
		}
	}
}

func TestRuleChange(t *testing.T) {
	t.Parallel()
	n := newNet()
	h := newHarness(t)
	hcPort := freePort(t, n.inA(0))
	a := newBackend(t, "a", n.inA(0), "zone-a", hcPort)
	port := freePort(t, n.lbA())
	cfg := func(p *secgroup.Policy) LoadBalancer {
		return LoadBalancer{ID: "lb", Zones: n.zoneA(), Listeners: []Listener{{
			ID: "l", Protocol: TCP, Port: port, AdmitTCP: p, TargetGroup: group("tg", hcPort, a.cfg()),
		}}}
	}
	lbAddr := ap(n.lbA(), port)
	h.apply(cfg(policy("127.0.0.2/32")))
	established, _ := connect(t, client2, lbAddr)
	if err := established.echo("before"); err != nil {
		t.Fatal(err)
	}

	// Revoke client2, admit client3: new flows follow as soon as Apply returns.
	h.apply(cfg(policy("127.0.0.3/32")))
	if err := dialDenied(client2, lbAddr); err != nil {
		t.Fatalf("revoked client: %v", err)
	}
	connect(t, client3, lbAddr)
	// The established flow is not cut.
	if err := established.echo("after"); err != nil {
		t.Fatalf("established flow after revoke: %v", err)
	}

	// An unrelated change (same policy) keeps everything as it is.
	h.apply(cfg(policy("127.0.0.3/32")))
	if err := established.echo("again"); err != nil {
		t.Fatal(err)
	}
	connect(t, client3, lbAddr)
}

func TestTCPUDPListener(t *testing.T) {
	t.Parallel()
	n := newNet()
	h := newHarness(t)
	hcPort := freePort(t, n.inA(0))
	hc := acceptServer(t, ap(n.inA(0), hcPort))
	_ = hc
	// One backend address serving TCP and UDP on the same port.
	udp := newUDPEcho(t, n.inA(0), "a")
	tcp := echoServer(t, ap(n.inA(0), udp.addr.Port()), "a", false)
	port := freePort(t, n.lbA())
	cfg := func(tcpP, udpP *secgroup.Policy) LoadBalancer {
		return LoadBalancer{ID: "lb", Zones: n.zoneA(), Listeners: []Listener{{
			ID: "l", Protocol: TCPUDP, Port: port, AdmitTCP: tcpP, AdmitUDP: udpP,
			TargetGroup: group("tg", hcPort, tgTarget("a", tcp.addr, "zone-a")),
		}}}
	}
	lbAddr := ap(n.lbA(), port)

	// TCP and UDP are separate endpoints with separate rules.
	h.apply(cfg(policy("127.0.0.2/32"), policy("127.0.0.3/32")))
	connect(t, client2, lbAddr)
	if err := dialDenied(client3, lbAddr); err != nil {
		t.Errorf("TCP from client3: %v", err)
	}
	if got, err := newUDPClient(t, client3, lbAddr).ask("x", longWait); err != nil || got != "a:x" {
		t.Errorf("UDP from client3: got %q, %v", got, err)
	}
	if _, err := newUDPClient(t, client2, lbAddr).ask("x", deniedWait); !isTimeout(err) {
		t.Errorf("UDP from client2: got %v, want no answer", err)
	}

	// A load balancer without security groups admits everyone.
	h.apply(cfg(nil, nil))
	for _, c := range []netip.Addr{client2, client3, client4} {
		connect(t, c, lbAddr)
		if got, err := newUDPClient(t, c, lbAddr).ask("y", longWait); err != nil || got != "a:y" {
			t.Errorf("UDP from %v: got %q, %v", c, got, err)
		}
	}
}

func TestTCPIdleTimeout(t *testing.T) {
	t.Parallel()
	n := newNet()
	h := newHarness(t)
	hcPort := freePort(t, n.inA(0))
	a := newBackend(t, "a", n.inA(0), "zone-a", hcPort)
	port := freePort(t, n.lbA())
	const idle = 2 * time.Second
	h.apply(LoadBalancer{ID: "lb", Zones: n.zoneA(), Listeners: []Listener{{
		ID: "l", Protocol: TCP, Port: port, TCPIdleTimeout: idle, TargetGroup: group("tg", hcPort, a.cfg()),
	}}})
	lbAddr := ap(n.lbA(), port)
	quiet, _ := connect(t, client2, lbAddr)
	busy, _ := connect(t, client2, lbAddr)
	start := time.Now()

	// The busy flow talks more often than the idle timeout and survives it.
	for time.Since(start) < 3*idle {
		if err := busy.echo("tick"); err != nil {
			t.Fatalf("busy flow after %v: %v", time.Since(start), err)
		}
		time.Sleep(idle / 4) // the traffic pattern under test, not synchronisation
	}
	if *kernelTests {
		// Conntrack forgot the quiet flow; like AWS, the load balancer
		// answers its next segment with a reset.
		if err := quiet.echo("late"); !isReset(err) {
			t.Errorf("idle flow's next write: got %v, want a reset", err)
		}
		// Conntrack reports an expired flow's end when it reaps the entry: at
		// once when a segment finds it, as the late one did (its garbage
		// collector may take a minute).
		waitFor(t, longWait, "the quiet flow to leave the active ones", func() bool {
			if err := busy.echo("tick"); err != nil { // it must not idle out meanwhile
				t.Fatalf("busy flow: %v", err)
			}
			return h.metric("moat_dataplane_active_flows", "listener", "l") == 1
		})
		// Its end came as conntrack's event: the count did not walk the table.
		if walks := h.metric("moat_dataplane_kernel_conntrack_walks_total"); walks != 0 {
			t.Errorf("the fast path walked conntrack's table %v times to count its flows, want 0", walks)
		}
		if err := busy.echo("still"); err != nil {
			t.Fatal(err)
		}
		return
	}
	// The quiet one was reset, on both sides.
	if err := quiet.waitClosed(t, longWait); !isReset(err) {
		t.Errorf("idle flow ended with %v, want a reset", err)
	}
	if time.Since(start) < idle {
		t.Errorf("idle flow ended after %v, before the idle timeout", time.Since(start))
	}
	waitFor(t, longWait, "the backend to lose the idle flow", func() bool { return a.echo.liveConns() == 1 })
	if err := busy.echo("still"); err != nil {
		t.Fatal(err)
	}
}

// A flow that one side half-closed is no longer active, as AWS counts flows
// (SYN_SENT and ESTABLISHED only), and goes on carrying the other side's
// bytes, counted.
func TestHalfClosedFlowIsNotActive(t *testing.T) {
	t.Parallel()
	n := newNet()
	h := newHarness(t)
	hcPort := freePort(t, n.inA(0))
	acceptServer(t, ap(n.inA(0), hcPort))
	sawEnd, reply := make(chan struct{}), make(chan struct{})
	var replyOnce sync.Once
	release := func() { replyOnce.Do(func() { close(reply) }) }
	tgt := newServer(t, ap(n.inA(0), 0), func(_ *server, c *net.TCPConn) {
		if _, err := io.WriteString(c, "a\n"); err != nil {
			return
		}
		if _, err := io.Copy(io.Discard, c); err != nil {
			return
		}
		close(sawEnd)
		<-reply
		_, _ = io.WriteString(c, "after\n")
	})
	t.Cleanup(release) // before the server stops
	port := freePort(t, n.lbA())
	h.apply(LoadBalancer{ID: "lb", Zones: n.zoneA(), Listeners: []Listener{{
		ID: "l", Protocol: TCP, Port: port, TargetGroup: group("tg", hcPort, tgTarget("a", tgt.addr, "zone-a")),
	}}})
	c, _ := connect(t, client2, ap(n.lbA(), port))
	local := c.c.LocalAddr().(*net.TCPAddr).AddrPort()
	if *kernelTests && !kernelCarries(t, h.e, local, syscall.IPPROTO_TCP) {
		t.Fatal("the kernel does not carry the flow")
	}
	waitFor(t, longWait, "one active flow", func() bool {
		return h.metric("moat_dataplane_active_flows", "listener", "l") == 1
	})

	if err := c.c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sawEnd:
	case <-time.After(longWait):
		t.Fatal("the target did not see the client's end of stream")
	}
	waitFor(t, longWait, "the half-closed flow to leave the active ones", func() bool {
		return h.metric("moat_dataplane_active_flows", "listener", "l") == 0
	})
	if *kernelTests && !kernelCarries(t, h.e, local, syscall.IPPROTO_TCP) {
		t.Fatal("the kernel no longer carries the half-closed flow")
	}
	before := h.metric("moat_dataplane_bytes_total", "listener", "l", "direction", "out")
	release()
	c.c.SetReadDeadline(time.Now().Add(longWait))
	if line, err := c.r.ReadString('\n'); line != "after\n" || err != nil {
		t.Fatalf("after the half-close, read %q, %v; want the target's \"after\"", line, err)
	}
	waitFor(t, longWait, "the bytes after the half-close to be counted", func() bool {
		return h.metric("moat_dataplane_bytes_total", "listener", "l", "direction", "out") >= before+float64(len("after\n"))
	})
}

// TestMessagesInPartsAreNotHeld: a message written in two parts (a request's or a response's
// headers, then its body) passes on at once, each part as it comes, both ways. With Nagle's
// algorithm on a proxy's socket, the second part waited for the peer's delayed acknowledgement
// of the first: 40 ms or more, every exchange.
func TestMessagesInPartsAreNotHeld(t *testing.T) {
	t.Parallel()
	const exchanges, partGap, ackDelay = 24, 2 * time.Millisecond, 40 * time.Millisecond
	n := newNet()
	h := newHarness(t)
	hcPort := freePort(t, n.inA(0))
	acceptServer(t, ap(n.inA(0), hcPort))
	tgt := newServer(t, ap(n.inA(0), 0), func(_ *server, c *net.TCPConn) {
		if _, err := io.WriteString(c, "a\n"); err != nil {
			return
		}
		r := bufio.NewReader(c)
		for {
			if _, err := r.ReadString('\n'); err != nil {
				return
			}
			if _, err := io.WriteString(c, "head"); err != nil {
				return
			}
			time.Sleep(partGap) // so that the proxy reads, and writes, the parts apart
			if _, err := io.WriteString(c, "body\n"); err != nil {
				return
			}
		}
	})
	port := freePort(t, n.lbA())
	h.apply(LoadBalancer{ID: "lb", Zones: n.zoneA(), Listeners: []Listener{{
		ID: "l", Protocol: TCP, Port: port, TargetGroup: group("tg", hcPort, tgTarget("a", tgt.addr, "zone-a")),
	}}})
	c, _ := connect(t, client2, ap(n.lbA(), port))
	if *kernelTests && !kernelCarries(t, h.e, c.c.LocalAddr().(*net.TCPAddr).AddrPort(), syscall.IPPROTO_TCP) {
		t.Fatal("the kernel does not carry the flow")
	}
	held := 0
	for range exchanges {
		start := time.Now()
		if _, err := io.WriteString(c.c, "get"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(partGap)
		if _, err := io.WriteString(c.c, " /\n"); err != nil {
			t.Fatal(err)
		}
		c.c.SetReadDeadline(time.Now().Add(longWait))
		if line, err := c.r.ReadString('\n'); line != "headbody\n" || err != nil {
			t.Fatalf("read %q, %v; want the target's \"headbody\"", line, err)
		}
		if time.Since(start) >= ackDelay {
			held++
		}
	}
	// A noisy machine may stall an exchange now and then; a held part stalls every one after
	// the connection's first few (which the kernel acknowledges at once).
	if held > exchanges/3 {
		t.Fatalf("%d of %d exchanges took %v or more: a part was held for the peer's acknowledgement", held, exchanges, ackDelay)
	}
}

func TestBindFailure(t *testing.T) {
	t.Parallel()
	n := newNet()
	h := newHarness(t)
	hcPort := freePort(t, n.inA(0))
	a := newBackend(t, "a", n.inA(0), "zone-a", hcPort)
	busyPort, freeP, otherP := freePort(t, n.lbA()), freePort(t, n.lbA()), freePort(t, n.lbA())
	occupant, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(ap(n.lbA(), busyPort)))
	if err != nil {
		t.Fatal(err)
	}
	defer occupant.Close()
	tg := group("tg", hcPort, a.cfg())
	lb := LoadBalancer{ID: "lb", Zones: n.zoneA(), Listeners: []Listener{
		{ID: "busy", Protocol: TCP, Port: busyPort, TargetGroup: tg},
		{ID: "free", Protocol: TCP, Port: freeP, TargetGroup: tg},
	}}
	other := LoadBalancer{ID: "other", Zones: n.zoneA(), Listeners: []Listener{
		{ID: "clash", Protocol: TCP, Port: freeP, TargetGroup: tg}, // same address and port as "free"
		{ID: "ok", Protocol: TCP, Port: otherP, TargetGroup: tg},
	}}

	err = h.e.Apply(Config{LoadBalancers: []LoadBalancer{lb, other}})
	var ae *ApplyError
	if !errors.As(err, &ae) || len(ae.Listeners) != 2 {
		t.Fatalf("Apply = %v, want an ApplyError naming two listeners", err)
	}
	if !errors.Is(err, syscall.EADDRINUSE) || !errors.Is(err, ErrListenerConflict) {
		t.Errorf("Apply = %v, want EADDRINUSE and ErrListenerConflict inside", err)
	}
	t.Logf("Apply error: %v", err)
	busyErr := h.e.ListenerStatus("busy")
	var le *ListenerError
	if !errors.As(busyErr, &le) || le.ListenerID != "busy" || le.Addr != ap(n.lbA(), busyPort) || le.Network != "tcp" ||
		!errors.Is(busyErr, syscall.EADDRINUSE) {
		t.Errorf(`ListenerStatus("busy") = %v`, busyErr)
	}
	if !strings.Contains(busyErr.Error(), fmt.Sprint(busyPort)) || !strings.Contains(busyErr.Error(), "address already in use") {
		t.Errorf("error text %q does not say what failed", busyErr)
	}
	if err := h.e.ListenerStatus("clash"); !errors.Is(err, ErrListenerConflict) {
		t.Errorf(`ListenerStatus("clash") = %v`, err)
	}
	for _, id := range []string{"free", "ok"} {
		if err := h.e.ListenerStatus(id); err != nil {
			t.Errorf("ListenerStatus(%q) = %v", id, err)
		}
	}
	if err := h.e.ListenerStatus("nope"); !errors.Is(err, ErrUnknownListener) {
		t.Errorf(`ListenerStatus("nope") = %v`, err)
	}
	// The rest serves.
	connect(t, client2, ap(n.lbA(), freeP))
	connect(t, client2, ap(n.lbA(), otherP))
	established, _ := connect(t, client2, ap(n.lbA(), otherP))

	// Freed, the port is taken on the next Apply; the removed load balancer's
	// listener closes with its flows.
	occupant.Close()
	h.apply(lb)
	if err := h.e.ListenerStatus("busy"); err != nil {
		t.Errorf(`ListenerStatus("busy") after retry = %v`, err)
	}
	connect(t, client2, ap(n.lbA(), busyPort))
	if err := established.waitClosed(t, longWait); err == nil {
		t.Error("flow of a removed listener still open")
	}
	if err := h.e.ListenerStatus("ok"); !errors.Is(err, ErrUnknownListener) {
		t.Errorf(`ListenerStatus("ok") after removal = %v`, err)
	}
	if _, err := dialFrom(client2, ap(n.lbA(), otherP), 5*time.Second); err == nil {
		t.Error("removed listener still accepts")
	}
	if got := h.metric("moat_dataplane_new_flows_total", "listener", "ok"); got != 0 {
		t.Errorf("series of the removed listener still exported: %v", got)
	}
}

// BenchmarkProxyConnections measures connections through the userspace proxy as
// hack/bench-lb.sh's connections test makes them: connect, one byte each way, a reset to close.
// It reports the process's CPU per connection and, with -benchmem, allocations per connection
// (the client's and the target's included: the same for every build, so builds compare).
func BenchmarkProxyConnections(b *testing.B) {
	n := newNet()
	h := newHarness(b)
	target := newServer(b, ap(n.inA(0), 0), func(_ *server, c *net.TCPConn) {
		var buf [1]byte
		if _, err := io.ReadFull(c, buf[:]); err == nil {
			_, _ = c.Write(buf[:])
		}
		_, _ = io.Copy(io.Discard, c) // until the client's reset
	})
	hcPort := freePort(b, n.inA(0))
	acceptServer(b, ap(n.inA(0), hcPort))
	port := freePort(b, n.lbA())
	h.apply(LoadBalancer{ID: "lb", Zones: n.zoneA(), Listeners: []Listener{{
		ID: "l", Protocol: TCP, Port: port, TargetGroup: group("tg", hcPort, tgTarget("t", target.addr, "zone-a")),
	}}})

	run := func(b *testing.B, dst netip.AddrPort) {
		b.ReportAllocs()
		var before, after syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &before)
		b.ResetTimer()
		for range b.N {
			c, err := dialFrom(client2, dst, 5*time.Second)
			if err != nil {
				b.Fatal(err)
			}
			buf := []byte{'x'}
			if _, err := c.Write(buf); err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(c, buf); err != nil {
				b.Fatal(err)
			}
			_ = c.SetLinger(0) // no TIME_WAIT: b.N connections from one address
			c.Close()
		}
		b.StopTimer()
		syscall.Getrusage(syscall.RUSAGE_SELF, &after)
		cpu := time.Duration(after.Utime.Nano() - before.Utime.Nano() + after.Stime.Nano() - before.Stime.Nano())
		b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/conn")
	}
	b.Run("direct", func(b *testing.B) { run(b, target.addr) })
	b.Run("proxy", func(b *testing.B) { run(b, ap(n.lbA(), port)) })
}

// silentTarget listens on addr with an accept queue of one, and fills it: the SYNs that follow
// are dropped, so a connect to it waits, as to a target behind a firewall that drops.
func silentTarget(t *testing.T, addr netip.Addr) netip.AddrPort {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: addr.As4()}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	silent := ap(addr, uint16(sa.(*unix.SockaddrInet4).Port))
	for queued := 0; ; queued++ {
		c, err := dialFrom(client3, silent, 300*time.Millisecond)
		if err != nil {
			return silent
		}
		t.Cleanup(func() { c.Close() })
		if queued == 8 {
			t.Fatalf("the accept queue of %s does not fill", silent)
		}
	}
}

// openFlows counts the TCP flows the engine's sockets hold, connected to their target or not.
func (h *harness) openFlows() (open int) {
	h.e.mu.Lock()
	defer h.e.mu.Unlock()
	for _, s := range h.e.sockets {
		if ts, ok := s.(*tcpSocket); ok {
			ts.mu.Lock()
			open += len(ts.flows)
			ts.mu.Unlock()
		}
	}
	return open
}

// TestConnectToSilentTarget: a connect to a target that never answers ends at the connect
// timeout, with a reset to the client and a connect error counted; a listener deleted meanwhile
// ends it at once.
func TestConnectToSilentTarget(t *testing.T) {
	if *kernelTests {
		t.Skip("the kernel carries the SYN itself: the client's own connect waits, as for the target")
	}
	t.Parallel()
	n := newNet()
	hcPort := freePort(t, n.inA(0))
	acceptServer(t, ap(n.inA(0), hcPort)) // health checks pass
	silent := silentTarget(t, n.inA(0))
	listener := func(port uint16) LoadBalancer {
		return LoadBalancer{ID: "lb", Zones: n.zoneA(), Listeners: []Listener{{
			ID: "l", Protocol: TCP, Port: port, TargetGroup: group("tg", hcPort, tgTarget("silent", silent, "zone-a")),
		}}}
	}
	connectErrors := func(h *harness) float64 { return h.metric("moat_dataplane_target_connect_errors_total") }

	t.Run("timeout", func(t *testing.T) {
		const timeout = time.Second
		h := newHarness(t, func(o *Options) { o.ConnectTimeout = timeout })
		port := freePort(t, n.lbA())
		h.apply(listener(port))
		c, err := dialFrom(client2, ap(n.lbA(), port), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		cl := &client{c: c, r: bufio.NewReader(c)}
		if err := cl.waitClosed(t, longWait); !isReset(err) {
			t.Errorf("client: %v, want a reset", err)
		}
		if d := time.Since(start); d < timeout*9/10 {
			t.Errorf("reset after %v, before the connect timeout of %v", d, timeout)
		}
		if got := connectErrors(h); got != 1 {
			t.Errorf("connect errors = %v, want 1", got)
		}
	})

	t.Run("listener deleted", func(t *testing.T) {
		h := newHarness(t, func(o *Options) { o.ConnectTimeout = time.Hour })
		port := freePort(t, n.lbA())
		h.apply(listener(port))
		c, err := dialFrom(client2, ap(n.lbA(), port), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		// The target never answers: the one flow is connecting.
		waitFor(t, longWait, "the proxy to connect to the target", func() bool { return h.openFlows() == 1 })
		h.apply(LoadBalancer{ID: "lb", Zones: n.zoneA()})
		cl := &client{c: c, r: bufio.NewReader(c)}
		if err := cl.waitClosed(t, longWait); !isReset(err) {
			t.Errorf("client: %v, want a reset", err)
		}
		// The connect itself ended, long before the kernel would give up its SYNs (2 minutes): the
		// engine's Close, which waits for every flow, returns.
		closed := make(chan struct{})
		go func() {
			h.e.Close()
			close(closed)
		}()
		select {
		case <-closed:
		case <-time.After(10 * time.Second):
			t.Fatal("the engine's Close waits for the deleted listener's connect")
		}
		if got := connectErrors(h); got != 0 {
			t.Errorf("connect errors = %v, want 0", got)
		}
	})
}
