package dataplane

import (
	"net/netip"
	"testing"
	"time"
)

// TestDecideIsWhatFlowsMeet: Decide (what moat explain reports) says what a new flow then meets:
// admitted to the target it lands on, dropped by the listener's groups, or reset for want of a
// target — one the backend groups keep out, or one draining.
func TestDecideIsWhatFlowsMeet(t *testing.T) {
	t.Parallel()
	n := newNet()
	h := newHarness(t)
	hcPort := freePort(t, n.inA(0))
	a := newBackend(t, "a", n.inA(0), "zone-a", hcPort)
	port := freePort(t, n.lbA())
	apply := func(target Target) {
		h.apply(LoadBalancer{ID: "lb", Zones: n.zoneA(), Listeners: []Listener{{
			ID: "l", Protocol: TCP, Port: port, AdmitTCP: policy("127.0.0.2/32"),
			TargetGroup: group("tg", hcPort, target),
		}}})
	}
	apply(a.cfg())
	lbAddr := ap(n.lbA(), port)
	decide := func(client netip.Addr) Decision {
		t.Helper()
		d, ok := h.e.Decide(ap(client, 0), lbAddr, "tcp")
		if !ok {
			t.Fatalf("Decide(%v → %v): no listener", client, lbAddr)
		}
		if d.LoadBalancerID != "lb" || d.ListenerID != "l" || d.TargetGroupID != "tg" || d.Zone != "zone-a" {
			t.Errorf("Decide names %+v", d)
		}
		return d
	}

	d := decide(client2)
	if d.Denied != "" || d.Target == nil || d.Target.ID != "a" || d.Target.Addr != a.echo.addr || len(d.Eligible) != 1 {
		t.Fatalf("admitted client: %+v", d)
	}
	if _, name := connect(t, client2, lbAddr); name != d.Target.ID {
		t.Errorf("the flow landed on %q, Decide said %q", name, d.Target.ID)
	}

	if d := decide(client3); d.Denied != DenySecurityGroup || d.Target != nil {
		t.Errorf("denied client: %+v", d)
	}
	if err := dialDenied(client3, lbAddr); err != nil {
		t.Errorf("denied client: %v", err)
	}

	if _, ok := h.e.Decide(ap(client2, 0), ap(n.lbA(), port+1), "tcp"); ok {
		t.Error("Decide found a listener on a port without one")
	}

	// The backend groups keep the only target out, then it drains: no target either way.
	for _, edit := range []func(*Target){
		func(t *Target) { t.TrafficAllowed = false },
		func(t *Target) { t.DrainingUntil = time.Now().Add(time.Hour) },
	} {
		target := a.cfg()
		edit(&target)
		apply(target)
		d := decide(client2)
		if d.Denied != DenyNoTarget || len(d.InScope) != 1 || d.InScope[0].TrafficAllowed != target.TrafficAllowed || d.InScope[0].Draining != !target.DrainingUntil.IsZero() {
			t.Errorf("target %+v: %+v", target, d)
		}
		c, err := dialFrom(client2, lbAddr, 5*time.Second)
		if err == nil {
			c.SetReadDeadline(time.Now().Add(longWait))
			_, err = c.Read(make([]byte, 1))
			c.Close()
		}
		if !isReset(err) {
			t.Errorf("target %+v: the flow met %v, want a reset", target, err)
		}
	}
}
