package dataplane

import (
	"sync"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
)

// Label values are the IDs of the Config, so the number of series is bounded by
// the configuration (and series of removed listeners and target groups are
// deleted on Apply), never by clients or targets.
const (
	labelLB          = "load_balancer"
	labelListener    = "listener"
	labelProtocol    = "protocol" // tcp or udp
	labelReason      = "reason"
	labelDirection   = "direction"
	labelTargetGroup = "target_group"
)

// Denial reasons, as the denied-flows counter and the flow log spell them.
const (
	DenySecurityGroup = "security_group"
	DenyNoTarget      = "no_target"
	// DenyFlowLimit refuses a flow over Options.MaxFlowsPerListener.
	DenyFlowLimit = "flow_limit"
)

type metrics struct {
	activeFlows      *prometheus.GaugeVec
	newFlows         *prometheus.CounterVec
	proxiedFlows     *prometheus.CounterVec
	deniedFlows      *prometheus.CounterVec
	bytes            *prometheus.CounterVec
	connectErrors    *prometheus.CounterVec
	tlsHandshakeErrs *prometheus.CounterVec
	healthyTargets   *prometheus.GaugeVec
	unhealthyTargets *prometheus.GaugeVec
	healthCheck      *prometheus.HistogramVec
	drops            *dropCollector
	// listeners are the series of each listener (by listener ID), resolved once: resolving them
	// by label values on every Apply was half of its time at thousands of listeners. The
	// engine's lock guards it.
	listeners map[string]map[listenerSeries]*listenerMetrics
}

type listenerSeries struct {
	lb, listener, proto string
	tls                 bool
}

func newMetrics(reg prometheus.Registerer, drops *dropCollector) (*metrics, error) {
	listener := []string{labelLB, labelListener, labelProtocol}
	m := &metrics{
		listeners: map[string]map[listenerSeries]*listenerMetrics{},
		activeFlows: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "moat_dataplane_active_flows",
			Help: "Flows (TCP connections, UDP flows) currently forwarded, per listener.",
		}, listener),
		newFlows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_dataplane_new_flows_total",
			Help: "Flows admitted and forwarded to a target, per listener.",
		}, listener),
		proxiedFlows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_dataplane_proxied_flows_total",
			Help: "Flows the userspace proxy accepted and forwarded itself, per listener: the part of " +
				"moat_dataplane_new_flows_total that the kernel fast path did not carry.",
		}, listener),
		deniedFlows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_dataplane_denied_flows_total",
			Help: "Flows the data plane refused after seeing them (reset TCP connections, dropped UDP datagrams), " +
				"by reason: security_group, no_target or flow_limit. SYNs and datagrams the socket filter drops in the kernel " +
				"are in moat_dataplane_listener_dropped_packets_total.",
		}, append(listener, labelReason)),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_dataplane_bytes_total",
			Help: "Payload bytes forwarded, per listener; direction in = client to target, out = target to client.",
		}, append(listener, labelDirection)),
		connectErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_dataplane_target_connect_errors_total",
			Help: "Admitted flows whose target could not be reached (the client is reset), per listener.",
		}, listener),
		tlsHandshakeErrs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_dataplane_tls_handshake_errors_total",
			Help: "Clients of a TLS listener whose handshake failed or did not finish in time (they are closed), per listener.",
		}, []string{labelLB, labelListener}),
		healthyTargets: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "moat_dataplane_healthy_targets",
			Help: "Targets in state healthy, per target group.",
		}, []string{labelTargetGroup}),
		unhealthyTargets: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "moat_dataplane_unhealthy_targets",
			Help: "Targets in state unhealthy, per target group.",
		}, []string{labelTargetGroup}),
		healthCheck: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "moat_dataplane_health_check_duration_seconds",
			Help:    "Duration of health checks, successful or not, per target group.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{labelTargetGroup}),
		drops: drops,
	}
	cs := m.collectors()
	for i, c := range cs {
		if err := reg.Register(c); err != nil {
			for _, done := range cs[:i] {
				reg.Unregister(done)
			}
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.activeFlows, m.newFlows, m.proxiedFlows, m.deniedFlows, m.bytes, m.connectErrors,
		m.tlsHandshakeErrs, m.healthyTargets, m.unhealthyTargets, m.healthCheck, m.drops}
}

// unregister takes m's collectors back from reg, which holds them all.
func (m *metrics) unregister(reg prometheus.Registerer) {
	for _, c := range m.collectors() {
		reg.Unregister(c)
	}
}

// listenerMetrics are one (listener, protocol)'s series, resolved once when a
// route is built so that the per-flow and per-chunk paths do no label lookups.
type listenerMetrics struct {
	active                   prometheus.Gauge
	newFlows, proxied        prometheus.Counter
	deniedSG, deniedNoTarget prometheus.Counter
	deniedFlowLimit          prometheus.Counter
	bytesIn, bytesOut        prometheus.Counter
	connectErrors            prometheus.Counter
	tlsHandshakeErrors       prometheus.Counter
}

// countDenied counts a flow denied for reason (DenySecurityGroup, DenyNoTarget).
func (m *listenerMetrics) countDenied(reason string) {
	if reason == DenySecurityGroup {
		m.deniedSG.Inc()
	} else {
		m.deniedNoTarget.Inc()
	}
}

