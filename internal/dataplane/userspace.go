package dataplane

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"log/slog"
	"maps"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/moatlb/moat/internal/dataplane/kernel"
	"github.com/moatlb/moat/internal/flowlog"
	"github.com/moatlb/moat/internal/nftutil"
	"github.com/moatlb/moat/internal/secgroup"
)

// Options configure a Userspace engine.
type Options struct {
	// Log receives the engine's structured logs; nil discards them.
	Log *slog.Logger
	// Registerer receives the engine's metrics; nil keeps them in a private
	// registry.
	Registerer prometheus.Registerer
	// FlowLog, when set, receives one JSON line per denied flow (package
	// flowlog; pass a *flowlog.Log to share it with other writers).
	FlowLog io.Writer
	// OnListenerError is called (from the engine's goroutine, without locks
	// held) when a listener that was serving loses its socket after Apply, so
	// that the control plane can mark its load balancer active_impaired. The
	// next Apply tries to listen again.
	OnListenerError func(*ListenerError)
	// ConnectTimeout bounds connecting to a target for a new TCP flow; 0 = 10 s.
	ConnectTimeout time.Duration
	// MaxFlowsPerListener caps the flows the userspace proxy carries at once for one listener
	// (each costs file descriptors): a new flow over it is refused as a denied one (TCP reset,
	// UDP datagram dropped) and counted with reason flow_limit. The kernel fast path's flows
	// cost none and do not count. 0 = no cap.
	MaxFlowsPerListener int
	// Kernel turns on the kernel fast path (see fastpath.go): the kernel
	// forwards the TCP and UDP flows it can, through nftables and conntrack. It needs
	// CAP_NET_ADMIN; NewUserspace fails when the kernel refuses.
	Kernel bool
	// KernelCallTimeout bounds every call into the kernel; 0 = 5 s.
	KernelCallTimeout time.Duration
	// KernelNetlink, for tests, stands in for the kernel's nftables side (see package kernel/kerneltest).
	KernelNetlink func([]netlink.Message) ([]netlink.Message, error)
}

// Userspace is the portable data plane: a userspace L4 proxy that needs no
// privileges. TCP is spliced (the bytes never enter userspace), UDP is relayed
// datagram by datagram. See the package documentation for what clients
// observe.
type Userspace struct {
	log             *slog.Logger
	metrics         *metrics
	flowLog         *flowLog
	seed            maphash.Seed
	connectTimeout  time.Duration
	maxFlows        int // Options.MaxFlowsPerListener
	onListenerError func(*ListenerError)
	kernel          *kernel.Path // nil without the fast path
	loops           *eventLoops  // carry the TCP flows; nil off Linux (see eventloop_linux.go)
	// mark is the engine's mark (nftutil's layout: the fast path's ID, or a
	// fresh one), on every socket it opens to a target.
	mark uint32
	// kernelRoutes are the sockets' routes as of the last Apply, read by
	// the fast path's worker; kernelReported is that worker's own.
	kernelRoutes atomic.Pointer[map[sockKey]*route]
	// groupsView is groups as of the last Apply, so that health reports
	// never wait for an Apply under way.
	groupsView     atomic.Pointer[map[string]*targetGroup]
	kernelReported map[kernel.Key]kernelReported

	ctx    context.Context // canceled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine the engine starts

	mu        sync.Mutex
	closed    bool
	sockets   map[sockKey]socket
	groups    map[string]*targetGroup
	listeners map[string]*listenerState
	// flowBudgets are the listeners' flow counts, by listener ID: they outlive Applies, as the
	// flows do.
	flowBudgets map[string]*flowBudget
}

var _ Engine = (*Userspace)(nil)

// sockKey identifies a listening socket: it persists across Applies as long
// as some listener wants this address, port and protocol.
type sockKey struct {
	addr    netip.Addr
	port    uint16
	network string // tcp or udp
}

func (k sockKey) addrPort() netip.AddrPort { return netip.AddrPortFrom(k.addr, k.port) }

// listenNetwork is the key's network for net.Listen: tcp4, tcp6, udp4 or udp6.
func (k sockKey) listenNetwork() string {
	if k.addr.Is6() {
		return k.network + "6"
	}
	return k.network + "4"
}

// socket is a listening socket of either protocol.
type socket interface {
	// setRoute swaps the socket's route (policy, target group, listener)
	// for new flows; established flows keep theirs.
	setRoute(*route)
	// close stops listening and resets the socket's flows.
	close()
}

// route is what a listening socket does with a new flow. It is immutable; an
// Apply builds new routes and swaps them in.
type route struct {
	lbID, listenerID string
	proto            string // tcp or udp
	zone             string
	local            zoneAddrs // the load balancer's addresses in zone
	crossZone        bool
	policy           *secgroup.Policy // never nil
	tg               *targetGroup
	idle             time.Duration
	tls              *tlsRoute // a TLS listener's; nil for TCP and UDP
	m                *listenerMetrics
	flows            *flowBudget // the listener's, shared by its sockets and kept across Applies
}

