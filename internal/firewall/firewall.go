package firewall

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moatlb/moat/internal/flowlog"
	"github.com/moatlb/moat/internal/nftutil"
)

// Options configure a Firewall.
type Options struct {
	Log *slog.Logger
	// Table names the firewall's nftables table (moat_fw_<Table>). The table
	// outlives the process on purpose: a firewall that dies must not leave
	// its instances open. Whoever owns Table (a data dir, held by its lock)
	// replaces it whole at the next start.
	Table string
	// Registerer receives moat_instance_sg_denied_flows_total.
	Registerer prometheus.Registerer
	// CallTimeout bounds every kernel call; 0 = 5 s.
	CallTimeout time.Duration
	// PollInterval is how often the denial counters are read; 0 = 1 s.
	PollInterval time.Duration
	// FlowLog, when set, receives each denied flow (package flowlog), read
	// from the kernel's packet log where moat may use it (CAP_NET_ADMIN);
	// elsewhere denials are only counted, and New says so in one line. Pass
	// a *flowlog.Log to share it with other writers.
	FlowLog io.Writer
}

// Firewall programs the kernel from the latest Program, in a worker of its
// own: Apply never waits on the kernel.
type Firewall struct {
	opts     Options
	log      *slog.Logger
	denied   *prometheus.CounterVec
	unlogged *prometheus.CounterVec

	// The packet log the deny chains write to, and its reader; plog is nil
	// (and logGroup -1) when denials are only counted.
	plog     packetLog
	logGroup int
	flows    *flowlog.Log
	logDone  chan struct{}

	kick   chan struct{}
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	mu       sync.Mutex
	want     *Program
	gen      uint64
	applied  uint64
	err      error         // of the last attempt; nil when the kernel has the latest program
	progress chan struct{} // closed and replaced when applied changes

	// listeners are the listener sockets whose denials the table logs now, for the reader.
	listeners atomic.Pointer[map[listenerKey]Listener]

	// The worker's own.
	c      kernelConn
	labels map[string][2]string // counter name → instance, direction
	// last is what the kernel has (lastSet: since this process programmed
	// it), so that a commit that changes no rule costs nothing.
	last          []compiled
	lastListeners []Listener
	lastSet       bool
	lastMode      Mode
	lastLoopback  bool
}

// kernelConn is one connection to nftables, replacing the firewall's table.
// After an error the caller closes it: what it had queued goes with it.
type kernelConn interface {
	// replace puts the table in place; its deny chains log to logGroup
	// unless it is negative.
	replace(c []compiled, p *Program, logGroup int) (labels map[string][2]string, err error)
	denials() (map[string]uint64, error)
	close()
}

// packetLog is an NFLOG group's socket: the packets the deny chains log.
type packetLog interface {
	group() uint16
	// read blocks until packets arrive, the reader fell behind (errOverrun:
	// the kernel dropped some) or the log is closed.
	read() ([]loggedPacket, error)
	close()
}

type loggedPacket struct {
	prefix  string
	payload []byte
}

var errOverrun = errors.New("packet log overrun")

// unloggedCounter is the table's counter of denials the log's rate limit held
// back.
const unloggedCounter = "unlogged"

