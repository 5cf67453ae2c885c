// Package kernel is the data plane's kernel fast path: it has the kernel
// forward the TCP and UDP flows of listening sockets that it may (nftables
// DNAT, conntrack), so that an established flow costs no file descriptor,
// goroutine or copy in moat. It takes new flows in two places: in the output
// hook, where flows that start on this host pass, and in prerouting, where
// flows arriving on an interface from other hosts or network namespaces pass
// (see hostNet.ingress for which of those it may take).
//
// One worker goroutine owns everything the fast path does in the kernel: it
// programs the table from the latest desired state (coalescing changes), reads
// its counters, and ends flows. Every kernel call has a deadline. A call that
// fails or overruns it abandons its netlink connection: the table is owned by
// that connection (NFT_TABLE_F_OWNER), so closing it removes every fast-path
// rule at once — the one removal that needs no reply from the kernel — and new
// flows fall through to the userspace engine, which always has the current
// rules. The worker then starts over on a fresh connection with the full
// program. Callers never wait on the kernel while holding a lock: Kick, Terminate
// and Applied return at once, and Wait is bounded by its context.
//
// Flow lifetime belongs here too, apart from programming. A socket keeps its
// slot — the conntrack mark of its flows, and their counters — for as long as
// it is in the desired state, whether or not the kernel may take new flows for
// it (Socket.Forward), so that a socket losing its last eligible target stops
// taking new fast-path flows while its established flows go on. Flows end only
// when asked: Terminate (a target that must lose its flows), or the socket
// leaving the desired state (its listener was deleted).
//
// IPv4 and IPv6 are carried alike, by one inet table with a map, NAT rules and
// ct timeouts per family. A socket's targets (and the address it hides
// clients behind) are of the socket's own family: nftables NAT rewrites
// addresses within a family, and cannot translate an IPv6 flow to an IPv4
// target or back, so such sockets are the userspace proxy's.
package kernel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/prometheus/client_golang/prometheus"
	"go4.org/netipx"

	"github.com/moatlb/moat/internal/nftutil"
)

// Proto is a socket's transport protocol, as its IP protocol number.
type Proto uint8

// The protocols the fast path carries.
const (
	TCP Proto = 6
	UDP Proto = 17
)

// family is an address family the fast path carries: the table has rules,
// maps and settings for each, indexed by it.
type family int

const (
	ipv4 family = iota
	ipv6
	families
)

func familyOf(a netip.Addr) family {
	if a.Unmap().Is4() {
		return ipv4
	}
	return ipv6
}

func (p Proto) String() string {
	if p == UDP {
		return "udp"
	}
	return "tcp"
}

// Key names a listening socket: its protocol, address (IPv4 or IPv6) and
// port.
type Key struct {
	Proto Proto
	Addr  netip.AddrPort
}

// Socket is one listening socket whose flows the fast path may carry: a TCP
// or UDP listener on an IPv4 or IPv6 address.
type Socket struct {
	Key
	// Forward is how the kernel takes the socket's new flows; nil takes none
	// (they reach the listening socket) but keeps the socket's established
	// fast-path flows, their counters and their termination.
	Forward *Forward
}

// Forward is what the kernel does with a new flow to a socket.
type Forward struct {
	// AdmitAll admits every client; otherwise Admit lists the admitted
	// ranges of the socket's family (empty: no one, so every new flow
	// reaches the listening socket).
	AdmitAll bool
	Admit    []netipx.IPRange
	// Targets are the addresses new flows are spread over, in a stable
	// order; never empty, and all of the socket's family.
	Targets []netip.AddrPort
	// Sticky hashes the client address (stickiness.type=source_ip); otherwise
	// each flow picks at random.
	Sticky bool
	// SNAT is the source address targets see, of the socket's family;
	// invalid keeps the client's own (client IP preservation).
	SNAT netip.Addr
	// Idle is the flow's idle timeout.
	Idle time.Duration
}

func (f *Forward) equal(g *Forward) bool {
	if f == nil || g == nil {
		return f == g
	}
	return f.AdmitAll == g.AdmitAll && slices.Equal(f.Admit, g.Admit) && slices.Equal(f.Targets, g.Targets) &&
		f.Sticky == g.Sticky && f.SNAT == g.SNAT && f.Idle == g.Idle
}

