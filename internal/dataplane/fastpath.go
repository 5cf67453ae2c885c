package dataplane

import (
	"context"
	"net/netip"
	"time"

	"github.com/moatlb/moat/internal/dataplane/kernel"
	"github.com/moatlb/moat/internal/secgroup"
)

// The kernel fast path (package kernel) forwards the TCP and UDP flows it
// can: nftables rules where a new flow first meets nat — the output hook for
// flows that start on this host, prerouting for flows that arrive on an
// interface — match it to a listening socket's address and port, admit it by
// the listener's policy and DNAT it to one of the targets this engine would
// choose from; conntrack carries the rest of the flow. Everything else stays
// with the userspace engine, which keeps its listening socket (it reserves
// the address and port, and receives what the kernel does not forward):
//
//   - a denied client is not forwarded, so its SYN or datagram reaches the
//     listening socket and its filter drops it, exactly as without the fast
//     path;
//   - a scope with no eligible target leaves its new flows to the socket,
//     which resets (TCP) or drops (UDP) them (no_target), while the flows the
//     kernel already carries go on;
//   - health checks, draining and the decision of which targets are eligible
//     are this engine's; the kernel follows them through kernelSockets;
//   - flows from other hosts that the kernel may not take (loopback targets,
//     or targets on other hosts without net.ipv4.ip_forward, or
//     net.ipv6.conf.all.forwarding for IPv6): the kernel package decides, and
//     leaves them to the socket;
//   - flows from a loopback address to a target off loopback (a load balancer on
//     127.x in front of a kind cluster's nodes): NAT would keep a loopback source,
//     which the kernel drops on any other interface;
//   - flows that change family: an IPv6 listener (a dualstack load balancer's
//     address) with IPv4 targets, or an IPv4 listener with IPv6 targets. The
//     userspace engine translates them, as AWS does; nftables NAT cannot (it
//     rewrites addresses within a family, and NAT64 is no part of netfilter),
//     so such a socket takes no new flows in the kernel.
//
// IPv4 and IPv6 listeners with targets of their own family are otherwise
// carried alike; only TCP and UDP listeners, though: a TLS listener's flows are
// all the userspace engine's.

// kernelApplyWait bounds how long Apply waits for the kernel to take its
// change; the kernel's own call deadline ends a stuck call sooner.
const kernelApplyWait = 10 * time.Second

// kernelSocketFor says what the kernel does with the socket's new flows: ok
// is false for a socket the fast path never serves (an IPv6 address with a
// zone); a nil Forward takes no new flows but keeps the established ones.
func kernelSocketFor(key sockKey, r *route) (s kernel.Socket, ok bool) {
	if key.addr.Zone() != "" {
		return kernel.Socket{}, false
	}
	s.Key = kernelKey(key)
	if r.tg == nil || r.tls != nil { // the kernel cannot terminate TLS
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
	is4 := s.Addr.Addr().Is4()
	for _, t := range ts {
		a := netip.AddrPortFrom(t.addr.Addr().Unmap(), t.addr.Port())
		if a.Addr().Is4() != is4 || a.Addr().Zone() != "" {
			return s, true // a change of family: userspace translates it
		}
		if s.Addr.Addr().IsLoopback() && !a.Addr().IsLoopback() {
			// NAT keeps a loopback source (the client's, or this socket's for SNAT), which the
			// kernel drops on any other interface; userspace connects from the host's address.
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
		v4, v6 := r.policy.Ranges()
		f.Admit = v6
		if is4 {
			f.Admit = v4
		}
	}
	s.Forward = f
	return s, true
}

func kernelKey(key sockKey) kernel.Key {
	proto := kernel.TCP
	if key.network == "udp" {
		proto = kernel.UDP
	}
	return kernel.Key{Proto: proto, Addr: netip.AddrPortFrom(key.addr.Unmap(), key.port)}
}

// kernelSockets is the fast path's desired state, computed from the routes of
// the last Apply and the target groups' current selections. It takes no lock.
func (u *Userspace) kernelSockets() []kernel.Socket {
	routes := u.kernelRoutes.Load()
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
func (u *Userspace) reportKernel(k kernel.Key, c kernel.Counts) {
	var m *listenerMetrics
	if routes := u.kernelRoutes.Load(); routes != nil {
		if r := (*routes)[sockKey{addr: k.Addr.Addr(), port: k.Addr.Port(), network: k.Proto.String()}]; r != nil {
			m = r.m
		}
	}
	last := u.kernelReported[k]
	if last.m != nil && last.m != m {
		last.m.active.Sub(float64(last.active))
		last.active = 0
	}
	if m == nil {
		delete(u.kernelReported, k)
		return
	}
	m.newFlows.Add(float64(c.NewFlows))
	m.bytesIn.Add(float64(c.BytesIn))
	m.bytesOut.Add(float64(c.BytesOut))
	m.active.Add(float64(c.Active - last.active))
	u.kernelReported[k] = kernelReported{m: m, active: c.Active}
}

// kickKernelLocked hands the fast path the routes of every socket (the end
// of an Apply) and returns the change's generation.
func (u *Userspace) kickKernelLocked() uint64 {
	if u.kernel == nil {
		return 0
	}
	routes := map[sockKey]*route{}
	for key, s := range u.sockets {
		switch s := s.(type) {
		case *tcpSocket:
			routes[key] = s.r.Load()
		case *udpSocket:
			routes[key] = s.r.Load()
		}
	}
	u.kernelRoutes.Store(&routes)
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
	routes := u.kernelRoutes.Load()
	if routes == nil {
		return
	}
	sel := t.tg.sel.Load()
	var keys []kernel.Key
	for key, r := range *routes {
		if r.tg == t.tg && (!unlessFailingOpen || !sel.scope(r.zone, r.crossZone).failingOpen()) {
			keys = append(keys, kernelKey(key))
		}
	}
	u.kernel.Terminate(keys, netip.AddrPortFrom(t.addr.Addr().Unmap(), t.addr.Port()))
}

// KernelLag is the age of the oldest change the kernel fast path does not
// reflect yet: zero when it is current or not in use.
func (u *Userspace) KernelLag() time.Duration {
	if u.kernel == nil {
		return 0
	}
	return u.kernel.Lag()
}