// New connects to the kernel and starts the worker. It fails where moat may
// not program nftables (no CAP_NET_ADMIN) or the system has none.
func New(opts Options) (*Firewall, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.CallTimeout <= 0 {
		opts.CallTimeout = 5 * time.Second
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = time.Second
	}
	c, err := dial(opts.Table)
	if err != nil {
		return nil, err
	}
	f := &Firewall{opts: opts, log: opts.Log, c: c, kick: make(chan struct{}, 1), done: make(chan struct{}),
		progress: make(chan struct{}), logGroup: -1, flows: flowlog.New(opts.FlowLog),
		denied: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "moat_instance_sg_denied_flows_total",
			Help: "New flows to (inbound) or from (outbound) an instance that no rule of its security groups admits: dropped in enforce mode, let through in audit mode."},
			[]string{"instance", "direction"}),
		unlogged: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "moat_instance_sg_flow_log_dropped_total",
			Help: "Instance firewall denials not written to the flow log: held back by its rate limit (rate_limit, one per packet), or lost because the reader fell behind (overrun, at least one per event)."},
			[]string{"reason"}),
	}
	reg := opts.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	for _, c := range []prometheus.Collector{f.denied, f.unlogged} {
		if err := reg.Register(c); err != nil {
			f.c.close()
			return nil, fmt.Errorf("register firewall metrics: %w", err)
		}
	}
	if f.flows != nil {
		if f.plog, err = openPacketLog(opts.Table); err != nil {
			f.log.Warn("denied flows to instances are counted, not written to the flow log: moat may not read the kernel's packet log (NFLOG needs CAP_NET_ADMIN)", "reason", err)
		} else {
			f.logGroup = int(f.plog.group())
			f.log.Info("denied flows to instances go to the flow log", "nflog_group", f.logGroup)
		}
	}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	go f.run()
	if f.plog != nil {
		f.logDone = make(chan struct{})
		go f.readDenials()
	}
	return f, nil
}

// Apply makes p the program; the worker takes it at once.
func (f *Firewall) Apply(p Program) uint64 {
	f.mu.Lock()
	f.want = &p
	f.gen++
	gen := f.gen
	f.mu.Unlock()
	select {
	case f.kick <- struct{}{}:
	default:
	}
	return gen
}

// Status is nil when the kernel enforces the latest program, or why not.
func (f *Firewall) Status() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.applied != f.gen && f.err == nil {
		return errors.New("instance firewall: a change is being applied")
	}
	return f.err
}

// Wait returns once the kernel enforces the program of generation gen (or
// a later one), or with the context's error.
func (f *Firewall) Wait(ctx context.Context, gen uint64) error {
	for {
		f.mu.Lock()
		ok, progress := f.applied >= gen, f.progress
		f.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-f.done:
			return errors.New("firewall closed")
		case <-progress:
		}
	}
}

// Close stops the worker. The table stays: the instances stay protected.
func (f *Firewall) Close() {
	f.cancel()
	<-f.done
	if f.plog != nil {
		f.plog.close()
		<-f.logDone
	}
}

func (f *Firewall) run() {
	defer close(f.done)
	poll := time.NewTicker(f.opts.PollInterval)
	defer poll.Stop()
	retry := time.NewTimer(0)
	retry.Stop()
	defer func() {
		if f.c != nil {
			f.c.close()
		}
	}()
	for {
		select {
		case <-f.ctx.Done():
			return
		case <-poll.C:
			f.pollDenials()
			continue
		case <-f.kick:
		case <-retry.C:
		}
		start := time.Now()
		if err := f.sync(); err != nil {
			f.log.Error("instance firewall not updated; the kernel keeps the previous rules", "error", err)
			retry.Reset(time.Second)
			continue
		}
		// A program is compiled and the table replaced whole: at thousands of listeners and
		// under a stream of changes, back to back that would take a CPU. The next one comes no
		// sooner than the last took after it ended, so the firewall takes at most about half
		// of one, and the changes meanwhile go in together.
		pace := time.NewTimer(time.Since(start))
		select {
		case <-f.ctx.Done():
			pace.Stop()
			return
		case <-pace.C:
		}
	}
}