// listener resolves a listener's series; tls adds a TLS listener's own.
func (m *metrics) listener(lb, listener, proto string, tls bool) *listenerMetrics {
	key := listenerSeries{lb, listener, proto, tls}
	if lm := m.listeners[listener][key]; lm != nil {
		return lm
	}
	lm := &listenerMetrics{
		active:          m.activeFlows.WithLabelValues(lb, listener, proto),
		newFlows:        m.newFlows.WithLabelValues(lb, listener, proto),
		proxied:         m.proxiedFlows.WithLabelValues(lb, listener, proto),
		deniedSG:        m.deniedFlows.WithLabelValues(lb, listener, proto, DenySecurityGroup),
		deniedNoTarget:  m.deniedFlows.WithLabelValues(lb, listener, proto, DenyNoTarget),
		deniedFlowLimit: m.deniedFlows.WithLabelValues(lb, listener, proto, DenyFlowLimit),
		bytesIn:         m.bytes.WithLabelValues(lb, listener, proto, "in"),
		bytesOut:        m.bytes.WithLabelValues(lb, listener, proto, "out"),
		connectErrors:   m.connectErrors.WithLabelValues(lb, listener, proto),
	}
	if tls {
		lm.tlsHandshakeErrors = m.tlsHandshakeErrs.WithLabelValues(lb, listener)
	}
	if m.listeners[listener] == nil {
		m.listeners[listener] = map[listenerSeries]*listenerMetrics{}
	}
	m.listeners[listener][key] = lm
	return lm
}

// forgetListener deletes the series of a listener that left the Config.
func (m *metrics) forgetListener(lb, listener string) {
	l := prometheus.Labels{labelLB: lb, labelListener: listener}
	m.activeFlows.DeletePartialMatch(l)
	m.newFlows.DeletePartialMatch(l)
	m.proxiedFlows.DeletePartialMatch(l)
	m.deniedFlows.DeletePartialMatch(l)
	m.bytes.DeletePartialMatch(l)
	m.connectErrors.DeletePartialMatch(l)
	m.tlsHandshakeErrs.DeletePartialMatch(l)
	m.drops.forget(lb, listener)
	for key := range m.listeners[listener] {
		if key.lb == lb {
			delete(m.listeners[listener], key)
		}
	}
	if len(m.listeners[listener]) == 0 {
		delete(m.listeners, listener)
	}
}

func (m *metrics) forgetTargetGroup(id string) {
	m.healthyTargets.DeleteLabelValues(id)
	m.unhealthyTargets.DeleteLabelValues(id)
	m.healthCheck.DeleteLabelValues(id)
}

// dropCollector exports the kernel's drop counter of every listening socket
// (SO_MEMINFO's SK_MEMINFO_DROPS), read at scrape time. It counts packets the
// socket filter rejected — the SYNs and datagrams of denied clients, one per
// retransmission — and also the rarer overflows of a full accept backlog or
// receive buffer. The counter lives in the socket, so the collector carries
// the totals of sockets that were replaced or closed.
type dropCollector struct {
	desc *prometheus.Desc

	mu      sync.Mutex
	sources map[*dropSource]struct{}
	totals  map[dropKey]uint64
}

type dropKey struct{ lb, listener, proto string }

func dropKeyOf(r *route) dropKey { return dropKey{r.lbID, r.listenerID, r.proto} }

// dropSource is one listening socket: read returns its current counter.
type dropSource struct {
	read func() (uint32, bool)
	key  dropKey
	seen uint32
}

func newDropCollector() *dropCollector {
	return &dropCollector{
		desc: prometheus.NewDesc("moat_dataplane_listener_dropped_packets_total",
			"Packets the kernel dropped on a listening socket, per listener: SYNs and datagrams of clients the "+
				"security groups deny (socket filter), plus accept-backlog and receive-buffer overflows.",
			[]string{labelLB, labelListener, labelProtocol}, nil),
		sources: map[*dropSource]struct{}{},
		totals:  map[dropKey]uint64{},
	}
}

func (c *dropCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *dropCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for s := range c.sources {
		c.updateLocked(s)
	}
	for k, v := range c.totals {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(v), k.lb, k.listener, k.proto)
	}
}

func (c *dropCollector) updateLocked(s *dropSource) {
	if n, ok := s.read(); ok {
		c.totals[s.key] += uint64(n - s.seen) // wraps correctly at 2^32
		s.seen = n
	}
}

// track starts counting the drops of a listening socket for its route's
// listener.
func (c *dropCollector) track(rc syscall.RawConn, r *route) *dropSource {
	s := &dropSource{read: func() (uint32, bool) { return socketDrops(rc) }, key: dropKeyOf(r)}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sources[s] = struct{}{}
	if _, ok := c.totals[s.key]; !ok {
		c.totals[s.key] = 0
	}
	return s
}

// relabel follows a socket's route: when it now serves another listener, what
// it dropped so far stays with the old one.
func (c *dropCollector) relabel(s *dropSource, r *route) {
	key := dropKeyOf(r)
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.key == key {
		return
	}
	c.updateLocked(s)
	s.key = key
	if _, ok := c.totals[key]; !ok {
		c.totals[key] = 0
	}
}

// remove takes a final reading of a socket about to close.
func (c *dropCollector) remove(s *dropSource) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.updateLocked(s)
	delete(c.sources, s)
}

func (c *dropCollector) forget(lb, listener string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.totals {
		if k.lb == lb && k.listener == listener {
			delete(c.totals, k)
		}
	}
}
