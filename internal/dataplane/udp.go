package dataplane

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/moatlb/moat/internal/secgroup"
)

// maxDatagram is the largest UDP payload (IPv4: 65535 − 20 − 8).
const maxDatagram = 65535

// udpSocket is a listening UDP socket on one load balancer address and port.
// It keeps a flow per client address and port; each flow has its own
// connected socket to its target, and replies go back to the client from the
// listening socket, so the client sees the load balancer's address.
type udpSocket struct {
	u     *Userspace
	key   sockKey
	conn  *net.UDPConn
	rc    syscall.RawConn
	r     atomic.Pointer[route]
	drops *dropSource

	mu     sync.Mutex
	flows  map[netip.AddrPort]*udpFlow
	filter *secgroup.Policy // what the attached filter admits
	closed bool
}

func (u *Userspace) listenUDP(key sockKey, r *route) (*udpSocket, error) {
	s := &udpSocket{u: u, key: key, flows: map[netip.AddrPort]*udpFlow{}, filter: r.policy}
	s.r.Store(r)
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		return u.applyFilter(c, r.policy, key)
	}}
	pc, err := lc.ListenPacket(u.ctx, key.listenNetwork(), key.addrPort().String())
	if err != nil {
		return nil, unwrapListenError(err)
	}
	s.conn = pc.(*net.UDPConn)
	if s.rc, err = s.conn.SyscallConn(); err != nil {
		pc.Close()
		return nil, err
	}
	s.drops = u.metrics.drops.track(s.rc, r)
	u.wg.Go(s.readLoop)
	return s, nil
}

func (s *udpSocket) setRoute(r *route) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.r.Swap(r)
	s.u.metrics.drops.relabel(s.drops, r)
	if !r.policy.Equal(old.policy) {
		s.refilterLocked()
	}
}

// refilterLocked attaches a filter for the current policy plus the clients of
// established flows it no longer admits: one socket receives every flow's
// datagrams, and a revoke must not cut established flows (they end when idle).
func (s *udpSocket) refilterLocked() {
	if s.closed {
		return
	}
	p := s.r.Load().policy
	var keep []netip.Addr
	for c := range s.flows {
		if !p.Allows(c.Addr()) {
			keep = append(keep, c.Addr())
		}
	}
	fp := p
	if len(keep) > 0 {
		fp = p.With(keep...)
	}
	if fp.Equal(s.filter) {
		return
	}
	if err := s.u.applyFilter(s.rc, fp, s.key); err != nil {
		s.u.log.Error("attach socket filter failed: denied datagrams are dropped in userspace",
			"address", s.key.addrPort(), "error", err)
	}
	s.filter = fp
}

func (s *udpSocket) close() {
	s.mu.Lock()
	s.closed = true
	flows := make([]*udpFlow, 0, len(s.flows))
	for _, f := range s.flows {
		flows = append(flows, f)
	}
	s.mu.Unlock()
	s.u.metrics.drops.remove(s.drops)
	s.conn.Close()
	for _, f := range flows {
		f.terminate()
	}
}

func (s *udpSocket) readLoop() {
	buf := make([]byte, maxDatagram)
	for {
		n, client, err := s.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // e.g. ECONNREFUSED reported for an earlier send: not this socket's problem
		}
		client = netip.AddrPortFrom(client.Addr().Unmap(), client.Port())
		f := s.flowFor(client)
		if f == nil {
			continue
		}
		f.last.Store(time.Now().UnixNano())
		if _, err := f.up.Write(buf[:n]); err == nil {
			f.route.m.bytesIn.Add(float64(n))
		}
	}
}

// flowFor returns the client's flow, creating it if the client is admitted
// and a target is available; nil means the datagram is dropped.
func (s *udpSocket) flowFor(client netip.AddrPort) *udpFlow {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f := s.flows[client]; f != nil {
		return f
	}
	if s.closed {
		return nil
	}
	r := s.r.Load()
	t, set, denied := r.admit(s.u, client, s.key.addrPort(), syscall.IPPROTO_UDP)
	if t == nil {
		s.u.flowLog.denied(r, client, denied)
		r.m.countDenied(denied)
		return nil
	}
	if !r.flows.take() {
		s.u.flowLog.denied(r, client, DenyFlowLimit)
		r.m.deniedFlowLimit.Inc()
		return nil
	}
	d := net.Dialer{Control: s.u.controlUpstream}
	if src := r.upstreamSource(set.PreserveClientIP, client.Addr(), s.key.addr, t.addr.Addr()); src.IsValid() {
		d.LocalAddr = net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0))
	}
	conn, err := d.Dial("udp", t.addr.String())
	up, _ := conn.(*net.UDPConn)
	if err != nil {
		r.flows.release()
		r.m.connectErrors.Inc()
		s.u.log.Debug("udp socket to target failed", "listener", r.listenerID, "target", t.addr, "error", err)
		return nil
	}
	f := &udpFlow{s: s, route: r, client: client, up: up, tgt: t}
	f.last.Store(time.Now().UnixNano())
	s.flows[client] = f
	t.addFlow(f)
	r.m.newFlows.Inc()
	r.m.proxied.Inc()
	r.m.active.Inc()
	s.u.wg.Go(f.replyLoop)
	return f
}

// udpFlow is one client address and port's flow to its target.
type udpFlow struct {
	s      *udpSocket
	route  *route
	client netip.AddrPort
	up     *net.UDPConn
	tgt    *target
	last   atomic.Int64 // UnixNano of the last datagram either way
	ended  atomic.Bool
}

func (f *udpFlow) scope() (string, bool) { return f.route.zone, f.route.crossZone }

// replyLoop relays the target's datagrams to the client until the flow has
// been idle for the listener's UDP idle timeout (120 s) or ends.
func (f *udpFlow) replyLoop() {
	idle := f.route.idle
	buf := make([]byte, maxDatagram)
	_ = f.up.SetReadDeadline(time.Now().Add(idle))
	for {
		n, err := f.up.Read(buf)
		if err != nil {
			switch {
			case errors.Is(err, os.ErrDeadlineExceeded):
				last := time.Unix(0, f.last.Load())
				if time.Since(last) >= idle {
					f.terminate()
					return
				}
				_ = f.up.SetReadDeadline(last.Add(idle))
				continue
			case errors.Is(err, syscall.ECONNREFUSED):
				continue // the target's port is closed (ICMP): keep the flow, as a stateless NLB would
			}
			f.terminate()
			return
		}
		f.last.Store(time.Now().UnixNano())
		if _, err := f.s.conn.WriteToUDPAddrPort(buf[:n], f.client); err == nil {
			f.route.m.bytesOut.Add(float64(n))
		}
	}
}

// terminate ends the flow: its next datagram from the client starts a new
// one, judged and balanced afresh.
func (f *udpFlow) terminate() {
	if f.ended.Swap(true) {
		return
	}
	f.up.Close()
	f.tgt.removeFlow(f)
	f.route.m.active.Dec()
	f.route.flows.release()
	s := f.s
	s.mu.Lock()
	if s.flows[f.client] == f {
		delete(s.flows, f.client)
		// A client kept in the filter only for this flow leaves it now.
		if !s.r.Load().policy.Allows(f.client.Addr()) {
			s.refilterLocked()
		}
	}
	s.mu.Unlock()
}
