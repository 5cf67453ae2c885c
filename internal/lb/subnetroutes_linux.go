//go:build linux && !moat_portable

package lb

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// routeProtocol marks the routes moat lb adds (iproute2 shows it as "proto 77"), so that a restart
// adopts them instead of adding twice.
const routeProtocol = 77

// netlinkTimeout bounds every route call: a stuck kernel must not stall the sync loop.
const netlinkTimeout = 2 * time.Second

// subnetRouter makes the blocks of API-made subnets local to the host, each by a route of type
// local on loopback in the local table, as 127.0.0.0/8 is. It never takes over a block the host
// already routes somewhere (a real network), and removes what it added when the subnet goes and
// when moat lb stops cleanly. After a kill, the next start adopts the routes of subnets that still
// exist; those of subnets deleted meanwhile stay until removed by hand (ip route show table local
// proto 77).
type subnetRouter struct {
	log *slog.Logger

	mu     sync.Mutex
	added  map[netip.Prefix]bool
	failed map[netip.Prefix]error
}

func newSubnetRouter(log *slog.Logger) *subnetRouter {
	return &subnetRouter{log: log, added: map[netip.Prefix]bool{}, failed: map[netip.Prefix]error{}}
}

func (r *subnetRouter) handle() (*netlink.Handle, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, err
	}
	if err := h.SetSocketTimeout(netlinkTimeout); err != nil {
		h.Close()
		return nil, err
	}
	return h, nil
}

func localRoute(p netip.Prefix, lo int) *netlink.Route {
	return &netlink.Route{
		LinkIndex: lo, Dst: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)},
		Type: unix.RTN_LOCAL, Table: unix.RT_TABLE_LOCAL, Scope: unix.RT_SCOPE_HOST, Protocol: routeProtocol,
	}
}

// Sync makes exactly the wanted blocks local (of those moat lb routes) and remembers why any
// could not be.
func (r *subnetRouter) Sync(want []netip.Prefix) {
	r.mu.Lock()
	defer r.mu.Unlock()
	// Sync runs after every commit: with nothing to route, or exactly what was routed last time
	// and nothing failed, it touches no netlink.
	if len(want) == 0 && len(r.added) == 0 || r.settled(want) {
		return
	}
	h, err := r.handle()
	if err != nil {
		r.failAll(want, err)
		return
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		r.failAll(want, err)
		return
	}
	ours, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_LOCAL, Protocol: routeProtocol},
		netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		r.failAll(want, err)
		return
	}
	present := map[netip.Prefix]bool{}
	for _, rt := range ours {
		if p, ok := prefixOf(rt.Dst); ok {
			present[p] = true
		}
	}
	wanted := map[netip.Prefix]bool{}
	for _, p := range want {
		wanted[p] = true
		if present[p] {
			r.added[p], r.failed[p] = true, nil
			continue
		}
		added, err := r.add(h, p, lo.Attrs().Index)
		if err != nil {
			if r.failed[p] == nil {
				r.log.Warn("cannot make an API-made subnet's block local to this host: its load balancers cannot bind their addresses", "block", p, "err", err)
			}
			r.failed[p] = err
			continue
		}
		if added {
			r.log.Info("routed an API-made subnet's block to loopback", "block", p)
			r.added[p] = true
		}
		r.failed[p] = nil
	}
	for p := range r.added {
		if wanted[p] {
			continue
		}
		if err := h.RouteDel(localRoute(p, lo.Attrs().Index)); err != nil && !errors.Is(err, unix.ESRCH) {
			r.log.Warn("cannot remove the local route of a deleted subnet's block", "block", p, "err", err)
			continue
		}
		delete(r.added, p)
		delete(r.failed, p)
	}
}

// add routes p to loopback, unless the host has its addresses already (added is then false) or
// routes it somewhere other than by its default route.
func (r *subnetRouter) add(h *netlink.Handle, p netip.Prefix, lo int) (added bool, err error) {
	routes, err := h.RouteGet(p.Addr().AsSlice())
	if err != nil && !errors.Is(err, unix.ENETUNREACH) { // unreachable: a host without a default route
		return false, err
	}
	for _, rt := range routes {
		if rt.Type == unix.RTN_LOCAL {
			return false, nil
		}
	}
	existing, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return false, err
	}
	for _, rt := range existing {
		if q, ok := prefixOf(rt.Dst); ok && q.Bits() > 0 && q.Overlaps(p) {
			return false, fmt.Errorf("%s overlaps %s, which this host routes already: moat lb does not take over a network in use", p, q)
		}
	}
	if err := h.RouteAdd(localRoute(p, lo)); err != nil {
		if errors.Is(err, unix.EPERM) {
			return false, fmt.Errorf("%w (routing needs root or CAP_NET_ADMIN)", err)
		}
		return false, err
	}
	return true, nil
}

// settled reports whether want is what the last Sync made local, with no failure to retry.
func (r *subnetRouter) settled(want []netip.Prefix) bool {
	if len(want) != len(r.added) {
		return false
	}
	for _, p := range want {
		if !r.added[p] || r.failed[p] != nil {
			return false
		}
	}
	return true
}

func (r *subnetRouter) failAll(want []netip.Prefix, err error) {
	for _, p := range want {
		if r.failed[p] == nil {
			r.log.Warn("cannot make an API-made subnet's block local to this host: its load balancers cannot bind their addresses", "block", p, "err", err)
		}
		r.failed[p] = err
	}
}

// Why says why a's block is not local, if moat lb tried and failed.
func (r *subnetRouter) Why(a netip.Addr) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for p, err := range r.failed {
		if err != nil && p.Contains(a) {
			return fmt.Errorf("moat lb could not make the block %s local to this host: %w", p, err)
		}
	}
	return nil
}

// Close removes the routes moat lb added.
func (r *subnetRouter) Close() { r.Sync(nil) }

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	bits, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), bits), true
}
