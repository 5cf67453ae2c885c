package dataplane

import (
	"testing"
	"time"
)

// The flow-lifetime invariants: what ends an established TCP flow, and what
// does not, is the same whichever engine carries it. go test runs them with
// the userspace engine; go test -args -kernel with the kernel fast path,
// where every case first proves that the kernel carries the flow (conntrack
// holds it with the engine's mark, and the userspace proxy holds nothing).
//
// As on AWS: a revoked rule, a deregistered target while it drains, the
// last target turning unhealthy (the load balancer then fails open) end no
// flow; an unhealthy target with healthy peers (connection termination on,
// AWS's default), the end of a deregistration delay with connection
// termination, the idle timeout and a deleted listener end them, and the
// client sees a reset.

type lifetime struct {
	t    *testing.T
	h    *harness
	n    testNet
	a, b *backend
	port uint16
}

// newLifetime starts an engine and backends a (and b, when two) in zone a.
func newLifetime(t *testing.T, two bool) *lifetime {
	t.Parallel()
	w := &lifetime{t: t, h: newHarness(t), n: newNet()}
	hcPort := freePort(t, w.n.inA(0), w.n.inA(1))
	w.a = newBackend(t, "a", w.n.inA(0), "zone-a", hcPort)
	if two {
		w.b = newBackend(t, "b", w.n.inA(1), "zone-a", hcPort)
	}
	w.port = freePort(t, w.n.lbA())
	return w
}

// config is one load balancer with one listener admitting admit, over the
// backends, after edit changes the listener.
func (w *lifetime) config(edit func(*Listener)) LoadBalancer {
	targets := []Target{w.a.cfg()}
	if w.b != nil {
		targets = append(targets, w.b.cfg())
	}
	tg := group("tg", w.a.hc.addr.Port(), targets...)
	tg.HealthCheck = fastChecks(HealthCheckTCP, w.a.hc.addr.Port())
	l := Listener{ID: "l", Protocol: TCP, Port: w.port, AdmitTCP: policy("127.0.0.2/32"), TargetGroup: tg}
	if edit != nil {
		edit(&l)
	}
	return LoadBalancer{ID: "lb", Zones: w.n.zoneA(), Listeners: []Listener{l}}
}

// openOn opens a flow from client2 that lands on the named target, and
// proves which engine carries it.
func (w *lifetime) openOn(name string) *client {
	w.t.Helper()
	for range 100 {
		c, got := connect(w.t, client2, ap(w.n.lbA(), w.port))
		if got == name {
			w.proveCarrier(c)
			return c
		}
		c.c.Close()
	}
	w.t.Fatalf("no flow landed on %s", name)
	return nil
}

func (w *lifetime) proveCarrier(c *client) {
	w.t.Helper()
	w.h.e.mu.Lock()
	s := w.h.e.sockets[sockKey{addr: w.n.lbA(), port: w.port, network: "tcp"}].(*tcpSocket)
	w.h.e.mu.Unlock()
	s.mu.Lock()
	proxied := len(s.flows)
	s.mu.Unlock()
	inKernel := w.h.e.kernel != nil && kernelCarries(w.t, w.h.e, c)
	switch {
	case *kernelTests && (!inKernel || proxied != 0):
		w.t.Fatalf("the kernel does not carry the flow (in conntrack: %v, proxied flows: %d)", inKernel, proxied)
	case !*kernelTests && proxied == 0:
		w.t.Fatal("the userspace proxy does not carry the flow")
	}
}

// alive asserts that the flow still carries data both ways.
func (w *lifetime) alive(c *client, when string) {
	w.t.Helper()
	if err := c.echo("still here"); err != nil {
		w.t.Fatalf("%s: the flow ended: %v", when, err)
	}
}

// ended waits for the flow to end and asserts that the client saw a reset:
// the userspace engine resets it, and after the kernel forgot it the next
// segment is answered with one.
func (w *lifetime) ended(c *client, after time.Time) {
	w.t.Helper()
	var err error
	waitFor(w.t, longWait, "the flow to end", func() bool {
		err = c.echo("anyone?")
		return err != nil
	})
	if !isReset(err) {
		w.t.Errorf("the flow ended with %v, want a reset", err)
	}
	if time.Now().Before(after) {
		w.t.Errorf("the flow ended %v too early", time.Until(after))
	}
}