// Counts are what the kernel counted for one socket since the last report.
type Counts struct {
	NewFlows          uint64
	BytesIn, BytesOut uint64 // IP bytes, client to target and back
	// Active is the number of its flows that are open: admitted, and neither
	// closing (a FIN or RST passed) nor ended in conntrack. AWS counts flows
	// in SYN_SENT and ESTABLISHED as active.
	Active int
}

// Options configure a Path.
type Options struct {
	Log *slog.Logger
	// Desired returns the sockets the fast path should serve now. The worker
	// calls it after every Kick; it must not block.
	Desired func() []Socket
	// Report receives each socket's counts, from the worker, about once per
	// PollInterval, or less often when reading them takes long (countsEvery).
	Report func(Key, Counts)
	// Registerer receives the fast path's own metrics; nil keeps them private.
	Registerer prometheus.Registerer
	// CallTimeout bounds every kernel call; 0 = 5 s.
	CallTimeout time.Duration
	// PollInterval is how often counters are read; 0 = 1 s.
	PollInterval time.Duration
	// NetlinkDial, for tests, replaces the netlink socket to nftables with a
	// peer of the caller's (see github.com/mdlayher/netlink/nltest).
	NetlinkDial func([]netlink.Message) ([]netlink.Message, error)
	// ID is the path's mark ID (nftutil.NewMarkID); 0 draws one.
	ID uint32
	// dial opens a connection to the kernel (dialNFT by default).
	dial func(log *slog.Logger, id uint32) (conn, error)
	// readHost reads what the host's network allows (readHostNet by default).
	readHost func() (hostNet, error)
}

// conn is one connection to the kernel's packet filter and connection
// tracker, owning one table. Its methods may block; the worker bounds each
// call and abandons (closes) a connection that overruns.
type conn interface {
	// program applies the changes in one transaction (see batches); a
	// failure leaves the connection unusable.
	program(changes []change) error
	// counts reads and resets every slot's counters and counts its flows;
	// walked reports that counting them walked conntrack's whole table.
	counts() (slots map[uint32]Counts, walked bool, err error)
	// endFlows ends the flows of a slot: all of them, or only those to
	// target when it is valid.
	endFlows(slot uint32, target netip.AddrPort) error
	// close releases the connection; the kernel removes the table with it.
	close()
}

// change is one slot's programming: from (nil when the slot is new or the
// table was rebuilt) to to (nil when the slot goes away).
type change struct {
	slot     uint32
	key      Key
	existed  bool // the slot is in the table already
	remove   bool // the socket left: delete the slot
	from, to *Forward
	ingress  bool // to also takes new flows that arrive on an interface
}

// Slots: the conntrack mark of a fast-path flow is the path's ID (which also
// names its table, so that no two live paths share one) and the socket's
// slot, as nftutil lays out moat's marks. The ID keeps apart the flows of
// several paths on one machine, which share the conntrack table.
const (
	slotBits = nftutil.MarkSlotBits
	maxSlots = 1<<slotBits - 1 // slot 0 is the userspace proxy's
	slotMask = maxSlots
	idMask   = nftutil.MarkIDMask
)

// Path is the kernel fast path. Its methods are safe for concurrent use and
// never block on the kernel, except Wait (bounded by its context) and Close.
type Path struct {
	opts    Options
	log     *slog.Logger
	id      uint32
	metrics *pathMetrics

	kick   chan struct{}
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	mu       sync.Mutex
	gen      uint64        // generation of the last Kick
	applied  uint64        // generation the kernel's rules reflect
	down     bool          // no rules in the kernel: it forwards nothing
	oldest   time.Time     // when the oldest change not yet in the kernel was made
	terms    []termination // flows to end, after the program of their generation
	progress chan struct{} // closed and replaced whenever applied or down changes

	// The worker's own state.
	c        conn // nil while disconnected
	closing  bool // the worker is shutting down: calls no longer end early
	host     hostNet
	hostRead bool // host has been read once
	slots    map[Key]*slot
	leaving  []*slot // slots of sockets that left, whose flows are still to end
	free     []uint32
	// nextCounts is when the counters are read next (see countsEvery).
	nextCounts time.Time
}