// flowBudget counts a listener's userspace flows against Options.MaxFlowsPerListener.
type flowBudget struct {
	max    int64 // 0: no cap
	active atomic.Int64
}

// take reserves a flow; false means the listener is at its cap.
func (b *flowBudget) take() bool {
	if b.active.Add(1) > b.max && b.max > 0 {
		b.active.Add(-1)
		return false
	}
	return true
}

func (b *flowBudget) release() { b.active.Add(-1) }

// NewUserspace returns a running engine with an empty configuration. It fails
// only if its metrics cannot be registered.
func NewUserspace(opts Options) (*Userspace, error) {
	reg := opts.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m, err := newMetrics(reg, newDropCollector())
	if err != nil {
		return nil, fmt.Errorf("register data plane metrics: %w", err)
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	u := &Userspace{
		log:             log,
		metrics:         m,
		flowLog:         &flowLog{log: flowlog.New(opts.FlowLog)},
		seed:            maphash.MakeSeed(),
		connectTimeout:  opts.ConnectTimeout,
		maxFlows:        opts.MaxFlowsPerListener,
		onListenerError: opts.OnListenerError,
		flowBudgets:     map[string]*flowBudget{},
		sockets:         map[sockKey]socket{},
		groups:          map[string]*targetGroup{},
		listeners:       map[string]*listenerState{},
	}
	if u.connectTimeout <= 0 {
		u.connectTimeout = 10 * time.Second
	}
	u.ctx, u.cancel = context.WithCancel(context.Background())
	if opts.Kernel {
		u.kernelReported = map[kernel.Key]kernelReported{}
		u.kernel, err = kernel.New(kernel.Options{Log: log, Registerer: reg,
			Desired: u.kernelSockets, Report: u.reportKernel, CallTimeout: opts.KernelCallTimeout,
			NetlinkDial: opts.KernelNetlink})
		if err != nil {
			u.metrics.unregister(reg)
			return nil, fmt.Errorf("kernel fast path: %w", err)
		}
		u.mark = u.kernel.ID()
	} else {
		u.mark = nftutil.NewMarkID()
	}
	if u.loops, err = newEventLoops(u); err != nil {
		if u.kernel != nil {
			u.kernel.Close()
		}
		u.metrics.unregister(reg)
		return nil, fmt.Errorf("event loops: %w", err)
	}
	return u, nil
}

// controlUpstream prepares a socket to a target: a source port chosen at
// connect time (TCP), and the engine's mark.
func (u *Userspace) controlUpstream(network, address string, c syscall.RawConn) error {
	if network == "tcp" || network == "tcp4" || network == "tcp6" {
		if err := controlBindNoPort(network, address, c); err != nil {
			return err
		}
	}
	markSocket(c, u.mark)
	return nil
}

// Apply implements Engine. It returns once the kernel fast path, if any,
// has taken the change too (or given up on it, so that it forwards nothing
// stale), without holding the engine's lock while it waits.
func (u *Userspace) Apply(cfg Config) error {
	gen, err := u.apply(cfg)
	u.waitKernel(gen)
	return err
}

func (u *Userspace) apply(cfg Config) (kernelGen uint64, _ error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return 0, ErrClosed
	}
	p := planConfig(cfg)
	failed := p.failed
	fail := func(l *listenerState, e *ListenerError) {
		l.errs = append(l.errs, e)
		failed = append(failed, e)
	}

	// Target groups first, so that routes point at up-to-date groups.
	var terminate []*target
	for id, d := range p.groups {
		if d.set.matchErr != nil {
			// The API validates matchers; if one slips through, no code
			// matches and the targets report Target.ResponseCodeMismatch.
			u.log.Warn("invalid health check matcher", "target_group", id, "error", d.set.matchErr)
		}
		g := u.groups[id]
		if g == nil {
			g = newTargetGroup(u, id)
			u.groups[id] = g
		}
		terminate = append(terminate, g.update(d.set, d.targets)...)
	}
	for id, g := range u.groups {
		if _, ok := p.groups[id]; !ok {
			g.close()
			delete(u.groups, id)
			u.metrics.forgetTargetGroup(id)
		}
	}

	// Sockets: close the unwanted, swap routes on the kept, open the new.
	wanted := make(map[sockKey]bool, len(p.sockets))
	for _, d := range p.sockets {
		wanted[d.key] = true
	}
	for key, s := range u.sockets {
		if !wanted[key] {
			s.close()
			delete(u.sockets, key)
		}
	}
	for _, d := range p.sockets {
		key, r := d.key, d.route
		r.tg = u.groups[d.tgID]
		r.m = u.metrics.listener(r.lbID, r.listenerID, r.proto, r.tls != nil)
		if u.flowBudgets[r.listenerID] == nil {
			u.flowBudgets[r.listenerID] = &flowBudget{max: int64(u.maxFlows)}
		}
		r.flows = u.flowBudgets[r.listenerID]
		if s, ok := u.sockets[key]; ok {
			s.setRoute(r)
			continue
		}
		var s socket
		var err error
		if key.network == "tcp" {
			s, err = u.listenTCP(key, r)
		} else {
			s, err = u.listenUDP(key, r)
		}
		if err != nil {
			fail(d.listener, &ListenerError{LoadBalancerID: r.lbID, ListenerID: r.listenerID,
				Network: key.network, Addr: key.addrPort(), Err: err})
			continue
		}
		u.sockets[key] = s
	}
	for id, old := range u.listeners {
		if cur, ok := p.listeners[id]; !ok || cur.lbID != old.lbID {
			u.metrics.forgetListener(old.lbID, id)
		}
		if _, ok := p.listeners[id]; !ok {
			// Its flows ended with its sockets; a listener of that ID later starts afresh.
			delete(u.flowBudgets, id)
		}
	}
	u.listeners = p.listeners
	groups := maps.Clone(u.groups)
	u.groupsView.Store(&groups)
	gen := u.kickKernelLocked()
	for _, t := range terminate {
		t.terminateFlows()
		u.terminateKernelFlows(t, false)
	}
	if len(failed) > 0 {
		for _, e := range failed {
			u.log.Warn("listener not serving", "load_balancer", e.LoadBalancerID, "listener", e.ListenerID,
				"network", e.Network, "address", e.Addr, "error", e.Err)
		}
		return gen, &ApplyError{Listeners: failed}
	}
	return gen, nil
}

