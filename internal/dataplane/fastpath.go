package dataplane

import (
	"context"
	"net/netip"
	"time"

	"github.com/moatlb/moat/internal/dataplane/kernel"
	"github.com/moatlb/moat/internal/secgroup"
)

// The kernel fast path (package kernel) forwards the TCP flows it can:
// nftables rules in the output hook, where locally originated connections
// pass, match a new flow to a listening socket's address and port, admit it
// by the listener's policy and DNAT it to one of the targets this engine
// would choose from; conntrack carries the rest of the flow. Everything else
// stays with the userspace engine, which keeps its listening socket (it
// reserves the address and port, and receives what the kernel does not
// forward):
//
//   - a denied client is not forwarded, so its SYN reaches the listening
//     socket and its filter drops it, exactly as without the fast path;
//   - a scope with no eligible target leaves its new flows to the socket,
//     which resets them (no_target), while the flows the kernel already
//     carries go on;
//   - health checks, draining and the decision of which targets are eligible
//     are this engine's; the kernel follows them through kernelSockets.
//
// Only load balancer addresses and targets on IPv4 loopback qualify: that is
// where a local client's packets can be redirected without forwarding or
// route_localnet, and it is moat's default deployment.

// kernelApplyWait bounds how long Apply waits for the kernel to take its
// change; the kernel's own call deadline ends a stuck call sooner.
const kernelApplyWait = 10 * time.Second

// kernelSocketFor says what the kernel does with the socket's new flows: ok
// is false for a socket the fast path never serves (UDP, addresses off IPv4
// loopback); a nil Forward takes no new flows but keeps the established ones.
func kernelSocketFor(key sockKey, r *route) (s kernel.Socket, ok bool) {
	if key.network != "tcp" || !isLoopback4(key.addr) {
		return kernel.Socket{}, false
	}
	s.Addr = netip.AddrPortFrom(key.addr.Unmap(), key.port)
	if r.tg == nil {
		return s, true
	}
	sel := r.tg.sel.Load()
	if sel == nil || sel.set.ProxyProtocolV2 {
		return s, true
	}
	ts := sel.scope(r.zone, r.crossZone).eligible()
	if len(ts) == 0 {
		return s, true
	}
	f := &kernel.Forward{Sticky: sel.set.StickinessSourceIP, Idle: r.idle}
	for _, t := range ts {
		a := netip.AddrPortFrom(t.addr.Addr().Unmap(), t.addr.Port())
		if !isLoopback4(a.Addr()) {
			return s, true
		}
		f.Targets = append(f.Targets, a)
	}
	if !sel.set.PreserveClientIP {
		f.SNAT = s.Addr.Addr()
	}
	if r.policy.Equal(secgroup.AllowAll()) {
		f.AdmitAll = true
	} else {
		f.Admit, _ = r.policy.Ranges()
	}
	s.Forward = f
	return s, true
}

func isLoopback4(a netip.Addr) bool { a = a.Unmap(); return a.Is4() && a.IsLoopback() }

// kernelSockets is the fast path's desired state, computed from the routes of
// the last Apply and the target groups' current selections. It takes no lock.
func (u *Userspace) kernelSockets() []kernel.Socket {
	routes := u.tcpRoutes.Load()
	if routes == nil {
		return nil
	}
	want := make([]kernel.Socket, 0, len(*routes))
	for key, r := range *routes {
		if s, ok := kernelSocketFor(key, r); ok {
			want = append(want, s)
		}
	}
	return want
}

// kernelReported is what the fast path last reported for a socket, so that
// its active-flow count moves between listeners' gauges by differences.
type kernelReported struct {
	m      *listenerMetrics
	active int
}

// reportKernel adds the fast path's counts to the socket's listener metrics.
// Only the kernel's worker calls it.
func (u *Userspace) reportKernel(addr netip.AddrPort, c kernel.Counts) {
	var m *listenerMetrics
	if routes := u.tcpRoutes.Load(); routes != nil {
		if r := (*routes)[sockKey{addr: addr.Addr(), port: addr.Port(), network: "tcp"}]; r != nil {
			m = r.m
		}
	}
	last := u.kernelReported[addr]
	if last.m != nil && last.m != m {
		last.m.active.Sub(float64(last.active))
		last.active = 0
	}
	if m == nil {
		delete(u.kernelReported, addr)
		return
	}
	m.newFlows.Add(float64(c.NewFlows))
	m.bytesIn.Add(float64(c.BytesIn))
	m.bytesOut.Add(float64(c.BytesOut))
	m.active.Add(float64(c.Active - last.active))
	u.kernelReported[addr] = kernelReported{m: m, active: c.Active}
}

// kickKernelLocked hands the fast path the routes of every TCP socket (the
// end of an Apply) and returns the change's generation.
func (u *Userspace) kickKernelLocked() uint64 {
	if u.kernel == nil {
		return 0
	}
	routes := map[sockKey]*route{}
	for key, s := range u.sockets {
		if ts, ok := s.(*tcpSocket); ok {
			routes[key] = ts.r.Load()
		}
	}
	u.tcpRoutes.Store(&routes)
	return u.kernel.Kick()
}

// waitKernel returns once the kernel has taken the change of generation gen,
// gave up on it (then it forwards nothing), or the engine closes.
func (u *Userspace) waitKernel(gen uint64) {
	if u.kernel == nil {
		return
	}
	ctx, cancel := context.WithTimeout(u.ctx, kernelApplyWait)
	defer cancel()
	if err := u.kernel.Wait(ctx, gen); err != nil && u.ctx.Err() == nil {
		u.log.Warn("kernel fast path is behind the configuration", "error", err)
	}
}

// terminateKernelFlows ends the fast-path flows to t; with unlessFailingOpen,
// only those balanced in a scope that is not failing open.
func (u *Userspace) terminateKernelFlows(t *target, unlessFailingOpen bool) {
	if u.kernel == nil {
		return
	}
	routes := u.tcpRoutes.Load()
	if routes == nil {
		return
	}
	sel := t.tg.sel.Load()
	var addrs []netip.AddrPort
	for key, r := range *routes {
		if r.tg == t.tg && (!unlessFailingOpen || !sel.scope(r.zone, r.crossZone).failingOpen()) {
			addrs = append(addrs, netip.AddrPortFrom(key.addr.Unmap(), key.port))
		}
	}
	u.kernel.Terminate(addrs, netip.AddrPortFrom(t.addr.Addr().Unmap(), t.addr.Port()))
}

// KernelLag is the age of the oldest change the kernel fast path does not
// reflect yet: zero when it is current or not in use.
func (u *Userspace) KernelLag() time.Duration {
	if u.kernel == nil {
		return 0
	}
	return u.kernel.Lag()
}
