package dataplane

import (
	"bufio"
	"testing"
	"time"
)

// TestFlowLimitPerListener: with MaxFlowsPerListener 2, a listener's third concurrent userspace
// flow is refused as a denied flow (a reset) and counted with reason flow_limit, across the
// listener's addresses; once a flow ends, a new one is served. The group speaks PPv2, which the
// kernel fast path never takes, so both modes exercise the userspace proxy.
func TestFlowLimitPerListener(t *testing.T) {
	n := newNet()
	h := newHarness(t, func(o *Options) { o.MaxFlowsPerListener = 2 })
	hcPort := freePort(t, n.inA(0))
	acceptServer(t, ap(n.inA(0), hcPort))
	echo := echoServer(t, ap(n.inA(0), 0), "a", true)
	tg := group("tg", hcPort, tgTarget("a", echo.addr, "zone-a"))
	tg.ProxyProtocolV2 = true
	port := freePort(t, n.lbA(), n.lbB())
	lb := LoadBalancer{ID: "lb", Zones: n.zones(), CrossZone: true, Listeners: []Listener{{ID: "l", Protocol: TCP, Port: port, TargetGroup: tg}}}
	h.apply(lb)

	first, _ := connect(t, client2, ap(n.lbA(), port))
	second, _ := connect(t, client2, ap(n.lbB(), port)) // the other address: the same listener
	// The proxy accepts and resets at once: the client's connect itself may already see it.
	third, err := dialFrom(client2, ap(n.lbA(), port), 5*time.Second)
	if err == nil {
		defer third.Close()
		err = (&client{c: third, r: bufio.NewReader(third)}).waitClosed(t, 5*time.Second)
	}
	if !isReset(err) {
		t.Errorf("third flow over the cap: %v, want a reset", err)
	}
	if got := h.metric("moat_dataplane_denied_flows_total", "listener", "l", "reason", DenyFlowLimit); got != 1 {
		t.Errorf("flows denied for the limit: %v, want 1", got)
	}
	if err := first.echo("still here"); err != nil {
		t.Errorf("a flow under the cap: %v", err)
	}

	second.c.Close()
	waitFor(t, longWait, "a new flow once one ended", func() bool {
		c, err := dialFrom(client2, ap(n.lbA(), port), 5*time.Second)
		if err != nil {
			return false
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = bufio.NewReader(c).ReadString('\n') // the backend's name: the flow reached it
		return err == nil
	})
}
