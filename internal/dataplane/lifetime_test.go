package dataplane

import (
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The flow-lifetime invariants: what ends an established flow, and what does
// not, is the same whichever engine carries it, for TCP and UDP. go test runs
// them with the userspace engine; go test -args -kernel with the kernel fast
// path, where every case first proves that the kernel carries the flow
// (conntrack holds it with the engine's mark, and the userspace proxy
// accepted nothing).
//
// As on AWS: a revoked rule, a deregistered target while it drains, the
// last target turning unhealthy (the load balancer then fails open) end no
// flow; an unhealthy target with healthy peers (connection termination on,
// AWS's default), the end of a deregistration delay with connection
// termination, the idle timeout and a deleted listener end them. A TCP
// client then sees a reset; a UDP client's next datagram starts a new flow,
// judged and balanced afresh (or dropped, with nowhere to go).

type lifetime struct {
	t     *testing.T
	h     *harness
	n     testNet
	proto Protocol // TCP or UDP
	a, b  *backend
	udp   map[string]*udpEcho // the backends' UDP echoes, by name
	port  uint16
}

// newLifetime starts an engine and backends a (and b, when two) in zone a.
func newLifetime(t *testing.T, proto Protocol, two bool) *lifetime {
	t.Parallel()
	w := &lifetime{t: t, h: newHarness(t), n: newNet(), proto: proto, udp: map[string]*udpEcho{}}
	hcPort := freePort(t, w.n.inA(0), w.n.inA(1))
	w.a = newBackend(t, "a", w.n.inA(0), "zone-a", hcPort)
	if two {
		w.b = newBackend(t, "b", w.n.inA(1), "zone-a", hcPort)
	}
	if proto == UDP {
		w.udp["a"] = newUDPEcho(t, w.n.inA(0), "a")
		if two {
			w.udp["b"] = newUDPEcho(t, w.n.inA(1), "b")
		}
	}
	w.port = freePort(t, w.n.lbA())
	return w
}

// bothProtocols runs a lifetime case for TCP and for UDP.
func bothProtocols(t *testing.T, run func(t *testing.T, proto Protocol)) {
	for _, proto := range []Protocol{TCP, UDP} {
		t.Run(string(proto), func(t *testing.T) { run(t, proto) })
	}
}

func (w *lifetime) target(b *backend) Target {
	if w.proto == UDP {
		return tgTarget(b.name, w.udp[b.name].addr, b.zone)
	}
	return b.cfg()
}

// config is one load balancer with one listener admitting 127.0.0.2, over the
// backends, after edit changes the listener.
func (w *lifetime) config(edit func(*Listener)) LoadBalancer {
	targets := []Target{w.target(w.a)}
	if w.b != nil {
		targets = append(targets, w.target(w.b))
	}
	tg := group("tg", w.a.hc.addr.Port(), targets...)
	tg.HealthCheck = fastChecks(HealthCheckTCP, w.a.hc.addr.Port())
	l := Listener{ID: "l", Protocol: w.proto, Port: w.port, AdmitTCP: policy("127.0.0.2/32"),
		AdmitUDP: policy("127.0.0.2/32"), TargetGroup: tg}
	if edit != nil {
		edit(&l)
	}
	return LoadBalancer{ID: "lb", Zones: w.n.zoneA(), Listeners: []Listener{l}}
}

func (w *lifetime) admit(cidr string) func(*Listener) {
	return func(l *Listener) { l.AdmitTCP, l.AdmitUDP = policy(cidr), policy(cidr) }
}

// testFlow is a client's flow through the listener: a TCP connection, or a UDP
// socket's datagrams.
type testFlow struct {
	tcp    *client
	udp    *udpClient
	target string // the backend it landed on
}

func (f *testFlow) local() netip.AddrPort {
	if f.udp != nil {
		return f.udp.c.LocalAddr().(*net.UDPAddr).AddrPort()
	}
	return addrPortOf(f.tcp.c.LocalAddr())
}

// exchange sends msg and returns the name of the backend that answered
// within wait.
func (f *testFlow) exchange(msg string, wait time.Duration) (string, error) {
	if f.tcp != nil {
		return f.target, f.tcp.echoWithin(msg, wait)
	}
	got, err := f.udp.ask(msg, wait)
	name, _, _ := strings.Cut(got, ":")
	return name, err
}

// open opens a new flow from client2. A UDP flow's first datagram waits at
// most wait for an answer.
func (w *lifetime) open(wait time.Duration) (*testFlow, error) {
	w.t.Helper()
	lb := ap(w.n.lbA(), w.port)
	if w.proto == TCP {
		c, name := connect(w.t, client2, lb)
		return &testFlow{tcp: c, target: name}, nil
	}
	f := &testFlow{udp: newUDPClient(w.t, client2, lb)}
	var err error
	f.target, err = f.exchange("hello", wait)
	return f, err
}

// openOn opens a flow from client2 that lands on the named target, and
// proves which engine carries it.
func (w *lifetime) openOn(name string) *testFlow {
	w.t.Helper()
	for range 100 {
		f, err := w.open(longWait)
		if err != nil {
			w.t.Fatalf("open a flow: %v", err)
		}
		if f.target == name {
			w.proveCarrier(f)
			return f
		}
		f.close()
	}
	w.t.Fatalf("no flow landed on %s", name)
	return nil
}

func (f *testFlow) close() {
	if f.tcp != nil {
		f.tcp.c.Close()
	}
	if f.udp != nil {
		f.udp.c.Close()
	}
}

// deniedNewFlow asserts that a new flow from client2 reaches no target.
func (w *lifetime) deniedNewFlow(why string) {
	w.t.Helper()
	if w.proto == TCP {
		if err := dialDenied(client2, ap(w.n.lbA(), w.port)); err != nil {
			w.t.Fatalf("%s: a new flow: %v", why, err)
		}
		return
	}
	if f, err := w.open(deniedWait); err == nil {
		w.t.Fatalf("%s: a new flow reached %s", why, f.target)
	}
}

func (w *lifetime) proveCarrier(f *testFlow) {
	w.t.Helper()
	proxied := w.h.metric("moat_dataplane_proxied_flows_total", "listener", "l")
	proto := uint8(syscall.IPPROTO_TCP)
	if w.proto == UDP {
		proto = syscall.IPPROTO_UDP
	}
	inKernel := w.h.e.kernel != nil && kernelCarries(w.t, w.h.e, f.local(), proto)
	switch {
	case *kernelTests && (!inKernel || proxied != 0):
		w.t.Fatalf("the kernel does not carry the flow (in conntrack: %v, proxied flows: %v)", inKernel, proxied)
	case !*kernelTests && proxied == 0:
		w.t.Fatal("the userspace proxy does not carry the flow")
	}
}

// alive asserts that the flow still carries data both ways, to its target.
func (w *lifetime) alive(f *testFlow, when string) {
	w.t.Helper()
	got, err := f.exchange("still here", longWait)
	if err != nil || got != f.target {
		w.t.Fatalf("%s: the flow ended: answered by %q, %v", when, got, err)
	}
}

// ended waits for the flow to end, not before after. A TCP client must see
// a reset: the userspace engine resets it, and after the kernel forgot it the
// client's next segment is answered with one. (An exchange under way when the
// kernel forgets the flow may go unanswered: the target's answer then goes
// to the client unchanged, whose stack resets the target, not itself.) A UDP
// client's next datagram is a new flow, which goes to next ("": nowhere, it is
// dropped).
func (w *lifetime) ended(f *testFlow, after time.Time, next string) {
	w.t.Helper()
	var err error
	waitFor(w.t, longWait, "the flow to end", func() bool {
		var got string
		got, err = f.exchange("anyone?", time.Second)
		if f.udp != nil {
			return next == "" && err != nil || next != "" && err == nil && got == next
		}
		return err != nil && !isTimeout(err)
	})
	if f.tcp != nil && !isReset(err) {
		w.t.Errorf("the flow ended with %v, want a reset", err)
	}
	if time.Now().Before(after) {
		w.t.Errorf("the flow ended %v too early", time.Until(after))
	}
}

func TestLifetimeRevoke(t *testing.T) {
	bothProtocols(t, func(t *testing.T, proto Protocol) {
		w := newLifetime(t, proto, false)
		w.h.apply(w.config(nil))
		f := w.openOn("a")
		w.h.apply(w.config(w.admit("127.0.0.3/32")))
		w.deniedNewFlow("after the revoke")
		w.alive(f, "after the revoke")
	})
}

func TestLifetimeDeregister(t *testing.T) {
	bothProtocols(t, func(t *testing.T, proto Protocol) {
		for _, terminate := range []bool{false, true} {
			name := map[bool]string{false: "keep", true: "terminate"}[terminate]
			t.Run(name, func(t *testing.T) {
				w := newLifetime(t, proto, false)
				w.h.apply(w.config(nil))
				f := w.openOn("a")
				// The zone's last target drains: no new flow has a target.
				until := time.Now().Add(2 * time.Second)
				drain := func(l *Listener) {
					l.TargetGroup.Targets[0].DrainingUntil = until
					l.TargetGroup.TerminateOnDeregistration = terminate
				}
				w.h.apply(w.config(drain))
				if proto == UDP {
					w.deniedNewFlow("with no target")
				} else if d, err := dialFrom(client2, ap(w.n.lbA(), w.port), 2*time.Second); err == nil {
					// No target: the socket resets a new flow at once.
					d.SetReadDeadline(time.Now().Add(longWait))
					if _, err := d.Read(make([]byte, 1)); !isReset(err) {
						t.Errorf("a new flow with no target: %v, want a reset", err)
					}
					d.Close()
				}
				w.alive(f, "while draining")
				if terminate {
					w.ended(f, until, "")
					return
				}
				waitFor(t, longWait, "the delay to pass", func() bool { return time.Now().After(until.Add(time.Second)) })
				w.alive(f, "after the delay")
				// The control plane then drops the target.
				w.h.apply(w.config(func(l *Listener) { l.TargetGroup.Targets = nil }))
				w.alive(f, "after the target left the group")
			})
		}
	})
}

func TestLifetimeUnhealthy(t *testing.T) {
	bothProtocols(t, func(t *testing.T, proto Protocol) {
		t.Run("healthy peer", func(t *testing.T) {
			w := newLifetime(t, proto, true)
			w.h.apply(w.config(nil))
			w.h.waitHealth("tg", "a", w.target(w.a).Port, StateHealthy, "", healthWait)
			w.h.waitHealth("tg", "b", w.target(w.b).Port, StateHealthy, "", healthWait)
			f := w.openOn("a")
			failed := time.Now()
			w.a.hc.stop()
			w.h.waitHealth("tg", "a", w.target(w.a).Port, StateUnhealthy, ReasonFailedHealthChecks, healthWait)
			w.ended(f, failed, "b")
		})
		t.Run("last target fails open", func(t *testing.T) {
			w := newLifetime(t, proto, false)
			w.h.apply(w.config(nil))
			w.h.waitHealth("tg", "a", w.target(w.a).Port, StateHealthy, "", healthWait)
			f := w.openOn("a")
			w.a.hc.stop()
			w.h.waitHealth("tg", "a", w.target(w.a).Port, StateUnhealthy, ReasonFailedHealthChecks, healthWait)
			w.alive(f, "with the only target unhealthy")
			w.openOn("a") // failing open, new flows still go there
		})
	})
}

func TestLifetimeIdle(t *testing.T) {
	bothProtocols(t, func(t *testing.T, proto Protocol) {
		w := newLifetime(t, proto, false)
		const idle = 2 * time.Second
		w.h.apply(w.config(func(l *Listener) { l.TCPIdleTimeout, l.UDPIdleTimeout = idle, idle }))
		f := w.openOn("a")
		start := time.Now()
		waitFor(t, longWait, "the idle timeout to pass", func() bool { return time.Since(start) > idle+time.Second })
		if proto == TCP {
			if _, err := f.exchange("late", longWait); !isReset(err) {
				t.Errorf("the idle flow's next write: %v, want a reset", err)
			}
			return
		}
		// The next datagram is a new flow, carried as the first was.
		newFlows := func() float64 { return w.h.metric("moat_dataplane_new_flows_total", "listener", "l") }
		waitFor(t, longWait, "the first flow to be counted", func() bool { return newFlows() == 1 })
		w.alive(f, "after the idle timeout")
		w.proveCarrier(f)
		waitFor(t, longWait, "a second flow to be counted", func() bool { return newFlows() == 2 })
	})
}

func TestLifetimeDeletedListener(t *testing.T) {
	bothProtocols(t, func(t *testing.T, proto Protocol) {
		w := newLifetime(t, proto, false)
		w.h.apply(w.config(nil))
		f := w.openOn("a")
		deleted := time.Now()
		w.h.apply(LoadBalancer{ID: "lb", Zones: w.n.zoneA()})
		w.ended(f, deleted, "")
	})
}