// socketFailed records that a serving socket died (not closed by Apply or
// Close) and tells the control plane.
func (u *Userspace) socketFailed(key sockKey, s socket, r *route, err error) {
	e := &ListenerError{LoadBalancerID: r.lbID, ListenerID: r.listenerID, Network: key.network,
		Addr: key.addrPort(), Err: err}
	u.mu.Lock()
	if u.closed || u.sockets[key] != s {
		u.mu.Unlock()
		return
	}
	delete(u.sockets, key)
	if l := u.listeners[r.listenerID]; l != nil {
		l.errs = append(l.errs, e)
	}
	u.mu.Unlock()
	s.close()
	u.log.Error("listener lost its socket", "load_balancer", r.lbID, "listener", r.listenerID,
		"network", key.network, "address", key.addrPort(), "error", err)
	if u.onListenerError != nil {
		u.onListenerError(e)
	}
}

// TargetHealth implements Engine.
func (u *Userspace) TargetHealth(targetGroupID, targetID string, port uint16) (Health, bool) {
	groups := u.groupsView.Load()
	if groups == nil {
		return Health{}, false
	}
	g := (*groups)[targetGroupID]
	if g == nil {
		return Health{}, false
	}
	return g.health(targetID, port)
}

// ListenerStatus implements Engine.
func (u *Userspace) ListenerStatus(listenerID string) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	l := u.listeners[listenerID]
	switch {
	case l == nil:
		return ErrUnknownListener
	case len(l.errs) > 0:
		return l.errs[0]
	}
	return nil
}

// Close implements Engine.
func (u *Userspace) Close() error {
	u.mu.Lock()
	if u.closed {
		u.mu.Unlock()
		return nil
	}
	u.closed = true
	for key, s := range u.sockets {
		s.close()
		delete(u.sockets, key)
	}
	for id, g := range u.groups {
		g.close()
		delete(u.groups, id)
	}
	u.groupsView.Store(nil)
	u.cancel()
	if u.loops != nil {
		u.loops.stop() // after the sockets' closing posted their flows' ends
	}
	u.mu.Unlock()
	if u.kernel != nil {
		u.kernel.Close()
	}
	u.wg.Wait()
	return nil
}

// applyFilter makes the socket's BPF filter enforce p (no filter at all when
// p admits everyone). When p does not fit in a filter, or attaching fails, the
// socket is left without a filter and p is enforced after accept, by reset;
// so it always is where the system has no socket filters.
func (u *Userspace) applyFilter(rc syscall.RawConn, p *secgroup.Policy, key sockKey) error {
	if !secgroup.SocketFilters {
		return nil
	}
	if p.Equal(secgroup.AllowAll()) {
		return secgroup.DetachFilter(rc)
	}
	ok, err := secgroup.AttachPolicy(rc, p)
	if err != nil {
		if derr := secgroup.DetachFilter(rc); derr != nil {
			return errors.Join(err, derr)
		}
		return err
	}
	if !ok {
		u.log.Warn("security group policy too large for a socket filter: denied clients are reset instead of dropped",
			"network", key.network, "address", key.addrPort())
	}
	return nil
}
