package dataplane

import (
	"cmp"
	"context"
	"encoding/binary"
	"hash/maphash"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// zoneAll is the zone of an ip target outside the load balancer's VPC, which
// every zone may use (AWS's AvailabilityZone "all").
const zoneAll = "all"

type targetKey struct {
	id   string
	port uint16
}

// tgSettings is what a target group's targets and health checks need from
// the Config besides the targets themselves: the group's attributes and, from
// the load balancer and listener that reference it, the zones and the port.
type tgSettings struct {
	TargetGroup // Targets is nil here: targets live in targetGroup.targets
	hc          HealthCheck
	match       matcher
	matchErr    error
	zones       map[string]zoneAddrs // the load balancer's enabled zones → its addresses there
	zoneOrder   []string
	hostPort    uint16 // the listener port AWS puts in the health check's Host header
}

// targetGroup is the long-lived state of one target group: its targets with
// their health, and the precomputed candidate lists new flows pick from. It
// outlives Applies that keep the group, so health survives rule changes.
type targetGroup struct {
	id string
	u  *Userspace

	mu      sync.Mutex
	set     *tgSettings
	targets map[targetKey]*target
	closed  bool

	// sel is rebuilt under mu whenever targets, their health or the settings
	// change, and read without locks by every new flow.
	sel atomic.Pointer[selection]
}

// target is one registered target. Fields after mu's comment are guarded by
// its group's mu; flows by fmu.
type target struct {
	tg   *targetGroup
	key  targetKey
	addr netip.AddrPort // where flows connect; immutable (a move makes a new target)
	seed uint64         // rendezvous-hashing weight seed

	// guarded by tg.mu
	cfg          Target
	inUse        bool
	state        string
	reason, desc string
	checked      bool
	succ, fail   int
	stopChecks   context.CancelFunc // nil when no checker runs
	checkCtx     context.Context
	drainTimer   *time.Timer
	drainPending time.Time // DrainingUntil the timer was set for
	// shownBefore is reported until the kernel fast path has taken the
	// change of generation kernelGen (see health).
	shownBefore Health
	kernelGen   uint64

	fmu   sync.Mutex
	flows map[flow]struct{}
}

// flow is what a target (and a listener socket) needs of an established flow:
// a way to end it, and the scope it was balanced in, to decide whether the
// load balancer is failing open for it.
type flow interface {
	terminate()
	scope() (zone string, crossZone bool)
}

func (t *target) addFlow(f flow) {
	t.fmu.Lock()
	if t.flows == nil {
		t.flows = map[flow]struct{}{}
	}
	t.flows[f] = struct{}{}
	t.fmu.Unlock()
}

func (t *target) removeFlow(f flow) {
	t.fmu.Lock()
	delete(t.flows, f)
	t.fmu.Unlock()
}

func (t *target) flowList() []flow {
	t.fmu.Lock()
	defer t.fmu.Unlock()
	fs := make([]flow, 0, len(t.flows))
	for f := range t.flows {
		fs = append(fs, f)
	}
	return fs
}

func (t *target) terminateFlows() {
	for _, f := range t.flowList() {
		f.terminate()
	}
}

// selection holds, per balancing scope, the targets a new flow may go to.
type selection struct {
	set   *tgSettings            // the group's settings these lists were built with
	zones map[string]*candidates // cross-zone off: the zone's own targets (and zone "all" ones)
	cross *candidates            // cross-zone on: every enabled zone's targets
}

// candidates are the targets that may take new flows in one scope: registered
// (not draining), in an enabled zone, reachable by the backend security groups
// (TrafficAllowed). healthy is the subset in state healthy; below the group's
// minimum (none healthy, by default) the load balancer fails open to all.
type candidates struct {
	healthy, all         []*target
	minCount, minPercent int
}

// routesByHealth reports whether enough candidates are healthy for flows to go
// to the healthy ones only.
func (c *candidates) routesByHealth() bool {
	n := len(c.healthy)
	return n > 0 && n >= c.minCount && n*100 >= c.minPercent*len(c.all)
}

func (s *selection) scope(zone string, crossZone bool) *candidates {
	if s == nil {
		return nil
	}
	if crossZone {
		return s.cross
	}
	return s.zones[zone]
}

// failingOpen reports whether flows balanced in the scope currently ignore
// health because too few candidates are healthy.
func (c *candidates) failingOpen() bool { return c == nil || !c.routesByHealth() }

// eligible returns the targets new flows may go to: the healthy candidates,
// or all of them when too few are healthy.
func (c *candidates) eligible() []*target {
	switch {
	case c == nil:
		return nil
	case c.routesByHealth():
		return c.healthy
	}
	return c.all
}

// pick chooses the target of a flow with hash h by rendezvous hashing over
// the healthy candidates, or over all candidates when too few are healthy.
// Rendezvous hashing moves only the flows (or sticky clients) of a target that
// joins or leaves, so stickiness survives changes elsewhere in the group.
func (c *candidates) pick(h uint64) *target {
	var best *target
	var bestScore uint64
	for _, t := range c.eligible() {
		if s := mix64(h ^ t.seed); best == nil || s > bestScore {
			best, bestScore = t, s
		}
	}
	return best
}

// mix64 is SplitMix64's finaliser: a bijection that spreads every input bit.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// flowHash hashes a flow's 5-tuple, or only the client address for source-IP
// stickiness.
func flowHash(seed maphash.Seed, client, lb netip.AddrPort, proto byte, sticky bool) uint64 {
	var b [37]byte
	c := client.Addr().Unmap().As16()
	copy(b[:16], c[:])
	if sticky {
		return maphash.Bytes(seed, b[:16])
	}
	binary.BigEndian.PutUint16(b[16:], client.Port())
	l := lb.Addr().Unmap().As16()
	copy(b[18:], l[:])
	binary.BigEndian.PutUint16(b[34:], lb.Port())
	b[36] = proto
	return maphash.Bytes(seed, b[:])
}

func newTargetGroup(u *Userspace, id string) *targetGroup {
	return &targetGroup{id: id, u: u, targets: map[targetKey]*target{}}
}

// inUse reports whether a target in zone takes part: AWS leaves targets in
// zones the load balancer has not enabled unused.
func (s *tgSettings) inUse(zone string) bool {
	if zone == "" || zone == zoneAll {
		return true
	}
	_, ok := s.zones[zone]
	return ok
}

// update installs new settings and targets (an Apply). New targets start in
// initial/Elb.RegistrationInProgress; kept ones keep their health. It returns
// the targets that left the group whose flows must now be closed: a target
// removed without draining first (deregistration delay 0) ends like a drained
// one.
func (g *targetGroup) update(set *tgSettings, targets []Target) (terminate []*target) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.set = set
	seen := make(map[targetKey]bool, len(targets))
	var removed []*target
	for _, tc := range targets {
		k := targetKey{tc.ID, tc.Port}
		if seen[k] {
			continue // duplicate registration: the first wins
		}
		seen[k] = true
		t := g.targets[k]
		if t != nil && (t.addr.Addr() != tc.Addr || t.cfg.Zone != tc.Zone) {
			// Same identity, new place: a new target in effect. Its
			// flows stay where they are.
			t.stopChecksLocked()
			t.stopDrainLocked()
			t = nil
		}
		if t == nil {
			t = &target{
				tg:    g,
				key:   k,
				addr:  netip.AddrPortFrom(tc.Addr, tc.Port),
				seed:  maphash.String(g.u.seed, tc.ID+"\x00"+strconv.Itoa(int(tc.Port))),
				state: StateInitial, reason: ReasonRegistrationInProgress,
			}
			g.targets[k] = t
		}
		t.cfg = tc
		inUse := set.inUse(tc.Zone)
		if inUse && !t.inUse {
			t.resetHealthLocked()
		}
		t.inUse = inUse
		if inUse {
			g.startChecksLocked(t)
		} else {
			t.stopChecksLocked()
		}
		g.armDrainLocked(t)
	}
	for k, t := range g.targets {
		if !seen[k] {
			delete(g.targets, k)
			t.stopChecksLocked()
			t.stopDrainLocked()
			removed = append(removed, t)
		}
	}
	g.rebuildLocked()
	if set.TerminateOnDeregistration {
		return removed
	}
	return nil
}

