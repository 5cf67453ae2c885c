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
//
// Each invariant is a lifetimeCase, run here over IPv4 on loopback, and by
// TestLifetimeIPv6 over IPv6 in a network namespace of its own.

// lifetimeNet is where a lifetime case runs.
type lifetimeNet struct {
	lb            netip.Addr    // the load balancer's address in zone a
	targets       [2]netip.Addr // backends a's and b's
	client, other netip.Addr    // the client the listener admits, and one it does not
}

// ipv4Net gives each case /24s of its own on loopback (see newNet).
func ipv4Net() lifetimeNet {
	n := newNet()
	return lifetimeNet{lb: n.lbA(), targets: [2]netip.Addr{n.inA(0), n.inA(1)}, client: client2, other: client3}
}

// A lifetimeCase checks one invariant for flows of proto, on addresses from at.
type lifetimeCase func(t *testing.T, at func() lifetimeNet, proto Protocol)

type lifetime struct {
	t     *testing.T
	h     *harness
	n     lifetimeNet
	proto Protocol // TCP or UDP
	a, b  *backend
	udp   map[string]*udpEcho // the backends' UDP echoes, by name
	port  uint16
}

// newLifetime starts an engine and backends a (and b, when two) in zone a.
func newLifetime(t *testing.T, n lifetimeNet, proto Protocol, two bool) *lifetime {
	t.Parallel()
	w := &lifetime{t: t, h: newHarness(t), n: n, proto: proto, udp: map[string]*udpEcho{}}
	hcPort := freePort(t, n.targets[0], n.targets[1])
	w.a = newBackend(t, "a", n.targets[0], "zone-a", hcPort)
	if two {
		w.b = newBackend(t, "b", n.targets[1], "zone-a", hcPort)
	}
	if proto == UDP {
		w.udp["a"] = newUDPEcho(t, n.targets[0], "a")
		if two {
			w.udp["b"] = newUDPEcho(t, n.targets[1], "b")
		}
	}
	w.port = freePort(t, n.lb)
	return w
}

// bothProtocols runs a lifetime case for TCP and for UDP.
func bothProtocols(t *testing.T, at func() lifetimeNet, run lifetimeCase) {
	for _, proto := range []Protocol{TCP, UDP} {
		t.Run(string(proto), func(t *testing.T) { run(t, at, proto) })
	}
}

// only is a client's address as a policy's one source.
func only(a netip.Addr) string { return netip.PrefixFrom(a, a.BitLen()).String() }

func (w *lifetime) target(b *backend) Target {
	if w.proto == UDP {
		return tgTarget(b.name, w.udp[b.name].addr, b.zone)
	}
	return b.cfg()
}

// config is one load balancer with one listener admitting the client, over
// the backends, after edit changes the listener.
func (w *lifetime) config(edit func(*Listener)) LoadBalancer {
	targets := []Target{w.target(w.a)}
	if w.b != nil {
		targets = append(targets, w.target(w.b))
	}
	tg := group("tg", w.a.hc.addr.Port(), targets...)
	tg.HealthCheck = fastChecks(HealthCheckTCP, w.a.hc.addr.Port())
	l := Listener{ID: "l", Protocol: w.proto, Port: w.port, AdmitTCP: policy(only(w.n.client)),
		AdmitUDP: policy(only(w.n.client)), TargetGroup: tg}
	if edit != nil {
		edit(&l)
	}
	return LoadBalancer{ID: "lb", Zones: w.zones(), Listeners: []Listener{l}}
}

func (w *lifetime) zones() []Zone { return []Zone{{"zone-a", w.n.lb}} }

func (w *lifetime) front() netip.AddrPort { return ap(w.n.lb, w.port) }