func (f *Firewall) sync() error {
	f.mu.Lock()
	want, gen := f.want, f.gen
	f.mu.Unlock()
	if want == nil {
		return nil
	}
	if f.c == nil {
		c, err := dial(f.opts.Table)
		if err != nil {
			f.setResult(0, err)
			return err
		}
		f.c = c
	}
	var c []compiled
	var shared []netip.Addr
	var listeners []Listener
	if want.Mode != Off {
		c, shared = compile(want.Interfaces)
		if f.logGroup >= 0 {
			listeners = compileListeners(want.Listeners)
		}
	}
	if f.lastSet && f.lastMode == want.Mode && f.lastLoopback == want.SkipLoopback && reflect.DeepEqual(f.last, c) && reflect.DeepEqual(f.lastListeners, listeners) {
		f.setResult(gen, nil)
		return nil
	}
	if len(shared) > 0 {
		f.log.Warn("addresses on several instance interfaces are judged by the first interface's groups only", "addresses", shared)
	}
	// Replacing the table resets its counters: take what they hold first, or the denials since
	// the last poll would go uncounted.
	f.pollDenials()
	program := *want
	program.Listeners = listeners
	var labels map[string][2]string
	err := f.call(func(k kernelConn) error {
		var err error
		labels, err = k.replace(c, &program, f.logGroup)
		return err
	})
	if err != nil {
		f.setResult(0, err)
		return err
	}
	f.labels = labels
	byKey := make(map[listenerKey]Listener, len(listeners))
	for _, l := range listeners {
		byKey[listenerKey{l.Protocol, l.Addr}] = l
	}
	f.listeners.Store(&byKey)
	f.last, f.lastListeners, f.lastSet, f.lastMode, f.lastLoopback = c, listeners, true, want.Mode, want.SkipLoopback
	f.setResult(gen, nil)
	return nil
}

func (f *Firewall) setResult(gen uint64, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err != nil {
		f.err = err
		return
	}
	f.applied, f.err = gen, nil
	close(f.progress)
	f.progress = make(chan struct{})
}

func (f *Firewall) pollDenials() {
	if f.c == nil || len(f.labels) == 0 {
		return
	}
	var got map[string]uint64
	if err := f.call(func(k kernelConn) error {
		var err error
		got, err = k.denials()
		return err
	}); err != nil {
		f.log.Debug("read instance firewall counters", "error", err)
		return
	}
	for name, n := range got {
		if l, ok := f.labels[name]; ok && n > 0 {
			f.denied.WithLabelValues(l[0], l[1]).Add(float64(n))
		}
	}
	if n := got[unloggedCounter]; n > 0 {
		f.unlogged.WithLabelValues("rate_limit").Add(float64(n))
	}
}

// readDenials writes each denied flow that the kernel logs to the flow log,
// once per flow, until Close closes the packet log. It holds no lock that
// the worker or Apply take.
func (f *Firewall) readDenials() {
	defer close(f.logDone)
	seen := newFirstSeen(2*time.Minute, 1<<14) // a refused TCP client retries for about two minutes
	for {
		pkts, err := f.plog.read()
		if errors.Is(err, errOverrun) {
			f.unlogged.WithLabelValues("overrun").Inc()
			continue
		}
		if err != nil {
			if f.ctx.Err() == nil {
				f.log.Warn("denied flows to instances are counted, no longer written to the flow log", "error", err)
			}
			return
		}
		now := time.Now()
		for _, p := range pkts {
			if e, ok := parseDenial(f.opts.Table, p.prefix, p.payload, now, f.listener); ok && seen.first(e) {
				f.flows.Add(e)
			}
		}
	}
}

// listener finds the listener socket whose denial the table logged.
func (f *Firewall) listener(k listenerKey) (Listener, bool) {
	ls := f.listeners.Load()
	if ls == nil {
		return Listener{}, false
	}
	l, ok := (*ls)[k]
	return l, ok
}

// call runs one kernel call with the deadline; a call that fails or overruns
// abandons the connection (the rules already in the kernel stay).
func (f *Firewall) call(fn func(kernelConn) error) error {
	c := f.c
	err := nftutil.Call(f.ctx.Done(), f.opts.CallTimeout, func() error { return fn(c) })
	if err != nil {
		f.c.close()
		f.c = nil
	}
	return err
}