func (t *target) resetHealthLocked() {
	t.state, t.reason, t.checked, t.succ, t.fail = StateInitial, ReasonRegistrationInProgress, false, 0, 0
	t.desc = ""
	if t.stopChecks != nil { // restart the checker so the first check comes soon
		t.stopChecksLocked()
	}
}

// close stops the group's health checks and drain timers (the group left the
// Config, or the engine closes). Flows are left to their listener sockets.
func (g *targetGroup) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	for _, t := range g.targets {
		t.stopChecksLocked()
		t.stopDrainLocked()
	}
}

func (g *targetGroup) armDrainLocked(t *target) {
	until := t.cfg.DrainingUntil
	if until.Equal(t.drainPending) && (t.drainTimer != nil || until.IsZero()) {
		return
	}
	t.stopDrainLocked()
	if until.IsZero() {
		return
	}
	t.drainPending = until
	t.drainTimer = time.AfterFunc(time.Until(until), func() { g.drainEnded(t, until) })
}

func (t *target) stopDrainLocked() {
	if t.drainTimer != nil {
		t.drainTimer.Stop()
		t.drainTimer = nil
	}
	t.drainPending = time.Time{}
}

// drainEnded runs when a draining target's deregistration delay is over.
func (g *targetGroup) drainEnded(t *target, until time.Time) {
	g.mu.Lock()
	terminate := !g.closed && g.targets[t.key] == t && t.cfg.DrainingUntil.Equal(until) &&
		g.set.TerminateOnDeregistration
	g.mu.Unlock()
	if terminate {
		g.u.log.Info("deregistration delay over, closing flows", "target_group", g.id, "target", t.key.id, "port", t.key.port)
		t.terminateFlows()
		g.u.terminateKernelFlows(t, false)
	}
}