func TestLifetimeRevoke(t *testing.T) {
	w := newLifetime(t, false)
	w.h.apply(w.config(nil))
	c := w.openOn("a")
	w.h.apply(w.config(func(l *Listener) { l.AdmitTCP = policy("127.0.0.3/32") }))
	if err := dialDenied(client2, ap(w.n.lbA(), w.port)); err != nil {
		t.Fatalf("the revoked client's new flow: %v", err)
	}
	w.alive(c, "after the revoke")
}

func TestLifetimeDeregister(t *testing.T) {
	for _, terminate := range []bool{false, true} {
		name := map[bool]string{false: "keep", true: "terminate"}[terminate]
		t.Run(name, func(t *testing.T) {
			w := newLifetime(t, false)
			w.h.apply(w.config(nil))
			c := w.openOn("a")
			// The zone's last target drains: no new flow has a target.
			until := time.Now().Add(2 * time.Second)
			drain := func(l *Listener) {
				l.TargetGroup.Targets[0].DrainingUntil = until
				l.TargetGroup.TerminateOnDeregistration = terminate
			}
			w.h.apply(w.config(drain))
			if d, err := dialFrom(client2, ap(w.n.lbA(), w.port), 2*time.Second); err == nil {
				// No target: the socket resets a new flow at once.
				d.SetReadDeadline(time.Now().Add(longWait))
				if _, err := d.Read(make([]byte, 1)); !isReset(err) {
					t.Errorf("a new flow with no target: %v, want a reset", err)
				}
				d.Close()
			}
			w.alive(c, "while draining")
			if terminate {
				w.ended(c, until)
				return
			}
			waitFor(t, longWait, "the delay to pass", func() bool { return time.Now().After(until.Add(time.Second)) })
			w.alive(c, "after the delay")
			// The control plane then drops the target.
			w.h.apply(w.config(func(l *Listener) { l.TargetGroup.Targets = nil }))
			w.alive(c, "after the target left the group")
		})
	}
}

func TestLifetimeUnhealthy(t *testing.T) {
	t.Run("healthy peer", func(t *testing.T) {
		w := newLifetime(t, true)
		w.h.apply(w.config(nil))
		w.h.waitHealth("tg", "a", w.a.echo.addr.Port(), StateHealthy, "", healthWait)
		w.h.waitHealth("tg", "b", w.b.echo.addr.Port(), StateHealthy, "", healthWait)
		c := w.openOn("a")
		failed := time.Now()
		w.a.hc.stop()
		w.h.waitHealth("tg", "a", w.a.echo.addr.Port(), StateUnhealthy, ReasonFailedHealthChecks, healthWait)
		w.ended(c, failed)
	})
	t.Run("last target fails open", func(t *testing.T) {
		w := newLifetime(t, false)
		w.h.apply(w.config(nil))
		w.h.waitHealth("tg", "a", w.a.echo.addr.Port(), StateHealthy, "", healthWait)
		c := w.openOn("a")
		w.a.hc.stop()
		w.h.waitHealth("tg", "a", w.a.echo.addr.Port(), StateUnhealthy, ReasonFailedHealthChecks, healthWait)
		w.alive(c, "with the only target unhealthy")
		w.openOn("a") // failing open, new flows still go there
	})
}

func TestLifetimeIdle(t *testing.T) {
	w := newLifetime(t, false)
	const idle = 2 * time.Second
	w.h.apply(w.config(func(l *Listener) { l.TCPIdleTimeout = idle }))
	c := w.openOn("a")
	start := time.Now()
	waitFor(t, longWait, "the idle timeout to pass", func() bool { return time.Since(start) > idle+time.Second })
	if err := c.echo("late"); !isReset(err) {
		t.Errorf("the idle flow's next write: %v, want a reset", err)
	}
}

func TestLifetimeDeletedListener(t *testing.T) {
	w := newLifetime(t, false)
	w.h.apply(w.config(nil))
	c := w.openOn("a")
	deleted := time.Now()
	w.h.apply(LoadBalancer{ID: "lb", Zones: w.n.zoneA()})
	w.ended(c, deleted)
}