// maxCountsEvery bounds how long counts may go unread, however long reading them takes.
const maxCountsEvery = 5 * time.Second

// countsEvery is how long after a read of the counters that took took the next one comes: a
// read costs in proportion to the sockets (at thousands of listeners, a quarter of a CPU read
// every second), and one that must recount the flows walks conntrack's whole table (see
// flowEnds). So a read takes at most about 1% of the time, and the counts are never older than
// maxCountsEvery.
func countsEvery(took, poll time.Duration) time.Duration {
	return min(max(100*took, poll), maxCountsEvery)
}

// slot is a socket the fast path knows: its mark and what the current table
// has for it.
type slot struct {
	n       uint32
	key     Key
	set     bool     // the current table has the slot's chains and counters
	fwd     *Forward // how the table takes its new flows; nil: it does not
	ingress bool     // the table takes its new flows from interfaces too
}

type termination struct {
	gen    uint64
	keys   []Key
	target netip.AddrPort // invalid: every flow of the sockets
}

// ErrUnsupported means this system has no kernel fast path.
var ErrUnsupported = errors.New("the kernel fast path needs Linux with nftables and conntrack")

// New connects to the kernel, creates the path's table and starts its worker.
// It fails when the kernel refuses (no CAP_NET_ADMIN, no nftables).
func New(opts Options) (*Path, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.CallTimeout <= 0 {
		opts.CallTimeout = 5 * time.Second
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = time.Second
	}
	if opts.dial == nil {
		peer := opts.NetlinkDial
		opts.dial = func(_ *slog.Logger, id uint32) (conn, error) { return dialNFT(id, peer) }
	}
	if opts.Desired == nil {
		opts.Desired = func() []Socket { return nil }
	}
	if opts.Report == nil {
		opts.Report = func(Key, Counts) {}
	}
	if opts.readHost == nil {
		opts.readHost = readHostNet
	}
	p := &Path{opts: opts, log: opts.Log, kick: make(chan struct{}, 1), done: make(chan struct{}),
		progress: make(chan struct{}), slots: map[Key]*slot{}}
	for n := uint32(maxSlots); n >= 1; n-- {
		p.free = append(p.free, n)
	}
	// The first connection must succeed synchronously: it tells whether the
	// fast path is possible at all.
	var err error
	for range 8 {
		if p.id = opts.ID; p.id == 0 {
			p.id = nftutil.NewMarkID()
		}
		if p.c, err = p.dialBounded(); !errors.Is(err, errTableExists) || opts.ID != 0 {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	// Flows with this ID's marks are an earlier path's (a rare draw of the
	// same ID): not ours to count or end later.
	if err := p.c.endFlows(0, netip.AddrPort{}); err != nil {
		p.c.close()
		return nil, fmt.Errorf("conntrack: %w", err)
	}
	reg := opts.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	if p.metrics, err = newPathMetrics(reg, p); err != nil {
		p.c.close()
		return nil, err
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.refreshHost()
	go p.run()
	p.log.Info("kernel fast path on: eligible TCP and UDP flows are forwarded by nftables and conntrack",
		"nftables_table", "inet "+TableName(p.id))
	return p, nil
}

// TableName is the name of the nftables table of the path with this ID.
func TableName(id uint32) string {
	return fmt.Sprintf("moat_%05x", id>>slotBits&^(nftutil.MarkFlow>>slotBits))
}

// Table is the name of the path's nftables table.
func (p *Path) Table() string { return TableName(p.id) }

// ID is the path's conntrack mark prefix: a flow the path carries has a mark
// whose bits under nftutil.MarkIDMask are ID.
func (p *Path) ID() uint32 { return p.id }

// IsOwnMark reports whether a conntrack mark is one of this path's flows.
func (p *Path) IsOwnMark(mark uint32) bool { return mark&idMask == p.id && mark&slotMask != 0 }

// Kick tells the worker that the desired state changed, and returns the
// change's generation (see Applied).
func (p *Path) Kick() uint64 {
	p.mu.Lock()
	p.gen++
	if p.oldest.IsZero() {
		p.oldest = time.Now()
	}
	gen := p.gen
	p.mu.Unlock()
	select {
	case p.kick <- struct{}{}:
	default:
	}
	return gen
}

// Applied reports whether the kernel no longer acts on anything older than
// the change of generation gen: it runs a program of gen or later, or it has
// no rules at all (every flow goes through userspace, which is current).
func (p *Path) Applied(gen uint64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.down || p.applied >= gen
}

// Wait returns when Applied(gen), or with the context's error.
func (p *Path) Wait(ctx context.Context, gen uint64) error {
	for {
		p.mu.Lock()
		ok, progress := p.down || p.applied >= gen, p.progress
		p.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-progress:
		case <-ctx.Done():
			return ctx.Err()
		case <-p.done:
			return errClosed
		}
	}
}

// errClosed ends a call, or a Wait, that Close cut short.
var errClosed = nftutil.ErrAborted

// Lag is the age of the oldest change that the kernel's rules do not reflect
// yet; zero when they are current.
func (p *Path) Lag() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.oldest.IsZero() {
		return 0
	}
	return time.Since(p.oldest)
}

// Terminate ends the fast-path flows to target that came through the sockets
// keys name, once the kernel no longer sends new flows there as of now.
func (p *Path) Terminate(keys []Key, target netip.AddrPort) {
	if len(keys) == 0 {
		return
	}
	p.mu.Lock()
	p.terms = append(p.terms, termination{gen: p.gen, keys: keys, target: target})
	p.mu.Unlock()
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// Close stops the worker and removes the table; the path's flows end.
func (p *Path) Close() {
	p.cancel()
	<-p.done
}

// run is the worker: it brings the kernel to the desired state after every
// kick, reads counters every poll interval, and reconnects after a failure.
func (p *Path) run() {
	defer close(p.done)
	poll := time.NewTicker(p.opts.PollInterval)
	defer poll.Stop()
	retry := time.NewTimer(0)
	retry.Stop()
	backoff := 50 * time.Millisecond
	defer p.shutdown()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-p.kick:
		case <-retry.C:
		case now := <-poll.C:
			if p.c != nil && len(p.slots) > 0 && !now.Before(p.nextCounts) {
				start := time.Now()
				p.pollCounts()
				p.nextCounts = now.Add(countsEvery(time.Since(start), p.opts.PollInterval))
			}
			if !p.refreshHost() || p.c == nil {
				continue // unchanged, or the retry timer reprograms
			}
		}
		if err := p.sync(); err != nil {
			if errors.Is(err, errClosed) {
				return
			}
			p.metrics.failures.Inc()
			p.log.Error("kernel fast path call failed: its rules are removed and new flows go through userspace until it reconnects",
				"error", err, "retry_in", backoff)
			retry.Reset(backoff)
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		backoff = 50 * time.Millisecond
	}
}

// sync brings the kernel to the latest desired state and ends the flows
// queued for ending.
func (p *Path) sync() error {
	if p.c == nil {
		c, err := p.dialBounded()
		if err != nil {
			return fmt.Errorf("reconnect: %w", err)
		}
		p.c = c
		p.log.Info("kernel fast path reconnected", "nftables_table", "inet "+p.Table())
	}
	p.mu.Lock()
	gen, terms := p.gen, p.terms
	p.terms = nil
	p.mu.Unlock()
	changes, removed := p.plan(p.opts.Desired())
	p.leaving = append(p.leaving, removed...)
	if len(removed) > 0 {
		p.pollCounts(removed...) // the counters of leaving sockets are read before they go
	}
	for _, batch := range batches(changes) {
		if p.c == nil {
			break
		}
		if err := p.call("program", func(c conn) error { return c.program(batch) }); err != nil {
			p.requeue(terms)
			return err
		}
	}
	if p.c == nil {
		p.requeue(terms)
		return errors.New("lost the connection reading counters")
	}
	p.commit(changes)
	p.setApplied(gen)
	for _, s := range p.leaving {
		// A removed listener ends its flows.
		p.endFlows(s.n, netip.AddrPort{})
		p.free = append(p.free, s.n)
	}
	p.leaving = nil
	for _, t := range terms {
		for _, k := range t.keys {
			if s := p.slots[k]; s != nil {
				p.endFlows(s.n, t.target)
			}
		}
	}
	return nil
}

// batchWeight bounds one nftables transaction (see weight), so that it fits
// one netlink message of the socket's send buffer, and the kernel's acks for
// it (and its echoes of new rules) fit the receive buffer.
const batchWeight = 16 << 10

// batches splits changes into transactions of at most batchWeight. Each
// slot's change is whole in one transaction, so a failure between two leaves
// every slot either as it was or as wanted (and the connection is dropped
// anyway).
func batches(changes []change) [][]change {
	var out [][]change
	for len(changes) > 0 {
		n, w := 0, 0
		for n < len(changes) && (n == 0 || w+changes[n].weight() <= batchWeight) {
			w += changes[n].weight()
			n++
		}
		out = append(out, changes[:n])
		changes = changes[n:]
	}
	return out
}

// weight is roughly how many set elements and netlink messages a change
// costs, each a few dozen bytes.
func (ch change) weight() int {
	w := 16
	if ch.to != nil {
		w += 2*len(ch.to.Admit) + 2*len(ch.to.Targets)
	}
	return w
}

// plan compares the desired sockets with the slots and returns what to
// program, and the slots of sockets that left.
func (p *Path) plan(want []Socket) (changes []change, removed []*slot) {
	seen := make(map[Key]bool, len(want))
	for _, w := range want {
		if seen[w.Key] {
			continue
		}
		seen[w.Key] = true
		ingress := p.host.ingress(w)
		s := p.slots[w.Key]
		if s == nil {
			if len(p.free) == 0 {
				continue // out of marks: the userspace engine serves it
			}
			s = &slot{n: p.free[len(p.free)-1], key: w.Key}
			p.free = p.free[:len(p.free)-1]
			p.slots[w.Key] = s
			changes = append(changes, change{slot: s.n, key: w.Key, to: w.Forward, ingress: ingress})
			continue
		}
		if !s.set || !s.fwd.equal(w.Forward) || s.ingress != ingress {
			changes = append(changes, change{slot: s.n, key: w.Key, existed: s.set, from: s.fwd, to: w.Forward, ingress: ingress})
		}
	}
	for k, s := range p.slots {
		if !seen[k] {
			delete(p.slots, k)
			removed = append(removed, s)
			if s.set {
				changes = append(changes, change{slot: s.n, key: k, existed: true, remove: true, from: s.fwd})
			}
		}
	}
	return changes, removed
}

// commit records a successful program in the slots.
func (p *Path) commit(changes []change) {
	for _, ch := range changes {
		if ch.remove {
			continue
		}
		if s := p.slots[ch.key]; s != nil {
			s.fwd, s.ingress = ch.to, ch.ingress
			s.set = true
		}
	}
}

func (p *Path) requeue(terms []termination) {
	p.mu.Lock()
	p.terms = append(terms, p.terms...)
	p.mu.Unlock()
}

func (p *Path) setApplied(gen uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.applied, p.down = gen, false
	if gen == p.gen {
		p.oldest = time.Time{}
	}
	close(p.progress)
	p.progress = make(chan struct{})
}

// endFlows ends a slot's flows (to target, when valid); a failure is logged:
// the flows then live on until they end or idle out.
func (p *Path) endFlows(n uint32, target netip.AddrPort) {
	if p.c == nil {
		return
	}
	if err := p.call("end flows", func(c conn) error { return c.endFlows(n, target) }); err != nil {
		if errors.Is(err, errClosed) {
			return
		}
		p.metrics.failures.Inc()
		p.log.Error("could not end fast-path flows", "slot", n, "target", target, "error", err)
	}
}

// pollCounts reports the counts of every slot, and of the given ones that
// are leaving.
func (p *Path) pollCounts(leaving ...*slot) {
	var got map[uint32]Counts
	var walked bool
	err := p.call("read counters", func(c conn) error {
		var err error
		got, walked, err = c.counts()
		return err
	})
	if err != nil {
		// walked is the abandoned call's to write, if it overran.
		if !errors.Is(err, errClosed) {
			p.metrics.failures.Inc()
			p.log.Error("could not read the kernel fast path's counters", "error", err)
		}
		return
	}
	if walked {
		p.metrics.walks.Inc()
	}
	for _, s := range p.slots {
		p.opts.Report(s.key, got[s.n])
	}
	for _, s := range leaving {
		c := got[s.n]
		c.Active = 0 // its flows end now
		p.opts.Report(s.key, c)
	}
}

// call runs one kernel call with the path's deadline. A call that fails or
// overruns loses the connection: it is closed (which removes the table, so
// the kernel forwards nothing stale) and abandoned to its goroutine.
func (p *Path) call(what string, fn func(conn) error) error {
	c := p.c
	err := nftutil.Call(p.closingCtx(), p.opts.CallTimeout, func() error { return fn(c) })
	if err == nil {
		return nil
	}
	p.disconnect()
	return fmt.Errorf("%s: %w", what, err)
}

// closingCtx ends a call early when Close is called, except the calls of the
// shutdown itself.
func (p *Path) closingCtx() <-chan struct{} {
	if p.closing {
		return nil
	}
	return p.ctx.Done()
}

// disconnect drops the connection, and with it the kernel's rules.
func (p *Path) disconnect() {
	if p.c == nil {
		return
	}
	p.c.close()
	p.c = nil
	for _, s := range p.slots {
		s.set, s.fwd, s.ingress = false, nil, false // the table went with the connection
	}
	p.mu.Lock()
	p.down = true
	if p.oldest.IsZero() {
		p.oldest = time.Now() // the kernel must take the whole program again
	}
	close(p.progress)
	p.progress = make(chan struct{})
	p.mu.Unlock()
}

// dialBounded opens a connection within the call deadline.
func (p *Path) dialBounded() (conn, error) {
	type result struct {
		c   conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := p.opts.dial(p.log, p.id)
		done <- result{c, err}
	}()
	timer := time.NewTimer(p.opts.CallTimeout)
	defer timer.Stop()
	select {
	case r := <-done:
		return r.c, r.err
	case <-timer.C:
		go func() {
			if r := <-done; r.c != nil {
				r.c.close()
			}
		}()
		return nil, fmt.Errorf("connect to the kernel: no answer within %v", p.opts.CallTimeout)
	}
}

// shutdown ends the worker: the table goes with its connection, and the
// path's flows end, as closing the listening sockets ends userspace flows.
func (p *Path) shutdown() {
	p.closing = true
	if p.c == nil { // Close cut a call short: the flows still need ending
		p.c, _ = p.dialBounded()
	}
	p.endFlows(0, netip.AddrPort{})
	p.disconnect()
	p.metrics.unregister()
}

// pathMetrics are the fast path's own health.
type pathMetrics struct {
	reg        prometheus.Registerer
	failures   prometheus.Counter
	walks      prometheus.Counter
	collectors []prometheus.Collector
}

func newPathMetrics(reg prometheus.Registerer, p *Path) (*pathMetrics, error) {
	m := &pathMetrics{reg: reg,
		failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "moat_dataplane_kernel_failures_total",
			Help: "Kernel calls of the fast path that failed or overran their deadline; each drops the fast path's rules until it reconnects."}),
		walks: prometheus.NewCounter(prometheus.CounterOpts{Name: "moat_dataplane_kernel_conntrack_walks_total",
			Help: "Walks of the host's whole conntrack table to count the fast path's active flows, after a reconnection or lost conntrack events; each holds up packet processing on its CPU for a time that grows with the table's hash size."}),
	}
	m.collectors = []prometheus.Collector{m.failures,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "moat_dataplane_kernel_unapplied_seconds",
			Help: "Age of the oldest data plane change the kernel fast path's rules do not reflect yet; 0 when they are current."},
			func() float64 { return p.Lag().Seconds() }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "moat_dataplane_kernel_up",
			Help: "1 while the kernel fast path has its rules in the kernel, 0 while it reconnects (every flow then goes through userspace)."},
			func() float64 {
				p.mu.Lock()
				defer p.mu.Unlock()
				if p.down {
					return 0
				}
				return 1
			}),
		m.walks,
	}
	for i, c := range m.collectors {
		if err := reg.Register(c); err != nil {
			for _, r := range m.collectors[:i] {
				reg.Unregister(r)
			}
			return nil, fmt.Errorf("register kernel fast path metrics: %w", err)
		}
	}
	return m, nil
}

func (m *pathMetrics) unregister() {
	for _, c := range m.collectors {
		m.reg.Unregister(c)
	}
}