// rebuildLocked recomputes the candidate lists and the health gauges, and
// returns the generation of the kernel fast path's change (0 without it).
func (g *targetGroup) rebuildLocked() uint64 {
	set := g.set
	ts := make([]*target, 0, len(g.targets))
	for _, t := range g.targets {
		ts = append(ts, t)
	}
	slices.SortFunc(ts, func(a, b *target) int {
		return cmp.Or(cmp.Compare(a.key.id, b.key.id), cmp.Compare(a.key.port, b.key.port))
	})
	scope := func() *candidates {
		return &candidates{minCount: max(set.MinHealthyTargets, 1), minPercent: set.MinHealthyPercent}
	}
	sel := &selection{set: set, zones: make(map[string]*candidates, len(set.zones)), cross: scope()}
	for z := range set.zones {
		sel.zones[z] = scope()
	}
	add := func(c *candidates, t *target) {
		c.all = append(c.all, t)
		if t.state == StateHealthy {
			c.healthy = append(c.healthy, t)
		}
	}
	var healthy, unhealthy int
	for _, t := range ts {
		if !t.inUse || !t.cfg.DrainingUntil.IsZero() {
			continue
		}
		switch t.state {
		case StateHealthy:
			healthy++
		case StateUnhealthy:
			unhealthy++
		}
		if !t.cfg.TrafficAllowed {
			continue
		}
		add(sel.cross, t)
		if t.cfg.Zone == "" || t.cfg.Zone == zoneAll {
			for _, c := range sel.zones {
				add(c, t)
			}
		} else {
			add(sel.zones[t.cfg.Zone], t)
		}
	}
	g.sel.Store(sel)
	var gen uint64
	if g.u.kernel != nil {
		gen = g.u.kernel.Kick() // the kernel's choice of targets changes with it
	}
	if !g.closed {
		g.u.metrics.healthyTargets.WithLabelValues(g.id).Set(float64(healthy))
		g.u.metrics.unhealthyTargets.WithLabelValues(g.id).Set(float64(unhealthy))
	}
	return gen
}

