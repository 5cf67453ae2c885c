package kernel

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"net/netip"

	"github.com/moatlb/moat/internal/nftutil"
)

// hostNet is what the host's network lets the fast path do with flows that
// arrive on an interface (prerouting), as opposed to flows that start on this
// host (output), which need nothing of it.
type hostNet struct {
	// forwarding is, by family, net.ipv4.ip_forward and
	// net.ipv6.conf.all.forwarding: without it the kernel drops a packet
	// DNATed to another host's address.
	forwarding [families]bool
	// noIPv6 is a host without an IPv6 stack: nothing to say about its forwarding.
	noIPv6 bool
	// local are this host's addresses, read only while forwarding is off
	// for a family: a target there is reached without forwarding.
	local map[netip.Addr]bool
}

// forwardingSysctl names each family's forwarding switch, for the log.
var forwardingSysctl = [families]string{"net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"}

func (h hostNet) equal(g hostNet) bool {
	return h.forwarding == g.forwarding && h.noIPv6 == g.noIPv6 && maps.Equal(h.local, g.local)
}

// ingress reports whether the kernel may take the socket's new flows that
// arrive on an interface too. A packet from an interface to or DNATed to a
// loopback address is a martian (it would take route_localnet, which moat
// leaves alone; IPv6 never routes ::1 from outside), and one DNATed to
// another host needs forwarding of the socket's family; the
// listening socket, and so the userspace proxy, serves those flows instead of
// the kernel dropping them.
func (h hostNet) ingress(s Socket) bool {
	if s.Forward == nil || s.Addr.Addr().IsLoopback() {
		return false
	}
	forwarding := h.forwarding[familyOf(s.Addr.Addr())]
	for _, t := range s.Forward.Targets {
		if t.Addr().IsLoopback() || !forwarding && !h.local[t.Addr()] {
			return false
		}
	}
	return true
}

// refreshHost reads the host's network, within the call deadline, and
// reports whether it changed what the fast path may do. Forwarding off is
// logged per family (at start, and whenever it turns off), since it decides
// which flows from other hosts the kernel carries. A failed read keeps what was known
// (before the first: forwarding off, the safe side).
func (p *Path) refreshHost() bool {
	var h hostNet
	err := nftutil.Call(p.closingCtx(), p.opts.CallTimeout, func() (err error) {
		h, err = p.opts.readHost()
		return err
	})
	if err != nil {
		if !errors.Is(err, errClosed) {
			p.log.Error("could not read the host's network settings", "error", err)
		}
		return false
	}
	if p.hostRead && h.equal(p.host) {
		return false
	}
	for f, on := range h.forwarding {
		was := p.host.forwarding[f]
		// IPv6 forwarding is off on most hosts, and only dualstack load balancers need it: a
		// note, not a warning.
		level := slog.LevelWarn
		if family(f) == ipv6 {
			level = slog.LevelInfo
		}
		switch {
		case family(f) == ipv6 && h.noIPv6:
		case !on && (!p.hostRead || was):
			p.log.Log(context.Background(), level, "IP forwarding is off: flows from other hosts to targets on other hosts go through the userspace proxy; set the sysctl to 1 for the kernel fast path to forward them",
				"sysctl", forwardingSysctl[f])
		case on && p.hostRead && !was:
			p.log.Info("IP forwarding is on: the kernel fast path forwards flows from other hosts to targets on other hosts",
				"sysctl", forwardingSysctl[f])
		}
	}
	p.host, p.hostRead = h, true
	return true
}
