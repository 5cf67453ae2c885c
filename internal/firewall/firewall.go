package firewall

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

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
}

// Firewall programs the kernel from the latest Program, in a worker of its
// own: Apply never waits on the kernel.
type Firewall struct {
	opts   Options
	log    *slog.Logger
	denied *prometheus.CounterVec

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

	// The worker's own.
	c      kernelConn
	labels map[string][2]string // counter name → instance, direction
	// last is what the kernel has (lastSet: since this process programmed
	// it), so that a commit that changes no rule costs nothing.
	last         []compiled
	lastSet      bool
	lastMode     Mode
	lastLoopback bool
}

// kernelConn is one connection to nftables, replacing the firewall's table.
type kernelConn interface {
	replace(c []compiled, p *Program) (labels map[string][2]string, err error)
	denials() (map[string]uint64, error)
	close()
}

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
		progress: make(chan struct{}),
		denied: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "moat_instance_sg_denied_flows_total",
			Help: "New flows to (inbound) or from (outbound) an instance that no rule of its security groups admits: dropped in enforce mode, let through in audit mode."},
			[]string{"instance", "direction"})}
	reg := opts.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	if err := reg.Register(f.denied); err != nil {
		c.close()
		return nil, fmt.Errorf("register firewall metrics: %w", err)
	}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	go f.run()
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
		if err := f.sync(); err != nil {
			f.log.Error("instance firewall not updated; the kernel keeps the previous rules", "error", err)
			retry.Reset(time.Second)
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
	if want.Mode != Off {
		c = compile(want.Interfaces)
	}
	if f.lastSet && f.lastMode == want.Mode && f.lastLoopback == want.SkipLoopback && reflect.DeepEqual(f.last, c) {
		f.setResult(gen, nil)
		return nil
	}
	var labels map[string][2]string
	err := f.call(func(k kernelConn) error {
		var err error
		labels, err = k.replace(c, want)
		return err
	})
	if err != nil {
		f.setResult(0, err)
		return err
	}
	f.labels = labels
	f.last, f.lastSet, f.lastMode, f.lastLoopback = c, true, want.Mode, want.SkipLoopback
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