func (w *lifetime) admit(client netip.Addr) func(*Listener) {
	return func(l *Listener) { l.AdmitTCP, l.AdmitUDP = policy(only(client)), policy(only(client)) }
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

// open opens a new flow from the client. A UDP flow's first datagram waits at
// most wait for an answer.
func (w *lifetime) open(wait time.Duration) (*testFlow, error) {
	w.t.Helper()
	if w.proto == TCP {
		c, name := connect(w.t, w.n.client, w.front())
		return &testFlow{tcp: c, target: name}, nil
	}
	f := &testFlow{udp: newUDPClient(w.t, w.n.client, w.front())}
	var err error
	f.target, err = f.exchange("hello", wait)
	return f, err
}

// openOn opens a flow from the client that lands on the named target, and
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

// deniedNewFlow asserts that a new flow from client reaches no target.
func (w *lifetime) deniedNewFlow(client netip.Addr, why string) {
	w.t.Helper()
	if w.proto == TCP {
		if err := dialDenied(client, w.front()); err != nil {
			w.t.Fatalf("%s: a new flow: %v", why, err)
		}
		return
	}
	u := newUDPClient(w.t, client, w.front())
	if got, err := u.ask("hello", deniedWait); err == nil {
		w.t.Fatalf("%s: a new flow reached %s", why, got)
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

func TestLifetimeDenied(t *testing.T) { bothProtocols(t, ipv4Net, lifetimeDenied) }

// lifetimeDenied: a client the listener does not admit reaches no target,
// while the admitted client's flows are carried.
func lifetimeDenied(t *testing.T, at func() lifetimeNet, proto Protocol) {
	w := newLifetime(t, at(), proto, false)
	w.h.apply(w.config(nil))
	w.openOn("a")
	w.deniedNewFlow(w.n.other, "a client no rule admits")
}

func TestLifetimeRevoke(t *testing.T) { bothProtocols(t, ipv4Net, lifetimeRevoke) }

func lifetimeRevoke(t *testing.T, at func() lifetimeNet, proto Protocol) {
	w := newLifetime(t, at(), proto, false)
	w.h.apply(w.config(nil))
	f := w.openOn("a")
	w.h.apply(w.config(w.admit(w.n.other)))
	w.deniedNewFlow(w.n.client, "after the revoke")
	w.alive(f, "after the revoke")
}

func TestLifetimeDeregister(t *testing.T) { bothProtocols(t, ipv4Net, lifetimeDeregister) }

func lifetimeDeregister(t *testing.T, at func() lifetimeNet, proto Protocol) {
	for _, terminate := range []bool{false, true} {
		name := map[bool]string{false: "keep", true: "terminate"}[terminate]
		t.Run(name, func(t *testing.T) {
			w := newLifetime(t, at(), proto, false)
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
				w.deniedNewFlow(w.n.client, "with no target")
			} else if d, err := dialFrom(w.n.client, w.front(), 2*time.Second); err == nil {
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
}

func TestLifetimeUnhealthy(t *testing.T) { bothProtocols(t, ipv4Net, lifetimeUnhealthy) }

func lifetimeUnhealthy(t *testing.T, at func() lifetimeNet, proto Protocol) {
	t.Run("healthy peer", func(t *testing.T) {
		w := newLifetime(t, at(), proto, true)
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
		w := newLifetime(t, at(), proto, false)
		w.h.apply(w.config(nil))
		w.h.waitHealth("tg", "a", w.target(w.a).Port, StateHealthy, "", healthWait)
		f := w.openOn("a")
		w.a.hc.stop()
		w.h.waitHealth("tg", "a", w.target(w.a).Port, StateUnhealthy, ReasonFailedHealthChecks, healthWait)
		w.alive(f, "with the only target unhealthy")
		w.openOn("a") // failing open, new flows still go there
	})
}

func TestLifetimeIdle(t *testing.T) { bothProtocols(t, ipv4Net, lifetimeIdle) }

func lifetimeIdle(t *testing.T, at func() lifetimeNet, proto Protocol) {
	w := newLifetime(t, at(), proto, false)
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
}

func TestLifetimeDeletedListener(t *testing.T) { bothProtocols(t, ipv4Net, lifetimeDeletedListener) }

func lifetimeDeletedListener(t *testing.T, at func() lifetimeNet, proto Protocol) {
	w := newLifetime(t, at(), proto, false)
	w.h.apply(w.config(nil))
	f := w.openOn("a")
	deleted := time.Now()
	w.h.apply(LoadBalancer{ID: "lb", Zones: w.zones()})
	w.ended(f, deleted, "")
}

// TestLifetimeClientReset: a TCP client's reset resets the target's side too, as AWS's load
// balancers do, and does not half-close it: a FIN would leave the flow's upstream socket in
// TIME_WAIT, and at thousands of short flows a second those exhaust the load balancer's source
// ports towards a target. (UDP has no reset.)
func TestLifetimeClientReset(t *testing.T) { lifetimeClientReset(t, ipv4Net) }

func lifetimeClientReset(t *testing.T, at func() lifetimeNet) {
	w := newLifetime(t, at(), TCP, false)
	w.h.apply(w.config(nil))
	f := w.openOn("a")
	if _, err := f.exchange("x", longWait); err != nil {
		t.Fatal(err)
	}
	reset(f.tcp.c)
	waitFor(t, longWait, "the target's side of the flow to end", func() bool { return len(w.a.echo.connEnds()) > 0 })
	if err := w.a.echo.connEnds()[0]; !isReset(err) {
		t.Errorf("the target's side ended with %v, want a reset", err)
	}
}
