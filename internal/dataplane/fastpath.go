package dataplane

import (
	"net/netip"
	"slices"
	"time"

	"go4.org/netipx"

	"github.com/moatlb/moat/internal/secgroup"
)

// The kernel fast path.
//
// With Options.Kernel, the engine also asks the kernel to forward the TCP
// flows it can (see kernelSocketFor): nftables rules, in the output hook where
// locally originated connections pass, match a new flow to a listening
// socket's address and port, admit it by the listener's policy, and DNAT it to
// one of the targets the userspace engine would choose from; conntrack carries
// the rest of the flow, so an established flow costs no file descriptor, no
// goroutine and no copy. Everything else stays with the userspace engine,
// which keeps its listening socket (it reserves the address and port, and
// receives what the kernel does not forward):
//
//   - a denied client is not forwarded, so its SYN reaches the listening
//     socket and its filter drops it, exactly as without the fast path;
//   - a scope with no target leaves its flows to the socket, which resets
//     them (no_target);
//   - health checks, draining and the decision of which targets are eligible
//     are the userspace engine's; every change is reprogrammed at once.
//
// Flows keep the target conntrack gave them. Terminations (unhealthy targets,
// the end of a deregistration delay, a removed listener) delete the flows'
// conntrack entries; the next segment of either side is then answered with a
// reset. The idle timeout is conntrack's established timeout for the flow
// (a ct timeout object per listener idle value), so keepalives count, as on
// AWS. Bytes are counted in IP bytes (headers included), as AWS's
// ProcessedBytes counts them.
//
// Only load balancer addresses and targets on IPv4 loopback qualify: that is
// where a local client's packets can be redirected without forwarding or
// route_localnet, and it is moat's default deployment.

// kernelSocket is what the kernel fast path forwards for one listening socket.
type kernelSocket struct {
	key sockKey
	// admitAll admits every client; otherwise admit lists the admitted IPv4
	// ranges (empty: no one).
	admitAll bool
	admit    []netipx.IPRange
	// targets are the addresses new flows are spread over, in a stable order.
	targets []netip.AddrPort
	// sticky hashes the client address (stickiness.type=source_ip); otherwise
	// each flow picks at random.
	sticky bool
	// snat is the source address targets see; invalid keeps the client's own
	// (preserve_client_ip.enabled).
	snat netip.Addr
	idle time.Duration
	m    *listenerMetrics
}

// kernelSocketFor decides whether the kernel can forward the socket's new
// flows as its route asks, and how.
func kernelSocketFor(key sockKey, r *route) (kernelSocket, bool) {
	if key.network != "tcp" || !isLoopback4(key.addr) || r.tg == nil {
		return kernelSocket{}, false
	}
	sel := r.tg.sel.Load()
	if sel == nil || sel.set.ProxyProtocolV2 {
		return kernelSocket{}, false
	}
	ts := sel.scope(r.zone, r.crossZone).eligible()
	if len(ts) == 0 {
		return kernelSocket{}, false
	}
	ks := kernelSocket{key: key, sticky: sel.set.StickinessSourceIP, idle: r.idle, m: r.m}
	for _, t := range ts {
		a := netip.AddrPortFrom(t.addr.Addr().Unmap(), t.addr.Port())
		if !isLoopback4(a.Addr()) {
			return kernelSocket{}, false
		}
		ks.targets = append(ks.targets, a)
	}
	if !sel.set.PreserveClientIP {
		ks.snat = key.addr
	}
	if r.policy.Equal(secgroup.AllowAll()) {
		ks.admitAll = true
	} else {
		ks.admit, _ = r.policy.Ranges()
	}
	return ks, true
}

func isLoopback4(a netip.Addr) bool { a = a.Unmap(); return a.Is4() && a.IsLoopback() }

// equal reports whether two kernel sockets program the same rules.
func (a kernelSocket) equal(b kernelSocket) bool {
	return a.key == b.key && a.admitAll == b.admitAll && slices.Equal(a.admit, b.admit) &&
		slices.Equal(a.targets, b.targets) && a.sticky == b.sticky && a.snat == b.snat && a.idle == b.idle
}