// health is the target's health as of now.
func (t *target) healthLocked(now time.Time) Health {
	if until := t.cfg.DrainingUntil; !until.IsZero() {
		if now.Before(until) {
			return healthOf(StateDraining, ReasonDeregistrationInProgress, "")
		}
		return healthOf(StateUnused, ReasonNotRegistered, "")
	}
	if !t.inUse {
		return healthOf(StateUnused, ReasonNotInUse, "")
	}
	return healthOf(t.state, t.reason, t.desc)
}

func healthOf(state, reason, desc string) Health {
	if desc == "" {
		desc = reasonDescriptions[reason]
	}
	return Health{State: state, Reason: reason, Description: desc}
}

// health is the target's health as reported: a change of state shows only
// once the kernel fast path forwards accordingly, so that a client who sees
// a target unhealthy also sees no new flow go to it.
func (g *targetGroup) health(id string, port uint16) (Health, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	t := g.targets[targetKey{id, port}]
	if t == nil {
		return Health{}, false
	}
	return t.reportedLocked(), true
}

func (t *target) reportedLocked() Health {
	if t.kernelGen != 0 && !t.tg.u.kernel.Applied(t.kernelGen) {
		return t.shownBefore
	}
	return t.healthLocked(time.Now())
}

// checkResult is the outcome of one health check.
type checkResult struct {
	ok           bool
	reason, desc string // of a failure
}

// record applies a check's result to the target's state machine: initial
// until the first result (then Elb.InitialHealthChecking), healthy after
// HealthyThreshold consecutive successes, unhealthy after UnhealthyThreshold
// consecutive failures.
func (g *targetGroup) record(t *target, ctx context.Context, r checkResult) {
	g.mu.Lock()
	if ctx.Err() != nil || t.checkCtx != ctx { // stopped meanwhile: a stale result
		g.mu.Unlock()
		return
	}
	set := g.set
	before, shown := t.state, t.reportedLocked()
	if !t.checked {
		t.checked = true
		if t.state == StateInitial {
			t.reason = ReasonInitialHealthChecking
		}
	}
	if r.ok {
		t.succ, t.fail = t.succ+1, 0
		if t.state != StateHealthy && t.succ >= set.hc.HealthyThreshold {
			t.state, t.reason, t.desc = StateHealthy, "", ""
		}
	} else {
		t.succ, t.fail = 0, t.fail+1
		if t.state == StateUnhealthy || t.fail >= set.hc.UnhealthyThreshold {
			t.state, t.reason, t.desc = StateUnhealthy, r.reason, r.desc
		}
	}
	var terminate []flow
	if t.state != before {
		g.u.log.Info("target health changed", "target_group", g.id, "target", t.key.id, "port", t.key.port,
			"from", before, "to", t.state, "reason", t.reason)
		if gen := g.rebuildLocked(); gen != 0 {
			t.shownBefore, t.kernelGen = shown, gen
		}
		if t.state == StateUnhealthy && set.TerminateOnUnhealthy {
			sel := g.sel.Load()
			for _, f := range t.flowList() {
				// Failing open, the load balancer keeps sending flows to
				// unhealthy targets; it does not reset them either.
				if !sel.scope(f.scope()).failingOpen() {
					terminate = append(terminate, f)
				}
			}
		}
	}
	kernelTerminate := t.state != before && t.state == StateUnhealthy && set.TerminateOnUnhealthy
	g.mu.Unlock()
	for _, f := range terminate {
		f.terminate()
	}
	if kernelTerminate {
		g.u.terminateKernelFlows(t, true)
	}
}
