package dataplane

import (
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moatlb/moat/internal/secgroup"
)

func TestUDPAllowDenyAndRuleChange(t *testing.T) {
	t.Parallel()
	n := newNet()
	h := newHarness(t)
	hcPort := freePort(t, n.inA(0))
	acceptServer(t, ap(n.inA(0), hcPort))
	a := newUDPEcho(t, n.inA(0), "a")
	port := freePort(t, n.lbA())
	cfg := func(p *secgroup.Policy) LoadBalancer {
		return LoadBalancer{ID: "lb", Zones: n.zoneA(), Listeners: []Listener{{
			ID: "l", Protocol: UDP, Port: port, AdmitUDP: p,
			TargetGroup: group("tg", hcPort, tgTarget("a", a.addr, "zone-a")),
		}}}
	}
	lbAddr := ap(n.lbA(), port)
	h.apply(cfg(policy("127.0.0.2/32")))

	allowed := newUDPClient(t, client2, lbAddr)
	if got, err := allowed.ask("ping", longWait); err != nil || got != "a:ping" {
		t.Fatalf("allowed client: got %q, %v", got, err)
	}
	// Replies come from the load balancer's address: the client's socket is
	// connected to it and would not accept them otherwise.

	denied := newUDPClient(t, client3, lbAddr)
	if _, err := denied.ask("ping", deniedWait); !isTimeout(err) {
		t.Fatalf("denied client: got %v, want no answer", err)
	}
	if secgroup.SocketFilters {
		waitFor(t, longWait, "the filter drop to be counted", func() bool {
			return h.metric("moat_dataplane_listener_dropped_packets_total", "listener", "l", "protocol", "udp") >= 1
		})
	} else { // read and dropped in userspace
		waitFor(t, longWait, "the denial to be counted", func() bool {
			return h.metric("moat_dataplane_denied_flows_total", "listener", "l", "reason", DenySecurityGroup) == 1
		})
	}
	deniedBefore := h.metric("moat_dataplane_denied_flows_total", "listener", "l", "reason", DenySecurityGroup)
	if got := a.received(); len(got) != 1 || got[0].Addr() != n.lbA() {
		t.Fatalf("backend received %v, want one datagram from %v", got, n.lbA())
	}
	// The fast path's counts reach the metrics within a second.
	waitFor(t, longWait, "one active flow", func() bool {
		return h.metric("moat_dataplane_active_flows", "listener", "l") == 1
	})

	// Revoke client2 and admit client3. The established flow keeps working
	// (the socket filter keeps its client until the flow ends); a new flow
	// from client2 is denied, one from client3 admitted.
	h.apply(cfg(policy("127.0.0.3/32")))
	if got, err := allowed.ask("still", longWait); err != nil || got != "a:still" {
		t.Fatalf("established flow after revoke: got %q, %v", got, err)
	}
	if _, err := newUDPClient(t, client2, lbAddr).ask("new", deniedWait); !isTimeout(err) {
		t.Fatalf("new flow of revoked client: got %v, want no answer", err)
	}
	if got, err := denied.ask("now", longWait); err != nil || got != "a:now" {
		t.Fatalf("newly admitted client: got %q, %v", got, err)
	}
	if *kernelTests {
		// The kernel carried client2's flow, so the socket's filter has no
		// established flow to keep client2 for: it dropped the new one.
		waitFor(t, longWait, "the filter drop to be counted", func() bool {
			return h.metric("moat_dataplane_listener_dropped_packets_total", "listener", "l", "protocol", "udp") >= 2
		})
		// Counted IP bytes (28 bytes of headers a datagram) of the flows the
		// kernel carried, "ping" and "still" at least; client3's flow may be
		// the proxy's: conntrack remembers its denied first datagram, which
		// went to the socket, and sends the rest of the flow there too.
		waitFor(t, longWait, "the bytes to be counted", func() bool {
			return h.metric("moat_dataplane_bytes_total", "listener", "l", "direction", "in") >= 4+5+2*28 &&
				h.metric("moat_dataplane_bytes_total", "listener", "l", "direction", "out") >= 6+7+2*28
		})
		return
	}
	// The revoked client's new flow passed the filter (which still admits
	// client2 for its established flow) and was denied in userspace.
	waitFor(t, longWait, "the denial to be counted", func() bool {
		return h.metric("moat_dataplane_denied_flows_total", "listener", "l", "reason", DenySecurityGroup) == deniedBefore+1
	})
	if !strings.Contains(h.log.String(), `"client":"127.0.0.2:`) { // logged before counted
		t.Errorf("flow log does not name the denied client:\n%s", h.log.String())
	}
	// Counted after each datagram is sent on, so possibly after the reply.
	waitFor(t, longWait, "12 bytes in and 18 out", func() bool {
		return h.metric("moat_dataplane_bytes_total", "listener", "l", "direction", "in") == 12 &&
			h.metric("moat_dataplane_bytes_total", "listener", "l", "direction", "out") == 18
	})
}

func TestUDPIdleTimeout(t *testing.T) {
	t.Parallel()
	n := newNet()
	h := newHarness(t)
	hcPort := freePort(t, n.inA(0))
	acceptServer(t, ap(n.inA(0), hcPort))
	a := newUDPEcho(t, n.inA(0), "a")
	port := freePort(t, n.lbA())
	h.apply(LoadBalancer{ID: "lb", Zones: n.zoneA(), Listeners: []Listener{{
		ID: "l", Protocol: UDP, Port: port, AdmitUDP: policy("127.0.0.2/32"), UDPIdleTimeout: time.Second,
		TargetGroup: group("tg", hcPort, tgTarget("a", a.addr, "zone-a")),
	}}})
	c := newUDPClient(t, client2, ap(n.lbA(), port))
	if _, err := c.ask("one", longWait); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if *kernelTests {
		// The fast path reports its flows every second, maybe after this one
		// idled out: conntrack shows when it ends.
		local := c.c.LocalAddr().(*net.UDPAddr).AddrPort()
		if !kernelCarries(t, h.e, local, syscall.IPPROTO_UDP) {
			t.Fatal("the kernel does not carry the flow")
		}
		waitFor(t, longWait, "the idle flow to end", func() bool { return !kernelCarries(t, h.e, local, syscall.IPPROTO_UDP) })
	} else {
		waitFor(t, longWait, "the idle flow to end", func() bool {
			return h.metric("moat_dataplane_active_flows", "listener", "l") == 0
		})
	}
	if time.Since(start) < 900*time.Millisecond {
		t.Errorf("flow ended after %v, before its idle timeout", time.Since(start))
	}
	// The next datagram is a new flow.
	if got, err := c.ask("two", longWait); err != nil || got != "a:two" {
		t.Fatalf("after idle: got %q, %v", got, err)
	}
	waitFor(t, longWait, "two new flows", func() bool {
		return h.metric("moat_dataplane_new_flows_total", "listener", "l") == 2
	})
	if *kernelTests {
		return // the kernel's SNAT keeps the client's port: both flows look alike to the target
	}
	if src := a.received(); len(src) != 2 || src[0] == src[1] {
		t.Errorf("backend sources %v: want two flows from two upstream sockets", src)
	}
}
